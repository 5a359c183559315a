//! Training throughput on random token data, measured through the real training loop (micro-batches, LM head and
//! loss, clipping, AdamW): a fixed batch x sequence shape comparable with scripts/bench/hf_baseline.py's training
//! step, and a "realistic" set of variable-length chats with the reference hyperparameters, with and without length
//! grouping; and data-parallel throughput over several devices ([`measure_parallel`]).

use tch::{Device, Kind};

use super::batching::SplitMix64;
use super::device_memory::cuda_used_bytes;
use super::error::TrainError;
use super::log::StepRecord;
use super::tokenize::{TokenizedExample, IGNORE_INDEX};
use super::trainer::{train_examples, train_replica, Hyperparameters, LoopSummary, StepCallback, Worker};
use crate::config::choices::DecayParameters;
use crate::config::LrSchedulerType;
use crate::dist::{run_workers, transport_for, Group, Topology};
use crate::model::CausalLm;

/// H100 SXM dense bf16 peak, FLOP/s (the default MFU denominator).
pub const H100_BF16_PEAK_FLOPS: f64 = 989e12;

/// One measured run.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Real tokens per second over the timed steps.
    pub tokens_per_s: f64,
    /// Optimiser steps timed.
    pub steps_timed: usize,
    /// Highest GPU memory in use after a step (context + allocator reserve), when on CUDA.
    pub peak_bytes: Option<u64>,
    /// Tokens including padding over real tokens.
    pub padding_overhead: f64,
    /// Final training loss (a sanity check that it trained).
    pub last_loss: f64,
    /// The loss of every step, warm-up included.
    pub losses: Vec<f64>,
}

/// Model parameters (tied embeddings counted once).
pub fn parameter_count(model: &CausalLm) -> i64 {
    model.named_weights().values().map(|t| t.numel() as i64).sum()
}

/// Model FLOPs utilisation: 6 * params * tokens/s over the peak (attention FLOPs not counted, as usual).
pub fn mfu(params: i64, tokens_per_s: f64, peak_flops: f64) -> f64 {
    6.0 * params as f64 * tokens_per_s / peak_flops
}

/// `n` random examples with lengths uniform in `lengths`, labels on the last `label_fraction` of each.
pub fn random_examples(
    n: usize,
    lengths: std::ops::RangeInclusive<usize>,
    vocab: i64,
    label_fraction: f64,
    seed: u64,
) -> Vec<TokenizedExample> {
    let mut rng = SplitMix64::new(seed);
    let low = 100.min(vocab / 2);
    (0..n)
        .map(|_| {
            let len = lengths.start() + rng.below(lengths.end() - lengths.start() + 1);
            let input_ids: Vec<i64> = (0..len).map(|_| low + rng.below((vocab - low) as usize) as i64).collect();
            let first_label = len - ((len as f64 * label_fraction).round() as usize).clamp(1, len);
            let labels =
                input_ids.iter().enumerate().map(|(i, &t)| if i >= first_label { t } else { IGNORE_INDEX }).collect();
            TokenizedExample { input_ids, labels }
        })
        .collect()
}

/// Runs `examples` through the training loop and times every step after the first `warmup`.
pub fn measure(
    model: &mut CausalLm,
    examples: &[TokenizedExample],
    hp: &Hyperparameters,
    warmup: usize,
) -> Result<Throughput, TrainError> {
    let mut peak: Option<u64> = None;
    let summary = train_examples(model, None, examples, 0, hp, &mut |_| {
        if let Some(used) = cuda_used_bytes() {
            peak = Some(peak.map_or(used, |p| p.max(used)));
        }
        Ok(())
    })?;
    throughput(&summary, summary.padded_tokens, warmup, peak)
}

/// The throughput of the steps of `summary` after the first `warmup`, with `padded` tokens over all workers.
fn throughput(
    summary: &LoopSummary,
    padded: usize,
    warmup: usize,
    peak: Option<u64>,
) -> Result<Throughput, TrainError> {
    let timed = &summary.steps[warmup.min(summary.steps.len())..];
    if timed.is_empty() {
        return Err(TrainError::Invalid(format!(
            "only {} steps ran, none left after {warmup} warm-up steps",
            summary.steps.len()
        )));
    }
    let tokens: usize = timed.iter().map(|s| s.tokens).sum();
    let seconds: f64 = timed.iter().map(|s| s.seconds).sum();
    Ok(Throughput {
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        steps_timed: timed.len(),
        peak_bytes: peak,
        padding_overhead: padded as f64 / summary.tokens.max(1) as f64,
        last_loss: summary.steps.last().map_or(f64::NAN, |s| s.loss),
        losses: summary.steps.iter().map(|s| s.loss).collect(),
    })
}

/// Runs `examples` data-parallel on `topology` (`hp.data_parallel_ranks` is set from it), every worker building
/// its replica with `make(device)`, and times every step after the first `warmup`; a step's time is the job's (it
/// ends after the gradient sum). Returns the throughput and every step's record. Peak memory is worker 0's device.
pub fn measure_parallel(
    make: &(dyn Fn(Device) -> Result<CausalLm, TrainError> + Sync),
    examples: &[TokenizedExample],
    hp: &Hyperparameters,
    topology: &Topology,
    warmup: usize,
) -> Result<(Throughput, Vec<StepRecord>), TrainError> {
    let group = Group::new(&topology.devices, transport_for(&topology.devices))?;
    let hp = Hyperparameters { data_parallel_ranks: topology.data_parallel_ranks, ..hp.clone() };
    let mut peak: Option<u64> = None;
    let mut on_step = |_: &StepRecord| {
        if let Some(used) = cuda_used_bytes() {
            peak = Some(peak.map_or(used, |p| p.max(used)));
        }
        Ok(())
    };
    let summaries = {
        let callback: StepCallback<'_> = std::sync::Mutex::new(&mut on_step);
        // Replicas are built one at a time: random weights draw from the global generator.
        let init = std::sync::Mutex::new(());
        run_workers(&group, |w| {
            let mut model = {
                let _one_at_a_time = init.lock().unwrap_or_else(|p| p.into_inner());
                make(topology.devices[w])?
            };
            let worker = Worker { group: &group, index: w, topology };
            train_replica(&mut model, None, examples, 0, &hp, &worker, Some(&callback))
        })?
    };
    let padded: usize = summaries.iter().map(|s| s.padded_tokens).sum();
    let summary = summaries.into_iter().next().expect("one worker at least");
    Ok((throughput(&summary, padded, warmup, peak)?, summary.steps))
}

/// Hyperparameters of the fixed-shape benchmark: hf_baseline.py's step (AdamW lr 1e-5, weight decay 0.1, every
/// position a target) plus HF Trainer's clipping at 1.0, one micro-batch per step.
pub fn fixed_shape_hyperparameters(batch: usize, steps: usize, gradient_checkpointing: bool) -> Hyperparameters {
    Hyperparameters {
        learning_rate: 1e-5,
        num_train_epochs: 1.0,
        max_steps: Some(steps),
        per_device_train_batch_size: batch,
        gradient_accumulation_steps: 1,
        weight_decay: 0.1,
        decay_parameters: DecayParameters::Names,
        warmup_ratio: 0.0,
        warmup_steps: 0,
        lr_scheduler_type: LrSchedulerType::Constant,
        max_grad_norm: 1.0,
        adam_beta1: 0.9,
        adam_beta2: 0.999,
        adam_epsilon: 1e-8,
        seed: 0,
        gradient_checkpointing,
        group_by_length: false,
        data_parallel_ranks: 1,
        average_tokens_across_devices: true,
        packing: true,
        max_tokens_per_pass: 8192,
        overlap_grad_sums: false,
        sums_in_graphs: super::graphed::sums_in_graphs(),
        shard_optimizer_state: true,
    }
}

/// The reference fine_tune.yaml's hyperparameters (lr 1e-4, 1 epoch, batch 2, no accumulation, weight decay 0.1,
/// warm-up ratio 0.03, cosine), optionally capped at `max_steps`.
pub fn reference_hyperparameters(group_by_length: bool, max_steps: Option<usize>) -> Hyperparameters {
    Hyperparameters {
        learning_rate: 1e-4,
        max_steps,
        per_device_train_batch_size: 2,
        warmup_ratio: 0.03,
        lr_scheduler_type: LrSchedulerType::Cosine,
        seed: 42,
        group_by_length,
        ..fixed_shape_hyperparameters(2, 0, false)
    }
}

/// The reference's fine-tuning settings (configs/fine_tune.yaml with accelerate's `num_processes: 2`, under the
/// paper protocol): lr 7e-6, one example per device, 4 accumulation steps, 2 ranks (a global batch of 8),
/// per-rank loss normalisation, transformers 4.47.1's decay groups, warm-up ratio 0.03, cosine, clipping at 1.0;
/// with length grouping as `stasc run` trains, and `packing` on or off.
pub fn reference_settings(packing: bool, max_tokens_per_pass: usize, max_steps: Option<usize>) -> Hyperparameters {
    Hyperparameters {
        learning_rate: 7e-6,
        max_steps,
        gradient_accumulation_steps: 4,
        decay_parameters: DecayParameters::Transformers4_47_1,
        warmup_ratio: 0.03,
        lr_scheduler_type: LrSchedulerType::Cosine,
        seed: 42,
        group_by_length: true,
        data_parallel_ranks: 2,
        average_tokens_across_devices: false,
        packing,
        max_tokens_per_pass,
        ..fixed_shape_hyperparameters(1, 0, false)
    }
}

/// The largest and the mean relative difference of two runs' step losses, over the steps both ran.
pub fn loss_difference(a: &[f64], b: &[f64]) -> (f64, f64) {
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(f64::MIN_POSITIVE)).collect();
    let max = diffs.iter().copied().fold(0.0, f64::max);
    (max, diffs.iter().sum::<f64>() / diffs.len().max(1) as f64)
}

/// Formats bytes as GiB for reports ("n/a" off CUDA).
pub fn gib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_string(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
}

/// Whether `model` trains in a reduced precision (bf16/f16), for report lines.
pub fn precision(model: &CausalLm) -> &'static str {
    match model.kind() {
        Kind::BFloat16 => "bf16",
        Kind::Half => "f16",
        _ => "f32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_examples_are_seeded_and_labelled_at_the_end() {
        let a = random_examples(50, 20..=40, 300, 0.25, 9);
        assert_eq!(a, random_examples(50, 20..=40, 300, 0.25, 9));
        assert!(a.iter().all(|e| (20..=40).contains(&e.len())));
        assert!(a.iter().all(|e| e.input_ids.iter().all(|&t| (100..300).contains(&t))));
        let e = &a[0];
        let first = e.labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
        assert!(e.labels[first..].iter().all(|&l| l != IGNORE_INDEX));
        assert_eq!(e.len() - first, (e.len() as f64 * 0.25).round() as usize);
    }

    #[test]
    fn reference_settings_take_a_global_batch_of_eight() {
        let hp = reference_settings(true, 4096, None);
        assert_eq!(hp.per_device_train_batch_size * hp.micro_batches_per_step(), 8);
        assert!(!hp.average_tokens_across_devices && hp.packing && hp.max_tokens_per_pass == 4096);
    }

    #[test]
    fn loss_differences_are_relative_to_the_second_run() {
        let (max, mean) = loss_difference(&[1.1, 2.0, 3.0], &[1.0, 2.0, 4.0]);
        assert!((max - 0.25).abs() < 1e-12 && (mean - 0.35 / 3.0).abs() < 1e-12, "{max} {mean}");
    }

    #[test]
    fn mfu_formula() {
        assert!((mfu(1_500_000_000, 36_000.0, H100_BF16_PEAK_FLOPS) - 0.3276).abs() < 1e-3);
    }
}
