//! `stasc train`: one SFT run from a messages JSONL file with the hyperparameters of a fine_tune.yaml, writing the
//! checkpoint and train_log.jsonl to `--out`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{ignored_warning, FineTuneConfig};
use crate::model::ModelDevice;
use crate::train::{data::read_messages_jsonl, fine_tune, TrainOptions};

/// Fine-tune a model on chats. Each line of --data is {"messages": [...]}; the loss covers the last assistant
/// message (including its end-of-turn token). The output directory receives an HF checkpoint (or, with LoRA and
/// --adapter-only, a PEFT adapter directory) and train_log.jsonl, one line per optimiser step.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model directory to start from.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Messages JSONL file.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// fine_tune.yaml (the reference's model/data/training/peft sections).
    #[arg(long = "ft_config", visible_alias = "ft-config", value_name = "FILE")]
    pub ft_config: PathBuf,
    /// Output directory (written as DIR.partial, then renamed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: ModelDevice,
    /// Data-parallel ranks (accelerate's num_processes): a step takes per_device_train_batch_size x N x
    /// gradient_accumulation_steps examples. With --device auto they use the first N visible GPUs, one each;
    /// where fewer devices are usable the ranks share them (same loss, more time).
    #[arg(long = "num_processes", visible_alias = "num-processes", default_value_t = 1, value_name = "N")]
    pub num_processes: usize,
    /// Batch examples in file order of a seeded shuffle only, without grouping similar lengths (HF's default;
    /// pads more).
    #[arg(long)]
    pub no_group_by_length: bool,
    /// With peft.use_lora: write only the PEFT adapter, not the merged model.
    #[arg(long)]
    pub adapter_only: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `stasc train`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (cfg, ignored) = FineTuneConfig::load(&args.ft_config)?;
    if let Some(line) = ignored_warning(&[ignored]) {
        eprintln!("warning: {line}");
    }
    if args.quiet {
        crate::progress::set_enabled(false);
    }
    if cfg.training.report_to.iter().any(|r| r != "none") {
        // Trackers follow STaSC runs (stasc run / eval / sweep); one SFT run logs to train_log.jsonl only.
        eprintln!(
            "warning: {}: training.report_to is acted on by stasc run, eval and sweep; stasc train writes every step to {}/train_log.jsonl only",
            args.ft_config.display(),
            args.out.display()
        );
    }
    let chats = read_messages_jsonl(&args.data)?;
    let topology = super::topology_for(args.device, Some(args.num_processes), None, "--num_processes")?;
    let opts = TrainOptions {
        device: args.device,
        topology: Some(topology),
        group_by_length: !args.no_group_by_length,
        merge_lora: !args.adapter_only,
        progress: !args.quiet,
    };
    let report = fine_tune(&args.model, &chats, &cfg, &opts, &args.out)
        .with_context(|| format!("training {} on {}", args.model.display(), args.data.display()))?;
    let d = &report.data;
    eprintln!(
        "{} of {} examples trained ({} truncated, {} dropped as longer than block_size {}, {} dropped without loss \
         tokens); {} label tokens of {}",
        d.kept,
        d.given,
        d.truncated,
        d.dropped_too_long,
        cfg.data.block_size,
        d.dropped_no_labels,
        d.label_tokens,
        d.tokens
    );
    let last = report.steps.last().map_or(f64::NAN, |s| s.loss);
    let first = report.steps.first().map_or(f64::NAN, |s| s.loss);
    println!(
        "trained {} steps: loss {first:.4} -> {last:.4}, {:.0} tok/s, padding x{:.3}, {} trainable parameters; wrote {}",
        report.steps.len(),
        report.tokens_per_s,
        report.padding_overhead,
        report.trainable_params,
        report.out_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
