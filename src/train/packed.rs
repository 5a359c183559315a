//! Packed passes: several examples concatenated into one sequence of N tokens, no padding between them, each
//! example its own segment. Positions restart at 0 in every segment, and attention is block-diagonal: no token
//! attends across a segment boundary ([`super::packed_attention`] runs the layers on that layout).
//!
//! This module builds a pass's inputs: the packed tokens, positions, targets with their weights, and the segments
//! (cumulative lengths for flash attention, the gather into padded rows for the other path); and, for CUDA graphs,
//! the same padded to a [`PassShape`] bucket.

use tch::{Device, Tensor};

use super::batching::{upload, MicroBatch};
use super::error::TrainError;
use super::plan::PlannedExample;
use super::tokenize::{TokenizedExample, IGNORE_INDEX};

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
