//! Batched sampling from a `CausalLm`: many prompts with n samples each, a preallocated KV cache owned here (rows
//! refilled as samples finish, prompts prefilled once and forked into their samples' rows), sampling rules with
//! per-sample seeds, and stop rules (EOS ids, stop strings, max_tokens, max_model_len). No rewards, no files.
//! On CUDA, separate projections run fused, decode steps are replayed as CUDA graphs (see `GenerateOptions`), and
//! the model and the sampler use the fused kernels of crate::kernels (`STASC_FUSED_KERNELS=0` turns them off).
//!
//! Determinism: a sample's seed is `sample_seed(run seed, prompt id, sample index)` and its k-th token uses draw k of
//! that seed's SplitMix64 stream, so the randomness never depends on batch composition. The logits can: matrix
//! kernels may round differently for different batch sizes. On the CPU our tests find samples identical alone and in
//! any batch; on CUDA a late token can flip where a draw falls within rounding of a CDF boundary (seen once in 2,700
//! f32 draws). The same seed, inputs, batch limit and device always give the same samples. With
//! `GenerateOptions::batch_invariant` every shape is fixed, and a sample does not depend on its batch on CUDA either
//! (all 256 samples of a sharded 2-GPU run matched the one-GPU run; see scripts/multi_gpu/results/).

pub mod bench;
pub mod budget;
pub(crate) mod cuda_graph;
mod decode;
mod engine;
mod prefill;
mod progress;
pub mod request;
pub mod sampling;
pub mod sort_free;
pub mod window_sampler;

pub use engine::set_launch_ahead;
pub use request::{
    Completion, FinishReason, GenerateOptions, Generated, GenerationRequest, GenerationStats, PromptInput,
    PromptOutput, PromptOverflow, SampleOutput, StopRules,
};
pub use sampling::{sample_seed, Sampling};

use crate::model::{CausalLm, ModelError, Tokenizer};

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The request is inconsistent (n = 0, bad sampling parameters, ...).
    #[error("invalid generation request: {0}")]
    InvalidRequest(String),
    /// A prompt leaves no room for a generated token and truncation is off.
    #[error(
        "prompt {prompt_id} has {tokens} tokens but max_model_len is {max_model_len} (room for {} prompt tokens \
         plus one generated); shorten it, raise max_model_len, or allow left truncation",
        max_model_len - 1
    )]
    PromptTooLong {
        /// The prompt's id.
        prompt_id: u64,
        /// Its length in tokens.
        tokens: usize,
        /// The limit in force.
        max_model_len: usize,
    },
    /// The model or tokenizer failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Generates token ids for every prompt of `request` (no tokenizer: stop strings are not allowed).
pub fn generate_ids(
    model: &CausalLm,
    request: &GenerationRequest,
    options: &GenerateOptions,
) -> Result<Generated<SampleOutput>, GenerateError> {
    engine::run(model, request, options, None)
}

/// Generates completions with text for every prompt of `request`; stop strings are checked on the decoded text.
pub fn generate(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    request: &GenerationRequest,
    options: &GenerateOptions,
) -> Result<Generated<Completion>, GenerateError> {
    let stops = &request.stop.stop_strings;
    let check = |tokens: &[u32], checked: usize| -> Result<Option<(usize, String)>, GenerateError> {
        let earliest = |text: &str| {
            stops.iter().filter_map(|s| text.find(s.as_str()).map(|i| (i, s.clone()))).min_by_key(|(i, _)| *i)
        };
        if earliest(&tokenizer.decode(tokens, true)?).is_none() {
            return Ok(None);
        }
        // The fewest tokens whose text reaches a stop string.
        for keep in (checked + 1)..=tokens.len() {
            if let Some((_, stop)) = earliest(&tokenizer.decode(&tokens[..keep], true)?) {
                return Ok(Some((keep, stop)));
            }
        }
        Ok(None)
    };
    let generated = engine::run(model, request, options, Some(&check))?;
    let mut prompts = Vec::with_capacity(generated.prompts.len());
    for p in generated.prompts {
        let mut samples = Vec::with_capacity(p.samples.len());
        for s in p.samples {
            let mut text = tokenizer.decode(&s.token_ids, true)?;
            if let FinishReason::StopString(stop) = &s.finish_reason {
                if let Some(i) = text.find(stop.as_str()) {
                    text.truncate(i);
                }
            }
            samples.push(Completion { text, token_ids: s.token_ids, finish_reason: s.finish_reason, seed: s.seed });
        }
        prompts.push(PromptOutput {
            prompt_id: p.prompt_id,
            prompt_tokens: p.prompt_tokens,
            truncated_tokens: p.truncated_tokens,
            samples,
        });
    }
    Ok(Generated { prompts, stats: generated.stats })
}
