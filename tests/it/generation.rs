//! The generator on tiny fixture models (CPU, f32): samples do not depend on what else is in the batch, seeds are
//! reproducible, and every stop rule (EOS list, stop string, max_tokens, max_model_len) and the prompt-length rule
//! behave as documented.

use stasc::generate::{
    generate, generate_ids, FinishReason, GenerateError, GenerateOptions, GenerationRequest, PromptInput,
    PromptOverflow, SampleOutput, Sampling, StopRules,
};
use stasc::model::{load_model, load_weights, CausalLm, LoadOptions};

use super::model_parity::fixture;

fn cpu() -> LoadOptions {
    LoadOptions { device: "cpu".parse().unwrap(), dtype: "f32".parse().unwrap(), max_model_len: None }
}

fn model(name: &str) -> CausalLm {
    load_weights(&fixture(name), &cpu()).unwrap()
}

fn prompt(id: u64, len: usize) -> PromptInput {
    PromptInput { id, token_ids: (0..len).map(|i| ((id as usize * 37 + i * 11) % 290 + 5) as u32).collect() }
}

fn sampled(prompts: Vec<PromptInput>, n: usize, seed: u64) -> GenerationRequest {
    GenerationRequest {
        prompts,
        n,
        sampling: Sampling::TopKThenTopP { temperature: 1.3, top_k: 50, top_p: 0.9 },
        max_tokens: 20,
        stop: StopRules { eos_token_ids: vec![2], ..StopRules::default() },
        seed,
        ..GenerationRequest::default()
    }
}

fn samples(m: &CausalLm, request: &GenerationRequest, options: &GenerateOptions) -> Vec<Vec<SampleOutput>> {
    generate_ids(m, request, options).unwrap().prompts.into_iter().map(|p| p.samples).collect()
}

#[test]
fn a_sample_is_the_same_alone_or_in_any_batch() {
    let m = model("qwen2_untied");
    let prompts: Vec<PromptInput> = (0..5).map(|i| prompt(100 + i, 3 + 4 * i as usize)).collect();
    let batched = samples(&m, &sampled(prompts.clone(), 3, 7), &GenerateOptions::default());
    // A batch of 2 rows forces refills and prompts whose samples are split over several prefills.
    let small = GenerateOptions { max_batch: 2, sync_every: 3, ..GenerateOptions::default() };
    assert_eq!(samples(&m, &sampled(prompts.clone(), 3, 7), &small), batched);
    for (i, p) in prompts.iter().enumerate() {
        let alone = samples(&m, &sampled(vec![p.clone()], 3, 7), &GenerateOptions::default());
        assert_eq!(alone[0], batched[i], "prompt {i} differs alone vs batched");
    }
    // Most samples run for a while (the comparison is not between empty outputs).
    assert!(batched.iter().flatten().filter(|s| s.token_ids.len() > 5).count() >= 10);
    // Samples of one prompt differ from each other (they have their own seeds).
    assert_ne!(batched[0][0].token_ids, batched[0][1].token_ids);
}

#[test]
fn prompts_with_their_own_sample_counts_get_the_samples_of_separate_calls() {
    let m = model("qwen2_untied");
    let prompts: Vec<PromptInput> = (0..5).map(|i| prompt(200 + i, 4 + 3 * i as usize)).collect();
    let counts = vec![3, 1, 1, 3, 2];
    let mixed = GenerationRequest { n_per_prompt: Some(counts.clone()), ..sampled(prompts.clone(), 1, 11) };
    // A batch of 3 rows: refills, and prompts of different counts sharing waves.
    let small = GenerateOptions { max_batch: 3, sync_every: 2, ..GenerateOptions::default() };
    let got = samples(&m, &mixed, &small);
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), counts);
    for (i, p) in prompts.iter().enumerate() {
        let alone = samples(&m, &sampled(vec![p.clone()], counts[i], 11), &GenerateOptions::default());
        assert_eq!(alone[0], got[i], "prompt {i}: {} samples in a mixed call vs alone", counts[i]);
    }
    // Counts that do not match the prompts, or a zero count, are refused.
    for bad in [vec![1, 2], vec![1, 1, 0, 1, 1]] {
        let request = GenerationRequest { n_per_prompt: Some(bad), ..mixed.clone() };
        assert!(matches!(generate_ids(&m, &request, &small), Err(GenerateError::InvalidRequest(_))));
    }
}

#[test]
fn batch_invariant_mode_keeps_every_shape_fixed_and_the_samples() {
    let m = model("qwen2_untied");
    let prompts: Vec<PromptInput> = (0..5).map(|i| prompt(200 + i, 3 + 5 * i as usize)).collect();
    // Fixed shapes: 4 rows decode whatever the work, every step attends to all 64 positions, prompts prefill alone.
    let fixed = GenerateOptions {
        max_batch: 4,
        max_model_len: Some(64),
        batch_invariant: true,
        sync_every: 3,
        ..GenerateOptions::default()
    };
    let batched = samples(&m, &sampled(prompts.clone(), 3, 11), &fixed);
    for (i, p) in prompts.iter().enumerate() {
        let alone = samples(&m, &sampled(vec![p.clone()], 3, 11), &fixed);
        assert_eq!(alone[0], batched[i], "prompt {i} differs alone vs batched");
    }
    // On the CPU the default mode is batch-invariant too, so both modes draw the same samples.
    let default = GenerateOptions { max_model_len: Some(64), ..GenerateOptions::default() };
    assert_eq!(samples(&m, &sampled(prompts, 3, 11), &default), batched);
    assert!(batched.iter().flatten().filter(|s| s.token_ids.len() > 5).count() >= 10);
}

#[test]
fn seeds_are_reproducible_and_matter() {
    let m = model("phi3");
    let prompts = vec![prompt(1, 6), prompt(2, 9)];
    let a = samples(&m, &sampled(prompts.clone(), 2, 42), &GenerateOptions::default());
    let b = samples(&m, &sampled(prompts.clone(), 2, 42), &GenerateOptions::default());
    let c = samples(&m, &sampled(prompts, 2, 43), &GenerateOptions::default());
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a[1][1].seed, stasc::generate::sample_seed(42, 2, 1));
}

fn greedy(prompts: Vec<PromptInput>, max_tokens: usize, stop: StopRules) -> GenerationRequest {
    GenerationRequest { prompts, n: 1, sampling: Sampling::Greedy, max_tokens, stop, seed: 0, ..Default::default() }
}

#[test]
fn eos_ids_max_tokens_and_max_model_len_end_samples() {
    let m = model("llama3_rope");
    let opts = GenerateOptions::default();
    let free = samples(&m, &greedy(vec![prompt(3, 8)], 30, StopRules::default()), &opts)[0][0].clone();
    assert_eq!(free.finish_reason, FinishReason::MaxTokens);
    assert_eq!(free.token_ids.len(), 30);
    // Any id of the EOS list ends the sample at its first occurrence, and is kept in the tokens.
    let (a, b) = (free.token_ids[12], free.token_ids[6]);
    let first = free.token_ids.iter().position(|t| *t == a || *t == b).unwrap();
    let stop = StopRules { eos_token_ids: vec![a, b], ..StopRules::default() };
    let ended = samples(&m, &greedy(vec![prompt(3, 8)], 30, stop.clone()), &opts)[0][0].clone();
    assert_eq!(ended.finish_reason, FinishReason::Eos);
    assert_eq!(ended.token_ids, free.token_ids[..=first].to_vec());
    let ignoring = StopRules { ignore_eos: true, ..stop };
    assert_eq!(samples(&m, &greedy(vec![prompt(3, 8)], 30, ignoring), &opts)[0][0], free);
    // The model length caps prompt + generation.
    let short = GenerateOptions { max_model_len: Some(8 + 5), ..GenerateOptions::default() };
    let capped = samples(&m, &greedy(vec![prompt(3, 8)], 30, StopRules::default()), &short)[0][0].clone();
    assert_eq!(capped.finish_reason, FinishReason::MaxModelLen);
    assert_eq!(capped.token_ids, free.token_ids[..5].to_vec());
}

#[test]
fn stop_strings_cut_the_text_before_them() {
    let loaded = load_model(&fixture("qwen2_tied"), &cpu()).unwrap();
    let tok = &loaded.tokenizer;
    let ids = tok.encode("Question: what is the capital", false).unwrap();
    let request = |stop_strings: Vec<String>| GenerationRequest {
        prompts: vec![PromptInput { id: 9, token_ids: ids.clone() }],
        max_tokens: 40,
        stop: StopRules { stop_strings, ignore_eos: true, ..StopRules::default() },
        ..Default::default()
    };
    let opts = GenerateOptions::default();
    let free = generate(&loaded.model, tok, &request(vec![]), &opts).unwrap().prompts[0].samples[0].clone();
    let text = free.text.clone();
    // A stop string made of a piece of the free-running text, starting after its first few characters.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 12, "text too short: {text:?}");
    let stop: String = chars[8..11].iter().collect();
    let cut = text.find(&stop).unwrap();
    let out = generate(&loaded.model, tok, &request(vec!["never appears \u{1F600}".into(), stop.clone()]), &opts)
        .unwrap()
        .prompts[0]
        .samples[0]
        .clone();
    assert_eq!(out.finish_reason, FinishReason::StopString(stop.clone()));
    assert_eq!(out.text, text[..cut]);
    // The tokens are the fewest whose text reaches the stop string.
    let kept = out.token_ids.len();
    assert_eq!(out.token_ids, free.token_ids[..kept].to_vec());
    assert!(tok.decode(&out.token_ids, true).unwrap().contains(&stop));
    assert!(!tok.decode(&out.token_ids[..kept - 1], true).unwrap().contains(&stop));
    // Without a tokenizer, stop strings are refused rather than ignored.
    let err = generate_ids(&loaded.model, &request(vec![stop]), &opts).unwrap_err();
    assert!(matches!(err, GenerateError::InvalidRequest(_)), "{err}");
}

#[test]
fn over_long_prompts_fail_or_are_truncated_as_asked() {
    let m = model("qwen2_tied");
    let opts = GenerateOptions { max_model_len: Some(16), ..GenerateOptions::default() };
    let long = prompt(5, 20);
    let err = generate_ids(&m, &greedy(vec![long.clone()], 4, StopRules::default()), &opts).unwrap_err();
    assert!(matches!(err, GenerateError::PromptTooLong { prompt_id: 5, tokens: 20, max_model_len: 16 }), "{err}");
    assert!(err.to_string().contains("prompt 5 has 20 tokens"), "{err}");
    let truncating = GenerationRequest {
        prompt_overflow: PromptOverflow::TruncateLeft,
        ..greedy(vec![long.clone()], 4, StopRules::default())
    };
    let out = generate_ids(&m, &truncating, &opts).unwrap();
    assert_eq!(out.prompts[0].truncated_tokens, 5);
    assert_eq!(out.prompts[0].prompt_tokens, 15);
    let tail = PromptInput { id: 5, token_ids: long.token_ids[5..].to_vec() };
    let direct = generate_ids(&m, &greedy(vec![tail], 4, StopRules::default()), &opts).unwrap();
    assert_eq!(out.prompts[0].samples, direct.prompts[0].samples);
    assert_eq!(out.prompts[0].samples[0].finish_reason, FinishReason::MaxModelLen);
}

#[test]
fn invalid_requests_are_refused() {
    let m = model("qwen2_tied");
    let opts = GenerateOptions::default();
    let zero_n = GenerationRequest { n: 0, ..greedy(vec![prompt(1, 3)], 4, StopRules::default()) };
    assert!(generate_ids(&m, &zero_n, &opts).unwrap_err().to_string().contains("n (samples per prompt)"));
    let bad_id = greedy(vec![PromptInput { id: 4, token_ids: vec![1, 300] }], 4, StopRules::default());
    let msg = generate_ids(&m, &bad_id, &opts).unwrap_err().to_string();
    assert!(msg.contains("prompt 4 holds token id 300"), "{msg}");
}

#[test]
fn fused_projections_give_the_same_samples() {
    for name in ["qwen2_untied", "llama3_rope"] {
        let m = model(name);
        let request = sampled(vec![prompt(1, 6), prompt(2, 11)], 2, 5);
        let plain = GenerateOptions { fuse_projections: false, ..GenerateOptions::default() };
        let fused = GenerateOptions { fuse_projections: true, ..GenerateOptions::default() };
        assert_eq!(samples(&m, &request, &fused), samples(&m, &request, &plain), "{name}");
    }
}

/// The first (prompt, sample, token) where two runs differ, if any.
fn first_difference(a: &[Vec<SampleOutput>], b: &[Vec<SampleOutput>]) -> Option<(usize, usize, usize)> {
    for (p, (x, y)) in a.iter().zip(b).enumerate() {
        for (s, (u, v)) in x.iter().zip(y).enumerate() {
            if u != v {
                let t = u.token_ids.iter().zip(&v.token_ids).take_while(|(i, j)| i == j).count();
                return Some((p, s, t));
            }
        }
    }
    None
}

/// On a CUDA machine: decode steps replayed from CUDA graphs give the same samples as eager steps with the same
/// batch. (Skipped where no CUDA device is present.)
#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn cuda_graphs_give_the_same_samples_as_eager_steps() {
    let opts = LoadOptions { device: "cuda".parse().unwrap(), dtype: "f32".parse().unwrap(), max_model_len: None };
    for name in ["qwen2_untied", "phi3", "llama3_rope"] {
        let m = load_weights(&fixture(name), &opts).unwrap();
        let mut request = sampled((0..6).map(|i| prompt(i, 5 + 3 * i as usize)).collect(), 3, 11);
        request.max_tokens = 150; // crosses graph bucket boundaries (64 positions)
        let base = GenerateOptions { max_batch: 7, cuda_graph_bucket: 64, ..GenerateOptions::for_device(m.device()) };
        let eager = GenerateOptions { cuda_graphs: false, ..base.clone() };
        let with_graphs = generate_ids(&m, &request, &base).unwrap();
        assert!(with_graphs.stats.cuda_graphs >= 2, "{name}: {:?}", with_graphs.stats);
        let got: Vec<_> = with_graphs.prompts.into_iter().map(|p| p.samples).collect();
        let want = samples(&m, &request, &eager);
        let whole = GenerateOptions { cuda_graphs: false, ..GenerateOptions::for_device(m.device()) };
        let whole_batch = samples(&m, &request, &whole);
        println!(
            "CUDA graphs {name}: graphs vs eager first difference {:?}; 7-row vs 18-row eager batches {:?}",
            first_difference(&got, &want),
            first_difference(&want, &whole_batch)
        );
        assert_eq!(got, want, "{name}");
    }
}

/// Runs the stasc binary with `args`, checks it succeeded, and returns its stdout and stderr.
pub(crate) fn stasc(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stasc")).args(args).output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "stasc {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

#[test]
fn generate_command_prints_templated_completions() {
    let dir = fixture("qwen2_tied");
    let dir = dir.to_str().unwrap();
    let args = ["generate", "--model", dir, "--prompt", "hi", "--n", "2", "--temperature", "0.9", "--max-tokens", "6"];
    let (stdout, _) = stasc(&[&args[..], &["--device", "cpu", "--json", "--seed", "3"]].concat());
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    // The same request through the library: the prompt wrapped by the chat template, seeds from (3, 0, sample).
    let loaded = load_model(&fixture("qwen2_tied"), &cpu()).unwrap();
    let messages = [stasc::prompt::ChatMessage::new("user", "hi")];
    let request = GenerationRequest {
        prompts: vec![PromptInput { id: 0, token_ids: loaded.tokenizer.encode_chat(&messages, true).unwrap() }],
        n: 2,
        sampling: Sampling::Temperature { temperature: 0.9 },
        max_tokens: 6,
        stop: StopRules { eos_token_ids: loaded.tokenizer.eos_token_ids().to_vec(), ..StopRules::default() },
        seed: 3,
        ..Default::default()
    };
    let out = generate(&loaded.model, &loaded.tokenizer, &request, &GenerateOptions::default()).unwrap();
    for (line, sample) in lines.iter().zip(&out.prompts[0].samples) {
        assert_eq!(line["text"], sample.text.as_str());
        assert_eq!(line["seed"], sample.seed);
        assert_eq!(line["finish_reason"], sample.finish_reason.to_string().as_str());
    }
}

#[test]
fn bench_generate_prints_the_baseline_format() {
    let config = fixture("phi3").join("config.json");
    let args = ["bench", "generate", "--config-json", config.to_str().unwrap(), "--batch", "3", "--prompt-len", "5"];
    let (stdout, _) = stasc(&[&args[..], &["--new-tokens", "4", "--device", "cpu"]].concat());
    let line = regex::Regex::new(r"^stasc generate bs=3 prompt=5 new=4: \d+ tok/s \(\d+\.\d+s\)$").unwrap();
    assert!(line.is_match(stdout.trim()), "{stdout}");
}

#[test]
fn bench_generate_trace_saves_a_kineto_chrome_trace_of_the_timed_run() {
    // libtorch's profiler through the C++ shim; on the CPU the trace holds the ATen ops (a GPU adds its kernels).
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    let config = fixture("phi3").join("config.json");
    let args = ["bench", "generate", "--config-json", config.to_str().unwrap(), "--batch", "2", "--prompt-len", "5"];
    let rest = ["--new-tokens", "3", "--device", "cpu", "--trace", trace.to_str().unwrap()];
    let (stdout, _) = stasc(&[&args[..], &rest[..]].concat());
    assert!(stdout.contains("stasc generate bs=2 prompt=5 new=3"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().expect("a Chrome trace");
    let ops: Vec<&str> = events.iter().filter(|e| e["cat"] == "cpu_op").filter_map(|e| e["name"].as_str()).collect();
    assert!(ops.iter().any(|n| n.starts_with("aten::")), "no ATen ops among {} events", events.len());
}
