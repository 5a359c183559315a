//! Configuration: the reference's three YAML files (stasc_config, fine_tune, accelerate_config) as typed structs,
//! defaulted and validated; plus the key-checking machinery sweeps reuse for TOML. Pure: no I/O beyond reading the
//! files. Each file goes raw document -> known-key and type check ([`keys`]) -> raw serde struct -> resolved struct
//! with every default filled in; keys we accept but do not act on are returned as [`IgnoredKeys`], never dropped.
//! Each section's raw struct and its known-key table come from one field list ([`raw`]). The choice types
//! ([`choices`]) and the variant letters ([`variant`]) are the ones every other module uses.

pub mod accelerate;
pub mod choices;
pub mod document;
pub mod error;
pub mod fine_tune;
pub mod keys;
pub mod overrides;
pub mod raw;
pub mod report_to;
pub mod run_config;
pub mod stasc_config;
mod validate;
pub mod variant;

pub use accelerate::AccelerateConfig;
pub use choices::{
    AnswerCleaning, ChoiceError, CorrectionFilter, Correctness, Dtype, EvaluatorFunction, EvaluatorMode,
    LrSchedulerType, MixedPrecision, Pairing, Protocol, RewardChoice, RunDevices, SftContext, TaskType, Truncation,
};
pub use document::{ignored_warning, IgnoredKeys};
pub use error::ConfigError;
pub use fine_tune::{DataArgs, FineTuneConfig, ModelArgs, PeftArgs, TrainingArgs};
pub use report_to::ReportTo;
pub use run_config::{Execution, RunConfig, RunConfigPaths};
pub use stasc_config::StascConfig;
