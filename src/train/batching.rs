//! Which examples form each micro-batch, and the padded tensors of one micro-batch.
//!
//! Every epoch draws a fresh seeded permutation (seed, epoch), as HF's `RandomSampler` does. With length grouping
//! (HF's `group_by_length`, `LengthGroupedSampler`), the permutation is cut into mega-batches of
//! `min(n / (4 * batch), 50) * batch` examples, each sorted longest first, and the longest mega-batch goes first so
//! an out-of-memory shows at once: neighbours in a micro-batch then have similar lengths and little is padded.
//!
//! A micro-batch is right-padded to its longest example, rounded up to a multiple ([`CUDA_PAD_MULTIPLE`] on CUDA):
//! on the GPU every new sequence length costs kernel selection and allocator work, so a few shapes that repeat are
//! faster than exact lengths; the causal mask keeps every real token from seeing the padding after it, so no
//! attention mask is needed. Only positions whose next token is a label feed the LM head.

use tch::{Device, Kind, Tensor};

use super::error::TrainError;
use super::tokenize::{TokenizedExample, IGNORE_INDEX};

/// Copies host tensor `t` to `device` without a stream sync (a blocking copy waits for all queued GPU work, so
/// building a pass's inputs would stall the host until the previous step's update is done). The source is pageable
/// memory, which the CUDA driver stages before the call returns, so `t` may be dropped at once.
pub fn upload(t: Tensor, device: Device) -> Result<Tensor, tch::TchError> {
    if device == Device::Cpu {
        return Ok(t);
    }
    let kind = t.kind();
    t.f_to_device_(device, kind, true, false)
}

/// Micro-batch lengths are rounded up to a multiple of this on CUDA (see the module doc).
pub const CUDA_PAD_MULTIPLE: usize = 64;

/// SplitMix64: a small seeded generator, so shuffles are reproducible from the config's seed alone.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        // Multiply-shift maps 64 random bits onto 0..n with negligible bias for any n we use.
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A seeded permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// The micro-batches of one epoch, each a list of example indices.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
    group_by_length: bool,
) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let order = rng.permutation(lengths.len());
    let order = if group_by_length { length_grouped(order, lengths, batch_size) } else { order };
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

/// HF's `get_length_grouped_indices` applied to an existing permutation.
fn length_grouped(order: Vec<usize>, lengths: &[usize], batch_size: usize) -> Vec<usize> {
    let mult = (lengths.len() / (batch_size * 4)).clamp(1, 50);
    let mut megabatches: Vec<Vec<usize>> = order.chunks(mult * batch_size).map(<[usize]>::to_vec).collect();
    for mb in &mut megabatches {
        // Stable sort, longest first, as Python's sorted(..., reverse=True).
        mb.sort_by(|a, b| lengths[*b].cmp(&lengths[*a]));
    }
    let longest = (0..megabatches.len()).max_by_key(|&i| (lengths[megabatches[i][0]], std::cmp::Reverse(i)));
    if let Some(i) = longest {
        let first = megabatches[0][0];
        megabatches[0][0] = megabatches[i][0];
        megabatches[i][0] = first;
    }
    megabatches.concat()
}

/// One padded micro-batch on the training device.
#[derive(Debug)]
pub struct MicroBatch {
    /// [B, T] token ids, right-padded.
    pub input_ids: Tensor,
    /// [B, T] positions 0..T.
    pub positions: Tensor,
    /// [N] flat indices (row * T + t) of the positions whose next token is a loss target.
    pub target_rows: Tensor,
    /// [N] the target token of each of those positions.
    pub targets: Tensor,
    /// N.
    pub num_targets: usize,
    /// Real (unpadded) tokens.
    pub tokens: usize,
    /// B * T.
    pub padded_tokens: usize,
    /// [N] f32 weight of each target's token loss, when the examples of a pass are divided by different
    /// denominators (packed passes: `1 / denominator`); none = every target weighs 1.
    pub target_weights: Option<Tensor>,
    /// The segments of a packed pass ([`super::packed`]): B = 1 and attention stays inside each segment; none = a
    /// right-padded batch with one example per row.
    pub segments: Option<super::packed::Segments>,
}

impl MicroBatch {
    /// Pads `examples` into tensors on `device`, to a length that is a multiple of `pad_multiple` but not beyond
    /// `max_len` (unless an example is longer); `pad_id` fills the padding (never attended to, never a target).
    pub fn new(
        examples: &[&TokenizedExample],
        pad_id: i64,
        pad_multiple: usize,
        max_len: usize,
        device: Device,
    ) -> Result<Self, TrainError> {
        let b = examples.len();
        let longest = examples.iter().map(|e| e.len()).max().unwrap_or(0);
        let t = longest.next_multiple_of(pad_multiple.max(1)).min(max_len.max(longest));
        let mut ids = vec![pad_id; b * t];
        let mut target_rows = Vec::new();
        let mut targets = Vec::new();
        for (row, e) in examples.iter().enumerate() {
            ids[row * t..row * t + e.len()].copy_from_slice(&e.input_ids);
            for (pos, &label) in e.labels.iter().enumerate().skip(1) {
                if label != IGNORE_INDEX {
                    target_rows.push((row * t + pos - 1) as i64);
                    targets.push(label);
                }
            }
        }
        let err = TrainError::torch("building a micro-batch");
        let input_ids = Tensor::f_from_slice(&ids)
            .and_then(|x| x.f_view([b as i64, t as i64]))
            .and_then(|x| upload(x, device))
            .map_err(err)?;
        let positions = Tensor::f_arange(t as i64, (Kind::Int64, device))
            .and_then(|p| p.f_expand([b as i64, t as i64], false))
            .map_err(TrainError::torch("building positions"))?;
        let to_dev = |v: &[i64]| Tensor::f_from_slice(v).and_then(|x| upload(x, device));
        Ok(MicroBatch {
            input_ids,
            positions,
            num_targets: targets.len(),
            target_rows: to_dev(&target_rows).map_err(TrainError::torch("building targets"))?,
            targets: to_dev(&targets).map_err(TrainError::torch("building targets"))?,
            tokens: examples.iter().map(|e| e.len()).sum(),
            padded_tokens: b * t,
            target_weights: None,
            segments: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = SplitMix64::new(42).permutation(100);
        assert_eq!(a, SplitMix64::new(42).permutation(100));
        assert_ne!(a, SplitMix64::new(43).permutation(100));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn epochs_differ_and_cover_every_example() {
        let lengths = vec![5; 10];
        let e0 = epoch_batches(&lengths, 3, 7, 0, false);
        let e1 = epoch_batches(&lengths, 3, 7, 1, false);
        assert_ne!(e0, e1);
        assert_eq!(e0.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        let mut all: Vec<usize> = e0.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn length_grouping_pads_less_and_puts_the_longest_first() {
        let mut rng = SplitMix64::new(1);
        let lengths: Vec<usize> = (0..400).map(|_| 200 + rng.below(401)).collect();
        let padded = |batches: &[Vec<usize>]| -> usize {
            batches.iter().map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap()).sum()
        };
        let random = epoch_batches(&lengths, 8, 3, 0, false);
        let grouped = epoch_batches(&lengths, 8, 3, 0, true);
        let real: usize = lengths.iter().sum();
        assert!(padded(&grouped) < padded(&random));
        assert!((padded(&grouped) as f64) < 1.06 * real as f64, "{} vs {real}", padded(&grouped));
        assert_eq!(lengths[grouped[0][0]], *lengths.iter().max().unwrap());
    }

    #[test]
    fn micro_batch_targets_are_shifted_labels() {
        let a = TokenizedExample { input_ids: vec![1, 2, 3, 4], labels: vec![-100, -100, 3, 4] };
        let b = TokenizedExample { input_ids: vec![5, 6], labels: vec![-100, 6] };
        let mb = MicroBatch::new(&[&a, &b], 0, 1, 100, Device::Cpu).unwrap();
        assert_eq!(mb.input_ids.size(), vec![2, 4]);
        assert_eq!(Vec::<i64>::try_from(&mb.target_rows).unwrap(), vec![1, 2, 4]);
        assert_eq!(Vec::<i64>::try_from(&mb.targets).unwrap(), vec![3, 4, 6]);
        assert_eq!((mb.num_targets, mb.tokens, mb.padded_tokens), (3, 6, 8));
        assert_eq!(Vec::<i64>::try_from(mb.input_ids.view([-1])).unwrap(), vec![1, 2, 3, 4, 5, 6, 0, 0]);
        let rounded = MicroBatch::new(&[&a, &b], 0, 3, 100, Device::Cpu).unwrap();
        assert_eq!((rounded.input_ids.size(), rounded.padded_tokens), (vec![2, 6], 12));
        assert!(rounded.target_rows.equal(&Tensor::from_slice(&[1i64, 2, 6])));
    }
}
