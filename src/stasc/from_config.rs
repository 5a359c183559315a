//! From a resolved [`RunConfig`] to a running loop: the [`RunSpec`], the prompt and reward adapters, and the
//! fingerprint saved as config.resolved.yaml. The backend is passed in, so tests can run the same path with a fake.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::{RunConfig, SftContext, StascConfig};
use crate::data::Splits;
use crate::prompt::{ChatMessage, PromptBuilder};
use crate::reward::Evaluator;

use super::backend::Backend;
use super::error::StascError;
use super::metrics::IterationMetrics;
use super::runner::{run_stasc_observed, Prompts, RunObserver, RunOptions, Scorer};
use super::spec::{FineTuning, Initialization, RunSpec, SamplingSpec};

/// The loop's view of a stasc_config.
pub fn run_spec(c: &StascConfig) -> RunSpec {
    RunSpec {
        run_name: c.run_name.clone(),
        model_path: PathBuf::from(&c.model_path),
        iterations: c.num_star_iterations,
        initialization: Initialization::from_new_model(c.initial_answer_with_new_model),
        filter: c.filter,
        fine_tuning: FineTuning::from_initial_model(c.train_from_initial_model),
        pairing: c.pairing,
        initial_samples: c.number_output_initial_generations,
        correction_samples: c.number_output_corrections,
        sampling: SamplingSpec {
            temperature: c.temperature,
            top_p: c.top_p,
            max_tokens: c.max_tokens,
            seed: c.random_seed,
        },
        correctness: c.correctness,
        answer_cleaning: c.answer_cleaning,
        sample_train_at_last_iteration: c.sample_train_at_last_iteration,
        keep_checkpoints: c.keep_checkpoints,
        chunk_prompts: c.chunk_prompts,
    }
}

/// [`Prompts`] over the minijinja prompt templates.
pub struct TemplatePrompts {
    /// The task's templates and few-shot messages.
    pub builder: PromptBuilder,
    /// Where SFT conversations come from.
    pub sft_context: SftContext,
}

impl Prompts for TemplatePrompts {
    fn initial(&self, question: &str) -> Result<Vec<ChatMessage>, String> {
        self.builder.initial_messages(question).map_err(|e| e.to_string())
    }
    fn correction(&self, question: &str, initial: &str) -> Result<Vec<ChatMessage>, String> {
        self.builder.correction_messages(question, initial).map_err(|e| e.to_string())
    }
    fn sft(&self, question: &str, initial: &str, correction: &str) -> Result<Vec<ChatMessage>, String> {
        match self.sft_context {
            SftContext::Template => self.builder.sft_messages(question, initial, correction).map_err(|e| e.to_string()),
            // The model trains on exactly the conversation it would sample this correction in.
            SftContext::CorrectionPrompt => {
                let mut messages = self.correction(question, initial)?;
                messages.push(ChatMessage::new("assistant", correction));
                Ok(messages)
            }
        }
    }
}

/// [`Scorer`] over a reward evaluator (built-in or plugin).
pub struct EvaluatorScorer(pub Evaluator);

impl Scorer for EvaluatorScorer {
    fn score(&self, gold: &[String], text: &str) -> Result<f64, String> {
        self.0.evaluate(gold, text).map_err(|e| e.to_string())
    }
    fn scored_answer(&self, text: &str) -> Option<String> {
        self.0.scored_answer(text)
    }
}

/// Builds the prompt templates and the evaluator a config names; errors name the config file.
pub fn prompts_and_scorer(config: &RunConfig) -> Result<(TemplatePrompts, EvaluatorScorer), StascError> {
    let c = &config.stasc_config;
    let file = &config.sources.config;
    let setup = |message: String| StascError::State { path: file.clone(), message };
    let builder = PromptBuilder::load(c.template_dir.as_deref(), c.few_shot_dir.as_deref(), c.task_type.name())
        .map_err(|e| setup(format!("prompt templates: {e}")))?;
    let builder = if c.use_few_shots { builder } else { builder.without_few_shots() };
    let evaluator = Evaluator::from_choice(
        &c.evaluator_function,
        c.evaluator_mode,
        &c.evaluator_answer_marker,
        &crate::reward::plugin::default_plugin_dirs(),
    )
    .map_err(|e| setup(format!("evaluator_function {}: {e}", c.evaluator_function)))?;
    Ok((TemplatePrompts { builder, sft_context: c.sft_context }, EvaluatorScorer(evaluator)))
}

/// Everything that decided the run: resolved configs (without where the run directory is), the command-line
/// overrides, the reward's plugin file and hash, and the stasc version. Saved as config.resolved.yaml and compared when resuming.
pub fn fingerprint(config: &RunConfig, scorer: &EvaluatorScorer) -> serde_json::Value {
    let mut stasc = serde_json::to_value(&config.stasc_config).expect("config serialises");
    if let Some(o) = stasc.as_object_mut() {
        o.remove("output_dir");
    }
    let plugin = scorer.0.plugin_record().map(|(path, sha)| json!({"path": path.display().to_string(), "sha256": sha}));
    let mut fingerprint = json!({
        "stasc_version": env!("CARGO_PKG_VERSION"),
        "stasc_config": stasc,
        "fine_tune": config.fine_tune,
        "accelerate": config.accelerate,
        "execution": config.execution,
        "reward": {"name": scorer.0.reward_name(), "plugin": plugin},
    });
    // Recorded only when given, so the fingerprints of runs without overrides stay as they were.
    if !config.overrides.is_empty() {
        fingerprint["overrides"] = json!(config.overrides);
    }
    fingerprint
}

/// Runs (or resumes) the loop a config describes with `backend`, in the config's output directory; `observer` (the
/// experiment trackers) sees every iteration.
pub fn run_with_backend(
    config: &RunConfig,
    splits: &Splits,
    backend: &mut dyn Backend,
    options: &RunOptions,
    observer: &mut dyn RunObserver,
) -> Result<Vec<IterationMetrics>, StascError> {
    let (prompts, scorer) = prompts_and_scorer(config)?;
    let spec = run_spec(&config.stasc_config);
    let fp = fingerprint(config, &scorer);
    let dir: &Path = &config.stasc_config.output_dir;
    run_stasc_observed(&spec, splits, backend, &prompts, &scorer, dir, &fp, options, observer)
}
