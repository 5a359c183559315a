//! `stasc sweep FILE.toml`: expand a grid of STaSC runs, validate every cell, then run the unfinished ones.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::stasc::shared::SHARED_DIR;
use crate::sweep::{execute, plan, ProcessRunner, SweepOptions, SweepSpec};

/// Arguments of `stasc sweep`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// `stasc sweep status DIR`: the state of every cell of a sweep directory.
    #[command(subcommand)]
    pub command: Option<super::sweep_status::Command>,
    /// The sweep file (e.g. experiments/ablation.toml).
    #[arg(required = true)]
    pub file: Option<PathBuf>,
    /// Print the cells and validate their configurations; run nothing, write nothing.
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
}

/// Runs `stasc sweep`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(command) = args.command {
        return super::sweep_status::run(command);
    }
    let file = args.file.context("a sweep file is required")?;
    let spec = SweepSpec::load(&file)?;
    let plans = plan(&spec, args.dry_run)?;
    if args.dry_run {
        println!("sweep {} ({} cells) -> {}", spec.name, plans.len(), spec.out.display());
        for p in &plans {
            let state = match crate::sweep::exec::cell_state(&p.dir) {
                crate::sweep::exec::CellState::Done => "done",
                crate::sweep::exec::CellState::Failed => "failed",
                crate::sweep::exec::CellState::Pending => "to run",
            };
            println!("  {:<48} {state}", p.name);
        }
        println!("every cell's configuration is valid");
        let groups = crate::sweep::shared::iteration0_groups(&crate::sweep::shared::cell_configs(&spec)?);
        print!("{}", crate::sweep::shared::describe(&groups, plans.len(), &spec.out.join(SHARED_DIR)));
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().context("cannot locate the stasc executable")?;
    let options = SweepOptions { only: args.only, retry_failed: args.retry_failed, devices: args.devices };
    let title = format!("sweep {}", spec.name);
    let outcome = crate::sweep::live::while_running(&title, &plans, true, || {
        execute(&spec, &plans, &options, &ProcessRunner { exe })
    })?;
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
