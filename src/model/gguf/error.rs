//! Typed errors of GGUF reading and import. Every message is one line that names the file and what was wrong with
//! it (the metadata key, the tensor, the byte range), so a user can tell a corrupt download from an unsupported model.

use std::path::PathBuf;

/// Why a GGUF file could not be read or imported.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read GGUF file {}: {source}", path.display())]
    Io {
        /// The GGUF file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("{} is not a GGUF file: it starts with bytes {found:02x?}, expected \"GGUF\" (47 47 55 46)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The bytes found (fewer than four when the file is that short).
        found: Vec<u8>,
    },
    /// A GGUF version other than 2 or 3.
    #[error("{}: GGUF version {version} is not supported (supported: 2, 3){hint}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version field as read (little-endian).
        version: u32,
        /// Extra advice, e.g. that the file looks big-endian; empty when there is none.
        hint: String,
    },
    /// The file ends before a structure it announces.
    #[error("{} is truncated: {what} needs bytes up to offset {needed}, but the file has {len} bytes", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read, e.g. `metadata entry 12 ("tokenizer.ggml.tokens")`.
        what: String,
        /// The end offset the read needed.
        needed: u64,
        /// The file length.
        len: u64,
    },
    /// A metadata value type id outside the GGUF specification.
    #[error("{}: metadata key \"{key}\" has unknown value type {type_id} (GGUF defines 0..=12)", path.display())]
    UnknownMetadataType {
        /// The file.
        path: PathBuf,
        /// The metadata key whose value could not be decoded.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// A structure that is present but violates the format (bad UTF-8, zero alignment, a tensor past the end...).
    #[error("{}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key or tensor.
        message: String,
    },
    /// A required metadata key is absent.
    #[error("{}: metadata key \"{key}\" is missing; expected {expected}", path.display())]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What the key should hold.
        expected: &'static str,
    },
    /// A metadata key holds a value of the wrong type or range.
    #[error("{}: metadata key \"{key}\" holds {found}; expected {expected}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What was found, e.g. `a string "x"`.
        found: String,
        /// What the key should hold.
        expected: &'static str,
    },
    /// A tensor whose type stasc cannot dequantise.
    #[error(
        "{}: tensor \"{tensor}\" has type {type_name}, which stasc cannot dequantise (supported: {})",
        path.display(),
        crate::model::gguf::dequant::SUPPORTED_TYPES
    )]
    UnsupportedTensorType {
        /// The file.
        path: PathBuf,
        /// The tensor name as in the GGUF.
        tensor: String,
        /// The ggml type name (or `type id N` when unknown).
        type_name: String,
    },
    /// `general.architecture` names a model family import-gguf cannot convert.
    #[error("{}: architecture \"{found}\" cannot be imported (supported: llama)", path.display())]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture found.
        found: String,
    },
    /// The tensors do not form the model the metadata describes; every problem is listed at once.
    #[error("{}: the tensors do not match a {architecture} model: {}", path.display(), problems.join("; "))]
    TensorSet {
        /// The file.
        path: PathBuf,
        /// The architecture being converted.
        architecture: String,
        /// One entry per missing, unexpected or misshaped tensor.
        problems: Vec<String>,
    },
    /// The vocabulary cannot be turned into a tokenizer.json.
    #[error("{}: cannot build tokenizer.json: {message}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the metadata key.
        message: String,
    },
    /// The output directory exists and `force` was not given.
    #[error("output directory {} already exists; pass --force to replace it", path.display())]
    OutputExists {
        /// The output directory.
        path: PathBuf,
    },
    /// Writing the output failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}
