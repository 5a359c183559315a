//! The decoder building blocks shared by Qwen2, Llama and Phi3: linear layers (with an optional trainer adapter),
//! RMSNorm, GQA attention through libtorch's scaled_dot_product_attention (full causal, cached prefill, cached
//! decode), the SiLU-gated MLP and the decoder layer; the rotary embedding lives in rope.rs (re-exported here).
//! Projections are either separate (q/k/v, gate/up) or fused (Phi3's qkv_proj, gate_up_proj); separate ones can be
//! fused into inference-only copies for generation, and training passes run them as one product over their stacked
//! weights ([`linear_rows`]). Inference passes (prefill, decode) on CUDA use the fused
//! kernels of crate::kernels where they apply (norm with residual add, SiLU-and-multiply, and for decode the rotary
//! embedding with the cache write and split-K attention), and libtorch ops otherwise.

use tch::Tensor;

use crate::kernels::Kernels;
use crate::switch::Switch;

use super::error::ModelError;
pub use super::rope::{RopeAt, RotaryEmbedding};

/// A trainable addition to a linear layer (LoRA, DoRA), attached by a trainer (`train::lora`); inference has none.
pub trait LinearAdapter: std::fmt::Debug + Send {
    /// The adapted output, given the layer, its input `x` and the frozen layer's output `base` (bias included).
    fn forward(&self, linear: &Linear, x: &Tensor, base: Tensor) -> Result<Tensor, tch::TchError>;
}

/// A linear layer `y = x W^T + b`, weights as stored in HF checkpoints ([out, in]).
#[derive(Debug)]
pub struct Linear {
    /// [out_features, in_features].
    pub weight: Tensor,
    /// [out_features], when the layer has a bias.
    pub bias: Option<Tensor>,
    /// A trainer's adapter applied on top of the layer's output; `None` when loaded.
    pub adapter: Option<Box<dyn LinearAdapter>>,
}

/// Whether a trained weight's gradient is added within its backward product ([`linear`]); `STASC_FUSED_WGRAD=0`
/// leaves it to autograd's separate add.
static FUSED_WGRAD: Switch = Switch::new("STASC_FUSED_WGRAD", true);

/// Sets `STASC_FUSED_WGRAD` for the whole process (parity tests compare both paths).
pub fn set_fused_wgrad(on: bool) {
    FUSED_WGRAD.set(on);
}

/// `x W^T + b`. When `weight` wants a gradient (full fine-tuning), through [`crate::ffi::linear_grad_into`]:
/// backward then adds the weight's gradient into its gradient tensor (a view of the trainer's flat buffer) within
/// the product, saving autograd's separate pass over it: ~3 ms of a 1.5B model's packed pass on an H200.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, tch::TchError> {
    if weight.requires_grad() && crate::ffi::HAS_SHIM && FUSED_WGRAD.get() {
        return crate::ffi::linear_grad_into(x, weight, bias).map_err(|e| tch::TchError::Torch(e.to_string()));
    }
    x.f_linear(weight, bias)
}

/// Whether training passes run layers that share their input (q/k/v, gate/up) as one matrix product each way
/// ([`linear_rows`]); `STASC_FUSED_PROJECTIONS=0` runs them one by one.
static FUSED_PROJECTIONS: Switch = Switch::new("STASC_FUSED_PROJECTIONS", true);

/// Sets `STASC_FUSED_PROJECTIONS` for the whole process (parity tests compare both paths).
pub fn set_fused_projections(on: bool) {
    FUSED_PROJECTIONS.set(on);
}

/// In a training pass (every weight wants a gradient), the outputs of `parts` on their shared input `x`
/// concatenated on the last dimension, from one matrix product of their stacked weights each way
/// ([`crate::ffi::linears_grad_into`]: the trainer's flat buffers hold a layer's q, k, v and its gate, up back to
/// back, so the stack is an alias and the weights' gradients are added within the products); one product where
/// the parts take one each, and no adds of the input's gradients. `None` where it does not apply (inference, an
/// adapter, biases on some parts only, no shim, switched off with `STASC_FUSED_PROJECTIONS=0` or
/// `STASC_FUSED_WGRAD=0`), and the caller runs the layers one by one.
pub fn linear_rows(x: &Tensor, parts: &[&Linear]) -> Result<Option<Tensor>, tch::TchError> {
    let biases: Vec<&Tensor> = parts.iter().filter_map(|l| l.bias.as_ref()).collect();
    let applies = crate::ffi::HAS_SHIM
        && FUSED_WGRAD.get()
        && FUSED_PROJECTIONS.get()
        && parts.iter().all(|l| l.adapter.is_none() && l.weight.requires_grad())
        && (biases.is_empty() || biases.len() == parts.len());
    if !applies {
        return Ok(None);
    }
    let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
    crate::ffi::linears_grad_into(x, &weights, &biases).map(Some).map_err(|e| tch::TchError::Torch(e.to_string()))
}

impl Linear {
    /// Applies the layer to the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let base = linear(x, &self.weight, self.bias.as_ref())?;
        match &self.adapter {
            None => Ok(base),
            Some(adapter) => adapter.forward(self, x, base),
        }
    }

    /// Like [`Linear::forward`], through gemv.cu when `kernels` are given and take the shape (a decode step of a
    /// few rows, no adapter).
    pub fn forward_kernels(&self, x: &Tensor, kernels: Option<&Kernels>) -> Result<Tensor, tch::TchError> {
        // The kernel has no backward: only where no gradient flows.
        let inference = !x.requires_grad() && !self.weight.requires_grad();
        if let (Some(k), None, true) = (kernels, &self.adapter, inference) {
            if let Some(y) = k.gemv(x, &self.weight, self.bias.as_ref())? {
                return Ok(y);
            }
        }
        self.forward(x)
    }
}

/// Root-mean-square layer norm with a learned scale.
#[derive(Debug)]
pub struct RmsNorm {
    /// [hidden_size].
    pub weight: Tensor,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl RmsNorm {
    /// Normalises the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let dim = self.weight.size()[0];
        x.f_rms_norm([dim].as_slice(), Some(&self.weight), self.eps)
    }

    /// Like [`RmsNorm::forward`], through the fused kernel when `kernels` are given and take `x`.
    pub fn forward_kernels(&self, x: &Tensor, kernels: Option<&Kernels>) -> Result<Tensor, tch::TchError> {
        if let Some(k) = kernels {
            if let Some((_, normed)) = k.add_rms_norm(x, None, &self.weight, self.eps)? {
                return Ok(normed);
            }
        }
        self.forward(x)
    }

    /// `(x + residual, norm(x + residual))`, in one fused kernel when `kernels` are given and take the inputs.
    pub fn add_forward(
        &self,
        x: &Tensor,
        residual: &Tensor,
        kernels: Option<&Kernels>,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        if let Some(k) = kernels {
            if let Some(pair) = k.add_rms_norm(x, Some(residual), &self.weight, self.eps)? {
                return Ok(pair);
            }
        }
        let sum = x.f_add(residual)?;
        let normed = self.forward(&sum)?;
        Ok((sum, normed))
    }
}

/// The q/k/v projections: three matrices, or Phi3's one fused matrix ([q; k; v] rows).
#[derive(Debug)]
pub enum QkvProj {
    /// q_proj, k_proj, v_proj.
    Separate {
        /// Query projection.
        q: Linear,
        /// Key projection.
        k: Linear,
        /// Value projection.
        v: Linear,
    },
    /// qkv_proj.
    Fused(Linear),
}

/// Per-layer K/V storage handed to attention by the cache owner.
pub struct LayerCache<'a> {
    /// [rows, kv_heads, max_len, head_dim].
    pub k: &'a mut Tensor,
    /// [rows, kv_heads, max_len, head_dim].
    pub v: &'a mut Tensor,
}

/// How one attention call uses the cache.
pub enum AttnMode<'a> {
    /// Causal attention over the input alone.
    Full,
    /// Causal attention over the input; K/V also written to cache rows `rows` at positions 0..T.
    Prefill {
        /// This layer's cache.
        cache: LayerCache<'a>,
        /// [B] cache row of each input row.
        rows: &'a Tensor,
    },
    /// Prefill continuing cache rows whose positions 0..start already hold K/V (a shared prompt prefix copied in):
    /// the input's K/V written at positions start..start + T of rows `rows`, causal attention over both
    /// (crate::model::extend).
    Extend {
        /// This layer's cache.
        cache: LayerCache<'a>,
        /// [B] cache row of each input row.
        rows: &'a Tensor,
        /// The first position of the input.
        start: i64,
        /// The masked path's [groups x T, start + T] bool mask, made by the first layer that needs it and shared by
        /// the pass's layers (`extend::attention`).
        mask: &'a std::cell::OnceCell<Tensor>,
    },
    /// One token per cache row: K/V written at `write_pos`, attention over the first `attend_len` cache positions
    /// where `mask` ([rows, 1, 1, attend_len] bool) is true.
    Decode {
        /// This layer's cache.
        cache: LayerCache<'a>,
        /// [rows] arange, the row index of each input row.
        rows: &'a Tensor,
        /// [rows] position written by each row.
        write_pos: &'a Tensor,
        /// Number of leading cache positions attended to.
        attend_len: i64,
        /// Which of them each row may see.
        mask: &'a Tensor,
        /// K and V [1, kv_heads, len, head_dim] of positions 0..len that every row's cache also holds: fused
        /// attention reads them once for all rows instead of each row's copy.
        prefix: Option<(&'a Tensor, &'a Tensor)>,
    },
}

/// Multi-head self-attention with grouped K/V heads.
#[derive(Debug)]
pub struct Attention {
    /// The input projections.
    pub qkv: QkvProj,
    /// The output projection.
    pub o_proj: Linear,
    /// Query heads.
    pub num_heads: i64,
    /// Key/value heads.
    pub num_kv_heads: i64,
    /// Per-head width.
    pub head_dim: i64,
}

impl Attention {
    /// Attends `x` ([B, T, hidden]) and returns [B, T, hidden].
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        rope_at: &RopeAt,
        mode: AttnMode<'_>,
    ) -> Result<Tensor, tch::TchError> {
        self.forward_kernels(x, rope, rope_at, mode, None, None)
    }

    /// Like [`Attention::forward`], with an inference-only fused copy of separate q/k/v projections (fewer kernels);
    /// a decode step with a fused q/k/v projection runs the rotary embedding with
    /// the cache write, and the attention, as fused kernels when `kernels` are given and take the shapes.
    pub fn forward_kernels(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        rope_at: &RopeAt,
        mode: AttnMode<'_>,
        fused_qkv: Option<&Linear>,
        kernels: Option<&Kernels>,
    ) -> Result<Tensor, tch::TchError> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let scale = 1.0 / (d as f64).sqrt();
        if let (Some(k), AttnMode::Decode { cache, write_pos, attend_len, prefix, .. }, Some((cos, sin))) =
            (kernels, &mode, rope.tables())
        {
            let qkv = match (&self.qkv, fused_qkv) {
                (_, Some(qkv)) | (QkvProj::Fused(qkv), None) => Some(qkv),
                _ => None,
            };
            if let Some(qkv) = qkv {
                let all = qkv.forward_kernels(x, Some(k))?;
                if let Some(q) = k.rope_kv_write(&all, cos, sin, write_pos, &*cache.k, &*cache.v, h)? {
                    if let Some(out) =
                        k.decode_attention(&q, &*cache.k, &*cache.v, write_pos, *attend_len, scale, *prefix)?
                    {
                        return self.o_proj.forward_kernels(&out, Some(k));
                    }
                }
            }
        }
        let (q, k, v) = match (&self.qkv, fused_qkv) {
            (QkvProj::Separate { q, k, v }, None) => (
                rope.apply(&q.forward(x)?.f_view([b, t, h, d])?, rope_at)?,
                rope.apply(&k.forward(x)?.f_view([b, t, kvh, d])?, rope_at)?,
                v.forward(x)?.f_view([b, t, kvh, d])?,
            ),
            (_, Some(qkv)) | (QkvProj::Fused(qkv), None) => {
                let all = qkv.forward(x)?.f_view([b, t, h + 2 * kvh, d])?;
                // Queries and keys are adjacent heads: rotate them in one go.
                let qk = rope.apply(&all.f_narrow(2, 0, h + kvh)?, rope_at)?;
                (qk.f_narrow(2, 0, h)?, qk.f_narrow(2, h, kvh)?, all.f_narrow(2, h + kvh, kvh)?)
            }
        };
        let out = match mode {
            AttnMode::Full | AttnMode::Prefill { .. } => {
                let (q, k, v) = (q.f_transpose(1, 2)?, k.f_transpose(1, 2)?, v.f_transpose(1, 2)?);
                if let AttnMode::Prefill { cache, rows } = mode {
                    let _ = cache.k.f_narrow(2, 0, t)?.f_index_copy_(0, rows, &k)?;
                    let _ = cache.v.f_narrow(2, 0, t)?.f_index_copy_(0, rows, &v)?;
                }
                let out =
                    Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, true, scale, h != kvh)?;
                out.f_transpose(1, 2)?.f_reshape([b, t, h * d])?
            }
            AttnMode::Extend { cache, rows, start, mask } => {
                super::extend::attention(&q, &k, &v, cache, rows, start, mask, scale)?
            }
            // The rows' own copies of a shared prefix serve the libtorch ops.
            AttnMode::Decode { cache, rows, write_pos, attend_len, mask, .. } => {
                let indices = [Some(rows), None, Some(write_pos)];
                let _ = cache.k.f_index_put_(&indices, &k.f_reshape([b, kvh, d])?, false)?;
                let _ = cache.v.f_index_put_(&indices, &v.f_reshape([b, kvh, d])?, false)?;
                let keys = cache.k.f_narrow(2, 0, attend_len)?;
                let values = cache.v.f_narrow(2, 0, attend_len)?;
                // The G query heads of one K/V head act as G query rows against that head: GQA with no repeated K/V.
                let grouped = q.f_reshape([b, kvh, h / kvh, d])?;
                let out = Tensor::f_scaled_dot_product_attention(
                    &grouped,
                    &keys,
                    &values,
                    Some(mask),
                    0.0,
                    false,
                    scale,
                    false,
                )?;
                out.f_reshape([b, 1, h * d])?
            }
        };
        self.o_proj.forward(&out)
    }
}

/// The gate/up projections: two matrices, or Phi3's fused gate_up_proj ([gate; up] rows).
#[derive(Debug)]
pub enum GateUpProj {
    /// gate_proj, up_proj.
    Separate {
        /// Gate projection (through SiLU).
        gate: Linear,
        /// Up projection.
        up: Linear,
    },
    /// gate_up_proj.
    Fused(Linear),
}

/// The SiLU-gated MLP: down(silu(gate(x)) * up(x)).
#[derive(Debug)]
pub struct Mlp {
    /// Gate and up projections.
    pub gate_up: GateUpProj,
    /// Down projection.
    pub down_proj: Linear,
    /// Width of the hidden layer.
    pub intermediate_size: i64,
}

impl Mlp {
    /// Applies the MLP to [.., hidden].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        self.forward_with(x, None)
    }

    /// Like [`Mlp::forward`], with an inference-only fused copy of separate gate/up projections.
    pub fn forward_with(&self, x: &Tensor, fused_gate_up: Option<&Linear>) -> Result<Tensor, tch::TchError> {
        self.forward_kernels(x, fused_gate_up, None)
    }

    /// Like [`Mlp::forward_with`], with SiLU-and-multiply as one fused kernel when `kernels` are given.
    pub fn forward_kernels(
        &self,
        x: &Tensor,
        fused_gate_up: Option<&Linear>,
        kernels: Option<&Kernels>,
    ) -> Result<Tensor, tch::TchError> {
        // Training: one product for both projections, then one SiLU kernel each way on CUDA.
        let stacked = match (&self.gate_up, fused_gate_up) {
            (GateUpProj::Separate { gate, up }, None) => linear_rows(x, &[gate, up])?,
            _ => None,
        };
        let hidden = match (&self.gate_up, fused_gate_up, stacked) {
            (_, _, Some(both)) => match crate::kernels::silu_mul_rows_autograd(&both)? {
                Some(hidden) => hidden,
                None => {
                    let n = self.intermediate_size;
                    let halves = both.f_split_with_sizes([n, n].as_slice(), -1)?;
                    halves[0].f_silu()?.f_mul(&halves[1])?
                }
            },
            (GateUpProj::Separate { gate, up }, None, None) => {
                let (a, b) = (gate.forward(x)?, up.forward(x)?);
                // Training passes on CUDA: one kernel each way (crate::kernels' autograd op).
                let fused = if a.requires_grad() { crate::kernels::silu_mul_autograd(&a, &b)? } else { None };
                match fused {
                    Some(hidden) => hidden,
                    None => a.f_silu()?.f_mul(&b)?,
                }
            }
            (_, Some(gate_up), None) | (GateUpProj::Fused(gate_up), None, None) => {
                let both = gate_up.forward_kernels(x, kernels)?;
                let n = self.intermediate_size;
                let trained = if both.requires_grad() { crate::kernels::silu_mul_rows_autograd(&both)? } else { None };
                match trained {
                    Some(hidden) => hidden,
                    None => match kernels.map(|k| k.silu_mul(&both, n)).transpose()?.flatten() {
                        Some(hidden) => hidden,
                        None => both.f_narrow(-1, 0, n)?.f_silu()?.f_mul(&both.f_narrow(-1, n, n)?)?,
                    },
                }
            }
        };
        self.down_proj.forward_kernels(&hidden, kernels)
    }
}

/// One pre-norm decoder layer: x + attn(norm(x)), then + mlp(norm(.)).
#[derive(Debug)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Self-attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// The MLP.
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// Runs the layer on [B, T, hidden].
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        rope_at: &RopeAt,
        mode: AttnMode<'_>,
    ) -> Result<Tensor, tch::TchError> {
        self.forward_with(x, rope, rope_at, mode, None)
    }

    /// Like [`DecoderLayer::forward`], using inference-only fused projections where given.
    pub fn forward_with(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        rope_at: &RopeAt,
        mode: AttnMode<'_>,
        fused: Option<&FusedProjections>,
    ) -> Result<Tensor, tch::TchError> {
        let (x, mlp) = self.forward_pending(x, None, rope, rope_at, mode, fused)?;
        x.f_add(&mlp)
    }

    /// [`DecoderLayer::forward_with`] with the last residual add left to the caller: takes the residual stream `x`
    /// and the previous layer's MLP output not yet added to it (`pending`), returns this layer's residual stream
    /// after attention and its MLP output. The caller fuses each add with the next norm (one kernel instead of
    /// two in inference passes).
    pub fn forward_pending(
        &self,
        x: &Tensor,
        pending: Option<&Tensor>,
        rope: &RotaryEmbedding,
        rope_at: &RopeAt,
        mode: AttnMode<'_>,
        fused: Option<&FusedProjections>,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        // Fused kernels only where no gradient flows: inference passes on tensors that need none.
        let kernels = match mode {
            AttnMode::Full => None,
            _ if x.requires_grad() || pending.is_some_and(Tensor::requires_grad) => None,
            _ => crate::kernels::for_tensor(x),
        };
        let (x, normed) = match pending {
            Some(p) => self.input_layernorm.add_forward(x, p, kernels)?,
            None => (x.shallow_clone(), self.input_layernorm.forward_kernels(x, kernels)?),
        };
        let (fused_qkv, fused_gate_up) = (fused.and_then(|f| f.qkv.as_ref()), fused.and_then(|f| f.gate_up.as_ref()));
        let attn = self.self_attn.forward_kernels(&normed, rope, rope_at, mode, fused_qkv, kernels)?;
        let (x, normed) = self.post_attention_layernorm.add_forward(&x, &attn, kernels)?;
        let mlp = self.mlp.forward_kernels(&normed, fused_gate_up, kernels)?;
        Ok((x, mlp))
    }

    /// Inference-only fused copies of this layer's separate projections: [q; k; v] and [gate; up] rows concatenated,
    /// so each runs as one matrix product. Projections carrying an adapter, or already fused, get none.
    pub fn fused_projections(&self) -> Result<FusedProjections, tch::TchError> {
        let qkv = match &self.self_attn.qkv {
            QkvProj::Separate { q, k, v } => concat_linears(&[q, k, v])?,
            QkvProj::Fused(_) => None,
        };
        let gate_up = match &self.mlp.gate_up {
            GateUpProj::Separate { gate, up } => concat_linears(&[gate, up])?,
            GateUpProj::Fused(_) => None,
        };
        Ok(FusedProjections { qkv, gate_up })
    }
}

/// Inference-only concatenations of a layer's separate projections (see [`DecoderLayer::fused_projections`]).
/// They are copies: valid only while the weights they were built from do not change.
#[derive(Debug)]
pub struct FusedProjections {
    /// [q; k; v] rows, or `None`.
    pub qkv: Option<Linear>,
    /// [gate; up] rows, or `None`.
    pub gate_up: Option<Linear>,
}

/// The row-wise concatenation of linear layers sharing an input, or `None` if one has an adapter.
fn concat_linears(parts: &[&Linear]) -> Result<Option<Linear>, tch::TchError> {
    let with_bias = parts.iter().filter(|l| l.bias.is_some()).count();
    if parts.iter().any(|l| l.adapter.is_some()) || (with_bias != 0 && with_bias != parts.len()) {
        return Ok(None);
    }
    let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
    let bias = match parts.iter().map(|l| l.bias.as_ref()).collect::<Option<Vec<&Tensor>>>() {
        Some(biases) => Some(Tensor::f_cat(&biases, 0)?.f_detach()?),
        None => None,
    };
    Ok(Some(Linear { weight: Tensor::f_cat(&weights, 0)?.f_detach()?, bias, adapter: None }))
}

/// Maps a libtorch error to a model error with context.
pub(crate) fn torch_err(context: &str) -> impl FnOnce(tch::TchError) -> ModelError + '_ {
    move |source| ModelError::Torch { context: context.to_string(), error: source }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    fn leaf(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu)).set_requires_grad(true)
    }

    fn copy_of(t: &Tensor) -> Tensor {
        t.detach().copy().set_requires_grad(true)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Layers sharing an input as one product ([`super::linear_rows`]), with weights and biases back to back in flat
    /// buffers (as the trainer places them: the stacked matrix is an alias) and apart (a copy): over two
    /// accumulating backward passes, outputs and every gradient equal separate libtorch linears' within f32
    /// reassociation, and once the gradients are the trainer's views of a flat buffer, they are added there in
    /// place.
    #[test]
    fn stacked_layers_give_separate_linears_outputs_and_gradients_in_their_bound_views() {
        if !crate::ffi::HAS_SHIM {
            panic!("built without the C++ shim (scripts/setup.sh installs the CUDA headers)");
        }
        tch::manual_seed(1);
        let rows = [4i64, 2, 2];
        for back_to_back in [true, false] {
            let (weight_flat, bias_flat) = (
                Tensor::randn([8 * 5 + 3], (Kind::Float, Device::Cpu)),
                Tensor::randn([8 + 1], (Kind::Float, Device::Cpu)),
            );
            let (mut wo, mut bo) = (1i64, 1i64);
            let layers: Vec<super::Linear> = rows
                .iter()
                .map(|&r| {
                    let (w, b) = if back_to_back {
                        let w = weight_flat.narrow(0, wo, r * 5).view([r, 5]);
                        let b = bias_flat.narrow(0, bo, r);
                        (wo, bo) = (wo + r * 5, bo + r);
                        (w, b)
                    } else {
                        (
                            Tensor::randn([r, 5], (Kind::Float, Device::Cpu)),
                            Tensor::randn([r], (Kind::Float, Device::Cpu)),
                        )
                    };
                    // A trained parameter whose data is `t` (a view of the flat buffer, as AdamW places it).
                    let param = |t: &Tensor| {
                        let mut p = Tensor::zeros(t.size(), (Kind::Float, Device::Cpu)).set_requires_grad(true);
                        p.set_data(t);
                        p
                    };
                    super::Linear { weight: param(&w), bias: Some(param(&b)), adapter: None }
                })
                .collect();
            let reference: Vec<(Tensor, Tensor)> =
                layers.iter().map(|l| (copy_of(&l.weight), copy_of(l.bias.as_ref().unwrap()))).collect();
            let x = leaf(&[2, 3, 5]);
            let xr = copy_of(&x);
            let grad_flat = Tensor::zeros([8 * 5 + 3], (Kind::Float, Device::Cpu));
            for pass in 0..2 {
                let upstream = Tensor::randn([2, 3, 8], (Kind::Float, Device::Cpu));
                let parts: Vec<&super::Linear> = layers.iter().collect();
                let y = super::linear_rows(&x, &parts).unwrap().expect("applies to trained weights");
                let outs: Vec<Tensor> = reference.iter().map(|(w, b)| xr.linear(w, Some(b))).collect();
                let yr = Tensor::cat(&outs, -1);
                assert!(max_diff(&y, &yr) < 1e-5, "back to back {back_to_back}: output");
                (&y * &upstream).sum(Kind::Float).backward();
                (&yr * &upstream).sum(Kind::Float).backward();
                if pass == 0 && back_to_back {
                    // Bind the weights' gradients to views of a flat buffer, back to back, as AdamW does.
                    let mut at = 1;
                    for l in &layers {
                        let n = l.weight.numel() as i64;
                        let view = grad_flat.narrow(0, at, n).view(l.weight.size().as_slice());
                        view.detach().copy_(&l.weight.grad());
                        l.weight.grad().set_data(&view);
                        at += n;
                    }
                }
            }
            let context = format!("back to back {back_to_back}");
            assert!(max_diff(&x.grad(), &xr.grad()) < 1e-5, "{context}: input gradient");
            for (l, (w, b)) in layers.iter().zip(&reference) {
                assert!(max_diff(&l.weight.grad(), &w.grad()) < 1e-5, "{context}: weight gradient");
                assert!(max_diff(&l.bias.as_ref().unwrap().grad(), &b.grad()) < 1e-5, "{context}: bias gradient");
            }
            if back_to_back {
                assert_eq!(
                    layers[0].weight.grad().data_ptr(),
                    grad_flat.narrow(0, 1, 1).data_ptr(),
                    "the view was replaced"
                );
                assert_eq!(grad_flat.narrow(0, 0, 1).abs().sum(Kind::Float).double_value(&[]), 0.0, "{context}");
                let last = grad_flat.narrow(0, 1 + 8 * 5, 2);
                assert_eq!(last.abs().sum(Kind::Float).double_value(&[]), 0.0, "{context}: written past the stack");
            }
        }
    }

    /// The weight's gradient added within the backward product: the input's, weight's and bias's gradients are
    /// libtorch linear's over two accumulating backward passes, and the second pass adds into the trainer's view of
    /// its flat buffer in place (what crate::train::optim binds), also when the input wants no gradient.
    #[test]
    fn weight_gradients_added_within_the_product_equal_autograds_and_land_in_the_bound_view() {
        if !crate::ffi::HAS_SHIM {
            panic!("built without the C++ shim (scripts/setup.sh installs the CUDA headers)");
        }
        tch::manual_seed(0);
        for (with_bias, input_grad) in [(true, true), (false, true), (true, false)] {
            let (x, w, b) = (leaf(&[2, 3, 5]), leaf(&[4, 5]), leaf(&[4]));
            let x = if input_grad { x } else { x.detach() };
            let (xr, wr, br) = (if input_grad { copy_of(&x) } else { x.detach() }, copy_of(&w), copy_of(&b));
            let flat = Tensor::zeros([30], (Kind::Float, Device::Cpu));
            for pass in 0..2 {
                let upstream = Tensor::randn([2, 3, 4], (Kind::Float, Device::Cpu));
                let bias = with_bias.then_some(&b);
                let y = crate::ffi::linear_grad_into(&x, &w, bias).unwrap();
                let yr = xr.linear(&wr, with_bias.then_some(&br));
                assert_eq!(max_diff(&y, &yr), 0.0);
                (&y * &upstream).sum(Kind::Float).backward();
                (&yr * &upstream).sum(Kind::Float).backward();
                if pass == 0 {
                    // Bind the gradient to a view of a flat buffer, as AdamW's gather_grads does.
                    let view = flat.narrow(0, 10, 20).view([4, 5]);
                    view.detach().copy_(&w.grad());
                    w.grad().set_data(&view);
                }
            }
            let context = format!("bias {with_bias}, input gradient {input_grad}");
            assert_eq!(w.grad().data_ptr(), flat.narrow(0, 10, 20).data_ptr(), "{context}: the view was replaced");
            assert!(max_diff(&flat.narrow(0, 10, 20).view([4, 5]), &wr.grad()) < 1e-5, "{context}: weight gradient");
            assert_eq!(flat.narrow(0, 0, 10).abs().sum(Kind::Float).double_value(&[]), 0.0, "{context}");
            if input_grad {
                assert!(max_diff(&x.grad(), &xr.grad()) < 1e-5, "{context}: input gradient");
            }
            if with_bias {
                assert!(max_diff(&b.grad(), &br.grad()) < 1e-5, "{context}: bias gradient");
            } else {
                assert!(!b.grad().defined(), "{context}");
            }
        }
    }
}
