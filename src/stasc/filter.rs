//! The filter that turns (initial, correction) pairs into fine-tuning data, and the transition statistics the
//! paper reports for the same pairs.

use serde::{Deserialize, Serialize};

use super::spec::CorrectionFilter;

impl CorrectionFilter {
    /// Whether a pair with these rewards becomes training data.
    pub fn keeps(self, initial: f64, correction: f64, correct_threshold: f64) -> bool {
        match self {
            CorrectionFilter::Improving => correction > initial,
            CorrectionFilter::NonDecreasing => correction >= initial && correction > 0.0,
            CorrectionFilter::CorrectToCorrect => initial >= correct_threshold && correction >= correct_threshold,
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
    /// Counts transitions over `(initial_reward, correction_reward)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (f64, f64)>, correct_threshold: f64) -> Self {
        let mut counts = [0usize; 4];
        for (initial, correction) in pairs {
            let idx = match (initial >= correct_threshold, correction >= correct_threshold) {
                (true, false) => 0,
                (true, true) => 1,
                (false, true) => 2,
                (false, false) => 3,
            };
            counts[idx] += 1;
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
        BINARY.iter().copied().filter(|&(i, c)| filter.keeps(i, c, 1.0)).collect()
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
        assert!(f.keeps(0.2, 0.5, 1.0));
        assert!(f.keeps(0.5, 0.5, 1.0));
        assert!(!f.keeps(0.0, 0.0, 1.0));
        assert!(!f.keeps(0.6, 0.5, 1.0));
    }

    #[test]
    fn transitions_are_percentages_of_all_pairs() {
        let pairs = [(1.0, 0.0), (1.0, 1.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)];
        let t = Transitions::from_pairs(pairs, 1.0);
        assert_eq!(t.pairs, 8);
        assert_eq!(t.correct_to_incorrect, 12.5);
        assert_eq!(t.correct_to_correct, 25.0);
        assert_eq!(t.incorrect_to_correct, 12.5);
        assert_eq!(t.incorrect_to_incorrect, 50.0);
    }

    #[test]
    fn transitions_of_nothing_are_zero() {
        let t = Transitions::from_pairs(std::iter::empty(), 1.0);
        assert_eq!(t, Transitions::default());
    }
}
