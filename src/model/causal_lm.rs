//! `CausalLm`: one decoder-only language model of any supported architecture — embedding, decoder layers, final
//! norm and LM head — whose weights live in a `tch::nn::VarStore` under their HF checkpoint keys, so the same object
//! is loaded, run, trained and saved by name. The forward pass serves training (full causal pass over a right-padded
//! batch) and generation (cached prefill and decode); the cache belongs to the caller.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use tch::{nn::VarStore, Device, Kind, Tensor};

use super::config::{Architecture, ModelConfig};
use super::device::LoadOptions;
use super::error::ModelError;
use super::files::ModelFiles;
use super::kv_cache::{KvCache, KvPool};
use super::layers::{torch_err, AttnMode, DecoderLayer, FusedProjections, RmsNorm, RotaryEmbedding};
use super::weights::{add_named, random_tensor, Checkpoint, Init, NamedWeights, WeightSpec};
use super::{llama, phi3, qwen2};

/// What a forward pass does with attention and the KV cache.
pub enum Pass<'a> {
    /// Causal attention over the input alone, no cache (training, scoring). Works on right-padded batches: padding
    /// follows the real tokens, so no real token attends to it.
    Full,
    /// Prompt prefill: causal attention over the input, whose K/V are also written into cache rows `rows` ([B]
    /// int64) at positions 0..T. Input rows may be right-padded.
    Prefill {
        /// The cache to fill.
        cache: &'a mut KvCache,
        /// The cache row of each input row.
        rows: &'a Tensor,
    },
    /// Prefill continuing cache rows: input [B, T] at positions `start..start + T` of cache rows `rows` ([B] int64),
    /// whose positions `0..start` already hold K/V (a shared prefix copied in). The new K/V are written after them
    /// and every token attends causally over the cached and new positions. Input rows may be right-padded.
    Extend {
        /// The cache to extend.
        cache: &'a mut KvCache,
        /// The cache row of each input row.
        rows: &'a Tensor,
        /// Cached positions before the input.
        start: i64,
    },
    /// One decode step: input [rows, 1] holds one token for every cache row (in row order) at `positions`
    /// ([rows, 1]); each row attends to its cache positions 0..=position. `attend_len` must exceed every position;
    /// only that many leading cache positions are read.
    Decode {
        /// The cache to read and extend.
        cache: &'a mut KvCache,
        /// Number of leading cache positions any row may attend to.
        attend_len: i64,
        /// A one-row cache whose positions 0..its max_len every row of `cache` holds a copy of (a prompt prefix
        /// common to all rows): fused attention reads it once for all rows instead of the copies.
        shared: Option<&'a KvCache>,
    },
}

/// A causal language model (Qwen2, Llama or Phi3) with its weights in a named `VarStore`.
pub struct CausalLm {
    config: ModelConfig,
    vs: VarStore,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    tied: bool,
    rope: RotaryEmbedding,
    kind: Kind,
    /// Inference-only fused projections, present while a [`FusedGuard`] lives.
    fused: RwLock<Option<Vec<FusedProjections>>>,
    /// Memory reserved for generation's KV caches (see [`CausalLm::reserve_kv_pool`]).
    kv_pool: Mutex<Option<KvPool>>,
}

/// Keeps fused projection copies in use by [`CausalLm::forward`]; dropping it frees them.
pub struct FusedGuard<'a> {
    model: &'a CausalLm,
}

impl Drop for FusedGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut fused) = self.model.fused.write() {
            *fused = None;
        }
    }
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm")
            .field("architecture", &self.config.architecture)
            .field("layers", &self.layers.len())
            .field("kind", &self.kind)
            .field("device", &self.vs.device())
            .finish()
    }
}

/// Every tensor the architecture needs, lm_head included unless the embeddings are tied.
pub fn weight_specs(cfg: &ModelConfig, tied: bool) -> Vec<WeightSpec> {
    let normal = Init::Normal(cfg.initializer_range);
    let mut specs = vec![WeightSpec::new("model.embed_tokens.weight", &[cfg.vocab_size, cfg.hidden_size], normal)];
    for i in 0..cfg.num_hidden_layers {
        specs.extend(match cfg.architecture {
            Architecture::Qwen2 => qwen2::layer_specs(cfg, i),
            Architecture::Llama => llama::layer_specs(cfg, i),
            Architecture::Phi3 => phi3::layer_specs(cfg, i),
        });
    }
    specs.push(WeightSpec::new("model.norm.weight", &[cfg.hidden_size], Init::Ones));
    if !tied {
        specs.push(WeightSpec::new("lm_head.weight", &[cfg.vocab_size, cfg.hidden_size], normal));
    }
    specs
}

fn resolve_device(opts: &LoadOptions) -> Result<(Device, Kind), ModelError> {
    let device = opts.device.resolve()?;
    Ok((device, opts.dtype.resolve(device)))
}

impl CausalLm {
    /// Loads the checkpoint of `files` (already resolved) with its resolved `config`. Tied embeddings are detected
    /// from the checkpoint: without `lm_head.weight`, the LM head reuses `model.embed_tokens.weight`. Missing,
    /// unexpected and misshaped tensors are reported together in one error.
    pub fn load(files: &ModelFiles, config: ModelConfig, opts: &LoadOptions) -> Result<Self, ModelError> {
        let (device, kind) = resolve_device(opts)?;
        let checkpoint = Checkpoint::open(&files.weights)?;
        let tied = !checkpoint.contains("lm_head.weight");
        let specs = weight_specs(&config, tied);
        let report = checkpoint.compare(&specs);
        if !report.is_empty() {
            return Err(ModelError::TensorMismatch {
                dir: files.dir.clone(),
                architecture: config.architecture.hf_name(),
                report,
            });
        }
        let vs = VarStore::new(device);
        // The directory's last two components: "iter_0/model" says more than "model".
        let parts: Vec<_> = files.dir.components().rev().take(2).collect();
        let name: std::path::PathBuf = parts.into_iter().rev().collect();
        let label = format!("loading {}", name.display());
        let loading = crate::progress::Phase::begin(None, &label, Some(specs.len() as u64), "tensors", true);
        for spec in &specs {
            add_named(&vs, &spec.name, checkpoint.tensor(&spec.name, kind, device)?);
            loading.advance(1, 0);
        }
        Self::build(config, vs, tied, kind, opts)
    }

    /// A model with random weights (normal(0, initializer_range), unit norms, zero biases) made directly on the
    /// device from `seed`; embeddings tied as config.json declares. For benchmarks that need no files.
    pub fn random(config: ModelConfig, opts: &LoadOptions, seed: u64) -> Result<Self, ModelError> {
        let (device, kind) = resolve_device(opts)?;
        tch::manual_seed(seed as i64);
        let tied = config.tie_word_embeddings;
        let vs = VarStore::new(device);
        for spec in weight_specs(&config, tied) {
            add_named(&vs, &spec.name, random_tensor(&spec, kind, device)?);
        }
        Self::build(config, vs, tied, kind, opts)
    }

    fn build(
        config: ModelConfig,
        mut vs: VarStore,
        tied: bool,
        kind: Kind,
        opts: &LoadOptions,
    ) -> Result<Self, ModelError> {
        // Inference is the default; a trainer calls `var_store_mut().unfreeze()`.
        vs.freeze();
        let device = vs.device();
        let w = NamedWeights::new(vs.variables());
        let mut layers = Vec::with_capacity(config.num_hidden_layers as usize);
        for i in 0..config.num_hidden_layers {
            layers.push(match config.architecture {
                Architecture::Qwen2 => qwen2::build_layer(&w, &config, i)?,
                Architecture::Llama => llama::build_layer(&w, &config, i)?,
                Architecture::Phi3 => phi3::build_layer(&w, &config, i)?,
            });
        }
        let embed_tokens = w.get("model.embed_tokens.weight")?;
        let lm_head = if tied { embed_tokens.shallow_clone() } else { w.get("lm_head.weight")? };
        let norm = RmsNorm { weight: w.get("model.norm.weight")?, eps: config.rms_norm_eps };
        let max_len = opts.max_model_len.map_or(config.max_context(), |n| n.min(config.max_context()));
        let rope = RotaryEmbedding::new(&config, max_len, kind, device).map_err(torch_err("building rotary tables"))?;
        Ok(CausalLm {
            config,
            vs,
            embed_tokens,
            layers,
            norm,
            lm_head,
            tied,
            rope,
            kind,
            fused: RwLock::new(None),
            kv_pool: Mutex::new(None),
        })
    }

    /// The resolved config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The weights, named by checkpoint key (`model.layers.0.self_attn.q_proj.weight`, ...). Frozen after loading.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Mutable weights (e.g. to `unfreeze()` for training, or copy trained values in).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// The weights by checkpoint key (shallow handles sharing storage with the model).
    pub fn named_weights(&self) -> HashMap<String, Tensor> {
        self.vs.variables()
    }

    /// Whether the LM head reuses the embedding matrix (no `lm_head.weight` of its own).
    pub fn tied_embeddings(&self) -> bool {
        self.tied
    }

    /// The device the weights are on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The floating-point kind of weights and activations.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The longest sequence (prompt + generated) this instance can run: the model's context, limited by the
    /// sliding window and by `LoadOptions::max_model_len`.
    pub fn max_model_len(&self) -> i64 {
        self.rope.max_len()
    }

    /// The decoder layers in order (trainers run them one at a time, e.g. for gradient checkpointing).
    pub fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    /// Mutable decoder layers (trainers attach adapters to their projections).
    pub fn layers_mut(&mut self) -> &mut [DecoderLayer] {
        &mut self.layers
    }

    /// The rotary tables every layer shares.
    pub fn rope(&self) -> &RotaryEmbedding {
        &self.rope
    }

    /// The final norm applied after the last layer.
    pub fn final_norm(&self) -> &RmsNorm {
        &self.norm
    }

    /// The LM head matrix [vocab, hidden] (the embedding matrix when tied).
    pub fn lm_head_weight(&self) -> &Tensor {
        &self.lm_head
    }

    /// Token embeddings [B, T, hidden] of `input_ids` [B, T].
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor, ModelError> {
        Tensor::f_embedding(&self.embed_tokens, input_ids, -1, false, false).map_err(torch_err("embedding"))
    }

    /// Builds fused copies of the separate q/k/v and gate/up projections (one matrix product each instead of three
    /// and two: fewer kernel launches per decode step) used by every forward pass until the guard drops. They cost
    /// the memory of those weights once more, and go stale if the weights change, so hold the guard only while the
    /// weights are fixed (e.g. for one generate call). Projections with adapters stay separate.
    pub fn fuse_projections(&self) -> Result<FusedGuard<'_>, ModelError> {
        let fused =
            tch::no_grad(|| self.layers.iter().map(DecoderLayer::fused_projections).collect::<Result<Vec<_>, _>>())
                .map_err(torch_err("fusing projections"))?;
        *self.fused.write().map_err(|_| poisoned())? = Some(fused);
        Ok(FusedGuard { model: self })
    }

    /// A KV cache for `rows` sequences of up to `max_len` tokens, in the model's kind and device: leased from the
    /// reserved pool when one is reserved, free and large enough, otherwise newly allocated.
    pub fn new_cache(&self, rows: i64, max_len: i64) -> Result<KvCache, ModelError> {
        let max_len = max_len.min(self.max_model_len());
        if let Some(pool) = self.kv_pool.lock().map_err(|_| poisoned())?.as_ref() {
            if let Some(cache) = pool.lease(rows, max_len)? {
                return Ok(cache);
            }
        }
        KvCache::new(&self.config, rows, max_len, self.kind, self.device())
    }

    /// Reserves memory for `positions` KV-cache token positions (rows x length, summed) that later caches of
    /// [`CausalLm::new_cache`] view instead of allocating; replaces an earlier pool. Returns the bytes reserved.
    pub fn reserve_kv_pool(&self, positions: i64) -> Result<i64, ModelError> {
        let mut slot = self.kv_pool.lock().map_err(|_| poisoned())?;
        // The old pool's memory goes back before the new one is taken.
        *slot = None;
        let pool = KvPool::new(&self.config, positions, self.kind, self.device())?;
        let bytes = pool.bytes();
        *slot = Some(pool);
        Ok(bytes)
    }

    /// Token positions of the reserved KV pool, if one is reserved.
    pub fn kv_pool_positions(&self) -> Option<i64> {
        self.kv_pool.lock().ok().and_then(|p| p.as_ref().map(KvPool::positions))
    }

    /// Bytes of KV cache per token position: K and V of every layer.
    pub fn kv_bytes_per_position(&self) -> i64 {
        let c = &self.config;
        2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * self.kind.elt_size_in_bytes() as i64
    }

    /// Runs the decoder on `input_ids` ([B, T] int64) at `positions` ([B, T] int64) and returns the final-normed
    /// hidden states [B, T, hidden]; apply [`CausalLm::logits`] to the rows you need.
    pub fn forward(&self, input_ids: &Tensor, positions: &Tensor, pass: Pass<'_>) -> Result<Tensor, ModelError> {
        let size = input_ids.size();
        let (b, t) = match size.as_slice() {
            [b, t] => (*b, *t),
            other => return Err(shape_error(format!("input_ids must be [batch, seq], found {other:?}"))),
        };
        if positions.size() != size {
            return Err(shape_error(format!("positions {:?} must match input_ids {size:?}", positions.size())));
        }
        if t > self.max_model_len() {
            return Err(shape_error(format!("sequence of {t} tokens exceeds max_model_len {}", self.max_model_len())));
        }
        let err = torch_err("forward pass");
        let mut x =
            Tensor::f_embedding(&self.embed_tokens, input_ids, -1, false, false).map_err(torch_err("embedding"))?;
        let rope_at = self.rope.at(positions).map_err(torch_err("rotary embedding"))?;
        let fused_guard = self.fused.read().map_err(|_| poisoned())?;
        let fused = |i: usize| fused_guard.as_ref().map(|f| &f[i]);
        match pass {
            Pass::Full => {
                for (i, layer) in self.layers.iter().enumerate() {
                    x = layer
                        .forward_with(&x, &self.rope, &rope_at, AttnMode::Full, fused(i))
                        .map_err(torch_err("forward pass"))?;
                }
            }
            Pass::Prefill { cache, rows } => {
                if t > cache.max_len() {
                    return Err(shape_error(format!("prefill of {t} tokens exceeds cache length {}", cache.max_len())));
                }
                let mut pending = None;
                for (i, layer) in self.layers.iter().enumerate() {
                    let mode = AttnMode::Prefill { cache: cache.layer(i), rows };
                    let (after, mlp) = layer
                        .forward_pending(&x, pending.as_ref(), &self.rope, &rope_at, mode, fused(i))
                        .map_err(torch_err("prefill"))?;
                    (x, pending) = (after, Some(mlp));
                }
                return self.final_norm_with(&x, pending.as_ref());
            }
            Pass::Extend { cache, rows, start } => {
                if start + t > cache.max_len() {
                    return Err(shape_error(format!(
                        "extending {t} tokens from position {start} exceeds cache length {}",
                        cache.max_len()
                    )));
                }
                // Built by the first layer that needs it: none does where flash attention runs.
                let mask = std::cell::OnceCell::new();
                let mut pending = None;
                for (i, layer) in self.layers.iter().enumerate() {
                    let mode = AttnMode::Extend { cache: cache.layer(i), rows, start, mask: &mask };
                    let (after, mlp) = layer
                        .forward_pending(&x, pending.as_ref(), &self.rope, &rope_at, mode, fused(i))
                        .map_err(torch_err("prefill after a cached prefix"))?;
                    (x, pending) = (after, Some(mlp));
                }
                return self.final_norm_with(&x, pending.as_ref());
            }
            Pass::Decode { cache, attend_len, shared } => {
                if t != 1 || b != cache.rows() || attend_len > cache.max_len() {
                    return Err(shape_error(format!(
                        "decode takes [{}, 1] tokens and attend_len <= {}, found {size:?} and {attend_len}",
                        cache.rows(),
                        cache.max_len()
                    )));
                }
                let write_pos = positions.f_reshape([b]).map_err(torch_err("decode positions"))?;
                let mask = decode_mask(&write_pos, attend_len, b).map_err(torch_err("decode mask"))?;
                let rows = cache.row_index().shallow_clone();
                let mut pending = None;
                for (i, layer) in self.layers.iter().enumerate() {
                    let mode = AttnMode::Decode {
                        cache: cache.layer(i),
                        rows: &rows,
                        write_pos: &write_pos,
                        attend_len,
                        mask: &mask,
                        prefix: shared.map(|s| s.layer_kv(i)),
                    };
                    let (after, mlp) = layer
                        .forward_pending(&x, pending.as_ref(), &self.rope, &rope_at, mode, fused(i))
                        .map_err(torch_err("decode"))?;
                    (x, pending) = (after, Some(mlp));
                }
                return self.final_norm_with(&x, pending.as_ref());
            }
        }
        self.norm.forward(&x).map_err(err)
    }

    /// The final norm of `x` plus the last layer's MLP output not yet added to it (inference passes: fused
    /// kernels where they apply).
    fn final_norm_with(&self, x: &Tensor, pending: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let err = torch_err("final norm");
        let Some(pending) = pending else { return self.norm.forward(x).map_err(err) };
        let kernels = if x.requires_grad() || pending.requires_grad() { None } else { crate::kernels::for_tensor(x) };
        self.norm.add_forward(x, pending, kernels).map(|(_, normed)| normed).map_err(err)
    }

    /// Projects hidden states [.., hidden] to logits [.., vocab] (model dtype).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        // gemv.cu for a decode step of a few rows (inference only: the kernel has no backward).
        let inference = !hidden.requires_grad() && !self.lm_head.requires_grad();
        if let Some(k) = crate::kernels::for_tensor(hidden).filter(|_| inference) {
            if let Some(logits) = k.gemv(hidden, &self.lm_head, None).map_err(torch_err("lm_head"))? {
                return Ok(logits);
            }
        }
        super::layers::linear(hidden, &self.lm_head, None).map_err(torch_err("lm_head"))
    }

    /// Logits [B, T, vocab] of a full causal pass over `input_ids` [B, T] at positions 0..T (training, scoring).
    pub fn forward_logits(&self, input_ids: &Tensor) -> Result<Tensor, ModelError> {
        let size = input_ids.size();
        let positions = Tensor::f_arange(*size.last().unwrap_or(&0), (Kind::Int64, input_ids.device()))
            .and_then(|p| p.f_expand(size.as_slice(), false))
            .map_err(torch_err("positions"))?;
        let hidden = self.forward(input_ids, &positions, Pass::Full)?;
        self.logits(&hidden)
    }
}

/// [rows, 1, 1, attend_len] bool: row r may see cache position j when j <= its write position.
fn decode_mask(write_pos: &Tensor, attend_len: i64, rows: i64) -> Result<Tensor, tch::TchError> {
    let keys = Tensor::f_arange(attend_len, (Kind::Int64, write_pos.device()))?.f_view([1, attend_len])?;
    keys.f_le_tensor(&write_pos.f_view([rows, 1])?)?.f_view([rows, 1, 1, attend_len])
}

fn poisoned() -> ModelError {
    ModelError::Device("a lock of the model (fused projections or KV pool) was poisoned by a panic".into())
}

fn shape_error(message: String) -> ModelError {
    ModelError::Torch { context: "forward pass".into(), error: tch::TchError::Shape(message) }
}
