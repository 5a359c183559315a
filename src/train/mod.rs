//! Supervised fine-tuning (SFT) as the STaSC loop needs it: chats tokenised with the model's chat template and loss
//! on the last assistant message only, HF Trainer's optimiser, schedule and loss normalisation, length-grouped
//! batching, gradient checkpointing, LoRA/DoRA in PEFT's format, and HF checkpoints transformers can load.
//!
//! [`fine_tune`] is the whole job on a model directory (what `stasc train` and the loop's backend call), on one
//! device or data-parallel over several (one worker thread and model replica per device, see [`trainer`]);
//! [`trainer::train_examples`] is the loop on an already-loaded model and tokenised examples (benchmarks, parity).

pub mod batching;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod device_memory;
pub mod error;
pub mod flat;
pub mod graphed;
pub mod log;
pub mod lora;
pub mod optim;
pub mod overlap;
pub mod packed;
pub mod packed_attention;
pub mod parity;
pub mod plan;
mod profile;
pub mod readback;
pub mod schedule;
pub mod step;
pub mod tokenize;
pub mod trainer;

use std::path::{Path, PathBuf};

pub use error::TrainError;
pub use log::StepRecord;
pub use tokenize::{TokenizeStats, TokenizedExample};
pub use trainer::{Hyperparameters, LoopSummary};

use crate::config::{Dtype, FineTuneConfig};
use crate::dist::{run_workers, transport_for, Group, Topology};
use crate::model::{load_tokenizer, load_weights, CausalLm, DtypeSpec, LoadOptions, ModelDevice};
use crate::prompt::ChatMessage;
use lora::{LoraAdapters, LoraSpec};

/// Choices of a fine-tuning run that fine_tune.yaml does not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Where to train (auto = first CUDA device, else CPU) when `topology` is none.
    pub device: ModelDevice,
    /// Data-parallel ranks and devices; none = one rank on `device`.
    pub topology: Option<Topology>,
    /// Batch examples of similar length together (HF `group_by_length`). Default true.
    pub group_by_length: bool,
    /// With LoRA: also write the merged full model at the top of the output (adapter files go to `adapter/`).
    /// Without it the output is a PEFT adapter directory. Default true (the loop loads full models).
    pub merge_lora: bool,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            device: ModelDevice::Auto,
            topology: None,
            group_by_length: true,
            merge_lora: true,
            progress: true,
        }
    }
}

/// What a fine-tuning run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// One record per optimiser step (also in `out/train_log.jsonl`).
    pub steps: Vec<StepRecord>,
    /// Real (unpadded) tokens per second over the run.
    pub tokens_per_s: f64,
    /// Tokens including padding, over real tokens (1.0 = no padding).
    pub padding_overhead: f64,
    /// Tokenisation and truncation counts.
    pub data: TokenizeStats,
    /// Trained elements (all weights, or the adapters).
    pub trainable_params: i64,
    /// The checkpoint directory written.
    pub out_dir: PathBuf,
    /// Wall seconds of the run's stages.
    pub stage_seconds: StageSeconds,
}

/// Wall seconds of a fine-tuning run's stages, in order (a run's `iter_<n>/train.json` keeps them).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageSeconds {
    /// Templating and encoding every example.
    pub tokenize: f64,
    /// The weights onto the first device.
    pub load: f64,
    /// The optimiser steps.
    pub steps: f64,
    /// Writing the checkpoint.
    pub save: f64,
}

impl std::fmt::Display for StageSeconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let StageSeconds { tokenize, load, steps, save } = self;
        write!(f, "tokenize {tokenize:.1} s, load {load:.1} s, steps {steps:.1} s, save {save:.1} s")
    }
}

impl TrainReport {
    /// The loss of every optimiser step.
    pub fn losses(&self) -> Vec<f64> {
        self.steps.iter().map(|s| s.loss).collect()
    }
}

/// The weight dtype fine_tune.yaml's `model.torch_dtype` asks for.
pub fn dtype_spec(dtype: Dtype) -> DtypeSpec {
    match dtype {
        Dtype::Auto => DtypeSpec::Auto,
        Dtype::F32 => DtypeSpec::F32,
        Dtype::Bf16 => DtypeSpec::Bf16,
        Dtype::F16 => DtypeSpec::F16,
    }
}

/// The LoRA settings of `cfg`, when `peft.use_lora` is on.
pub fn lora_spec(cfg: &FineTuneConfig) -> Option<LoraSpec> {
    let p = &cfg.peft;
    p.use_lora.then(|| LoraSpec {
        rank: p.lora_rank,
        alpha: p.lora_alpha,
        dropout: p.lora_dropout,
        target_modules: p.lora_target_modules.clone(),
        dora: p.dora,
    })
}

/// Fine-tunes the HF model at `base_dir` on `examples` (each ending with the assistant message that carries the
/// loss) with the hyperparameters of `cfg`, and writes the checkpoint and train_log.jsonl to `out_dir`. With
/// several devices, every device trains a replica on its ranks' micro-batches and the gradients are summed.
pub fn fine_tune(
    base_dir: &Path,
    examples: &[Vec<ChatMessage>],
    cfg: &FineTuneConfig,
    opts: &TrainOptions,
    out_dir: &Path,
) -> Result<TrainReport, TrainError> {
    let topology = match &opts.topology {
        Some(t) => t.clone(),
        None => Topology::single(opts.device.resolve()?),
    };
    let group = Group::new(&topology.devices, transport_for(&topology.devices))?;
    let start = std::time::Instant::now();
    let tokenizer = load_tokenizer(base_dir)?;
    let (data, stats) = tokenize::tokenize_all(&tokenizer, examples, cfg.data.block_size, cfg.data.truncation)?;
    let tokenize_seconds = start.elapsed().as_secs_f64();
    let mut hp = Hyperparameters::from_training_args(&cfg.training, opts.group_by_length);
    hp.data_parallel_ranks = topology.data_parallel_ranks;
    let pad_id = tokenizer.pad_token_id().or(tokenizer.eos_token_ids().first().copied()).unwrap_or(0) as i64;
    let lora_spec = lora_spec(cfg);
    let partial = checkpoint::begin(out_dir)?;
    let mut log = log::TrainLog::create(&partial.join("train_log.jsonl"))?;
    let bar = log::progress_bar(hp.plan(data.len()).total_steps, opts.progress);
    let mut on_step = |r: &StepRecord| {
        log::show_step(&bar, r);
        log.append(r)
    };
    let callback: trainer::StepCallback<'_> = std::sync::Mutex::new(&mut on_step);
    // Replicas are built one at a time: adapter initialisation draws from the global generator.
    let init = std::sync::Mutex::new(());
    // Each worker's summary with the seconds it spent loading its replica and saving the checkpoint.
    let summaries = run_workers(&group, |w| -> Result<(LoopSummary, f64, f64), TrainError> {
        let loading = std::time::Instant::now();
        let load = LoadOptions {
            device: ModelDevice::from(topology.devices[w]),
            dtype: dtype_spec(cfg.model.torch_dtype),
            // Room for micro-batch lengths rounded up to the CUDA padding multiple.
            max_model_len: Some(cfg.data.block_size.next_multiple_of(batching::CUDA_PAD_MULTIPLE) as i64),
        };
        let (mut model, lora) = {
            let _one_at_a_time = init.lock().unwrap_or_else(|p| p.into_inner());
            tch::manual_seed(hp.seed as i64);
            let mut model = load_weights(base_dir, &load)?;
            let lora = match &lora_spec {
                Some(spec) => Some(LoraAdapters::attach(&mut model, spec)?),
                None => None,
            };
            (model, lora)
        };
        if w == 0 {
            let bytes = checkpoint_bytes(&model, lora.as_ref(), opts.merge_lora);
            checkpoint::ensure_free_space(&partial, bytes, "the checkpoint written after training")?;
        }
        let load_seconds = loading.elapsed().as_secs_f64();
        let worker = trainer::Worker { group: &group, index: w, topology: &topology };
        let summary = trainer::train_replica(&mut model, lora.as_ref(), &data, pad_id, &hp, &worker, Some(&callback))?;
        let saving = std::time::Instant::now();
        if w == 0 {
            write_checkpoint(base_dir, &partial, &model, lora.as_ref(), opts.merge_lora)?;
        }
        Ok((summary, load_seconds, saving.elapsed().as_secs_f64()))
    })?;
    bar.finish_and_clear();
    let finishing = std::time::Instant::now();
    checkpoint::finish(&partial, out_dir)?;
    let padded_tokens: usize = summaries.iter().map(|(s, _, _)| s.padded_tokens).sum();
    let (summary, load_seconds, save_seconds) = summaries.into_iter().next().expect("one worker at least");
    let stage_seconds = StageSeconds {
        tokenize: tokenize_seconds,
        load: load_seconds,
        steps: summary.seconds,
        save: save_seconds + finishing.elapsed().as_secs_f64(),
    };
    Ok(TrainReport {
        tokens_per_s: summary.tokens_per_s(),
        padding_overhead: padded_tokens as f64 / summary.tokens.max(1) as f64,
        steps: summary.steps,
        data: stats,
        trainable_params: summary.trainable_params,
        out_dir: out_dir.to_path_buf(),
        stage_seconds,
    })
}

/// Writes the trained model (full weights, or adapters and optionally the merged model) into `partial`.
fn write_checkpoint(
    base_dir: &Path,
    partial: &Path,
    model: &CausalLm,
    lora: Option<&LoraAdapters>,
    merge_lora: bool,
) -> Result<(), TrainError> {
    match lora {
        None => {
            let weights = sorted(model.named_weights());
            checkpoint::write_model_dir(base_dir, partial, &weights)?;
        }
        Some(adapters) => {
            let config = adapters.adapter_config(&base_dir.display().to_string());
            let tensors = adapters.peft_state_dict();
            if merge_lora {
                let mut weights = model.named_weights();
                for (name, merged) in adapters.merged_weights(model)? {
                    weights.insert(name, merged);
                }
                checkpoint::write_model_dir(base_dir, partial, &sorted(weights))?;
                checkpoint::write_adapter_dir(&partial.join("adapter"), &config, &tensors)?;
            } else {
                checkpoint::write_adapter_dir(partial, &config, &tensors)?;
                checkpoint::copy_base_files(base_dir, partial)?;
            }
        }
    }
    Ok(())
}

/// What [`write_checkpoint`] will write, in bytes: the weights at their dtype, the adapters, or both.
fn checkpoint_bytes(model: &CausalLm, lora: Option<&LoraAdapters>, merge_lora: bool) -> u64 {
    let weights = || checkpoint::tensor_bytes(model.named_weights().values());
    match lora {
        None => weights(),
        Some(adapters) => {
            let adapter_bytes = checkpoint::tensor_bytes(adapters.peft_state_dict().iter().map(|(_, t)| t));
            adapter_bytes + if merge_lora { weights() } else { 0 }
        }
    }
}

fn sorted(map: std::collections::HashMap<String, tch::Tensor>) -> Vec<(String, tch::Tensor)> {
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
