//! LlamaForCausalLM (SmolLM2, Llama 2/3): separate q/k/v/o and gate/up/down projections, optional biases
//! (`attention_bias`, `mlp_bias`), RoPE with default, linear or llama3 scaling. Reference: transformers
//! models/llama/modeling_llama.py. Qwen2 reuses this layout (see qwen2.rs).

use super::config::ModelConfig;
use super::error::ModelError;
use super::layers::{Attention, DecoderLayer, GateUpProj, Mlp, QkvProj, RmsNorm};
use super::weights::NamedWeights;
use super::weights::{Init, WeightSpec};

/// The tensors of decoder layer `i`, with biases as the config asks.
pub(crate) fn layer_specs(cfg: &ModelConfig, i: i64) -> Vec<WeightSpec> {
    let p = format!("model.layers.{i}");
    let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
    let (q_out, kv_out) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let normal = Init::Normal(cfg.initializer_range);
    let mut specs = vec![
        WeightSpec::new(format!("{p}.input_layernorm.weight"), &[hidden], Init::Ones),
        WeightSpec::new(format!("{p}.post_attention_layernorm.weight"), &[hidden], Init::Ones),
    ];
    let mut linear = |name: &str, out: i64, inp: i64, bias: bool| {
        specs.push(WeightSpec::new(format!("{p}.{name}.weight"), &[out, inp], normal));
        if bias {
            specs.push(WeightSpec::new(format!("{p}.{name}.bias"), &[out], Init::Zeros));
        }
    };
    linear("self_attn.q_proj", q_out, hidden, cfg.qkv_bias);
    linear("self_attn.k_proj", kv_out, hidden, cfg.qkv_bias);
    linear("self_attn.v_proj", kv_out, hidden, cfg.qkv_bias);
    linear("self_attn.o_proj", hidden, q_out, cfg.o_bias);
    linear("mlp.gate_proj", inter, hidden, cfg.mlp_bias);
    linear("mlp.up_proj", inter, hidden, cfg.mlp_bias);
    linear("mlp.down_proj", hidden, inter, cfg.mlp_bias);
    specs
}

/// Builds decoder layer `i` from the loaded tensors.
pub(crate) fn build_layer(w: &NamedWeights, cfg: &ModelConfig, i: i64) -> Result<DecoderLayer, ModelError> {
    let p = format!("model.layers.{i}");
    Ok(DecoderLayer {
        input_layernorm: RmsNorm { weight: w.get(&format!("{p}.input_layernorm.weight"))?, eps: cfg.rms_norm_eps },
        self_attn: Attention {
            qkv: QkvProj::Separate {
                q: w.linear(&format!("{p}.self_attn.q_proj"), cfg.qkv_bias)?,
                k: w.linear(&format!("{p}.self_attn.k_proj"), cfg.qkv_bias)?,
                v: w.linear(&format!("{p}.self_attn.v_proj"), cfg.qkv_bias)?,
            },
            o_proj: w.linear(&format!("{p}.self_attn.o_proj"), cfg.o_bias)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        },
        post_attention_layernorm: RmsNorm {
            weight: w.get(&format!("{p}.post_attention_layernorm.weight"))?,
            eps: cfg.rms_norm_eps,
        },
        mlp: Mlp {
            gate_up: GateUpProj::Separate {
                gate: w.linear(&format!("{p}.mlp.gate_proj"), cfg.mlp_bias)?,
                up: w.linear(&format!("{p}.mlp.up_proj"), cfg.mlp_bias)?,
            },
            down_proj: w.linear(&format!("{p}.mlp.down_proj"), cfg.mlp_bias)?,
            intermediate_size: cfg.intermediate_size,
        },
    })
}
