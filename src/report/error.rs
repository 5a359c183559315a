//! Errors of report generation; each names the directory or file it concerns and what was expected there.

use std::path::PathBuf;

/// An error while reading results or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The input path does not exist or is not a directory.
    #[error("{}: not a directory (expected a run directory, a sweep directory or a directory of runs)", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// Nothing under the input looks like a run or a sweep.
    #[error("no runs found: no iter_0/metrics.json or sweep.json found under {}{hint}", path.display())]
    NoRuns {
        /// The directory searched.
        path: PathBuf,
        /// A suggestion, starting with "; ", or empty.
        hint: String,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error (shown in the message, so not chained again).
        error: std::io::Error,
    },
    /// A JSON file (metrics.json, sweep.json) is not what stasc writes.
    #[error("{}: not a valid {what}: {error}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What the file should hold, e.g. "iteration metrics file".
        what: &'static str,
        /// The parse error (shown in the message, so not chained again).
        error: serde_json::Error,
    },
    /// A YAML file (config.resolved.yaml) that does not parse.
    #[error("{}: not a valid {what}: {message}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// What the file should hold, e.g. "resolved run configuration".
        what: &'static str,
        /// The parser's message, on one line.
        message: String,
    },
    /// A metrics.json whose iteration number disagrees with its directory.
    #[error("{}: holds iteration {found}, but lies in iter_{expected}", path.display())]
    IterationMismatch {
        /// The file.
        path: PathBuf,
        /// Iteration number of the directory.
        expected: usize,
        /// Iteration number inside the file.
        found: usize,
    },
    /// The published results table is malformed (row and column named).
    #[error("{source_name}: row {row}: {message}")]
    Published {
        /// Where the table came from.
        source_name: String,
        /// 1-based data row.
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// `--model-label` names a model the published table does not have.
    #[error("--model-label '{label}': no published results for this model (known: {known})")]
    UnknownModel {
        /// The label given.
        label: String,
        /// The labels the table has, comma-separated.
        known: String,
    },
    /// A samples.jsonl line that is not what stasc writes (file and line named in the message).
    #[error("{}: {message}", path.display())]
    Samples {
        /// The file.
        path: PathBuf,
        /// What is wrong, starting with the line number.
        message: String,
    },
    /// A report template failed to parse or render.
    #[error("report template {name}: {message}")]
    Template {
        /// Template name or file.
        name: String,
        /// Tera's message, with its causes.
        message: String,
    },
}

impl ReportError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io { path: path.into(), error: source }
    }
}
