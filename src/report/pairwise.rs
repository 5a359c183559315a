//! Which groups of runs (variants, with their seeds) differ from each other beyond the 95% interval: for every
//! pair of groups that answered the same test questions, a paired bootstrap over those questions of the difference
//! of (a) the final iteration's test correction accuracy and (b) the best-over-iterations test correction accuracy,
//! with the choice of the best iteration made again in every resample. pairwise.csv lists every pair; the summary
//! shows only the pairs that differ.

use super::aggregate::group_by_seed;
use super::load::{CellResults, ResultSet};
use super::table::{Precision, Table};
use super::uncertainty::{beyond, bounds, difference_with_interval, seed_of, Answer, QuestionMatrix};
use crate::stats::Interval;

/// One compared quantity of a pair: both groups' values and the interval of their difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedDifference {
    /// Group A's value on the common questions.
    pub a: f64,
    /// Group B's value on the common questions.
    pub b: f64,
    /// 95% interval of a − b (paired bootstrap over the questions).
    pub interval: Option<Interval>,
}

impl PairedDifference {
    /// a − b.
    pub fn difference(&self) -> f64 {
        self.a - self.b
    }

    /// Whether the interval excludes 0.
    pub fn beyond(&self) -> bool {
        self.interval.is_some_and(beyond)
    }
}

/// Two groups compared on their common test questions.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Label of the first group (in group order).
    pub a: String,
    /// Label of the second group.
    pub b: String,
    /// Number of test questions both answered.
    pub questions: usize,
    /// The last iteration's test correction accuracy (mean over each group's runs).
    pub final_accuracy: PairedDifference,
    /// The best iteration of each group's mean test correction accuracy curve.
    pub best_accuracy: PairedDifference,
}

impl Pair {
    /// Whether either quantity differs beyond the 95% interval.
    pub fn differs(&self) -> bool {
        self.final_accuracy.beyond() || self.best_accuracy.beyond()
    }
}

/// The pairwise comparisons of a result set.
#[derive(Debug, Clone, PartialEq)]
pub struct Pairwise {
    /// Number of groups with per-question test rewards (the others cannot be compared).
    pub groups_with_rewards: usize,
    /// Number of groups.
    pub groups: usize,
    /// Every pair that shares test questions, in group order.
    pub pairs: Vec<Pair>,
}

/// Compares every pair of groups of `set` (see the module documentation).
pub fn pairwise(set: &ResultSet) -> Pairwise {
    let groups = group_by_seed(set);
    let with_rewards: Vec<(String, QuestionMatrix)> = groups
        .iter()
        .filter_map(|g| {
            let cells: Vec<&CellResults> =
                g.members.iter().map(|&i| &set.cells[i]).filter(|c| !c.iterations.is_empty()).collect();
            QuestionMatrix::of(&cells, Answer::Correction).map(|m| (g.label(), m))
        })
        .collect();
    let mut pairs = Vec::new();
    for (i, (a_label, a)) in with_rewards.iter().enumerate() {
        for (b_label, b) in &with_rewards[i + 1..] {
            let common: Vec<String> = a.ids.iter().filter(|id| b.ids.binary_search(id).is_ok()).cloned().collect();
            if common.is_empty() {
                continue;
            }
            let (a, b) = (a.restricted(&common), b.restricted(&common));
            let all = a.all();
            // One seed per pair and quantity: the same pair gets the same intervals in any report.
            let compare = |what: &str, statistic: fn(&QuestionMatrix, &[usize]) -> f64| PairedDifference {
                a: statistic(&a, &all),
                b: statistic(&b, &all),
                interval: crate::stats::bootstrap(
                    common.len(),
                    crate::stats::BOOTSTRAP_RESAMPLES,
                    seed_of(&format!("{a_label}|{b_label}|{what}")),
                    |q| statistic(&a, q) - statistic(&b, q),
                ),
            };
            pairs.push(Pair {
                a: a_label.clone(),
                b: b_label.clone(),
                questions: common.len(),
                final_accuracy: compare("final", QuestionMatrix::final_mean),
                best_accuracy: compare("best", QuestionMatrix::best_of_mean),
            });
        }
    }
    Pairwise { groups_with_rewards: with_rewards.len(), groups: groups.len(), pairs }
}

impl Pairwise {
    /// pairwise.csv: one row per pair with both quantities, their differences, intervals and beyond_95 flags.
    pub fn to_table(&self) -> Table {
        let mut t = Table::new([
            "a",
            "b",
            "questions",
            "a_final_test_correction_accuracy",
            "b_final_test_correction_accuracy",
            "final_difference",
            "final_difference_low",
            "final_difference_high",
            "final_beyond_95",
            "a_best_test_correction_accuracy",
            "b_best_test_correction_accuracy",
            "best_difference",
            "best_difference_low",
            "best_difference_high",
            "best_beyond_95",
        ]);
        let p = Precision::Full;
        for pair in &self.pairs {
            let mut row = vec![pair.a.clone(), pair.b.clone(), pair.questions.to_string()];
            for d in [pair.final_accuracy, pair.best_accuracy] {
                row.extend([p.computed(Some(d.a), 6), p.computed(Some(d.b), 6), p.computed(Some(d.difference()), 6)]);
                row.extend(bounds(d.interval));
                row.push(d.beyond().to_string());
            }
            t.rows.push(row);
        }
        t
    }

    /// The summary's table of the pairs that differ beyond the 95% interval (each quantity as "a / b" and its
    /// difference with the interval); None when none does or none was compared (see [`Pairwise::summary_note`]).
    pub fn differing_table(&self) -> Option<Table> {
        let differing: Vec<&Pair> = self.pairs.iter().filter(|p| p.differs()).collect();
        if differing.is_empty() {
            return None;
        }
        let mut t =
            Table::new(["a", "b", "questions", "final test corr. a / b", "Δ final", "best test corr. a / b", "Δ best"]);
        for p in differing {
            let mut row = vec![p.a.clone(), p.b.clone(), p.questions.to_string()];
            for d in [p.final_accuracy, p.best_accuracy] {
                row.push(format!("{:.3} / {:.3}", d.a, d.b));
                row.push(difference_with_interval(Some(d.difference()), d.interval, 3));
            }
            t.rows.push(row);
        }
        Some(t)
    }

    /// The sentence the summary shows instead of the table when no pair differs or none could be compared; None
    /// when the table is shown or there are fewer than two groups.
    pub fn summary_note(&self) -> Option<String> {
        if self.groups < 2 {
            return None;
        }
        if self.pairs.is_empty() {
            return Some(format!(
                "No two groups share per-question test rewards ({} of {} groups have them; runs made before stasc \
                 recorded them have none), so none were compared.",
                self.groups_with_rewards, self.groups
            ));
        }
        let differing = self.pairs.iter().filter(|p| p.differs()).count();
        Some(if differing == 0 {
            format!("No pair differs beyond the 95% interval ({} pairs compared).", self.pairs.len())
        } else {
            format!("{differing} of {} pairs compared differ beyond the 95% interval:", self.pairs.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::load::load_results;
    use crate::report::testutil::*;
    use crate::stasc::QuestionRewards;
    use std::fs;

    /// Rewrites the per-question rewards of iteration `i` of the run in `dir`: question q is correct iff `correct(q)`.
    fn set_rewards(dir: &std::path::Path, i: usize, n: usize, correct: impl Fn(usize) -> bool) {
        let path = dir.join(format!("iter_{i}/metrics.json"));
        let mut m: crate::stasc::IterationMetrics = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        m.test_rewards = (0..n)
            .map(|q| QuestionRewards { id: format!("q{q}"), initial: 0.0, correction: correct(q) as u8 as f64 })
            .collect();
        m.test_correction_accuracy = (0..n).filter(|&q| correct(q)).count() as f64 / n as f64;
        fs::write(&path, serde_json::to_string(&m).unwrap()).unwrap();
    }

    #[test]
    fn runs_that_differ_on_many_questions_differ_and_identical_ones_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let n = 400;
        for (name, variant) in [("a", "EIE"), ("b", "FNF"), ("c", "ENE")] {
            write_paper_run(&tmp.path().join(name), variant, &[0.2, 0.2], true);
        }
        // a and c: 20% correct at both iterations, on the same questions; b: 35% at the last iteration.
        for i in 0..2 {
            set_rewards(&tmp.path().join("a"), i, n, |q| q % 5 == 0);
            set_rewards(&tmp.path().join("c"), i, n, |q| q % 5 == 0);
        }
        set_rewards(&tmp.path().join("b"), 0, n, |q| q % 5 == 0);
        set_rewards(&tmp.path().join("b"), 1, n, |q| q % 5 == 0 || q % 20 == 1 || q % 20 == 2 || q % 20 == 3);
        let set = load_results(tmp.path()).unwrap();
        let p = pairwise(&set);
        assert_eq!(p.pairs.len(), 3);
        let ab = &p.pairs[0];
        assert_eq!((ab.a.as_str(), ab.b.as_str(), ab.questions), ("EIE", "FNF", n));
        assert!((ab.final_accuracy.difference() + 0.15).abs() < 1e-12);
        let i = ab.final_accuracy.interval.unwrap();
        assert!(i.high < 0.0 && i.contains(-0.15), "{i:?}");
        assert!(ab.best_accuracy.beyond() && ab.differs());
        let ac = &p.pairs[1];
        assert_eq!((ac.a.as_str(), ac.b.as_str()), ("EIE", "ENE"));
        assert_eq!(ac.final_accuracy.interval, Some(Interval { low: 0.0, high: 0.0 }));
        assert!(!ac.differs());
        assert_eq!(p.summary_note().as_deref(), Some("2 of 3 pairs compared differ beyond the 95% interval:"));
        let shown = p.differing_table().unwrap();
        assert_eq!(shown.rows.len(), 2);
        assert_eq!(shown.rows[0][..4], ["EIE", "FNF", "400", "0.200 / 0.350"]);
        assert!(shown.rows[0][4].starts_with("-0.150* [-0.1"), "{:?}", shown.rows[0]);
        let csv = p.to_table().to_csv("pairwise.csv").unwrap();
        assert!(csv.lines().nth(2).unwrap().starts_with("EIE,ENE,400,0.2,0.2,0,0,0,false,"), "{csv}");
        assert_eq!(pairwise(&set), p, "seeded");
    }

    #[test]
    fn groups_without_rewards_or_common_questions_are_not_paired() {
        let tmp = tempfile::tempdir().unwrap();
        write_paper_run(&tmp.path().join("a"), "EIE", &[0.2], true);
        write_run(&tmp.path().join("b"), "FNF", &[0.2], true);
        let p = pairwise(&load_results(tmp.path()).unwrap());
        assert!(p.pairs.is_empty());
        assert_eq!(p.summary_note().as_deref(), Some("No two groups share per-question test rewards (1 of 2 groups have them; runs made before stasc recorded them have none), so none were compared."));
        assert_eq!(p.differing_table(), None);
        write_paper_run(&tmp.path().join("c"), "ENE", &[0.2], true);
        set_rewards(&tmp.path().join("c"), 0, 10, |_| true);
        for q in 0..10 {
            // Rename c's questions so that none is shared with a.
            let path = tmp.path().join("c/iter_0/metrics.json");
            let text = fs::read_to_string(&path).unwrap().replace(&format!("\"q{q}\""), &format!("\"other{q}\""));
            fs::write(&path, text).unwrap();
        }
        let p = pairwise(&load_results(tmp.path()).unwrap());
        assert_eq!((p.groups_with_rewards, p.pairs.len()), (2, 0));
        let one = tempfile::tempdir().unwrap();
        write_paper_run(&one.path().join("a"), "EIE", &[0.2], true);
        assert_eq!(pairwise(&load_results(one.path()).unwrap()).summary_note(), None);
    }
}
