//! `stasc bench`: performance measurements printed in the format of scripts/bench/hf_baseline.py so the two can be
//! compared line by line. `bench generate` times batched sampling.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::generate::bench::{bench_generate, BenchSpec};
use crate::generate::{GenerateOptions, Sampling};
use crate::model::{load_weights, CausalLm, DtypeSpec, LoadOptions, ModelConfig, ModelDevice};

/// Performance measurements.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Time batched generation: BATCH random prompts of PROMPT_LEN tokens, each decoding exactly NEW_TOKENS tokens
    /// (EOS ignored), after a warm-up. Prints "stasc generate bs=B prompt=P new=N: X tok/s (Ys)".
    Generate(GenerateArgs),
    /// Time training steps on random data: "stasc train bs=B seq=S: X tok/s, peak Y GiB, MFU Z%"; --realistic runs
    /// variable-length examples (a run's train pairs, or random chats) at the reference's settings, today's path
    /// against packed passes.
    Train(super::bench_train::TrainArgs),
    /// Time saving a model as fine-tuning does at the end of a round, and loading it back onto the device.
    Checkpoint(super::bench_train::CheckpointArgs),
    /// Compare stasc's training with a case recorded from HF Trainer by scripts/parity/train_parity.py.
    TrainParity(super::bench_train::TrainParityArgs),
    /// Data-parallel training over several devices against the same ranks on one device (same global batch):
    /// tokens/s of each, the speed-up, and how far the two runs' losses differ.
    TrainParallel(super::bench_parallel::TrainParallelArgs),
    /// Time the gradient sum across devices (NCCL or host) and check its result.
    Allreduce(super::bench_parallel::AllReduceArgs),
}

/// Arguments of `stasc bench generate`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("weights").required(true).args(["model", "config_json"])))]
pub struct GenerateArgs {
    /// HF model directory to load.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A config.json alone: random weights made on the device, no other files needed.
    #[arg(long)]
    pub config_json: Option<PathBuf>,
    /// Prompts decoded together.
    #[arg(long)]
    pub batch: usize,
    /// Tokens per prompt.
    #[arg(long)]
    pub prompt_len: usize,
    /// Tokens generated per prompt.
    #[arg(long)]
    pub new_tokens: usize,
    /// Leading prompt tokens common to every prompt (like a STaSC phase's few-shot messages): prefilled once and,
    /// with the fused kernels, attended to once for all rows.
    #[arg(long, default_value_t = 0)]
    pub shared_prefix: usize,
    /// Sampling temperature (0 = greedy); the HF baseline uses 0.6.
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f64,
    /// Nucleus mass; the HF baseline uses 0.9.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    /// Decode steps between host synchronisations.
    #[arg(long, default_value_t = 8)]
    pub sync_every: usize,
    /// Seed of the random weights, prompts and samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the warm-up run.
    #[arg(long)]
    pub no_warmup: bool,
    /// Launch every decode kernel from the host instead of replaying CUDA graphs.
    #[arg(long)]
    pub no_cuda_graphs: bool,
    /// Record the timed run with libtorch's Kineto profiler (every CUDA kernel with its device time) and save the
    /// Chrome trace to this file (scripts/kernels/trace_summary.py sums it per kernel and per decode step).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: ModelDevice,
    /// auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeSpec,
}

/// Runs the chosen benchmark.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        BenchCommand::Generate(a) => run_generate(a),
        BenchCommand::Train(a) => super::bench_train::run_train(a),
        BenchCommand::TrainParity(a) => super::bench_train::run_train_parity(a),
        BenchCommand::Checkpoint(a) => super::bench_train::run_checkpoint(a),
        BenchCommand::TrainParallel(a) => super::bench_parallel::run_train_parallel(a),
        BenchCommand::Allreduce(a) => super::bench_parallel::run_allreduce(a),
    }
}

fn run_generate(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let max_len = (a.prompt_len + a.new_tokens) as i64;
    let opts = LoadOptions { device: a.device, dtype: a.dtype, max_model_len: Some(max_len) };
    let model = match (&a.model, &a.config_json) {
        (Some(dir), _) => load_weights(dir, &opts).with_context(|| format!("loading {}", dir.display()))?,
        (None, Some(path)) => {
            let config = ModelConfig::from_file(path)?;
            CausalLm::random(config, &opts, a.seed).context("building a random model")?
        }
        (None, None) => anyhow::bail!("give --model or --config-json"),
    };
    if model.max_model_len() < max_len {
        anyhow::bail!("prompt + new tokens ({max_len}) exceed the model's context ({})", model.max_model_len());
    }
    let spec = BenchSpec {
        batch: a.batch,
        prompt_len: a.prompt_len,
        shared_prefix: a.shared_prefix,
        new_tokens: a.new_tokens,
        sampling: Sampling::from_params(a.temperature, Some(a.top_p), None)?,
        seed: a.seed,
        warmup: !a.no_warmup,
        trace: a.trace.clone(),
    };
    let defaults = GenerateOptions::for_device(model.device());
    let options = GenerateOptions {
        sync_every: a.sync_every,
        cuda_graphs: defaults.cuda_graphs && !a.no_cuda_graphs,
        ..defaults
    };
    let report = bench_generate(&model, &spec, &options)?;
    let gib = (1u64 << 30) as f64;
    eprintln!(
        "{:?} on {:?} ({:?}), {} threads: weights {:.2} GiB, KV cache {:.2} GiB, {} decode steps ({} windows \
         launched ahead), host blocked on the device {:.1}s of {:.1}s, {:?}",
        model.config().architecture,
        model.device(),
        model.kind(),
        tch::get_num_threads(),
        report.weight_bytes as f64 / gib,
        report.cache_bytes as f64 / gib,
        report.stats.decode_steps,
        report.stats.windows_ahead,
        report.stats.host_wait_s,
        report.stats.elapsed_s,
        spec.sampling
    );
    if let Some(note) = &report.stats.cuda_graph_note {
        eprintln!("{note}");
    }
    if report.stats.cuda_graphs > 0 {
        eprintln!(
            "decode steps replayed from {} CUDA graphs ({:.2}s capturing them)",
            report.stats.cuda_graphs, report.stats.capture_s
        );
    }
    if let Some(used) = crate::train::device_memory::cuda_used_bytes() {
        eprintln!("GPU memory in use after the run (context + allocator cache): {:.1} GiB", used as f64 / gib);
    }
    println!(
        "stasc generate bs={} prompt={}{} new={}: {:.0} tok/s ({:.1}s)",
        a.batch,
        a.prompt_len,
        if a.shared_prefix > 0 { format!(" (shared {})", a.shared_prefix) } else { String::new() },
        a.new_tokens,
        report.stats.tokens_per_s(),
        report.stats.elapsed_s
    );
    Ok(ExitCode::SUCCESS)
}
