//! `stasc run`: the reference's entry point (`--config`, `--ft_config`, `--accelerate_config_path`) plus `key=value`
//! overrides. Loads and validates the three YAML files and the dataset; `--dry-run` checks every file the run will
//! open and prints the resolved configuration with every default filled in (see [`super::preflight`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{overrides, RunConfig, RunConfigPaths};
use crate::data::{load_splits, Columns};
use crate::stasc::from_config::run_with_backend;
use crate::stasc::shared::{shared_dir_for, SharedSampling};
use crate::stasc::status::StatusWriter;
use crate::stasc::tch_backend::TchBackend;
use crate::stasc::RunOptions;
use crate::track::Trackers;

/// Run the STaSC algorithm from the reference's YAML files.
#[derive(Debug, clap::Args)]
#[command(after_help = "Relative paths inside the YAML files (data_path, few_shot_dir, ...) are relative to the \
                        current directory, as in the reference. Keys that are accepted but not acted on are listed \
                        on one warning line.")]
pub struct Args {
    /// stasc_config.yaml: model, dataset, the three STaSC choices, reward and sampling.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// fine_tune.yaml: the model/data/training/peft sections of the SFT step.
    #[arg(long = "ft_config", visible_alias = "ft-config", value_name = "FILE")]
    pub ft_config: PathBuf,
    /// accelerate_config.yaml: num_processes, gpu_ids, use_cpu and mixed_precision are acted on.
    #[arg(long = "accelerate_config_path", visible_alias = "accelerate-config-path", value_name = "FILE")]
    pub accelerate_config_path: Option<PathBuf>,
    /// Run directory [default: stasc_config's output_dir, else runs/<run_name>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Check every file the run will open (model, dataset with its splits and columns, templates, few-shot files,
    /// reward plugin, prompt lengths), print the resolved configuration and what the run will sample and train,
    /// and exit: status 1 and one line per problem if anything is missing.
    #[arg(long)]
    pub dry_run: bool,
    /// Resume even if the configuration differs from the one the run directory was started with.
    #[arg(long)]
    pub force: bool,
    /// Overrides of stasc_config keys (`temperature=0.8`) or fine_tune keys (`ft.training.learning_rate=1e-5`),
    /// applied on top of the files, checked like them, and recorded in config.resolved.yaml.
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Runs `stasc run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = RunConfigPaths {
        config: args.config.clone(),
        ft_config: args.ft_config.clone(),
        accelerate_config: args.accelerate_config_path.clone(),
    };
    let mut config = RunConfig::load_with_overrides(&paths, &overrides::parse(&args.overrides)?)?;
    if let Some(out) = &args.out {
        config.stasc_config.output_dir = out.clone();
    }
    if let Some(line) = config.ignored_warning() {
        eprintln!("warning: {line}");
    }
    if args.dry_run {
        crate::track::warnings(&config).iter().for_each(|w| eprintln!("warning: {w}"));
    }
    if !config.stasc_config.protocol_departures.is_empty() {
        eprintln!(
            "warning: {}: protocol paper, but {}; the published table was not made this way",
            args.config.display(),
            config.stasc_config.protocol_departures.join(", ")
        );
    }
    if args.dry_run {
        return super::preflight::run(&config);
    }
    let data_path = &config.stasc_config.data_path;
    let in_config = || format!("{}", args.config.display());
    let mut splits = load_splits(data_path, &Columns::from_config(&config.stasc_config)).with_context(in_config)?;
    splits.cap(config.stasc_config.max_train_examples, config.stasc_config.max_test_examples);
    run_loop(&config, &splits, RunOptions { force: args.force, stop_after: None, verbose: true })
}

/// Runs (or resumes) the loop of a loaded configuration on the libtorch engine and prints where the results are.
/// Holds the run directory's lock throughout; when another runner holds it, says who and exits with
/// [`BUSY_EXIT_CODE`](crate::rundir_lock::BUSY_EXIT_CODE) without touching the directory. status.json in the run
/// directory says who runs it and how far it got (crate::stasc::status).
pub fn run_loop(config: &RunConfig, splits: &crate::data::Splits, options: RunOptions) -> anyhow::Result<ExitCode> {
    use crate::rundir_lock::{LockError, RunDirLock, BUSY_EXIT_CODE};
    let _lock = match RunDirLock::acquire(&config.stasc_config.output_dir) {
        Ok(lock) => lock,
        Err(busy @ LockError::Busy { .. }) => {
            eprintln!("stasc: {busy}");
            return Ok(ExitCode::from(BUSY_EXIT_CODE));
        }
        Err(e) => return Err(e.into()),
    };
    let status = StatusWriter::start(&config.stasc_config.output_dir)?;
    let result = run_and_print(config, splits, &options);
    status.finish(result.as_ref().err().map(|e| format!("{e:#}")).as_deref())?;
    result
}

fn run_and_print(config: &RunConfig, splits: &crate::data::Splits, options: &RunOptions) -> anyhow::Result<ExitCode> {
    let mut backend = TchBackend::new(config, true).map_err(|e| anyhow::anyhow!(e))?;
    let run_dir = &config.stasc_config.output_dir;
    // Trackers see every iteration; one that fails only warns (crate::track).
    let mut trackers = Trackers::from_config(config, run_dir);
    trackers.start();
    let result = match shared_dir_for(run_dir) {
        Some(shared) => {
            let engine = serde_json::json!({
                "execution": config.execution,
                "max_model_len": config.stasc_config.max_model_len,
                "batch_invariant": config.stasc_config.batch_invariant,
                "devices": backend.topology().describe(),
            });
            let mut sharing = SharedSampling::new(&mut backend, &shared, run_dir, engine);
            let result = run_with_backend(config, splits, &mut sharing, options, &mut trackers);
            let c = sharing.counts;
            eprintln!(
                "[stasc] shared work: {} batches sampled here, {} read from {}",
                c.sampled,
                c.reused,
                shared.display()
            );
            result
        }
        None => run_with_backend(config, splits, &mut backend, options, &mut trackers),
    };
    trackers.finish(result.is_ok());
    let metrics = result?;
    let dir = config.stasc_config.output_dir.display();
    println!("iteration  test_initial  test_correction  train_pairs  train_loss");
    for m in &metrics {
        let loss = m.train_loss.map_or("-".to_string(), |l| format!("{l:.4}"));
        println!(
            "{:>9}  {:>12.3}  {:>15.3}  {:>11}  {:>10}",
            m.iteration, m.test_initial_accuracy, m.test_correction_accuracy, m.filtered_pairs, loss
        );
    }
    println!("run directory: {dir}");
    Ok(ExitCode::SUCCESS)
}
