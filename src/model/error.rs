//! The model engine's typed error: every failure while resolving, reading or running a checkpoint, each with a
//! message that names the file, key or tensor and what was expected.

use std::fmt;
use std::path::PathBuf;

/// Something went wrong with a model directory, its files or a forward pass.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the model directory must contain is absent.
    #[error("{dir}: no {what} found (expected {expected})")]
    MissingFile {
        /// The model directory that was searched.
        dir: PathBuf,
        /// What was looked for, in words ("config", "weights", "tokenizer").
        what: &'static str,
        /// The file name(s) that would have satisfied it.
        expected: String,
    },
    /// A file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// A JSON file did not parse.
    #[error("{path}: invalid JSON: {error}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        error: serde_json::Error,
    },
    /// A config value is missing or out of range.
    #[error("{path}: key `{key}`: {expected}")]
    InvalidConfig {
        /// The config file (config.json, generation_config.json, ...).
        path: PathBuf,
        /// The offending key, as spelled in the file.
        key: String,
        /// What was expected instead.
        expected: String,
    },
    /// The checkpoint's architecture is not one stasc implements.
    #[error("{path}: unsupported architecture `{name}` (supported: {supported})")]
    UnsupportedArchitecture {
        /// The config.json that named it.
        path: PathBuf,
        /// The architecture named in config.json.
        name: String,
        /// The supported architectures, comma separated.
        supported: String,
    },
    /// A safetensors file is malformed or holds a dtype we cannot load.
    #[error("{path}: {message}")]
    Safetensors {
        /// The safetensors (or index) file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The checkpoint's tensors do not match what the architecture needs; lists every problem at once.
    #[error("{dir}: checkpoint does not match the {architecture} architecture: {report}")]
    TensorMismatch {
        /// The model directory.
        dir: PathBuf,
        /// The architecture the tensors were checked against.
        architecture: &'static str,
        /// Every missing, unexpected and misshaped tensor.
        report: TensorReport,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer.json (or tokenizer_config.json) involved.
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },
    /// The chat template could not be loaded or rendered.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A device or dtype option is invalid or unavailable.
    #[error("{0}")]
    Device(String),
    /// libtorch failed during an operation (often: out of memory).
    #[error("{context}: {error}")]
    Torch {
        /// What stasc was doing.
        context: String,
        /// libtorch's error.
        error: tch::TchError,
    },
}

impl ModelError {
    /// Wraps a libtorch error with what stasc was doing when it happened.
    pub fn torch(context: impl Into<String>) -> impl FnOnce(tch::TchError) -> ModelError {
        let context = context.into();
        move |source| ModelError::Torch { context, error: source }
    }
}

impl From<tch::TchError> for ModelError {
    fn from(source: tch::TchError) -> Self {
        ModelError::Torch { context: "tensor operation failed".to_string(), error: source }
    }
}

/// The differences between the tensors an architecture needs and those a checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorReport {
    /// Tensors the architecture needs that the checkpoint lacks.
    pub missing: Vec<String>,
    /// Tensors the checkpoint holds that the architecture does not use.
    pub unexpected: Vec<String>,
    /// Tensors present under the right name with the wrong shape: (name, expected shape, found shape).
    pub misshaped: Vec<(String, Vec<i64>, Vec<i64>)>,
}

impl TensorReport {
    /// True when the checkpoint matches exactly.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }
}

impl fmt::Display for TensorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing {}: {}", self.missing.len(), self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected {}: {}", self.unexpected.len(), self.unexpected.join(", ")));
        }
        if !self.misshaped.is_empty() {
            let shapes: Vec<String> = self
                .misshaped
                .iter()
                .map(|(name, want, got)| format!("{name} (expected {want:?}, found {got:?})"))
                .collect();
            parts.push(format!("misshaped {}: {}", self.misshaped.len(), shapes.join(", ")));
        }
        write!(f, "{}", parts.join("; "))
    }
}
