//! LoRA and DoRA adapters as PEFT (0.21) implements them, attached to the model's linear layers through
//! `model::layers::LinearAdapter`, and saved in PEFT's format.
//!
//! LoRA: `y = base(x) + scaling * B(A(dropout(x)))`, scaling = alpha / r, A [r, in] kaiming-uniform(a=sqrt(5)),
//! B [out, r] zeros. DoRA adds a per-output magnitude m, initialised to the row norms of W:
//! `y = base(x) + (m/n - 1) * (base(x) - bias) + (m/n) * scaling * B(A(x'))`, where n = ||W + scaling*BA|| per row is
//! treated as a constant (detached), and with dropout active in training the first term uses `dropout(x) W^T`.
//! As PEFT's default `autocast_adapter_dtype=True` does, adapters are f32 whatever the base dtype, and their input
//! is cast to f32. Target names match a module when equal to its full name or to a dot-separated suffix of it
//! (PEFT's rule), e.g. `q_proj` or `self_attn.q_proj`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tch::{Kind, Tensor};

use super::error::TrainError;
use crate::model::layers::{DecoderLayer, GateUpProj, Linear, LinearAdapter, QkvProj};
use crate::model::CausalLm;

/// The peft.* settings that shape the adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// Rank r.
    pub rank: usize,
    /// alpha (scaling = alpha / r).
    pub alpha: usize,
    /// Dropout on the adapter input while training.
    pub dropout: f64,
    /// Module names to adapt.
    pub target_modules: Vec<String>,
    /// Weight-decomposed LoRA.
    pub dora: bool,
}

#[derive(Debug)]
struct LoraLinear {
    a: Tensor,
    b: Tensor,
    magnitude: Option<Tensor>,
    scaling: f64,
    dropout: f64,
    training: Arc<AtomicBool>,
}

impl LinearAdapter for LoraLinear {
    fn forward(&self, linear: &Linear, x: &Tensor, base: Tensor) -> Result<Tensor, tch::TchError> {
        let out_kind = base.kind();
        let x = x.f_to_kind(Kind::Float)?;
        let dropping = self.dropout > 0.0 && self.training.load(Ordering::Relaxed);
        let xd = if dropping { x.f_dropout(self.dropout, true)? } else { x.shallow_clone() };
        let lora = xd.f_linear::<Tensor>(&self.a, None)?.f_linear::<Tensor>(&self.b, None)?;
        let delta = match &self.magnitude {
            None => lora.f_mul_scalar(self.scaling)?,
            Some(m) => {
                let norm = tch::no_grad(|| dora_row_norm(&linear.weight, &self.a, &self.b, self.scaling))?;
                let scale = m.f_div(&norm)?;
                let plain = if dropping {
                    xd.f_linear::<Tensor>(&linear.weight.f_to_kind(Kind::Float)?, None)?
                } else {
                    let unbiased = match &linear.bias {
                        Some(bias) => base.f_sub(bias)?,
                        None => base.shallow_clone(),
                    };
                    unbiased.f_to_kind(Kind::Float)?
                };
                plain.f_mul(&scale.f_sub_scalar(1.0)?)?.f_add(&lora.f_mul(&scale)?.f_mul_scalar(self.scaling)?)?
            }
        };
        base.f_to_kind(Kind::Float)?.f_add(&delta)?.f_to_kind(out_kind)
    }
}

/// ||W + scaling * B A|| of each output row, in f32.
fn dora_row_norm(weight: &Tensor, a: &Tensor, b: &Tensor, scaling: f64) -> Result<Tensor, tch::TchError> {
    let merged = weight.f_to_kind(Kind::Float)?.f_add(&b.f_matmul(a)?.f_mul_scalar(scaling)?)?;
    merged.f_linalg_norm(2.0, [1i64].as_slice(), false, None::<Kind>)
}

/// One adapted module's tensors, shared with the adapter inside the model.
#[derive(Debug)]
pub struct AdaptedModule {
    /// The module's checkpoint path, e.g. `model.layers.0.self_attn.q_proj`.
    pub module: String,
    /// lora_A [r, in] (f32).
    pub a: Tensor,
    /// lora_B [out, r] (f32).
    pub b: Tensor,
    /// DoRA magnitude [out] (f32).
    pub magnitude: Option<Tensor>,
}

/// The adapters attached to a model.
#[derive(Debug)]
pub struct LoraAdapters {
    /// The settings they were made with.
    pub spec: LoraSpec,
    /// Every adapted module, in layer order.
    pub modules: Vec<AdaptedModule>,
    training: Arc<AtomicBool>,
}

/// The linear layers of a decoder layer with their module paths relative to the layer.
fn linears_mut(layer: &mut DecoderLayer) -> Vec<(&'static str, &mut Linear)> {
    let mut out: Vec<(&'static str, &mut Linear)> = Vec::new();
    match &mut layer.self_attn.qkv {
        QkvProj::Separate { q, k, v } => {
            out.extend([("self_attn.q_proj", q), ("self_attn.k_proj", k), ("self_attn.v_proj", v)]);
        }
        QkvProj::Fused(qkv) => out.push(("self_attn.qkv_proj", qkv)),
    }
    out.push(("self_attn.o_proj", &mut layer.self_attn.o_proj));
    match &mut layer.mlp.gate_up {
        GateUpProj::Separate { gate, up } => out.extend([("mlp.gate_proj", gate), ("mlp.up_proj", up)]),
        GateUpProj::Fused(gate_up) => out.push(("mlp.gate_up_proj", gate_up)),
    }
    out.push(("mlp.down_proj", &mut layer.mlp.down_proj));
    out
}

/// PEFT's match of one target name against a module path.
fn matches(module: &str, target: &str) -> bool {
    module == target || module.ends_with(&format!(".{target}"))
}

impl LoraAdapters {
    /// Attaches adapters to every linear layer `spec.target_modules` names; draws A from the global libtorch RNG
    /// (seed it first). Names that match nothing are an error listing the available ones.
    pub fn attach(model: &mut CausalLm, spec: &LoraSpec) -> Result<Self, TrainError> {
        let training = Arc::new(AtomicBool::new(true));
        let scaling = spec.alpha as f64 / spec.rank as f64;
        let device = model.device();
        let mut available: Vec<&'static str> = Vec::new();
        let mut used = vec![false; spec.target_modules.len()];
        let mut modules = Vec::new();
        for (i, layer) in model.layers_mut().iter_mut().enumerate() {
            for (rel, linear) in linears_mut(layer) {
                let short = rel.rsplit('.').next().unwrap_or(rel);
                if !available.contains(&short) {
                    available.push(short);
                }
                let module = format!("model.layers.{i}.{rel}");
                let mut hit = false;
                for (t, target) in spec.target_modules.iter().enumerate() {
                    if matches(&module, target) {
                        used[t] = true;
                        hit = true;
                    }
                }
                if !hit {
                    continue;
                }
                let err = || TrainError::torch(format!("creating the adapter of {module}"));
                let (out_f, in_f) = (linear.weight.size()[0], linear.weight.size()[1]);
                let bound = 1.0 / (in_f as f64).sqrt();
                let a = Tensor::f_rand([spec.rank as i64, in_f], (Kind::Float, device))
                    .and_then(|r| r.f_mul_scalar(2.0 * bound))
                    .and_then(|r| r.f_sub_scalar(bound))
                    .map_err(err())?
                    .set_requires_grad(true);
                let b = Tensor::f_zeros([out_f, spec.rank as i64], (Kind::Float, device))
                    .map_err(err())?
                    .set_requires_grad(true);
                let magnitude = if spec.dora {
                    let norm = tch::no_grad(|| dora_row_norm(&linear.weight, &a, &b, scaling)).map_err(err())?;
                    Some(norm.set_requires_grad(true))
                } else {
                    None
                };
                linear.adapter = Some(Box::new(LoraLinear {
                    a: a.shallow_clone(),
                    b: b.shallow_clone(),
                    magnitude: magnitude.as_ref().map(Tensor::shallow_clone),
                    scaling,
                    dropout: spec.dropout,
                    training: training.clone(),
                }));
                modules.push(AdaptedModule { module, a, b, magnitude });
            }
        }
        let unmatched: Vec<&str> =
            spec.target_modules.iter().zip(&used).filter(|(_, u)| !**u).map(|(t, _)| t.as_str()).collect();
        if !unmatched.is_empty() {
            for layer in model.layers_mut() {
                for (_, linear) in linears_mut(layer) {
                    linear.adapter = None;
                }
            }
            return Err(TrainError::LoraTargets { unmatched: unmatched.join(", "), available: available.join(", ") });
        }
        Ok(LoraAdapters { spec: spec.clone(), modules, training })
    }

    /// Overwrites the adapters' values with tensors under PEFT's saved names (e.g. an initialisation recorded by
    /// the parity script); every adapter tensor must be present.
    pub fn load_peft_tensors(&self, tensors: &std::collections::HashMap<String, Tensor>) -> Result<(), TrainError> {
        for (name, mut target) in self.peft_state_dict() {
            let source = tensors.get(&name).ok_or_else(|| TrainError::Invalid(format!("no tensor {name} given")))?;
            tch::no_grad(|| source.f_to_kind(Kind::Float).and_then(|s| target.f_copy_(&s)))
                .map_err(TrainError::torch(format!("loading {name}")))?;
        }
        Ok(())
    }

    /// Switches adapter dropout on (training) or off (evaluation).
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    /// The trainable tensors under the names PEFT's model gives them (what HF's decay rule sees).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for m in &self.modules {
            let p = format!("base_model.model.{}", m.module);
            out.push((format!("{p}.lora_A.default.weight"), m.a.shallow_clone()));
            out.push((format!("{p}.lora_B.default.weight"), m.b.shallow_clone()));
            if let Some(mag) = &m.magnitude {
                out.push((format!("{p}.lora_magnitude_vector.default.weight"), mag.shallow_clone()));
            }
        }
        out
    }

    /// The tensors of adapter_model.safetensors, under PEFT's saved key names.
    pub fn peft_state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for m in &self.modules {
            let p = format!("base_model.model.{}", m.module);
            out.push((format!("{p}.lora_A.weight"), m.a.shallow_clone()));
            out.push((format!("{p}.lora_B.weight"), m.b.shallow_clone()));
            if let Some(mag) = &m.magnitude {
                out.push((format!("{p}.lora_magnitude_vector"), mag.shallow_clone()));
            }
        }
        out
    }

    /// PEFT's adapter_config.json for these adapters.
    pub fn adapter_config(&self, base_model: &str) -> serde_json::Value {
        let s = &self.spec;
        serde_json::json!({
            "base_model_name_or_path": base_model,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "lora_alpha": s.alpha,
            "lora_dropout": s.dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": s.rank,
            "rank_pattern": {},
            "alpha_pattern": {},
            "target_modules": s.target_modules,
            "task_type": "CAUSAL_LM",
            "use_dora": s.dora,
            "use_rslora": false,
            "layers_to_transform": null,
            "layers_pattern": null,
            "revision": null
        })
    }

    /// The merged weight of each adapted module (`model.layers.i....weight` -> W'), in the base weights' dtype:
    /// W + scaling*BA for LoRA, (m / ||W + scaling*BA||) * (W + scaling*BA) row-wise for DoRA (PEFT's merge).
    pub fn merged_weights(&self, model: &CausalLm) -> Result<Vec<(String, Tensor)>, TrainError> {
        let scaling = self.spec.alpha as f64 / self.spec.rank as f64;
        let named = model.named_weights();
        let mut out = Vec::new();
        for m in &self.modules {
            let key = format!("{}.weight", m.module);
            let w = named.get(&key).ok_or_else(|| TrainError::Invalid(format!("the model has no tensor {key}")))?;
            let merged = tch::no_grad(|| -> Result<Tensor, tch::TchError> {
                let full = w.f_to_kind(Kind::Float)?.f_add(&m.b.f_matmul(&m.a)?.f_mul_scalar(scaling)?)?;
                let full = match &m.magnitude {
                    None => full,
                    Some(mag) => {
                        let norm = full.f_linalg_norm(2.0, [1i64].as_slice(), false, None::<Kind>)?;
                        full.f_mul(&mag.f_div(&norm)?.f_unsqueeze(1)?)?
                    }
                };
                full.f_to_kind(w.kind())
            })
            .map_err(TrainError::torch(format!("merging the adapter of {}", m.module)))?;
            out.push((key, merged));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_suffix_rule() {
        assert!(matches("model.layers.0.self_attn.q_proj", "q_proj"));
        assert!(matches("model.layers.0.self_attn.q_proj", "self_attn.q_proj"));
        assert!(!matches("model.layers.0.self_attn.q_proj", "proj"));
        assert!(!matches("model.layers.0.self_attn.q_proj", "query_key_value"));
    }
}
