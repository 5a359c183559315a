//! Inline SVG line charts for the HTML report: axes with "nice" ticks, axis labels, a title, a legend, one
//! coloured polyline per series (dashed for reference series), markers where points are few. No scripts, no CSS
//! outside the element, so the chart survives being copied into another document.

use std::fmt::Write;

/// Colours of successive series (Tableau 10: distinguishable, colour-blind tolerant).
const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
/// Dash patterns that tell series apart once the palette has been used up.
const DASHES: [&str; 3] = ["", "7 4", "2 3"];
/// Series with at most this many points get a marker at each point.
const MAX_MARKED_POINTS: usize = 40;

const MARGIN_LEFT: f64 = 64.0;
const MARGIN_TOP: f64 = 34.0;
const MARGIN_BOTTOM: f64 = 48.0;
const LEGEND_GAP: f64 = 18.0;
const LEGEND_ROW: f64 = 17.0;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, y) points in drawing order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Palette index; None takes the series' position in the chart.
    pub color: Option<usize>,
    /// Draw dashed (used for published reference numbers).
    pub dashed: bool,
}

impl Series {
    /// A solid series coloured by its position.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { label: label.into(), points, color: None, dashed: false }
    }
}

/// Sizes of a chart's plot area and legend, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// Width of the plot area.
    pub plot_width: f64,
    /// Height of the plot area.
    pub plot_height: f64,
    /// Width of the legend beside it.
    pub legend_width: f64,
}

impl Layout {
    /// The size of overview charts.
    pub const NORMAL: Layout = Layout { plot_width: 380.0, plot_height: 240.0, legend_width: 190.0 };
    /// The size of small multiples (one chart per variant or per run).
    pub const SMALL: Layout = Layout { plot_width: 250.0, plot_height: 150.0, legend_width: 96.0 };
}

/// A line chart with numeric axes.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label beside the y axis.
    pub y_label: String,
    /// Whether x ticks must be whole numbers (iterations, steps).
    pub integer_x: bool,
    /// Whether y ticks must be whole numbers (counts).
    pub integer_y: bool,
    /// The lines.
    pub series: Vec<Series>,
    /// Fixed y range (so small multiples share a scale); None fits the data.
    pub y_range: Option<(f64, f64)>,
    /// Sizes.
    pub layout: Layout,
}

impl LineChart {
    /// A chart with no series yet.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            integer_x: true,
            integer_y: false,
            series: Vec::new(),
            y_range: None,
            layout: Layout::NORMAL,
        }
    }

    /// Renders the chart as one `<svg>` element.
    pub fn to_svg(&self) -> String {
        let Layout { plot_width: plot_w, plot_height: plot_h, legend_width: legend_w } = self.layout;
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let legend_height = MARGIN_TOP + LEGEND_ROW * self.series.len() as f64 + 8.0;
        let width = MARGIN_LEFT + plot_w + LEGEND_GAP + legend_w;
        let height = (MARGIN_TOP + plot_h + MARGIN_BOTTOM).max(legend_height);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12" role="img" aria-label="{}">"#,
            escape(&self.title)
        );
        let _ = write!(s, r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##);
        let _ = write!(
            s,
            r#"<text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
            MARGIN_LEFT + plot_w / 2.0,
            escape(&self.title)
        );
        if points.is_empty() {
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#666666">no data</text></svg>"##,
                MARGIN_LEFT + plot_w / 2.0,
                MARGIN_TOP + plot_h / 2.0
            );
            return s;
        }
        let (x_ticks, x_lo, x_hi) = axis_ticks(points.iter().map(|p| p.0), false, self.integer_x);
        let y_values: Vec<f64> = match self.y_range {
            Some((lo, hi)) => vec![lo, hi],
            None => points.iter().map(|p| p.1).collect(),
        };
        let (y_ticks, y_lo, y_hi) = axis_ticks(y_values.into_iter(), self.y_range.is_none(), self.integer_y);
        let px = |x: f64| MARGIN_LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w;
        let py = |y: f64| MARGIN_TOP + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h;
        let (left, right, top, bottom) = (MARGIN_LEFT, MARGIN_LEFT + plot_w, MARGIN_TOP, MARGIN_TOP + plot_h);

        // Grid and tick labels.
        let y_decimals = decimals(&y_ticks);
        for &t in &y_ticks {
            let y = py(t);
            let _ = write!(s, r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e5e5e5"/>"##);
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end" dominant-baseline="middle">{t:.y_decimals$}</text>"#,
                left - 6.0,
                y
            );
        }
        let x_decimals = decimals(&x_ticks);
        for &t in &x_ticks {
            let x = px(t);
            let _ =
                write!(s, r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{}" stroke="#333333"/>"##, bottom + 5.0);
            let _ = write!(s, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{t:.x_decimals$}</text>"#, bottom + 18.0);
        }
        let _ = write!(
            s,
            r##"<polyline points="{left},{top} {left},{bottom} {right},{bottom}" fill="none" stroke="#333333"/>"##
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            MARGIN_LEFT + plot_w / 2.0,
            bottom + 38.0,
            escape(&self.x_label)
        );
        let cy = MARGIN_TOP + plot_h / 2.0;
        let _ = write!(
            s,
            r#"<text x="16" y="{cy}" text-anchor="middle" transform="rotate(-90 16 {cy})">{}</text>"#,
            escape(&self.y_label)
        );

        // Lines, then the legend.
        for (i, series) in self.series.iter().enumerate() {
            let (color, dash) = style(series, i);
            let pts: Vec<(f64, f64)> =
                series.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            let dash_attr = if dash.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{dash}""#) };
            if pts.len() > 1 {
                let coords: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
                let _ = write!(
                    s,
                    r#"<polyline class="series" points="{}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}><title>{}</title></polyline>"#,
                    coords.join(" "),
                    escape(&series.label)
                );
            }
            if pts.len() <= MAX_MARKED_POINTS {
                for &(x, y) in &pts {
                    let _ = write!(
                        s,
                        r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}" stroke="{color}"/>"##,
                        px(x),
                        py(y),
                        if series.dashed { "#ffffff" } else { color }
                    );
                }
            }
            let lx = right + LEGEND_GAP;
            let ly = MARGIN_TOP + LEGEND_ROW * i as f64 + 6.0;
            let _ = write!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash_attr}/>"#,
                lx + 22.0
            );
            let _ = write!(
                s,
                r#"<text x="{}" y="{ly}" dominant-baseline="middle">{}</text>"#,
                lx + 28.0,
                escape(&truncate(&series.label, ((legend_w - 30.0) / 6.5) as usize))
            );
        }
        s.push_str("</svg>");
        s
    }
}

fn style(series: &Series, position: usize) -> (&'static str, &'static str) {
    let idx = series.color.unwrap_or(position);
    let color = PALETTE[idx % PALETTE.len()];
    let dash = if series.dashed { DASHES[1] } else { DASHES[(idx / PALETTE.len()) % DASHES.len()] };
    (color, dash)
}

/// Ticks covering the data and the axis range they span. Value axes get a little head room; integer axes get
/// whole-number steps.
fn axis_ticks(values: impl Iterator<Item = f64>, pad: bool, integer: bool) -> (Vec<f64>, f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi - lo < 1e-12 {
        let half = if lo.abs() > 1e-12 { lo.abs() * 0.1 } else { 1.0 };
        let half = if integer { half.max(1.0) } else { half };
        // Iterations and steps start at 0: a lone point at 0 sits on the axis rather than after a negative tick.
        lo = if lo >= 0.0 && lo - half < 0.0 { 0.0 } else { lo - half };
        hi += half;
    } else if pad {
        let span = hi - lo;
        // Non-negative data (accuracies, counts, losses) never gets a negative tick from the head room.
        lo = if lo >= 0.0 { (lo - span * 0.05).max(0.0) } else { lo - span * 0.05 };
        hi += span * 0.05;
    }
    let mut step = nice_step((hi - lo) / 5.0);
    if integer {
        step = step.max(1.0).round();
    }
    let first = (lo / step).floor() * step;
    let last = (hi / step).ceil() * step;
    let n = ((last - first) / step).round() as usize;
    let ticks: Vec<f64> =
        (0..=n).map(|i| first + step * i as f64).map(|t| if t.abs() < step * 1e-9 { 0.0 } else { t }).collect();
    (ticks, first, last)
}

/// The step among 1, 2, 2.5, 5 times a power of ten closest above `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|&n| fraction <= n + 1e-9).unwrap_or(10.0);
    nice * magnitude
}

/// Decimals needed to print every tick distinctly.
fn decimals(ticks: &[f64]) -> usize {
    (0..=6).find(|&d| ticks.iter().all(|t| (t * 10f64.powi(d as i32)).fract().abs() < 1e-6)).unwrap_or(6)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Checks that `xml` is well formed for the subset charts use: balanced tags, quoted attributes, escaped text.
/// Returns the element names in document order.
#[cfg(test)]
pub(crate) fn check_well_formed(xml: &str) -> Result<Vec<String>, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        check_text(&rest[..start])?;
        let end = rest[start..].find('>').ok_or("unterminated tag")? + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
            if open != name.trim() {
                return Err(format!("</{name}> closes <{open}>"));
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name = body.split_whitespace().next().ok_or("empty tag")?.to_string();
        if !body.matches('"').count().is_multiple_of(2) {
            return Err(format!("unbalanced quotes in <{name}>"));
        }
        if body.contains('<') {
            return Err(format!("'<' inside <{name}>"));
        }
        names.push(name.clone());
        if !self_closing {
            stack.push(name);
        }
    }
    check_text(rest)?;
    match stack.pop() {
        Some(open) => Err(format!("<{open}> is never closed")),
        None => Ok(names),
    }
}

#[cfg(test)]
fn check_text(text: &str) -> Result<(), String> {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        if !["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|e| entity.starts_with(e)) {
            return Err(format!("bare '&' in text {text:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> LineChart {
        let mut c = LineChart::new("Test <correction> & more", "iteration", "accuracy");
        c.series.push(Series::new("a & b", vec![(0.0, 0.138), (1.0, 0.228), (2.0, 0.216)]));
        c.series.push(Series {
            label: "published".into(),
            points: vec![(0.0, 0.2), (1.0, 0.21)],
            color: Some(0),
            dashed: true,
        });
        c
    }

    #[test]
    fn chart_is_well_formed_with_one_polyline_per_series() {
        let svg = chart().to_svg();
        let names = check_well_formed(&svg).unwrap();
        assert_eq!(names[0], "svg");
        assert_eq!(svg.matches(r#"class="series""#).count(), 2);
        assert_eq!(names.iter().filter(|n| *n == "circle").count(), 5);
        assert!(svg.contains("Test &lt;correction&gt; &amp; more"));
        assert!(svg.contains(r#"stroke-dasharray="7 4""#));
    }

    #[test]
    fn ticks_cover_the_data_at_nice_steps() {
        let (ticks, lo, hi) = axis_ticks([0.138, 0.228].into_iter(), true, false);
        assert!(lo <= 0.138 && hi >= 0.228, "{lo} {hi}");
        assert_eq!(ticks.first().copied(), Some(lo));
        assert_eq!(ticks.last().copied(), Some(hi));
        let step = ticks[1] - ticks[0];
        assert!((step - 0.02).abs() < 1e-12, "{ticks:?}");
        let (ticks, _, _) = axis_ticks([0.0, 10.0].into_iter(), false, true);
        assert!(ticks.iter().all(|t| t.fract() == 0.0), "{ticks:?}");
        let (ticks, _, _) = axis_ticks([0.0, 100.0].into_iter(), true, true);
        assert_eq!(ticks[0], 0.0, "{ticks:?}");
        let (ticks, lo, hi) = axis_ticks([0.0].into_iter(), false, true);
        assert_eq!((ticks, lo, hi), (vec![0.0, 1.0], 0.0, 1.0));
    }

    #[test]
    fn single_point_and_empty_charts_render() {
        let mut c = LineChart::new("one", "iteration", "accuracy");
        c.series.push(Series::new("x", vec![(0.0, 0.5)]));
        let svg = c.to_svg();
        check_well_formed(&svg).unwrap();
        assert_eq!(svg.matches("<circle").count(), 1);
        let empty = LineChart::new("none", "x", "y").to_svg();
        check_well_formed(&empty).unwrap();
        assert!(empty.contains("no data"));
    }

    #[test]
    fn checker_rejects_broken_markup() {
        assert!(check_well_formed("<svg><g></svg>").is_err());
        assert!(check_well_formed("<svg>a & b</svg>").is_err());
        assert!(check_well_formed(r#"<svg a="1></svg>"#).is_err());
        assert!(check_well_formed("<svg><line/></svg>").is_ok());
    }
}
