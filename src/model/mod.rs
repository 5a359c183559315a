//! Model engine: HF checkpoint directories (config, safetensors, tokenizer, generation config), the supported
//! architectures (Qwen2, Llama, Phi3) and GGUF import. Knows nothing of STaSC.
//!
//! Loading is two steps with their own errors: [`ModelFiles::resolve`] finds the files, then [`load_model`] (or
//! [`CausalLm::load`] for weights alone) reads them. Weights live in a `tch::nn::VarStore` under their checkpoint
//! keys; [`CausalLm::forward`] serves training (a full causal pass) and generation (cached prefill/decode, with a
//! [`KvCache`] owned by the caller: the type lives here because the layers write it, its rows are managed by
//! `generate`). [`CausalLm::fuse_projections`] gives generation fused q/k/v and gate/up copies for the duration of
//! a call.

pub mod causal_lm;
pub mod config;
pub mod device;
pub mod error;
mod extend;
pub use extend::set_extend_flash;
pub use layers::{set_fused_projections, set_fused_wgrad};
pub mod files;
pub mod generation_config;
pub mod gguf;
pub mod kv_cache;
pub mod layers;
mod llama;
mod phi3;
mod qwen2;
pub mod rope;
pub mod tokenizer;
pub mod weights;

use std::path::Path;

pub use causal_lm::{CausalLm, Pass};
pub use config::{Architecture, ModelConfig};
pub use device::{DtypeSpec, LoadOptions, ModelDevice};
pub use error::{ModelError, TensorReport};
pub use files::ModelFiles;
pub use generation_config::GenerationConfig;
pub use kv_cache::{KvCache, KvPool};
pub use tokenizer::Tokenizer;

/// A model ready to generate: weights, tokenizer and the checkpoint's generation defaults.
#[derive(Debug)]
pub struct LoadedModel {
    /// The files it was loaded from.
    pub files: ModelFiles,
    /// The network.
    pub model: CausalLm,
    /// Its tokenizer (with EOS ids and chat template).
    pub tokenizer: Tokenizer,
    /// generation_config.json (defaults when absent).
    pub generation_config: GenerationConfig,
}

/// Loads an HF model directory: config.json, weights (single or sharded safetensors), tokenizer.json,
/// tokenizer_config.json and generation_config.json. EOS ids come from generation_config.json, else config.json,
/// plus tokenizer_config.json's `eos_token`.
pub fn load_model(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let files = ModelFiles::resolve(dir)?;
    let config = ModelConfig::from_file(&files.config)?;
    let (tokenizer, generation_config) = tokenizer_of(&files, &config)?;
    let model = CausalLm::load(&files, config, opts)?;
    Ok(LoadedModel { files, model, tokenizer, generation_config })
}

/// Loads only the tokenizer of an HF model directory, with the EOS ids [`load_model`] would give it.
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, ModelError> {
    let files = ModelFiles::resolve(dir)?;
    let config = ModelConfig::from_file(&files.config)?;
    Ok(tokenizer_of(&files, &config)?.0)
}

/// The tokenizer (EOS ids from generation_config.json, else config.json) and the generation defaults.
fn tokenizer_of(files: &ModelFiles, config: &ModelConfig) -> Result<(Tokenizer, GenerationConfig), ModelError> {
    let generation_config = match &files.generation_config {
        Some(p) => GenerationConfig::from_file(p)?,
        None => GenerationConfig::default(),
    };
    let model_eos =
        if generation_config.eos_token_id.is_empty() { &config.eos_token_id } else { &generation_config.eos_token_id };
    let tokenizer = Tokenizer::load(files, model_eos)?;
    Ok((tokenizer, generation_config))
}

/// Loads only the network of an HF model directory (config.json + safetensors), without tokenizer files.
pub fn load_weights(dir: &Path, opts: &LoadOptions) -> Result<CausalLm, ModelError> {
    let files = ModelFiles::resolve(dir)?;
    let config = ModelConfig::from_file(&files.config)?;
    CausalLm::load(&files, config, opts)
}
