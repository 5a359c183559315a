//! Errors of sweep files and sweep execution; each names the file, the key or the cell.

use std::path::PathBuf;

/// An error of a sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The sweep file does not exist.
    #[error("sweep file {} not found", path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The sweep file is not valid TOML.
    #[error("{}: not valid TOML: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key the sweep format does not know.
    #[error("{}: unknown key '{key}'{}", file.display(), suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The dotted key.
        key: String,
        /// The closest known key.
        suggestion: Option<String>,
    },
    /// A key with a value of the wrong type.
    #[error("{}: key '{key}' expects {expected}, found {found}", file.display())]
    Type {
        /// The file.
        file: PathBuf,
        /// The dotted key.
        key: String,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// A required key is missing.
    #[error("{}: missing required key '{key}'", file.display())]
    Missing {
        /// The file.
        file: PathBuf,
        /// The dotted key.
        key: String,
    },
    /// A grid value that its alias does not accept.
    #[error("{}: grid value {value} of '{key}' is not valid: {reason}", file.display())]
    BadValue {
        /// The file.
        file: PathBuf,
        /// The axis key.
        key: String,
        /// The value.
        value: String,
        /// What is accepted.
        reason: String,
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
    /// `--only` named no cell.
    #[error("no cell named '{name}' in this sweep{}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    NoSuchCell {
        /// The name given.
        name: String,
        /// The closest cell name.
        suggestion: Option<String>,
    },
}
