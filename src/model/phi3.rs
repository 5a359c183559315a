//! Phi3ForCausalLM (Phi-3-mini-4k): fused `qkv_proj` ([q; k; v] rows) and `gate_up_proj` ([gate; up] rows), no
//! biases, RoPE with optional partial rotation; scaled variants (longrope, su, yarn) are rejected by the config
//! resolution with their name. The sliding window (2047 for Phi-3-mini-4k) limits the usable context instead of
//! being masked. Reference: transformers models/phi3/modeling_phi3.py.

use super::config::ModelConfig;
use super::error::ModelError;
use super::layers::{Attention, DecoderLayer, GateUpProj, Mlp, QkvProj, RmsNorm};
use super::weights::NamedWeights;
use super::weights::{Init, WeightSpec};

/// The tensors of decoder layer `i`.
pub(crate) fn layer_specs(cfg: &ModelConfig, i: i64) -> Vec<WeightSpec> {
    let p = format!("model.layers.{i}");
    let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
    let q_out = cfg.num_attention_heads * cfg.head_dim;
    let qkv_out = q_out + 2 * cfg.num_key_value_heads * cfg.head_dim;
    let normal = Init::Normal(cfg.initializer_range);
    vec![
        WeightSpec::new(format!("{p}.input_layernorm.weight"), &[hidden], Init::Ones),
        WeightSpec::new(format!("{p}.post_attention_layernorm.weight"), &[hidden], Init::Ones),
        WeightSpec::new(format!("{p}.self_attn.qkv_proj.weight"), &[qkv_out, hidden], normal),
        WeightSpec::new(format!("{p}.self_attn.o_proj.weight"), &[hidden, q_out], normal),
        WeightSpec::new(format!("{p}.mlp.gate_up_proj.weight"), &[2 * inter, hidden], normal),
        WeightSpec::new(format!("{p}.mlp.down_proj.weight"), &[hidden, inter], normal),
    ]
}

/// Builds decoder layer `i` from the loaded tensors.
pub(crate) fn build_layer(w: &NamedWeights, cfg: &ModelConfig, i: i64) -> Result<DecoderLayer, ModelError> {
    let p = format!("model.layers.{i}");
    Ok(DecoderLayer {
        input_layernorm: RmsNorm { weight: w.get(&format!("{p}.input_layernorm.weight"))?, eps: cfg.rms_norm_eps },
        self_attn: Attention {
            qkv: QkvProj::Fused(w.linear(&format!("{p}.self_attn.qkv_proj"), false)?),
            o_proj: w.linear(&format!("{p}.self_attn.o_proj"), false)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        },
        post_attention_layernorm: RmsNorm {
            weight: w.get(&format!("{p}.post_attention_layernorm.weight"))?,
            eps: cfg.rms_norm_eps,
        },
        mlp: Mlp {
            gate_up: GateUpProj::Fused(w.linear(&format!("{p}.mlp.gate_up_proj"), false)?),
            down_proj: w.linear(&format!("{p}.mlp.down_proj"), false)?,
            intermediate_size: cfg.intermediate_size,
        },
    })
}
