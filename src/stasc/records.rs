//! The per-sample records written to a run directory (one JSON object per line). They are the loop's state on disk:
//! a resumed run reads them back instead of sampling again.

use serde::{Deserialize, Serialize};

use crate::prompt::ChatMessage;

/// Which split a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training questions: their corrections become fine-tuning data.
    Train,
    /// Held-out questions.
    Test,
}

/// One initial answer (`iter_<n>/initial.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitialRecord {
    /// Split of the question.
    pub split: Split,
    /// Question id.
    pub id: String,
    /// Question text.
    pub question: String,
    /// Gold answers.
    pub gold: Vec<String>,
    /// Sample index within the question.
    pub sample: usize,
    /// Seed the sample was drawn with.
    pub seed: u64,
    /// The answer as scored and reused in prompts (after `answer_cleaning`).
    pub text: String,
    /// The completion as generated, when `answer_cleaning` changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_text: Option<String>,
    /// Reward of the answer.
    pub reward: f64,
    /// Generated tokens.
    pub tokens: usize,
    /// Why generation stopped ("eos", "max_tokens", "max_model_len"); absent in runs made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

/// One correction (`iter_<n>/corrections.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrectionRecord {
    /// Split of the question.
    pub split: Split,
    /// Question id.
    pub id: String,
    /// Index of the initial answer this correction was generated from.
    pub initial_sample: usize,
    /// Sample index among the corrections of that initial answer.
    pub sample: usize,
    /// Seed the sample was drawn with.
    pub seed: u64,
    /// The initial answer's reward (copied for convenience).
    pub initial_reward: f64,
    /// The correction as scored and trained on (after `answer_cleaning`).
    pub text: String,
    /// The completion as generated, when `answer_cleaning` changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_text: Option<String>,
    /// Reward of the correction.
    pub reward: f64,
    /// Generated tokens.
    pub tokens: usize,
    /// Why generation stopped ("eos", "max_tokens", "max_model_len"); absent in runs made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

/// One filtered fine-tuning example (`iter_<n>/train_pairs.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPair {
    /// Question id.
    pub id: String,
    /// Index of the initial answer the pair trains on.
    pub initial_sample: usize,
    /// Index of the initial answer the correction was sampled for: `initial_sample` itself under per_initial
    /// pairing, any of the question's initial answers under all_pairs.
    pub corrected_initial_sample: usize,
    /// Index of the correction among the corrections of `corrected_initial_sample`.
    pub correction_sample: usize,
    /// Reward of the initial answer.
    pub initial_reward: f64,
    /// Reward of the correction.
    pub correction_reward: f64,
    /// The SFT conversation; the loss covers its last assistant message.
    pub messages: Vec<ChatMessage>,
}
