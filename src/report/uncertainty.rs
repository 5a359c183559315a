//! 95% intervals over questions that the report derives from what runs recorded: the intervals each metrics.json
//! carries are read as they are; for a group of runs (seeds), or a statistic that picks the best iteration, the
//! runs' per-question test rewards are resampled by question (a percentile bootstrap, seeded by what is compared,
//! so a report is the same every time). How intervals are written in tables lives here too, so every table
//! writes them alike: "0.212 [0.177, 0.250]", and a difference whose interval excludes 0 gets a `*`.

use std::collections::{BTreeMap, BTreeSet};

use super::load::CellResults;
use super::table::Precision;
use crate::stasc::QuestionRewards;
use crate::stats::{bootstrap, Interval, BOOTSTRAP_RESAMPLES};

/// Which answer of a test question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The initial answer.
    Initial,
    /// The correction.
    Correction,
}

impl Answer {
    fn reward(self, r: &QuestionRewards) -> f64 {
        match self {
            Answer::Initial => r.initial,
            Answer::Correction => r.correction,
        }
    }
}

/// The test rewards of a group of runs, question by question, on the questions every run answered at every
/// iteration it has.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionMatrix {
    /// Question ids, sorted.
    pub ids: Vec<String>,
    /// `values[run][iteration][question]`, questions in `ids` order.
    pub values: Vec<Vec<Vec<f64>>>,
}

impl QuestionMatrix {
    /// The matrix of `cells`; None when there is no run, a run has an iteration without per-question rewards
    /// (written before stasc recorded them), or no question is common to all.
    pub fn of(cells: &[&CellResults], answer: Answer) -> Option<QuestionMatrix> {
        let all = cells.iter().flat_map(|c| &c.iterations);
        if cells.is_empty()
            || cells.iter().any(|c| c.iterations.is_empty())
            || all.clone().any(|m| m.test_rewards.is_empty())
        {
            return None;
        }
        let mut common: Option<BTreeSet<&str>> = None;
        for m in all {
            let ids: BTreeSet<&str> = m.test_rewards.iter().map(|r| r.id.as_str()).collect();
            common = Some(match common {
                None => ids,
                Some(c) => c.intersection(&ids).copied().collect(),
            });
        }
        let ids: Vec<String> = common?.into_iter().map(String::from).collect();
        if ids.is_empty() {
            return None;
        }
        let values = cells
            .iter()
            .map(|c| {
                c.iterations
                    .iter()
                    .map(|m| {
                        // A question listed twice counts with the mean of its rewards.
                        let mut by_id: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
                        for r in &m.test_rewards {
                            let e = by_id.entry(r.id.as_str()).or_insert((0.0, 0));
                            e.0 += answer.reward(r);
                            e.1 += 1;
                        }
                        ids.iter().map(|id| by_id[id.as_str()].0 / by_id[id.as_str()].1 as f64).collect()
                    })
                    .collect()
            })
            .collect();
        Some(QuestionMatrix { ids, values })
    }

    /// The same runs on the questions `ids` only (each of which the matrix has).
    pub fn restricted(&self, ids: &[String]) -> QuestionMatrix {
        let at: Vec<usize> = ids.iter().filter_map(|id| self.ids.binary_search(id).ok()).collect();
        QuestionMatrix {
            ids: at.iter().map(|&q| self.ids[q].clone()).collect(),
            values: self
                .values
                .iter()
                .map(|run| run.iter().map(|it| at.iter().map(|&q| it[q]).collect()).collect())
                .collect(),
        }
    }

    /// Every question once: the indices of the estimate itself.
    pub fn all(&self) -> Vec<usize> {
        (0..self.ids.len()).collect()
    }

    fn mean(values: &[f64], questions: &[usize]) -> f64 {
        questions.iter().map(|&q| values[q]).sum::<f64>() / questions.len() as f64
    }

    /// The group's accuracy at each iteration on `questions`: the mean over the runs that reached it.
    pub fn curve(&self, questions: &[usize]) -> Vec<f64> {
        let len = self.values.iter().map(Vec::len).max().unwrap_or(0);
        (0..len)
            .map(|i| {
                let reached: Vec<f64> =
                    self.values.iter().filter_map(|run| run.get(i)).map(|v| Self::mean(v, questions)).collect();
                reached.iter().sum::<f64>() / reached.len() as f64
            })
            .collect()
    }

    /// The group's accuracy at iteration `i` (over the runs that reached it).
    pub fn at(&self, i: usize, questions: &[usize]) -> f64 {
        let reached: Vec<f64> =
            self.values.iter().filter_map(|run| run.get(i)).map(|v| Self::mean(v, questions)).collect();
        if reached.is_empty() {
            f64::NAN
        } else {
            reached.iter().sum::<f64>() / reached.len() as f64
        }
    }

    /// The best iteration of the group's mean curve; resampled, the best iteration is chosen again each time.
    pub fn best_of_mean(&self, questions: &[usize]) -> f64 {
        self.curve(questions).into_iter().fold(f64::NEG_INFINITY, f64::max)
    }

    /// The mean over runs of each run's best iteration (the seeds table's "max").
    pub fn mean_of_bests(&self, questions: &[usize]) -> f64 {
        let bests = self
            .values
            .iter()
            .map(|run| run.iter().map(|v| Self::mean(v, questions)).fold(f64::NEG_INFINITY, f64::max));
        bests.sum::<f64>() / self.values.len() as f64
    }

    /// The mean over runs of each run's last iteration.
    pub fn final_mean(&self, questions: &[usize]) -> f64 {
        let last = self.values.iter().filter_map(|run| run.last()).map(|v| Self::mean(v, questions));
        last.sum::<f64>() / self.values.len() as f64
    }

    /// The 95% percentile-bootstrap interval of `statistic` over the questions, seeded with `seed`.
    pub fn interval(&self, seed: u64, statistic: impl Fn(&QuestionMatrix, &[usize]) -> f64) -> Option<Interval> {
        bootstrap(self.ids.len(), BOOTSTRAP_RESAMPLES, seed, |questions| statistic(self, questions))
    }
}

/// A bootstrap seed from what is being compared (FNV-1a of the text), so that adding a run to a report does not
/// change the intervals of the others.
pub fn seed_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Whether a difference's interval excludes 0: the difference is beyond the 95% interval.
pub fn beyond(interval: Interval) -> bool {
    !interval.contains(0.0)
}

/// A value with its interval for reading: "0.212 [0.177, 0.250]"; the value alone when it has no interval; "—"
/// when there is no value.
pub fn with_interval(value: Option<f64>, interval: Option<Interval>, decimals: usize) -> String {
    let p = Precision::Display;
    match (value, interval) {
        (None, _) => p.missing(),
        (Some(v), None) => p.read(Some(v), decimals),
        (Some(v), Some(i)) => {
            format!(
                "{} [{}, {}]",
                p.read(Some(v), decimals),
                p.read(Some(i.low), decimals),
                p.read(Some(i.high), decimals)
            )
        }
    }
}

/// A signed difference with its interval for reading: "+0.074* [+0.030, +0.118]", the `*` marking an interval
/// that excludes 0.
pub fn difference_with_interval(value: Option<f64>, interval: Option<Interval>, decimals: usize) -> String {
    let p = Precision::Display;
    match (value, interval) {
        (None, _) => p.missing(),
        (Some(v), None) => p.difference(Some(v), decimals),
        (Some(v), Some(i)) => format!(
            "{}{} [{}, {}]",
            p.difference(Some(v), decimals),
            if beyond(i) { "*" } else { "" },
            p.difference(Some(i.low), decimals),
            p.difference(Some(i.high), decimals)
        ),
    }
}

/// An interval's bounds as two CSV cells (empty when there is none).
pub fn bounds(interval: Option<Interval>) -> [String; 2] {
    let p = Precision::Full;
    [p.computed(interval.map(|i| i.low), 6), p.computed(interval.map(|i| i.high), 6)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testutil::*;
    use crate::stats::wilson;

    fn cell(curves: &[Vec<f64>]) -> CellResults {
        let tmp = std::env::temp_dir();
        CellResults {
            name: "run".into(),
            dir: tmp,
            overrides: Vec::new(),
            iterations: curves
                .iter()
                .enumerate()
                .map(|(i, rewards)| {
                    let mut m = metrics("EIE", i, 0.0);
                    m.test_rewards = rewards
                        .iter()
                        .enumerate()
                        .map(|(q, &r)| QuestionRewards { id: format!("q{q:03}"), initial: 0.0, correction: r })
                        .collect();
                    m
                })
                .collect(),
            planned_iterations: None,
            status: crate::report::CellStatus::Done,
            settings: None,
        }
    }

    #[test]
    fn matrix_keeps_common_questions_and_needs_rewards_everywhere() {
        let a = cell(&[vec![1.0, 0.0, 1.0], vec![0.0, 0.0, 1.0]]);
        let mut b = cell(&[vec![1.0, 1.0]]);
        b.iterations[0].test_rewards[1].id = "q002".into();
        let m = QuestionMatrix::of(&[&a, &b], Answer::Correction).unwrap();
        assert_eq!(m.ids, ["q000", "q002"]);
        assert_eq!(m.values[0], [vec![1.0, 1.0], vec![0.0, 1.0]]);
        // Iteration 1 is reached by one run only.
        assert_eq!(m.curve(&m.all()), [1.0, 0.5]);
        assert_eq!(m.final_mean(&m.all()), 0.75);
        assert_eq!(m.mean_of_bests(&m.all()), 1.0);
        let mut old = cell(&[vec![1.0]]);
        old.iterations[0].test_rewards.clear();
        assert_eq!(QuestionMatrix::of(&[&a, &old], Answer::Correction), None);
        assert_eq!(QuestionMatrix::of(&[], Answer::Correction), None);
    }

    #[test]
    fn bootstrap_of_the_best_iteration_includes_the_selection() {
        // Two iterations of equal accuracy (0.2 on 500 questions) but correct on different questions: the best of
        // the two is 0.2, yet each resample picks whichever came out higher, so the interval's centre lies above
        // 0.2 (the selection's optimism), unlike the interval of one fixed iteration.
        let n = 500;
        let it0: Vec<f64> = (0..n).map(|q| (q % 5 == 0) as u8 as f64).collect();
        let it1: Vec<f64> = (0..n).map(|q| (q % 5 == 1) as u8 as f64).collect();
        let m = QuestionMatrix::of(&[&cell(&[it0, it1])], Answer::Correction).unwrap();
        assert_eq!(m.best_of_mean(&m.all()), 0.2);
        let best = m.interval(1, QuestionMatrix::best_of_mean).unwrap();
        let fixed = m.interval(1, |m, q| m.at(0, q)).unwrap();
        let wilson = wilson(0.2, n).unwrap();
        assert!((fixed.low - wilson.low).abs() < 0.01 && (fixed.high - wilson.high).abs() < 0.01, "{fixed:?}");
        assert!(best.low > fixed.low + 0.005 && best.high > fixed.high + 0.005, "{best:?} vs {fixed:?}");
        assert_eq!(m.interval(1, QuestionMatrix::best_of_mean), Some(best), "seeded");
    }

    #[test]
    fn intervals_are_written_alike_everywhere() {
        let i = Interval { low: 0.1771, high: 0.2502 };
        assert_eq!(with_interval(Some(0.212), Some(i), 3), "0.212 [0.177, 0.250]");
        assert_eq!(with_interval(Some(0.212), None, 3), "0.212");
        assert_eq!(with_interval(None, Some(i), 3), "—");
        let d = Interval { low: 0.03, high: 0.118 };
        assert_eq!(difference_with_interval(Some(0.074), Some(d), 3), "+0.074* [+0.030, +0.118]");
        let d = Interval { low: -0.04, high: 0.05 };
        assert_eq!(difference_with_interval(Some(0.002), Some(d), 3), "+0.002 [-0.040, +0.050]");
        assert_eq!(bounds(Some(Interval { low: 0.1, high: 0.2 })), ["0.1", "0.2"]);
        assert_eq!(bounds(None), ["", ""]);
        assert_ne!(seed_of("EIE|FNF"), seed_of("FNF|EIE"));
    }
}
