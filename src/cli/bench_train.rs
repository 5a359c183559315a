//! `stasc bench train` and `stasc bench train-parity`: training throughput printed like
//! scripts/bench/hf_baseline.py ("stasc train bs=B seq=S: X tok/s, peak Y GiB") with MFU, the realistic
//! variable-length run at the reference's settings (today's one padded pass per micro-batch against packed
//! passes), and the HF Trainer parity check on a recorded case.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::choices::Truncation;
use crate::model::{load_tokenizer, load_weights, CausalLm, DtypeSpec, LoadOptions, ModelConfig, ModelDevice};
use crate::prompt::ChatMessage;
use crate::train::bench::{
    fixed_shape_hyperparameters, gib, loss_difference, measure, mfu, parameter_count, precision, random_examples,
    reference_settings, Throughput, H100_BF16_PEAK_FLOPS,
};
use crate::train::parity::run_case;
use crate::train::tokenize::tokenize_all;
use crate::train::{Hyperparameters, TokenizedExample};

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
    /// Sequences per micro-batch in fixed-shape mode (default 16).
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
    /// --realistic: variable-length examples at the reference's settings (configs/fine_tune.yaml with 2 ranks on
    /// one device: a global batch of 8, per-rank loss normalisation), trained by today's path (one padded pass per
    /// micro-batch) and packed, each from the same fresh weights: tok/s, peak memory, per-step loss difference.
    #[command(flatten)]
    pub examples: RealisticArgs,
    /// Recompute activations in backward.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Peak FLOP/s for MFU (default: H100 SXM dense bf16).
    #[arg(long, default_value_t = H100_BF16_PEAK_FLOPS)]
    pub peak_flops: f64,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Record the timed run (fixed-shape mode) or the packed run (--realistic) with libtorch's Kineto profiler and
    /// save the Chrome trace to this file (scripts/kernels/trace_summary.py sums it per kernel).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: ModelDevice,
    /// auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeSpec,
}

/// The variable-length examples of the --realistic benchmarks (`bench train`, `bench train-parallel`).
#[derive(Debug, clap::Args)]
pub struct RealisticArgs {
    /// Variable-length examples at the reference's settings: the conversations of --pairs, else 2,000 chats of
    /// 200-600 random tokens (loss on the last third).
    #[arg(long)]
    pub realistic: bool,
    /// A run's iter_N/train_pairs.jsonl: --realistic trains on its conversations, tokenised as `stasc run` does
    /// (loss on the last assistant message, block size 1024).
    #[arg(long, requires = "tokenizer")]
    pub pairs: Option<PathBuf>,
    /// An HF model directory whose tokenizer and chat template tokenise --pairs (tokenizer.json,
    /// tokenizer_config.json; only the tokenizer is used).
    #[arg(long, requires = "pairs")]
    pub tokenizer: Option<PathBuf>,
    /// Token budget of one packed pass in --realistic mode (fine_tune.yaml `training.max_tokens_per_pass`).
    #[arg(long, default_value_t = 8192)]
    pub max_tokens_per_pass: usize,
}

impl RealisticArgs {
    /// The examples (--pairs tokenised, else random chats over `vocab` from `seed`) and a line saying where they
    /// come from and how long they are.
    pub fn examples(&self, vocab: i64, seed: u64) -> anyhow::Result<(Vec<TokenizedExample>, String)> {
        let (examples, source) = match &self.pairs {
            Some(pairs) => {
                let dir = self.tokenizer.as_deref().context("--pairs needs --tokenizer")?;
                let examples = pair_examples(pairs, dir)?;
                let source = format!("{} pairs of {}", examples.len(), pairs.display());
                (examples, source)
            }
            None => (random_examples(2000, 200..=600, vocab, 1.0 / 3.0, seed), "2000 chats of 200-600 tokens".into()),
        };
        let summary = length_summary(&examples);
        Ok((examples, format!("{source}, {summary}")))
    }
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
    pub device: ModelDevice,
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
    let max_len =
        if a.examples.realistic { 600 } else { a.seq }.next_multiple_of(crate::train::batching::CUDA_PAD_MULTIPLE);
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
    if !a.examples.realistic {
        let (batch, steps) = (a.batch.unwrap_or(16), a.steps.unwrap_or(6));
        let mut hp = fixed_shape_hyperparameters(batch, a.warmup + steps, a.gradient_checkpointing);
        hp.seed = a.seed;
        let examples = random_examples(batch * (a.warmup + steps), a.seq..=a.seq, vocab, 1.0, a.seed);
        let t = crate::ffi::profiled(a.trace.as_deref(), || measure(&mut model, &examples, &hp, a.warmup))
            .context("--trace")??;
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
    drop(model);
    let (examples, source) = a.examples.examples(vocab, a.seed)?;
    println!("stasc train realistic: {source}");
    let longest = examples.iter().map(TokenizedExample::len).max().unwrap_or(1);
    let max_len = longest.next_multiple_of(crate::train::batching::CUDA_PAD_MULTIPLE);
    let hp = |packing: bool, steps: Option<usize>| {
        let mut hp = reference_settings(packing, a.examples.max_tokens_per_pass, steps);
        hp.gradient_checkpointing = a.gradient_checkpointing;
        hp
    };
    // Every run starts from the same fresh weights (training changes them); the first, untimed, pays for
    // first-seen shapes and libtorch's lazy initialisation.
    let run = |hp: &Hyperparameters| -> anyhow::Result<Throughput> {
        let mut model = load(&a, max_len)?;
        let t = measure(&mut model, &examples, hp, a.warmup);
        drop(model);
        crate::model::device::release_cuda_cache();
        Ok(t?)
    };
    run(&hp(false, Some(a.warmup + 10)))?;
    let mut results = Vec::new();
    for packing in [false, true] {
        let trace = a.trace.as_deref().filter(|_| packing);
        let t = crate::ffi::profiled(trace, || run(&hp(packing, a.steps))).context("--trace")??;
        let path = if packing {
            format!("packed, at most {} tokens a pass", a.examples.max_tokens_per_pass)
        } else {
            "today's path, one padded pass per micro-batch".to_string()
        };
        println!(
            "stasc train realistic ({path}; reference settings: 1 x 4 accumulation x 2 ranks on one device): \
             {:.0} tok/s, padding x{:.3}, peak {}, MFU {:.1}%, {} steps timed, last loss {:.4}",
            t.tokens_per_s,
            t.padding_overhead,
            gib(t.peak_bytes),
            100.0 * mfu(params, t.tokens_per_s, a.peak_flops),
            t.steps_timed,
            t.last_loss
        );
        results.push(t);
        if let Some(graphs) = crate::train::graphed::report() {
            println!("{graphs}");
        }
    }
    let (today, packed) = (&results[0], &results[1]);
    let (max, mean) = loss_difference(&packed.losses, &today.losses);
    println!(
        "stasc train realistic: packed x{:.2} tokens/s over today's path; step losses differ by at most {max:.2e} \
         relative (mean {mean:.2e}) over {} steps",
        packed.tokens_per_s / today.tokens_per_s,
        packed.losses.len().min(today.losses.len())
    );
    Ok(ExitCode::SUCCESS)
}

/// The conversations of a train_pairs.jsonl (`messages` of every line), tokenised as `stasc run` trains them.
fn pair_examples(pairs: &Path, tokenizer_dir: &Path) -> anyhow::Result<Vec<TokenizedExample>> {
    let text = std::fs::read_to_string(pairs).with_context(|| format!("reading {}", pairs.display()))?;
    let mut chats = Vec::new();
    for (k, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        #[derive(serde::Deserialize)]
        struct Pair {
            messages: Vec<ChatMessage>,
        }
        let pair: Pair = serde_json::from_str(line).with_context(|| {
            format!("{} line {}: expected a JSON object with `messages` (role, content)", pairs.display(), k + 1)
        })?;
        chats.push(pair.messages);
    }
    let tokenizer = load_tokenizer(tokenizer_dir).with_context(|| format!("loading {}", tokenizer_dir.display()))?;
    let (examples, _) = tokenize_all(&tokenizer, &chats, 1024, Truncation::Drop)?;
    anyhow::ensure!(!examples.is_empty(), "{}: no conversations", pairs.display());
    Ok(examples)
}

/// Mean, spread and label tokens of the examples, for the report line.
fn length_summary(examples: &[TokenizedExample]) -> String {
    let mut lengths: Vec<usize> = examples.iter().map(TokenizedExample::len).collect();
    lengths.sort_unstable();
    let at = |q: f64| lengths[((lengths.len() - 1) as f64 * q).round() as usize];
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    let labels = examples.iter().map(TokenizedExample::num_targets).sum::<usize>() as f64 / lengths.len() as f64;
    format!(
        "{mean:.0} tokens on average (min {}, p10 {}, median {}, p90 {}, max {}), {labels:.0} label tokens",
        at(0.0),
        at(0.1),
        at(0.5),
        at(0.9),
        at(1.0)
    )
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

/// Arguments of `stasc bench checkpoint`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("weights").required(true).args(["model", "config_json"])))]
pub struct CheckpointArgs {
    /// HF model directory to load.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A config.json alone: random weights made on the device.
    #[arg(long)]
    pub config_json: Option<PathBuf>,
    /// Where to write the checkpoint (a directory that may not exist yet; replaced). Default: a temporary directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: ModelDevice,
    /// auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeSpec,
}

/// Runs `stasc bench checkpoint`: the time to save a model as the trainer does at the end of every fine-tuning
/// round (staging directory, safetensors, rename) and to load it back onto the device, as the next phase does.
pub fn run_checkpoint(a: CheckpointArgs) -> anyhow::Result<ExitCode> {
    let opts = LoadOptions { device: a.device, dtype: a.dtype, max_model_len: Some(1024) };
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let (model, base) = match (&a.model, &a.config_json) {
        (Some(dir), _) => {
            (load_weights(dir, &opts).with_context(|| format!("loading {}", dir.display()))?, dir.clone())
        }
        (None, Some(path)) => {
            let model = CausalLm::random(ModelConfig::from_file(path)?, &opts, a.seed).context("building a model")?;
            let base = scratch.path().join("base");
            std::fs::create_dir_all(&base).context("creating a base directory")?;
            std::fs::copy(path, base.join("config.json")).with_context(|| format!("copying {}", path.display()))?;
            (model, base)
        }
        (None, None) => anyhow::bail!("give --model or --config-json"),
    };
    let device = model.device();
    let out = a.out.clone().unwrap_or_else(|| scratch.path().join("model"));
    let mut weights: Vec<(String, tch::Tensor)> = model.named_weights().into_iter().collect();
    weights.sort_by(|x, y| x.0.cmp(&y.0));
    let bytes: usize = weights.iter().map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes()).sum();
    let started = std::time::Instant::now();
    let partial = crate::train::checkpoint::begin(&out)?;
    crate::train::checkpoint::write_model_dir(&base, &partial, &weights)?;
    crate::train::checkpoint::finish(&partial, &out)?;
    let save = started.elapsed().as_secs_f64();
    drop(weights);
    drop(model);
    crate::model::device::release_cuda_cache();
    let started = std::time::Instant::now();
    let reloaded = load_weights(&out, &opts).with_context(|| format!("reloading {}", out.display()))?;
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let reload = started.elapsed().as_secs_f64();
    drop(reloaded);
    println!(
        "stasc checkpoint ({:.2} GB of weights, {}): save {save:.2} s ({:.2} GB/s), reload onto {device:?} {reload:.2} s \
         ({:.2} GB/s)",
        bytes as f64 / 1e9,
        out.display(),
        bytes as f64 / 1e9 / save,
        bytes as f64 / 1e9 / reload
    );
    Ok(ExitCode::SUCCESS)
}
