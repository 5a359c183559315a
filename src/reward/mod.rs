//! Rewards: the functions r(gold, text) -> number that decide which corrections become training data.
//!
//! Owns the [`Reward`] trait (implemented by the built-ins and by dylib plugins alike), the built-in rewards
//! `in_acc`, `em`, `f1` (QA, [`qa`]) and `math_acc` ([`math`]), the [`Evaluator`] that applies an evaluation mode
//! (`default` or `final` with an answer marker) before scoring, and the plugin loader ([`plugin`]). Scores reproduce
//! the reference implementation's (see tests/fixtures/rewards and scripts/make_reward_goldens.py).

pub mod evaluator;
pub mod math;
pub mod plugin;
pub mod pystr;
pub mod qa;

use std::path::PathBuf;

use crate::config::EvaluatorFunction;

pub use evaluator::{Evaluator, RewardSource};
pub use math::MathAcc;
pub use plugin::{PluginError, PluginInfo, PluginReward};
pub use qa::{ExactMatch, InAcc, TokenF1};

/// A reward function: scores an answer text against the gold answers of its question.
///
/// Implementations must be thread-safe and return a finite number; the [`Evaluator`] rejects anything else.
pub trait Reward: Send + Sync {
    /// The name the reward is selected by (e.g. `in_acc`, or the name a plugin declares).
    fn name(&self) -> &str;

    /// Scores `text` against the acceptable answers `gold`.
    fn score(&self, gold: &[String], text: &str) -> Result<f64, RewardError>;

    /// True when the reward finds the answer in a whole generation itself, so evaluator modes do not cut the text.
    fn extracts_own_answer(&self) -> bool {
        false
    }

    /// The answer this reward reads in `text`, for rewards that extract their own (shown in samples.jsonl).
    fn extract(&self, _text: &str) -> Option<String> {
        None
    }
}

/// Why a reward could not be built or could not score.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// `final` mode needs a marker to look for.
    #[error("evaluator mode \"final\" needs a non-empty answer marker")]
    EmptyMarker,
    /// The reward needs at least one gold answer.
    #[error("reward {reward} needs at least one gold answer, got an empty list")]
    EmptyGold {
        /// The reward's name.
        reward: String,
    },
    /// The reward returned NaN or an infinity.
    #[error("reward {reward} returned a non-finite score ({value})")]
    NonFinite {
        /// The reward's name.
        reward: String,
        /// The value it returned.
        value: f64,
    },
    /// The plugin could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The plugin reported an error for this sample.
    #[error("plugin reward {reward} ({path}) failed: {message}")]
    PluginFailed {
        /// The plugin's name.
        reward: String,
        /// The plugin's file.
        path: PathBuf,
        /// The plugin's message.
        message: String,
    },
    /// The plugin panicked while scoring this sample (the panic was contained).
    #[error("plugin reward {reward} ({path}) panicked: {message}")]
    PluginPanicked {
        /// The plugin's name.
        reward: String,
        /// The plugin's file.
        path: PathBuf,
        /// The panic message.
        message: String,
    },
}

/// One-line description of a built-in reward, for listings.
pub fn builtin_description(function: EvaluatorFunction) -> &'static str {
    match function {
        EvaluatorFunction::InAcc => "1 if a gold alias appears in the text as a token sequence (DPR normalisation)",
        EvaluatorFunction::Em => "1 if the normalised text equals a normalised gold alias",
        EvaluatorFunction::F1 => "token F1 against the best gold alias (SQuAD)",
        EvaluatorFunction::MathAcc => "1 if the extracted final answer equals the gold answer (MATH/PRM800K grading)",
    }
}

/// The built-in reward `function` names.
pub fn builtin(function: EvaluatorFunction) -> Box<dyn Reward> {
    match function {
        EvaluatorFunction::InAcc => Box::new(InAcc),
        EvaluatorFunction::Em => Box::new(ExactMatch),
        EvaluatorFunction::F1 => Box::new(TokenF1),
        EvaluatorFunction::MathAcc => Box::new(MathAcc),
    }
}
