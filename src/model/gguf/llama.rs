//! The llama architecture's side of GGUF import: hyperparameters from `llama.*` metadata, llama.cpp tensor names
//! mapped to HF `LlamaForCausalLM` names, the inverse of llama.cpp's Q/K row permutation, and config.json /
//! generation_config.json. llama.cpp's converter permutes the rows of q_proj and k_proj so that rotary pairs sit
//! side by side (its "normal" rope); HF's rotate_half pairs element i with i + head_dim/2, so import undoes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};

use super::error::GgufError;
use super::metadata::MetadataValue;
use super::parser::{GgufFile, TensorInfo};

/// Hyperparameters of a llama-architecture GGUF.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaHyper {
    /// `llama.context_length`.
    pub context_length: u64,
    /// `llama.embedding_length` (hidden size).
    pub hidden_size: u64,
    /// `llama.feed_forward_length`.
    pub intermediate_size: u64,
    /// `llama.block_count`.
    pub num_hidden_layers: u64,
    /// `llama.attention.head_count`.
    pub num_attention_heads: u64,
    /// `llama.attention.head_count_kv` (defaults to the head count).
    pub num_key_value_heads: u64,
    /// `llama.attention.key_length`, else hidden size / heads.
    pub head_dim: u64,
    /// `llama.attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: f64,
    /// `llama.rope.freq_base` (default 10000, as llama.cpp).
    pub rope_theta: f64,
    /// HF `rope_scaling`, from `llama.rope.scaling.*`; `None` when the file has none.
    pub rope_scaling: Option<Value>,
}

/// What a GGUF tensor becomes in the HF checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedTensor {
    /// The HF name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub hf_name: String,
    /// Heads whose rows llama.cpp permuted (q: attention heads, k: kv heads); `None` for other tensors.
    pub unpermute_heads: Option<usize>,
}

impl LlamaHyper {
    /// Reads the `llama.*` keys; every missing or mistyped key is an error naming it.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, GgufError> {
        let path = file.path();
        let num_attention_heads = required_u64(file, "llama.attention.head_count")?;
        let hidden_size = required_u64(file, "llama.embedding_length")?;
        let num_key_value_heads = optional_u64(file, "llama.attention.head_count_kv")?.unwrap_or(num_attention_heads);
        if num_attention_heads == 0 || num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(GgufError::BadKey {
                path: path.to_path_buf(),
                key: "llama.attention.head_count_kv".into(),
                found: format!("{num_key_value_heads} (with {num_attention_heads} attention heads)"),
                expected: "a non-zero divisor of llama.attention.head_count",
            });
        }
        let head_dim = match optional_u64(file, "llama.attention.key_length")? {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(GgufError::BadKey {
                    path: path.to_path_buf(),
                    key: "llama.embedding_length".into(),
                    found: format!("{hidden_size} with {num_attention_heads} heads"),
                    expected: "a multiple of llama.attention.head_count (or an explicit llama.attention.key_length)",
                })
            }
        };
        if let Some(rope_dims) = optional_u64(file, "llama.rope.dimension_count")? {
            if rope_dims != head_dim {
                return Err(GgufError::BadKey {
                    path: path.to_path_buf(),
                    key: "llama.rope.dimension_count".into(),
                    found: format!("{rope_dims} (head dim {head_dim})"),
                    expected: "the head dimension: HF LlamaForCausalLM rotates whole heads",
                });
            }
        }
        Ok(Self {
            context_length: required_u64(file, "llama.context_length")?,
            hidden_size,
            intermediate_size: required_u64(file, "llama.feed_forward_length")?,
            num_hidden_layers: required_u64(file, "llama.block_count")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: required_f64(file, "llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: optional_f64(file, "llama.rope.freq_base")?.unwrap_or(10000.0),
            rope_scaling: rope_scaling(file)?,
        })
    }

    /// Maps every GGUF tensor to its HF name, checking the set and the shapes; all problems are reported together.
    pub fn map_tensors(&self, file: &GgufFile) -> Result<Vec<(TensorInfo, MappedTensor)>, GgufError> {
        let mut problems = Vec::new();
        let mut mapped = Vec::new();
        let vocab_rows = file.tensors().iter().find(|t| t.name == "token_embd.weight").map(|t| t.shape()[0]);
        for tensor in file.tensors() {
            match self.map_name(&tensor.name) {
                Some(m) => {
                    if let Some(expected) = self.expected_shape(&tensor.name, vocab_rows) {
                        if tensor.shape() != expected {
                            problems.push(format!(
                                "tensor \"{}\" has shape {:?}, expected {expected:?}",
                                tensor.name,
                                tensor.shape()
                            ));
                        }
                    }
                    mapped.push((tensor.clone(), m));
                }
                None if tensor.name == "rope_freqs.weight" => problems.push(
                    "tensor \"rope_freqs.weight\" holds Llama-3.1-style rope frequency factors, which import-gguf \
                     cannot express in config.json yet"
                        .into(),
                ),
                None => problems.push(format!("unexpected tensor \"{}\"", tensor.name)),
            }
        }
        let present: BTreeSet<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
        for name in self.required_names() {
            if !present.contains(name.as_str()) {
                problems.push(format!("missing tensor \"{name}\""));
            }
        }
        if problems.is_empty() {
            Ok(mapped)
        } else {
            Err(GgufError::TensorSet { path: file.path().to_path_buf(), architecture: "llama".into(), problems })
        }
    }

    fn required_names(&self) -> Vec<String> {
        let mut names = vec!["token_embd.weight".to_string(), "output_norm.weight".to_string()];
        for layer in 0..self.num_hidden_layers {
            for part in LAYER_PARTS.iter().map(|(gguf, _)| gguf) {
                names.push(format!("blk.{layer}.{part}.weight"));
            }
        }
        names
    }

    /// The HF name for a llama.cpp tensor name, or `None` when it is not part of a llama model.
    pub fn map_name(&self, name: &str) -> Option<MappedTensor> {
        let plain = |hf: &str| Some(MappedTensor { hf_name: hf.to_string(), unpermute_heads: None });
        match name {
            "token_embd.weight" => return plain("model.embed_tokens.weight"),
            "output_norm.weight" => return plain("model.norm.weight"),
            "output.weight" => return plain("lm_head.weight"),
            _ => {}
        }
        let rest = name.strip_prefix("blk.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer: u64 = layer.parse().ok().filter(|&l| l < self.num_hidden_layers)?;
        let (part, kind) = rest.rsplit_once('.')?;
        if kind != "weight" && kind != "bias" {
            return None;
        }
        let hf_part = LAYER_PARTS.iter().find(|(gguf, _)| *gguf == part)?.1;
        if kind == "bias" && hf_part.ends_with("layernorm") {
            return None;
        }
        let unpermute_heads = match part {
            "attn_q" => Some(self.num_attention_heads as usize),
            "attn_k" => Some(self.num_key_value_heads as usize),
            _ => None,
        };
        Some(MappedTensor { hf_name: format!("model.layers.{layer}.{hf_part}.{kind}"), unpermute_heads })
    }

    fn expected_shape(&self, name: &str, vocab_rows: Option<usize>) -> Option<Vec<usize>> {
        let h = self.hidden_size as usize;
        let q = (self.num_attention_heads * self.head_dim) as usize;
        let kv = (self.num_key_value_heads * self.head_dim) as usize;
        let ff = self.intermediate_size as usize;
        let vocab = vocab_rows?;
        let (part, kind) = name.rsplit_once('.')?;
        let part = part.rsplit('.').next()?;
        let weight = match part {
            "token_embd" | "output" => vec![vocab, h],
            "output_norm" | "attn_norm" | "ffn_norm" => vec![h],
            "attn_q" => vec![q, h],
            "attn_k" | "attn_v" => vec![kv, h],
            "attn_output" => vec![h, q],
            "ffn_gate" | "ffn_up" => vec![ff, h],
            "ffn_down" => vec![h, ff],
            _ => return None,
        };
        Some(if kind == "bias" { vec![weight[0]] } else { weight })
    }

    /// config.json for `LlamaForCausalLM`.
    pub fn config_json(
        &self,
        file: &GgufFile,
        vocab_size: usize,
        tied: bool,
        has_bias: BiasFlags,
        dtype: &str,
    ) -> Value {
        let token_id = |key: &str| file.get(key).and_then(MetadataValue::as_u64).map_or(Value::Null, Value::from);
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": has_bias.attention,
            "attention_dropout": 0.0,
            "bos_token_id": token_id("tokenizer.ggml.bos_token_id"),
            "eos_token_id": token_id("tokenizer.ggml.eos_token_id"),
            "pad_token_id": token_id("tokenizer.ggml.padding_token_id"),
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.context_length,
            "mlp_bias": has_bias.mlp,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pretraining_tp": 1,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": self.rope_scaling.clone().unwrap_or(Value::Null),
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": tied,
            "torch_dtype": dtype,
            "use_cache": true,
            "vocab_size": vocab_size,
        })
    }
}

/// Which optional bias families the checkpoint has (HF's `attention_bias` / `mlp_bias`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BiasFlags {
    /// q/k/v/o projections carry biases.
    pub attention: bool,
    /// gate/up/down projections carry biases.
    pub mlp: bool,
}

impl BiasFlags {
    /// Derives the flags from the HF names present.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut flags = Self::default();
        for name in names {
            flags.attention |= name.contains(".self_attn.") && name.ends_with(".bias");
            flags.mlp |= name.contains(".mlp.") && name.ends_with(".bias");
        }
        flags
    }
}

const LAYER_PARTS: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// generation_config.json: bos, eos (plus `tokenizer.ggml.eot_token_id` when it differs), pad.
pub fn generation_config_json(file: &GgufFile) -> Value {
    let id = |key: &str| file.get(key).and_then(MetadataValue::as_u64);
    let eos: Vec<u64> = [id("tokenizer.ggml.eos_token_id"), id("tokenizer.ggml.eot_token_id")]
        .into_iter()
        .flatten()
        .fold(Vec::new(), |mut acc, v| {
            if !acc.contains(&v) {
                acc.push(v);
            }
            acc
        });
    let eos = match eos.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    let mut config = BTreeMap::new();
    config.insert("bos_token_id", id("tokenizer.ggml.bos_token_id").map_or(Value::Null, Value::from));
    config.insert("eos_token_id", eos);
    if let Some(pad) = id("tokenizer.ggml.padding_token_id") {
        config.insert("pad_token_id", json!(pad));
    }
    json!(config)
}

/// llama.cpp's permutation of Q/K rows: viewed as (heads, 2, rows_per_head/2, cols), swap axes 1 and 2.
pub fn permute_rows(values: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    reorder_rows(values, rows, heads, |head, half, i, half_len| (head, i * 2 + half, half * half_len + i))
}

/// The inverse of [`permute_rows`]: restores HF row order from llama.cpp's.
pub fn unpermute_rows(values: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    reorder_rows(values, rows, heads, |head, half, i, half_len| (head, half * half_len + i, i * 2 + half))
}

/// Moves row `from` to row `to` within each head, for every (half, i) pair; `map` returns (head, to, from).
fn reorder_rows(
    values: &[f32],
    rows: usize,
    heads: usize,
    map: impl Fn(usize, usize, usize, usize) -> (usize, usize, usize),
) -> Vec<f32> {
    let cols = values.len() / rows;
    let per_head = rows / heads;
    let half_len = per_head / 2;
    let mut out = vec![0.0; values.len()];
    for head in 0..heads {
        for half in 0..2 {
            for i in 0..half_len {
                let (h, to, from) = map(head, half, i, half_len);
                let (to, from) = ((h * per_head + to) * cols, (h * per_head + from) * cols);
                out[to..to + cols].copy_from_slice(&values[from..from + cols]);
            }
        }
    }
    out
}

/// Checks that a permuted tensor splits into whole heads of even size.
pub fn check_permutable(path: &Path, name: &str, rows: usize, heads: usize) -> Result<(), GgufError> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(GgufError::TensorSet {
            path: path.to_path_buf(),
            architecture: "llama".into(),
            problems: vec![format!(
                "tensor \"{name}\" has {rows} rows, which do not split into {heads} heads of even size"
            )],
        });
    }
    Ok(())
}

fn rope_scaling(file: &GgufFile) -> Result<Option<Value>, GgufError> {
    let kind = file.get("llama.rope.scaling.type").map(|v| {
        v.as_str().map(str::to_string).ok_or_else(|| GgufError::BadKey {
            path: file.path().to_path_buf(),
            key: "llama.rope.scaling.type".into(),
            found: v.describe(),
            expected: "a string (none, linear or yarn)",
        })
    });
    let kind = match kind.transpose()? {
        None => return Ok(None),
        Some(k) if k == "none" => return Ok(None),
        Some(k) => k,
    };
    let factor = required_f64(file, "llama.rope.scaling.factor")?;
    match kind.as_str() {
        "linear" => Ok(Some(json!({"rope_type": "linear", "type": "linear", "factor": factor}))),
        "yarn" => {
            let original = required_u64(file, "llama.rope.scaling.original_context_length")?;
            Ok(Some(json!({
                "rope_type": "yarn", "type": "yarn", "factor": factor, "original_max_position_embeddings": original
            })))
        }
        other => Err(GgufError::BadKey {
            path: file.path().to_path_buf(),
            key: "llama.rope.scaling.type".into(),
            found: format!("\"{other}\""),
            expected: "none, linear or yarn",
        }),
    }
}

fn optional_u64(file: &GgufFile, key: &str) -> Result<Option<u64>, GgufError> {
    file.get(key)
        .map(|v| {
            v.as_u64().ok_or_else(|| GgufError::BadKey {
                path: file.path().to_path_buf(),
                key: key.into(),
                found: v.describe(),
                expected: "a non-negative integer",
            })
        })
        .transpose()
}

fn required_u64(file: &GgufFile, key: &str) -> Result<u64, GgufError> {
    optional_u64(file, key)?.ok_or_else(|| GgufError::MissingKey {
        path: file.path().to_path_buf(),
        key: key.into(),
        expected: "a non-negative integer",
    })
}

fn optional_f64(file: &GgufFile, key: &str) -> Result<Option<f64>, GgufError> {
    file.get(key)
        .map(|v| {
            v.as_f64().ok_or_else(|| GgufError::BadKey {
                path: file.path().to_path_buf(),
                key: key.into(),
                found: v.describe(),
                expected: "a number",
            })
        })
        .transpose()
}

fn required_f64(file: &GgufFile, key: &str) -> Result<f64, GgufError> {
    optional_f64(file, key)?.ok_or_else(|| GgufError::MissingKey {
        path: file.path().to_path_buf(),
        key: key.into(),
        expected: "a number",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's permute written the way its converter states it, as an independent check on the index algebra:
    /// view as (heads, 2, half, cols) and swap the two middle axes.
    fn reference_permute(values: &[f32], rows: usize, heads: usize) -> Vec<f32> {
        let cols = values.len() / rows;
        let half = rows / heads / 2;
        let mut out = Vec::with_capacity(values.len());
        for h in 0..heads {
            for i in 0..half {
                for j in 0..2 {
                    let src = ((h * 2 + j) * half + i) * cols;
                    out.extend_from_slice(&values[src..src + cols]);
                }
            }
        }
        out
    }

    #[test]
    fn permutation_matches_reference_and_round_trips() {
        for (rows, heads, cols) in [(8, 1, 3), (12, 3, 2), (576, 9, 5), (192, 3, 1)] {
            let values: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let permuted = permute_rows(&values, rows, heads);
            assert_eq!(permuted, reference_permute(&values, rows, heads), "rows {rows} heads {heads}");
            assert_ne!(permuted, values);
            assert_eq!(unpermute_rows(&permuted, rows, heads), values);
        }
    }

    #[test]
    fn unpermute_pairs_rotary_halves() {
        // One head of 4 rows, one column: llama.cpp stores rows (0, 2, 1, 3) of the HF layout.
        assert_eq!(unpermute_rows(&[0.0, 2.0, 1.0, 3.0], 4, 1), vec![0.0, 1.0, 2.0, 3.0]);
    }
}
