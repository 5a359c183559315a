//! The reserved KV pool on a tiny fixture model (CPU, f32): generate calls of different shapes lease their caches
//! from the same memory and give the samples they give without a pool, and a pool too small for the batch limits
//! the rows, as a smaller batch would.

use stasc::generate::{generate_ids, GenerateOptions, GenerationRequest, PromptInput, Sampling, StopRules};
use stasc::model::{load_weights, CausalLm, LoadOptions};

use super::model_parity::fixture;

fn model() -> CausalLm {
    let cpu = LoadOptions { device: "cpu".parse().unwrap(), dtype: "f32".parse().unwrap(), max_model_len: None };
    load_weights(&fixture("qwen2_untied"), &cpu).unwrap()
}

fn request(prompts: usize, len: usize) -> GenerationRequest {
    GenerationRequest {
        prompts: (0..prompts as u64)
            .map(|id| PromptInput {
                id,
                token_ids: (0..len + id as usize).map(|i| ((id as usize * 41 + i * 17) % 270 + 9) as u32).collect(),
            })
            .collect(),
        n: 2,
        sampling: Sampling::TopKThenTopP { temperature: 1.2, top_k: 50, top_p: 0.9 },
        max_tokens: 12,
        stop: StopRules { eos_token_ids: vec![2], ..StopRules::default() },
        seed: 5,
        ..Default::default()
    }
}

#[test]
fn calls_of_any_shape_reuse_the_pool_and_keep_their_samples() {
    let plain = model();
    let pooled = model();
    let bytes = pooled.reserve_kv_pool(4096).unwrap();
    assert_eq!(bytes, 4096 * pooled.kv_bytes_per_position());
    let options = GenerateOptions::default();
    for (prompts, len) in [(3, 10), (6, 25), (2, 4)] {
        let req = request(prompts, len);
        let a = generate_ids(&plain, &req, &options).unwrap();
        let b = generate_ids(&pooled, &req, &options).unwrap();
        assert_eq!(a.prompts, b.prompts, "{prompts} prompts of {len}+ tokens");
        assert_eq!(pooled.kv_pool_positions(), Some(4096));
    }
    // A cache leased and still alive is not lent twice: the second one is allocated.
    let first = pooled.new_cache(4, 100).unwrap();
    let second = pooled.new_cache(4, 100).unwrap();
    assert_eq!((first.rows(), second.rows()), (4, 4));
}

#[test]
fn a_small_pool_limits_the_rows_like_a_small_batch() {
    let req = request(5, 8);
    // Caches of this call are 8 + 4 + 12 = 24 positions long: a pool of 50 holds two rows.
    let pooled = model();
    pooled.reserve_kv_pool(50).unwrap();
    let limited = generate_ids(&pooled, &req, &GenerateOptions::default()).unwrap();
    let two_rows = GenerateOptions { max_batch: 2, ..GenerateOptions::default() };
    let expected = generate_ids(&model(), &req, &two_rows).unwrap();
    assert_eq!(limited.prompts, expected.prompts);
    // The decode steps show the batch: two rows take many more steps than ten rows would.
    let wide = generate_ids(&model(), &req, &GenerateOptions::default()).unwrap();
    assert_eq!(limited.stats.decode_steps, expected.stats.decode_steps);
    assert!(limited.stats.decode_steps > 2 * wide.stats.decode_steps);
}
