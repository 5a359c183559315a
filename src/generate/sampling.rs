//! Sampling rules and the randomness behind them. Every sample owns a seed derived from (run seed, prompt id, sample
//! index), and its k-th token uses the k-th draw of SplitMix64 from that seed, so a sample's tokens depend only on
//! its own seed and logits, never on what else is in the batch. The draw is one uniform per row, turned into a token
//! by inverse-CDF sampling over the temperature-scaled, top-k/top-p-filtered distribution, on the model's device.

use tch::{Kind, Tensor};

use super::GenerateError;

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties go to the lowest id, as in HF).
    Greedy,
    /// Sampling from softmax(logits / temperature).
    Temperature {
        /// Divides the logits; > 0.
        temperature: f64,
    },
    /// Sampling among the `top_k` most likely tokens.
    TopK {
        /// Divides the logits; > 0.
        temperature: f64,
        /// Number of candidates kept; >= 1.
        top_k: i64,
    },
    /// Nucleus sampling: the smallest set of most likely tokens whose probability reaches `top_p`.
    TopP {
        /// Divides the logits; > 0.
        temperature: f64,
        /// Probability mass kept, in (0, 1).
        top_p: f64,
    },
    /// Top-k first, then nucleus sampling within the k (HF's order of warpers).
    TopKThenTopP {
        /// Divides the logits; > 0.
        temperature: f64,
        /// Number of candidates kept; >= 1.
        top_k: i64,
        /// Probability mass kept within them, in (0, 1).
        top_p: f64,
    },
}

impl Sampling {
    /// The rule for the usual knobs: temperature 0 is greedy; top_p of 1 (or none) and top_k of 0 (or none) are off.
    pub fn from_params(temperature: f64, top_p: Option<f64>, top_k: Option<i64>) -> Result<Sampling, GenerateError> {
        let invalid = |m: String| Err(GenerateError::InvalidRequest(m));
        if !(temperature >= 0.0 && temperature.is_finite()) {
            return invalid(format!("temperature must be >= 0, found {temperature}"));
        }
        if let Some(p) = top_p {
            if !(p > 0.0 && p <= 1.0) {
                return invalid(format!("top_p must be in (0, 1], found {p}"));
            }
        }
        if let Some(k) = top_k {
            if k < 0 {
                return invalid(format!("top_k must be >= 0, found {k}"));
            }
        }
        if temperature == 0.0 {
            return Ok(Sampling::Greedy);
        }
        let top_p = top_p.filter(|&p| p < 1.0);
        let top_k = top_k.filter(|&k| k > 0);
        Ok(match (top_k, top_p) {
            (None, None) => Sampling::Temperature { temperature },
            (Some(top_k), None) => Sampling::TopK { temperature, top_k },
            (None, Some(top_p)) => Sampling::TopP { temperature, top_p },
            (Some(top_k), Some(top_p)) => Sampling::TopKThenTopP { temperature, top_k, top_p },
        })
    }

    /// Whether the rule draws random numbers.
    pub fn is_random(&self) -> bool {
        !matches!(self, Sampling::Greedy)
    }

    /// Picks one token per row of `logits` ([rows, vocab]) using `uniforms` ([rows] f32 in [0, 1), ignored when
    /// greedy); returns [rows] int64. Each row's result depends only on that row.
    pub fn sample(&self, logits: &Tensor, uniforms: Option<&Tensor>) -> Result<Tensor, tch::TchError> {
        let (temperature, top_k, top_p) = match *self {
            Sampling::Greedy => return logits.f_argmax(-1, false),
            Sampling::Temperature { temperature } => (temperature, None, None),
            Sampling::TopK { temperature, top_k } => (temperature, Some(top_k), None),
            Sampling::TopP { temperature, top_p } => (temperature, None, Some(top_p)),
            Sampling::TopKThenTopP { temperature, top_k, top_p } => (temperature, Some(top_k), Some(top_p)),
        };
        let uniforms = uniforms.ok_or_else(|| tch::TchError::Kind("sampling needs uniforms".into()))?;
        let vocab = *logits.size().last().unwrap_or(&1);
        // Candidates in decreasing order (top-k, or a full sort for top-p; plain temperature needs no order). The raw
        // logits are ordered: dividing by a positive temperature keeps the order, and sorting the model's dtype
        // (bf16 on CUDA) moves half the bytes of f32 (the sort is the costliest part of a top-p decode step).
        let (values, ids) = match (top_k, top_p) {
            (Some(k), _) => logits.f_topk(k.min(vocab), -1, true, true)?,
            // Stable: tied logits (common in bf16) keep id order, so a row's candidate order never depends on the
            // sort algorithm libtorch picks for the batch's shape.
            (None, Some(_)) => logits.f_sort_stable(true, -1, true)?,
            (None, None) => {
                let ids = Tensor::f_arange(vocab, (Kind::Int64, logits.device()))?.f_expand_as(logits)?;
                (logits.shallow_clone(), ids)
            }
        };
        let mut scaled = values.f_to_kind(Kind::Float)?;
        let _ = scaled.f_div_scalar_(temperature)?;
        let probs = scaled.f_softmax(-1, Kind::Float)?;
        let cumulative = probs.f_cumsum(-1, Kind::Float)?;
        let n = *cumulative.size().last().unwrap_or(&1);
        // The nucleus is a prefix of the sorted candidates: keep one while the mass before it is below top_p (the
        // first always). Its mass is the cumulative sum at its last member, and no later entry can be chosen since
        // their cumulative sums are at least that mass, which exceeds every threshold below.
        let total = match top_p {
            Some(p) => {
                let kept = cumulative.f_sub(&probs)?.f_lt(p)?.f_sum_dim_intlist(-1, true, Kind::Int64)?;
                cumulative.f_gather(-1, &kept.f_sub_scalar(1)?, false)?
            }
            None => cumulative.f_narrow(-1, n - 1, 1)?,
        };
        let threshold = uniforms.f_to_kind(Kind::Float)?.f_view([-1, 1])?.f_mul(&total)?;
        let choice =
            cumulative.f_le_tensor(&threshold)?.f_sum_dim_intlist(-1, true, Kind::Int64)?.f_clamp_max(n - 1)?;
        ids.f_gather(-1, &choice, false)?.f_view([-1])
    }
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function applied to `x + GOLDEN_GAMMA` (one step of the generator from state `x`).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of one sample: `splitmix64(splitmix64(splitmix64(run_seed) ^ prompt_id) ^ sample_index)`.
pub fn sample_seed(run_seed: u64, prompt_id: u64, sample_index: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(run_seed) ^ prompt_id) ^ sample_index)
}

/// The uniform in [0, 1) a sample uses for its `step`-th token (0-based): the top 24 bits of the (step+1)-th output
/// of SplitMix64 seeded with `seed`, which is exact in f32.
pub fn uniform(seed: u64, step: u64) -> f32 {
    let z = splitmix64(seed.wrapping_add(step.wrapping_mul(GOLDEN_GAMMA)));
    (z >> 40) as f32 / (1u64 << 24) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_stream() {
        // First outputs of Vigna's splitmix64.c seeded with 1234567.
        let mut state: u64 = 1234567;
        let mut next = || {
            let out = splitmix64(state);
            state = state.wrapping_add(GOLDEN_GAMMA);
            out
        };
        assert_eq!(next(), 6457827717110365317);
        assert_eq!(next(), 3203168211198807973);
        assert_eq!(uniform(1234567, 1), (3203168211198807973u64 >> 40) as f32 / 16777216.0);
    }

    #[test]
    fn params_map_to_rules() {
        assert_eq!(Sampling::from_params(0.0, Some(0.9), None).unwrap(), Sampling::Greedy);
        assert_eq!(Sampling::from_params(0.7, Some(1.0), Some(0)).unwrap(), Sampling::Temperature { temperature: 0.7 });
        assert!(matches!(Sampling::from_params(0.7, Some(0.9), Some(5)).unwrap(), Sampling::TopKThenTopP { .. }));
        assert!(Sampling::from_params(0.7, Some(1.5), None).is_err());
    }

    fn draw(rule: Sampling, logits: &[f32], u: f32) -> i64 {
        let logits = Tensor::from_slice(logits).view([1, -1]);
        rule.sample(&logits, Some(&Tensor::from_slice(&[u]))).unwrap().int64_value(&[0])
    }

    #[test]
    fn inverse_cdf_follows_the_sorted_filtered_distribution() {
        // probs ~ [0.09, 0.67, 0.24] after softmax of ln values.
        let logits = [0.09f32.ln(), 0.67f32.ln(), 0.24f32.ln()];
        let top_p = Sampling::TopP { temperature: 1.0, top_p: 0.8 };
        // Nucleus = {1, 2} (0.67 + 0.24 >= 0.8), renormalised to [0.736, 0.264] in sorted order.
        assert_eq!(draw(top_p, &logits, 0.0), 1);
        assert_eq!(draw(top_p, &logits, 0.73), 1);
        assert_eq!(draw(top_p, &logits, 0.74), 2);
        assert_eq!(draw(top_p, &logits, 0.999), 2);
        let top1 = Sampling::TopK { temperature: 1.0, top_k: 1 };
        assert_eq!(draw(top1, &logits, 0.999), 1);
        let plain = Sampling::Temperature { temperature: 1.0 };
        assert_eq!(draw(plain, &logits, 0.05), 0);
        assert_eq!(draw(plain, &logits, 0.5), 1);
        assert_eq!(draw(plain, &logits, 0.95), 2);
        assert_eq!(draw(Sampling::Greedy, &logits, 0.0), 1);
    }

    /// A plain host-side reading of the rule: sort (unless plain temperature), softmax, nucleus, inverse CDF.
    fn reference(logits: &[f32], temperature: f64, top_k: Option<usize>, top_p: Option<f64>, u: f32) -> usize {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        if top_k.is_some() || top_p.is_some() {
            order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
        }
        order.truncate(top_k.unwrap_or(logits.len()));
        let max = order.iter().map(|&i| logits[i] as f64 / temperature).fold(f64::MIN, f64::max);
        let weights: Vec<f64> = order.iter().map(|&i| (logits[i] as f64 / temperature - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        let probs: Vec<f64> = weights.iter().map(|w| w / sum).collect();
        let mut kept = probs.len();
        if let Some(p) = top_p {
            let mut before = 0.0;
            kept = probs
                .iter()
                .take_while(|&&q| {
                    let keep = before < p;
                    before += q;
                    keep
                })
                .count();
        }
        let mass: f64 = probs[..kept].iter().sum();
        let mut cumulative = 0.0;
        for (j, q) in probs[..kept].iter().enumerate() {
            cumulative += q;
            if cumulative > u as f64 * mass {
                return order[j];
            }
        }
        order[kept - 1]
    }

    #[test]
    fn device_sampling_agrees_with_a_plain_reading_of_the_rule() {
        let rules = [
            (Sampling::TopP { temperature: 0.7, top_p: 0.9 }, None, Some(0.9), 0.7),
            (Sampling::TopK { temperature: 1.3, top_k: 7 }, Some(7), None, 1.3),
            (Sampling::TopKThenTopP { temperature: 1.0, top_k: 20, top_p: 0.5 }, Some(20), Some(0.5), 1.0),
            (Sampling::Temperature { temperature: 2.0 }, None, None, 2.0),
        ];
        let (rows, vocab) = (300usize, 40usize);
        let logits: Vec<f32> = (0..rows * vocab).map(|i| 3.0 * (uniform(99, i as u64) - 0.5)).collect();
        let u: Vec<f32> = (0..rows).map(|r| uniform(7, r as u64)).collect();
        let device_logits = Tensor::from_slice(&logits).view([rows as i64, vocab as i64]);
        for (rule, k, p, t) in rules {
            let got =
                Vec::<i64>::try_from(rule.sample(&device_logits, Some(&Tensor::from_slice(&u))).unwrap()).unwrap();
            let differ = (0..rows)
                .filter(|&r| got[r] as usize != reference(&logits[r * vocab..(r + 1) * vocab], t, k, p, u[r]))
                .count();
            // f32 on the device vs f64 here may disagree only where a uniform falls on a CDF boundary.
            assert!(differ <= 1, "{rule:?}: {differ} of {rows} rows differ");
        }
    }
}
