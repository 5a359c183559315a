//! Prefill that continues cached sequences: tokens at positions `start..start + T` of cache rows whose positions
//! `0..start` already hold K/V (a shared prompt prefix copied in). The decoder layers run it as
//! `AttnMode::Extend` (the fused norm and SiLU kernels of the other inference passes included); this module is
//! its attention: each layer writes its new K/V after the cached ones and attends causally over both.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Kind, Tensor};

use crate::switch::Switch;

use super::layers::LayerCache;

/// `STASC_EXTEND_FLASH=0` keeps the masked attention on CUDA too (to compare the paths).
static FLASH: Switch = Switch::new("STASC_EXTEND_FLASH", true);

/// Set when flash attention failed here (then the masked attention runs).
static FLASH_FAILED: AtomicBool = AtomicBool::new(false);

/// Switches flash attention for prefill after cached positions (CUDA, bf16/f16) on or off for the whole process
/// (off: scaled-dot-product attention with an explicit mask).
pub fn set_extend_flash(on: bool) {
    FLASH.set(on);
}

/// Attention of `q` [B, T, h, d] over `keys`, `values` [B, kvh, start + T, d] by flash attention, whose causal
/// mask, aligned to the bottom right, is the extend mask (query i at position start + i sees 0..=start + i), as
/// [B, T, h, d]; `None` where it does not apply (the CPU, f32, no shim, a head size it lacks, switched off) or
/// failed (said once).
///
/// Why: the masked path hands scaled-dot-product attention a [G x T, start + T] mask, which it expands to every
/// row and K/V head in memory: ~585 MB a layer for 136 prompts of 240 tokens after a 560-token prefix, and
/// elementwise kernels writing it took 0.5 ms of every decode step's share in a correction call's trace (H200).
fn flash(q: &Tensor, keys: &Tensor, values: &Tensor, scale: f64) -> Result<Option<Tensor>, tch::TchError> {
    let d = q.size()[3];
    let applies = crate::ffi::HAS_SHIM
        && q.device().is_cuda()
        && matches!(q.kind(), Kind::BFloat16 | Kind::Half)
        && d % 8 == 0
        && d <= 256
        && FLASH.get()
        && !FLASH_FAILED.load(Ordering::Relaxed);
    if !applies {
        return Ok(None);
    }
    // Flash attention takes [B, sequence, heads, d] with any strides but the last.
    let (k, v) = (keys.f_transpose(1, 2)?, values.f_transpose(1, 2)?);
    match crate::ffi::flash_attention_causal(q, &k, &v, scale) {
        Ok(out) => Ok(Some(out)),
        Err(why) => {
            if !FLASH_FAILED.swap(true, Ordering::Relaxed) {
                eprintln!("note: flash attention for prefill after a cached prefix unavailable ({why}); using a mask");
            }
            Ok(None)
        }
    }
}

/// [groups x T, start + T] bool: query i of each of `groups` query heads sharing a K/V head (at position start + i)
/// sees cache positions 0..=start + i.
fn extend_mask(start: i64, t: i64, groups: i64, device: tch::Device) -> Result<Tensor, tch::TchError> {
    let keys = Tensor::f_arange(start + t, (Kind::Int64, device))?.f_view([1, start + t])?;
    let queries = Tensor::f_arange_start(start, start + t, (Kind::Int64, device))?.f_view([t, 1])?;
    keys.f_le_tensor(&queries)?.f_repeat([groups, 1])
}

/// The attention of an Extend pass: `q` [B, T, h, d], `k`, `v` [B, T, kvh, d] (rotated) at positions
/// start..start + T of cache rows `rows`, whose K/V are written there first; causal attention over the rows'
/// positions 0..start + T. The masked path makes `mask` the first time a pass's layers need it. Returns
/// [B, T, h * d].
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: LayerCache<'_>,
    rows: &Tensor,
    start: i64,
    mask: &std::cell::OnceCell<Tensor>,
    scale: f64,
) -> Result<Tensor, tch::TchError> {
    let (b, t, h, d) = (q.size()[0], q.size()[1], q.size()[2], q.size()[3]);
    let kvh = k.size()[2];
    let _ = cache.k.f_narrow(2, start, t)?.f_index_copy_(0, rows, &k.f_transpose(1, 2)?)?;
    let _ = cache.v.f_narrow(2, start, t)?.f_index_copy_(0, rows, &v.f_transpose(1, 2)?)?;
    let keys = cache.k.f_narrow(2, 0, start + t)?.f_index_select(0, rows)?;
    let values = cache.v.f_narrow(2, 0, start + t)?.f_index_select(0, rows)?;
    if let Some(out) = flash(q, &keys, &values, scale)? {
        return out.f_reshape([b, t, h * d]);
    }
    let mask = match mask.get() {
        Some(mask) => mask,
        None => {
            let made = extend_mask(start, t, h / kvh, q.device())?;
            mask.get_or_init(|| made)
        }
    };
    // The G query heads of one K/V head act as G x T query rows against that head (as in decode): GQA without
    // repeating K/V, and a masked kernel that need not support GQA itself.
    let grouped = q.f_transpose(1, 2)?.f_reshape([b, kvh, (h / kvh) * t, d])?;
    let out = Tensor::f_scaled_dot_product_attention(&grouped, &keys, &values, Some(mask), 0.0, false, scale, false)?;
    out.f_reshape([b, h, t, d])?.f_transpose(1, 2)?.f_reshape([b, t, h * d])
}
