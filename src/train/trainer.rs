//! The training loop over tokenised examples: HF Trainer's epoch/step structure (seeded shuffle per epoch, micro-
//! batches accumulated into optimiser steps, the last step of an epoch taking what is left, stop at the total step
//! count), the loss normalised by the step's label tokens, clipping, AdamW and the learning-rate schedule.

use std::time::Instant;

use super::batching::{epoch_batches, MicroBatch, CUDA_PAD_MULTIPLE};
use super::error::TrainError;
use super::log::StepRecord;
use super::lora::LoraAdapters;
use super::optim::{AdamW, AdamWConfig};
use super::schedule::{LrSchedule, StepPlan};
use super::step::{forward_backward, PassOptions};
use super::tokenize::TokenizedExample;
use crate::config::{LrSchedulerType, TrainingArgs};
use crate::model::CausalLm;

/// The hyperparameters the loop uses (HF `TrainingArguments` names), plus length grouping.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyperparameters {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Passes over the data (when max_steps is none).
    pub num_train_epochs: f64,
    /// Total optimiser steps, overriding epochs.
    pub max_steps: Option<usize>,
    /// Examples per micro-batch.
    pub per_device_train_batch_size: usize,
    /// Micro-batches per optimiser step.
    pub gradient_accumulation_steps: usize,
    /// AdamW decoupled weight decay (decay group only).
    pub weight_decay: f64,
    /// Warm-up as a fraction of the total steps.
    pub warmup_ratio: f64,
    /// Warm-up steps (wins over the ratio when > 0).
    pub warmup_steps: usize,
    /// Decay after warm-up.
    pub lr_scheduler_type: LrSchedulerType,
    /// Global gradient-norm clip (0 = none).
    pub max_grad_norm: f64,
    /// AdamW beta1.
    pub adam_beta1: f64,
    /// AdamW beta2.
    pub adam_beta2: f64,
    /// AdamW eps.
    pub adam_epsilon: f64,
    /// Seed of shuffling, adapter init and dropout.
    pub seed: u64,
    /// Recompute activations in backward.
    pub gradient_checkpointing: bool,
    /// Batch examples of similar length together (HF `group_by_length`).
    pub group_by_length: bool,
}

impl Hyperparameters {
    /// The loop's settings from a resolved `training` section; `group_by_length` is stasc's own switch.
    pub fn from_training_args(t: &TrainingArgs, group_by_length: bool) -> Self {
        Hyperparameters {
            learning_rate: t.learning_rate,
            num_train_epochs: t.num_train_epochs,
            max_steps: t.max_steps,
            per_device_train_batch_size: t.per_device_train_batch_size,
            gradient_accumulation_steps: t.gradient_accumulation_steps,
            weight_decay: t.weight_decay,
            warmup_ratio: t.warmup_ratio,
            warmup_steps: t.warmup_steps,
            lr_scheduler_type: t.lr_scheduler_type,
            max_grad_norm: t.max_grad_norm,
            adam_beta1: t.adam_beta1,
            adam_beta2: t.adam_beta2,
            adam_epsilon: t.adam_epsilon,
            seed: t.seed,
            gradient_checkpointing: t.gradient_checkpointing,
            group_by_length,
        }
    }

    /// The step arithmetic for `examples` examples.
    pub fn plan(&self, examples: usize) -> StepPlan {
        StepPlan::new(
            examples,
            self.per_device_train_batch_size,
            self.gradient_accumulation_steps,
            self.num_train_epochs,
            self.max_steps,
        )
    }

    /// The learning-rate schedule for a run of `total_steps`.
    pub fn schedule(&self, total_steps: usize) -> LrSchedule {
        LrSchedule {
            kind: self.lr_scheduler_type,
            base_lr: self.learning_rate,
            warmup_steps: LrSchedule::warmup_steps(total_steps, self.warmup_steps, self.warmup_ratio),
            total_steps,
        }
    }
}

/// Totals of a finished loop.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSummary {
    /// One record per optimiser step.
    pub steps: Vec<StepRecord>,
    /// Real tokens trained on.
    pub tokens: usize,
    /// Tokens including padding.
    pub padded_tokens: usize,
    /// Wall time of all steps.
    pub seconds: f64,
    /// Trained elements.
    pub trainable_params: i64,
}

impl LoopSummary {
    /// Real tokens per second over the whole run.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// Trains `model` (all weights, or only `lora`'s adapters) on `examples`; `on_step` sees every step as it ends.
pub fn train_examples(
    model: &mut CausalLm,
    lora: Option<&LoraAdapters>,
    examples: &[TokenizedExample],
    pad_id: i64,
    hp: &Hyperparameters,
    on_step: &mut dyn FnMut(&StepRecord) -> Result<(), TrainError>,
) -> Result<LoopSummary, TrainError> {
    let mut params = match lora {
        Some(l) => l.named_parameters(),
        None => {
            model.var_store_mut().unfreeze();
            model.named_weights().into_iter().collect()
        }
    };
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let adam =
        AdamWConfig { beta1: hp.adam_beta1, beta2: hp.adam_beta2, eps: hp.adam_epsilon, weight_decay: hp.weight_decay };
    let mut opt = AdamW::new(params, adam)?;
    if let Some(l) = lora {
        l.set_training(true);
    }
    let plan = hp.plan(examples.len());
    let schedule = hp.schedule(plan.total_steps);
    let lengths: Vec<usize> = examples.iter().map(TokenizedExample::len).collect();
    let chunk = PassOptions::chunk_rows_for(model.config().vocab_size);
    let uses_dropout = lora.is_some_and(|l| l.spec.dropout > 0.0);
    let device = model.device();
    let pad_multiple = if device.is_cuda() { CUDA_PAD_MULTIPLE } else { 1 };
    let max_len = model.max_model_len() as usize;
    let mut summary =
        LoopSummary { steps: Vec::new(), tokens: 0, padded_tokens: 0, seconds: 0.0, trainable_params: opt.numel() };
    let ga = hp.gradient_accumulation_steps.max(1);
    let mut profile = Profile::from_env(device);
    'epochs: for epoch in 0..plan.epochs {
        let batches = epoch_batches(&lengths, hp.per_device_train_batch_size, hp.seed, epoch, hp.group_by_length);
        for group in batches.chunks(ga) {
            if summary.steps.len() >= plan.total_steps {
                break 'epochs;
            }
            let started = Instant::now();
            let step = summary.steps.len();
            profile.begin(step);
            let denominator: usize = group.iter().flatten().map(|&i| examples[i].num_targets()).sum();
            let (mut tokens, mut loss_sum): (usize, Option<tch::Tensor>) = (0, None);
            for (m, indices) in group.iter().enumerate() {
                let rows: Vec<&TokenizedExample> = indices.iter().map(|&i| &examples[i]).collect();
                let batch = MicroBatch::new(&rows, pad_id, pad_multiple, max_len, device)?;
                let opts = PassOptions {
                    gradient_checkpointing: hp.gradient_checkpointing,
                    head_chunk_rows: chunk,
                    dropout_seed: uses_dropout
                        .then(|| hp.seed.wrapping_mul(1_000_003).wrapping_add((step * ga + m) as u64)),
                };
                let loss = forward_backward(model, &batch, denominator.max(1) as f64, &opts)?;
                loss_sum = Some(match loss_sum {
                    None => loss,
                    Some(acc) => acc.f_add(&loss).map_err(TrainError::torch("summing losses"))?,
                });
                tokens += batch.tokens;
                summary.padded_tokens += batch.padded_tokens;
            }
            profile.mark(0);
            let norm = opt.clip_grad_norm(hp.max_grad_norm)?;
            profile.mark(1);
            let lr = schedule.lr(step);
            opt.step(lr)?;
            profile.mark(2);
            // One host sync per step: the loss and the norm.
            let loss = loss_sum.map_or(0.0, |l| l.double_value(&[])) / denominator.max(1) as f64;
            let grad_norm = norm.double_value(&[]);
            let seconds = started.elapsed().as_secs_f64();
            let record = StepRecord {
                step: step + 1,
                loss,
                lr,
                grad_norm,
                tokens_per_s: tokens as f64 / seconds.max(1e-9),
                tokens,
                seconds,
            };
            summary.tokens += tokens;
            summary.seconds += seconds;
            on_step(&record)?;
            summary.steps.push(record);
        }
    }
    if let Some(l) = lora {
        l.set_training(false);
    }
    profile.report(summary.steps.len());
    Ok(summary)
}

/// Steps left out of the profile (libtorch and cuBLAS initialise lazily during the first ones).
const PROFILE_SKIP: usize = 2;

/// Opt-in phase timing (`STASC_TRAIN_PROFILE=1`): synchronises the device after each phase of a step and prints
/// the mean time of forward+backward, clipping and the optimiser update when the loop ends. Costs the overlap of
/// host and device work, so timings with it on are not throughput numbers.
struct Profile {
    device: Option<tch::Device>,
    last: Instant,
    totals: [f64; 3],
}

impl Profile {
    fn from_env(device: tch::Device) -> Self {
        let on = std::env::var("STASC_TRAIN_PROFILE").is_ok_and(|v| v == "1");
        Profile { device: on.then_some(device), last: Instant::now(), totals: [0.0; 3] }
    }

    fn sync(&self) {
        if let Some(tch::Device::Cuda(i)) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    fn begin(&mut self, step: usize) {
        if step == PROFILE_SKIP {
            self.totals = [0.0; 3];
        }
        if self.device.is_some() {
            self.sync();
            self.last = Instant::now();
        }
    }

    /// Ends phase `i` (0 = forward+backward, 1 = clipping, 2 = update).
    fn mark(&mut self, i: usize) {
        if self.device.is_some() {
            self.sync();
            self.totals[i] += self.last.elapsed().as_secs_f64();
            self.last = Instant::now();
        }
    }

    fn report(&self, steps: usize) {
        let steps = steps.saturating_sub(PROFILE_SKIP);
        if self.device.is_some() && steps > 0 {
            let ms = |t: f64| 1e3 * t / steps as f64;
            eprintln!(
                "train profile over {steps} steps (ms/step): forward+backward {:.1}, clip {:.1}, update {:.1}",
                ms(self.totals[0]),
                ms(self.totals[1]),
                ms(self.totals[2])
            );
        }
    }
}
