//! Command-line interface: clap definitions turned into library requests. Each subcommand lives in its own file
//! with an `Args` struct and a `run` function that calls the library (generate, eval, run, train and bench load
//! models through it); this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod bench_parallel;
pub mod bench_train;
pub mod error;
pub mod eval;
pub mod generate;
pub mod import_gguf;
pub mod plugin;
pub mod preflight;
pub mod report;
pub mod run;
pub mod score;
pub mod sweep;
pub mod sweep_status;
pub mod templates;
pub mod train;

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(name = "stasc", version, about = "Self-Taught Self-Correction experiments on small language models")]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand stasc offers. A subcommand is listed only once it works.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Performance measurements (generation), printed like scripts/bench/hf_baseline.py.
    Bench(bench::Args),
    /// Sample completions from a model for a prompt or chat conversations.
    Generate(generate::Args),
    /// Prompted self-correction baseline: initial answers and one correction round, no training.
    Eval(eval::Args),
    /// Convert a llama-architecture GGUF file into an HF model directory.
    ///
    /// Tensors may be F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 (any other type is an error naming it). Writes
    /// model.safetensors, config.json, generation_config.json, tokenizer.json (byte-level BPE rebuilt from the GGUF
    /// vocabulary, merges and pre-tokenizer) and tokenizer_config.json (with the GGUF's chat template), undoing
    /// llama.cpp's Q/K row permutation. Nothing is left at OUT_DIR unless the whole import succeeds.
    ///
    /// Example: stasc import-gguf ~/.cache/stasc/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
    /// ~/.cache/stasc/models/SmolLM2-135M-Instruct
    ImportGguf(import_gguf::Args),
    /// Reward plugins: list the available rewards, or scaffold a new plugin crate.
    Plugin(plugin::Args),
    /// Write HTML/CSV/Markdown/LaTeX reports over a sweep or runs; --paper compares with the published table.
    Report(report::Args),
    /// Run STaSC from the reference's YAML files (stasc_config, fine_tune, accelerate_config).
    Run(run::Args),
    /// Score generations from a JSONL file with a built-in or plugin reward.
    Score(score::Args),
    /// Expand a sweep file into a grid of runs and run the unfinished cells.
    Sweep(sweep::Args),
    /// The built-in prompt templates, few-shot files and report templates: `export DIR` writes them out to edit.
    Templates(templates::Args),
    /// Fine-tune a model on a messages JSONL file (loss on the last assistant message).
    Train(train::Args),
}

/// Parses the process arguments and runs the chosen subcommand.
pub fn run() -> anyhow::Result<ExitCode> {
    crate::dist::guard::apply_to_process();
    crate::dist::nccl::default_settings();
    crate::model::device::default_allocator_config();
    crate::model::device::default_attention_backends();
    let cli = Cli::parse();
    crate::progress::set_enabled(true);
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Eval(args) => eval::run(args),
        Command::ImportGguf(args) => import_gguf::run(args),
        Command::Plugin(args) => plugin::run(args),
        Command::Report(args) => report::run(args),
        Command::Run(args) => run::run(args),
        Command::Score(args) => score::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Templates(args) => templates::run(args),
        Command::Train(args) => train::run(args),
    }
}

/// The data-parallel topology of a command-line device choice: `data_parallel_ranks` ranks (`None` = one per usable
/// device) over the visible GPUs (or `gpu_ids` of them) when `device` is auto, else on the one device named
/// (`--device cuda` is GPU 0: see `RunDevices::from` in `crate::dist::topology`). `source` names the option for
/// messages; a note about ranks sharing devices goes to stderr.
pub fn topology_for(
    device: crate::model::ModelDevice,
    data_parallel_ranks: Option<usize>,
    gpu_ids: Option<&[usize]>,
    source: &str,
) -> anyhow::Result<crate::dist::Topology> {
    let devices = crate::config::RunDevices::from(device);
    let ask = crate::dist::DeviceAsk { devices, data_parallel_ranks, gpu_ids, source };
    let visible = if tch::Cuda::is_available() { tch::Cuda::device_count().max(0) as usize } else { 0 };
    let (topology, note) = crate::dist::topology::resolve(&ask, visible)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    Ok(topology)
}
