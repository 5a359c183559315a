//! AdamW as HF Trainer runs it (torch.optim.AdamW: betas, eps, decoupled weight decay, bias correction), with HF's
//! two parameter groups (decayed and not) and clipping of the global L2 gradient norm.
//!
//! Which parameters are decayed is fine_tune.yaml's `training.decay_parameters` ([`is_decayed`]):
//! - `names` (stasc's default, later transformers' rule): everything but biases and norm weights, by name;
//! - `transformers_4_47_1` (the paper protocol's): everything but names containing "bias" and the parameters of
//!   modules whose class is in that version's `ALL_LAYERNORM_LAYERS` (`get_parameter_names(model,
//!   ALL_LAYERNORM_LAYERS)`). Of stasc's architectures only Llama's norm (`LlamaRMSNorm`) is listed, so the
//!   RMSNorm weights of Qwen2 and Phi-3 models are decayed.
//!
//! Every trainable tensor is made a view into one flat buffer (decayed tensors first), and so is its gradient, so
//! the whole update is a handful of large kernels over a few chunks instead of ~10 small kernels per tensor.
//! Within each group tensors are ordered by decoder layer, so each layer's decayed tensors are one contiguous range
//! of the gradient buffer ([`AdamW::gradient_buckets`]): data-parallel workers sum a layer's range as soon as
//! backward has passed it (crate::train::overlap). State
//! tensors live on the device in the parameters' dtype: with bf16 weights that is bf16 moments, as torch keeps
//! them for bf16 parameters (the reference trains a bf16 model without autocast).
//!
//! The update per element (t = step, 1-based) is torch's:
//! `p *= 1 - lr*wd` (decay group); `m = lerp(m, g, 1-b1)`; `v = lerp(v, g*g, 1-b2)`;
//! `p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`.
//! Elementwise ops round to the parameter dtype between ops (as torch's foreach implementation does); torch's
//! fused kernel keeps the intermediates in f32, so bf16 runs differ from it by bf16 rounding, f32 runs by f32
//! rounding only.
//!
//! On a CUDA device the update (with clipping's scale and zeroing the gradients) is one kernel over the buffers
//! (crate::kernels, adamw.cu) that rounds exactly where these ops store, instead of ~10 kernels each reading and
//! writing the whole buffer; `STASC_FUSED_KERNELS=0` runs the libtorch ops instead.

use regex::Regex;
use tch::{Kind, Tensor};

use super::error::TrainError;
use super::flat::{FlatLayout, GradBucket, OwnedRange};
use crate::config::choices::DecayParameters;
use crate::kernels::AdamWStep;
use crate::model::Architecture;

/// The `names` rule, later transformers' `Trainer.get_decay_parameter_names`: a parameter whose lower-cased name
/// contains `bias`, `layernorm` or `rmsnorm`, or has a path component `norm` or ending in `_norm`, gets no weight
/// decay.
pub fn gets_weight_decay(name: &str) -> bool {
    static NO_DECAY: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)").expect("valid regex")
    });
    !NO_DECAY.is_match(&name.to_lowercase())
}

/// The modules of `architecture`'s HF model whose class transformers 4.47.1 lists in `ALL_LAYERNORM_LAYERS`, by
/// attribute name (the last component of the module path). `LlamaRMSNorm` is appended to that list when
/// modeling_llama is imported, which training a Llama model does; `Qwen2RMSNorm` and `Phi3RMSNorm` are their own
/// classes and never listed.
fn transformers_4_47_1_norm_modules(architecture: Architecture) -> &'static [&'static str] {
    match architecture {
        Architecture::Llama => &["input_layernorm", "post_attention_layernorm", "norm"],
        Architecture::Qwen2 | Architecture::Phi3 => &[],
    }
}

/// Whether the trainable parameter `name` (HF's name, or PEFT's for adapters) of an `architecture` model gets
/// weight decay under `rule`.
///
/// LoRA/DoRA train only adapters (`lora_A`, `lora_B`, `lora_magnitude_vector`; PEFT's `bias="none"`): no such name
/// contains "bias" or any norm spelling, and adapters are never norm modules, so both rules decay every adapter, as
/// transformers 4.47.1 and later do; the rule changes nothing for LoRA.
pub fn is_decayed(rule: DecayParameters, architecture: Architecture, name: &str) -> bool {
    match rule {
        DecayParameters::Names => gets_weight_decay(name),
        DecayParameters::Transformers4_47_1 => {
            // 4.47.1 tests `"bias" not in name`: a case-sensitive substring, on the full name.
            let module = name.rsplit('.').nth(1).unwrap_or("");
            !name.contains("bias") && !transformers_4_47_1_norm_modules(architecture).contains(&module)
        }
    }
}

/// AdamW hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// beta1.
    pub beta1: f64,
    /// beta2.
    pub beta2: f64,
    /// eps.
    pub eps: f64,
    /// Decoupled weight decay of the decay group.
    pub weight_decay: f64,
}

struct Slot {
    name: String,
    param: Tensor,
    offset: i64,
    numel: i64,
    shape: Vec<i64>,
    /// Address of the slot's part of the gradient buffer: once the parameter's gradient lives there, autograd
    /// accumulates into it in place and the per-step gather skips the tensor with one pointer check.
    grad_ptr: usize,
}

/// Elements updated per kernel group; bounds the temporaries of an update (two chunk-sized tensors).
const CHUNK: i64 = 1 << 26;

/// Which part of the optimiser state one data-parallel worker keeps and updates (ZeRO stage 1): worker `rank` of
/// `workers` owns the `rank`-th of `workers` equal parts of every gradient bucket ([`FlatLayout::owned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This worker.
    pub rank: usize,
    /// Workers sharing the update.
    pub workers: usize,
}

/// Adds a device scalar over the data-parallel workers, in place.
pub type SumOverWorkers<'a> = &'a mut dyn FnMut(&Tensor) -> Result<(), TrainError>;

/// The per-step scalars of an update.
#[derive(Debug, Clone, Copy)]
pub struct StepScalars {
    lr: f64,
    decay_factor: f64,
    scale: f64,
    shift: f64,
    decays: bool,
}

/// AdamW over flat parameter, gradient and state buffers.
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    layout: FlatLayout,
    /// The ranges this worker updates, and where their state lives: the whole buffer unless sharded.
    owned: Vec<OwnedRange>,
    sharded: bool,
    params: Tensor,
    grads: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
    /// Clipping's coefficient (a device scalar in the gradients' dtype) not yet applied: the fused update applies
    /// it as it reads each gradient, saving a pass over the buffer.
    pending_clip: Option<Tensor>,
    /// Whether some gradients were not zeroed by the fused update this step.
    grads_dirty: bool,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW").field("params", &self.slots.len()).field("numel", &self.numel()).finish()
    }
}

impl AdamW {
    /// Takes over `params` (name, trainable tensor of an `architecture` model): their storage moves into one flat
    /// buffer laid out by [`FlatLayout`] (decayed ones under `decay` first). All must share one dtype and device.
    /// With `shard`, this worker keeps the moments of its part of every bucket only and updates only that part
    /// ([`AdamW::update_bucket`]; the workers then gather the parameters).
    pub fn new(
        params: Vec<(String, Tensor)>,
        config: AdamWConfig,
        decay: DecayParameters,
        architecture: Architecture,
        shard: Option<Shard>,
    ) -> Result<Self, TrainError> {
        let first = params.first().ok_or_else(|| TrainError::Invalid("no trainable parameters".into()))?;
        let (kind, device) = (first.1.kind(), first.1.device());
        if let Some((name, t)) = params.iter().find(|(_, t)| t.kind() != kind || t.device() != device) {
            return Err(TrainError::Invalid(format!(
                "parameter {name} is {:?} on {:?}, the others {kind:?} on {device:?}",
                t.kind(),
                t.device()
            )));
        }
        let described: Vec<(String, i64, bool)> =
            params.iter().map(|(n, t)| (n.clone(), t.numel() as i64, is_decayed(decay, architecture, n))).collect();
        let shard = shard.filter(|s| s.workers > 1);
        let layout = FlatLayout::new(&described, shard.map_or(1, |s| s.workers));
        let owned = match shard {
            Some(s) => layout.owned(s.rank),
            // Unsharded, the whole buffer is one range: one fused kernel (or one round of libtorch ops).
            None => vec![OwnedRange { flat: 0, state: 0, numel: layout.total, decayed: layout.decay_numel }],
        };
        let state_numel: i64 = owned.iter().map(|r| r.numel).sum();
        let mut by_name: std::collections::HashMap<String, Tensor> = params.into_iter().collect();
        let err = TrainError::torch("allocating optimiser buffers");
        let zeros = |n: i64| Tensor::f_zeros([n], (kind, device));
        let flat = zeros(layout.total).map_err(err)?;
        let grads = zeros(layout.total).map_err(TrainError::torch("allocating optimiser buffers"))?;
        let element = kind.elt_size_in_bytes();
        let mut slots = Vec::new();
        tch::no_grad(|| -> Result<(), TrainError> {
            for place in &layout.places {
                let mut param = by_name.remove(&place.name).expect("the layout places every parameter once");
                let shape = param.size();
                let placing = TrainError::torch(format!("placing {}", place.name));
                let view = flat.f_narrow(0, place.offset, place.numel).and_then(|v| v.f_view(shape.as_slice()));
                let mut view = view.map_err(placing)?;
                view.f_copy_(&param).map_err(TrainError::torch(format!("placing {}", place.name)))?;
                param.f_set_data(&view).map_err(TrainError::torch(format!("placing {}", place.name)))?;
                let grad_ptr = grads.data_ptr() as usize + place.offset as usize * element;
                let (name, offset, numel) = (place.name.clone(), place.offset, place.numel);
                slots.push(Slot { name, param, offset, numel, shape, grad_ptr });
            }
            Ok(())
        })?;
        let err = || TrainError::torch("allocating optimiser buffers");
        Ok(AdamW {
            config,
            slots,
            owned,
            sharded: shard.is_some(),
            params: flat,
            grads,
            exp_avg: zeros(state_numel).map_err(err())?,
            exp_avg_sq: zeros(state_numel).map_err(err())?,
            layout,
            step: 0,
            pending_clip: None,
            grads_dirty: false,
        })
    }

    /// Number of trained elements (padding not counted).
    pub fn numel(&self) -> i64 {
        self.slots.iter().map(|s| s.numel).sum()
    }

    /// Whether this worker keeps and updates only its part of the state.
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// Names of the parameters that get weight decay, in buffer order.
    pub fn decayed_names(&self) -> Vec<&str> {
        self.slots.iter().filter(|s| s.offset < self.layout.decay_numel).map(|s| s.name.as_str()).collect()
    }

    /// Names of the parameters without weight decay.
    pub fn undecayed_names(&self) -> Vec<&str> {
        self.slots.iter().filter(|s| s.offset >= self.layout.decay_numel).map(|s| s.name.as_str()).collect()
    }

    /// The flat gradient buffer, every parameter's gradient gathered into it (what data-parallel workers sum),
    /// clipped if [`AdamW::clip_grad_norm`] clipped.
    pub fn gradient_buffer(&mut self) -> Result<&Tensor, TrainError> {
        self.gather_grads()?;
        self.apply_pending_clip()?;
        Ok(&self.grads)
    }

    /// The gradient buffer's buckets, in the order backward completes them ([`FlatLayout`]).
    pub fn gradient_buckets(&self) -> Vec<GradBucket> {
        self.layout.buckets.clone()
    }

    /// The part of the gradient buffer that `bucket` covers, its parameters' gradients gathered into it (see
    /// [`AdamW::gather_grads`]).
    pub fn bucket_gradients(&mut self, bucket: &GradBucket) -> Result<Tensor, TrainError> {
        self.gather_grads_in(bucket.offset, bucket.offset + bucket.numel)?;
        self.grads.f_narrow(0, bucket.offset, bucket.numel).map_err(TrainError::torch("a gradient bucket"))
    }

    /// The part of the parameter buffer that `bucket` covers (what sharded workers gather after their update).
    pub fn bucket_parameters(&self, bucket: &GradBucket) -> Result<Tensor, TrainError> {
        self.params.f_narrow(0, bucket.offset, bucket.numel).map_err(TrainError::torch("a parameter bucket"))
    }

    /// Scales the gradients by a clipping coefficient left for the fused update.
    fn apply_pending_clip(&mut self) -> Result<(), TrainError> {
        if let Some(coef) = self.pending_clip.take() {
            let _ = tch::no_grad(|| self.grads.f_mul_(&coef)).map_err(TrainError::torch("clipping gradients"))?;
        }
        Ok(())
    }

    /// The flat parameter buffer (every trained tensor is a view into it).
    pub fn parameter_buffer(&self) -> &Tensor {
        &self.params
    }

    /// Whether every parameter's gradient is its view of the flat gradient buffer, so that autograd accumulates
    /// into the buffer in place (what a CUDA graph of a pass records: [`super::graphed`]).
    pub fn gradients_bound(&self) -> bool {
        self.slots.iter().all(|s| {
            let grad = s.param.grad();
            grad.defined() && grad.data_ptr() as usize == s.grad_ptr
        })
    }

    /// Moves every parameter's gradient into the flat gradient buffer (once per tensor: afterwards autograd adds in
    /// place into the view). A parameter that got no gradient keeps a zero one.
    fn gather_grads(&mut self) -> Result<(), TrainError> {
        self.gather_grads_in(0, self.layout.total)
    }

    /// [`AdamW::gather_grads`] for the tensors placed in `[start, end)` of the buffer.
    fn gather_grads_in(&mut self, start: i64, end: i64) -> Result<(), TrainError> {
        for slot in self.slots.iter().filter(|s| s.offset >= start && s.offset + s.numel <= end) {
            let mut grad = slot.param.grad();
            if !grad.defined() || grad.data_ptr() as usize == slot.grad_ptr {
                continue;
            }
            let err = || TrainError::torch(format!("gradient of {}", slot.name));
            let mut view = self
                .grads
                .f_narrow(0, slot.offset, slot.numel)
                .and_then(|v| v.f_view(slot.shape.as_slice()))
                .map_err(err())?;
            if grad.data_ptr() != view.data_ptr() {
                view.f_copy_(&grad).map_err(err())?;
                grad.f_set_data(&view).map_err(err())?;
            }
        }
        Ok(())
    }

    /// Clips the gradients to a global L2 norm of `max_norm` (0 = no clipping) as torch's `clip_grad_norm_` does
    /// (coefficient max_norm / (norm + 1e-6), at most 1) and returns the norm before clipping as an f32 device
    /// scalar, without a host sync. The norm is reduced in the gradients' dtype with f32 accumulation, so for bf16
    /// gradients it is rounded to bf16, as torch's norms of bf16 gradients are. Where the fused update runs, the
    /// scaling waits for it ([`AdamW::gradient_buffer`] applies it if asked first).
    ///
    /// A sharded worker ([`AdamW::clip_grad_norm_sharded`]) holds the summed gradients of its own parts only: it
    /// takes the norm of each part, and the squares' sum is added over the workers, as FSDP's clipping does; so
    /// the norm differs from the unsharded one by rounding only.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<Tensor, TrainError> {
        if self.sharded {
            return Err(TrainError::Invalid("a sharded optimiser clips with clip_grad_norm_sharded".into()));
        }
        self.clip(max_norm, None)
    }

    /// [`AdamW::clip_grad_norm`] of a sharded worker: `sum_over_workers` adds an f32 device scalar over the
    /// workers in place.
    pub fn clip_grad_norm_sharded(
        &mut self,
        max_norm: f64,
        sum_over_workers: SumOverWorkers<'_>,
    ) -> Result<Tensor, TrainError> {
        self.clip(max_norm, Some(sum_over_workers))
    }

    fn clip(&mut self, max_norm: f64, sum_over_workers: Option<SumOverWorkers<'_>>) -> Result<Tensor, TrainError> {
        self.gather_grads()?;
        self.apply_pending_clip()?;
        let fused = crate::kernels::for_tensor(&self.grads).is_some();
        let err = TrainError::torch("clipping gradients");
        let norm = if let Some(sum_over_workers) = sum_over_workers.filter(|_| self.sharded) {
            let parts = tch::no_grad(|| -> Result<Tensor, tch::TchError> {
                let norms = self
                    .owned
                    .iter()
                    .map(|r| {
                        self.grads.f_narrow(0, r.flat, r.numel)?.f_linalg_norm(2.0, None::<&[i64]>, false, None::<Kind>)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Tensor::f_stack(&norms, 0)?.f_to_kind(Kind::Float)?.f_square()?.f_sum(Kind::Float)
            })
            .map_err(TrainError::torch("clipping gradients"))?;
            sum_over_workers(&parts)?;
            parts.f_sqrt().map_err(TrainError::torch("clipping gradients"))?
        } else {
            // No dtype argument: libtorch accumulates bf16 reductions in f32 anyway, and asking for an f32 result
            // would first copy the whole gradient buffer to f32.
            tch::no_grad(|| self.grads.f_linalg_norm(2.0, None::<&[i64]>, false, None::<Kind>)?.f_to_kind(Kind::Float))
                .map_err(TrainError::torch("clipping gradients"))?
        };
        if max_norm > 0.0 {
            let coef = tch::no_grad(|| -> Result<Tensor, tch::TchError> {
                norm.f_add_scalar(1e-6)?
                    .f_reciprocal()?
                    .f_mul_scalar(max_norm)?
                    .f_clamp_max(1.0)?
                    .f_to_kind(self.grads.kind())
            })
            .map_err(err)?;
            self.pending_clip = Some(coef);
            if !fused {
                self.apply_pending_clip()?;
            }
        }
        Ok(norm)
    }

    /// One AdamW update at learning rate `lr` of every range this worker owns, then zeroes the gradients.
    pub fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        let scalars = self.begin_step(lr)?;
        for k in 0..self.owned.len() {
            self.update_owned(&scalars, k)?;
        }
        self.end_step()
    }

    /// Starts an update at learning rate `lr`: gathers the gradients and fixes the step's scalars. Follow with
    /// [`AdamW::update_bucket`] for every bucket, then [`AdamW::end_step`].
    pub fn begin_step(&mut self, lr: f64) -> Result<StepScalars, TrainError> {
        self.gather_grads()?;
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bias_correction1;
        // p += m / d with d = -(sqrt(v)/bc2_sqrt + eps)/step_size: tch's addcdiv_ has no `value`, so the step size
        // is folded into the denominator.
        Ok(StepScalars {
            lr,
            decay_factor: 1.0 - lr * c.weight_decay,
            scale: -1.0 / (bias_correction2_sqrt * step_size),
            shift: -c.eps / step_size,
            decays: c.weight_decay != 0.0 && self.layout.decay_numel > 0 && lr != 0.0,
        })
    }

    /// Updates this worker's part of bucket `bucket` (an index into [`AdamW::gradient_buckets`]).
    pub fn update_bucket(&mut self, scalars: &StepScalars, bucket: usize) -> Result<(), TrainError> {
        if self.sharded {
            self.update_owned(scalars, bucket)
        } else {
            // Unsharded, the whole buffer is one range: [`AdamW::step`] updates it at once.
            Err(TrainError::Invalid("update_bucket is for sharded optimisers".into()))
        }
    }

    /// Ends an update: zeroes every gradient the fused update did not.
    pub fn end_step(&mut self) -> Result<(), TrainError> {
        self.pending_clip = None;
        if std::mem::take(&mut self.grads_dirty) || self.sharded {
            let _ = tch::no_grad(|| self.grads.f_zero_()).map_err(TrainError::torch("optimiser step"))?;
        }
        Ok(())
    }

    /// Updates owned range `k`: the fused kernel on CUDA, libtorch ops otherwise.
    fn update_owned(&mut self, s: &StepScalars, k: usize) -> Result<(), TrainError> {
        let r = self.owned[k];
        let c = self.config;
        let err = TrainError::torch("optimiser step");
        let (p, g, m, v) = tch::no_grad(|| -> Result<_, tch::TchError> {
            Ok((
                self.params.f_narrow(0, r.flat, r.numel)?,
                self.grads.f_narrow(0, r.flat, r.numel)?,
                self.exp_avg.f_narrow(0, r.state, r.numel)?,
                self.exp_avg_sq.f_narrow(0, r.state, r.numel)?,
            ))
        })
        .map_err(err)?;
        if let Some(kernels) = crate::kernels::for_tensor(&self.params) {
            let fused = AdamWStep {
                n: r.numel,
                decayed: if s.decays { r.decayed } else { 0 },
                decay_factor: s.decay_factor as f32,
                one_minus_beta1: (1.0 - c.beta1) as f32,
                one_minus_beta2: (1.0 - c.beta2) as f32,
                scale: s.scale as f32,
                shift: s.shift as f32,
                update_params: i32::from(s.lr != 0.0),
            };
            let ran = tch::no_grad(|| kernels.adamw(&p, &g, &m, &v, self.pending_clip.as_ref(), &fused))
                .map_err(TrainError::torch("optimiser step"))?;
            if ran {
                return Ok(());
            }
        }
        self.grads_dirty = true;
        tch::no_grad(|| -> Result<(), tch::TchError> {
            let (p, mut g, mut m, mut v) = (p, g, m, v);
            if let Some(coef) = &self.pending_clip {
                let _ = g.f_mul_(coef)?;
            }
            if s.decays && r.decayed > 0 {
                let _ = p.f_narrow(0, 0, r.decayed)?.f_mul_scalar_(s.decay_factor)?;
            }
            if s.lr == 0.0 {
                // The moments still move (torch updates them whatever the lr); the parameters do not.
                let _ = m.f_lerp_(&g, 1.0 - c.beta1)?;
                let _ = v.f_lerp_(&g.f_square()?, 1.0 - c.beta2)?;
                return Ok(());
            }
            let mut start = 0;
            while start < r.numel {
                let len = CHUNK.min(r.numel - start);
                let g = g.f_narrow(0, start, len)?;
                let mut m = m.f_narrow(0, start, len)?;
                let mut v = v.f_narrow(0, start, len)?;
                let mut p = p.f_narrow(0, start, len)?;
                let _ = m.f_lerp_(&g, 1.0 - c.beta1)?;
                let _ = v.f_lerp_(&g.f_square()?, 1.0 - c.beta2)?;
                let mut denom = v.f_sqrt()?;
                let _ = denom.f_mul_scalar_(s.scale)?.f_add_scalar_(s.shift)?;
                let _ = p.f_addcdiv_(&m, &denom)?;
                start += len;
            }
            Ok(())
        })
        .map_err(TrainError::torch("optimiser step"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::flat::decoder_layer;
    use super::*;

    #[test]
    fn decay_groups_follow_hf_names() {
        for name in [
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.3.mlp.down_proj.weight",
            "lm_head.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector.default.weight",
            "model.normalizer.weight",
        ] {
            assert!(gets_weight_decay(name), "{name}");
        }
        for name in [
            "model.layers.0.self_attn.q_proj.bias",
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight",
            "model.norm.weight",
            "model.layers.0.self_attn.q_norm.weight",
            "model.final_RMSNorm.weight",
        ] {
            assert!(!gets_weight_decay(name), "{name}");
        }
    }

    /// One layer of an HF model of `architecture` (its trainable names), plus the final norm and the LM head.
    fn layer_names(architecture: Architecture) -> Vec<String> {
        let p = "model.layers.0";
        let mut names = vec!["model.embed_tokens.weight".to_string()];
        let attention: &[&str] = match architecture {
            Architecture::Qwen2 => &[
                "q_proj.weight",
                "q_proj.bias",
                "k_proj.weight",
                "k_proj.bias",
                "v_proj.weight",
                "v_proj.bias",
                "o_proj.weight",
            ],
            Architecture::Llama => &["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"],
            Architecture::Phi3 => &["qkv_proj.weight", "o_proj.weight"],
        };
        names.extend(attention.iter().map(|n| format!("{p}.self_attn.{n}")));
        names.extend(
            ["mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight"]
                .map(|n| format!("{p}.{n}")),
        );
        names.extend(["model.norm.weight".to_string(), "lm_head.weight".to_string()]);
        names
    }

    /// The (decayed, undecayed) names AdamW forms for `names` under `rule`.
    fn partition(rule: DecayParameters, architecture: Architecture, names: &[String]) -> (Vec<String>, Vec<String>) {
        let params = names.iter().map(|n| (n.clone(), Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)))).collect();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
        let opt = AdamW::new(params, cfg, rule, architecture, None).unwrap();
        let owned = |v: Vec<&str>| v.into_iter().map(String::from).collect();
        (owned(opt.decayed_names()), owned(opt.undecayed_names()))
    }

    const NORMS: [&str; 3] = [
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.norm.weight",
    ];

    #[test]
    fn qwen2_norms_are_decayed_only_under_transformers_4_47_1() {
        let names = layer_names(Architecture::Qwen2);
        let biases = ["q_proj", "k_proj", "v_proj"].map(|m| format!("model.layers.0.self_attn.{m}.bias"));
        let (decayed, undecayed) = partition(DecayParameters::Names, Architecture::Qwen2, &names);
        let mut expected: Vec<String> = biases.to_vec();
        expected.extend(NORMS.map(String::from));
        assert_eq!(undecayed, expected);
        assert_eq!(decayed.len(), names.len() - 6);
        let (decayed, undecayed) = partition(DecayParameters::Transformers4_47_1, Architecture::Qwen2, &names);
        assert_eq!(undecayed, biases.to_vec(), "Qwen2RMSNorm is not in 4.47.1's ALL_LAYERNORM_LAYERS");
        assert!(NORMS.iter().all(|n| decayed.iter().any(|d| d == n)), "{decayed:?}");
    }

    #[test]
    fn llama_norms_are_undecayed_under_both_rules_phi3_norms_only_under_names() {
        for rule in [DecayParameters::Names, DecayParameters::Transformers4_47_1] {
            let names = layer_names(Architecture::Llama);
            let (decayed, undecayed) = partition(rule, Architecture::Llama, &names);
            assert_eq!(undecayed, NORMS.map(String::from).to_vec(), "{rule}");
            assert_eq!(decayed.len(), names.len() - 3, "{rule}");
        }
        let names = layer_names(Architecture::Phi3);
        assert_eq!(partition(DecayParameters::Names, Architecture::Phi3, &names).1, NORMS.map(String::from).to_vec());
        let (decayed, undecayed) = partition(DecayParameters::Transformers4_47_1, Architecture::Phi3, &names);
        assert!(undecayed.is_empty(), "Phi3RMSNorm is not in 4.47.1's ALL_LAYERNORM_LAYERS: {undecayed:?}");
        assert_eq!(decayed.len(), names.len());
    }

    #[test]
    fn adapters_are_decayed_under_both_rules() {
        let p = "base_model.model.model.layers.0";
        let names: Vec<String> = [
            "self_attn.q_proj.lora_A.default.weight",
            "self_attn.q_proj.lora_B.default.weight",
            "self_attn.q_proj.lora_magnitude_vector.default.weight",
            "mlp.down_proj.lora_A.default.weight",
        ]
        .iter()
        .map(|n| format!("{p}.{n}"))
        .collect();
        for rule in [DecayParameters::Names, DecayParameters::Transformers4_47_1] {
            for architecture in Architecture::ALL {
                assert_eq!(partition(rule, architecture, &names).0.len(), names.len(), "{rule} {architecture:?}");
            }
        }
    }

    #[test]
    fn transformers_4_47_1_bias_test_is_a_case_sensitive_substring() {
        let rule = DecayParameters::Transformers4_47_1;
        assert!(!is_decayed(rule, Architecture::Qwen2, "model.layers.0.self_attn.q_proj.bias"));
        assert!(!is_decayed(rule, Architecture::Qwen2, "model.unbiased_scale"));
        assert!(is_decayed(rule, Architecture::Qwen2, "model.Bias_table"));
        assert!(!is_decayed(DecayParameters::Names, Architecture::Qwen2, "model.Bias_table"));
        // A module named like a Llama norm only counts in a Llama model.
        assert!(!is_decayed(rule, Architecture::Llama, "model.norm.weight"));
        assert!(is_decayed(rule, Architecture::Qwen2, "model.norm.weight"));
    }

    #[test]
    fn gradient_buckets_are_each_layers_decayed_tensors_last_layer_first_then_the_rest() {
        // Twelve layers: by name, layer 10 sorts before layer 2; the buffer is in layer order anyway.
        let mut names =
            vec!["lm_head.weight".to_string(), "model.embed_tokens.weight".into(), "model.norm.weight".into()];
        for l in 0..12 {
            names.extend(
                layer_names(Architecture::Qwen2)
                    .into_iter()
                    .filter(|n| n.contains(".layers."))
                    .map(|n| n.replace(".layers.0.", &format!(".layers.{l}."))),
            );
        }
        names.sort();
        let params = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), Tensor::zeros([(i % 5 + 1) as i64], (Kind::Float, tch::Device::Cpu))))
            .collect();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
        let opt = AdamW::new(params, cfg, DecayParameters::Names, Architecture::Qwen2, None).unwrap();
        let buckets = opt.gradient_buckets();
        assert_eq!(
            buckets.iter().map(|b| b.layer).collect::<Vec<_>>(),
            (0..12).rev().map(Some).chain([None]).collect::<Vec<_>>()
        );
        // Disjoint and covering: sorted by offset they tile the buffer.
        let mut tiles: Vec<(i64, i64)> = buckets.iter().map(|b| (b.offset, b.numel)).collect();
        tiles.sort();
        let mut next = 0;
        for (offset, numel) in tiles {
            assert_eq!(offset, next);
            assert!(numel > 0);
            next = offset + numel;
        }
        assert_eq!(next, opt.numel());
        // Each layer's bucket holds exactly that layer's decayed tensors.
        for b in &buckets {
            let inside: Vec<&Slot> =
                opt.slots.iter().filter(|s| s.offset >= b.offset && s.offset + s.numel <= b.offset + b.numel).collect();
            assert_eq!(inside.iter().map(|s| s.numel).sum::<i64>(), b.numel, "{b:?}");
            match b.layer {
                Some(l) => {
                    assert!(
                        inside.iter().all(|s| decoder_layer(&s.name) == Some(l) && s.offset < opt.layout.decay_numel),
                        "{b:?}"
                    );
                    assert_eq!(inside.len(), 5, "q, k, v, o and down_proj weights of layer {l}");
                }
                None => assert!(inside
                    .iter()
                    .all(|s| decoder_layer(&s.name).is_none() || s.offset >= opt.layout.decay_numel)),
            }
        }
    }

    /// Reference: torch's single-tensor AdamW written out with f64 scalars on one element.
    #[test]
    fn update_matches_the_adamw_formula() {
        let w = Tensor::from_slice(&[0.5f64, -1.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.25f64]).set_requires_grad(true);
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
        let params = vec![("x.bias".into(), b.shallow_clone()), ("x.weight".into(), w.shallow_clone())];
        let mut opt = AdamW::new(params, cfg, DecayParameters::Names, Architecture::Qwen2, None).unwrap();
        assert_eq!(opt.decayed_names(), vec!["x.weight"]);
        let (mut pw, mut m, mut v) = (0.5f64, 0.0, 0.0);
        let (mut pb, mut mb, mut vb) = (0.25f64, 0.0, 0.0);
        for (t, lr) in [(1, 0.0), (2, 0.01), (3, 0.02)] {
            // loss = 3*w0^2 + b: grads 6*w0 and 1.
            let loss = w.get(0).square().g_mul_scalar(3.0) + b.get(0);
            loss.backward();
            let (gw, gb) = (6.0 * pw, 1.0);
            let norm = opt.clip_grad_norm(0.0).unwrap().double_value(&[]);
            assert!((norm - (gw * gw + gb * gb).sqrt()).abs() < 1e-5);
            opt.step(lr).unwrap();
            let bc1 = 1.0 - 0.9f64.powi(t);
            let bc2 = (1.0 - 0.999f64.powi(t)).sqrt();
            pw *= 1.0 - lr * 0.1;
            m = 0.9 * m + 0.1 * gw;
            v = 0.999 * v + 0.001 * gw * gw;
            pw -= lr / bc1 * m / (v.sqrt() / bc2 + 1e-8);
            mb = 0.9 * mb + 0.1 * gb;
            vb = 0.999 * vb + 0.001 * gb * gb;
            pb -= lr / bc1 * mb / (vb.sqrt() / bc2 + 1e-8);
            assert!((w.double_value(&[0]) - pw).abs() < 1e-12, "step {t}: {} vs {pw}", w.double_value(&[0]));
            assert!((b.double_value(&[0]) - pb).abs() < 1e-12, "step {t}");
        }
        // The second weight's gradient is always 0: only weight decay moved it.
        assert!((w.double_value(&[1]) + (1.0 - 0.01 * 0.1) * (1.0 - 0.02 * 0.1)).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let w = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let mut opt =
            AdamW::new(vec![("w".into(), w.shallow_clone())], cfg, DecayParameters::Names, Architecture::Qwen2, None)
                .unwrap();
        (&w * &w).sum(Kind::Float).g_mul_scalar(0.5).backward();
        let norm = opt.clip_grad_norm(1.0).unwrap().double_value(&[]);
        assert!((norm - 5.0).abs() < 1e-6);
        let g = w.grad();
        assert!((g.double_value(&[0]) - 0.6).abs() < 1e-6 && (g.double_value(&[1]) - 0.8).abs() < 1e-6);
    }
}
