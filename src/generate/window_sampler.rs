//! The windowed sampler on the host: the same per-value histogram as the CUDA kernel `stasc_window_sample_bf16`
//! (src/kernels/window_sampler.cu), over one row of bf16 logits under top-k and/or top-p. It documents the
//! algorithm, and the tests check it picks exactly the sort path's tokens whenever it does not hand the row to radix
//! selection (`sort_free`).
//!
//! Tokens of one bf16 value share a mass. A histogram of token counts per value ("bin"), walked from the largest
//! value, answers each selection -- the k-th candidate, the nucleus's last member, the pick -- arithmetically: the
//! answer lies in the last bin with less than the selection's limit before it, at the position that the count or
//! mass before the bin and its per-token mass give. Only the pick needs ids: the n-th smallest id among its bin's
//! tokens. Bins cover the [`WINDOW`] values below the row's largest in a compressed order where magnitudes below
//! 2^-16 (either sign) share one "tiny" bin of mixed masses; a selection that would stop in the tiny bin or below
//! the window is left to radix selection.

use super::sort_free::RowRule;

/// Bins below the row's largest value that the kernel keeps in shared memory (`WINDOW` in window_sampler.cu).
pub const WINDOW: usize = 8192;
/// bf16 magnitude bits (exponent and mantissa) of 2^-16: smaller magnitudes share the tiny bin.
const TINY_MAGNITUDE: i32 = 111 << 7;
/// The compressed rank of the tiny bin.
const TINY_RANK: i32 = 0x7FFF - TINY_MAGNITUDE + 1;

/// The compressed order of a bf16-valued logit (larger = earlier): one rank per value of magnitude at least 2^-16,
/// and [`TINY_RANK`] for every smaller one, -0.0 and 0.0 included.
fn rank(logit: f32) -> i32 {
    let bits = logit.to_bits() >> 16;
    let magnitude = (bits & 0x7FFF) as i32;
    if magnitude < TINY_MAGNITUDE {
        return TINY_RANK;
    }
    let above_tiny = magnitude - TINY_MAGNITUDE + 1;
    if bits & 0x8000 != 0 {
        TINY_RANK - above_tiny
    } else {
        TINY_RANK + above_tiny
    }
}

/// A row's bins: tokens and per-token mass per bin (bin d holds rank `top - d`), and what lies below the window.
struct Bins {
    count: Vec<u64>,
    token_mass: Vec<u64>,
    tiny: Option<usize>,
    tiny_mass: u64,
    under_count: u64,
    under_mass: u64,
}

impl Bins {
    fn mass(&self, d: usize, tokens: u64) -> u64 {
        if Some(d) == self.tiny {
            self.tiny_mass
        } else {
            tokens * self.token_mass[d]
        }
    }
}

/// One selection's answer: its bin, the position in it, and the tokens and mass of the bins before it.
struct Answer {
    bin: usize,
    position: u64,
    before_mass: u64,
}

/// The last candidate with less than `limit` before it (by count or mass). The candidates are bins `[0, end.0)` and
/// the first `end.1` tokens of bin `end.0`, or every token when `end` is `None`. `None` when the answer lies in the
/// tiny bin or below the window.
fn select(bins: &Bins, end: Option<(usize, u64)>, by_count: bool, limit: u64) -> Option<Answer> {
    let last = end.map_or(WINDOW - 1, |(bin, _)| bin);
    let (mut run_count, mut run_mass, mut stopped) = (0u64, 0u64, false);
    let mut chosen: Option<(usize, u64, u64, u64)> = None;
    for d in 0..=last {
        let tokens = match end {
            Some((bin, n)) if bin == d => n,
            _ => bins.count[d],
        };
        if tokens == 0 {
            continue;
        }
        if (if by_count { run_count } else { run_mass }) >= limit {
            stopped = true;
            break;
        }
        chosen = Some((d, tokens, run_count, run_mass));
        run_count += tokens;
        run_mass += bins.mass(d, tokens);
    }
    let into_underflow =
        end.is_none() && !stopped && bins.under_count > 0 && (if by_count { run_count } else { run_mass }) < limit;
    let (bin, tokens, before_count, before_mass) = chosen?;
    if into_underflow || Some(bin) == bins.tiny {
        return None;
    }
    let (per, before) = if by_count { (1, before_count) } else { (bins.token_mass[bin], before_mass) };
    let taken = if per == 0 { tokens } else { tokens.min((limit - before).div_ceil(per)) };
    Some(Answer { bin, position: taken - 1, before_mass })
}

/// The token the windowed kernel picks for the uniform `a / 2^24` from one row of bf16-valued `logits` and their
/// masses (`sampling::masses`), or `None` where it hands the row to radix selection (which then picks
/// `sort_free::pick`'s token): a selection stopping in the tiny bin or below the window, or a NaN.
pub fn pick(logits: &[f32], masses: &[i64], rule: RowRule, a: u32) -> Option<usize> {
    if rule.key_bits != 16 || logits.iter().any(|f| f.is_nan()) {
        return None;
    }
    let top = rank(logits.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    let tiny = usize::try_from(top - TINY_RANK).ok().filter(|&d| d < WINDOW);
    let mut bins =
        Bins { count: vec![0; WINDOW], token_mass: vec![0; WINDOW], tiny, tiny_mass: 0, under_count: 0, under_mass: 0 };
    for (&f, &q) in logits.iter().zip(masses) {
        let d = (top - rank(f)) as usize;
        if d < WINDOW {
            bins.count[d] += 1;
            bins.token_mass[d] = q as u64;
            if Some(d) == tiny {
                bins.tiny_mass += q as u64;
            }
        } else {
            bins.under_count += 1;
            bins.under_mass += q as u64;
        }
    }
    let vocab = logits.len();
    let mut end: Option<(usize, u64)> = None;
    let mut total = (0..WINDOW).map(|d| bins.mass(d, bins.count[d])).sum::<u64>() + bins.under_mass;
    let answer = |end: &mut Option<(usize, u64)>, total: &mut u64, by_count: bool, limit: u64| {
        let found = select(&bins, *end, by_count, limit)?;
        *end = Some((found.bin, found.position + 1));
        *total = found.before_mass + (found.position + 1) * bins.token_mass[found.bin];
        Some(found)
    };
    if let Some(k) = rule.top_k.filter(|&k| k > 0 && k < vocab) {
        answer(&mut end, &mut total, true, k as u64)?;
    }
    if let Some(p) = rule.top_p.filter(|&p| p < 1.0) {
        let limit = (p * total as f64).ceil() as u64;
        answer(&mut end, &mut total, false, limit)?;
    }
    let a = a as u64;
    let limit = a * (total >> 24) + ((a * (total & 0xFF_FFFF)) >> 24) + 1;
    let pick = answer(&mut end, &mut total, false, limit)?;
    let target = top - pick.bin as i32;
    logits.iter().enumerate().filter(|(_, &f)| rank(f) == target).nth(pick.position as usize).map(|(i, _)| i)
}
