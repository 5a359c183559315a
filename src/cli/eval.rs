//! `stasc eval`: the paper's prompted self-correction baseline, iteration 0 only (initial answers plus one
//! correction round, no training), in its own run directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{overrides, RunConfig, RunConfigPaths};
use crate::data::{load_splits, Columns};
use crate::stasc::RunOptions;

/// Score a model on a dataset: initial answers and one correction round, no training.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// stasc_config.yaml (model, dataset, reward, sampling).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// fine_tune.yaml (optional: not used for training, only recorded).
    #[arg(long = "ft_config", visible_alias = "ft-config", value_name = "FILE")]
    pub ft_config: Option<PathBuf>,
    /// accelerate_config.yaml (device and dtype settings).
    #[arg(long = "accelerate_config_path", visible_alias = "accelerate-config-path", value_name = "FILE")]
    pub accelerate_config_path: Option<PathBuf>,
    /// Run directory [default: runs/<run_name>-eval].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Resume even if the configuration changed.
    #[arg(long)]
    pub force: bool,
    /// Overrides of stasc_config keys (`temperature=0.8`) or fine_tune keys (`ft.training.seed=1`), applied on top
    /// of the files and checked like them.
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Runs `stasc eval`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let given = args.ft_config.is_some();
    let paths = RunConfigPaths {
        config: args.config.clone(),
        ft_config: args.ft_config.clone().unwrap_or_else(|| PathBuf::from("<defaults>")),
        accelerate_config: args.accelerate_config_path.clone(),
    };
    let mut config = RunConfig::load_for_eval(&paths, given, &overrides::parse(&args.overrides)?)?;
    config.stasc_config.output_dir = match args.out {
        Some(out) => out,
        None => PathBuf::from("runs").join(format!("{}-eval", config.stasc_config.run_name)),
    };
    // Evaluation is iteration 0 of a run with no fine-tuning rounds.
    config.stasc_config.num_star_iterations = 0;
    if let Some(line) = config.ignored_warning() {
        eprintln!("warning: {line}");
    }
    let c = &config.stasc_config;
    let mut splits =
        load_splits(&c.data_path, &Columns::from_config(c)).with_context(|| args.config.display().to_string())?;
    splits.cap(c.max_train_examples, c.max_test_examples);
    super::run::run_loop(&config, &splits, RunOptions { force: args.force, stop_after: Some(0), verbose: true })
}
