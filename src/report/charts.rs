//! The report's charts, built from what the runs recorded: accuracies, filtered pairs and training loss per
//! iteration (one line per run), each run's loss curves, and ours against the published numbers.

use super::load::{CellResults, ResultSet};
use super::paper::PaperTable;
use super::svg::{Layout, LineChart, Series};

fn per_iteration(
    cell: &CellResults,
    value: impl Fn(&crate::stasc::IterationMetrics) -> Option<f64>,
) -> Vec<(f64, f64)> {
    cell.iterations.iter().filter_map(|m| value(m).map(|v| (m.iteration as f64, v))).collect()
}

fn chart_per_run(
    set: &ResultSet,
    title: &str,
    y_label: &str,
    value: impl Fn(&crate::stasc::IterationMetrics) -> Option<f64>,
) -> LineChart {
    let mut chart = LineChart::new(title, "iteration", y_label);
    chart.series = set
        .cells
        .iter()
        .filter(|c| !c.iterations.is_empty())
        .map(|c| Series::new(&c.name, per_iteration(c, &value)))
        .collect();
    chart
}

/// The overview charts: test initial and test correction accuracy, filtered pairs, mean training loss.
pub fn overview_charts(set: &ResultSet) -> Vec<LineChart> {
    vec![
        chart_per_run(set, "Test correction accuracy", "accuracy", |m| Some(m.test_correction_accuracy)),
        chart_per_run(set, "Test initial accuracy", "accuracy", |m| Some(m.test_initial_accuracy)),
        LineChart {
            integer_y: true,
            ..chart_per_run(set, "Filtered training pairs", "pairs", |m| Some(m.filtered_pairs as f64))
        },
        chart_per_run(set, "Mean training loss", "loss", |m| m.train_loss),
    ]
}

/// One run's loss per optimiser step, one line per iteration that trained; None when none did.
pub fn loss_chart(cell: &CellResults) -> Option<LineChart> {
    let mut chart = LineChart::new(format!("Training loss: {}", cell.name), "optimiser step", "loss");
    chart.series = cell
        .iterations
        .iter()
        .filter(|m| !m.loss_curve.is_empty())
        .map(|m| {
            let points = m.loss_curve.iter().enumerate().map(|(s, &l)| ((s + 1) as f64, l)).collect();
            Series { label: format!("iteration {}", m.iteration), points, color: Some(m.iteration), dashed: false }
        })
        .collect();
    (!chart.series.is_empty()).then_some(chart)
}

/// One small chart per row of the paper table: test correction accuracy, ours (solid) and published (dashed), all
/// on the same y scale so the variants compare at a glance.
pub fn paper_charts(table: &PaperTable) -> Vec<LineChart> {
    let points = |values: &[Option<f64>]| -> Vec<(f64, f64)> {
        values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i as f64, v))).collect()
    };
    let all: Vec<f64> = table.rows.iter().flat_map(|r| r.ours.iter().chain(&r.published)).flatten().copied().collect();
    let range = all
        .iter()
        .fold(None, |acc: Option<(f64, f64)>, &v| Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v)))));
    let mut charts = Vec::new();
    for row in &table.rows {
        let mut chart = LineChart::new(&row.label, "iteration", "test correction acc.");
        chart.layout = Layout::SMALL;
        chart.y_range = range;
        if row.ours.iter().any(Option::is_some) {
            chart.series.push(Series {
                label: "ours".into(),
                points: points(&row.ours),
                color: Some(0),
                dashed: false,
            });
        }
        if row.published.iter().any(Option::is_some) {
            chart.series.push(Series {
                label: "published".into(),
                points: points(&row.published),
                color: Some(2),
                dashed: true,
            });
        }
        if !chart.series.is_empty() {
            charts.push(chart);
        }
    }
    charts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::load::load_results;
    use crate::report::testutil::*;

    #[test]
    fn one_line_per_run_and_one_loss_line_per_trained_iteration() {
        let tmp = tempfile::tempdir().unwrap();
        write_run(&tmp.path().join("a"), "EIE", &[0.1, 0.2, 0.3], true);
        write_run(&tmp.path().join("b"), "FNF", &[0.2], false);
        let set = load_results(tmp.path()).unwrap();
        let charts = overview_charts(&set);
        assert_eq!(charts[0].series.len(), 2);
        assert_eq!(charts[0].series[0].points, vec![(0.0, 0.1), (1.0, 0.2), (2.0, 0.3)]);
        assert_eq!(charts[2].series[1].points, vec![(0.0, 100.0)]);
        // The last iteration of a finished run does not train, so it has no loss point.
        assert_eq!(charts[3].series[0].points, vec![(0.0, 1.5), (1.0, 1.5)]);
        let loss = loss_chart(&set.cells[0]).unwrap();
        assert_eq!(loss.series.len(), 2);
        assert_eq!(loss.series[0].points, vec![(1.0, 2.0), (2.0, 1.0)]);
    }

    #[test]
    fn paper_charts_share_one_scale_and_skip_empty_rows() {
        let tmp = tempfile::tempdir().unwrap();
        write_run(tmp.path(), "EIE", &[0.5, 0.1], true);
        let set = load_results(tmp.path()).unwrap();
        let published = crate::report::Published::embedded().unwrap();
        let table = crate::report::paper_table(&set, &published, "Phi-3-mini-4k-instruct").unwrap();
        let charts = paper_charts(&table);
        assert_eq!(charts.len(), 8);
        assert_eq!(charts[0].series.len(), 2);
        assert!(charts[0].series[1].dashed);
        assert_eq!(charts[1].series.len(), 1);
        let (lo, hi) = charts[0].y_range.unwrap();
        assert!((lo - 0.1).abs() < 1e-12 && (hi - 0.5).abs() < 1e-12);
        assert!(charts.iter().all(|c| c.y_range == charts[0].y_range));
    }
}
