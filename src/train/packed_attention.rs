//! Decoder layers on a packed pass ([`super::packed`]): block-diagonal attention, every other part of a layer on
//! the packed tokens as they are.
//!
//! Everything but attention works on tokens independently, so the projections, MLPs, norms and the LM head run on
//! the N packed tokens with no padding at all. Attention gathers the packed q/k/v into a [segments, longest, ..]
//! layout (one index_select), runs causal scaled-dot-product attention on it, and gathers the real rows back:
//! padding slots sit after a segment's real tokens, so causality already keeps every real query off them, and
//! their outputs are dropped. Attention is a small share of a pass's FLOPs at SFT lengths, so padding only there
//! costs little, and libtorch's fused kernels run unchanged on CPU and CUDA. On CUDA in bf16/f16, attention instead
//! runs libtorch's variable-length flash attention on the packed tokens directly (cumulative segment lengths, through
//! the C++ shim since tch does not expose it): no gathers, and a dozen fewer host-launched ops per layer, which is
//! what bounds a pass of a few thousand tokens (`STASC_VARLEN_ATTENTION=0` keeps the padded layout, for comparison).
//! This module drives the decoder layers itself (their weights are public) instead of adding an attention mode to
//! the model code, which the generation engine owns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tch::{Device, Kind, Tensor};

use super::packed::Segments;
use crate::model::layers::{linear_rows, Attention, DecoderLayer, QkvProj, RopeAt, RotaryEmbedding};
use crate::switch::Switch;

/// One decoder layer on a packed [1, N, hidden] input: the layer's own computation with block-diagonal attention.
pub fn layer_forward(
    layer: &DecoderLayer,
    x: &Tensor,
    rope: &RotaryEmbedding,
    rope_at: &RopeAt,
    segments: &Segments,
) -> Result<Tensor, tch::TchError> {
    let normed = layer.input_layernorm.forward(x)?;
    let attn = attention(&layer.self_attn, &normed, rope, rope_at, segments)?;
    let x = x.f_add(&attn)?;
    let mlp = layer.mlp.forward(&layer.post_attention_layernorm.forward(&x)?)?;
    x.f_add(&mlp)
}

/// GQA self-attention of packed [1, N, hidden] tokens, each attending causally within its own segment.
fn attention(
    a: &Attention,
    x: &Tensor,
    rope: &RotaryEmbedding,
    rope_at: &RopeAt,
    segments: &Segments,
) -> Result<Tensor, tch::TchError> {
    let n = x.size()[1];
    let (h, kvh, d) = (a.num_heads, a.num_kv_heads, a.head_dim);
    let stacked = match &a.qkv {
        QkvProj::Separate { q, k, v } => linear_rows(x, &[q, k, v])?,
        QkvProj::Fused(_) => None,
    };
    let (q, k, v) = match (&a.qkv, stacked) {
        // One product for the three projections; the queries and keys rotated by one kernel each way on CUDA.
        (_, Some(all)) => {
            let all = all.f_view([1, n, h + 2 * kvh, d])?;
            let split = |t: &Tensor| t.f_split_with_sizes([h, kvh, kvh].as_slice(), 2);
            match rope.apply_leading(&all, h + kvh, rope_at)? {
                Some(rotated) => {
                    let [q, k, v]: [Tensor; 3] = split(&rotated)?.try_into().expect("three sizes, three parts");
                    (q, k, v)
                }
                None => {
                    let [q, k, v]: [Tensor; 3] = split(&all)?.try_into().expect("three sizes, three parts");
                    (rope.apply(&q, rope_at)?, rope.apply(&k, rope_at)?, v)
                }
            }
        }
        (QkvProj::Separate { q, k, v }, None) => (
            rope.apply(&q.forward(x)?.f_view([1, n, h, d])?, rope_at)?,
            rope.apply(&k.forward(x)?.f_view([1, n, kvh, d])?, rope_at)?,
            v.forward(x)?.f_view([1, n, kvh, d])?,
        ),
        (QkvProj::Fused(qkv), None) => {
            let all = qkv.forward(x)?.f_view([1, n, h + 2 * kvh, d])?;
            let qk = rope.apply(&all.f_narrow(2, 0, h + kvh)?, rope_at)?;
            (qk.f_narrow(2, 0, h)?, qk.f_narrow(2, h, kvh)?, all.f_narrow(2, h + kvh, kvh)?)
        }
    };
    let scale = 1.0 / (d as f64).sqrt();
    if let Some(out) = varlen_attention(&q, &k, &v, segments, scale)? {
        return a.o_proj.forward(&out.f_reshape([1, n, h * d])?);
    }
    let (s, l) = (segments.count, segments.len);
    let padded = |t: &Tensor, heads: i64| -> Result<Tensor, tch::TchError> {
        t.f_reshape([n, heads, d])?.f_index_select(0, &segments.to_padded)?.f_view([s, l, heads, d])?.f_transpose(1, 2)
    };
    let out = Tensor::f_scaled_dot_product_attention::<Tensor>(
        &padded(&q, h)?,
        &padded(&k, kvh)?,
        &padded(&v, kvh)?,
        None,
        0.0,
        true,
        scale,
        h != kvh,
    )?;
    let out = out.f_transpose(1, 2)?.f_reshape([s * l, h * d])?.f_index_select(0, &segments.from_padded)?;
    a.o_proj.forward(&out.f_view([1, n, h * d])?)
}

/// Whether packed passes may use variable-length flash attention: `STASC_VARLEN_ATTENTION` (default on) unless
/// [`set_varlen_attention`] said otherwise.
static VARLEN: Switch = Switch::new("STASC_VARLEN_ATTENTION", true);

/// Attention calls that variable-length flash attention ran, in this process (tests check it ran).
static VARLEN_CALLS: AtomicU64 = AtomicU64::new(0);

/// How many packed attention calls ran variable-length flash attention so far in this process.
pub fn varlen_attention_calls() -> u64 {
    VARLEN_CALLS.load(Ordering::Relaxed)
}

/// Turns variable-length flash attention on or off for the whole process (parity checks compare both layouts).
pub fn set_varlen_attention(on: bool) {
    VARLEN.set(on);
}

/// Set once variable-length flash attention failed (said once); packed passes take the padded layout from then on.
static VARLEN_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether packed passes of a model on `device` in `kind` with heads of `head_dim` run variable-length flash
/// attention (unless it fails): a CUDA device with the shim, bf16 or f16, a head size flash attention has, and
/// the switch on.
pub fn varlen_attention_applies(device: Device, kind: Kind, head_dim: i64) -> bool {
    crate::ffi::HAS_SHIM
        && device.is_cuda()
        && matches!(kind, Kind::BFloat16 | Kind::Half)
        && head_dim % 8 == 0
        && head_dim <= 256
        && VARLEN.get()
}

/// Attention of packed q [1, N, h, d] over k, v [1, N, kvh, d] by variable-length flash attention, as [N, h, d];
/// `None` where it does not apply (the CPU, f32, a head size flash attention lacks, no shim, switched off) or
/// failed (said once), so the caller takes the padded layout.
fn varlen_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &Segments,
    scale: f64,
) -> Result<Option<Tensor>, tch::TchError> {
    let d = q.size().last().copied().unwrap_or(0);
    if !varlen_attention_applies(q.device(), q.kind(), d) || VARLEN_FAILED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    // Flash attention wants the head dimension contiguous and takes any token and head strides (the q/k/v of a
    // fused projection are views of its output).
    let packed = |t: &Tensor| -> Result<Tensor, tch::TchError> {
        let s = t.size();
        let t = t.f_reshape([s[1], s[2], s[3]])?;
        if t.stride().last() == Some(&1) {
            Ok(t)
        } else {
            t.f_contiguous()
        }
    };
    let (q, k, v) = (packed(q)?, packed(k)?, packed(v)?);
    match crate::ffi::flash_attention_varlen(&q, &k, &v, &segments.cu_seqlens, segments.longest, scale) {
        Ok(out) => {
            VARLEN_CALLS.fetch_add(1, Ordering::Relaxed);
            Ok(Some(out))
        }
        Err(e) => {
            if !VARLEN_FAILED.swap(true, Ordering::Relaxed) {
                eprintln!("note: variable-length flash attention failed ({e}); packed passes use the padded layout");
            }
            Ok(None)
        }
    }
}
