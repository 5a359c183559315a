//! `stasc bench train-parallel` and `stasc bench allreduce`: the data-parallel trainer's speed-up over one device
//! at the same global batch (with the two runs' losses compared step by step), and the gradient sum's bandwidth
//! (NCCL, or the host-side sum) with a check of the result.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use tch::{Device, Kind, Tensor};

use crate::dist::nccl::Communicators;
use crate::dist::{device_name, run_workers, DistError, Group, Topology, Transport};
use crate::model::{load_weights, CausalLm, DtypeSpec, LoadOptions, ModelConfig, ModelDevice};
use crate::train::bench::{fixed_shape_hyperparameters, gib, measure_parallel, random_examples};
use crate::train::{Hyperparameters, TokenizedExample, TrainError};

/// Arguments of `stasc bench train-parallel`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("weights").required(true).args(["model", "config_json"])))]
pub struct TrainParallelArgs {
    /// HF model directory to load on every device.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A config.json alone: the same random weights made on every device.
    #[arg(long)]
    pub config_json: Option<PathBuf>,
    /// Sequences per micro-batch (per rank).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    pub seq: usize,
    /// Micro-batches per rank per optimiser step.
    #[arg(long, default_value_t = 1)]
    pub accumulation: usize,
    /// Timed optimiser steps.
    #[arg(long, default_value_t = 6)]
    pub steps: usize,
    /// Untimed warm-up steps before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Devices, comma separated (cuda:0,cuda:1; a device may repeat to run two workers on it). Default: every
    /// visible GPU.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<ModelDevice>,
    /// Data-parallel ranks (default: one per device).
    #[arg(long)]
    pub ranks: Option<usize>,
    /// Skip the one-device run (no speed-up or loss comparison then).
    #[arg(long)]
    pub no_baseline: bool,
    /// --realistic: variable-length examples at the reference's settings (configs/fine_tune.yaml: 1 x 4
    /// accumulation per rank, per-rank loss normalisation, packed passes) instead of the fixed --batch x --seq
    /// shape; --steps caps the steps.
    #[command(flatten)]
    pub examples: super::bench_train::RealisticArgs,
    /// Sum each layer's gradients during backward instead of all of them after it (fine_tune.yaml
    /// `training.overlap_grad_sums`).
    #[arg(long)]
    pub overlap: bool,
    /// Keep the whole optimiser state on every device instead of 1/devices of it (ZeRO stage 1).
    #[arg(long)]
    pub no_shard: bool,
    /// Also run the devices with the whole-buffer sum after backward and unsharded state (the trainer without
    /// overlap and sharding), in the same call: the speed-up the chosen --overlap / sharding bring.
    #[arg(long)]
    pub compare_unoverlapped: bool,
    /// Seed of the random weights and data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeSpec,
    /// Record the run on every device with libtorch's Kineto profiler and save the Chrome trace to this file
    /// (scripts/kernels/trace_host.py splits it per device and host thread).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

/// Arguments of `stasc bench allreduce`.
#[derive(Debug, clap::Args)]
pub struct AllReduceArgs {
    /// Devices, comma separated. Default: every visible GPU.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<ModelDevice>,
    /// MiB per device.
    #[arg(long, default_value_t = 256)]
    pub mib: usize,
    /// Timed sums.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// nccl (needs CUDA devices; one device runs a one-rank clique) or host.
    #[arg(long, default_value = "nccl")]
    pub transport: String,
    /// f32 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: DtypeSpec,
}

fn devices_or_all(given: &[ModelDevice]) -> anyhow::Result<Vec<Device>> {
    if given.is_empty() {
        let n = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
        anyhow::ensure!(n > 0, "no CUDA device is visible: name the devices with --devices");
        return Ok((0..n).map(Device::Cuda).collect());
    }
    given.iter().map(|d| d.resolve().map_err(anyhow::Error::from)).collect()
}

/// Runs `stasc bench train-parallel`.
pub fn run_train_parallel(a: TrainParallelArgs) -> anyhow::Result<ExitCode> {
    let devices = devices_or_all(&a.devices)?;
    let ranks = a.ranks.unwrap_or(devices.len());
    let vocab = {
        let probe = |len: usize| make_model(&a, devices[0], len);
        probe(a.seq).context("building the model")?.config().vocab_size
    };
    let (examples, mut hp, shape) = if a.examples.realistic {
        let (examples, source) = a.examples.examples(vocab, a.seed)?;
        let steps = a.steps.min(examples.len() / (4 * ranks)).max(1);
        let budget = a.examples.max_tokens_per_pass;
        let hp = crate::train::bench::reference_settings(true, budget, Some(a.warmup + steps));
        (examples, hp, format!("realistic ({source}; 1 x 4 accumulation per rank, packed)"))
    } else {
        let total_steps = a.warmup + a.steps;
        let mut hp = fixed_shape_hyperparameters(a.batch, total_steps, false);
        hp.gradient_accumulation_steps = a.accumulation;
        let n = a.batch * a.accumulation * ranks * total_steps;
        (random_examples(n, a.seq..=a.seq, vocab, 1.0, a.seed), hp, format!("bs={} seq={}", a.batch, a.seq))
    };
    hp.seed = a.seed;
    hp.overlap_grad_sums = a.overlap;
    hp.shard_optimizer_state = !a.no_shard;
    let longest = examples.iter().map(TokenizedExample::len).max().unwrap_or(1);
    let make = |device: Device| make_model(&a, device, longest);
    let parallel = Topology::new(ranks, devices.clone())?;
    let names: Vec<String> = devices.iter().map(|d| device_name(*d)).collect();
    eprintln!(
        "{ranks} ranks x {} sequences x {} accumulation = {} sequences a step; devices {}; gradient sums {}, \
         optimiser state {}",
        hp.per_device_train_batch_size,
        hp.gradient_accumulation_steps,
        hp.per_device_train_batch_size * hp.gradient_accumulation_steps * ranks,
        names.join(","),
        match (hp.overlap_grad_sums, hp.sums_in_graphs) {
            (true, true) => "overlapped with backward, recorded in the passes' CUDA graphs (STASC_GRAPHED_SUMS=1)",
            (true, false) => "overlapped with backward",
            (false, _) => "after backward",
        },
        if hp.shard_optimizer_state { "sharded" } else { "whole on every device" }
    );
    let line = |label: &str, t: &crate::train::bench::Throughput| {
        format!(
            "stasc train-parallel {shape} ranks={ranks} {label}: {:.0} tok/s, peak {} on the first device, {} steps \
             timed",
            t.tokens_per_s,
            gib(t.peak_bytes),
            t.steps_timed
        )
    };
    let (par, par_steps) =
        crate::ffi::profiled(a.trace.as_deref(), || measure_parallel(&make, &examples, &hp, &parallel, a.warmup))
            .context("--trace")??;
    println!("{}", line(&format!("on {}", names.join(",")), &par));
    if let Some(graphs) = crate::train::graphed::report() {
        println!("{graphs}");
    }
    if a.compare_unoverlapped {
        let before = Hyperparameters { overlap_grad_sums: false, shard_optimizer_state: false, ..hp.clone() };
        let (old, old_steps) = measure_parallel(&make, &examples, &before, &parallel, a.warmup)?;
        println!("{}", line(&format!("on {}, one sum after backward, unsharded", names.join(",")), &old));
        let (max, _) = crate::train::bench::loss_difference(
            &par_steps.iter().map(|s| s.loss).collect::<Vec<_>>(),
            &old_steps.iter().map(|s| s.loss).collect::<Vec<_>>(),
        );
        println!(
            "stasc train-parallel overlap and sharding: x{:.2} tokens/s over one sum after backward; losses differ by \
             at most {max:.2e} relative",
            par.tokens_per_s / old.tokens_per_s
        );
    }
    if a.no_baseline {
        return Ok(ExitCode::SUCCESS);
    }
    let single = Topology::new(ranks, vec![devices[0]])?;
    let (one, one_steps) = measure_parallel(&make, &examples, &hp, &single, a.warmup)?;
    println!("{}", line(&format!("on {}", names[0]), &one));
    if let Some(graphs) = crate::train::graphed::report() {
        println!("{graphs}");
    }
    let worst = par_steps
        .iter()
        .zip(&one_steps)
        .map(|(p, o)| (p.loss - o.loss).abs() / o.loss.abs().max(1e-12))
        .fold(0.0f64, f64::max);
    println!(
        "stasc train-parallel speed-up x{:.2} on {} devices over 1 (same global batch); losses of {} steps differ by \
         at most {:.2e} relative",
        par.tokens_per_s / one.tokens_per_s,
        devices.len(),
        one_steps.len(),
        worst
    );
    Ok(ExitCode::SUCCESS)
}

/// The benchmark's model on `device`, for sequences of up to `longest` tokens.
fn make_model(a: &TrainParallelArgs, device: Device, longest: usize) -> Result<CausalLm, TrainError> {
    let max_len = longest.next_multiple_of(crate::train::batching::CUDA_PAD_MULTIPLE) as i64;
    let opts = LoadOptions { device: ModelDevice::from(device), dtype: a.dtype, max_model_len: Some(max_len) };
    Ok(match (&a.model, &a.config_json) {
        (Some(dir), _) => load_weights(dir, &opts)?,
        (_, Some(path)) => CausalLm::random(ModelConfig::from_file(path)?, &opts, a.seed)?,
        (None, None) => return Err(TrainError::Invalid("give --model or --config-json".into())),
    })
}

/// Runs `stasc bench allreduce`.
pub fn run_allreduce(a: AllReduceArgs) -> anyhow::Result<ExitCode> {
    let devices = devices_or_all(&a.devices)?;
    let kind = a.dtype.resolve(devices[0]);
    anyhow::ensure!(matches!(kind, Kind::Float | Kind::BFloat16), "--dtype must be f32 or bf16");
    let numel = (a.mib << 20) as i64 / kind.elt_size_in_bytes() as i64;
    let group = Group::new(&devices, Transport::Host)?;
    let nccl = match a.transport.as_str() {
        "nccl" => {
            let ordinals: Vec<usize> = devices
                .iter()
                .map(|d| match d {
                    Device::Cuda(i) => Ok(*i),
                    _ => Err(anyhow::anyhow!("--transport nccl needs CUDA devices")),
                })
                .collect::<anyhow::Result<_>>()?;
            Some(Communicators::init_all(&ordinals)?)
        }
        "host" => None,
        other => anyhow::bail!("--transport {other:?}: expected nccl or host"),
    };
    let n = devices.len();
    let torch = |e: tch::TchError| DistError::Torch(e.to_string());
    let sum = |w: usize, t: &Tensor| match &nccl {
        Some(c) => {
            group.barrier(w)?;
            c.all_reduce_sum(w, t)
        }
        None => group.all_reduce_sum(w, t),
    };
    let seconds = run_workers(&group, |w| -> Result<f64, DistError> {
        let device = devices[w];
        // Worker w contributes w + 1 everywhere: every element of the sum is n (n + 1) / 2.
        let t = Tensor::f_full([numel], (w + 1) as f64, (kind, device)).map_err(torch)?;
        sum(w, &t)?;
        let expected = (n * (n + 1) / 2) as f64;
        let (lo, hi) = (t.f_min().map_err(torch)?.double_value(&[]), t.f_max().map_err(torch)?.double_value(&[]));
        if lo != expected || hi != expected {
            return Err(DistError::Torch(format!("worker {w}: sum in [{lo}, {hi}], expected {expected}")));
        }
        sync(device);
        group.barrier(w)?;
        let started = Instant::now();
        for _ in 0..a.iters {
            sum(w, &t)?;
        }
        sync(device);
        group.barrier(w)?;
        Ok(started.elapsed().as_secs_f64())
    })?;
    let bytes = numel as f64 * kind.elt_size_in_bytes() as f64;
    let t = seconds[0] / a.iters.max(1) as f64;
    let algbw = bytes / t / 1e9;
    let busbw = algbw * if n > 1 { 2.0 * (n as f64 - 1.0) / n as f64 } else { 1.0 };
    let names: Vec<String> = devices.iter().map(|d| device_name(*d)).collect();
    println!(
        "stasc allreduce {} MiB {kind:?} over {} ({}): result checked, {:.3} ms, algbw {algbw:.1} GB/s, busbw \
         {busbw:.1} GB/s",
        a.mib,
        names.join(","),
        a.transport,
        1e3 * t
    );
    Ok(ExitCode::SUCCESS)
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
