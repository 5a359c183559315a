//! The dry runs of `stasc run` and `stasc sweep`: the resolved configuration (per cell, for a sweep), what the run
//! will sample and train, and one line per problem with every file a run will open (see
//! `crate::stasc::preflight`). A dry run with a problem exits with status 1, so a script can stop before the GPU
//! time is spent.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::config::{RunConfig, RunConfigPaths};
use crate::stasc::budget::{budget, grouped, Budget};
use crate::stasc::preflight::{DatasetSummary, Preflight, PromptTokens, Report};
use crate::sweep::{CellPlan, SweepSpec};

/// The dry run's YAML document: the resolved configuration, the dataset and what the run will do.
#[derive(Debug, Serialize)]
struct DryRun<'a> {
    #[serde(flatten)]
    config: &'a RunConfig,
    /// None when the dataset did not load (the problem says why).
    dataset: Option<&'a DatasetSummary>,
    /// None when the model's tokenizer, the dataset or the templates did not load.
    prompt_tokens: Option<&'a PromptTokens>,
    /// None when the dataset did not load.
    budget: Option<Budget>,
}

fn budget_of(config: &RunConfig, report: &Report) -> Option<Budget> {
    let d = report.dataset.as_ref()?;
    Some(budget(config, d.train_rows_used, d.test_rows_used, report.prompt_tokens.as_ref()))
}

/// `stasc run --dry-run`: prints the resolved configuration and the budget; problems go to stderr, one a line,
/// prefixed by the config file.
pub fn run(config: &RunConfig) -> anyhow::Result<ExitCode> {
    let report = Preflight::new().check(config);
    let document = DryRun {
        config,
        dataset: report.dataset.as_ref(),
        prompt_tokens: report.prompt_tokens.as_ref(),
        budget: budget_of(config, &report),
    };
    println!("# stasc run --dry-run: the resolved configuration, every default filled in, and what the run will do");
    print!("{}", serde_yaml::to_string(&document).context("serializing the resolved configuration")?);
    for problem in &report.problems {
        eprintln!("error: {}: {problem}", config.sources.config.display());
    }
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `stasc sweep --dry-run`: one line per cell with its state and budget, a total, and the problems of all cells,
/// each problem once with the cells it concerns.
pub fn sweep(spec: &SweepSpec, plans: &[CellPlan]) -> anyhow::Result<ExitCode> {
    let configs = cell_configs(spec)?;
    let mut preflight = Preflight::new();
    let mut problems: Vec<(String, Vec<&str>)> = Vec::new();
    let mut totals = (0u64, 0u64, Some(0u64));
    println!("sweep {} ({} cells) -> {}", spec.name, plans.len(), spec.out.display());
    for (plan, config) in plans.iter().zip(&configs) {
        let state = match crate::sweep::exec::cell_state(&plan.dir) {
            crate::sweep::exec::CellState::Done => "done",
            crate::sweep::exec::CellState::Failed => "failed",
            crate::sweep::exec::CellState::Pending => "to run",
        };
        let report = preflight.check(config);
        for problem in report.problems.iter() {
            match problems.iter_mut().find(|(p, _)| p == problem) {
                Some((_, cells)) => cells.push(&plan.name),
                None => problems.push((problem.clone(), vec![&plan.name])),
            }
        }
        let work = match budget_of(config, &report) {
            Some(b) => {
                totals.0 += b.samples;
                totals.1 += b.generated_tokens_at_most;
                totals.2 = totals.2.zip(b.train_tokens_at_most).map(|(sum, cell)| sum + cell);
                describe(b.samples, b.generated_tokens_at_most, b.train_tokens_at_most)
            }
            None => {
                totals.2 = None;
                "no budget: the dataset did not load".to_string()
            }
        };
        println!("  {:<48} {state:<7} {work}", plan.name);
    }
    println!("  {:<48} {:<7} {}", "total", "", describe(totals.0, totals.1, totals.2));
    println!(
        "(token counts are bounds: every sample runs to max_tokens and every candidate pair is kept; stasc run \
         --dry-run on a cell's files gives the details)"
    );
    println!("every cell's configuration is valid");
    for (problem, cells) in &problems {
        let which = if cells.len() == plans.len() && plans.len() > 1 {
            "every cell".to_string()
        } else {
            format!("cell {}", cells.join(", cell "))
        };
        eprintln!("error: {}: {which}: {problem}", spec.file.display());
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn describe(samples: u64, generated: u64, trained: Option<u64>) -> String {
    let trained = trained.map_or("?".to_string(), grouped);
    format!("{} samples, ≤ {} tokens sampled, ≤ {trained} tokens trained", grouped(samples), grouped(generated))
}

/// Every cell's resolved configuration, loaded from files written as the cell's child process would read them (in
/// a scratch directory: a dry run writes nothing under the sweep directory).
fn cell_configs(spec: &SweepSpec) -> anyhow::Result<Vec<RunConfig>> {
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let mut configs = Vec::new();
    for cell in crate::sweep::overrides::cells(spec)? {
        let dir = scratch.path().join(&cell.name);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let write = |name: &str, document: &serde_json::Value| -> anyhow::Result<std::path::PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, serde_yaml::to_string(document)?).with_context(|| path.display().to_string())?;
            Ok(path)
        };
        let paths = RunConfigPaths {
            config: write("stasc_config.yaml", &cell.stasc)?,
            ft_config: write("fine_tune.yaml", &cell.fine_tune)?,
            accelerate_config: spec.accelerate_config.clone(),
        };
        configs.push(RunConfig::load(&paths).with_context(|| format!("cell {}", cell.name))?);
    }
    Ok(configs)
}
