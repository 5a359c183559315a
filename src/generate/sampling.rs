//! Sampling rules and the randomness behind them. Every sample owns a seed derived from (run seed, prompt id, sample
//! index), and its k-th token uses the k-th draw of SplitMix64 from that seed, so a sample's tokens depend only on
//! its own seed and logits, never on what else is in the batch. The draw is one uniform per row, turned into a token
//! by inverse-CDF sampling over the temperature-scaled, top-k/top-p-filtered distribution, on the model's device.
//! Probabilities are integer masses (`masses`), so every sum is exact: the sort path here and the sort-free CUDA
//! kernel (crate::kernels, mirrored on the host by `sort_free`) pick the same token for the same uniform.

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
    /// greedy); returns [rows] int64. Each row's result depends only on that row. On CUDA the sort-free kernel
    /// (crate::kernels) picks the same tokens as the sort path below, without sorting the vocabulary.
    pub fn sample(&self, logits: &Tensor, uniforms: Option<&Tensor>) -> Result<Tensor, tch::TchError> {
        let Some(rule) = self.random_rule() else { return logits.f_argmax(-1, false) };
        let uniforms = uniforms.ok_or_else(|| tch::TchError::Kind("sampling needs uniforms".into()))?;
        if let Some(kernels) = crate::kernels::for_tensor(logits) {
            if let Some(tokens) = kernels.sample(logits, uniforms, rule.temperature, rule.top_k, rule.top_p)? {
                return Ok(tokens);
            }
        }
        self.sample_sorted(logits, uniforms)
    }

    /// The temperature, top-k and top-p of a random rule; `None` for greedy.
    pub fn random_rule(&self) -> Option<RandomRule> {
        let (temperature, top_k, top_p) = match *self {
            Sampling::Greedy => return None,
            Sampling::Temperature { temperature } => (temperature, None, None),
            Sampling::TopK { temperature, top_k } => (temperature, Some(top_k), None),
            Sampling::TopP { temperature, top_p } => (temperature, None, Some(top_p)),
            Sampling::TopKThenTopP { temperature, top_k, top_p } => (temperature, Some(top_k), Some(top_p)),
        };
        Some(RandomRule { temperature, top_k, top_p })
    }

    /// The sort path: the rule read literally, with a stable sort of each row (any device). Random rules only.
    pub fn sample_sorted(&self, logits: &Tensor, uniforms: &Tensor) -> Result<Tensor, tch::TchError> {
        let Some(RandomRule { temperature, top_k, top_p }) = self.random_rule() else {
            return logits.f_argmax(-1, false);
        };
        let vocab = *logits.size().last().unwrap_or(&1);
        let masses = masses(logits, temperature)?;
        // Candidates in the order (logit descending, id ascending) for top-k/top-p, in id order for plain
        // temperature. Stable: tied logits (common in bf16) keep id order whatever sort libtorch picks.
        let (masses, ids) = match (top_k, top_p) {
            (None, None) => {
                let ids = Tensor::f_arange(vocab, (Kind::Int64, logits.device()))?.f_expand_as(logits)?;
                (masses, ids)
            }
            _ => {
                let (_, ids) = logits.f_sort_stable(true, -1, true)?;
                let ids = ids.f_narrow(-1, 0, top_k.unwrap_or(vocab).min(vocab))?;
                (masses.f_gather(-1, &ids, false)?, ids)
            }
        };
        let cumulative = masses.f_cumsum(-1, Kind::Int64)?;
        let n = *cumulative.size().last().unwrap_or(&1);
        // The nucleus is a prefix of the candidates: keep one while the mass before it is below top_p of the whole
        // (the first always). Its mass is the cumulative sum at its last member.
        let total = match top_p {
            Some(p) => {
                let all = cumulative.f_narrow(-1, n - 1, 1)?.f_to_kind(Kind::Double)?.f_mul_scalar(p)?;
                let before = cumulative.f_sub(&masses)?.f_to_kind(Kind::Double)?;
                let kept = before.f_lt_tensor(&all)?.f_sum_dim_intlist(-1, true, Kind::Int64)?;
                cumulative.f_gather(-1, &kept.f_sub_scalar(1)?, false)?
            }
            None => cumulative.f_narrow(-1, n - 1, 1)?,
        };
        // threshold = floor(u * total) in integers (u = a / 2^24, exact in f32), split so nothing overflows.
        let a = uniforms.f_to_kind(Kind::Float)?.f_mul_scalar(TWO_24)?.f_to_kind(Kind::Int64)?.f_view([-1, 1])?;
        let high = total.f_bitwise_right_shift_tensor_scalar(24i64)?.f_mul(&a)?;
        let low = total.f_bitwise_and(0xFF_FFFFi64)?.f_mul(&a)?.f_bitwise_right_shift_tensor_scalar(24i64)?;
        let threshold = high.f_add(&low)?;
        // The pick: the first candidate whose cumulative mass exceeds the threshold.
        let choice =
            cumulative.f_le_tensor(&threshold)?.f_sum_dim_intlist(-1, true, Kind::Int64)?.f_clamp_max(n - 1)?;
        ids.f_gather(-1, &choice, false)?.f_view([-1])
    }
}

/// The parameters of a random sampling rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomRule {
    /// Divides the logits; > 0.
    pub temperature: f64,
    /// Candidates kept, when limited.
    pub top_k: Option<i64>,
    /// Nucleus mass, when limited.
    pub top_p: Option<f64>,
}

/// 2^24: uniforms are multiples of 2^-24.
const TWO_24: f64 = 16_777_216.0;
/// 2^32: the fixed-point scale of masses.
const TWO_32: f64 = 4_294_967_296.0;

/// Each token's unnormalised probability as an integer, `trunc(exp((logit - row max) * (1 / temperature)) * 2^32)`
/// in f32 arithmetic ([rows, vocab] int64). Integer masses make every sum exact and independent of the order it is
/// taken in, so the sort path, the sort-free kernel and its CPU mirror agree token for token. Tokens below 2^-32 of
/// the most likely one get no mass (f32 cumulative sums lost more than that).
pub fn masses(logits: &Tensor, temperature: f64) -> Result<Tensor, tch::TchError> {
    let logits = logits.f_to_kind(Kind::Float)?;
    let (max, _) = logits.f_max_dim(-1, true)?;
    logits.f_sub(&max)?.f_mul_scalar(1.0 / temperature)?.f_exp()?.f_mul_scalar(TWO_32)?.f_to_kind(Kind::Int64)
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
    use crate::generate::sort_free::{pick, RowRule};
    use crate::generate::window_sampler;

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

    /// Logits on a coarse grid (many ties, as bf16 makes them), -0.0 beside 0.0, and a few far-out values.
    fn tied_logits(rows: usize, vocab: usize) -> Vec<f32> {
        (0..rows * vocab)
            .map(|i| match i % 101 {
                0 => -0.0,
                1 => 0.0,
                2 => 9.5,
                3 => -40.0,
                _ => ((uniform(5, i as u64) * 12.0 - 6.0) * 4.0).round() / 4.0,
            })
            .collect()
    }

    #[test]
    fn sort_free_picks_exactly_the_sort_paths_tokens() {
        let (rows, vocab, draws) = (10usize, 300usize, 40usize);
        let logits = tied_logits(rows, vocab);
        let mut us: Vec<f32> = (0..draws as u64).map(|j| uniform(11, j)).collect();
        us[0] = 0.0;
        us[1] = (TWO_24 as f32 - 1.0) / TWO_24 as f32;
        let mut picked = std::collections::HashSet::new();
        let (mut windowed, mut handed_over) = (0usize, 0usize);
        for kind in [Kind::Float, Kind::BFloat16] {
            let t = Tensor::from_slice(&logits).view([rows as i64, vocab as i64]).to_kind(kind);
            let host = Vec::<f32>::try_from(t.to_kind(Kind::Float).view([-1])).unwrap();
            // Each row once per uniform.
            let big = t.repeat_interleave_self_int(draws as i64, 0i64, None::<i64>);
            let big_u = Tensor::from_slice(&us).repeat([rows as i64]);
            for temperature in [0.05, 0.7, 1.0, 50.0] {
                let masses = Vec::<i64>::try_from(masses(&t, temperature).unwrap().view([-1])).unwrap();
                for (top_k, top_p) in [
                    (None, None),
                    (Some(1), None),
                    (Some(7), None),
                    (Some(vocab as i64 + 5), None),
                    (None, Some(0.05)),
                    (None, Some(0.9)),
                    (None, Some(0.999)),
                    (Some(20), Some(0.5)),
                    (Some(3), Some(0.99)),
                ] {
                    let rule = Sampling::from_params(temperature, top_p, top_k).unwrap();
                    let sorted = Vec::<i64>::try_from(rule.sample_sorted(&big, &big_u).unwrap()).unwrap();
                    let key_bits = match (top_k, top_p, kind) {
                        (None, None, _) => 0,
                        (_, _, Kind::BFloat16) => 16,
                        _ => 32,
                    };
                    let row_rule = RowRule { key_bits, top_k: top_k.map(|k| k as usize), top_p };
                    for r in 0..rows {
                        let (l, q) = (&host[r * vocab..(r + 1) * vocab], &masses[r * vocab..(r + 1) * vocab]);
                        for (j, &u) in us.iter().enumerate() {
                            let a = (u * TWO_24 as f32) as u32;
                            let free = pick(l, q, row_rule, a) as i64;
                            assert_eq!(free, sorted[r * draws + j], "{kind:?} {rule:?} row {r} u {u}");
                            picked.insert((r, free));
                            if let Some(w) = window_sampler::pick(l, q, row_rule, a) {
                                assert_eq!(w as i64, free, "windowed: {kind:?} {rule:?} row {r} u {u}");
                                windowed += 1;
                            } else if key_bits == 16 {
                                handed_over += 1;
                            }
                        }
                    }
                }
            }
        }
        // The rules above reach well beyond each row's top token.
        assert!(picked.len() > rows * 20, "only {} distinct (row, token) picks", picked.len());
        // The windowed path answers most bf16 draws itself (the rest stop on the tied zeros' tiny bin).
        assert!(windowed > 20 * handed_over, "windowed {windowed}, handed to radix selection {handed_over}");
    }

    /// The windowed sampler's hand-overs: a selection stopping in the tiny bin (magnitudes below 2^-16) or below its
    /// window of values; radix selection still picks the sort path's token there.
    #[test]
    fn windowed_sampler_hands_over_the_tiny_bin_and_values_below_its_window() {
        let vocab = 400usize;
        // Tiny values (all of one mass at this temperature, but the bin mixes signs): the nucleus ends among them.
        let tiny: Vec<f32> = (0..vocab).map(|i| if i == 7 { 1.0 } else { [0.0, -0.0, 1e-6, -1e-7][i % 4] }).collect();
        // Values over ~60 binades each side: more than the window's 8,192 ranks below the largest.
        let wide: Vec<f32> = (0..vocab)
            .map(|i| {
                let v = 2f32.powf(-16.0 + 90.0 * uniform(3, i as u64));
                if i % 2 == 0 {
                    v
                } else {
                    -v
                }
            })
            .collect();
        for (name, logits, temperature, top_p) in [("tiny", &tiny, 1.0, 0.999), ("wide", &wide, 1e30, 0.999)] {
            let t = Tensor::from_slice(logits).view([1, vocab as i64]).to_kind(Kind::BFloat16);
            let host = Vec::<f32>::try_from(t.to_kind(Kind::Float).view([-1])).unwrap();
            let masses = Vec::<i64>::try_from(masses(&t, temperature).unwrap().view([-1])).unwrap();
            let rule = Sampling::from_params(temperature, Some(top_p), None).unwrap();
            let row_rule = RowRule { key_bits: 16, top_k: None, top_p: Some(top_p) };
            let mut handed_over = 0;
            for j in 0..50u64 {
                let u = uniform(17, j);
                let a = (u * TWO_24 as f32) as u32;
                let want = rule.sample_sorted(&t, &Tensor::from_slice(&[u])).unwrap().int64_value(&[0]);
                assert_eq!(pick(&host, &masses, row_rule, a) as i64, want, "{name} u {u}");
                match window_sampler::pick(&host, &masses, row_rule, a) {
                    Some(w) => assert_eq!(w as i64, want, "{name} windowed u {u}"),
                    None => handed_over += 1,
                }
            }
            // The nucleus (99.9% of the mass) ends in the tiny bin / below the window for every draw.
            assert_eq!(handed_over, 50, "{name}");
        }
    }
}
