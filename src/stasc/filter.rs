//! The filter that turns (initial, correction) pairs into fine-tuning data, and the transition statistics the
//! paper reports for the same pairs.

use serde::{Deserialize, Serialize};

use super::spec::{CorrectionFilter, Correctness};

impl Correctness {
    /// Whether a sample with this reward counts as correct.
    pub fn is_correct(self, reward: f64) -> bool {
        match self {
            Correctness::FullReward => reward >= 1.0,
            Correctness::PositiveReward => reward > 0.0,
        }
    }
}

impl CorrectionFilter {
    /// Whether a pair with these rewards becomes training data.
    pub fn keeps(self, initial: f64, correction: f64, correctness: Correctness) -> bool {
        match self {
            CorrectionFilter::Improving => correction > initial,
            CorrectionFilter::NonDecreasing => correction >= initial && correction > 0.0,
            CorrectionFilter::CorrectToCorrect => correctness.is_correct(initial) && correctness.is_correct(correction),
        }
    }
}

impl CorrectionFilter {
    /// Why a pair with these rewards is kept or dropped, in words (samples.jsonl's `filter_reason`).
    pub fn explain(self, initial: f64, correction: f64, correctness: Correctness) -> String {
        let kept = self.keeps(initial, correction, correctness);
        match (self, kept) {
            (CorrectionFilter::Improving, true) => format!("improving: reward rose from {initial} to {correction}"),
            (CorrectionFilter::Improving, false) => {
                format!("improving: reward {correction} is not above the initial {initial}")
            }
            (CorrectionFilter::NonDecreasing, true) => {
                format!("non_decreasing: reward {correction} >= initial {initial} and > 0")
            }
            (CorrectionFilter::NonDecreasing, false) if correction < initial => {
                format!("non_decreasing: reward fell from {initial} to {correction}")
            }
            (CorrectionFilter::NonDecreasing, false) => format!("non_decreasing: reward {correction} is not above 0"),
            (CorrectionFilter::CorrectToCorrect, true) => "correct_to_correct: both answers correct".to_string(),
            (CorrectionFilter::CorrectToCorrect, false) => {
                let wrong: Vec<&str> = [(initial, "initial answer"), (correction, "correction")]
                    .iter()
                    .filter(|(r, _)| !correctness.is_correct(*r))
                    .map(|(_, what)| *what)
                    .collect();
                format!("correct_to_correct: {} incorrect", wrong.join(" and "))
            }
        }
    }
}

/// Transition percentages over a set of (initial, correction) pairs; they sum to 100 when any pair exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Transitions {
    /// % of pairs whose initial answer was correct and whose correction is not.
    pub correct_to_incorrect: f64,
    /// % of pairs correct before and after.
    pub correct_to_correct: f64,
    /// % of pairs the correction fixed.
    pub incorrect_to_correct: f64,
    /// % of pairs wrong before and after (the reference omits this one).
    pub incorrect_to_incorrect: f64,
    /// Number of pairs counted.
    pub pairs: usize,
}

impl Transitions {
    /// The four transition names, in the order of [`Transitions::kind`].
    pub const NAMES: [&'static str; 4] =
        ["correct_to_incorrect", "correct_to_correct", "incorrect_to_correct", "incorrect_to_incorrect"];

    /// Which of the four transitions (index into [`Transitions::NAMES`]) a pair with these rewards is.
    pub fn kind(initial: f64, correction: f64, correctness: Correctness) -> usize {
        match (correctness.is_correct(initial), correctness.is_correct(correction)) {
            (true, false) => 0,
            (true, true) => 1,
            (false, true) => 2,
            (false, false) => 3,
        }
    }

    /// Short labels of the four transitions (I = incorrect, C = correct), in the order of [`Transitions::NAMES`].
    pub const LABELS: [&'static str; 4] = ["C→I", "C→C", "I→C", "I→I"];

    /// Counts transitions over `(initial_reward, correction_reward)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (f64, f64)>, correctness: Correctness) -> Self {
        let mut counts = [0usize; 4];
        for (initial, correction) in pairs {
            counts[Self::kind(initial, correction, correctness)] += 1;
        }
        let total: usize = counts.iter().sum();
        let pct = |c: usize| if total == 0 { 0.0 } else { 100.0 * c as f64 / total as f64 };
        Transitions {
            correct_to_incorrect: pct(counts[0]),
            correct_to_correct: pct(counts[1]),
            incorrect_to_correct: pct(counts[2]),
            incorrect_to_incorrect: pct(counts[3]),
            pairs: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINARY: [(f64, f64); 4] = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)];

    fn kept(filter: CorrectionFilter) -> Vec<(f64, f64)> {
        BINARY.iter().copied().filter(|&(i, c)| filter.keeps(i, c, Correctness::FullReward)).collect()
    }

    #[test]
    fn explanations_say_why_a_pair_is_kept_or_dropped() {
        let full = Correctness::FullReward;
        assert_eq!(CorrectionFilter::Improving.explain(0.0, 1.0, full), "improving: reward rose from 0 to 1");
        assert_eq!(
            CorrectionFilter::Improving.explain(1.0, 1.0, full),
            "improving: reward 1 is not above the initial 1"
        );
        assert_eq!(CorrectionFilter::NonDecreasing.explain(1.0, 0.0, full), "non_decreasing: reward fell from 1 to 0");
        assert_eq!(CorrectionFilter::NonDecreasing.explain(0.0, 0.0, full), "non_decreasing: reward 0 is not above 0");
        assert_eq!(
            CorrectionFilter::CorrectToCorrect.explain(0.0, 0.0, full),
            "correct_to_correct: initial answer and correction incorrect"
        );
        assert_eq!(
            CorrectionFilter::CorrectToCorrect.explain(1.0, 1.0, full),
            "correct_to_correct: both answers correct"
        );
    }

    #[test]
    fn improving_keeps_only_fixes() {
        assert_eq!(kept(CorrectionFilter::Improving), vec![(0.0, 1.0)]);
    }

    #[test]
    fn non_decreasing_keeps_fixes_and_correct_to_correct() {
        assert_eq!(kept(CorrectionFilter::NonDecreasing), vec![(0.0, 1.0), (1.0, 1.0)]);
    }

    #[test]
    fn correct_to_correct_keeps_only_stable_correct() {
        assert_eq!(kept(CorrectionFilter::CorrectToCorrect), vec![(1.0, 1.0)]);
    }

    #[test]
    fn non_decreasing_on_continuous_rewards_needs_positive_correction() {
        let f = CorrectionFilter::NonDecreasing;
        let full = Correctness::FullReward;
        assert!(f.keeps(0.2, 0.5, full));
        assert!(f.keeps(0.5, 0.5, full));
        assert!(!f.keeps(0.0, 0.0, full));
        assert!(!f.keeps(0.6, 0.5, full));
    }

    #[test]
    fn filters_on_f1_rewards_follow_the_correctness_rule() {
        // F1-style rewards: 0.4 -> 0.8 improves; both are truthy (the reference's test), neither is a full reward.
        let (positive, full) = (Correctness::PositiveReward, Correctness::FullReward);
        assert!(CorrectionFilter::Improving.keeps(0.4, 0.8, positive));
        assert!(!CorrectionFilter::Improving.keeps(0.8, 0.4, positive));
        assert!(!CorrectionFilter::Improving.keeps(0.5, 0.5, positive));
        assert!(CorrectionFilter::CorrectToCorrect.keeps(0.4, 0.8, positive));
        assert!(CorrectionFilter::CorrectToCorrect.keeps(0.8, 0.4, positive));
        assert!(!CorrectionFilter::CorrectToCorrect.keeps(0.0, 0.8, positive));
        assert!(!CorrectionFilter::CorrectToCorrect.keeps(0.4, 0.8, full));
        assert!(CorrectionFilter::CorrectToCorrect.keeps(1.0, 1.0, full));
        // non_decreasing ignores the correctness rule: it compares rewards.
        assert!(CorrectionFilter::NonDecreasing.keeps(0.4, 0.4, full));
        assert!(!CorrectionFilter::NonDecreasing.keeps(0.8, 0.4, positive));
        // Transitions of F1 pairs under each rule.
        let pairs = [(0.4, 0.8), (0.0, 0.5), (0.6, 0.0), (0.0, 0.0), (1.0, 1.0)];
        let t = Transitions::from_pairs(pairs, positive);
        assert_eq!((t.correct_to_correct, t.incorrect_to_correct, t.correct_to_incorrect), (40.0, 20.0, 20.0));
        assert_eq!(t.incorrect_to_incorrect, 20.0);
        let t = Transitions::from_pairs(pairs, full);
        assert_eq!((t.correct_to_correct, t.incorrect_to_incorrect), (20.0, 80.0));
    }

    #[test]
    fn transitions_are_percentages_of_all_pairs() {
        let pairs = [(1.0, 0.0), (1.0, 1.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)];
        let t = Transitions::from_pairs(pairs, Correctness::FullReward);
        assert_eq!(t.pairs, 8);
        assert_eq!(t.correct_to_incorrect, 12.5);
        assert_eq!(t.correct_to_correct, 25.0);
        assert_eq!(t.incorrect_to_correct, 12.5);
        assert_eq!(t.incorrect_to_incorrect, 50.0);
    }

    #[test]
    fn transitions_of_nothing_are_zero() {
        let t = Transitions::from_pairs(std::iter::empty(), Correctness::FullReward);
        assert_eq!(t, Transitions::default());
    }
}
