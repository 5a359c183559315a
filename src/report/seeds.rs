//! Mean ± standard deviation of each run's headline numbers over the runs that differ only by seed, with the 95%
//! interval over questions of each mean.

use super::aggregate::{group_by_seed, is_seed_axis, is_variant_axis, MeanStd, SeedGroup};
use super::load::{CellResults, CellStatus, ResultSet};
use super::summary::{Headline, HeadlineIntervals, METRIC_COLUMNS};
use super::table::{Precision, Table};
use super::uncertainty::{bounds, seed_of, Answer, QuestionMatrix};
use crate::stats::Interval;

/// Mean ± std over the seeds of each group of runs that differ only by seed.
pub fn seeds_table(set: &ResultSet, p: Precision) -> Table {
    let groups: Vec<SeedGroup> = group_by_seed(set);
    let key_axes: Vec<String> = set.axes.iter().filter(|a| !is_seed_axis(a) && !is_variant_axis(a)).cloned().collect();
    let measures = [
        "test_initial_accuracy_it0",
        "test_correction_accuracy_it0",
        "max_test_correction_accuracy",
        "final_test_correction_accuracy",
    ];
    let mut headers: Vec<String> = vec!["variant".into()];
    headers.extend(key_axes.iter().map(|a| {
        if METRIC_COLUMNS.contains(&a.as_str()) {
            format!("axis:{a}")
        } else {
            a.clone()
        }
    }));
    match p {
        Precision::Full => {
            headers.extend(["runs", "seeds_with_results", "complete_runs"].map(String::from));
            for m in measures {
                headers.extend([format!("{m}_mean"), format!("{m}_std"), format!("{m}_low"), format!("{m}_high")]);
            }
        }
        Precision::Display => headers.extend(
            ["seeds", "complete", "test init. @0", "test corr. @0", "max test corr.", "final test corr."]
                .map(String::from),
        ),
    }
    let mut table = Table::new(headers);
    for g in &groups {
        // Only runs with at least one iteration contribute; their seeds are the ones listed.
        let with_data: Vec<usize> =
            (0..g.members.len()).filter(|&k| !set.cells[g.members[k]].iterations.is_empty()).collect();
        let cells: Vec<&CellResults> = with_data.iter().map(|&k| &set.cells[g.members[k]]).collect();
        let seeds: Vec<&str> = with_data.iter().map(|&k| g.seeds[k].as_str()).collect();
        let heads: Vec<Headline> = cells.iter().map(|c| Headline::of(c)).collect();
        let stat = |f: &dyn Fn(&Headline) -> Option<f64>| MeanStd::of(&heads.iter().filter_map(f).collect::<Vec<_>>());
        let stats = [
            stat(&|h| h.test_initial_0),
            stat(&|h| h.test_correction_0),
            stat(&|h| h.max_test_correction.map(|m| m.0)),
            stat(&|h| h.final_test_correction.map(|m| m.0)),
        ];
        let intervals = group_intervals(g, &cells);
        let complete = g.members.iter().filter(|&&i| set.cells[i].status == CellStatus::Done).count();
        let mut row = vec![g.variant_label().unwrap_or_else(|| p.missing())];
        row.extend(g.key.iter().map(|(_, v)| v.clone()));
        match p {
            Precision::Full => {
                row.extend([g.members.len().to_string(), seeds.join(" "), complete.to_string()]);
                for (s, i) in stats.iter().zip(intervals) {
                    row.push(p.computed(s.map(|s| s.mean), 3));
                    row.push(p.computed(s.and_then(|s| s.std), 3));
                    row.extend(bounds(i.filter(|_| s.is_some())));
                }
            }
            Precision::Display => {
                row.extend([seeds.join(", "), format!("{complete}/{}", g.members.len())]);
                row.extend(stats.iter().zip(intervals).map(|(s, i)| match (mean_pm_std(*s), i) {
                    (text, Some(i)) if s.is_some() => format!("{text} [{:.3}, {:.3}]", i.low, i.high),
                    (text, _) => text,
                }));
            }
        }
        table.rows.push(row);
    }
    table
}

/// 95% intervals over questions of a group's four headline means (it0 initial, it0 correction, max, final): a
/// single run's own (as in the summary), or a bootstrap over the questions the runs share.
fn group_intervals(g: &SeedGroup, cells: &[&CellResults]) -> [Option<Interval>; 4] {
    if let [one] = cells {
        let h = HeadlineIntervals::of(one);
        return [h.test_initial_0, h.test_correction_0, h.max_test_correction, h.final_test_correction];
    }
    let seed = |what: &str| seed_of(&format!("seeds|{}|{what}", g.label()));
    let initial = QuestionMatrix::of(cells, Answer::Initial);
    let correction = QuestionMatrix::of(cells, Answer::Correction);
    [
        initial.and_then(|m| m.interval(seed("initial0"), |m, q| m.at(0, q))),
        correction.as_ref().and_then(|m| m.interval(seed("correction0"), |m, q| m.at(0, q))),
        correction.as_ref().and_then(|m| m.interval(seed("max"), QuestionMatrix::mean_of_bests)),
        correction.as_ref().and_then(|m| m.interval(seed("final"), QuestionMatrix::final_mean)),
    ]
}

/// "0.212 ± 0.004" (or just the mean for one value, "—" for none).
pub fn mean_pm_std(s: Option<MeanStd>) -> String {
    match s {
        Some(MeanStd { mean, std: Some(sd), .. }) => format!("{mean:.3} ± {sd:.3}"),
        Some(MeanStd { mean, std: None, .. }) => format!("{mean:.3}"),
        None => Precision::Display.missing(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testutil::*;

    #[test]
    fn seeds_are_averaged_with_sample_std() {
        let (_tmp, set) = sweep();
        let t = seeds_table(&set, Precision::Full);
        assert_eq!(t.headers[..4], ["variant", "runs", "seeds_with_results", "complete_runs"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(column(&t, "seeds_with_results"), ["1 2", "1"]);
        // max per seed: 0.25 and 0.375 -> mean 0.3125, sample std 0.088388.
        assert_eq!(column(&t, "max_test_correction_accuracy_mean"), ["0.3125", "0.5"]);
        assert_eq!(column(&t, "max_test_correction_accuracy_std"), ["0.088388", ""]);
        assert_eq!(column(&t, "final_test_correction_accuracy_mean"), ["0.21875", "0.25"]);
        let d = seeds_table(&set, Precision::Display);
        assert_eq!(column(&d, "max test corr."), ["0.312 ± 0.088", "0.500"]);
        assert_eq!(column(&d, "complete"), ["2/2", "0/1"]);
        assert_eq!(column(&t, "max_test_correction_accuracy_low"), ["", ""]);
    }

    #[test]
    fn seeds_means_get_a_bootstrap_interval_over_questions() {
        let tmp = tempfile::tempdir().unwrap();
        write_paper_run(&tmp.path().join("a"), "EIE", &[0.2, 0.3], true);
        write_paper_run(&tmp.path().join("b"), "EIE", &[0.2, 0.25], true);
        let set = crate::report::load::load_results(tmp.path()).unwrap();
        let t = seeds_table(&set, Precision::Full);
        assert_eq!(column(&t, "final_test_correction_accuracy_mean"), ["0.275"]);
        let (low, high): (f64, f64) = (
            column(&t, "final_test_correction_accuracy_low")[0].parse().unwrap(),
            column(&t, "final_test_correction_accuracy_high")[0].parse().unwrap(),
        );
        assert!(low < 0.275 && 0.275 < high && high - low < 0.1, "{low} {high}");
        let d = seeds_table(&set, Precision::Display);
        assert!(column(&d, "final test corr.")[0].starts_with("0.275 ± 0.035 [0.2"), "{:?}", d.rows);
    }
}
