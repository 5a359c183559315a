//! Rotary position embedding in HF's rotate-half layout: tables of cos and (sign-folded) sin for every position,
//! built from f32 inverse frequencies exactly as transformers computes them (default, linear and llama3 rules,
//! partial rotation), gathered once per forward pass and applied to queries and keys.

use tch::{Device, Kind, Tensor};

use super::config::{ModelConfig, RopeScaling};

/// Precomputed rotary tables for positions `0..max_len`, in the model dtype on the model device.
#[derive(Debug)]
pub struct RotaryEmbedding {
    cos: Tensor,
    /// sin with its first half negated, so that `rotate_half(x) * sin == roll(x, d/2) * sin_signed`.
    sin_signed: Tensor,
    rotary_dim: i64,
    head_dim: i64,
}

/// The rotary factors gathered for one batch of positions, shared by every layer of a forward pass.
#[derive(Debug)]
pub struct RopeAt {
    cos: Tensor,
    sin_signed: Tensor,
}

impl RotaryEmbedding {
    /// Builds the tables the way HF does (f32 inverse frequencies and angles, then cast to `kind`).
    pub fn new(cfg: &ModelConfig, max_len: i64, kind: Kind, device: Device) -> Result<Self, tch::TchError> {
        let rotary_dim = cfg.rotary_dim();
        let inv_freq = inverse_frequencies(cfg, rotary_dim)?;
        let positions = Tensor::f_arange(max_len, (Kind::Float, Device::Cpu))?;
        let freqs = positions.f_unsqueeze(1)?.f_mul(&inv_freq.f_unsqueeze(0)?)?;
        let emb = Tensor::f_cat(&[&freqs, &freqs], -1)?;
        let sin = freqs.f_sin()?;
        let sin_signed = Tensor::f_cat(&[&sin.f_neg()?, &sin], -1)?;
        Ok(RotaryEmbedding {
            cos: emb.f_cos()?.f_to_kind(kind)?.f_to_device(device)?,
            sin_signed: sin_signed.f_to_kind(kind)?.f_to_device(device)?,
            rotary_dim,
            head_dim: cfg.head_dim,
        })
    }

    /// Number of positions the tables cover.
    pub fn max_len(&self) -> i64 {
        self.cos.size()[0]
    }

    /// The full tables (cos, sign-folded sin), [max_len, head_dim], when the whole head rotates (what the fused
    /// decode kernel takes).
    pub fn tables(&self) -> Option<(&Tensor, &Tensor)> {
        (self.rotary_dim == self.head_dim).then_some((&self.cos, &self.sin_signed))
    }

    /// Gathers the factors for `positions` ([B, T] int64); the result broadcasts over [B, T, heads, rotary_dim].
    pub fn at(&self, positions: &Tensor) -> Result<RopeAt, tch::TchError> {
        let mut shape = positions.size();
        shape.extend([1, self.rotary_dim]);
        let flat = positions.f_reshape([-1])?;
        Ok(RopeAt {
            cos: self.cos.f_index_select(0, &flat)?.f_view(shape.as_slice())?,
            sin_signed: self.sin_signed.f_index_select(0, &flat)?.f_view(shape.as_slice())?,
        })
    }

    /// Rotates `x` ([B, T, heads, head_dim]). In training passes on CUDA (x wants a gradient, the whole head
    /// rotates) through crate::kernels' rotary op: one kernel each way instead of libtorch's three and five.
    pub fn apply(&self, x: &Tensor, at: &RopeAt) -> Result<Tensor, tch::TchError> {
        let heads = x.size().iter().rev().nth(1).copied().unwrap_or(0);
        if let Some(rotated) = self.apply_leading(x, heads, at)? {
            return Ok(rotated);
        }
        let rotate = |x: &Tensor| -> Result<Tensor, tch::TchError> {
            let rolled = x.f_roll([self.rotary_dim / 2].as_slice(), [-1].as_slice())?;
            x.f_mul(&at.cos)?.f_addcmul(&rolled, &at.sin_signed)
        };
        if self.rotary_dim == self.head_dim {
            rotate(x)
        } else {
            let rotated = rotate(&x.f_narrow(-1, 0, self.rotary_dim)?)?;
            let pass = x.f_narrow(-1, self.rotary_dim, self.head_dim - self.rotary_dim)?;
            Tensor::f_cat(&[&rotated, &pass], -1)
        }
    }

    /// In a training pass on CUDA, `x` [.., heads, d] with its first `rot_heads` heads rotated and the others
    /// copied, as one autograd op with a kernel each way (a fused q/k/v output's queries and keys at once); `None`
    /// where that op does not apply (no gradient, the CPU, partial rotary, shapes), and the caller rotates with
    /// [`RotaryEmbedding::apply`].
    pub fn apply_leading(&self, x: &Tensor, rot_heads: i64, at: &RopeAt) -> Result<Option<Tensor>, tch::TchError> {
        if !(x.requires_grad() && self.rotary_dim == self.head_dim && x.device().is_cuda()) {
            return Ok(None);
        }
        let d = self.head_dim;
        let (cos, sin) = (at.cos.f_view([-1, d])?, at.sin_signed.f_view([-1, d])?);
        crate::kernels::rotary_autograd(x, &cos, &sin, rot_heads)
    }
}

/// HF's inverse frequencies for the configured RoPE rule, computed in f32 exactly as transformers does.
fn inverse_frequencies(cfg: &ModelConfig, dim: i64) -> Result<Tensor, tch::TchError> {
    let exponents = Tensor::f_arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(dim as f64)?;
    let base = Tensor::f_from_slice(&[cfg.rope.rope_theta as f32])?;
    let inv_freq = base.f_pow(&exponents)?.f_reciprocal()?;
    match cfg.rope.scaling {
        RopeScaling::Default => Ok(inv_freq),
        RopeScaling::Linear { factor } => inv_freq.f_div_scalar(factor),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            let old_context = original_max_position_embeddings as f64;
            let low_freq_wavelen = old_context / low_freq_factor;
            let high_freq_wavelen = old_context / high_freq_factor;
            let wavelen = inv_freq.f_reciprocal()?.f_mul_scalar(2.0 * std::f64::consts::PI)?;
            let scaled = inv_freq.f_div_scalar(factor)?;
            let llama = scaled.f_where_self(&wavelen.f_gt(low_freq_wavelen)?, &inv_freq)?;
            let smooth = wavelen
                .f_reciprocal()?
                .f_mul_scalar(old_context)?
                .f_sub_scalar(low_freq_factor)?
                .f_div_scalar(high_freq_factor - low_freq_factor)?;
            let smoothed = smooth
                .f_neg()?
                .f_add_scalar(1.0)?
                .f_mul(&llama.f_div_scalar(factor)?)?
                .f_add(&smooth.f_mul(&llama)?)?;
            let medium = wavelen
                .f_lt(high_freq_wavelen)?
                .f_logical_not()?
                .f_logical_and(&wavelen.f_gt(low_freq_wavelen)?.f_logical_not()?)?;
            smoothed.f_where_self(&medium, &llama)
        }
    }
}
