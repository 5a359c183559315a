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

pub use evaluator::{Evaluator, EvaluatorMode, RewardSource};
pub use math::MathAcc;
pub use plugin::{PluginError, PluginInfo, PluginReward};
pub use qa::{ExactMatch, InAcc, TokenF1};

/// Prefix that selects a plugin in a reward name: `plugin:PATH_OR_NAME`.
pub const PLUGIN_PREFIX: &str = "plugin:";

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
    /// The reward name is neither a built-in nor `plugin:...`.
    #[error("unknown reward {name:?}: expected one of {} or plugin:PATH_OR_NAME", BUILTIN_NAMES.join(", "))]
    UnknownReward {
        /// The name that was asked for.
        name: String,
    },
    /// The evaluator mode is not `default` or `final`.
    #[error("unknown evaluator mode {mode:?}: expected \"default\" or \"final\"")]
    UnknownMode {
        /// The mode that was asked for.
        mode: String,
    },
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

/// Names of the built-in rewards, in the order they are listed.
pub const BUILTIN_NAMES: [&str; 4] = ["in_acc", "em", "f1", "math_acc"];

/// One-line descriptions of the built-in rewards, for listings.
pub fn builtin_description(name: &str) -> Option<&'static str> {
    Some(match name {
        "in_acc" => "1 if a gold alias appears in the text as a token sequence (DPR normalisation)",
        "em" => "1 if the normalised text equals a normalised gold alias",
        "f1" => "token F1 against the best gold alias (SQuAD)",
        "math_acc" => "1 if the extracted final answer equals the gold answer (MATH/PRM800K grading)",
        _ => return None,
    })
}

/// The built-in reward of that name.
pub fn builtin(name: &str) -> Option<Box<dyn Reward>> {
    Some(match name {
        "in_acc" => Box::new(InAcc),
        "em" => Box::new(ExactMatch),
        "f1" => Box::new(TokenF1),
        "math_acc" => Box::new(MathAcc),
        _ => return None,
    })
}
