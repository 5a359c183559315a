//! `stasc report`: HTML, CSV, Markdown and LaTeX reports over a sweep, a run, or a directory of runs.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::report::{default_out_dir, write_report, ReportOptions, DEFAULT_MODEL_LABEL};

/// Write a report over finished or running experiments: results.csv (every iteration of every run),
/// loss_curves.csv, summary.csv/.md/.tex (one row per run; mean ± std over seeds when runs differ only by seed),
/// pairwise.csv (which variants differ from each other beyond the 95% interval) and index.html with SVG charts.
/// Every accuracy and transition rate carries its 95% interval over questions. Unfinished runs are included with
/// the iterations they have, and marked.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A sweep directory (with sweep.json), a run directory (with iter_0/), or a directory of run directories.
    pub input: PathBuf,
    /// Output directory [default: reports/<name of INPUT>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Add the paper's table: test correction accuracy per iteration for the eight variants, ours beside the
    /// published numbers and their difference with its 95% interval, only where our settings (config.resolved.yaml)
    /// match the published ones; other rows say "not comparable" and how they differ (paper_table.csv/.md/.tex,
    /// paper_settings.csv and a section of index.html).
    #[arg(long)]
    pub paper: bool,
    /// Published model to compare with under --paper ("Qwen2.5-1.5B-Instruct" or "Phi-3-mini-4k-instruct").
    #[arg(long, value_name = "NAME", default_value = DEFAULT_MODEL_LABEL, requires = "paper")]
    pub model_label: String,
    /// A directory whose index.html and/or macros.html (tera) replace the built-in report templates.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

/// Writes the report and lists what was written and which runs are unfinished.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let out = args.out.clone().unwrap_or_else(|| default_out_dir(&args.input));
    let options = ReportOptions {
        out: out.clone(),
        paper_model: args.paper.then(|| args.model_label.clone()),
        templates: args.templates,
    };
    let outcome = write_report(&args.input, &options)?;
    for note in &outcome.notes {
        eprintln!("note: {note}");
    }
    println!("report of {} written to {}:", args.input.display(), out.display());
    for f in &outcome.files {
        println!("  {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
