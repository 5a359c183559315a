//! 95% confidence intervals over questions: Wilson's score interval for a rate measured once per question,
//! Newcombe's hybrid score interval for the difference of two independent rates (ours against a published number),
//! and percentile bootstraps that resample questions (a rate with several samples per question, a paired
//! difference between two runs on the same questions). Pure arithmetic; the bootstrap is seeded, so a report is
//! the same every time it is written.

use serde::{Deserialize, Serialize};

/// The standard normal quantile of 0.975: two-sided 95%.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Resamples of every bootstrap interval (percentile error about ±0.5 points of coverage).
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// A two-sided 95% interval, in the unit of the quantity it bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl Interval {
    /// Whether `value` lies inside (bounds included).
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }

    /// The interval multiplied by `factor` (e.g. 100 for percentages).
    pub fn scaled(self, factor: f64) -> Interval {
        Interval { low: self.low * factor, high: self.high * factor }
    }
}

/// Wilson's score interval of a proportion `p` observed on `n` independent trials; None when `n` is 0.
pub fn wilson(p: f64, n: usize) -> Option<Interval> {
    if n == 0 || !p.is_finite() {
        return None;
    }
    let p = p.clamp(0.0, 1.0);
    let n = n as f64;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    // At p = 0 (or 1) the bound is exactly 0 (or 1); the subtraction would leave rounding noise of ~1e-17.
    let low = if p == 0.0 { 0.0 } else { (center - half).max(0.0) };
    let high = if p == 1.0 { 1.0 } else { (center + half).min(1.0) };
    Some(Interval { low, high })
}

/// Newcombe's hybrid score interval (his method 10) for `p1 - p2`, two independent proportions on `n1` and `n2`
/// trials, built from their Wilson intervals.
pub fn newcombe(p1: f64, n1: usize, p2: f64, n2: usize) -> Option<Interval> {
    Some(mover_difference(p1, wilson(p1, n1)?, p2, wilson(p2, n2)?))
}

/// Interval of `a - b` for two independent estimates, each with its own 95% interval (Zou and Donner's MOVER, the
/// general form of Newcombe's method: each side's distance to its bound recovers its variance on that side).
pub fn mover_difference(a: f64, a_interval: Interval, b: f64, b_interval: Interval) -> Interval {
    let d = a - b;
    Interval {
        low: d - ((a - a_interval.low).powi(2) + (b_interval.high - b).powi(2)).sqrt(),
        high: d + ((a_interval.high - a).powi(2) + (b - b_interval.low).powi(2)).sqrt(),
    }
}

/// SplitMix64: a small, fast, seedable generator (no dependency for one use).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0); the modulo bias is below 2^-40 for any n a dataset has.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Percentile bootstrap over `n` units (questions): `statistic` sees the indices of one resample (n draws with
/// replacement) and returns the quantity; the interval is its 2.5th and 97.5th percentiles over `resamples`
/// resamples. None when `n` is 0 or no resample gave a finite value.
pub fn bootstrap(
    n: usize,
    resamples: usize,
    seed: u64,
    mut statistic: impl FnMut(&[usize]) -> f64,
) -> Option<Interval> {
    if n == 0 || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let mut indices = vec![0usize; n];
    let mut values = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for i in indices.iter_mut() {
            *i = rng.below(n);
        }
        let v = statistic(&indices);
        if v.is_finite() {
            values.push(v);
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(Interval { low: quantile(&values, 0.025), high: quantile(&values, 0.975) })
}

/// The `q` quantile of sorted `values`, interpolating linearly between order statistics (R's type 7).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Interval of a mean over samples grouped by question, `clusters[q] = (sum of the question's values, number of
/// its samples)`: questions are resampled whole, so samples of one question count as the correlated draws they
/// are. None when there are no samples.
pub fn cluster_mean(clusters: &[(f64, usize)], seed: u64) -> Option<Interval> {
    if clusters.iter().all(|c| c.1 == 0) {
        return None;
    }
    bootstrap(clusters.len(), BOOTSTRAP_RESAMPLES, seed, |idx| {
        let (sum, count) = idx.iter().fold((0.0, 0usize), |(s, c), &i| (s + clusters[i].0, c + clusters[i].1));
        if count == 0 {
            f64::NAN
        } else {
            sum / count as f64
        }
    })
}

/// Interval of `mean(a) - mean(b)` where `a[q]` and `b[q]` are two runs' values on the same question `q`: questions
/// are resampled in pairs. None when the lengths differ or are 0.
pub fn paired_difference(a: &[f64], b: &[f64], seed: u64) -> Option<Interval> {
    if a.len() != b.len() {
        return None;
    }
    bootstrap(a.len(), BOOTSTRAP_RESAMPLES, seed, |idx| {
        idx.iter().map(|&i| a[i] - b[i]).sum::<f64>() / idx.len() as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn wilson_matches_the_textbook_values() {
        // 500 questions at 20%: 0.1673 .. 0.2373 (about ±3.5 points).
        let i = wilson(0.2, 500).unwrap();
        assert!(close(i.low, 0.16729, 1e-4) && close(i.high, 0.23729, 1e-4), "{i:?}");
        // 0 of 10: [0, 0.2775]; 10 of 10: [0.7225, 1].
        let zero = wilson(0.0, 10).unwrap();
        assert!(zero.low == 0.0 && close(zero.high, 0.27753, 1e-4), "{zero:?}");
        let all = wilson(1.0, 10).unwrap();
        assert!(close(all.low, 0.72247, 1e-4) && all.high == 1.0, "{all:?}");
        assert_eq!(wilson(0.5, 0), None);
    }

    #[test]
    fn newcombe_matches_his_worked_example() {
        // Newcombe (1998), Table II, example (a): 56/70 - 48/80 = 0.2000, method 10: 0.0524 .. 0.3339.
        let i = newcombe(56.0 / 70.0, 70, 48.0 / 80.0, 80).unwrap();
        assert!(close(i.low, 0.0524, 5e-4) && close(i.high, 0.3339, 5e-4), "{i:?}");
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let clusters: Vec<(f64, usize)> = (0..200).map(|q| (if q % 4 == 0 { 5.0 } else { 0.0 }, 5)).collect();
        let a = cluster_mean(&clusters, 7).unwrap();
        let b = cluster_mean(&clusters, 7).unwrap();
        assert_eq!(a, b);
        assert!(a.contains(0.25) && a.low > 0.15 && a.high < 0.35, "{a:?}");
        // Whole questions move together: wider than Wilson over the 1,000 samples as if independent.
        let naive = wilson(0.25, 1000).unwrap();
        assert!(a.high - a.low > naive.high - naive.low, "{a:?} vs {naive:?}");
        assert_eq!(cluster_mean(&[(0.0, 0)], 1), None);
    }

    #[test]
    fn paired_difference_of_identical_runs_is_zero_and_of_shifted_runs_excludes_zero() {
        let a: Vec<f64> = (0..300).map(|q| (q % 3 == 0) as u8 as f64).collect();
        let same = paired_difference(&a, &a, 1).unwrap();
        assert_eq!((same.low, same.high), (0.0, 0.0));
        let b: Vec<f64> = (0..300).map(|q| (q % 3 == 0 && q % 2 == 0) as u8 as f64).collect();
        let d = paired_difference(&a, &b, 1).unwrap();
        assert!(d.low > 0.0 && d.contains(50.0 / 300.0), "{d:?}");
        assert_eq!(paired_difference(&a, &b[1..], 1), None);
    }
}
