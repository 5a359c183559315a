//! `stasc sweep FILE.toml`: expand a grid of STaSC runs, validate every cell, then run the unfinished ones here or
//! submit them to Slurm.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::stasc::shared::SHARED_DIR;
use crate::sweep::slurm::{submit, SlurmRun};
use crate::sweep::{execute, plan, Executor, ProcessRunner, SweepOptions, SweepSpec};

/// Arguments of `stasc sweep`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// `stasc sweep status DIR`: the state of every cell of a sweep directory.
    #[command(subcommand)]
    pub command: Option<super::sweep_status::Command>,
    /// The sweep file (e.g. experiments/ablation.toml).
    pub file: Option<PathBuf>,
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
    /// Under executor = "slurm": follow the submitted jobs until they end, then report every cell (without it,
    /// stasc sweep returns once the job array is submitted).
    #[arg(long)]
    pub wait: bool,
    /// Overrides of stasc_config keys (`num_star_iterations=1`) or fine_tune keys (`ft.training.learning_rate=1e-5`)
    /// for every cell, applied after the grid; a key the grid varies cannot be overridden.
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Runs `stasc sweep`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(command) = args.command {
        return super::sweep_status::run(command);
    }
    let file = args.file.context("a sweep file is required")?;
    let mut spec = SweepSpec::load(&file)?;
    spec.overrides = crate::config::overrides::parse(&args.overrides)?;
    let plans = plan(&spec, args.dry_run)?;
    if args.dry_run {
        if let Executor::Slurm(slurm) = &spec.executor {
            println!("executor slurm: one job array, each task with {}", slurm.sbatch_options(&spec.name).join(" "));
        }
        let code = super::preflight::sweep(&spec, &plans)?;
        let groups = crate::sweep::shared::iteration0_groups(&crate::sweep::shared::cell_configs(&spec)?);
        print!("{}", crate::sweep::shared::describe(&groups, plans.len(), &spec.out.join(SHARED_DIR)));
        return Ok(code);
    }
    let exe = std::env::current_exe().context("cannot locate the stasc executable")?;
    let outcome = match &spec.executor {
        Executor::Local => {
            if args.wait {
                anyhow::bail!("--wait is for executor = \"slurm\"; a local sweep always runs to the end");
            }
            let options = SweepOptions { only: args.only, retry_failed: args.retry_failed, devices: args.devices };
            let title = format!("sweep {}", spec.name);
            crate::sweep::live::while_running(&title, &plans, true, || {
                execute(&spec, &plans, &options, &ProcessRunner { exe })
            })?
        }
        Executor::Slurm(slurm) => {
            if args.devices.is_some() {
                anyhow::bail!(
                    "--devices has no meaning under executor = \"slurm\": set slurm.gpus in {}",
                    spec.file.display()
                );
            }
            let run = SlurmRun {
                only: args.only,
                retry_failed: args.retry_failed,
                wait: args.wait,
                poll: std::time::Duration::from_secs(3),
                exe,
            };
            submit(&spec, slurm, &plans, &run, &mut |line| println!("{line}"))?
        }
    };
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::sweep::exec::run_argv;
    use crate::sweep::CellPlan;

    /// The command line a sweep starts for a cell (locally and in Slurm tasks) is `stasc run` with the cell's files,
    /// as the CLI itself parses it.
    #[test]
    fn a_cells_command_line_parses_as_stasc_run_of_its_files() {
        for accelerate in [None, Some(PathBuf::from("configs/acc elerate.yaml"))] {
            let dir = PathBuf::from("runs/s/variant=EIE,seed=42");
            let cell = CellPlan {
                name: "variant=EIE,seed=42".into(),
                overrides: vec![],
                config: dir.join("stasc_config.yaml"),
                ft_config: dir.join("fine_tune.yaml"),
                dir: dir.clone(),
                accelerate_config: accelerate.clone(),
            };
            let argv = std::iter::once("stasc".into()).chain(run_argv(&cell));
            let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not parsed as stasc run");
            };
            assert_eq!(args.config, cell.config);
            assert_eq!(args.ft_config, cell.ft_config);
            assert_eq!(args.accelerate_config_path, accelerate);
            assert_eq!(args.out, Some(dir));
            assert!(!args.dry_run && !args.force);
        }
    }
}
