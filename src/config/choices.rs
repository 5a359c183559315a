//! The closed sets of words configuration keys accept (task types, evaluator names, filters, dtypes, schedulers...),
//! each an enum with its canonical spelling, accepted aliases, and a parser whose error lists the choices and the
//! closest one. These are the types the rest of stasc uses too (the reward module scores with [`EvaluatorMode`]
//! and [`RewardChoice`] as resolved here), so a choice is parsed once, from the config file or the command line.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ConfigError;
use super::keys::closest;

/// Defines a choice enum: variants with a canonical name and optional aliases, `ALL`, `NAMES`, `name()`, `Display`,
/// `FromStr` (command-line options), a `Serialize` that writes the canonical name and a `Deserialize` that reads any
/// spelling (resolved configurations read back).
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)*),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Canonical spellings, in documentation order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];
            /// Every accepted spelling (canonical names and aliases) with its value.
            pub const SPELLINGS: &'static [(&'static str, $name)] =
                &[$(($text, $name::$variant), $(($alias, $name::$variant),)*)+];

            /// The canonical name, as written in config files and reports.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses `value` for `key` of `file`; the error lists the choices and the closest one.
            pub fn parse(file: &Path, key: &str, value: &str) -> Result<Self, ConfigError> {
                value.parse().map_err(|e: ChoiceError| e.at(file, key))
            }
        }

        impl FromStr for $name {
            type Err = ChoiceError;

            fn from_str(value: &str) -> Result<Self, ChoiceError> {
                find_spelling(value, Self::SPELLINGS, Self::NAMES)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_from_str(deserializer)
            }
        }
    };
}

/// A word that is not one of a key's choices; says which words are (the reason of a [`ConfigError::Invalid`], or of
/// a command-line option's error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceError(String);

impl ChoiceError {
    /// The same reason as the error of `key` in `file`.
    pub fn at(self, file: &Path, key: &str) -> ConfigError {
        ConfigError::invalid(file, key, self.0)
    }
}

impl fmt::Display for ChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChoiceError {}

fn find_spelling<T: Copy>(value: &str, spellings: &[(&str, T)], names: &[&str]) -> Result<T, ChoiceError> {
    if let Some((_, v)) = spellings.iter().find(|(s, _)| *s == value) {
        return Ok(*v);
    }
    let hint = closest(value, spellings.iter().map(|(s, _)| *s)).map(|c| format!(" (did you mean '{c}'?)"));
    Err(ChoiceError(format!("must be one of {}, found {value:?}{}", names.join(", "), hint.unwrap_or_default())))
}

/// Reads a choice back from its text (config.resolved.yaml of an earlier run).
fn deserialize_from_str<'de, D: Deserializer<'de>, T: FromStr<Err = ChoiceError>>(
    deserializer: D,
) -> Result<T, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// The reward a run scores with: a built-in evaluator function, or a dylib plugin named `plugin:PATH_OR_NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RewardChoice {
    /// A reward compiled into stasc.
    Builtin(EvaluatorFunction),
    /// A plugin, by path or by name (resolved by `crate::reward` at load time), written with its `plugin:` prefix.
    Plugin(String),
}

/// Prefix that marks a plugin reward in `evaluator_function`.
pub const PLUGIN_PREFIX: &str = "plugin:";

impl RewardChoice {
    /// Parses `evaluator_function`: a built-in name, or `plugin:` followed by a path or plugin name.
    pub fn parse(file: &Path, key: &str, value: &str) -> Result<Self, ConfigError> {
        value.parse().map_err(|e: ChoiceError| e.at(file, key))
    }

    /// The plugin's path or name (what follows `plugin:`), for a plugin reward.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            RewardChoice::Builtin(_) => None,
            RewardChoice::Plugin(p) => Some(p.strip_prefix(PLUGIN_PREFIX).unwrap_or(p)),
        }
    }

    /// The name as written in config files (`in_acc`, `plugin:...`).
    pub fn name(&self) -> &str {
        match self {
            RewardChoice::Builtin(f) => f.name(),
            RewardChoice::Plugin(p) => p,
        }
    }
}

impl FromStr for RewardChoice {
    type Err = ChoiceError;

    fn from_str(value: &str) -> Result<Self, ChoiceError> {
        match value.strip_prefix(PLUGIN_PREFIX) {
            Some(rest) if rest.trim().is_empty() => {
                Err(ChoiceError("names no plugin after 'plugin:' (expected plugin:PATH_OR_NAME)".into()))
            }
            Some(_) => Ok(RewardChoice::Plugin(value.to_string())),
            None => value
                .parse()
                .map(RewardChoice::Builtin)
                .map_err(|ChoiceError(reason)| ChoiceError(format!("{reason}; or plugin:PATH_OR_NAME"))),
        }
    }
}

impl fmt::Display for RewardChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for RewardChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

choice! {
    /// The kind of task: decides the prompt templates and the default columns and reward.
    TaskType { Qa = "qa", Math = "math" }
}

choice! {
    /// Which part of a generation the reward sees.
    EvaluatorMode {
        /// The whole generation.
        Default = "default",
        /// Only the text after the first case-insensitive occurrence of `evaluator_answer_marker`.
        Final = "final",
    }
}

choice! {
    /// The built-in reward functions (README, "Rewards and plugins").
    EvaluatorFunction {
        /// Any gold alias occurs in the text as a token sequence after DPR-style normalisation.
        InAcc = "in_acc",
        /// Normalised exact match, max over aliases.
        Em = "em",
        /// Token F1, max over aliases.
        F1 = "f1",
        /// Extracted math answer equal to the gold answer.
        MathAcc = "math_acc",
    }
}

choice! {
    /// Which (initial, correction) pairs become training data.
    CorrectionFilter {
        /// r(correction) > r(initial): `only_better_correction: true` in the paper and the reference (letter I).
        Improving = "improving",
        /// r(correction) >= r(initial) and r(correction) > 0: what the paper's text describes for
        /// `only_better_correction: false` (letter N under stasc's own protocol).
        NonDecreasing = "non_decreasing",
        /// Initial answer and correction both correct: what the reference code keeps for `only_better_correction:
        /// false`, and what produced the published N rows (letter N under the paper protocol).
        CorrectToCorrect = "correct_to_correct",
    }
}

choice! {
    /// How corrections are paired with initial answers for filtering, training and train transitions.
    Pairing {
        /// Each correction with the initial answer it was generated from (K_init x K_corr pairs per question);
        /// stasc's own protocol.
        PerInitial = "per_initial",
        /// Every initial answer of a question with every correction of that question (K_init x K_init x K_corr
        /// pairs per question): the reference code behind the published table, and the paper protocol.
        AllPairs = "all_pairs",
    }
}

choice! {
    /// A named set of defaults for everything that decides which experiment a run is (docs/stasc.md "Reproducing
    /// the published table"). Keys set explicitly in a config still win.
    Protocol {
        /// stasc's own choices: per-initial pairing, non-decreasing N filter, scoring after the answer marker,
        /// few-shot prompts, SFT conversations from sft.jinja, raw completions, whole-step loss normalisation, no
        /// weight decay on norm weights.
        Stasc = "stasc",
        /// What produced the published table: all-pairs, correct-to-correct N filter, whole-generation scoring,
        /// zero-shot prompts, the SFT context equal to the sampling context, the reference's answer cleaning, a
        /// reward > 0 counting as correct, per-rank loss normalisation and weight-decay groups as transformers
        /// 4.47.1 formed them.
        Paper = "paper",
    }
}

choice! {
    /// Which trainable parameters AdamW's weight decay applies to (fine_tune.yaml `training.decay_parameters`).
    DecayParameters {
        /// By name, as later transformers do: no decay on biases and norm weights (a name containing `bias`,
        /// `layernorm` or `rmsnorm`, or with a path component `norm` or ending in `_norm`). stasc's default.
        Names = "names",
        /// transformers 4.47.1's `Trainer.get_decay_parameter_names`: no decay on names containing "bias" and on the
        /// parameters of modules whose class is in its `ALL_LAYERNORM_LAYERS`. That list holds `LlamaRMSNorm` but
        /// not `Qwen2RMSNorm` or `Phi3RMSNorm`, so Llama norm weights are not decayed and Qwen2 and Phi-3 norm
        /// weights are. The paper protocol's default (the reference's pin).
        Transformers4_47_1 = "transformers_4_47_1",
    }
}

choice! {
    /// Which conversation a kept (initial answer, correction) pair is trained on.
    SftContext {
        /// The task's sft.jinja (the shipped one: the correction prompt without its few-shot messages).
        Template = "template",
        /// Exactly the correction prompt the model samples corrections with, then the correction.
        CorrectionPrompt = "correction_prompt",
    }
}

choice! {
    /// What happens to a completion before it is scored and reused in later prompts.
    AnswerCleaning {
        /// Used as generated.
        None = "none",
        /// The reference's `clean_completion_text`: strip surrounding whitespace; if "assistant:" occurs
        /// (any case), keep only what follows its first occurrence, stripped again.
        Reference = "reference",
    }
}

choice! {
    /// When a reward counts as "correct" for transitions and the correct-to-correct filter.
    Correctness {
        /// The full reward: r >= 1 (a binary reward's 1; an F1 of 1).
        FullReward = "full_reward",
        /// Any positive reward: r > 0, the reference's truthiness test (the same as full_reward for binary rewards).
        PositiveReward = "positive_reward",
    }
}

choice! {
    /// Floating-point type of model weights. `auto` means bf16 on CUDA and f32 on CPU.
    Dtype {
        /// bf16 on CUDA, f32 on CPU.
        Auto = "auto",
        /// 32-bit floats.
        F32 = "f32" | "float32" | "fp32",
        /// bfloat16.
        Bf16 = "bf16" | "bfloat16",
        /// float16.
        F16 = "f16" | "float16" | "fp16",
    }
}

choice! {
    /// Learning-rate schedules (HF `lr_scheduler_type` names); warm-up is linear from 0 for all of them.
    LrSchedulerType {
        /// Linear decay to 0 after warm-up (HF default).
        Linear = "linear",
        /// Half-cosine decay to 0 after warm-up.
        Cosine = "cosine",
        /// Constant, no warm-up.
        Constant = "constant",
        /// Constant after warm-up.
        ConstantWithWarmup = "constant_with_warmup",
    }
}

choice! {
    /// What happens to an SFT example longer than `data.block_size` tokens.
    Truncation {
        /// Leave the example out (the count is reported). Default: nothing is silently cut.
        Drop = "drop",
        /// Cut tokens from the start, keeping the correction that carries the loss.
        TruncateLeft = "truncate_left",
        /// Cut tokens from the end, as HF tokenizers' `truncation=True` does; an example left with no loss tokens
        /// is dropped, as the reference's label filter does.
        TruncateRight = "truncate_right",
    }
}

choice! {
    /// accelerate's `mixed_precision`.
    MixedPrecision {
        /// Full precision.
        No = "no",
        /// float16.
        Fp16 = "fp16",
        /// bfloat16.
        Bf16 = "bf16",
    }
}

impl MixedPrecision {
    /// The weight dtype this mixed-precision setting asks for, if any.
    pub fn dtype(self) -> Option<Dtype> {
        match self {
            MixedPrecision::No => None,
            MixedPrecision::Fp16 => Some(Dtype::F16),
            MixedPrecision::Bf16 => Some(Dtype::Bf16),
        }
    }
}

/// The devices a run's data-parallel ranks spread over (stasc_config's `device`): `auto` (the visible GPUs if there
/// are any, else the CPU), `cpu`, `cuda` (every visible GPU, or accelerate's `gpu_ids` of them: as many as its
/// `num_processes` asks) or `cuda:N` (that GPU alone). On the command line `--device cuda` means GPU 0 instead
/// (`crate::model::ModelDevice`, one model on one device); `crate::dist::topology` is where the two meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunDevices {
    /// The visible GPUs if there are any, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// `cuda`: every visible GPU (or accelerate's `gpu_ids`).
    EveryGpu,
    /// `cuda:N`: that GPU alone.
    Gpu(usize),
}

impl RunDevices {
    /// Parses `value` for `key` of `file`.
    pub fn parse(file: &Path, key: &str, value: &str) -> Result<Self, ConfigError> {
        value.parse().map_err(|e: ChoiceError| e.at(file, key))
    }
}

impl FromStr for RunDevices {
    type Err = ChoiceError;

    fn from_str(s: &str) -> Result<Self, ChoiceError> {
        match s {
            "auto" => Ok(RunDevices::Auto),
            "cpu" => Ok(RunDevices::Cpu),
            "cuda" => Ok(RunDevices::EveryGpu),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(RunDevices::Gpu)
                .ok_or_else(|| ChoiceError(format!("must be auto, cpu, cuda or cuda:N, found {s:?}"))),
        }
    }
}

impl fmt::Display for RunDevices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunDevices::Auto => f.write_str("auto"),
            RunDevices::Cpu => f.write_str("cpu"),
            RunDevices::EveryGpu => f.write_str("cuda"),
            RunDevices::Gpu(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for RunDevices {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunDevices {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        let f = Path::new("c.yaml");
        assert_eq!(Dtype::parse(f, "dtype", "bfloat16").unwrap(), Dtype::Bf16);
        assert_eq!(Dtype::parse(f, "dtype", "f32").unwrap(), Dtype::F32);
        assert_eq!(EvaluatorFunction::parse(f, "evaluator_function", "math_acc").unwrap(), EvaluatorFunction::MathAcc);
        assert_eq!(Dtype::Bf16.to_string(), "bf16");
    }

    #[test]
    fn unknown_choice_lists_choices_and_closest() {
        let e = EvaluatorFunction::parse(Path::new("c.yaml"), "evaluator_function", "in_ac").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml: key 'evaluator_function' must be one of in_acc, em, f1, math_acc, found \"in_ac\" \
             (did you mean 'in_acc'?)"
        );
    }

    #[test]
    fn devices_round_trip() {
        for text in ["auto", "cpu", "cuda", "cuda:3"] {
            assert_eq!(text.parse::<RunDevices>().unwrap().to_string(), text);
            let json = serde_json::to_value(text.parse::<RunDevices>().unwrap()).unwrap();
            assert_eq!(serde_json::from_value::<RunDevices>(json).unwrap().to_string(), text);
        }
        assert_eq!("cuda".parse::<RunDevices>().unwrap(), RunDevices::EveryGpu, "every GPU, not GPU 0");
        let e = RunDevices::parse(Path::new("c.yaml"), "device", "gpu").unwrap_err().to_string();
        assert_eq!(e, "c.yaml: key 'device' must be auto, cpu, cuda or cuda:N, found \"gpu\"");
    }

    #[test]
    fn choices_read_back_what_they_write_and_parse_like_config_keys() {
        for &mode in EvaluatorMode::ALL {
            let json = serde_json::to_value(mode).unwrap();
            assert_eq!(serde_json::from_value::<EvaluatorMode>(json).unwrap(), mode);
        }
        assert_eq!(serde_json::from_value::<Dtype>(serde_json::json!("bfloat16")).unwrap(), Dtype::Bf16);
        assert_eq!(
            "last".parse::<EvaluatorMode>().unwrap_err().to_string(),
            "must be one of default, final, found \"last\""
        );
        assert_eq!(
            "bleu".parse::<RewardChoice>().unwrap_err().to_string(),
            "must be one of in_acc, em, f1, math_acc, found \"bleu\"; or plugin:PATH_OR_NAME"
        );
        let plugin: RewardChoice = "plugin:length_penalty".parse().unwrap();
        assert_eq!((plugin.name(), plugin.plugin()), ("plugin:length_penalty", Some("length_penalty")));
        assert_eq!(RewardChoice::Builtin(EvaluatorFunction::F1).plugin(), None);
    }
}
