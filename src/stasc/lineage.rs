//! Per-question lineage (`iter_<n>/samples.jsonl`): every correction joined with the question, the gold answers and
//! the initial answer it was sampled for, both rewards with the text each reward read, why generation stopped, the
//! transition, and what the filter did with the pair. Derived from initial.jsonl, corrections.jsonl and
//! train_pairs.jsonl, so following one question never needs a join by hand.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::filter::Transitions;
use super::records::{CorrectionRecord, InitialRecord, Split, TrainPair};
use super::runner::Scorer;
use super::spec::RunSpec;

/// One line of samples.jsonl: a correction and the initial answer it was sampled for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleLine {
    /// Split of the question.
    pub split: Split,
    /// Question id.
    pub id: String,
    /// Question text.
    pub question: String,
    /// Gold answers.
    pub gold: Vec<String>,
    /// Index of the initial answer.
    pub initial_sample: usize,
    /// The initial answer (after `answer_cleaning`).
    pub initial_text: String,
    /// What the reward read of the initial answer; null when it read the whole text.
    pub initial_answer: Option<String>,
    /// Reward of the initial answer.
    pub initial_reward: f64,
    /// Why the initial answer's generation stopped; null in runs made before it was recorded.
    pub initial_finish_reason: Option<String>,
    /// Index of the correction among the corrections of that initial answer.
    pub correction_sample: usize,
    /// The correction (after `answer_cleaning`).
    pub correction_text: String,
    /// What the reward read of the correction; null when it read the whole text.
    pub correction_answer: Option<String>,
    /// Reward of the correction.
    pub correction_reward: f64,
    /// Why the correction's generation stopped; null in runs made before it was recorded.
    pub correction_finish_reason: Option<String>,
    /// "I→C", "C→I", "C→C" or "I→I" (I = incorrect, C = correct under the run's `correctness`).
    pub transition: String,
    /// Whether the filter kept this (initial answer, correction) pair; null for test questions (never filtered).
    pub kept: Option<bool>,
    /// Why the pair was kept or dropped.
    pub filter_reason: String,
    /// How many fine-tuning pairs (train_pairs.jsonl) train on this correction: 0 or 1 under per_initial pairing,
    /// up to K_init under all_pairs (the correction paired with every initial answer of its question).
    pub train_pairs: usize,
}

/// The samples.jsonl lines of one iteration, in corrections.jsonl order.
pub fn joined_samples(
    spec: &RunSpec,
    scorer: &dyn Scorer,
    initial: &[InitialRecord],
    corrections: &[CorrectionRecord],
    pairs: &[TrainPair],
) -> Vec<SampleLine> {
    let by_key: HashMap<(Split, &str, usize), &InitialRecord> =
        initial.iter().map(|r| ((r.split, r.id.as_str(), r.sample), r)).collect();
    let mut pair_counts: HashMap<(&str, usize, usize), usize> = HashMap::new();
    for p in pairs {
        *pair_counts.entry((p.id.as_str(), p.corrected_initial_sample, p.correction_sample)).or_default() += 1;
    }
    corrections
        .iter()
        .map(|c| {
            let init = by_key.get(&(c.split, c.id.as_str(), c.initial_sample)).copied();
            let (question, gold) = init.map_or_else(Default::default, |i| (i.question.clone(), i.gold.clone()));
            let transition = Transitions::LABELS[Transitions::kind(c.initial_reward, c.reward, spec.correctness)];
            let (kept, filter_reason) = match c.split {
                Split::Test => (None, "test question: not filtered".to_string()),
                Split::Train => (
                    Some(spec.filter.keeps(c.initial_reward, c.reward, spec.correctness)),
                    spec.filter.explain(c.initial_reward, c.reward, spec.correctness),
                ),
            };
            let train_pairs = match c.split {
                Split::Test => 0,
                Split::Train => pair_counts.get(&(c.id.as_str(), c.initial_sample, c.sample)).copied().unwrap_or(0),
            };
            SampleLine {
                split: c.split,
                id: c.id.clone(),
                question,
                gold,
                initial_sample: c.initial_sample,
                initial_text: init.map(|i| i.text.clone()).unwrap_or_default(),
                initial_answer: init.and_then(|i| scorer.scored_answer(&i.text)),
                initial_reward: c.initial_reward,
                initial_finish_reason: init.and_then(|i| i.finish_reason.clone()),
                correction_sample: c.sample,
                correction_text: c.text.clone(),
                correction_answer: scorer.scored_answer(&c.text),
                correction_reward: c.reward,
                correction_finish_reason: c.finish_reason.clone(),
                transition: transition.to_string(),
                kept,
                filter_reason,
                train_pairs,
            }
        })
        .collect()
}
