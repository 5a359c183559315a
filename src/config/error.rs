//! Typed errors of configuration loading. Every message is one line that names the file, the dotted key and what
//! was expected, so a user can fix the YAML without reading code.

use std::path::PathBuf;

/// Why a configuration file could not be turned into a resolved configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist.
    #[error("config file {} not found", path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The path as given.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML (or TOML) syntax.
    #[error("{}: not valid {format}: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// "YAML" or "TOML".
        format: &'static str,
        /// The parser's message, with its line and column.
        message: String,
    },
    /// A key that no known section has.
    #[error("{}: unknown key '{key}'{}", file.display(), suggestion_text(suggestion))]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The dotted path of the key, e.g. `training.learnig_rate`.
        key: String,
        /// The closest known key, if any is close.
        suggestion: Option<String>,
    },
    /// A value of the wrong type.
    #[error("{}: key '{key}' expects {expected}, found {found}", file.display())]
    WrongType {
        /// The file.
        file: PathBuf,
        /// The dotted path of the key (`<top level>` for the document itself).
        key: String,
        /// What the key accepts, e.g. "a number".
        expected: &'static str,
        /// What was there, e.g. `string "hot"`.
        found: String,
    },
    /// A key without a default is absent.
    #[error("{}: missing required key '{key}'", file.display())]
    Missing {
        /// The file.
        file: PathBuf,
        /// The dotted path of the key.
        key: String,
    },
    /// A value of the right type but outside what the key accepts.
    #[error("{}: key '{key}' {reason}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The dotted path of the key.
        key: String,
        /// What is wrong, as the end of a sentence starting with the key, e.g. "must be in (0, 1], found 1.5".
        reason: String,
    },
    /// A `key=value` override from the command line is malformed, names no known key, or gives a bad value.
    #[error("command-line override '{arg}': {reason}")]
    Override {
        /// The override as typed, e.g. `ft.training.learning_rate=1e-5`.
        arg: String,
        /// What is wrong, e.g. "unknown key 'temprature' (did you mean 'temperature'?)".
        reason: String,
    },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(known) => format!(" (did you mean '{known}'?)"),
        None => String::new(),
    }
}

impl ConfigError {
    /// The dotted key this error is about and what is wrong with it (the message without the file), for errors
    /// about one key; None for file-level errors.
    pub fn key_and_reason(&self) -> Option<(&str, String)> {
        match self {
            ConfigError::WrongType { key, expected, found, .. } => {
                Some((key, format!("expects {expected}, found {found}")))
            }
            ConfigError::Invalid { key, reason, .. } => Some((key, reason.clone())),
            ConfigError::Missing { key, .. } => Some((key, "is required".to_string())),
            _ => None,
        }
    }

    /// An [`ConfigError::Invalid`] for `key` of `file`.
    pub fn invalid(file: &std::path::Path, key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { file: file.to_path_buf(), key: key.to_string(), reason: reason.into() }
    }
}
