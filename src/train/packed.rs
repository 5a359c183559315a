//! Packed passes: several examples concatenated into one sequence of N tokens, no padding between them, each
//! example its own segment. Positions restart at 0 in every segment, and attention is block-diagonal: no token
//! attends across a segment boundary.
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

use crate::switch::Switch;

use super::batching::{upload, MicroBatch};
use super::error::TrainError;
use super::plan::PlannedExample;
use super::tokenize::{TokenizedExample, IGNORE_INDEX};
use crate::model::layers::{Attention, DecoderLayer, QkvProj, RopeAt, RotaryEmbedding};

/// Where each packed token sits in the padded attention layout.
#[derive(Debug)]
pub struct Segments {
    /// [S * L] the packed token each padded slot reads (padding slots repeat their segment's last token).
    pub to_padded: Tensor,
    /// [N] the padded slot of each packed token.
    pub from_padded: Tensor,
    /// S: segments.
    pub count: i64,
    /// L: the padded segment length.
    pub len: i64,
    /// [S + 1] int32: where each segment starts in the packed tokens, then N (variable-length flash attention).
    pub cu_seqlens: Tensor,
    /// The longest segment's length.
    pub longest: i64,
}

impl Segments {
    /// The layout of segments of `lengths` (all > 0), L rounded up to a multiple of `pad_multiple`.
    pub fn new(lengths: &[usize], pad_multiple: usize, device: Device) -> Result<Self, TrainError> {
        let longest = lengths.iter().copied().max().unwrap_or(1);
        let len = longest.next_multiple_of(pad_multiple.max(1));
        let mut to_padded = Vec::with_capacity(lengths.len() * len);
        let mut from_padded = Vec::with_capacity(lengths.iter().sum());
        let mut start = 0usize;
        let mut cu_seqlens = vec![0i32];
        for (s, &n) in lengths.iter().enumerate() {
            for slot in 0..len {
                to_padded.push((start + slot.min(n - 1)) as i64);
            }
            from_padded.extend((0..n).map(|t| (s * len + t) as i64));
            start += n;
            cu_seqlens.push(start as i32);
        }
        let to_dev = |v: &[i64]| Tensor::f_from_slice(v).and_then(|x| upload(x, device));
        Ok(Segments {
            to_padded: to_dev(&to_padded).map_err(TrainError::torch("building the segment layout"))?,
            from_padded: to_dev(&from_padded).map_err(TrainError::torch("building the segment layout"))?,
            count: lengths.len() as i64,
            len: len as i64,
            cu_seqlens: Tensor::f_from_slice(&cu_seqlens)
                .and_then(|x| upload(x, device))
                .map_err(TrainError::torch("building the segment layout"))?,
            longest: longest as i64,
        })
    }
}

/// Packs the examples of one pass into a [1, N] micro-batch whose target weights carry each example's
/// `1 / denominator`. On CUDA (`pad_multiple` > 1) N is rounded up with one extra segment of `pad_id` tokens, and the
/// attention layout's length too, so passes reuse a few shapes (see [`super::batching`]).
pub fn packed_batch(
    pass: &[PlannedExample],
    examples: &[TokenizedExample],
    pad_id: i64,
    pad_multiple: usize,
    device: Device,
) -> Result<MicroBatch, TrainError> {
    let mut host = PackedHost::new(pass, examples);
    let tokens = host.ids.len();
    let padded = tokens.max(1).next_multiple_of(pad_multiple.max(1));
    if padded > tokens {
        host.ids.resize(padded, pad_id);
        host.positions.extend(0..(padded - tokens) as i64);
        host.lengths.push(padded - tokens);
    }
    let mut batch = host.upload(device, pad_multiple)?;
    batch.tokens = tokens;
    Ok(batch)
}

/// Fixed sizes a packed pass is padded to, so that every pass of one shape can replay one CUDA graph
/// ([`super::graphed`]): tokens (the padding is a segment of its own), target slots (the extra ones weigh 0) and
/// segments (the extra ones are empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PassShape {
    /// Tokens of the pass.
    pub tokens: usize,
    /// Target slots.
    pub targets: usize,
    /// Segments, the padding segment and empty ones included.
    pub segments: usize,
}

impl PassShape {
    /// The bucket of a pass of `examples` whose tokens and targets add up to `tokens` and `targets`: tokens rounded
    /// up to a multiple of 128, targets to 256, segments (one more for the padding) to 16. At most 127 padding
    /// tokens a pass (a pass of ~1,600 tokens grows by 4% on average; multiples of 512 made it 16%), and a few dozen
    /// buckets at the reference's settings, each recorded once per fine-tuning run.
    pub fn bucket(tokens: usize, targets: usize, examples: usize) -> PassShape {
        PassShape {
            tokens: (tokens + 1).next_multiple_of(128),
            targets: targets.max(1).next_multiple_of(256),
            segments: (examples + 1).next_multiple_of(16),
        }
    }

    /// The bucket of `pass`.
    pub fn of(pass: &[PlannedExample], examples: &[TokenizedExample]) -> PassShape {
        let used = || pass.iter().map(|p| &examples[p.example]).filter(|e| !e.is_empty());
        let tokens = used().map(TokenizedExample::len).sum();
        let targets = used().map(TokenizedExample::num_targets).sum();
        PassShape::bucket(tokens, targets, used().count())
    }
}

/// [`packed_batch`] padded to exactly `shape` (which must hold the pass, as [`PassShape::of`] gives): the padding
/// tokens are one segment at positions 0, the extra target slots point at token 0 with weight 0 (no loss, no
/// gradient; `num_targets` counts every slot), and `cu_seqlens` ends with empty segments; the longest segment is taken to be `shape.tokens`, an
/// upper bound that holds for every pass of the shape.
pub fn packed_batch_shaped(
    pass: &[PlannedExample],
    examples: &[TokenizedExample],
    pad_id: i64,
    shape: PassShape,
    device: Device,
) -> Result<MicroBatch, TrainError> {
    let mut host = PackedHost::new(pass, examples);
    let tokens = host.ids.len();
    if tokens >= shape.tokens || host.targets.len() > shape.targets || host.lengths.len() >= shape.segments {
        return Err(TrainError::Invalid(format!(
            "a pass of {tokens} tokens, {} targets and {} examples does not fit {shape:?}",
            host.targets.len(),
            host.lengths.len()
        )));
    }
    host.ids.resize(shape.tokens, pad_id);
    host.positions.resize(shape.tokens, 0);
    host.lengths.push(shape.tokens - tokens);
    let num_targets = host.targets.len();
    host.target_rows.resize(shape.targets, 0);
    host.targets.resize(shape.targets, 0);
    host.weights.resize(shape.targets, 0.0);
    let mut batch = host.upload(device, 1)?;
    let segments = batch.segments.as_mut().expect("packed batches have segments");
    let mut cu: Vec<i32> = std::iter::once(0)
        .chain(host.lengths.iter().scan(0, |end, &n| {
            *end += n as i32;
            Some(*end)
        }))
        .collect();
    cu.resize(shape.segments + 1, shape.tokens as i32);
    segments.cu_seqlens =
        Tensor::f_from_slice(&cu).and_then(|x| upload(x, device)).map_err(TrainError::torch("building segments"))?;
    segments.longest = shape.tokens as i64;
    // Every slot is a target to the LM head (the extra ones weigh 0): a recorded pass's head then covers the
    // targets of any pass of its shape.
    batch.num_targets = if num_targets == 0 { 0 } else { shape.targets };
    batch.tokens = tokens;
    Ok(batch)
}

/// A packed pass's host-side vectors, before padding.
struct PackedHost {
    ids: Vec<i64>,
    positions: Vec<i64>,
    lengths: Vec<usize>,
    target_rows: Vec<i64>,
    targets: Vec<i64>,
    weights: Vec<f32>,
}

impl PackedHost {
    fn new(pass: &[PlannedExample], examples: &[TokenizedExample]) -> PackedHost {
        let mut h = PackedHost {
            ids: Vec::new(),
            positions: Vec::new(),
            lengths: Vec::new(),
            target_rows: Vec::new(),
            targets: Vec::new(),
            weights: Vec::new(),
        };
        for item in pass {
            let e = &examples[item.example];
            if e.is_empty() {
                continue;
            }
            let start = h.ids.len();
            for (pos, &label) in e.labels.iter().enumerate().skip(1) {
                if label != IGNORE_INDEX {
                    h.target_rows.push((start + pos - 1) as i64);
                    h.targets.push(label);
                    h.weights.push((1.0 / item.denominator) as f32);
                }
            }
            h.ids.extend_from_slice(&e.input_ids);
            h.positions.extend(0..e.len() as i64);
            h.lengths.push(e.len());
        }
        h
    }

    /// The micro-batch on `device`, its attention layout rounded to `pad_multiple`; every target counts.
    fn upload(&self, device: Device, pad_multiple: usize) -> Result<MicroBatch, TrainError> {
        let err = |what: &'static str| TrainError::torch(what);
        let on_device = |v: &[i64]| {
            Tensor::f_from_slice(v).and_then(|x| x.f_view([1, v.len() as i64])).and_then(|x| upload(x, device))
        };
        let to_dev = |v: &[i64]| Tensor::f_from_slice(v).and_then(|x| upload(x, device));
        Ok(MicroBatch {
            input_ids: on_device(&self.ids).map_err(err("building a packed pass"))?,
            positions: on_device(&self.positions).map_err(err("building packed positions"))?,
            num_targets: self.targets.len(),
            target_rows: to_dev(&self.target_rows).map_err(err("building targets"))?,
            targets: to_dev(&self.targets).map_err(err("building targets"))?,
            target_weights: Some(
                Tensor::f_from_slice(&self.weights).and_then(|x| upload(x, device)).map_err(err("building weights"))?,
            ),
            segments: Some(Segments::new(&self.lengths, pad_multiple, device)?),
            tokens: self.ids.len(),
            padded_tokens: self.ids.len(),
        })
    }
}

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
    let (q, k, v) = match &a.qkv {
        QkvProj::Separate { q, k, v } => (
            rope.apply(&q.forward(x)?.f_view([1, n, h, d])?, rope_at)?,
            rope.apply(&k.forward(x)?.f_view([1, n, kvh, d])?, rope_at)?,
            v.forward(x)?.f_view([1, n, kvh, d])?,
        ),
        QkvProj::Fused(qkv) => {
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
    // Flash attention wants the head dimension contiguous; the q/k/v here are fresh tensors, so this rarely copies.
    let packed = |t: &Tensor| -> Result<Tensor, tch::TchError> {
        let s = t.size();
        t.f_reshape([s[1], s[2], s[3]])?.f_contiguous()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target_weights(batch: &MicroBatch) -> Vec<f32> {
        Vec::<f32>::try_from(batch.target_weights.as_ref().unwrap()).unwrap()
    }

    fn example(ids: &[i64], first_label: usize) -> TokenizedExample {
        let labels = ids.iter().enumerate().map(|(i, &t)| if i >= first_label { t } else { IGNORE_INDEX }).collect();
        TokenizedExample { input_ids: ids.to_vec(), labels }
    }

    #[test]
    fn positions_restart_per_example_and_targets_carry_their_weights() {
        let data = vec![example(&[1, 2, 3, 4], 2), example(&[5, 6, 7], 1)];
        let pass = [
            PlannedExample { example: 0, len: 4, denominator: 4.0 },
            PlannedExample { example: 1, len: 3, denominator: 2.0 },
        ];
        let b = packed_batch(&pass, &data, 0, 1, Device::Cpu).unwrap();
        assert_eq!(Vec::<i64>::try_from(b.input_ids.view([-1])).unwrap(), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(Vec::<i64>::try_from(b.positions.view([-1])).unwrap(), vec![0, 1, 2, 3, 0, 1, 2]);
        assert_eq!(Vec::<i64>::try_from(&b.target_rows).unwrap(), vec![1, 2, 4, 5]);
        assert_eq!(Vec::<i64>::try_from(&b.targets).unwrap(), vec![3, 4, 6, 7]);
        assert_eq!(target_weights(&b), vec![0.25, 0.25, 0.5, 0.5]);
        assert_eq!((b.num_targets, b.tokens, b.padded_tokens), (4, 7, 7));
        let seg = b.segments.as_ref().unwrap();
        assert_eq!((seg.count, seg.len), (2, 4));
        assert_eq!(Vec::<i64>::try_from(&seg.to_padded).unwrap(), vec![0, 1, 2, 3, 4, 5, 6, 6]);
        assert_eq!(Vec::<i64>::try_from(&seg.from_padded).unwrap(), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(Vec::<i32>::try_from(&seg.cu_seqlens).unwrap(), vec![0, 4, 7]);
        assert_eq!(seg.longest, 4);
    }

    #[test]
    fn rounding_adds_a_padding_segment_without_targets() {
        let data = vec![example(&[1, 2, 3, 4, 5], 1)];
        let pass = [PlannedExample { example: 0, len: 5, denominator: 1.0 }];
        let b = packed_batch(&pass, &data, 9, 4, Device::Cpu).unwrap();
        assert_eq!(Vec::<i64>::try_from(b.input_ids.view([-1])).unwrap(), vec![1, 2, 3, 4, 5, 9, 9, 9]);
        assert_eq!(Vec::<i64>::try_from(b.positions.view([-1])).unwrap(), vec![0, 1, 2, 3, 4, 0, 1, 2]);
        assert_eq!((b.num_targets, b.tokens, b.padded_tokens), (4, 5, 8));
        let seg = b.segments.as_ref().unwrap();
        assert_eq!((seg.count, seg.len), (2, 8));
        assert_eq!(
            Vec::<i64>::try_from(&seg.from_padded).unwrap(),
            vec![0, 1, 2, 3, 4, 8, 9, 10],
            "the padding segment is the second row of the layout"
        );
        assert_eq!(Vec::<i32>::try_from(&seg.cu_seqlens).unwrap(), vec![0, 5, 8], "the padding is its own segment");
        assert_eq!(seg.longest, 5);
    }
}
