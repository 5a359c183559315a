//! The resolved fine_tune.yaml sections, every default filled in. Each field's doc says where its default comes
//! from: the reference fine_tune.py's `.get(...)` default, else HF `TrainingArguments` / peft.

use serde::Serialize;

use crate::config::choices::{DecayParameters, Dtype, LrSchedulerType, Truncation};

/// The resolved fine-tuning configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FineTuneConfig {
    /// Which model to fine-tune and in which dtype.
    pub model: ModelArgs,
    /// Training data options.
    pub data: DataArgs,
    /// Optimisation hyperparameters.
    pub training: TrainingArgs,
    /// LoRA / DoRA.
    pub peft: PeftArgs,
}

/// The resolved `model` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelArgs {
    /// Base model; in `stasc run` the loop sets it (model_path or M_n). Default: none.
    pub model_name_or_path: Option<String>,
    /// Accepted, not acted on: the tokenizer is read from the model directory. Default none.
    pub tokenizer_name: Option<String>,
    /// Accepted, not acted on. Default none.
    pub cache_dir: Option<String>,
    /// Accepted, not acted on (no Python code runs). Default false (reference).
    pub trust_remote_code: bool,
    /// Accepted, not acted on (one tokenizer implementation). Default false (reference).
    pub use_fast_tokenizer: bool,
    /// Weight dtype while training. Default auto: bf16 on CUDA, f32 on CPU (the reference only supports auto and
    /// bfloat16).
    pub torch_dtype: Dtype,
    /// Accepted, not acted on. Default main (reference).
    pub model_revision: String,
    /// Accepted, not acted on. Default none.
    pub token: Option<String>,
}

/// The resolved `data` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataArgs {
    /// SFT dataset; in `stasc run` the loop sets it to the iteration's filtered pairs. Default none.
    pub dataset_name: Option<String>,
    /// Accepted, not acted on. Default none.
    pub dataset_config_name: Option<String>,
    /// Maximum tokens of one SFT example (the reference's max_seq_length). Default 1024 (reference).
    pub block_size: usize,
    /// Accepted, not acted on (no validation split). Default 5 (reference fine_tune.py).
    pub validation_split_percentage: u64,
    /// Accepted, not acted on (all pairs are used). Default 100 (reference).
    pub dataset_percentage: u64,
    /// Accepted, not acted on (only seeds dataset_percentage subsampling). Default 42 (reference).
    pub seed: u64,
    /// Accepted, not acted on. Default false (reference).
    pub streaming: bool,
    /// Accepted, not acted on. Default false (reference).
    pub overwrite_cache: bool,
    /// Accepted, not acted on. Default none (reference).
    pub preprocessing_num_workers: Option<usize>,
    /// Accepted, not acted on (the loop's pairs are always read from disk). Default false (reference).
    pub load_from_disk: bool,
    /// Ours: what to do with an example longer than block_size. Default drop.
    pub truncation: Truncation,
}

/// The resolved `training` section (HF `TrainingArguments` names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingArgs {
    /// Checkpoint directory; in `stasc run` the loop sets it. Default none.
    pub output_dir: Option<String>,
    /// Peak learning rate. Default 5e-5 (HF; the reference requires the key).
    pub learning_rate: f64,
    /// Epochs over the pairs (ignored when max_steps is set). Default 3 (HF; the reference requires the key).
    pub num_train_epochs: f64,
    /// Examples per device per micro-batch. Default 8 (HF; the reference requires the key).
    pub per_device_train_batch_size: usize,
    /// Accepted, not acted on. Default 8 (HF).
    pub per_device_eval_batch_size: usize,
    /// Micro-batches per optimizer step. Default 1 (HF; the reference requires the key).
    pub gradient_accumulation_steps: usize,
    /// Recompute activations in backward to save memory. Default false (reference, HF).
    pub gradient_checkpointing: bool,
    /// Total optimizer steps, overriding epochs; none is HF's -1. Default none (reference, HF).
    pub max_steps: Option<usize>,
    /// Accepted, not acted on: the final model is always saved. Default steps (reference fine_tune.py).
    pub save_strategy: String,
    /// Accepted, not acted on. Default 500 (reference, HF).
    pub save_steps: u64,
    /// Accepted, not acted on (from evaluation_strategy or HF's newer eval_strategy). Default steps (reference).
    pub evaluation_strategy: String,
    /// Accepted, not acted on. Default 500 (reference, HF).
    pub eval_steps: u64,
    /// AdamW decoupled weight decay of the parameters `decay_parameters` selects. Default 0.01 (reference
    /// fine_tune.py).
    pub weight_decay: f64,
    /// Linear warm-up as a fraction of total steps. Default 0 (reference, HF).
    pub warmup_ratio: f64,
    /// Warm-up steps; when above 0 it overrides warmup_ratio (HF rule). Default 0 (reference, HF).
    pub warmup_steps: usize,
    /// Learning-rate schedule. Default linear (reference, HF).
    pub lr_scheduler_type: LrSchedulerType,
    /// Optimizer steps between two loss records. Default 10 (reference fine_tune.py).
    pub logging_steps: usize,
    /// Accepted, not acted on. Default true (reference).
    pub do_train: bool,
    /// Accepted, not acted on. Default true (reference).
    pub do_eval: bool,
    /// Experiment trackers: mlflow, tensorboard, all or none (`crate::track`); wandb and HF's other integrations
    /// are skipped with a warning. Default ["none"] (reference).
    pub report_to: Vec<String>,
    /// Name of the SFT run; in `stasc run` the loop sets it. Default experiment (reference).
    pub run_name: String,
    /// The MLflow experiment, unless MLFLOW_EXPERIMENT_NAME is set. Default none (experiment "stasc").
    pub project_name: Option<String>,
    /// Seed of shuffling, dropout and LoRA init. Default 42 (HF).
    pub seed: u64,
    /// Accepted, not acted on (autocast flag; weights already carry the dtype). Default false (HF).
    pub bf16: bool,
    /// Accepted, not acted on. Default false (HF).
    pub fp16: bool,
    /// Global gradient-norm clip; 0 disables. Default 1.0 (HF).
    pub max_grad_norm: f64,
    /// AdamW beta1. Default 0.9 (HF).
    pub adam_beta1: f64,
    /// AdamW beta2. Default 0.999 (HF).
    pub adam_beta2: f64,
    /// AdamW epsilon. Default 1e-8 (HF).
    pub adam_epsilon: f64,
    /// Whole-step (true) or per-rank (false) loss normalisation across data-parallel ranks; unset = the protocol's
    /// default (stasc_config `protocol`: stasc -> true, paper -> false).
    pub average_tokens_across_devices: Option<bool>,
    /// Which parameters weight decay applies to: `names` (no decay on biases and norm weights) or
    /// `transformers_4_47_1` (as that version grouped them: Qwen2 and Phi-3 norm weights decayed); unset = the
    /// protocol's default (stasc_config `protocol`: stasc -> names, paper -> transformers_4_47_1).
    pub decay_parameters: Option<DecayParameters>,
    /// Ours: run a step's examples packed into as few forward/backward passes as `max_tokens_per_pass` allows,
    /// without padding (false: one padded pass per micro-batch, as HF). Default true.
    pub packing: bool,
    /// Ours: the memory budget of one packed pass, in tokens (an example longer than it runs alone). Default 8192.
    pub max_tokens_per_pass: usize,
    /// Ours: data-parallel workers sum each decoder layer's gradients while backward goes on (false: one sum after
    /// backward). The sums are the same to the last bit. Default false: backward then runs layer by layer, whose
    /// extra host work cost 10-20% on two H200s at the reference's settings, where the host bounds a step.
    pub overlap_grad_sums: bool,
    /// Ours: data-parallel workers each keep and update 1/workers of the AdamW state, then gather the weights
    /// (ZeRO stage 1; false: every worker updates everything). The same update; the clipping norm is summed from
    /// the workers' parts (rounding). Default true.
    pub shard_optimizer_state: bool,
}

/// The resolved `peft` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeftArgs {
    /// Train LoRA adapters instead of all weights. Default false (reference).
    pub use_lora: bool,
    /// LoRA rank r. Default 8 (reference).
    pub lora_rank: usize,
    /// LoRA alpha (scale alpha / r). Default 16 (reference).
    pub lora_alpha: usize,
    /// Dropout on the LoRA input. Default 0.1 (reference).
    pub lora_dropout: f64,
    /// Module names (last path component, e.g. q_proj) that get adapters. Default none; required with use_lora.
    pub lora_target_modules: Vec<String>,
    /// DoRA: weight-decomposed LoRA (needs use_lora). Default false (reference).
    pub dora: bool,
}
