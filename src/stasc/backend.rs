//! What the loop needs from a model engine: sample chats from a checkpoint, fine-tune a checkpoint on chats. The
//! real engine (tch) and the scripted fake used by the tests both implement it, so the loop's bookkeeping is tested
//! without a model.

use std::path::{Path, PathBuf};

use crate::prompt::ChatMessage;
use crate::train::StageSeconds;

use super::spec::SamplingSpec;

/// Boxed error from a backend; the loop adds which phase and iteration failed.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// One job of a sampling phase: a keyed chat to sample `n` completions for. The loop hands a [`Backend`] a batch of
/// them; the backend turns them into `crate::generate::GenerationRequest`s (many prompts, one `n`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingJob {
    /// Unique key of this prompt within the run (e.g. "iter2/correction/train/q17/1"); sample seeds derive from it.
    pub key: String,
    /// The conversation to continue with an assistant turn.
    pub messages: Vec<ChatMessage>,
    /// Number of samples.
    pub n: usize,
}

/// The key of an initial-answer job. Sample seeds derive from keys, so their format never changes.
pub fn initial_key(iteration: usize, split: &str, id: &str) -> String {
    format!("iter{iteration}/initial/{split}/{id}")
}

/// The key of a correction job for initial answer `sample` of a question.
pub fn correction_key(iteration: usize, split: &str, id: &str, sample: usize) -> String {
    format!("iter{iteration}/correction/{split}/{id}/{sample}")
}

/// The phase (`initial` or `correction`), split and question id of a key made by [`initial_key`] or
/// [`correction_key`]; `None` for any other key.
pub fn parse_key(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.splitn(4, '/');
    let (iteration, phase, split, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    iteration.strip_prefix("iter")?.parse::<usize>().ok()?;
    match phase {
        "initial" => Some((phase, split, rest)),
        // Question ids may hold '/': the sample index is whatever follows the last one.
        "correction" => rest.rsplit_once('/').map(|(id, _)| (phase, split, id)),
        _ => None,
    }
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedSample {
    /// The completion text (without the end-of-turn token).
    pub text: String,
    /// The seed this sample was drawn with.
    pub seed: u64,
    /// Number of generated tokens.
    pub tokens: usize,
    /// Why the sample ended ("eos", "max_tokens", ...), when the backend knows.
    pub finish_reason: Option<String>,
}

/// Prompt tokens of the generate calls since they were last taken: run through prefill, and saved (their K/V
/// copied from a prefix shared by the call's prompts instead).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrefillCounts {
    /// Prompt tokens prefilled.
    pub run: usize,
    /// Prompt tokens whose prefill was saved.
    pub saved: usize,
}

/// What a fine-tuning run reports back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainSummary {
    /// Training loss per optimiser step.
    pub losses: Vec<f64>,
    /// Trained tokens per second.
    pub tokens_per_s: f64,
    /// Wall seconds of the fine-tuning's stages, where the backend knows them.
    pub stage_seconds: Option<StageSeconds>,
}

/// A model engine as the STaSC loop sees it. Models are checkpoint directories, so every phase is resumable.
pub trait Backend {
    /// Samples `job.n` completions for every job from the checkpoint at `model`, in job order.
    fn generate(
        &mut self,
        model: &Path,
        jobs: &[SamplingJob],
        sampling: &SamplingSpec,
    ) -> Result<Vec<Vec<GeneratedSample>>, BackendError>;

    /// Fine-tunes the checkpoint `base` on `examples` (the loss covers the last assistant message) and writes the
    /// result as a checkpoint directory at `out`.
    fn train(&mut self, base: &Path, examples: &[Vec<ChatMessage>], out: &Path) -> Result<TrainSummary, BackendError>;

    /// Loads `model` for generation ahead of the first [`Backend::generate`] on it, so that a phase's timing can
    /// leave loading out (the loop times it as the iteration's `load` phase). A no-op where nothing is kept.
    fn prepare(&mut self, _model: &Path) -> Result<(), BackendError> {
        Ok(())
    }

    /// Frees whatever the backend holds (models on the GPU) before a phase that needs the memory.
    fn release(&mut self) {}

    /// How many of a phase's chunks one [`Backend::generate`] call should take at once: a backend that splits a
    /// call over several devices wants one chunk's worth of work per device, so that each runs the full-size
    /// batches one device runs. Chunks stay the unit of saving and resuming whatever this says.
    fn chunks_per_call(&self) -> usize {
        1
    }

    /// The prefill counts of the generate calls since the last call of this method (zero when not counted).
    fn take_prefill_counts(&mut self) -> PrefillCounts {
        PrefillCounts::default()
    }
}

/// The model that produced a set of samples, as recorded in the run directory.
pub fn model_label(model: &Path, m0: &Path) -> String {
    if model == m0 {
        "M0".to_string()
    } else {
        model.display().to_string()
    }
}

/// Path of the checkpoint written by iteration `n`.
pub fn iteration_model_dir(run_dir: &Path, n: usize) -> PathBuf {
    run_dir.join(format!("iter_{n}")).join("model")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_to_their_question_even_with_slashes_in_ids() {
        assert_eq!(initial_key(2, "train", "q17"), "iter2/initial/train/q17");
        assert_eq!(parse_key(&initial_key(2, "train", "a/b")), Some(("initial", "train", "a/b")));
        assert_eq!(parse_key(&correction_key(0, "test", "a/b", 3)), Some(("correction", "test", "a/b")));
        assert_eq!(parse_key("warm-up"), None);
    }
}
