//! config.json: the raw file as HF writes it (`RawConfig`, field names verbatim, transformers 4 and 5 spellings of the
//! rotary settings) and the resolved, validated `ModelConfig` the layers are built from.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::error::ModelError;

/// An architecture stasc implements, as named in config.json's `architectures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `Qwen2ForCausalLM`: Llama layout plus biases on q/k/v.
    Qwen2,
    /// `LlamaForCausalLM` (SmolLM2, Llama 2/3).
    Llama,
    /// `Phi3ForCausalLM`: fused `qkv_proj` and `gate_up_proj`.
    Phi3,
}

impl Architecture {
    /// Every supported architecture.
    pub const ALL: [Architecture; 3] = [Architecture::Qwen2, Architecture::Llama, Architecture::Phi3];

    /// The HF class name, as config.json spells it.
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Phi3 => "Phi3ForCausalLM",
        }
    }

    /// The HF `model_type` of the architecture.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Llama => "llama",
            Architecture::Phi3 => "phi3",
        }
    }

    fn supported_list() -> String {
        Self::ALL.iter().map(|a| a.hf_name()).collect::<Vec<_>>().join(", ")
    }
}

/// config.json as written by HF transformers; only the keys stasc reads. Unknown keys are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawConfig {
    /// HF class names; the first decides the architecture.
    pub architectures: Option<Vec<String>>,
    /// HF model type, used when `architectures` is absent.
    pub model_type: Option<String>,
    /// Rows of the embedding matrix.
    pub vocab_size: Option<i64>,
    /// Width of the residual stream.
    pub hidden_size: Option<i64>,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: Option<i64>,
    /// Number of decoder layers.
    pub num_hidden_layers: Option<i64>,
    /// Number of query heads.
    pub num_attention_heads: Option<i64>,
    /// Number of key/value heads (GQA); defaults to `num_attention_heads`.
    pub num_key_value_heads: Option<i64>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<i64>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: Option<f64>,
    /// RoPE base (transformers 4 spelling).
    pub rope_theta: Option<f64>,
    /// RoPE scaling (transformers 4 spelling), may be null.
    pub rope_scaling: Option<Value>,
    /// RoPE settings (transformers 5 spelling: rope_type, rope_theta, factor, ...).
    pub rope_parameters: Option<Value>,
    /// Fraction of each head that is rotated (Phi3 family).
    pub partial_rotary_factor: Option<f64>,
    /// Longest context the model was built for.
    pub max_position_embeddings: Option<i64>,
    /// Pre-training context of a scaled-RoPE model (Phi3 writes it at top level).
    pub original_max_position_embeddings: Option<i64>,
    /// Whether lm_head shares the embedding matrix (checked against the checkpoint, which wins).
    pub tie_word_embeddings: Option<bool>,
    /// Llama: biases on q/k/v/o projections.
    pub attention_bias: Option<bool>,
    /// Llama: biases on the MLP projections.
    pub mlp_bias: Option<bool>,
    /// MLP activation; only "silu" is implemented.
    pub hidden_act: Option<String>,
    /// Sliding-window attention span, may be null.
    pub sliding_window: Option<i64>,
    /// Qwen2: whether the sliding window is in use.
    pub use_sliding_window: Option<bool>,
    /// End-of-sequence id(s): an integer or a list.
    pub eos_token_id: Option<Value>,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<Value>,
    /// Std-dev of the normal initialisation, used for random weights.
    pub initializer_range: Option<f64>,
}

/// How positions are rotated: the inverse frequencies' scaling rule.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor` (rope_type "linear").
    Linear {
        /// Divisor of the positions.
        factor: f64,
    },
    /// Llama 3.1 frequency-dependent scaling (rope_type "llama3").
    Llama3 {
        /// Scale of the low frequencies.
        factor: f64,
        /// Wavelength bound (as a divisor of the original context) above which frequencies are scaled.
        low_freq_factor: f64,
        /// Wavelength bound below which frequencies are kept.
        high_freq_factor: f64,
        /// Pre-training context length.
        original_max_position_embeddings: i64,
    },
}

/// Resolved rotary-embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// The base of the inverse frequencies.
    pub rope_theta: f64,
    /// Fraction of the head dimension that is rotated.
    pub partial_rotary_factor: f64,
    /// The scaling rule.
    pub scaling: RopeScaling,
}

/// The resolved, validated model shape every layer is built from. Field names follow config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The architecture.
    pub architecture: Architecture,
    /// Rows of the embedding matrix and columns of the logits.
    pub vocab_size: i64,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: i64,
    /// Number of decoder layers.
    pub num_hidden_layers: i64,
    /// Number of query heads.
    pub num_attention_heads: i64,
    /// Number of key/value heads.
    pub num_key_value_heads: i64,
    /// Per-head width.
    pub head_dim: i64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary embedding.
    pub rope: RopeConfig,
    /// Longest context the model was built for.
    pub max_position_embeddings: i64,
    /// Sliding-window span when the model uses one; stasc then limits the context to it (where the window is inert).
    pub sliding_window: Option<i64>,
    /// Biases on q/k/v (Qwen2 always; Llama when `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj (Llama `attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP projections (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// Whether config.json declares tied embeddings (the checkpoint decides when loading).
    pub tie_word_embeddings: bool,
    /// End-of-sequence ids from config.json.
    pub eos_token_id: Vec<u32>,
    /// Std-dev of the normal initialisation used for random weights.
    pub initializer_range: f64,
}

impl ModelConfig {
    /// Reads and resolves a config.json file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), error: source })?;
        Self::from_json_str(&text, path)
    }

    /// Resolves config.json text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, ModelError> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|source| ModelError::Json { path: path.into(), error: source })?;
        Self::resolve(&raw, path)
    }

    /// Turns a raw config into a validated one, filling HF's per-architecture defaults.
    pub fn resolve(raw: &RawConfig, path: &Path) -> Result<Self, ModelError> {
        let bad = |key: &str, expected: String| ModelError::InvalidConfig {
            path: path.to_path_buf(),
            key: key.to_string(),
            expected,
        };
        let architecture = resolve_architecture(raw, path)?;
        let required = |value: Option<i64>, key: &str| -> Result<i64, ModelError> {
            match value {
                Some(v) if v > 0 => Ok(v),
                Some(v) => Err(bad(key, format!("expected a positive integer, found {v}"))),
                None => Err(bad(key, "missing; expected a positive integer".to_string())),
            }
        };
        let vocab_size = required(raw.vocab_size, "vocab_size")?;
        let hidden_size = required(raw.hidden_size, "hidden_size")?;
        let intermediate_size = required(raw.intermediate_size, "intermediate_size")?;
        let num_hidden_layers = required(raw.num_hidden_layers, "num_hidden_layers")?;
        let num_attention_heads = required(raw.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads =
            required(raw.num_key_value_heads.or(Some(num_attention_heads)), "num_key_value_heads")?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(bad(
                "num_key_value_heads",
                format!("must divide num_attention_heads ({num_attention_heads}), found {num_key_value_heads}"),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => required(Some(d), "head_dim")?,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(bad(
                    "head_dim",
                    format!("missing, and hidden_size {hidden_size} is not a multiple of {num_attention_heads} heads"),
                ))
            }
        };
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                return Err(bad("hidden_act", format!("only \"silu\" is implemented, found {act:?}")));
            }
        }
        let (default_eps, default_max_pos) = match architecture {
            Architecture::Qwen2 => (1e-6, 32768),
            Architecture::Llama => (1e-6, 2048),
            Architecture::Phi3 => (1e-5, 4096),
        };
        let max_position_embeddings =
            required(raw.max_position_embeddings.or(Some(default_max_pos)), "max_position_embeddings")?;
        let rope = resolve_rope(raw, max_position_embeddings, path)?;
        if head_dim % 2 != 0 {
            return Err(bad("head_dim", format!("must be even for rotary embeddings, found {head_dim}")));
        }
        let sliding_window = match architecture {
            Architecture::Qwen2 if raw.use_sliding_window == Some(true) => raw.sliding_window,
            Architecture::Qwen2 => None,
            _ => raw.sliding_window,
        };
        let (qkv_bias, o_bias, mlp_bias) = match architecture {
            Architecture::Qwen2 => (true, false, false),
            Architecture::Llama => {
                let attention_bias = raw.attention_bias.unwrap_or(false);
                (attention_bias, attention_bias, raw.mlp_bias.unwrap_or(false))
            }
            Architecture::Phi3 => (false, false, false),
        };
        let eos_token_id = match &raw.eos_token_id {
            Some(value) => token_id_list(value).ok_or_else(|| {
                bad("eos_token_id", format!("expected an integer or a list of integers, found {value}"))
            })?,
            None => Vec::new(),
        };
        Ok(ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(default_eps),
            rope,
            max_position_embeddings,
            sliding_window,
            qkv_bias,
            o_bias,
            mlp_bias,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            eos_token_id,
            initializer_range: raw.initializer_range.unwrap_or(0.02),
        })
    }

    /// The longest sequence (prompt + generated) this implementation runs exactly: the model's context, limited to
    /// the sliding window where one is configured (below it the window never masks anything).
    pub fn max_context(&self) -> i64 {
        match self.sliding_window {
            Some(w) if w > 0 => self.max_position_embeddings.min(w),
            _ => self.max_position_embeddings,
        }
    }

    /// Number of rotated dimensions per head.
    pub fn rotary_dim(&self) -> i64 {
        let dim = (self.head_dim as f64 * self.rope.partial_rotary_factor) as i64;
        dim - dim % 2
    }
}

/// Parses an HF token-id field that may be an integer or a list of integers.
pub fn token_id_list(value: &Value) -> Option<Vec<u32>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Number(n) => n.as_u64().and_then(|v| u32::try_from(v).ok()).map(|v| vec![v]),
        Value::Array(items) => items.iter().map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok())).collect(),
        _ => None,
    }
}

fn resolve_architecture(raw: &RawConfig, path: &Path) -> Result<Architecture, ModelError> {
    let unsupported = |name: String| ModelError::UnsupportedArchitecture {
        path: path.to_path_buf(),
        name,
        supported: Architecture::supported_list(),
    };
    if let Some(first) = raw.architectures.as_ref().and_then(|a| a.first()) {
        return Architecture::ALL.into_iter().find(|a| a.hf_name() == first).ok_or_else(|| unsupported(first.clone()));
    }
    match &raw.model_type {
        Some(t) => Architecture::ALL.into_iter().find(|a| a.model_type() == t).ok_or_else(|| unsupported(t.clone())),
        None => Err(ModelError::InvalidConfig {
            path: path.to_path_buf(),
            key: "architectures".to_string(),
            expected: format!("missing (and no model_type); expected one of {}", Architecture::supported_list()),
        }),
    }
}

/// Merges transformers 4 (`rope_theta` + `rope_scaling`) and 5 (`rope_parameters`) spellings into one setting.
fn resolve_rope(raw: &RawConfig, max_position_embeddings: i64, path: &Path) -> Result<RopeConfig, ModelError> {
    let (key, params) = match (&raw.rope_parameters, &raw.rope_scaling) {
        (Some(p @ Value::Object(_)), _) => ("rope_parameters", Some(p)),
        (_, Some(p @ Value::Object(_))) => ("rope_scaling", Some(p)),
        (_, Some(Value::Null) | None) => ("rope_scaling", None),
        (_, Some(other)) => {
            return Err(ModelError::InvalidConfig {
                path: path.into(),
                key: "rope_scaling".into(),
                expected: format!("expected an object or null, found {other}"),
            })
        }
    };
    let bad = |field: &str, expected: String| ModelError::InvalidConfig {
        path: PathBuf::from(path),
        key: format!("{key}.{field}"),
        expected,
    };
    let get_f64 = |field: &str| params.and_then(|p| p.get(field)).and_then(Value::as_f64);
    let rope_theta = get_f64("rope_theta").or(raw.rope_theta).unwrap_or(10000.0);
    let partial_rotary_factor = get_f64("partial_rotary_factor").or(raw.partial_rotary_factor).unwrap_or(1.0);
    if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
        return Err(bad("partial_rotary_factor", format!("expected a value in (0, 1], found {partial_rotary_factor}")));
    }
    let rope_type =
        params.and_then(|p| p.get("rope_type").or_else(|| p.get("type"))).and_then(Value::as_str).unwrap_or("default");
    let need = |field: &str| get_f64(field).ok_or_else(|| bad(field, format!("required by rope_type {rope_type:?}")));
    let scaling = match rope_type {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: need("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position_embeddings: get_f64("original_max_position_embeddings")
                .map(|v| v as i64)
                .or(raw.original_max_position_embeddings)
                .unwrap_or(max_position_embeddings),
        },
        other => {
            return Err(bad(
                "rope_type",
                format!("RoPE scaling {other:?} is not implemented (supported: default, linear, llama3)"),
            ))
        }
    };
    Ok(RopeConfig { rope_theta, partial_rotary_factor, scaling })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, ModelError> {
        ModelConfig::from_json_str(text, Path::new("config.json"))
    }

    const BASE: &str = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1"#;

    #[test]
    fn resolves_transformers4_llama3_scaling() {
        let cfg = parse(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "rope_theta": 500000.0, "eos_token_id": [1, 2],
            "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        assert_eq!(cfg.architecture, Architecture::Llama);
        assert_eq!(cfg.head_dim, 4);
        assert_eq!(cfg.rope.rope_theta, 500000.0);
        assert_eq!(cfg.eos_token_id, vec![1, 2]);
        assert!(matches!(cfg.rope.scaling, RopeScaling::Llama3 { original_max_position_embeddings: 8192, .. }));
    }

    #[test]
    fn resolves_transformers5_rope_parameters() {
        let cfg = parse(&format!(
            r#"{{"model_type": "qwen2", {BASE}, "rope_parameters": {{"rope_type": "default", "rope_theta": 1e6}}}}"#
        ))
        .unwrap();
        assert_eq!(cfg.architecture, Architecture::Qwen2);
        assert!(cfg.qkv_bias);
        assert_eq!(cfg.rope.rope_theta, 1e6);
        assert_eq!(cfg.rope.scaling, RopeScaling::Default);
    }

    #[test]
    fn unsupported_architecture_names_it_and_the_list() {
        let err = parse(&format!(r#"{{"architectures": ["GPT2LMHeadModel"], {BASE}}}"#)).unwrap_err().to_string();
        assert!(err.contains("GPT2LMHeadModel"), "{err}");
        assert!(err.contains("Qwen2ForCausalLM, LlamaForCausalLM, Phi3ForCausalLM"), "{err}");
    }

    #[test]
    fn longrope_is_rejected_by_name() {
        let err = parse(&format!(
            r#"{{"architectures": ["Phi3ForCausalLM"], {BASE}, "rope_scaling": {{"type": "longrope",
            "short_factor": [1.0], "long_factor": [1.0]}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("longrope") && err.contains("rope_scaling.rope_type"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let err = parse(r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 10}"#).unwrap_err().to_string();
        assert!(err.contains("`hidden_size`"), "{err}");
    }

    #[test]
    fn sliding_window_limits_the_context() {
        let cfg = parse(&format!(
            r#"{{"architectures": ["Phi3ForCausalLM"], {BASE}, "max_position_embeddings": 4096,
            "sliding_window": 2047}}"#
        ))
        .unwrap();
        assert_eq!(cfg.max_context(), 2047);
    }
}
