//! Errors of sweep files and sweep execution; each names the file, the key or the cell.

use std::path::PathBuf;

/// An error of a sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The sweep file itself is wrong (missing, not TOML, unknown key, wrong type, bad value): the same one-line
    /// errors as the YAML configs.
    #[error(transparent)]
    File(Box<crate::config::ConfigError>),
    /// A file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A cell's resolved configuration is invalid.
    #[error("{}: cell {cell}: {source}", file.display())]
    Cell {
        /// The sweep file.
        file: PathBuf,
        /// The cell name.
        cell: String,
        /// The configuration error (boxed: it is large and rare).
        source: Box<crate::config::ConfigError>,
    },
    /// Slurm refused or failed (sbatch, squeue, the record of submitted jobs).
    #[error(transparent)]
    Slurm(#[from] super::slurm::SlurmError),
    /// sweep.json of a sweep directory cannot be read.
    #[error("{}: {message}; expected the sweep.json that `stasc sweep FILE` writes in its output directory", path.display())]
    Index {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `--only` named no cell.
    #[error("no cell named '{name}' in this sweep{}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    NoSuchCell {
        /// The name given.
        name: String,
        /// The closest cell name.
        suggestion: Option<String>,
    },
}

impl From<crate::config::ConfigError> for SweepError {
    fn from(e: crate::config::ConfigError) -> Self {
        SweepError::File(Box::new(e))
    }
}
