//! Reports over finished or running experiments: reads run directories and sweeps (never recomputing a metric),
//! aggregates over seeds and iterations, and writes CSV tables, Markdown and LaTeX tables for papers, the paper's
//! table beside the published numbers (compared only where the settings match), 95% intervals over questions for
//! every accuracy and difference, and an HTML page with inline SVG charts.

pub mod aggregate;
pub mod charts;
pub mod error;
pub mod html;
pub mod lineage;
pub mod load;
pub mod pairwise;
pub mod paper;
pub mod published;
pub mod seeds;
pub mod settings;
pub mod settings_table;
pub mod summary;
pub mod svg;
pub mod table;
pub mod uncertainty;

#[cfg(test)]
mod testutil;

use std::fs;
use std::path::{Path, PathBuf};

pub use error::ReportError;
pub use load::{load_results, CellResults, CellStatus, InputKind, ResultSet};
pub use paper::{paper_table, PaperTable, DEFAULT_MODEL_LABEL, PAPER_VARIANTS};
pub use published::Published;
pub use table::{Precision, Table};

use html::{HtmlCell, HtmlPage, HtmlPairwise, HtmlPaper};

/// Every file a report may write; files from an earlier report that this one does not write are removed, so the
/// directory always shows one consistent report.
const REPORT_FILES: [&str; 12] = [
    "results.csv",
    "loss_curves.csv",
    "summary.csv",
    "summary_seeds.csv",
    "pairwise.csv",
    "summary.md",
    "summary.tex",
    "paper_table.csv",
    "paper_settings.csv",
    "paper_table.md",
    "paper_table.tex",
    "index.html",
];

/// What to write and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Output directory (created if needed).
    pub out: PathBuf,
    /// With Some(model label): add the paper table against that model's published numbers.
    pub paper_model: Option<String>,
    /// A directory whose index.html / macros.html replace the built-in templates.
    pub templates: Option<PathBuf>,
}

/// What a report wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOutcome {
    /// The files written, in writing order (index.html last).
    pub files: Vec<PathBuf>,
    /// One line per run that did not finish (incomplete, failed, not started).
    pub notes: Vec<String>,
}

/// The default output directory: `reports/<name of the input directory>`.
pub fn default_out_dir(input: &Path) -> PathBuf {
    Path::new("reports").join(load::directory_name(input))
}

/// Reads the runs under `input` and writes the report into `options.out`.
pub fn write_report(input: &Path, options: &ReportOptions) -> Result<ReportOutcome, ReportError> {
    let set = load_results(input)?;
    let paper = match &options.paper_model {
        Some(model) => Some(paper_table(&set, &Published::embedded()?, model)?),
        None => None,
    };
    write_report_for(&set, paper.as_ref(), options)
}

/// Writes the report of an already loaded result set (and paper table, if any).
pub fn write_report_for(
    set: &ResultSet,
    paper: Option<&PaperTable>,
    options: &ReportOptions,
) -> Result<ReportOutcome, ReportError> {
    let out = &options.out;
    fs::create_dir_all(out).map_err(|e| ReportError::io(out, e))?;
    let notes: Vec<String> = set
        .cells
        .iter()
        .filter(|c| c.status != CellStatus::Done)
        .map(|c| format!("{}: {}", c.name, c.status_text()))
        .collect();
    let replicates = aggregate::has_seed_replicates(set);
    let mut written: Vec<PathBuf> = Vec::new();
    let mut write = |name: &str, text: &str| -> Result<(), ReportError> {
        let path = out.join(name);
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
        Ok(())
    };

    write("results.csv", &summary::results_table(set).to_csv("results.csv")?)?;
    write("loss_curves.csv", &summary::loss_table(set).to_csv("loss_curves.csv")?)?;
    write("summary.csv", &summary::summary_table(set, Precision::Full).to_csv("summary.csv")?)?;
    let shown_summary = summary::summary_table(set, Precision::Display);
    let shown_seeds = replicates.then(|| seeds::seeds_table(set, Precision::Display));
    if replicates {
        write("summary_seeds.csv", &seeds::seeds_table(set, Precision::Full).to_csv("summary_seeds.csv")?)?;
    }
    let pairs = pairwise::pairwise(set);
    write("pairwise.csv", &pairs.to_table().to_csv("pairwise.csv")?)?;
    let (pair_note, pair_table) = (pairs.summary_note(), pairs.differing_table());
    let pair_section = pair_note.as_deref().map(|note| (note, pair_table.as_ref()));
    write("summary.md", &summary_markdown(set, &shown_summary, shown_seeds.as_ref(), pair_section, &notes))?;
    write("summary.tex", &summary_latex(set, &shown_summary, shown_seeds.as_ref()))?;
    let mut html_paper = None;
    if let Some(p) = paper {
        let shown = p.to_table();
        let settings = settings_table::settings_display(p);
        let legend = paper_legend(p);
        write("paper_table.csv", &p.to_csv_table().to_csv("paper_table.csv")?)?;
        write("paper_settings.csv", &settings_table::settings_csv(p).to_csv("paper_settings.csv")?)?;
        write("paper_table.md", &paper_markdown(p, &shown, settings.as_ref(), &legend))?;
        let mut tex = format!(
            "% Test correction accuracy: ours vs published ({}); needs \\usepackage{{booktabs}}\n{}",
            p.model,
            shown.to_latex()
        );
        if let Some(t) = &settings {
            tex.push_str(&format!(
                "\n% Settings behind the published numbers and ours ({})\n{}",
                p.model,
                t.to_latex()
            ));
        }
        write("paper_table.tex", &tex)?;
        html_paper = Some(HtmlPaper {
            model: p.model.clone(),
            reference: published::PUBLISHED_PATH.into(),
            settings_reference: published::PUBLISHED_SETTINGS_PATH.into(),
            legend,
            table: shown.into(),
            settings: settings.map(Into::into),
            charts: charts::paper_charts(p).iter().map(|c| c.to_svg()).collect(),
        });
    }
    let lineage_links = lineage::write_pages(&set.cells, out, &mut write)?;
    let file_names = REPORT_FILES
        .iter()
        .filter(|f| **f != "index.html")
        .filter(|f| match **f {
            "summary_seeds.csv" => replicates,
            f if f.starts_with("paper_") => paper.is_some(),
            _ => true,
        })
        .map(|f| f.to_string())
        .collect();
    let page = HtmlPage {
        title: format!("stasc report: {}", set.name),
        kind: match set.kind {
            InputKind::Sweep => "Sweep",
            InputKind::SingleRun => "Run",
            InputKind::RunDirectories => "Runs in",
        }
        .into(),
        input: set.input.display().to_string(),
        runs: set.cells.len(),
        generator: format!("stasc {}", env!("CARGO_PKG_VERSION")),
        files: file_names,
        notes: notes.clone(),
        summary: shown_summary.into(),
        seeds: shown_seeds.map(Into::into),
        pairwise: pair_note.map(|note| HtmlPairwise { note, table: pair_table.map(Into::into) }),
        paper: html_paper,
        charts: charts::overview_charts(set).iter().map(|c| c.to_svg()).collect(),
        cells: set
            .cells
            .iter()
            .zip(lineage_links)
            .map(|(c, lineage)| HtmlCell {
                lineage,
                name: c.name.clone(),
                status: c.status_text(),
                dir: c.dir.display().to_string(),
                table: summary::iteration_table(c).into(),
                loss_chart: charts::loss_chart(c).map(|ch| ch.to_svg()),
            })
            .collect(),
    };
    write("index.html", &html::render(&page, options.templates.as_deref())?)?;
    let lineage_dir = out.join("lineage");
    let stale_pages = fs::read_dir(&lineage_dir).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path()));
    let stale_pages: Vec<PathBuf> = stale_pages.filter(|p| p.extension().is_some_and(|x| x == "html")).collect();
    for p in REPORT_FILES.iter().map(|f| out.join(f)).chain(stale_pages) {
        if !written.contains(&p) && p.is_file() {
            fs::remove_file(&p).map_err(|e| ReportError::io(&p, e))?;
        }
    }
    Ok(ReportOutcome { files: written, notes })
}

// How the summary's intervals and comparisons were made, in summary.md (index.html's template says the same).
const SUMMARY_INTERVALS: &str = "[low, high]: 95% interval over test questions (each run's own, from its \
     metrics; for \"max test corr.\" a bootstrap over questions that picks the best iteration again in every resample).";
const SEEDS_INTERVALS: &str = "Sample standard deviation over seeds (n − 1); the maximum is taken per run, then \
     averaged. [low, high]: 95% interval over test questions of the mean (a bootstrap over the questions the runs share).";
const PAIRWISE_METHOD: &str = "A paired bootstrap over the test questions both groups answered, of the final \
     iteration's test correction accuracy and of the best iteration's (chosen again in every resample); \
     pairwise.csv lists every pair, * marks a difference whose 95% interval excludes 0.";

fn summary_markdown(
    set: &ResultSet,
    summary: &Table,
    seeds: Option<&Table>,
    pairs: Option<(&str, Option<&Table>)>,
    notes: &[String],
) -> String {
    let mut md = format!(
        "# {}\n\nTest accuracies; \"max test corr.\" is the best iteration (incl. 0). {SUMMARY_INTERVALS}\n\n",
        table::markdown_text(&set.name)
    );
    md.push_str(&summary.to_markdown());
    if let Some(s) = seeds {
        md.push_str(&format!("\n## Mean ± standard deviation over seeds\n\n{SEEDS_INTERVALS}\n\n"));
        md.push_str(&s.to_markdown());
    }
    if let Some((note, table)) = pairs {
        md.push_str(&format!(
            "\n## Differences between variants beyond the 95% interval\n\n{PAIRWISE_METHOD}\n\n{note}\n"
        ));
        if let Some(t) = table {
            md.push('\n');
            md.push_str(&t.to_markdown());
        }
    }
    if !notes.is_empty() {
        md.push_str("\n## Unfinished runs\n\n");
        for n in notes {
            md.push_str(&format!("- {}\n", table::markdown_text(n)));
        }
    }
    md
}

/// The paper table's legend: what Δ, the intervals, `*` and "not comparable" mean.
fn paper_legend(p: &PaperTable) -> Vec<String> {
    let n = p.published_questions.map_or_else(|| "its".to_string(), |n| format!("its {n}"));
    vec![
        "Δ = ours − published; — = no value. \"ours (mean of n)\": the mean over the runs that reached each iteration."
            .into(),
        format!(
            "[low, high]: 95% interval over test questions. Ours: the run's own (Wilson), or for several runs (seeds) \
             a bootstrap over questions of their mean; max: a bootstrap that picks the best iteration again in every \
             resample. Δ: Newcombe's interval for one run, otherwise MOVER from ours' interval and the published \
             value's Wilson interval on {n} test questions."
        ),
        "* = ours and published differ beyond the 95% interval (the interval of Δ excludes 0).".into(),
        "not comparable: our settings differ from the published ones (see the settings table), so no Δ is shown. \
         N (iterations) is shown but not compared: iteration n of a shorter run is the same experiment."
            .into(),
    ]
}

fn paper_markdown(p: &PaperTable, shown: &Table, settings: Option<&Table>, legend: &[String]) -> String {
    let mut md = format!(
        "# Test correction accuracy: ours vs published ({})\n\nPublished: {}; their settings: {}.\n\n",
        table::markdown_text(&p.model),
        published::PUBLISHED_PATH,
        published::PUBLISHED_SETTINGS_PATH
    );
    for line in legend {
        md.push_str(&format!("- {line}\n"));
    }
    md.push('\n');
    md.push_str(&shown.to_markdown());
    if let Some(t) = settings {
        md.push_str(&format!(
            "\n## Settings\n\nThe settings behind the published numbers and behind ours, for every compared row; \
             {} marks ours where it differs.\n\n{}",
            settings_table::DIFFERS_MARK,
            t.to_markdown()
        ));
    }
    md
}

fn summary_latex(set: &ResultSet, summary: &Table, seeds: Option<&Table>) -> String {
    let mut tex = format!("% stasc report: {}; needs \\usepackage{{booktabs}}\n", set.name.replace('\n', " "));
    tex.push_str(&summary.to_latex());
    if let Some(s) = seeds {
        tex.push_str("\n% Mean $\\pm$ sample standard deviation over seeds\n");
        tex.push_str(&s.to_latex());
    }
    tex
}

/// Writes `bytes` to `path` atomically (crate::atomic_file).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::atomic_file::write(path, bytes).map_err(|e| ReportError::io(&e.path, e.source))
}

#[cfg(test)]
mod tests;
