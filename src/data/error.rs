//! Typed errors of dataset loading; each message names the file (and the row, where one is at fault).

use std::path::PathBuf;

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// `data_path` does not exist.
    #[error("dataset {} not found (data_path)", path.display())]
    NotFound {
        /// The path as configured.
        path: PathBuf,
    },
    /// `data_path` exists but holds no dataset layout we read.
    #[error(
        "{}: no dataset found (expected an HF save_to_disk directory with dataset_dict.json, a directory with \
         train.jsonl and test.jsonl or train.json and test.json, or a .json file holding {{\"train\": [...], \
         \"test\": [...]}})",
        path.display()
    )]
    UnknownLayout {
        /// The path as configured.
        path: PathBuf,
    },
    /// A split the run needs is absent.
    #[error("dataset {}: split '{split}' missing (looked for {expected})", dataset.display())]
    MissingSplit {
        /// The dataset path.
        dataset: PathBuf,
        /// "train" or "test".
        split: &'static str,
        /// Where the split was looked for.
        expected: String,
    },
    /// A split with no rows.
    #[error("{}: split '{split}' has no rows", file.display())]
    EmptySplit {
        /// The file or directory of the split.
        file: PathBuf,
        /// "train" or "test".
        split: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON or JSONL file (or an HF metadata file) is not valid JSON.
    #[error("{}: {location}not valid JSON: {message}", file.display())]
    Json {
        /// The file.
        file: PathBuf,
        /// "line N: " for JSONL, empty otherwise.
        location: String,
        /// The parser's message.
        message: String,
    },
    /// An Arrow file is not a valid Arrow IPC stream or holds a column type we cannot read.
    #[error("{}: not a valid HF datasets Arrow file: {message}", file.display())]
    Arrow {
        /// The .arrow file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A mapped column is absent from an Arrow file's schema.
    #[error("{}: no column '{column}' ({key}); columns are: {available}", file.display())]
    MissingColumn {
        /// The .arrow file.
        file: PathBuf,
        /// The missing column.
        column: String,
        /// The config key that names it (id_col, question_col, gold_col).
        key: &'static str,
        /// The columns the file has, comma-separated.
        available: String,
    },
    /// One row is unusable.
    #[error("{}: {location}: {reason}", file.display())]
    BadRow {
        /// The file holding the row.
        file: PathBuf,
        /// "row N" (1-based within the file) or "line N" for JSONL.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
}
