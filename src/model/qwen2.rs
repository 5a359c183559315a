//! Qwen2ForCausalLM (Qwen2, Qwen2.5): the Llama layer layout with biases on q/k/v (never on o_proj or the MLP),
//! tied or untied embeddings (decided by the checkpoint), RoPE without scaling. Reference: transformers
//! models/qwen2/modeling_qwen2.py. The config resolution sets the bias flags; the tensors are Llama's.

use super::config::ModelConfig;
use super::error::ModelError;
use super::layers::DecoderLayer;
use super::weights::NamedWeights;
use super::weights::WeightSpec;

/// The tensors of decoder layer `i` (Llama's, with q/k/v biases).
pub(crate) fn layer_specs(cfg: &ModelConfig, i: i64) -> Vec<WeightSpec> {
    debug_assert!(cfg.qkv_bias && !cfg.o_bias && !cfg.mlp_bias);
    super::llama::layer_specs(cfg, i)
}

/// Builds decoder layer `i` from the loaded tensors.
pub(crate) fn build_layer(w: &NamedWeights, cfg: &ModelConfig, i: i64) -> Result<DecoderLayer, ModelError> {
    super::llama::build_layer(w, cfg, i)
}
