//! Prefill that continues cached sequences: the decoder layer run over tokens at positions `start..start + T` of
//! cache rows whose positions `0..start` already hold K/V (a shared prompt prefix copied in). Each layer writes its
//! new K/V after the cached ones and attends causally over both. It uses the layers' public parts (norms,
//! projections, MLP) rather than adding a mode to `layers.rs`, whose attention is tuned for decode; the q/k/v
//! projection below mirrors `Attention::forward_kernels`.

use tch::{Kind, Tensor};

use super::layers::{DecoderLayer, FusedProjections, LayerCache, QkvProj, RopeAt, RotaryEmbedding};

/// [groups x T, start + T] bool: query i of each of `groups` query heads sharing a K/V head (at position start + i)
/// sees cache positions 0..=start + i.
pub(crate) fn extend_mask(start: i64, t: i64, groups: i64, device: tch::Device) -> Result<Tensor, tch::TchError> {
    let keys = Tensor::f_arange(start + t, (Kind::Int64, device))?.f_view([1, start + t])?;
    let queries = Tensor::f_arange_start(start, start + t, (Kind::Int64, device))?.f_view([t, 1])?;
    keys.f_le_tensor(&queries)?.f_repeat([groups, 1])
}

/// Runs one decoder layer on `x` ([B, T, hidden]) continuing cache rows `rows` ([B] int64) from `start`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_forward(
    layer: &DecoderLayer,
    x: &Tensor,
    rope: &RotaryEmbedding,
    rope_at: &RopeAt,
    cache: LayerCache<'_>,
    rows: &Tensor,
    start: i64,
    mask: &Tensor,
    fused: Option<&FusedProjections>,
) -> Result<Tensor, tch::TchError> {
    let attn = &layer.self_attn;
    let normed = layer.input_layernorm.forward(x)?;
    let (b, t) = (x.size()[0], x.size()[1]);
    let (h, kvh, d) = (attn.num_heads, attn.num_kv_heads, attn.head_dim);
    let (q, k, v) = match (&attn.qkv, fused.and_then(|f| f.qkv.as_ref())) {
        (QkvProj::Separate { q, k, v }, None) => (
            rope.apply(&q.forward(&normed)?.f_view([b, t, h, d])?, rope_at)?,
            rope.apply(&k.forward(&normed)?.f_view([b, t, kvh, d])?, rope_at)?,
            v.forward(&normed)?.f_view([b, t, kvh, d])?,
        ),
        (_, Some(qkv)) | (QkvProj::Fused(qkv), None) => {
            let all = qkv.forward(&normed)?.f_view([b, t, h + 2 * kvh, d])?;
            let qk = rope.apply(&all.f_narrow(2, 0, h + kvh)?, rope_at)?;
            (qk.f_narrow(2, 0, h)?, qk.f_narrow(2, h, kvh)?, all.f_narrow(2, h + kvh, kvh)?)
        }
    };
    let (q, k, v) = (q.f_transpose(1, 2)?, k.f_transpose(1, 2)?, v.f_transpose(1, 2)?);
    let _ = cache.k.f_narrow(2, start, t)?.f_index_copy_(0, rows, &k)?;
    let _ = cache.v.f_narrow(2, start, t)?.f_index_copy_(0, rows, &v)?;
    let keys = cache.k.f_narrow(2, 0, start + t)?.f_index_select(0, rows)?;
    let values = cache.v.f_narrow(2, 0, start + t)?.f_index_select(0, rows)?;
    let scale = 1.0 / (d as f64).sqrt();
    // The G query heads of one K/V head act as G x T query rows against that head (as in decode): GQA without
    // repeating K/V, and a masked kernel that need not support GQA itself.
    let grouped = q.f_reshape([b, kvh, (h / kvh) * t, d])?;
    let out = Tensor::f_scaled_dot_product_attention(&grouped, &keys, &values, Some(mask), 0.0, false, scale, false)?;
    let out = out.f_reshape([b, h, t, d])?.f_transpose(1, 2)?.f_reshape([b, t, h * d])?;
    let out = attn.o_proj.forward(&out)?;
    let x = x.f_add(&out)?;
    let mlp =
        layer.mlp.forward_with(&layer.post_attention_layernorm.forward(&x)?, fused.and_then(|f| f.gate_up.as_ref()))?;
    x.f_add(&mlp)
}
