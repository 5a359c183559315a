//! `stasc bench train` and `stasc bench train-parity`: training throughput printed like
//! scripts/bench/hf_baseline.py ("stasc train bs=B seq=S: X tok/s, peak Y GiB") with MFU, the realistic
//! variable-length run with and without length grouping, and the HF Trainer parity check on a recorded case.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::model::{load_weights, CausalLm, DeviceSpec, DtypeSpec, LoadOptions, ModelConfig};
use crate::train::bench::{
    fixed_shape_hyperparameters, gib, measure, mfu, parameter_count, precision, random_examples,
    reference_hyperparameters, H100_BF16_PEAK_FLOPS,
};
use crate::train::parity::run_case;

/// Arguments of `stasc bench train`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("weights").required(true).args(["model", "config_json"])))]
pub struct TrainArgs {
    /// HF model directory to load.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A config.json alone: random weights made on the device.
    #[arg(long)]
    pub config_json: Option<PathBuf>,
    /// Sequences per micro-batch (default 16; in --realistic mode the reference's 2).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence (fixed-shape mode).
    #[arg(long, default_value_t = 512)]
    pub seq: usize,
    /// Timed optimiser steps (fixed-shape mode; in --realistic mode, a cap on the steps of each run).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Untimed warm-up steps before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// 2,000 chats of 200-600 tokens (seeded random ids, loss on the last third) with the reference
    /// hyperparameters, run with and without length grouping.
    #[arg(long)]
    pub realistic: bool,
    /// Recompute activations in backward.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Peak FLOP/s for MFU (default: H100 SXM dense bf16).
    #[arg(long, default_value_t = H100_BF16_PEAK_FLOPS)]
    pub peak_flops: f64,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeSpec,
}

/// Arguments of `stasc bench train-parity`.
#[derive(Debug, clap::Args)]
pub struct TrainParityArgs {
    /// Parity directory written by scripts/parity/train_parity.py and train_parity_ddp.py (model/, CASE.json,
    /// CASE.safetensors).
    #[arg(long)]
    pub dir: PathBuf,
    /// Cases to run.
    #[arg(long, value_delimiter = ',', default_value = "full,lora,dora,ddp_per_rank,ddp_whole_step,ddp_decay")]
    pub cases: Vec<String>,
    /// Also write each trained model and its logits to OUT/CASE/ (for the transformers load check).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
}

fn load(a: &TrainArgs, max_len: usize) -> anyhow::Result<CausalLm> {
    let opts = LoadOptions { device: a.device, dtype: a.dtype, max_model_len: Some(max_len as i64) };
    match (&a.model, &a.config_json) {
        (Some(dir), _) => load_weights(dir, &opts).with_context(|| format!("loading {}", dir.display())),
        (None, Some(path)) => {
            CausalLm::random(ModelConfig::from_file(path)?, &opts, a.seed).context("building a random model")
        }
        (None, None) => anyhow::bail!("give --model or --config-json"),
    }
}

/// Runs `stasc bench train`.
pub fn run_train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let max_len = if a.realistic { 600 } else { a.seq }.next_multiple_of(crate::train::batching::CUDA_PAD_MULTIPLE);
    let mut model = load(&a, max_len)?;
    let params = parameter_count(&model);
    let vocab = model.config().vocab_size;
    eprintln!(
        "{:?} on {:?} ({}), {} parameters, gradient checkpointing {}",
        model.config().architecture,
        model.device(),
        precision(&model),
        params,
        a.gradient_checkpointing
    );
    if !a.realistic {
        let (batch, steps) = (a.batch.unwrap_or(16), a.steps.unwrap_or(6));
        let mut hp = fixed_shape_hyperparameters(batch, a.warmup + steps, a.gradient_checkpointing);
        hp.seed = a.seed;
        let examples = random_examples(batch * (a.warmup + steps), a.seq..=a.seq, vocab, 1.0, a.seed);
        let t = measure(&mut model, &examples, &hp, a.warmup)?;
        println!(
            "stasc train bs={} seq={}: {:.0} tok/s, peak {}, MFU {:.1}%",
            batch,
            a.seq,
            t.tokens_per_s,
            gib(t.peak_bytes),
            100.0 * mfu(params, t.tokens_per_s, a.peak_flops)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let examples = random_examples(2000, 200..=600, vocab, 1.0 / 3.0, a.seed);
    // An untimed run first, so that neither timed run pays for first-seen shapes alone.
    let batch = a.batch.unwrap_or(2);
    let hp_for = |group: bool, steps: Option<usize>| {
        let mut hp = reference_hyperparameters(group, steps);
        hp.per_device_train_batch_size = batch;
        hp.gradient_checkpointing = a.gradient_checkpointing;
        hp
    };
    measure(&mut model, &examples, &hp_for(false, Some(a.warmup + 20)), a.warmup)?;
    let mut rates = Vec::new();
    for group in [false, true] {
        let hp = hp_for(group, a.steps);
        let t = measure(&mut model, &examples, &hp, a.warmup)?;
        println!(
            "stasc train realistic (2000 chats, 200-600 tokens, bs={batch}, length grouping {}): {:.0} tok/s, \
             padding x{:.3}, peak {}, MFU {:.1}%, {} steps timed, last loss {:.3}",
            if group { "on" } else { "off" },
            t.tokens_per_s,
            t.padding_overhead,
            gib(t.peak_bytes),
            100.0 * mfu(params, t.tokens_per_s, a.peak_flops),
            t.steps_timed,
            t.last_loss
        );
        rates.push(t.tokens_per_s);
    }
    println!("stasc train realistic bs={batch}: length grouping x{:.2} tokens/s", rates[1] / rates[0]);
    Ok(ExitCode::SUCCESS)
}

/// Runs `stasc bench train-parity`.
pub fn run_train_parity(a: TrainParityArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for case in &a.cases {
        let out = a.out.as_ref().map(|o| o.join(case));
        let report = run_case(&a.dir, case, a.device, out.as_deref()).with_context(|| format!("parity case {case}"))?;
        for line in &report.lines {
            println!("{case}: {line}");
        }
        for f in &report.failures {
            println!("{case}: FAIL {f}");
        }
        println!("{case}: {}", if report.failures.is_empty() { "PASS" } else { "FAIL" });
        failed |= !report.failures.is_empty();
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
