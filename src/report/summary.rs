//! The report's tables built from a result set: every iteration of every run (results.csv), loss curves, one row
//! per run (summary), and each run's per-iteration table for the HTML page.

use std::collections::BTreeSet;

use super::aggregate::{max_with_index, test_correction_curve};
use super::load::{CellResults, ResultSet};
use super::table::{Precision, Table};
use crate::stasc::{IterationMetrics, Transitions};

/// Metric columns of results.csv that an axis of the same name must not shadow.
pub(crate) const METRIC_COLUMNS: &[&str] =
    &["cell", "iteration", "variant", "model", "status", "trained", "filtered_pairs"];
/// Phases in the order the loop runs them; other phase names follow, sorted.
const PHASE_ORDER: &[&str] = &["initial", "corrections", "train"];

/// Axis columns shown beside each run: every axis except `variant` (the variant column already shows it), named
/// `axis:<key>` where the key would clash with a metric column. Returns (axis key, column header).
pub fn axis_columns(set: &ResultSet) -> Vec<(String, String)> {
    set.axes
        .iter()
        .filter(|a| a.as_str() != "variant")
        .map(|a| {
            let header = if METRIC_COLUMNS.contains(&a.as_str()) { format!("axis:{a}") } else { a.clone() };
            (a.clone(), header)
        })
        .collect()
}

fn axis_values(cell: &CellResults, axes: &[(String, String)]) -> Vec<String> {
    axes.iter().map(|(k, _)| cell.axis_value(k).unwrap_or_default().to_string()).collect()
}

/// Phase names over all iterations of all runs, in loop order.
fn phases(set: &ResultSet) -> Vec<String> {
    let all: BTreeSet<&String> = set
        .cells
        .iter()
        .flat_map(|c| &c.iterations)
        .flat_map(|m| m.phase_seconds.keys().chain(m.tokens_per_s.keys()))
        .collect();
    let mut out: Vec<String> =
        PHASE_ORDER.iter().filter(|p| all.iter().any(|a| a == *p)).map(|p| p.to_string()).collect();
    out.extend(all.into_iter().filter(|a| !PHASE_ORDER.contains(&a.as_str())).cloned());
    out
}

fn transition_cells(t: &Transitions) -> Vec<String> {
    vec![
        t.correct_to_incorrect.to_string(),
        t.correct_to_correct.to_string(),
        t.incorrect_to_correct.to_string(),
        t.incorrect_to_incorrect.to_string(),
        t.pairs.to_string(),
    ]
}

/// results.csv: one row per (run, iteration) with the run's axis values, then every metric exactly as read.
pub fn results_table(set: &ResultSet) -> Table {
    let axes = axis_columns(set);
    let phases = phases(set);
    let mut headers: Vec<String> = vec!["cell".into()];
    headers.extend(axes.iter().map(|(_, h)| h.clone()));
    headers.extend(
        [
            "iteration",
            "variant",
            "model",
            "initial_answers_from",
            "train_initial_accuracy",
            "train_correction_accuracy",
            "test_initial_accuracy",
            "test_correction_accuracy",
        ]
        .map(String::from),
    );
    for split in ["test", "train"] {
        for t in
            ["correct_to_incorrect", "correct_to_correct", "incorrect_to_correct", "incorrect_to_incorrect", "pairs"]
        {
            headers.push(format!("{split}_{t}"));
        }
    }
    headers.extend(["filtered_pairs", "trained", "no_training_reason", "train_loss", "loss_steps"].map(String::from));
    headers.extend(phases.iter().map(|p| format!("seconds_{p}")));
    headers.extend(phases.iter().map(|p| format!("tokens_per_s_{p}")));
    let mut table = Table::new(headers);
    for cell in &set.cells {
        for m in &cell.iterations {
            let mut row = vec![cell.name.clone()];
            row.extend(axis_values(cell, &axes));
            row.extend([
                m.iteration.to_string(),
                m.variant.clone(),
                m.model.clone(),
                m.initial_answers_from.to_string(),
                m.train_initial_accuracy.map(|v| v.to_string()).unwrap_or_default(),
                m.train_correction_accuracy.map(|v| v.to_string()).unwrap_or_default(),
                m.test_initial_accuracy.to_string(),
                m.test_correction_accuracy.to_string(),
            ]);
            row.extend(transition_cells(&m.transitions));
            row.extend(transition_cells(&m.train_transitions));
            row.extend([
                m.filtered_pairs.to_string(),
                m.trained.to_string(),
                m.no_training_reason.clone().unwrap_or_default(),
                m.train_loss.map(|l| l.to_string()).unwrap_or_default(),
                m.loss_curve.len().to_string(),
            ]);
            row.extend(phases.iter().map(|p| m.phase_seconds.get(p).map(|v| v.to_string()).unwrap_or_default()));
            row.extend(phases.iter().map(|p| m.tokens_per_s.get(p).map(|v| v.to_string()).unwrap_or_default()));
            table.rows.push(row);
        }
    }
    table
}

/// loss_curves.csv: one row per optimiser step of every iteration that trained.
pub fn loss_table(set: &ResultSet) -> Table {
    let mut table = Table::new(["cell", "iteration", "step", "loss"]);
    for cell in &set.cells {
        for m in &cell.iterations {
            for (step, loss) in m.loss_curve.iter().enumerate() {
                table.rows.push(vec![
                    cell.name.clone(),
                    m.iteration.to_string(),
                    (step + 1).to_string(),
                    loss.to_string(),
                ]);
            }
        }
    }
    table
}

/// The headline numbers of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headline {
    /// Test initial accuracy at iteration 0.
    pub test_initial_0: Option<f64>,
    /// Test correction accuracy at iteration 0 (prompted self-correction).
    pub test_correction_0: Option<f64>,
    /// Best test correction accuracy over iterations (incl. 0) and the first iteration reaching it.
    pub max_test_correction: Option<(f64, usize)>,
    /// Test correction accuracy of the last iteration done, and that iteration.
    pub final_test_correction: Option<(f64, usize)>,
}

impl Headline {
    /// The headline numbers of `cell`'s iterations.
    pub fn of(cell: &CellResults) -> Self {
        let first: Option<&IterationMetrics> = cell.iterations.first();
        Headline {
            test_initial_0: first.map(|m| m.test_initial_accuracy),
            test_correction_0: first.map(|m| m.test_correction_accuracy),
            max_test_correction: max_with_index(test_correction_curve(cell)),
            final_test_correction: cell.iterations.last().map(|m| (m.test_correction_accuracy, m.iteration)),
        }
    }
}

/// One row per run: variant, axis values, progress and headline numbers.
pub fn summary_table(set: &ResultSet, p: Precision) -> Table {
    let axes = axis_columns(set);
    let show_name = p == Precision::Full || axes.is_empty();
    let mut headers: Vec<String> = Vec::new();
    if show_name {
        headers.push(if p == Precision::Full { "cell" } else { "run" }.into());
    }
    headers.push("variant".into());
    headers.extend(axes.iter().map(|(_, h)| h.clone()));
    headers.extend(
        match p {
            Precision::Full => [
                "status",
                "iterations_done",
                "planned_iterations",
                "test_initial_accuracy_it0",
                "test_correction_accuracy_it0",
                "max_test_correction_accuracy",
                "max_test_correction_iteration",
                "final_test_correction_accuracy",
                "final_iteration",
            ]
            .as_slice(),
            Precision::Display => [
                "iterations",
                "test init. @0",
                "test corr. @0",
                "max test corr.",
                "at it.",
                "final test corr.",
                "status",
            ]
            .as_slice(),
        }
        .iter()
        .map(|s| s.to_string()),
    );
    let mut table = Table::new(headers);
    for cell in &set.cells {
        let h = Headline::of(cell);
        let mut row = Vec::new();
        if show_name {
            row.push(cell.name.clone());
        }
        row.push(cell.variant().unwrap_or_else(|| p.missing()));
        row.extend(axis_values(cell, &axes));
        let done = cell.iterations.len();
        let max_at = h.max_test_correction.map(|(_, i)| i.to_string()).unwrap_or_else(|| p.missing());
        match p {
            Precision::Full => row.extend([
                cell.status_text(),
                done.to_string(),
                cell.planned_iterations.map(|n| n.to_string()).unwrap_or_default(),
                p.read(h.test_initial_0, 3),
                p.read(h.test_correction_0, 3),
                p.read(h.max_test_correction.map(|m| m.0), 3),
                max_at,
                p.read(h.final_test_correction.map(|m| m.0), 3),
                h.final_test_correction.map(|(_, i)| i.to_string()).unwrap_or_default(),
            ]),
            Precision::Display => row.extend([
                match cell.planned_iterations {
                    Some(n) => format!("{done}/{n}"),
                    None => done.to_string(),
                },
                p.read(h.test_initial_0, 3),
                p.read(h.test_correction_0, 3),
                p.read(h.max_test_correction.map(|m| m.0), 3),
                max_at,
                p.read(h.final_test_correction.map(|m| m.0), 3),
                cell.status_text(),
            ]),
        }
        table.rows.push(row);
    }
    table
}

/// A run's per-iteration table for reading (accuracies, transitions in %, pairs, training, throughput).
pub fn iteration_table(cell: &CellResults) -> Table {
    let p = Precision::Display;
    let phases: Vec<String> = {
        let set: BTreeSet<&String> = cell.iterations.iter().flat_map(|m| m.tokens_per_s.keys()).collect();
        let mut v: Vec<String> =
            PHASE_ORDER.iter().filter(|p| set.iter().any(|a| a == *p)).map(|p| p.to_string()).collect();
        v.extend(set.into_iter().filter(|a| !PHASE_ORDER.contains(&a.as_str())).cloned());
        v
    };
    let mut headers: Vec<String> = [
        "it.",
        "test init.",
        "test corr.",
        "train init.",
        "train corr.",
        "c→i %",
        "c→c %",
        "i→c %",
        "i→i %",
        "filtered pairs",
        "train loss",
        "trained",
    ]
    .map(String::from)
    .to_vec();
    headers.extend(phases.iter().map(|ph| format!("tok/s {ph}")));
    let mut table = Table::new(headers);
    for m in &cell.iterations {
        let t = &m.transitions;
        let mut row = vec![
            m.iteration.to_string(),
            p.read(Some(m.test_initial_accuracy), 3),
            p.read(Some(m.test_correction_accuracy), 3),
            p.read(m.train_initial_accuracy, 3),
            p.read(m.train_correction_accuracy, 3),
            p.read(Some(t.correct_to_incorrect), 1),
            p.read(Some(t.correct_to_correct), 1),
            p.read(Some(t.incorrect_to_correct), 1),
            p.read(Some(t.incorrect_to_incorrect), 1),
            m.filtered_pairs.to_string(),
            p.read(m.train_loss, 4),
            match (&m.trained, &m.no_training_reason) {
                (true, _) => "yes".into(),
                (false, Some(r)) => format!("no: {r}"),
                (false, None) => "no".into(),
            },
        ];
        row.extend(phases.iter().map(|ph| p.read(m.tokens_per_s.get(ph).copied(), 1)));
        table.rows.push(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testutil::*;

    #[test]
    fn results_csv_has_axes_then_every_metric_exactly() {
        let (_tmp, set) = sweep();
        let t = results_table(&set);
        assert_eq!(&t.headers[..4], &["cell", "seed", "iteration", "variant"]);
        assert_eq!(t.rows.len(), 4 + 4 + 2);
        assert_eq!(column(&t, "test_correction_accuracy")[..4], ["0.125", "0.25", "0.25", "0.1875"]);
        assert_eq!(column(&t, "seed")[4], "2");
        assert_eq!(column(&t, "test_incorrect_to_correct")[0], "30");
        assert_eq!(column(&t, "train_pairs")[0], "2000");
        assert_eq!(column(&t, "filtered_pairs")[1], "101");
        assert_eq!(column(&t, "trained")[3], "false");
        assert_eq!(column(&t, "no_training_reason")[3], "last iteration: evaluation only");
        assert_eq!(column(&t, "train_loss")[..4], ["1.5", "1.5", "1.5", ""]);
        assert_eq!(column(&t, "seconds_corrections")[0], "20");
        assert_eq!(column(&t, "tokens_per_s_train")[0], "300");
        let seconds: Vec<&String> = t.headers.iter().filter(|h| h.starts_with("seconds_")).collect();
        assert_eq!(seconds, ["seconds_initial", "seconds_corrections", "seconds_train"]);
        let csv = t.to_csv("results.csv").unwrap();
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("\"variant=EIE,seed=1\",1,0,EIE,M0,0,0.5,0.6,0.25,0.125,10,20,30,40,500,"),
            "{csv}"
        );
    }

    #[test]
    fn loss_curves_are_listed_per_step() {
        let (_tmp, set) = sweep();
        let t = loss_table(&set);
        assert_eq!(t.rows[0], ["variant=EIE,seed=1", "0", "1", "2"]);
        assert_eq!(t.rows[1], ["variant=EIE,seed=1", "0", "2", "1"]);
        assert_eq!(t.rows.len(), 2 * (3 + 3 + 2));
    }

    #[test]
    fn summary_has_headline_max_and_final() {
        let (_tmp, set) = sweep();
        let t = summary_table(&set, Precision::Full);
        assert_eq!(column(&t, "max_test_correction_accuracy"), ["0.25", "0.375", "0.5"]);
        assert_eq!(column(&t, "max_test_correction_iteration"), ["1", "1", "0"]);
        assert_eq!(column(&t, "final_test_correction_accuracy"), ["0.1875", "0.25", "0.25"]);
        assert_eq!(column(&t, "test_initial_accuracy_it0"), ["0.25", "0.25", "0.25"]);
        assert_eq!(column(&t, "iterations_done"), ["4", "4", "2"]);
        assert_eq!(column(&t, "status"), ["done", "done", "2/3 iterations, running or failed"]);
        let d = summary_table(&set, Precision::Display);
        assert_eq!(d.headers[..2], ["variant", "seed"]);
        assert_eq!(column(&d, "max test corr."), ["0.250", "0.375", "0.500"]);
    }

    #[test]
    fn iteration_table_reads_transitions_and_training() {
        let (_tmp, set) = sweep();
        let t = iteration_table(&set.cells[2]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(column(&t, "i→c %"), ["30.0", "30.0"]);
        assert_eq!(column(&t, "trained"), ["yes", "yes"]);
        assert_eq!(column(&t, "tok/s corrections"), ["200.0", "200.0"]);
    }
}
