//! `stasc sweep FILE.toml`: expand a grid of STaSC runs, validate every cell, then run the unfinished ones.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::sweep::{execute, plan, ProcessRunner, SweepOptions, SweepSpec};

/// Arguments of `stasc sweep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep file (e.g. experiments/ablation.toml).
    pub file: PathBuf,
    /// Validate every cell's configuration, check the files each cell will open, and print the cells with what
    /// each will sample and train; run nothing, write nothing. Exits with status 1 if a file is missing.
    #[arg(long)]
    pub dry_run: bool,
    /// Devices to spread cells over, one cell per device at a time (e.g. 0,1); overrides the file's sweep.devices.
    #[arg(long, value_delimiter = ',')]
    pub devices: Option<Vec<String>>,
    /// Run only this cell (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Run again the cells that failed before (they are skipped otherwise).
    #[arg(long)]
    pub retry_failed: bool,
    /// Overrides of stasc_config keys (`num_star_iterations=1`) or fine_tune keys (`ft.training.learning_rate=1e-5`)
    /// for every cell, applied after the grid; a key the grid varies cannot be overridden.
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Runs `stasc sweep`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut spec = SweepSpec::load(&args.file)?;
    spec.overrides = crate::config::overrides::parse(&args.overrides)?;
    let plans = plan(&spec, args.dry_run)?;
    if args.dry_run {
        return super::preflight::sweep(&spec, &plans);
    }
    let exe = std::env::current_exe().context("cannot locate the stasc executable")?;
    let options = SweepOptions { only: args.only, retry_failed: args.retry_failed, devices: args.devices };
    let outcome = execute(&spec, &plans, &options, &ProcessRunner { exe })?;
    for (name, status) in &outcome.cells {
        println!("{name:<48} {status}");
    }
    println!("sweep directory: {}", spec.out.display());
    if outcome.failed > 0 {
        eprintln!("error: {} of {} cells failed", outcome.failed, outcome.cells.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
