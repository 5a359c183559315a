//! generation_config.json: the checkpoint's own generation defaults (EOS ids, which may be a list, and sampling
//! defaults where the authors set them).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::config::token_id_list;
use super::error::ModelError;

/// generation_config.json as HF writes it; only the keys stasc reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawGenerationConfig {
    /// End-of-sequence id(s): an integer or a list.
    pub eos_token_id: Option<Value>,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<Value>,
    /// Padding id.
    pub pad_token_id: Option<Value>,
    /// Whether the authors meant sampling (false means greedy).
    pub do_sample: Option<bool>,
    /// Default sampling temperature.
    pub temperature: Option<f64>,
    /// Default nucleus mass.
    pub top_p: Option<f64>,
    /// Default top-k.
    pub top_k: Option<i64>,
}

/// The resolved generation defaults of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// Ids that end a sequence (empty when the file gives none).
    pub eos_token_id: Vec<u32>,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
    /// Whether the authors meant sampling.
    pub do_sample: Option<bool>,
    /// Default temperature.
    pub temperature: Option<f64>,
    /// Default nucleus mass.
    pub top_p: Option<f64>,
    /// Default top-k.
    pub top_k: Option<i64>,
}

impl GenerationConfig {
    /// Reads generation_config.json.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), error: source })?;
        Self::from_json_str(&text, path)
    }

    /// Parses generation_config.json text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, ModelError> {
        let raw: RawGenerationConfig =
            serde_json::from_str(text).map_err(|source| ModelError::Json { path: path.into(), error: source })?;
        let ids = |value: &Option<Value>, key: &str| -> Result<Vec<u32>, ModelError> {
            match value {
                None => Ok(Vec::new()),
                Some(v) => token_id_list(v).ok_or_else(|| ModelError::InvalidConfig {
                    path: path.into(),
                    key: key.into(),
                    expected: format!("expected an integer or a list of integers, found {v}"),
                }),
            }
        };
        Ok(GenerationConfig {
            eos_token_id: ids(&raw.eos_token_id, "eos_token_id")?,
            bos_token_id: ids(&raw.bos_token_id, "bos_token_id")?.first().copied(),
            pad_token_id: ids(&raw.pad_token_id, "pad_token_id")?.first().copied(),
            do_sample: raw.do_sample,
            temperature: raw.temperature,
            top_p: raw.top_p,
            top_k: raw.top_k,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_may_be_an_int_or_a_list() {
        let p = Path::new("generation_config.json");
        let one = GenerationConfig::from_json_str(r#"{"eos_token_id": 2, "temperature": 0.7}"#, p).unwrap();
        assert_eq!(one.eos_token_id, vec![2]);
        assert_eq!(one.temperature, Some(0.7));
        let many = GenerationConfig::from_json_str(r#"{"eos_token_id": [151645, 151643]}"#, p).unwrap();
        assert_eq!(many.eos_token_id, vec![151645, 151643]);
        let err = GenerationConfig::from_json_str(r#"{"eos_token_id": "x"}"#, p).unwrap_err().to_string();
        assert!(err.contains("eos_token_id"), "{err}");
    }
}
