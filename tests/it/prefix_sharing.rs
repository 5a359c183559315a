//! Shared-prefix prefill on tiny fixture models (CPU, f32): prompts that start alike, as every prompt of a STaSC
//! phase does (instruction and few-shot messages), give the same samples token for token whether their common
//! prefix is prefilled once and copied or every prompt is prefilled whole; greedy and sampled, with refills, with
//! separate and fused projections; and the prefill tokens saved are counted.

use stasc::generate::{generate_ids, GenerateOptions, GenerationRequest, PromptInput, Sampling, StopRules};
use stasc::model::{load_weights, CausalLm, LoadOptions};

use super::model_parity::fixture;

fn model(name: &str) -> CausalLm {
    let cpu = LoadOptions { device: "cpu".parse().unwrap(), dtype: "f32".parse().unwrap(), max_model_len: None };
    load_weights(&fixture(name), &cpu).unwrap()
}

/// Five prompts: a 40-token common prefix, then 1 to 25 tokens of their own (one differing in its first token).
fn prompts() -> Vec<PromptInput> {
    let prefix: Vec<u32> = (0..40).map(|i| (i * 7 % 250 + 5) as u32).collect();
    (0..5u64)
        .map(|id| {
            let own = (0..1 + 6 * id as usize).map(|i| ((id as usize * 31 + i * 13) % 280 + 7) as u32);
            PromptInput { id, token_ids: prefix.iter().copied().chain(own).collect() }
        })
        .collect()
}

fn request(sampling: Sampling, n: usize) -> GenerationRequest {
    GenerationRequest {
        prompts: prompts(),
        n,
        sampling,
        max_tokens: 16,
        stop: StopRules { eos_token_ids: vec![2], ..StopRules::default() },
        seed: 11,
        ..GenerationRequest::default()
    }
}

fn shared(min_tokens: Option<usize>, base: &GenerateOptions) -> GenerateOptions {
    GenerateOptions { shared_prefix_min_tokens: min_tokens, ..base.clone() }
}

#[test]
fn sharing_the_prefix_gives_the_same_samples_greedy_and_sampled() {
    let sampled = Sampling::TopKThenTopP { temperature: 1.3, top_k: 50, top_p: 0.9 };
    for name in ["qwen2_untied", "phi3"] {
        let m = model(name);
        for (sampling, n) in [(Sampling::Greedy, 1), (sampled, 3)] {
            // A batch of 2 rows forces refills and prompts whose samples are split over several prefills.
            for base in [GenerateOptions::default(), GenerateOptions { max_batch: 2, ..GenerateOptions::default() }] {
                let req = request(sampling, n);
                let whole = generate_ids(&m, &req, &shared(None, &base)).unwrap();
                let with = generate_ids(&m, &req, &shared(Some(8), &base)).unwrap();
                assert_eq!(whole.stats.prefill_tokens_reused, 0);
                assert_eq!(with.stats.shared_prefix_tokens, 40, "{name}");
                // Every prefill of a prompt reuses the 40 prefix tokens instead of running them.
                let prefills = whole.stats.prefill_tokens - with.stats.prefill_tokens + 40;
                assert_eq!(with.stats.prefill_tokens_reused, prefills, "{name}");
                assert!(prefills >= 5 * 40);
                for (a, b) in whole.prompts.iter().zip(&with.prompts) {
                    assert_eq!(
                        a.samples, b.samples,
                        "{name} {sampling:?} batch {}: prompt {}",
                        base.max_batch, a.prompt_id
                    );
                }
                // The comparison is between real continuations, not empty outputs.
                assert!(with.prompts.iter().flat_map(|p| &p.samples).all(|s| s.token_ids.len() > 3));
            }
        }
    }
}

#[test]
fn fused_projections_share_the_prefix_too() {
    let m = model("qwen2_tied");
    let req = request(Sampling::TopKThenTopP { temperature: 1.0, top_k: 40, top_p: 0.95 }, 2);
    let base = GenerateOptions { fuse_projections: true, ..GenerateOptions::default() };
    let whole = generate_ids(&m, &req, &shared(None, &base)).unwrap();
    let with = generate_ids(&m, &req, &shared(Some(8), &base)).unwrap();
    assert_eq!(whole.prompts, with.prompts);
    assert_eq!(with.stats.prefill_tokens_reused, 5 * 40);
}

#[test]
fn short_or_unshared_prefixes_and_batch_invariant_runs_prefill_whole() {
    let m = model("qwen2_untied");
    let req = request(Sampling::Greedy, 1);
    // 40 common tokens are fewer than asked for.
    let out = generate_ids(&m, &req, &shared(Some(41), &GenerateOptions::default())).unwrap();
    assert_eq!((out.stats.shared_prefix_tokens, out.stats.prefill_tokens_reused), (0, 0));
    // Batch-invariant shapes never depend on the other prompts of the call.
    let fixed = GenerateOptions { batch_invariant: true, max_model_len: Some(80), ..GenerateOptions::default() };
    let out = generate_ids(&m, &req, &shared(Some(8), &fixed)).unwrap();
    assert_eq!(out.stats.prefill_tokens_reused, 0);
    // One prompt alone has nothing to share.
    let one = GenerationRequest { prompts: prompts()[..1].to_vec(), ..req.clone() };
    let out = generate_ids(&m, &one, &shared(Some(8), &GenerateOptions::default())).unwrap();
    assert_eq!(out.stats.prefill_tokens_reused, 0);
}
