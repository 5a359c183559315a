//! `stasc import-gguf`: convert a llama-architecture GGUF file into an HF model directory that every other stasc
//! command can load.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;

use crate::model::gguf::{import_gguf, ImportOptions, OutputDtype};

/// Element type of the written weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit float: exact for every supported GGUF type (the default).
    F32,
    /// bfloat16: half the size, rounds Q8_0 and Q4 values.
    Bf16,
}

/// Arguments of `stasc import-gguf`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF file to convert.
    pub gguf: PathBuf,
    /// The HF model directory to create; written under a temporary name and renamed when complete.
    pub out_dir: PathBuf,
    /// Element type of model.safetensors.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Replace OUT_DIR if it already exists.
    #[arg(long)]
    pub force: bool,
}

/// Runs the import and prints what was written.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        dtype: match args.dtype {
            DtypeArg::F32 => OutputDtype::F32,
            DtypeArg::Bf16 => OutputDtype::Bf16,
        },
        force: args.force,
    };
    let started = Instant::now();
    let summary = import_gguf(&args.gguf, &args.out_dir, &options)
        .with_context(|| format!("import-gguf {} -> {}", args.gguf.display(), args.out_dir.display()))?;
    let types: Vec<String> = summary.source_types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "imported {} ({}) into {}: {} tensors ({}), {:.1}M parameters as {}, vocabulary {}, {} embeddings, {:.1}s",
        args.gguf.display(),
        summary.model_name.as_deref().unwrap_or(&summary.architecture),
        summary.out_dir.display(),
        summary.tensor_count,
        types.join(", "),
        summary.parameter_count as f64 / 1e6,
        options.dtype.torch_name(),
        summary.vocab_size,
        if summary.tie_word_embeddings { "tied" } else { "untied" },
        started.elapsed().as_secs_f64(),
    );
    Ok(ExitCode::SUCCESS)
}
