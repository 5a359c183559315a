//! The trainer's typed error: bad SFT data (file, line, what was expected), LoRA targets that match nothing, and
//! failures of the model, libtorch or the file system, each naming what it was doing.

use std::path::PathBuf;

use crate::model::ModelError;

/// Something went wrong while preparing data, training or saving a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A line of the SFT data file is not what the trainer expects.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// One conversation cannot be trained on.
    #[error("example {index}: {message}")]
    Example {
        /// 0-based position in the examples given.
        index: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Every example was dropped (too long, or no loss tokens).
    #[error("no example left to train on: {given} given, {too_long} longer than block_size {block_size} dropped, {no_labels} without loss tokens dropped")]
    NoExamples {
        /// Examples given.
        given: usize,
        /// Dropped for length.
        too_long: usize,
        /// Dropped because no label token survived.
        no_labels: usize,
        /// The length limit.
        block_size: usize,
    },
    /// `peft.lora_target_modules` names modules the model does not have.
    #[error("peft.lora_target_modules: {unmatched} match no module of this model (available: {available})")]
    LoraTargets {
        /// The names that matched nothing, comma separated.
        unmatched: String,
        /// The linear modules adapters can be put on, comma separated.
        available: String,
    },
    /// An option combination the trainer cannot honour.
    #[error("{0}")]
    Invalid(String),
    /// The data-parallel workers could not run together (devices, NCCL, another worker's failure).
    #[error(transparent)]
    Parallel(crate::dist::DistError),
    /// A libtorch operation failed.
    #[error("{context}: {source}")]
    Torch {
        /// What the trainer was doing.
        context: String,
        /// The libtorch error.
        source: tch::TchError,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file could not be read or written.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A safetensors file could not be written or read.
    #[error("{path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl TrainError {
    /// A closure mapping a libtorch error to a [`TrainError::Torch`] with `context`.
    pub fn torch(context: impl Into<String>) -> impl FnOnce(tch::TchError) -> TrainError {
        let context = context.into();
        move |source| TrainError::Torch { context, source }
    }

    /// A closure mapping an I/O error on `path` to a [`TrainError::Io`].
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }
}

impl From<crate::dist::DistError> for TrainError {
    fn from(e: crate::dist::DistError) -> Self {
        TrainError::Parallel(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_can_cross_threads_as_backend_errors() {
        fn boxed(e: TrainError) -> Box<dyn std::error::Error + Send + Sync> {
            Box::new(e)
        }
        let e = boxed(TrainError::Invalid("x".into()));
        assert_eq!(e.to_string(), "x");
    }
}
