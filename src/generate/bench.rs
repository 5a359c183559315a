//! The generation benchmark behind `stasc bench generate`: a batch of random prompts of a fixed length, every sample
//! decoding exactly `new_tokens` tokens (EOS ignored, like HF's `min_new_tokens`), after a short warm-up run, timed
//! end to end (prefill included) the way scripts/bench/hf_baseline.py times HF generate.

use super::request::{GenerateOptions, GenerationRequest, GenerationStats, PromptInput, StopRules};
use super::sampling::{splitmix64, Sampling};
use super::{generate_ids, GenerateError};
use crate::model::CausalLm;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSpec {
    /// Prompts decoded together.
    pub batch: usize,
    /// Tokens per prompt.
    pub prompt_len: usize,
    /// Leading tokens every prompt has in common (a STaSC phase's instruction and few-shot messages), prefilled
    /// once and shared by the rows (0: every prompt is random throughout).
    pub shared_prefix: usize,
    /// Tokens generated per prompt.
    pub new_tokens: usize,
    /// Sampling rule (HF baseline: temperature 0.6, top_p 0.9).
    pub sampling: Sampling,
    /// Seed of the prompts and samples.
    pub seed: u64,
    /// Run a small untimed batch first (CUDA context, kernels, allocator).
    pub warmup: bool,
    /// Record the timed run with libtorch's Kineto profiler and save the Chrome trace here.
    pub trace: Option<std::path::PathBuf>,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Counters of the timed run.
    pub stats: GenerationStats,
    /// Bytes of the model's weights.
    pub weight_bytes: i64,
    /// Bytes of the KV cache the timed run allocated.
    pub cache_bytes: i64,
}

/// Random prompt ids in [100, vocab) (or [0, vocab) for tiny vocabularies), a pure function of the seed; the first
/// `shared` tokens of every prompt are prompt 0's.
fn random_prompts(batch: usize, len: usize, shared: usize, vocab: u64, seed: u64) -> Vec<PromptInput> {
    let low = if vocab > 200 { 100 } else { 0 };
    (0..batch as u64)
        .map(|id| {
            let token_ids = (0..len as u64)
                .map(|j| {
                    let source = if (j as usize) < shared { 0 } else { id };
                    (low + splitmix64(seed ^ splitmix64(source ^ (j << 32))) % (vocab - low)) as u32
                })
                .collect();
            PromptInput { id, token_ids }
        })
        .collect()
}

fn request(spec: &BenchSpec, batch: usize, prompt_len: usize, new_tokens: usize, vocab: u64) -> GenerationRequest {
    GenerationRequest {
        prompts: random_prompts(batch, prompt_len, spec.shared_prefix.min(prompt_len), vocab, spec.seed),
        n: 1,
        sampling: spec.sampling,
        max_tokens: new_tokens,
        stop: StopRules { ignore_eos: true, ..StopRules::default() },
        seed: spec.seed,
        ..GenerationRequest::default()
    }
}

/// Runs the benchmark: all `batch` prompts in one batch (the cache is sized for them), warm-up first if asked.
pub fn bench_generate(
    model: &CausalLm,
    spec: &BenchSpec,
    options: &GenerateOptions,
) -> Result<BenchReport, GenerateError> {
    if spec.batch == 0 || spec.prompt_len == 0 || spec.new_tokens == 0 {
        return Err(GenerateError::InvalidRequest("batch, prompt length and new tokens must be at least 1".into()));
    }
    let vocab = model.config().vocab_size as u64;
    if spec.shared_prefix >= spec.prompt_len {
        return Err(GenerateError::InvalidRequest(format!(
            "the shared prefix ({}) must be shorter than the prompts ({})",
            spec.shared_prefix, spec.prompt_len
        )));
    }
    let shared_prefix_min_tokens = if spec.shared_prefix > 0 { Some(1) } else { options.shared_prefix_min_tokens };
    let options = GenerateOptions {
        max_batch: spec.batch,
        max_cache_bytes: i64::MAX,
        shared_prefix_min_tokens,
        ..options.clone()
    };
    if spec.warmup {
        let warm = request(spec, spec.batch, spec.prompt_len.min(16), spec.new_tokens.min(8), vocab);
        generate_ids(model, &warm, &options)?;
    }
    let timed = request(spec, spec.batch, spec.prompt_len, spec.new_tokens, vocab);
    let out = crate::ffi::profiled(spec.trace.as_deref(), || generate_ids(model, &timed, &options))
        .map_err(|e| GenerateError::InvalidRequest(format!("--trace: {e}")))??;
    let weight_bytes =
        model.named_weights().values().map(|t| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64).sum();
    let cfg = model.config();
    let cache_len = (spec.prompt_len + spec.new_tokens).min(model.max_model_len() as usize) as i64;
    let cache_bytes = 2
        * cfg.num_hidden_layers
        * cfg.num_key_value_heads
        * cfg.head_dim
        * cache_len
        * spec.batch as i64
        * model.kind().elt_size_in_bytes() as i64;
    Ok(BenchReport { stats: out.stats, weight_bytes, cache_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_deterministic_and_in_range() {
        let a = random_prompts(3, 5, 0, 1000, 9);
        assert_eq!(a, random_prompts(3, 5, 0, 1000, 9));
        assert_ne!(a, random_prompts(3, 5, 0, 1000, 10));
        assert!(a.iter().flat_map(|p| &p.token_ids).all(|&t| (100..1000).contains(&t)));
        assert_ne!(a[1].token_ids[..2], a[0].token_ids[..2]);
        // A shared prefix: prompt 0's first tokens in every prompt, the rest each prompt's own.
        let b = random_prompts(3, 5, 3, 1000, 9);
        assert_eq!(b[0], a[0]);
        for p in &b[1..] {
            assert_eq!(p.token_ids[..3], a[0].token_ids[..3]);
        }
        assert_eq!(b[2].token_ids[3..], a[2].token_ids[3..]);
    }
}
