//! The evaluator: a reward plus the evaluation mode, i.e. what part of a generation is scored. This is what the
//! STaSC loop calls for every initial answer and correction.
//!
//! `default` scores the whole generation; `final` scores only the text after the first case-insensitive occurrence
//! of the answer marker (nothing if the marker is absent), as the reference's `split_rationale_and_final_answer`.
//! A reward that finds its answer itself (`math_acc`) always receives the whole generation, as in the reference.

use std::fmt;
use std::path::{Path, PathBuf};

use super::plugin::{self, PluginReward};
use super::pystr;
use super::{builtin, Reward, RewardError};
use crate::config::{EvaluatorMode, RewardChoice};

/// Where the evaluator's reward comes from; plugins are identified by file and content hash for the run record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewardSource {
    /// A reward compiled into stasc.
    Builtin,
    /// A dylib plugin.
    Plugin {
        /// The plugin file that was loaded.
        path: PathBuf,
        /// SHA-256 of the plugin file, lowercase hex.
        sha256: String,
        /// The plugin's ABI version.
        abi_version: u32,
    },
}

/// A reward combined with an evaluation mode and answer marker.
pub struct Evaluator {
    reward: Box<dyn Reward>,
    mode: EvaluatorMode,
    marker: String,
    source: RewardSource,
}

impl fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evaluator")
            .field("reward", &self.reward.name())
            .field("mode", &self.mode)
            .field("marker", &self.marker)
            .field("source", &self.source)
            .finish()
    }
}

impl Evaluator {
    /// Wraps a reward (built-in or any other [`Reward`]) with a mode and marker.
    pub fn new(reward: Box<dyn Reward>, mode: EvaluatorMode, marker: &str) -> Result<Self, RewardError> {
        if mode == EvaluatorMode::Final && marker.is_empty() && !reward.extracts_own_answer() {
            return Err(RewardError::EmptyMarker);
        }
        Ok(Self { reward, mode, marker: marker.to_string(), source: RewardSource::Builtin })
    }

    /// Builds the evaluator a config (or `stasc score`) chooses: a built-in reward, or a plugin looked up in
    /// `plugin_dirs` first, then in the default directories ([`plugin::default_plugin_dirs`]).
    pub fn from_choice(
        reward: &RewardChoice,
        mode: EvaluatorMode,
        marker: &str,
        plugin_dirs: &[PathBuf],
    ) -> Result<Self, RewardError> {
        let spec = match reward {
            RewardChoice::Builtin(function) => return Self::new(builtin(*function), mode, marker),
            RewardChoice::Plugin(_) => reward.plugin().unwrap_or_default(),
        };
        let mut dirs = plugin_dirs.to_vec();
        dirs.extend(plugin::default_plugin_dirs());
        let loaded = PluginReward::load(&plugin::resolve(spec, &dirs)?)?;
        let source = RewardSource::Plugin {
            path: loaded.path().to_path_buf(),
            sha256: loaded.sha256().to_string(),
            abi_version: loaded.abi_version(),
        };
        let mut evaluator = Self::new(Box::new(loaded), mode, marker)?;
        evaluator.source = source;
        Ok(evaluator)
    }

    /// Scores one generation against its gold answers; errors on a failing plugin or a non-finite score.
    pub fn evaluate(&self, gold: &[String], generation: &str) -> Result<f64, RewardError> {
        let score = if self.mode == EvaluatorMode::Final && !self.reward.extracts_own_answer() {
            self.reward.score(gold, &final_answer(generation, &self.marker))?
        } else {
            self.reward.score(gold, generation)?
        };
        if !score.is_finite() {
            return Err(RewardError::NonFinite { reward: self.reward.name().to_string(), value: score });
        }
        Ok(score)
    }

    /// The part of `generation` the reward reads, when it is not the whole text: the text after the marker in
    /// `final` mode, or the answer a reward that extracts its own finds (math_acc); `None` when the whole generation
    /// is scored (`default` mode, or a reward that extracts its own answer without saying what it found).
    pub fn scored_answer(&self, generation: &str) -> Option<String> {
        if self.reward.extracts_own_answer() {
            self.reward.extract(generation)
        } else if self.mode == EvaluatorMode::Final {
            Some(final_answer(generation, &self.marker))
        } else {
            None
        }
    }

    /// The reward's name.
    pub fn reward_name(&self) -> &str {
        self.reward.name()
    }

    /// The evaluation mode.
    pub fn mode(&self) -> EvaluatorMode {
        self.mode
    }

    /// The answer marker used in `final` mode.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Where the reward comes from (built-in, or plugin file + hash + ABI version).
    pub fn source(&self) -> &RewardSource {
        &self.source
    }

    /// For a plugin reward, its file and SHA-256 (to record in config.resolved.yaml); `None` for a built-in.
    pub fn plugin_record(&self) -> Option<(&Path, &str)> {
        match &self.source {
            RewardSource::Plugin { path, sha256, .. } => Some((path.as_path(), sha256.as_str())),
            RewardSource::Builtin => None,
        }
    }
}

/// The text after the first case-insensitive occurrence of `marker`, stripped; empty when the marker is absent.
///
/// Like the reference, carriage returns are removed first and positions are counted in characters of the lowercased
/// text, so the result is the same even where lowercasing changes a character's length.
pub fn final_answer(generation: &str, marker: &str) -> String {
    let text = generation.replace('\r', "");
    let lowered = pystr::lower(&text);
    let Some(byte_index) = lowered.find(&pystr::lower(marker)) else {
        return String::new();
    };
    let start = lowered[..byte_index].chars().count() + marker.chars().count();
    let rest: String = text.chars().skip(start).collect();
    pystr::strip(&rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gold(aliases: &[&str]) -> Vec<String> {
        aliases.iter().map(|s| s.to_string()).collect()
    }

    /// The evaluator of a reward named as in a config file.
    fn evaluator(reward: &str, mode: EvaluatorMode, marker: &str) -> Result<Evaluator, RewardError> {
        Evaluator::from_choice(&reward.parse().unwrap(), mode, marker, &[])
    }

    #[test]
    fn final_answer_follows_the_marker() {
        assert_eq!(final_answer("Step-by-step reasoning: x\nFinal Answer: Paris\r\n", "Final Answer:"), "Paris");
        assert_eq!(final_answer("final answer:  Rome  ", "Final Answer:"), "Rome");
        assert_eq!(final_answer("FINAL ANSWER: a FINAL ANSWER: b", "Final Answer:"), "a FINAL ANSWER: b");
        assert_eq!(final_answer("no marker here", "Final Answer:"), "");
        assert_eq!(final_answer("Final Answer:", "Final Answer:"), "");
        // Lowercasing İ gives two characters; positions follow the lowercased text as in the reference.
        assert_eq!(final_answer("İ Final Answer:xy", "Final Answer:"), "y");
    }

    #[test]
    fn modes_select_the_scored_text() {
        let default = evaluator("in_acc", EvaluatorMode::Default, "Final Answer:").unwrap();
        let last = evaluator("in_acc", EvaluatorMode::Final, "Final Answer:").unwrap();
        let text = "Paris is nice. Final Answer: London";
        assert_eq!(default.evaluate(&gold(&["Paris"]), text).unwrap(), 1.0);
        assert_eq!(last.evaluate(&gold(&["Paris"]), text).unwrap(), 0.0);
        assert_eq!(last.evaluate(&gold(&["London"]), text).unwrap(), 1.0);
        assert_eq!(last.evaluate(&gold(&["London"]), "London, no marker").unwrap(), 0.0);
        assert_eq!(default.scored_answer(text), None);
        assert_eq!(last.scored_answer(text).as_deref(), Some("London"));
        assert_eq!(last.scored_answer("London, no marker").as_deref(), Some(""));
    }

    #[test]
    fn math_acc_extracts_its_own_answer_in_final_mode() {
        let math = evaluator("math_acc", EvaluatorMode::Final, "Final Answer: The final answer is").unwrap();
        assert_eq!(math.evaluate(&gold(&["\\frac{1}{2}"]), "so \\boxed{0.5}").unwrap(), 1.0);
        assert_eq!(math.evaluate(&gold(&["3"]), "Final Answer: The final answer is 4. \\boxed{3}").unwrap(), 1.0);
        assert_eq!(math.scored_answer("so \\boxed{0.5}").as_deref(), Some("0.5"));
    }

    #[test]
    fn final_mode_needs_a_marker_unless_the_reward_finds_its_answer() {
        assert!(matches!(evaluator("em", EvaluatorMode::Final, ""), Err(RewardError::EmptyMarker)));
        assert!(evaluator("math_acc", EvaluatorMode::Final, "").is_ok());
    }

    #[test]
    fn evaluators_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Evaluator>();
    }

    struct Constant(f64);

    impl Reward for Constant {
        fn name(&self) -> &str {
            "constant"
        }
        fn score(&self, _gold: &[String], _text: &str) -> Result<f64, RewardError> {
            Ok(self.0)
        }
    }

    #[test]
    fn non_finite_scores_are_rejected() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let evaluator = Evaluator::new(Box::new(Constant(value)), EvaluatorMode::Default, "").unwrap();
            assert!(matches!(evaluator.evaluate(&[], "x"), Err(RewardError::NonFinite { .. })));
        }
        let evaluator = Evaluator::new(Box::new(Constant(0.25)), EvaluatorMode::Default, "").unwrap();
        assert_eq!(evaluator.evaluate(&[], "x").unwrap(), 0.25);
        assert_eq!(evaluator.source(), &RewardSource::Builtin);
        assert!(evaluator.plugin_record().is_none());
    }
}
