//! `stasc_config.yaml`: the reference's STaSC configuration (model, dataset, the three design choices, reward,
//! sampling), plus our own optional keys (protocol, filter, pairing, prompts, directories, device, dtype, example
//! caps). Raw struct as read, known-key tree, resolved struct with every default filled in, and the keys we accept
//! but do not act on. `protocol` picks the defaults of every key that decides which experiment runs (see
//! [`ProtocolDefaults`]); a key set explicitly wins over its protocol's default.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::choices::{
    AnswerCleaning, CorrectionFilter, Correctness, DecayParameters, Dtype, EvaluatorFunction, EvaluatorMode, Pairing,
    Protocol, RewardChoice, RunDevices, SftContext, TaskType,
};
use super::document::{deserialize, load_yaml, Ignored, IgnoredKeys, Neutral};
use super::error::ConfigError;
use super::raw::raw_config;
use super::validate::{at_least, in_interval, non_empty, non_negative};
use crate::switch::env_flag;

/// The environment variable whose `0` makes `bounded_generation` default to false (benchmarks compare both paths).
pub const BOUNDED_GENERATION_ENV: &str = "STASC_BOUNDED_GENERATION";

fn is_true(b: &bool) -> bool {
    *b
}

/// vLLM engine settings stasc does not act on: it has no CUDA-graph switch and never downloads.
const IGNORED: &[Ignored] = &[Ignored::new("cache_dir", Neutral::Never), Ignored::new("enforce_eager", Neutral::Never)];

raw_config! {
    /// stasc_config.yaml exactly as written: every key optional. Its key table is [`STASC_KEYS`].
    pub struct RawStascConfig, keys STASC_KEYS {
        model_path: String,
        cache_dir: String,
        gpu_memory_utilization: f64,
        enforce_eager: bool,
        max_model_len: u64,
        random_seed: u64,
        task_type: String,
        data_path: String,
        id_col: String,
        question_col: String,
        gold_col: String,
        num_star_iterations: u64,
        run_name: String,
        initial_answer_with_new_model: bool,
        only_better_correction: bool,
        train_from_initial_model: bool,
        evaluator_mode: String,
        evaluator_function: String,
        evaluator_answer_marker: String,
        few_shot_dir: String,
        number_output_initial_generations: u64,
        number_output_corrections: u64,
        temperature: f64,
        top_p: f64,
        max_tokens: u64,
        truncate_prompts: bool,
        protocol: String,
        filter: String,
        pairing: String,
        correctness: String,
        use_few_shots: bool,
        sft_context: String,
        answer_cleaning: String,
        sample_train_at_last_iteration: bool,
        template_dir: String,
        output_dir: String,
        keep_checkpoints: bool,
        chunk_prompts: u64,
        batch_invariant: bool,
        fused_kernels: bool,
        bounded_generation: bool,
        device: String,
        dtype: String,
        max_train_examples: u64,
        max_test_examples: u64,
    }
}

/// Default `chunk_prompts` (see [`StascConfig::chunk_prompts`]).
pub const DEFAULT_CHUNK_PROMPTS: usize = 512;

/// The resolved STaSC configuration. Defaults come from the paper's QA setting (arXiv 2503.08681) and the
/// reference's shipped configs (configs/stasc_config.yaml, configs/self_correction_star_config.yaml), as each
/// field says. Relative paths are relative to the working directory, as in the reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StascConfig {
    /// Checkpoint directory (or hub id) of M0. Required.
    pub model_path: String,
    /// vLLM download cache. Accepted, not acted on (no default).
    pub cache_dir: Option<String>,
    /// Share of each GPU's memory that generation may hold (the CUDA caching allocator's cap while sampling;
    /// fine-tuning is not capped). Default 0.9 (vLLM's).
    pub gpu_memory_utilization: f64,
    /// vLLM CUDA-graph switch. Accepted, not acted on. Default false (vLLM's).
    pub enforce_eager: bool,
    /// Cap on prompt + generated tokens. Default: none (vLLM's: the model's max_position_embeddings).
    pub max_model_len: Option<usize>,
    /// Seed of sampling and of everything random in the run. Default 42 (paper, reference).
    pub random_seed: u64,
    /// qa or math. Default qa (paper's main setting).
    pub task_type: TaskType,
    /// Dataset with train and test splits (see `crate::data`). Required.
    pub data_path: PathBuf,
    /// Id column. Default question_id for qa, unique_id for math (reference configs).
    pub id_col: String,
    /// Question column. Default question_text for qa, problem for math (reference configs).
    pub question_col: String,
    /// Gold answer column. Default reference for qa, answer for math (reference configs).
    pub gold_col: String,
    /// N: fine-tuning rounds; iterations 0..=N are evaluated. Default 10 (paper).
    pub num_star_iterations: usize,
    /// Name of the run. Default: the config file's stem.
    pub run_name: String,
    /// true = Evolving initialization (initial answers from M_n), false = Fixed (from M0). Default true (reference).
    pub initial_answer_with_new_model: bool,
    /// true = Improving filter (I), false = the protocol's N filter. Default true (reference). `filter` names the
    /// filter exactly.
    pub only_better_correction: bool,
    /// true = Fixed fine-tuning (from M0), false = Evolving (from M_n). Default true (reference).
    pub train_from_initial_model: bool,
    /// default or final. Default: final (stasc protocol), default (paper protocol; the reference README's advice).
    pub evaluator_mode: EvaluatorMode,
    /// Reward function. Default in_acc for qa, math_acc for math (reference configs).
    pub evaluator_function: RewardChoice,
    /// Marker after which `final` mode scores. Default "Final Answer:" for qa, "Final Answer: The final answer is"
    /// for math (reference configs).
    pub evaluator_answer_marker: String,
    /// Directory of `<task>_initial.json` / `<task>_correction.json` few-shot files. Default: none, the built-in
    /// copies of the clone's few_shots/ (the reference's few_shots).
    pub few_shot_dir: Option<PathBuf>,
    /// K_init: initial answers per train question. Default 5 (paper).
    pub number_output_initial_generations: usize,
    /// K_corr: corrections per initial answer on train. Default 5 (paper).
    pub number_output_corrections: usize,
    /// Sampling temperature (0 = greedy). Default 0.6 (paper).
    pub temperature: f64,
    /// Nucleus sampling mass, in (0, 1]. Default 0.9 (paper).
    pub top_p: f64,
    /// Maximum generated tokens per sample. Default 256 (paper).
    pub max_tokens: usize,
    /// A prompt longer than the model length allows (max_model_len - 1 tokens) loses its first tokens instead of
    /// stopping the run. Default false: nothing is cut silently. Left out of the resolved YAML when false, so that
    /// runs recorded before the key existed resume.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncate_prompts: bool,
    /// The named set of defaults this configuration starts from. Default stasc (our own choices).
    pub protocol: Protocol,
    /// Which pairs become training data. Default: improving if only_better_correction, else the protocol's N
    /// filter (stasc: non_decreasing, paper: correct_to_correct).
    pub filter: CorrectionFilter,
    /// How corrections are paired with initial answers. Default: per_initial (stasc), all_pairs (paper).
    pub pairing: Pairing,
    /// When a reward counts as correct (transitions, correct_to_correct). Default: full_reward (stasc),
    /// positive_reward (paper).
    pub correctness: Correctness,
    /// Show the few-shot messages of `few_shot_dir` in the prompts. Default: true (stasc), false (paper: the
    /// reference's prompts were zero-shot).
    pub use_few_shots: bool,
    /// The conversation a kept pair is trained on. Default: template (stasc), correction_prompt (paper).
    pub sft_context: SftContext,
    /// What happens to a completion before it is scored and reused. Default: none (stasc), reference (paper).
    pub answer_cleaning: AnswerCleaning,
    /// Sample the train split at the last iteration too: it only feeds that iteration's train metrics (about a
    /// tenth of a run's sampling). Default true under both protocols (the reference does it).
    pub sample_train_at_last_iteration: bool,
    /// Directory of the minijinja prompt templates (it holds `prompts/<task>/`). Default: none, the built-in copies
    /// of the clone's templates/.
    pub template_dir: Option<PathBuf>,
    /// Run directory. Default runs/<run_name>.
    pub output_dir: PathBuf,
    /// Keep every iteration's checkpoint instead of only those the next iteration needs. Default false.
    pub keep_checkpoints: bool,
    /// Prompts per saved generation chunk, and per device in a generate call (a call takes one chunk per device): a
    /// killed run loses at most one call's chunks of samples.
    /// Default 512: a call of 512 prompts x 5 samples decodes 512 rows at once, where 128 x 5 ran waves of 320;
    /// paper-scale sampling on one H200 went from 40.1k to 49.8k tok/s (corrections) and 45.2k to 59.7k (initial
    /// answers), scripts/kernels/h200_cascade_2026-12-01.txt. A chunk is then ~30 s of GPU work at most.
    pub chunk_prompts: usize,
    /// Generate with fixed shapes (all cache rows, the whole context, one prompt per prefill) so that a sample
    /// never depends on which other samples share its batch or GPU, at a cost in speed. Default false (CPU runs
    /// are batch-invariant anyway).
    pub batch_invariant: bool,
    /// Ours: on CUDA, decoding and the AdamW update run stasc's fused kernels (`crate::kernels`); false runs
    /// libtorch ops, which round bf16 differently, so samples can differ. Default true, or false when the
    /// environment says `STASC_FUSED_KERNELS=0`. Left out of the resolved YAML when true (runs recorded before the
    /// key existed resume), so a run that turned them off says so.
    #[serde(skip_serializing_if = "is_true")]
    pub fused_kernels: bool,
    /// Ours: on CUDA, generation reserves its KV pool from the `gpu_memory_utilization` budget, decodes up to 512
    /// rows at once and prefills shared prompt prefixes once; false is the earlier unbounded path (other batch
    /// shapes, so other bf16 rounding). Default true, or false when the environment says
    /// `STASC_BOUNDED_GENERATION=0`. Left out of the resolved YAML when true.
    #[serde(skip_serializing_if = "is_true")]
    pub bounded_generation: bool,
    /// Device of the run. Default auto (CUDA if available, else CPU).
    pub device: RunDevices,
    /// Weight dtype. Default auto (bf16 on CUDA, f32 on CPU).
    pub dtype: Dtype,
    /// Use only the first N train questions. Default: all.
    pub max_train_examples: Option<usize>,
    /// Use only the first N test questions. Default: all.
    pub max_test_examples: Option<usize>,
    /// Under `protocol: paper`, the protocol keys set to something else, e.g. "pairing: per_initial (paper:
    /// all_pairs)": such a run is not the published experiment, and `stasc run` says so.
    #[serde(skip)]
    pub protocol_departures: Vec<String>,
}

impl StascConfig {
    /// Loads and resolves the stasc_config YAML at `path`, with the keys it sets that we do not act on.
    pub fn load(path: &Path) -> Result<(StascConfig, IgnoredKeys), ConfigError> {
        let document = load_yaml(path, STASC_KEYS)?;
        Self::from_document(path, &document)
    }

    /// Resolves a document already checked against [`STASC_KEYS`] (e.g. after sweep overrides); `file` names it in
    /// errors and gives the default run name.
    pub fn from_document(file: &Path, document: &Value) -> Result<(StascConfig, IgnoredKeys), ConfigError> {
        let raw: RawStascConfig = deserialize(file, document)?;
        let config = resolve(file, raw)?;
        Ok((config, IgnoredKeys::collect(file, document, IGNORED)))
    }
}

/// The defaults a protocol gives the keys that decide which experiment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolDefaults {
    /// `pairing`.
    pub pairing: Pairing,
    /// `filter` when `only_better_correction` is false (the letter N).
    pub n_filter: CorrectionFilter,
    /// `correctness`.
    pub correctness: Correctness,
    /// `evaluator_mode`.
    pub evaluator_mode: EvaluatorMode,
    /// `use_few_shots`.
    pub use_few_shots: bool,
    /// `sft_context`.
    pub sft_context: SftContext,
    /// `answer_cleaning`.
    pub answer_cleaning: AnswerCleaning,
    /// fine_tune.yaml `training.average_tokens_across_devices`: whole-step (true) or per-rank (false) loss
    /// normalisation across data-parallel ranks.
    pub average_tokens_across_devices: bool,
    /// fine_tune.yaml `training.decay_parameters`: which parameters AdamW's weight decay applies to.
    pub decay_parameters: DecayParameters,
}

impl ProtocolDefaults {
    /// The defaults of `protocol`.
    pub fn of(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Stasc => ProtocolDefaults {
                pairing: Pairing::PerInitial,
                n_filter: CorrectionFilter::NonDecreasing,
                correctness: Correctness::FullReward,
                evaluator_mode: EvaluatorMode::Final,
                use_few_shots: true,
                sft_context: SftContext::Template,
                answer_cleaning: AnswerCleaning::None,
                // A token weighs the same whichever rank it lands on, so a global batch gives the same gradient
                // however it is split into ranks and accumulation steps (HF's own fix of the per-rank mean, 34242).
                average_tokens_across_devices: true,
                // Norm weights are per-channel scales around 1, not weights whose size regularisation should pull
                // toward 0 (what later transformers do for every architecture).
                decay_parameters: DecayParameters::Names,
            },
            Protocol::Paper => ProtocolDefaults {
                pairing: Pairing::AllPairs,
                n_filter: CorrectionFilter::CorrectToCorrect,
                correctness: Correctness::PositiveReward,
                evaluator_mode: EvaluatorMode::Default,
                use_few_shots: false,
                sft_context: SftContext::CorrectionPrompt,
                answer_cleaning: AnswerCleaning::Reference,
                // transformers 4.47.1 (the reference's pin): TrainingArguments' default.
                average_tokens_across_devices: false,
                // transformers 4.47.1 (the reference's pin) decays Qwen2's norm weights: Qwen2RMSNorm is not in its
                // ALL_LAYERNORM_LAYERS.
                decay_parameters: DecayParameters::Transformers4_47_1,
            },
        }
    }
}

fn required<T>(file: &Path, key: &str, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError::Missing { file: file.to_path_buf(), key: key.to_string() })
}

fn resolve(file: &Path, raw: RawStascConfig) -> Result<StascConfig, ConfigError> {
    let task_type = raw.task_type.as_deref().map_or(Ok(TaskType::Qa), |v| TaskType::parse(file, "task_type", v))?;
    let (id_col, question_col, gold_col, function, marker) = match task_type {
        TaskType::Qa => ("question_id", "question_text", "reference", EvaluatorFunction::InAcc, "Final Answer:"),
        TaskType::Math => {
            ("unique_id", "problem", "answer", EvaluatorFunction::MathAcc, "Final Answer: The final answer is")
        }
    };
    let protocol = raw.protocol.as_deref().map_or(Ok(Protocol::Stasc), |v| Protocol::parse(file, "protocol", v))?;
    let defaults = ProtocolDefaults::of(protocol);
    let only_better_correction = raw.only_better_correction.unwrap_or(true);
    let filter = match raw.filter.as_deref() {
        None => {
            if only_better_correction {
                CorrectionFilter::Improving
            } else {
                defaults.n_filter
            }
        }
        Some(text) => {
            let filter = CorrectionFilter::parse(file, "filter", text)?;
            let consistent = match raw.only_better_correction {
                None => true,
                Some(true) => filter == CorrectionFilter::Improving,
                Some(false) => filter != CorrectionFilter::Improving,
            };
            if !consistent {
                return Err(ConfigError::invalid(
                    file,
                    "filter",
                    format!("'{filter}' contradicts only_better_correction: {only_better_correction}"),
                ));
            }
            filter
        }
    };
    let evaluator_mode = raw
        .evaluator_mode
        .as_deref()
        .map_or(Ok(defaults.evaluator_mode), |v| EvaluatorMode::parse(file, "evaluator_mode", v))?;
    let evaluator_answer_marker = raw.evaluator_answer_marker.unwrap_or_else(|| marker.to_string());
    if evaluator_mode == EvaluatorMode::Final && evaluator_answer_marker.trim().is_empty() {
        return Err(ConfigError::invalid(
            file,
            "evaluator_answer_marker",
            "must not be empty when evaluator_mode is final",
        ));
    }
    let run_name = match raw.run_name {
        Some(name) => non_empty(file, "run_name", name)?,
        None => file.file_stem().map_or_else(|| "stasc".to_string(), |s| s.to_string_lossy().into_owned()),
    };
    if run_name.contains(['/', '\\']) || run_name == "." || run_name == ".." {
        return Err(ConfigError::invalid(
            file,
            "run_name",
            format!("must be a plain name (it names a directory), found {run_name:?}"),
        ));
    }
    let cap = |key: &str, v: Option<u64>| v.map(|n| at_least(file, key, n, 1)).transpose();
    let mut config = StascConfig {
        model_path: non_empty(file, "model_path", required(file, "model_path", raw.model_path)?)?,
        cache_dir: raw.cache_dir,
        gpu_memory_utilization: in_interval(
            file,
            "gpu_memory_utilization",
            raw.gpu_memory_utilization.unwrap_or(0.9),
            (0.0, true),
            (1.0, false),
        )?,
        enforce_eager: raw.enforce_eager.unwrap_or(false),
        max_model_len: cap("max_model_len", raw.max_model_len)?,
        random_seed: raw.random_seed.unwrap_or(42),
        task_type,
        data_path: PathBuf::from(non_empty(file, "data_path", required(file, "data_path", raw.data_path)?)?),
        id_col: non_empty(file, "id_col", raw.id_col.unwrap_or_else(|| id_col.to_string()))?,
        question_col: non_empty(file, "question_col", raw.question_col.unwrap_or_else(|| question_col.to_string()))?,
        gold_col: non_empty(file, "gold_col", raw.gold_col.unwrap_or_else(|| gold_col.to_string()))?,
        num_star_iterations: at_least(file, "num_star_iterations", raw.num_star_iterations.unwrap_or(10), 0)?,
        output_dir: raw.output_dir.map_or_else(|| Path::new("runs").join(&run_name), PathBuf::from),
        run_name,
        initial_answer_with_new_model: raw.initial_answer_with_new_model.unwrap_or(true),
        only_better_correction,
        train_from_initial_model: raw.train_from_initial_model.unwrap_or(true),
        evaluator_mode,
        evaluator_function: raw
            .evaluator_function
            .as_deref()
            .map_or(Ok(RewardChoice::Builtin(function)), |v| RewardChoice::parse(file, "evaluator_function", v))?,
        evaluator_answer_marker,
        few_shot_dir: raw.few_shot_dir.map(PathBuf::from),
        number_output_initial_generations: at_least(
            file,
            "number_output_initial_generations",
            raw.number_output_initial_generations.unwrap_or(5),
            1,
        )?,
        number_output_corrections: at_least(
            file,
            "number_output_corrections",
            raw.number_output_corrections.unwrap_or(5),
            1,
        )?,
        temperature: non_negative(file, "temperature", raw.temperature.unwrap_or(0.6))?,
        top_p: in_interval(file, "top_p", raw.top_p.unwrap_or(0.9), (0.0, true), (1.0, false))?,
        max_tokens: at_least(file, "max_tokens", raw.max_tokens.unwrap_or(256), 1)?,
        truncate_prompts: raw.truncate_prompts.unwrap_or(false),
        protocol,
        filter,
        pairing: raw.pairing.as_deref().map_or(Ok(defaults.pairing), |v| Pairing::parse(file, "pairing", v))?,
        correctness: raw
            .correctness
            .as_deref()
            .map_or(Ok(defaults.correctness), |v| Correctness::parse(file, "correctness", v))?,
        use_few_shots: raw.use_few_shots.unwrap_or(defaults.use_few_shots),
        sft_context: raw
            .sft_context
            .as_deref()
            .map_or(Ok(defaults.sft_context), |v| SftContext::parse(file, "sft_context", v))?,
        answer_cleaning: raw
            .answer_cleaning
            .as_deref()
            .map_or(Ok(defaults.answer_cleaning), |v| AnswerCleaning::parse(file, "answer_cleaning", v))?,
        sample_train_at_last_iteration: raw.sample_train_at_last_iteration.unwrap_or(true),
        template_dir: raw.template_dir.map(PathBuf::from),
        keep_checkpoints: raw.keep_checkpoints.unwrap_or(false),
        chunk_prompts: at_least(file, "chunk_prompts", raw.chunk_prompts.unwrap_or(DEFAULT_CHUNK_PROMPTS as u64), 1)?,
        batch_invariant: raw.batch_invariant.unwrap_or(false),
        fused_kernels: raw.fused_kernels.unwrap_or_else(|| env_flag(crate::kernels::SWITCH_ENV, true)),
        bounded_generation: raw.bounded_generation.unwrap_or_else(|| env_flag(BOUNDED_GENERATION_ENV, true)),
        device: raw.device.as_deref().map_or(Ok(RunDevices::Auto), |v| RunDevices::parse(file, "device", v))?,
        dtype: raw.dtype.as_deref().map_or(Ok(Dtype::Auto), |v| Dtype::parse(file, "dtype", v))?,
        max_train_examples: cap("max_train_examples", raw.max_train_examples)?,
        max_test_examples: cap("max_test_examples", raw.max_test_examples)?,
        protocol_departures: Vec::new(),
    };
    if protocol == Protocol::Paper {
        config.protocol_departures = departures(&config, &defaults);
    }
    Ok(config)
}

/// The protocol keys of `c` whose values differ from `d`, as "key: value (paper: default)".
fn departures(c: &StascConfig, d: &ProtocolDefaults) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |key: &str, ours: String, theirs: String| {
        if ours != theirs {
            out.push(format!("{key}: {ours} (paper: {theirs})"));
        }
    };
    if c.filter != CorrectionFilter::Improving {
        check("filter", c.filter.to_string(), d.n_filter.to_string());
    }
    check("pairing", c.pairing.to_string(), d.pairing.to_string());
    check("correctness", c.correctness.to_string(), d.correctness.to_string());
    check("evaluator_mode", c.evaluator_mode.to_string(), d.evaluator_mode.to_string());
    check("use_few_shots", c.use_few_shots.to_string(), d.use_few_shots.to_string());
    check("sft_context", c.sft_context.to_string(), d.sft_context.to_string());
    check("answer_cleaning", c.answer_cleaning.to_string(), d.answer_cleaning.to_string());
    out
}

#[cfg(test)]
#[path = "stasc_config_tests.rs"]
mod tests;
