//! Per-iteration metrics (`iter_<n>/metrics.json`): accuracies, transitions, filtered counts, training loss,
//! time and throughput of each phase. Computed from the saved records, so a resumed run reports the same numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::filter::Transitions;
use super::records::{CorrectionRecord, InitialRecord, Split};

/// Time and throughput of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Tokens generated or trained.
    pub tokens: usize,
}

impl PhaseTiming {
    /// Tokens per second (0 when nothing was timed).
    pub fn tokens_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Everything reported for one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationMetrics {
    /// Iteration number n.
    pub iteration: usize,
    /// Three-letter variant name.
    pub variant: String,
    /// Model that sampled this iteration's corrections ("M0" or a checkpoint path).
    pub model: String,
    /// Iteration whose initial answers were used (n for evolving initialization, 0 for fixed).
    pub initial_answers_from: usize,
    /// Mean reward of train initial answers.
    pub train_initial_accuracy: f64,
    /// Mean reward of train corrections.
    pub train_correction_accuracy: f64,
    /// Mean reward of test initial answers.
    pub test_initial_accuracy: f64,
    /// Mean reward of test corrections (the paper's headline number).
    pub test_correction_accuracy: f64,
    /// Transitions over the test pairs, in %.
    pub transitions: Transitions,
    /// Transitions over the train pairs, in %.
    pub train_transitions: Transitions,
    /// Number of train pairs that passed the filter.
    pub filtered_pairs: usize,
    /// Whether this iteration fine-tuned a new model.
    pub trained: bool,
    /// Why it did not train, when it did not.
    pub no_training_reason: Option<String>,
    /// Mean training loss over the optimiser steps; null when the iteration did not train.
    pub train_loss: Option<f64>,
    /// Loss per optimiser step.
    pub loss_curve: Vec<f64>,
    /// Seconds per phase (initial, corrections, train).
    pub phase_seconds: BTreeMap<String, f64>,
    /// Tokens per second per phase.
    pub tokens_per_s: BTreeMap<String, f64>,
}

/// Mean reward of the records of one split (0 when there are none).
pub fn mean_reward<'a>(rewards: impl IntoIterator<Item = &'a f64>) -> f64 {
    let (sum, n) = rewards.into_iter().fold((0.0, 0usize), |(s, n), r| (s + r, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Mean initial-answer reward of a split.
pub fn initial_accuracy(records: &[InitialRecord], split: Split) -> f64 {
    mean_reward(records.iter().filter(|r| r.split == split).map(|r| &r.reward))
}

/// Mean correction reward of a split.
pub fn correction_accuracy(records: &[CorrectionRecord], split: Split) -> f64 {
    mean_reward(records.iter().filter(|r| r.split == split).map(|r| &r.reward))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_nothing_is_zero() {
        assert_eq!(mean_reward(&[]), 0.0);
        assert_eq!(mean_reward(&[1.0, 0.0, 0.5]), 0.5);
    }

    #[test]
    fn throughput_of_untimed_phase_is_zero() {
        assert_eq!(PhaseTiming::default().tokens_per_s(), 0.0);
        assert_eq!(PhaseTiming { seconds: 2.0, tokens: 10 }.tokens_per_s(), 5.0);
    }
}
