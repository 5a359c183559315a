//! The report's tables built from a result set: every iteration of every run (results.csv), loss curves, one row
//! per run (summary), and each run's per-iteration table for the HTML page. Accuracies and transition rates carry
//! the 95% intervals their metrics recorded (the best iteration's is bootstrapped over questions).

use std::collections::BTreeSet;

use super::aggregate::{max_with_index, test_correction_curve};
use super::load::{CellResults, ResultSet};
use super::table::{Precision, Table};
use super::uncertainty::{bounds, seed_of, with_interval, Answer, QuestionMatrix};
use crate::stasc::{IterationMetrics, Transitions};
use crate::stats::Interval;

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

/// The accuracy columns of results.csv, each followed by its interval's `_low` and `_high`.
const ACCURACIES: [&str; 4] =
    ["train_initial_accuracy", "train_correction_accuracy", "test_initial_accuracy", "test_correction_accuracy"];

/// A metric's interval as results.csv writes it: both bounds exactly as read, or two empty cells.
fn interval_cells(m: &IterationMetrics, name: &str) -> [String; 2] {
    match m.intervals.get(name) {
        Some(i) => [i.low.to_string(), i.high.to_string()],
        None => Default::default(),
    }
}

/// A split's transitions, each with its interval (`prefix` is the metrics' key: transitions or train_transitions),
/// then the number of pairs.
fn transition_cells(m: &IterationMetrics, t: &Transitions, prefix: &str) -> Vec<String> {
    let values = [t.correct_to_incorrect, t.correct_to_correct, t.incorrect_to_correct, t.incorrect_to_incorrect];
    let mut out = Vec::new();
    for (name, v) in Transitions::NAMES.iter().zip(values) {
        out.push(v.to_string());
        out.extend(interval_cells(m, &format!("{prefix}.{name}")));
    }
    out.push(t.pairs.to_string());
    out
}

/// results.csv: one row per (run, iteration) with the run's axis values, then every metric exactly as read.
pub fn results_table(set: &ResultSet) -> Table {
    let axes = axis_columns(set);
    let phases = phases(set);
    let mut headers: Vec<String> = vec!["cell".into()];
    headers.extend(axes.iter().map(|(_, h)| h.clone()));
    headers.extend(
        ["iteration", "variant", "model", "initial_answers_from", "train_questions", "test_questions"]
            .map(String::from),
    );
    for a in ACCURACIES {
        headers.extend([a.to_string(), format!("{a}_low"), format!("{a}_high")]);
    }
    for split in ["test", "train"] {
        for t in Transitions::NAMES {
            headers.extend([format!("{split}_{t}"), format!("{split}_{t}_low"), format!("{split}_{t}_high")]);
        }
        headers.push(format!("{split}_pairs"));
    }
    headers.extend(["filtered_pairs", "trained", "no_training_reason", "train_loss", "loss_steps"].map(String::from));
    headers.extend(phases.iter().map(|p| format!("seconds_{p}")));
    headers.extend(phases.iter().map(|p| format!("tokens_per_s_{p}")));
    let mut table = Table::new(headers);
    for cell in &set.cells {
        for m in &cell.iterations {
            let mut row = vec![cell.name.clone()];
            row.extend(axis_values(cell, &axes));
            // 0 questions: metrics written before the counts were recorded.
            let count = |n: usize| if n == 0 { String::new() } else { n.to_string() };
            row.extend([
                m.iteration.to_string(),
                m.variant.clone(),
                m.model.clone(),
                m.initial_answers_from.to_string(),
                count(m.questions.train),
                count(m.questions.test),
            ]);
            let accuracies = [
                m.train_initial_accuracy,
                m.train_correction_accuracy,
                Some(m.test_initial_accuracy),
                Some(m.test_correction_accuracy),
            ];
            for (name, v) in ACCURACIES.iter().zip(accuracies) {
                row.push(v.map(|v| v.to_string()).unwrap_or_default());
                row.extend(interval_cells(m, name));
            }
            row.extend(transition_cells(m, &m.transitions, "transitions"));
            row.extend(transition_cells(m, &m.train_transitions, "train_transitions"));
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

/// The 95% intervals of a run's headline numbers (None where the run did not record what they need).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HeadlineIntervals {
    /// Of the test initial accuracy at iteration 0 (from its metrics).
    pub test_initial_0: Option<Interval>,
    /// Of the test correction accuracy at iteration 0 (from its metrics).
    pub test_correction_0: Option<Interval>,
    /// Of the best iteration: a bootstrap over questions that chooses the best iteration again in every
    /// resample (so it includes the optimism of picking the best).
    pub max_test_correction: Option<Interval>,
    /// Of the last iteration's test correction accuracy (from its metrics).
    pub final_test_correction: Option<Interval>,
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

impl HeadlineIntervals {
    /// The intervals of `cell`'s headline numbers.
    pub fn of(cell: &CellResults) -> Self {
        let read = |m: Option<&IterationMetrics>, name: &str| m.and_then(|m| m.intervals.get(name)).copied();
        let first = cell.iterations.first();
        HeadlineIntervals {
            test_initial_0: read(first, "test_initial_accuracy"),
            test_correction_0: read(first, "test_correction_accuracy"),
            max_test_correction: QuestionMatrix::of(&[cell], Answer::Correction)
                .and_then(|m| m.interval(seed_of(&format!("max|{}", cell.name)), QuestionMatrix::best_of_mean)),
            final_test_correction: read(cell.iterations.last(), "test_correction_accuracy"),
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
                "test_initial_accuracy_it0_low",
                "test_initial_accuracy_it0_high",
                "test_correction_accuracy_it0",
                "test_correction_accuracy_it0_low",
                "test_correction_accuracy_it0_high",
                "max_test_correction_accuracy",
                "max_test_correction_accuracy_low",
                "max_test_correction_accuracy_high",
                "max_test_correction_iteration",
                "final_test_correction_accuracy",
                "final_test_correction_accuracy_low",
                "final_test_correction_accuracy_high",
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
        let ci = HeadlineIntervals::of(cell);
        let mut row = Vec::new();
        if show_name {
            row.push(cell.name.clone());
        }
        row.push(cell.variant().unwrap_or_else(|| p.missing()));
        row.extend(axis_values(cell, &axes));
        let done = cell.iterations.len();
        let max_at = h.max_test_correction.map(|(_, i)| i.to_string()).unwrap_or_else(|| p.missing());
        match p {
            Precision::Full => {
                let with_bounds = |v: Option<f64>, i: Option<Interval>| {
                    let [low, high] = bounds(i.filter(|_| v.is_some()));
                    [p.read(v, 3), low, high]
                };
                row.extend([cell.status_text(), done.to_string()]);
                row.push(cell.planned_iterations.map(|n| n.to_string()).unwrap_or_default());
                row.extend(with_bounds(h.test_initial_0, ci.test_initial_0));
                row.extend(with_bounds(h.test_correction_0, ci.test_correction_0));
                row.extend(with_bounds(h.max_test_correction.map(|m| m.0), ci.max_test_correction));
                row.push(max_at);
                row.extend(with_bounds(h.final_test_correction.map(|m| m.0), ci.final_test_correction));
                row.push(h.final_test_correction.map(|(_, i)| i.to_string()).unwrap_or_default());
            }
            Precision::Display => row.extend([
                match cell.planned_iterations {
                    Some(n) => format!("{done}/{n}"),
                    None => done.to_string(),
                },
                with_interval(h.test_initial_0, ci.test_initial_0, 3),
                with_interval(h.test_correction_0, ci.test_correction_0, 3),
                with_interval(h.max_test_correction.map(|m| m.0), ci.max_test_correction, 3),
                max_at,
                with_interval(h.final_test_correction.map(|m| m.0), ci.final_test_correction, 3),
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
        let shown = |v: Option<f64>, name: &str, decimals| with_interval(v, m.intervals.get(name).copied(), decimals);
        let transition = |v: f64, name: &str| shown(Some(v), &format!("transitions.{name}"), 1);
        let mut row = vec![
            m.iteration.to_string(),
            shown(Some(m.test_initial_accuracy), "test_initial_accuracy", 3),
            shown(Some(m.test_correction_accuracy), "test_correction_accuracy", 3),
            shown(m.train_initial_accuracy, "train_initial_accuracy", 3),
            shown(m.train_correction_accuracy, "train_correction_accuracy", 3),
            transition(t.correct_to_incorrect, "correct_to_incorrect"),
            transition(t.correct_to_correct, "correct_to_correct"),
            transition(t.incorrect_to_correct, "incorrect_to_correct"),
            transition(t.incorrect_to_incorrect, "incorrect_to_incorrect"),
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
    use crate::report::load::load_results;
    use crate::report::table::round6;
    use crate::report::testutil::*;
    use crate::stats::wilson;

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
            csv.lines().nth(1).unwrap().starts_with(
                "\"variant=EIE,seed=1\",1,0,EIE,M0,0,,,0.5,,,0.6,,,0.25,,,0.125,,,10,,,20,,,30,,,40,,,500,"
            ),
            "{csv}"
        );
    }

    #[test]
    fn intervals_stand_beside_every_accuracy_and_transition() {
        let tmp = tempfile::tempdir().unwrap();
        write_paper_run(tmp.path(), "EIE", &[0.2, 0.3], true);
        let set = load_results(tmp.path()).unwrap();
        let t = results_table(&set);
        let w = wilson(0.2, 500).unwrap();
        // As read from metrics.json (JSON may round the last binary digit).
        let read = |name: &str| column(&t, name)[0].parse::<f64>().unwrap();
        assert!((read("test_correction_accuracy_low") - w.low).abs() < 1e-15);
        assert!((read("test_correction_accuracy_high") - w.high).abs() < 1e-15);
        assert_eq!(column(&t, "test_questions"), ["500", "500"]);
        assert_eq!(column(&t, "train_incorrect_to_correct_low")[0], "23");
        assert_eq!(column(&t, "test_pairs")[0], "500");
        let s = summary_table(&set, Precision::Display);
        assert_eq!(column(&s, "test corr. @0")[0], with_interval(Some(0.2), Some(w), 3));
        assert!(column(&s, "max test corr.")[0].starts_with("0.300 [0.2"), "{:?}", s.rows[0]);
        let full = summary_table(&set, Precision::Full);
        assert_eq!(
            column(&full, "final_test_correction_accuracy_low")[0],
            round6(wilson(0.3, 500).unwrap().low).to_string()
        );
        let it = iteration_table(&set.cells[0]);
        assert!(column(&it, "i→c %")[0].starts_with("30.0 [28.0, 32.0]"), "{:?}", it.rows[0]);
        // Older runs recorded no intervals: the cells are empty, never made up.
        let (_old, set) = sweep();
        assert!(column(&results_table(&set), "test_correction_accuracy_low").iter().all(|c| c.is_empty()));
        assert_eq!(column(&summary_table(&set, Precision::Display), "max test corr.")[0], "0.250");
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
