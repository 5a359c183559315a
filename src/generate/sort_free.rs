//! The sort-free sampler on the host: the same radix selection as the CUDA kernel (src/kernels/sampler.cu), step for
//! step, over one row's logits and integer masses (`sampling::masses`). It documents the algorithm, and the tests
//! check it picks exactly the sort path's tokens.
//!
//! Tokens are ordered by (logit descending, id ascending), or by id alone for plain temperature, through one
//! integer "composite" key per token (larger = earlier). Every question the sampler asks -- which token is the k-th
//! candidate, which is the nucleus's last member, where the inverse CDF of a uniform lands -- is "the last token in
//! the order with less than X before it" (by count or by mass), answered 8 bits of the key at a time from histograms
//! of the tokens sharing the prefix found so far.

/// How a row is ordered and cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowRule {
    /// Bits of the logit's order key: 0 for id order (plain temperature), 16 for bf16 logits, 32 for f32.
    pub key_bits: u32,
    /// Candidates kept (top-k), when limited.
    pub top_k: Option<usize>,
    /// Nucleus mass (top-p), when limited.
    pub top_p: Option<f64>,
}

pub use crate::kernels::id_bits;

/// The order key of a logit: larger logits get larger keys; -0.0 counts as +0.0 (the sort compares them equal).
fn composite(logit: f32, id: usize, key_bits: u32, id_bits: u32) -> u64 {
    let mut key = 0u64;
    if key_bits > 0 {
        let b = (logit + 0.0).to_bits();
        let ordered = if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 };
        key = (ordered >> (32 - key_bits)) as u64;
    }
    let id_mask = (1u64 << id_bits) - 1;
    (key << id_bits) | (id_mask - id as u64)
}

/// Which question a selection answers (the kernel's `stage`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Selection {
    /// The k-th candidate.
    TopK(usize),
    /// The nucleus's last member for mass `p`.
    Nucleus(f64),
    /// The token the inverse CDF of the uniform `a / 2^24` lands on.
    Pick(u32),
}

impl Selection {
    /// The limit over candidates of total mass `total`: the chosen token is the last with less than it before it
    /// (a count for top-k, a mass otherwise). A token stays in the nucleus while the mass before it is below
    /// p * total, for integer masses below its ceiling; the pick is the last token with at most floor(u * total)
    /// before it, computed exactly.
    fn limit(self, total: u64) -> u64 {
        match self {
            Selection::TopK(k) => k as u64,
            Selection::Nucleus(p) => (p * total as f64).ceil() as u64,
            Selection::Pick(a) => {
                let a = a as u64;
                a * (total >> 24) + ((a * (total & 0xFF_FFFF)) >> 24) + 1
            }
        }
    }
}

/// The candidates are the tokens whose composite is at least `floor` (the previous selection's result). Returns the
/// smallest candidate composite whose candidates before it (count or mass) are fewer than the selection's limit,
/// which the first pass sets from the candidates' total mass.
fn radix_select(keys: &[u64], masses: &[u64], total_bits: u32, floor: u64, selection: Selection) -> u64 {
    let by_count = matches!(selection, Selection::TopK(_));
    let (mut prefix, mut above_mass, mut above_count, mut done, mut limit) = (0u64, 0u64, 0u64, 0u32, 0u64);
    while done < total_bits {
        let width = 8.min(total_bits - done);
        let shift = total_bits - done - width;
        let mut count = [0u64; 256];
        let mut mass = [0u64; 256];
        for (&c, &q) in keys.iter().zip(masses) {
            if c >= floor && (done == 0 || c >> (shift + width) == prefix) {
                let digit = ((c >> shift) & ((1 << width) - 1)) as usize;
                count[digit] += 1;
                mass[digit] += q;
            }
        }
        if done == 0 {
            limit = selection.limit(mass.iter().sum());
        }
        let (mut run_mass, mut run_count) = (above_mass, above_count);
        let (mut chosen, mut chosen_mass, mut chosen_count) = (0u64, 0u64, 0u64);
        for d in (0..1usize << width).rev() {
            if count[d] == 0 {
                continue;
            }
            if (if by_count { run_count } else { run_mass }) >= limit {
                break;
            }
            (chosen, chosen_mass, chosen_count) = (d as u64, run_mass, run_count);
            run_mass += mass[d];
            run_count += count[d];
        }
        prefix = (prefix << width) | chosen;
        (above_mass, above_count) = (chosen_mass, chosen_count);
        done += width;
    }
    prefix
}

/// The token a row picks for the uniform `a / 2^24`, from its logits and masses (`sampling::masses`): each
/// selection's result is the floor of the next (the k-th candidate, then the nucleus's last member).
pub fn pick(logits: &[f32], masses: &[i64], rule: RowRule, a: u32) -> usize {
    let vocab = logits.len();
    let ids = id_bits(vocab);
    let id_mask = (1u64 << ids) - 1;
    let keys: Vec<u64> = logits.iter().enumerate().map(|(i, &l)| composite(l, i, rule.key_bits, ids)).collect();
    let masses: Vec<u64> = masses.iter().map(|&q| q as u64).collect();
    let total_bits = rule.key_bits + ids;
    let mut floor = 0;
    if let Some(k) = rule.top_k.filter(|&k| k < vocab) {
        floor = radix_select(&keys, &masses, total_bits, floor, Selection::TopK(k));
    }
    if let Some(p) = rule.top_p {
        floor = radix_select(&keys, &masses, total_bits, floor, Selection::Nucleus(p));
    }
    let pick = radix_select(&keys, &masses, total_bits, floor, Selection::Pick(a));
    (id_mask - (pick & id_mask)) as usize
}
