//! Per-iteration metrics (`iter_<n>/metrics.json`): accuracies, transitions, filtered counts, training loss,
//! time and throughput of each phase. Computed from the saved records, so a resumed run reports the same numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::filter::Transitions;
use super::records::{CorrectionRecord, InitialRecord, Split};
use super::spec::Correctness;
use crate::stats::{cluster_mean, wilson, Interval};

/// Time and throughput of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Tokens generated or trained.
    pub tokens: usize,
    /// Prompt tokens prefilled (generation phases; for a resumed phase, its resumed part only).
    #[serde(default)]
    pub prefill_tokens: usize,
    /// Prompt tokens whose prefill a prefix shared by the prompts saved.
    #[serde(default)]
    pub prefill_tokens_saved: usize,
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
    /// Mean reward of train initial answers; null when the iteration sampled no train question (the last
    /// iteration with `sample_train_at_last_iteration: false`).
    pub train_initial_accuracy: Option<f64>,
    /// Mean reward of train corrections; null when the iteration sampled no train question.
    pub train_correction_accuracy: Option<f64>,
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
    /// Prompt tokens prefilled per generation phase.
    #[serde(default)]
    pub prefill_tokens: BTreeMap<String, usize>,
    /// Prompt tokens per generation phase whose prefill was saved by a prefix shared by the phase's prompts.
    #[serde(default)]
    pub prefill_tokens_saved: BTreeMap<String, usize>,
    /// Questions of each split this iteration sampled.
    #[serde(default)]
    pub questions: QuestionCounts,
    /// 95% intervals over questions of every accuracy and transition rate, keyed by the metric's name
    /// (`test_correction_accuracy`, `transitions.correct_to_correct`, `train_transitions.incorrect_to_correct`, ...),
    /// in the metric's unit (fractions for accuracies, % for transitions). See [`rate_interval`].
    #[serde(default)]
    pub intervals: BTreeMap<String, Interval>,
    /// Each test question's initial and correction reward, so that reports can compare runs question by question.
    #[serde(default)]
    pub test_rewards: Vec<QuestionRewards>,
}

/// Questions each split contributed to an iteration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionCounts {
    /// Train questions sampled.
    pub train: usize,
    /// Test questions sampled.
    pub test: usize,
}

/// One test question's rewards at one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRewards {
    /// Question id.
    pub id: String,
    /// Reward of its initial answer.
    pub initial: f64,
    /// Reward of its correction.
    pub correction: f64,
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

/// Questions of each split that have corrections in `corrections`.
pub fn question_counts(corrections: &[CorrectionRecord]) -> QuestionCounts {
    let count = |split: Split| {
        let ids: std::collections::BTreeSet<&str> =
            corrections.iter().filter(|c| c.split == split).map(|c| c.id.as_str()).collect();
        ids.len()
    };
    QuestionCounts { train: count(Split::Train), test: count(Split::Test) }
}

/// Each test question's initial and correction reward (one of each per test question), in record order.
pub fn test_rewards(corrections: &[CorrectionRecord]) -> Vec<QuestionRewards> {
    corrections
        .iter()
        .filter(|c| c.split == Split::Test)
        .map(|c| QuestionRewards { id: c.id.clone(), initial: c.initial_reward, correction: c.reward })
        .collect()
}

/// 95% interval over questions of the mean of `values`, each tagged with its question: Wilson's interval when every
/// question contributes one value of 0 or 1 (a test split's rate), otherwise a bootstrap that resamples whole
/// questions, because samples of one question are not independent draws (K samples per train question, continuous
/// rewards). `seed` fixes the bootstrap.
pub fn rate_interval<'a>(values: impl IntoIterator<Item = (&'a str, f64)>, seed: u64) -> Option<Interval> {
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut clusters: Vec<(f64, usize)> = Vec::new();
    let mut binary = true;
    for (id, v) in values {
        binary &= v == 0.0 || v == 1.0;
        let k = *index.entry(id).or_insert_with(|| {
            clusters.push((0.0, 0));
            clusters.len() - 1
        });
        clusters[k].0 += v;
        clusters[k].1 += 1;
    }
    if binary && clusters.iter().all(|c| c.1 == 1) {
        let n = clusters.len();
        return wilson(clusters.iter().map(|c| c.0).sum::<f64>() / n.max(1) as f64, n);
    }
    cluster_mean(&clusters, seed)
}

/// The intervals of an iteration's accuracies and transition rates (see [`IterationMetrics::intervals`]);
/// `train_pairs` / `test_pairs` are the (question, initial reward, correction reward) pairs its transitions count.
pub fn iteration_intervals(
    initial: &[InitialRecord],
    corrections: &[CorrectionRecord],
    train_pairs: &[(&str, f64, f64)],
    test_pairs: &[(&str, f64, f64)],
    correctness: Correctness,
    iteration: u64,
) -> BTreeMap<String, Interval> {
    let mut out = BTreeMap::new();
    let mut put = |name: String, interval: Option<Interval>| {
        if let Some(i) = interval {
            out.insert(name, i);
        }
    };
    // A different, fixed seed per metric and iteration: the same records always give the same intervals.
    let seed = |name: &str| {
        name.bytes().fold(iteration.wrapping_mul(0x100_0000_01B3), |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3))
    };
    for (split, prefix) in [(Split::Test, "test"), (Split::Train, "train")] {
        let name = format!("{prefix}_initial_accuracy");
        let values = initial.iter().filter(|r| r.split == split).map(|r| (r.id.as_str(), r.reward));
        // A last iteration without train corrections has no train metrics, so no train intervals either.
        if corrections.iter().any(|c| c.split == split) {
            put(name.clone(), rate_interval(values, seed(&name)));
            let name = format!("{prefix}_correction_accuracy");
            let values = corrections.iter().filter(|c| c.split == split).map(|c| (c.id.as_str(), c.reward));
            put(name.clone(), rate_interval(values, seed(&name)));
        }
    }
    for (pairs, prefix) in [(test_pairs, "transitions"), (train_pairs, "train_transitions")] {
        for (kind, transition) in Transitions::NAMES.iter().enumerate() {
            let name = format!("{prefix}.{transition}");
            let values =
                pairs.iter().map(|&(id, i, c)| (id, (Transitions::kind(i, c, correctness) == kind) as u8 as f64));
            put(name.clone(), rate_interval(values, seed(&name)).map(|i| i.scaled(100.0)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_binary_value_per_question_gets_wilson_and_several_get_the_question_bootstrap() {
        let once: Vec<(String, f64)> = (0..500).map(|q| (format!("q{q}"), (q % 5 == 0) as u8 as f64)).collect();
        let w = rate_interval(once.iter().map(|(id, v)| (id.as_str(), *v)), 1).unwrap();
        assert_eq!(w, wilson(0.2, 500).unwrap());
        let five: Vec<(String, f64)> =
            (0..2500).map(|k| (format!("q{}", k / 5), (k / 5 % 5 == 0) as u8 as f64)).collect();
        let b = rate_interval(five.iter().map(|(id, v)| (id.as_str(), *v)), 1).unwrap();
        // All five samples of a question agree: the effective sample is 500 questions, not 2,500 samples.
        let naive = wilson(0.2, 2500).unwrap();
        assert!(b.contains(0.2) && b.high - b.low > 1.5 * (naive.high - naive.low), "{b:?} vs {naive:?}");
        assert_eq!(rate_interval(std::iter::empty(), 1), None);
    }

    #[test]
    fn mean_of_nothing_is_zero() {
        assert_eq!(mean_reward(&[]), 0.0);
        assert_eq!(mean_reward(&[1.0, 0.0, 0.5]), 0.5);
    }

    #[test]
    fn throughput_of_untimed_phase_is_zero() {
        assert_eq!(PhaseTiming::default().tokens_per_s(), 0.0);
        assert_eq!(PhaseTiming { seconds: 2.0, tokens: 10, ..PhaseTiming::default() }.tokens_per_s(), 5.0);
    }
}
