//! `RunSpec`: everything that decides a STaSC run, resolved and validated. The loop reads only this, never the
//! YAML files, so sweeps and the reference CLI feed the same loop.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::config::variant::{EvolvingOrFixed, FilterLetter, FineTuning, Initialization, Variant};
pub use crate::config::{AnswerCleaning, CorrectionFilter, Correctness, Pairing};

/// Sampling settings shared by every generation phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingSpec {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus threshold in (0, 1].
    pub top_p: f64,
    /// Maximum new tokens per sample.
    pub max_tokens: usize,
    /// Run seed; every sample's seed is derived from it, the prompt key and the sample index.
    pub seed: u64,
}

/// The resolved description of one STaSC run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSpec {
    /// Name of the run (directory name under runs/ by default).
    pub run_name: String,
    /// M0: the starting checkpoint directory. Referenced, never copied.
    pub model_path: PathBuf,
    /// N: the loop runs iterations 0..=N; iteration N evaluates only.
    pub iterations: usize,
    /// Initialization choice (first letter of the variant name).
    pub initialization: Initialization,
    /// Filter choice (second letter).
    pub filter: CorrectionFilter,
    /// Fine-tuning choice (third letter).
    pub fine_tuning: FineTuning,
    /// Pairing of corrections with initial answers.
    pub pairing: Pairing,
    /// K_init: initial answers per train question (test always gets 1).
    pub initial_samples: usize,
    /// K_corr: corrections per train initial answer (test always gets 1).
    pub correction_samples: usize,
    /// Sampling settings.
    pub sampling: SamplingSpec,
    /// When a reward counts as correct (transitions, the correct-to-correct filter).
    pub correctness: Correctness,
    /// What happens to each completion before it is scored and reused.
    pub answer_cleaning: AnswerCleaning,
    /// Sample the train split at the last iteration (only its train metrics need it).
    pub sample_train_at_last_iteration: bool,
    /// Keep every iteration's checkpoint instead of only what later iterations need.
    pub keep_checkpoints: bool,
    /// Prompts per generation chunk; each finished chunk is saved, so a killed run loses at most one generate
    /// call's chunks ([`super::Backend::chunks_per_call`]).
    pub chunk_prompts: usize,
}

impl RunSpec {
    /// The paper's three-letter variant name, e.g. "EIE" (see [`Variant`]). The letter N stands for
    /// `only_better_correction: false`, whichever N filter (non_decreasing, correct_to_correct) the protocol gives
    /// it; the filter itself is in the resolved config, and reports show it.
    pub fn variant(&self) -> String {
        Variant::of(self.initialization, self.filter, self.fine_tuning).to_string()
    }
}
