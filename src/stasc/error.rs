//! Errors of the STaSC loop. Each names the file, iteration or phase it concerns.

use std::path::{Path, PathBuf};

/// An error of the loop or its run directory.
#[derive(Debug, thiserror::Error)]
pub enum StascError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file or line could not be parsed or written.
    #[error("{path}: line {line}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the whole file is concerned).
        line: usize,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The run directory belongs to a different configuration.
    #[error("{dir}: the configuration changed since this run started ({changes}); rerun with --force to continue anyway, or use another --out")]
    ConfigChanged {
        /// The run directory.
        dir: PathBuf,
        /// The changed keys, described.
        changes: String,
    },
    /// The backend failed in a phase.
    #[error("iteration {iteration}, {phase}: {source}")]
    Backend {
        /// Iteration number.
        iteration: usize,
        /// Phase name.
        phase: &'static str,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend returned the wrong number of samples.
    #[error(
        "iteration {iteration}, {phase}: the backend returned {got} samples for request {key}, expected {expected}"
    )]
    SampleCount {
        /// Iteration number.
        iteration: usize,
        /// Phase name.
        phase: &'static str,
        /// The request key.
        key: String,
        /// Samples returned.
        got: usize,
        /// Samples asked for.
        expected: usize,
    },
    /// Scoring or prompt building failed for a sample.
    #[error("iteration {iteration}, {phase}, question {id}: {message}")]
    Sample {
        /// Iteration number.
        iteration: usize,
        /// Phase name.
        phase: &'static str,
        /// Question id.
        id: String,
        /// What went wrong.
        message: String,
    },
    /// Saved state is inconsistent with the data (e.g. a question missing from saved answers).
    #[error("{path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        message: String,
    },
}

impl StascError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StascError::Io { path: path.to_path_buf(), source }
    }
}
