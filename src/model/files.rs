//! Resolving an HF model directory into the paths of its files, before anything is read: config.json, the weights
//! (one model.safetensors or shards listed by model.safetensors.index.json) and the optional tokenizer and generation
//! files. Loading is a separate step with its own errors.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ModelError;

/// Where a checkpoint's weights live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// A single model.safetensors.
    Single(PathBuf),
    /// Shards listed by an index file (model.safetensors.index.json).
    Sharded {
        /// The index file.
        index: PathBuf,
        /// The distinct shard files the index names, in name order.
        shards: Vec<PathBuf>,
    },
}

impl WeightFiles {
    /// Every safetensors file to read.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            WeightFiles::Single(p) => vec![p.as_path()],
            WeightFiles::Sharded { shards, .. } => shards.iter().map(PathBuf::as_path).collect(),
        }
    }
}

/// The files of one HF model directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The directory.
    pub dir: PathBuf,
    /// config.json.
    pub config: PathBuf,
    /// The weights.
    pub weights: WeightFiles,
    /// tokenizer.json, when present.
    pub tokenizer: Option<PathBuf>,
    /// tokenizer_config.json, when present.
    pub tokenizer_config: Option<PathBuf>,
    /// generation_config.json, when present.
    pub generation_config: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

impl ModelFiles {
    /// Finds the files of the model directory `dir`; fails if config.json or the weights are absent.
    pub fn resolve(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.into(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            });
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(ModelError::MissingFile { dir: dir.into(), what: "config", expected: "config.json".into() });
        }
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let weights = if single.is_file() {
            WeightFiles::Single(single)
        } else if index.is_file() {
            let shards = read_shard_index(&index)?.iter().map(|f| dir.join(f)).collect::<Vec<_>>();
            if let Some(absent) = shards.iter().find(|p| !p.is_file()) {
                return Err(ModelError::Safetensors {
                    path: index,
                    message: format!("names shard {} which does not exist", absent.display()),
                });
            }
            WeightFiles::Sharded { index, shards }
        } else {
            return Err(ModelError::MissingFile {
                dir: dir.into(),
                what: "weights",
                expected: "model.safetensors, or shards with model.safetensors.index.json".into(),
            });
        };
        let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        Ok(ModelFiles {
            dir: dir.into(),
            config,
            weights,
            tokenizer: optional("tokenizer.json"),
            tokenizer_config: optional("tokenizer_config.json"),
            generation_config: optional("generation_config.json"),
        })
    }

    /// tokenizer.json, or an error saying the directory has none.
    pub fn require_tokenizer(&self) -> Result<&Path, ModelError> {
        self.tokenizer.as_deref().ok_or_else(|| ModelError::MissingFile {
            dir: self.dir.clone(),
            what: "tokenizer",
            expected: "tokenizer.json".into(),
        })
    }
}

/// The shard file names an index refers to (deduplicated, sorted).
fn read_shard_index(index: &Path) -> Result<BTreeSet<String>, ModelError> {
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io { path: index.into(), error: source })?;
    let parsed: ShardIndex =
        serde_json::from_str(&text).map_err(|source| ModelError::Json { path: index.into(), error: source })?;
    if parsed.weight_map.is_empty() {
        return Err(ModelError::InvalidConfig {
            path: index.into(),
            key: "weight_map".into(),
            expected: "expected at least one tensor".into(),
        });
    }
    Ok(parsed.weight_map.into_values().collect())
}

/// The tensor-name -> shard-file map of an index file, for checking that each shard holds what the index says.
pub fn shard_weight_map(index: &Path) -> Result<std::collections::BTreeMap<String, String>, ModelError> {
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io { path: index.into(), error: source })?;
    let parsed: ShardIndex =
        serde_json::from_str(&text).map_err(|source| ModelError::Json { path: index.into(), error: source })?;
    Ok(parsed.weight_map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_weights_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = ModelFiles::resolve(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no weights found") && err.contains("model.safetensors.index.json"), "{err}");
    }

    #[test]
    fn missing_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::resolve(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }

    #[test]
    fn sharded_index_with_absent_shard_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let err = ModelFiles::resolve(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model-00001-of-00002.safetensors"), "{err}");
    }
}
