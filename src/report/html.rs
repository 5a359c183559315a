//! The HTML page: tera templates (built in from templates/report/, or overridden file by file from a directory)
//! filled with the report's tables and inline SVG charts.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::ReportError;
use super::table::Table;

/// The built-in templates, by name; a `--templates` directory may replace any of them.
pub const BUILTIN_TEMPLATES: [(&str, &str); 2] = [
    ("macros.html", include_str!("../../templates/report/macros.html")),
    ("index.html", include_str!("../../templates/report/index.html")),
];

/// A table as the templates see it: the text plus which columns are numeric.
#[derive(Debug, Clone, Serialize)]
pub struct HtmlTable {
    /// Column names.
    pub headers: Vec<String>,
    /// Rows of text.
    pub rows: Vec<Vec<String>>,
    /// Whether each column is numeric (right-aligned).
    pub numeric: Vec<bool>,
}

impl From<Table> for HtmlTable {
    fn from(t: Table) -> Self {
        let numeric = t.numeric_columns();
        HtmlTable { headers: t.headers, rows: t.rows, numeric }
    }
}

/// The paper section.
#[derive(Debug, Clone, Serialize)]
pub struct HtmlPaper {
    /// Published model compared against.
    pub model: String,
    /// Where the published numbers come from.
    pub reference: String,
    /// Where the published settings come from.
    pub settings_reference: String,
    /// What Δ, the intervals, `*` and "not comparable" mean, one sentence each.
    pub legend: Vec<String>,
    /// The table (three rows per variant).
    pub table: HtmlTable,
    /// The settings table (published, then ours per compared row), when any row was compared.
    pub settings: Option<HtmlTable>,
    /// Ours vs published, one `<svg>` element per variant.
    pub charts: Vec<String>,
}

/// The summary's comparison of groups with each other.
#[derive(Debug, Clone, Serialize)]
pub struct HtmlPairwise {
    /// One sentence: how many pairs differ, or why none was compared.
    pub note: String,
    /// The pairs that differ beyond the 95% interval, when any does.
    pub table: Option<HtmlTable>,
}

/// One run's section.
#[derive(Debug, Clone, Serialize)]
pub struct HtmlCell {
    /// Run name.
    pub name: String,
    /// Its status text.
    pub status: String,
    /// Its directory.
    pub dir: String,
    /// Per-iteration table.
    pub table: HtmlTable,
    /// Loss curves (an `<svg>` element), when it trained.
    pub loss_chart: Option<String>,
    /// Its lineage page (relative to index.html), when the run wrote samples.jsonl.
    pub lineage: Option<String>,
}

/// Everything index.html shows.
#[derive(Debug, Clone, Serialize)]
pub struct HtmlPage {
    /// Page title.
    pub title: String,
    /// How the input was recognised ("Sweep", "Run", "Runs in").
    pub kind: String,
    /// The input directory.
    pub input: String,
    /// Number of runs.
    pub runs: usize,
    /// Program and version.
    pub generator: String,
    /// Other files of the report, for links.
    pub files: Vec<String>,
    /// One line per run that did not finish.
    pub notes: Vec<String>,
    /// Summary table.
    pub summary: HtmlTable,
    /// Mean ± std over seeds, when runs differ only by seed.
    pub seeds: Option<HtmlTable>,
    /// Which groups differ from each other beyond the 95% interval; None with fewer than two groups.
    pub pairwise: Option<HtmlPairwise>,
    /// The paper section, with `--paper`.
    pub paper: Option<HtmlPaper>,
    /// Overview charts (`<svg>` elements).
    pub charts: Vec<String>,
    /// Per-run sections.
    pub cells: Vec<HtmlCell>,
}

/// Renders the page with the built-in templates, each replaced by the file of the same name in `overrides` if
/// that directory has one.
pub fn render(page: &HtmlPage, overrides: Option<&Path>) -> Result<String, ReportError> {
    let mut sources: Vec<(String, String)> = Vec::new();
    for (name, builtin) in BUILTIN_TEMPLATES {
        let text = match overrides {
            Some(dir) if dir.join(name).is_file() => {
                let p: PathBuf = dir.join(name);
                std::fs::read_to_string(&p).map_err(|e| ReportError::io(&p, e))?
            }
            Some(dir) if !dir.is_dir() => {
                return Err(ReportError::Template {
                    name: dir.display().to_string(),
                    message: "the --templates directory does not exist".into(),
                })
            }
            _ => builtin.to_string(),
        };
        sources.push((name.to_string(), text));
    }
    let mut tera = tera::Tera::default();
    tera.add_raw_templates(sources.iter().map(|(n, t)| (n.as_str(), t.as_str())))
        .map_err(|e| template_error(&overrides.map_or("(built in)".into(), |d| d.display().to_string()), &e))?;
    let context = tera::Context::from_serialize(page).map_err(|e| template_error("index.html", &e))?;
    tera.render("index.html", &context).map_err(|e| template_error("index.html", &e))
}

fn template_error(name: &str, e: &tera::Error) -> ReportError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ReportError::Template { name: name.into(), message: message.replace('\n', " ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> HtmlPage {
        let mut t = Table::new(["variant", "acc"]);
        t.rows.push(vec!["E<I>E".into(), "0.228".into()]);
        HtmlPage {
            title: "stasc report: x".into(),
            kind: "Run".into(),
            input: "runs/x".into(),
            runs: 1,
            generator: "stasc test".into(),
            files: vec!["results.csv".into()],
            notes: vec![],
            summary: t.clone().into(),
            seeds: None,
            pairwise: None,
            paper: None,
            charts: vec!["<svg id=\"c1\"></svg>".into()],
            cells: vec![HtmlCell {
                name: "x".into(),
                status: "done".into(),
                dir: "runs/x".into(),
                table: t.into(),
                loss_chart: None,
                lineage: Some("lineage/x.html".into()),
            }],
        }
    }

    #[test]
    fn tables_are_escaped_and_charts_inlined() {
        let html = render(&page(), None).unwrap();
        assert!(html.contains("<td>E&lt;I&gt;E</td><td class=\"num\">0.228</td>"), "{html}");
        assert!(html.contains("<svg id=\"c1\"></svg>"));
        assert!(html.contains("<a href=\"lineage/x.html\">"), "{html}");
        assert!(!html.contains("Unfinished runs"));
        assert!(!html.contains("Paper table"));
    }

    #[test]
    fn a_template_directory_overrides_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.html"),
            "{% import \"macros.html\" as m %}<h1>{{ title }}</h1>{{ m::table(t=summary) }}",
        )
        .unwrap();
        let html = render(&page(), Some(dir.path())).unwrap();
        assert!(html.starts_with("<h1>stasc report: x</h1>"), "{html}");
        assert!(html.contains("<th>variant</th>"));
        std::fs::write(dir.path().join("index.html"), "{{ nope(").unwrap();
        let err = render(&page(), Some(dir.path())).unwrap_err().to_string();
        assert!(err.starts_with(&format!("report template {}: ", dir.path().display())), "{err}");
        assert!(err.contains("index.html") && !err.contains('\n'), "{err}");
        let missing = render(&page(), Some(&dir.path().join("missing"))).unwrap_err().to_string();
        assert!(missing.contains("does not exist"), "{missing}");
    }
}
