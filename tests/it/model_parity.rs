//! Parity of stasc's model engine with HF transformers on tiny random checkpoints (tests/fixtures/tiny_models, made
//! by scripts/parity/make_tiny_models.py): logits within 1e-4 in f32 on the CPU, identical greedy continuations,
//! sharded loading, and the loader's errors. `STASC_PARITY_DIR` points the same checks at another directory of
//! models and references (e.g. one written on the GPU by scripts/parity/gpu_parity.py).

use std::path::{Path, PathBuf};

use stasc::generate::{generate_ids, GenerateOptions, GenerationRequest, PromptInput, Sampling, StopRules};
use stasc::model::{load_model, load_weights, CausalLm, LoadOptions, ModelError, Pass};
use tch::{Kind, Tensor};

pub const TINY_MODELS: [&str; 4] = ["qwen2_tied", "qwen2_untied", "llama3_rope", "phi3"];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_models").join(name)
}

fn cpu_f32() -> LoadOptions {
    LoadOptions { device: "cpu".parse().unwrap(), dtype: "f32".parse().unwrap(), max_model_len: None }
}

/// The reference tensors HF wrote for a model.
fn reference(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs().max().double_value(&[])
}

fn logits_of(model: &CausalLm, ids: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward_logits(ids).unwrap())
}

#[test]
fn logits_match_transformers_within_1e4() {
    for name in TINY_MODELS {
        let dir = fixture(name);
        let model = load_weights(&dir, &cpu_f32()).unwrap();
        let refs = reference(&dir);
        let diff = max_abs_diff(&logits_of(&model, &refs["input_ids"]), &refs["logits"]);
        assert!(diff < 1e-4, "{name}: max |logits - HF| = {diff}");
    }
}

#[test]
fn tied_embeddings_are_detected_from_the_checkpoint() {
    assert!(load_weights(&fixture("qwen2_tied"), &cpu_f32()).unwrap().tied_embeddings());
    let untied = load_weights(&fixture("qwen2_untied"), &cpu_f32()).unwrap();
    assert!(!untied.tied_embeddings());
    assert!(untied.named_weights().contains_key("lm_head.weight"));
    assert!(untied.named_weights().contains_key("model.layers.1.self_attn.q_proj.bias"));
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let sharded = load_weights(&fixture("qwen2_sharded"), &cpu_f32()).unwrap();
    let single = load_weights(&fixture("qwen2_untied"), &cpu_f32()).unwrap();
    let refs = reference(&fixture("qwen2_sharded"));
    let diff = max_abs_diff(&logits_of(&sharded, &refs["input_ids"]), &logits_of(&single, &refs["input_ids"]));
    assert_eq!(diff, 0.0);
}

#[test]
fn right_padded_rows_match_unpadded_rows() {
    let model = load_weights(&fixture("llama3_rope"), &cpu_f32()).unwrap();
    let ids = reference(&fixture("llama3_rope"))["input_ids"].shallow_clone();
    let short = ids.narrow(0, 1, 1).narrow(1, 0, 9);
    let padded = Tensor::cat(&[&short, &Tensor::zeros([1, 7], (Kind::Int64, tch::Device::Cpu))], 1);
    let batch = Tensor::cat(&[&ids.narrow(0, 0, 1), &padded], 0);
    let batched = logits_of(&model, &batch).narrow(0, 1, 1).narrow(1, 0, 9);
    assert!(max_abs_diff(&batched, &logits_of(&model, &short)) < 1e-5);
}

#[test]
fn cached_prefill_and_decode_match_the_full_pass() {
    for name in TINY_MODELS {
        let model = load_weights(&fixture(name), &cpu_f32()).unwrap();
        let ids = reference(&fixture(name))["input_ids"].shallow_clone();
        let full = logits_of(&model, &ids);
        tch::no_grad(|| {
            let mut cache = model.new_cache(2, 32).unwrap();
            let rows = Tensor::from_slice(&[1i64, 0]);
            let prompt = ids.narrow(1, 0, 10);
            let positions = Tensor::arange(10, (Kind::Int64, tch::Device::Cpu)).expand([2, 10], false);
            let pass = Pass::Prefill { cache: &mut cache, rows: &rows };
            let hidden = model.forward(&prompt, &positions, pass).unwrap();
            let prefill = model.logits(&hidden).unwrap();
            assert!(max_abs_diff(&prefill, &full.narrow(1, 0, 10)) < 1e-4, "{name}: prefill");
            // Cache rows are swapped relative to the input rows: decode feeds row order.
            let swapped = Tensor::from_slice(&[1i64, 0]);
            for step in 10..16 {
                let token = ids.narrow(1, step, 1).index_select(0, &swapped);
                let pos = Tensor::full([2, 1], step, (Kind::Int64, tch::Device::Cpu));
                let hidden = model
                    .forward(&token, &pos, Pass::Decode { cache: &mut cache, attend_len: step + 1, shared: None })
                    .unwrap();
                let logits = model.logits(&hidden).unwrap().index_select(0, &swapped);
                let diff = max_abs_diff(&logits, &full.narrow(1, step, 1));
                assert!(diff < 1e-4, "{name}: decode step {step}: {diff}");
            }
        });
    }
}

/// Copies a fixture model into a temp dir so a test can damage it.
fn scratch_copy(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    tmp
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_listed_in_one_error() {
    let tmp = scratch_copy("qwen2_tied");
    let file = tmp.path().join("model.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&file)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "model.layers.1.mlp.up_proj.weight")
        .collect();
    tensors.push(("model.layers.0.self_attn.extra.weight".into(), Tensor::zeros([2], (Kind::Float, tch::Device::Cpu))));
    for (name, t) in tensors.iter_mut() {
        if name == "model.norm.weight" {
            *t = Tensor::ones([63], (Kind::Float, tch::Device::Cpu));
        }
    }
    Tensor::write_safetensors(&tensors, &file).unwrap();
    let err = load_weights(tmp.path(), &cpu_f32()).unwrap_err();
    assert!(matches!(err, ModelError::TensorMismatch { .. }));
    let msg = err.to_string();
    assert!(msg.contains("missing 1: model.layers.1.mlp.up_proj.weight"), "{msg}");
    assert!(msg.contains("unexpected 1: model.layers.0.self_attn.extra.weight"), "{msg}");
    assert!(msg.contains("model.norm.weight (expected [64], found [63])"), "{msg}");
}

#[test]
fn unsupported_architecture_is_named_with_the_supported_list() {
    let tmp = scratch_copy("phi3");
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    std::fs::write(tmp.path().join("config.json"), cfg.replace("Phi3ForCausalLM", "MixtralForCausalLM")).unwrap();
    let msg = load_weights(tmp.path(), &cpu_f32()).unwrap_err().to_string();
    assert!(msg.contains("unsupported architecture `MixtralForCausalLM`"), "{msg}");
    assert!(msg.contains("Qwen2ForCausalLM, LlamaForCausalLM, Phi3ForCausalLM"), "{msg}");
}

#[test]
fn full_model_directory_loads_tokenizer_eos_and_chat_template() {
    let loaded = load_model(&fixture("qwen2_tied"), &cpu_f32()).unwrap();
    // generation_config.json says [2, 0]; tokenizer_config.json's eos_token <|im_end|> is id 2 already.
    assert_eq!(loaded.tokenizer.eos_token_ids(), &[2, 0]);
    let text = "The capital of France is Paris.";
    let ids = loaded.tokenizer.encode(text, false).unwrap();
    assert_eq!(loaded.tokenizer.decode(&ids, false).unwrap(), text);
    let messages = [stasc::prompt::ChatMessage::new("user", "hi")];
    let rendered = loaded.tokenizer.apply_chat_template(&messages, true).unwrap();
    assert_eq!(rendered, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

/// Greedy continuation through the generator (cached prefill + decode) against HF generate's.
fn greedy_matches(dir: &Path, opts: &LoadOptions) -> (bool, Vec<u32>, Vec<u32>) {
    let model = load_weights(dir, opts).unwrap();
    let refs = reference(dir);
    let to_u32 = |t: &Tensor| Vec::<i64>::try_from(t).unwrap().into_iter().map(|v| v as u32).collect::<Vec<_>>();
    let prompt = to_u32(&refs["greedy_prompt"]);
    let want = to_u32(&refs["greedy_tokens"]);
    let request = GenerationRequest {
        prompts: vec![PromptInput { id: 0, token_ids: prompt }],
        n: 1,
        sampling: Sampling::Greedy,
        max_tokens: want.len(),
        stop: StopRules { ignore_eos: true, ..StopRules::default() },
        seed: 0,
        ..GenerationRequest::default()
    };
    let out = generate_ids(&model, &request, &GenerateOptions::for_device(model.device())).unwrap();
    let got = out.prompts[0].samples[0].token_ids.clone();
    (got == want, got, want)
}

#[test]
fn greedy_continuations_match_transformers_generate() {
    for name in TINY_MODELS {
        let (same, got, want) = greedy_matches(&fixture(name), &cpu_f32());
        assert!(same, "{name}: greedy continuation differs\n stasc {got:?}\n HF    {want:?}");
    }
}

/// Runs the parity checks on every model under `STASC_PARITY_DIR` (written by scripts/parity/gpu_parity.py) on
/// `STASC_PARITY_DEVICE` (default cuda) in the dtype of each reference.json, and prints max |diff| and greedy
/// agreement per model. Logits must agree within the reference's `logits_tolerance` (1e-4 in f32; measured for bf16)
/// and the greedy continuation must match on its first `greedy_decidable_tokens` tokens (all of them in f32).
#[test]
fn parity_dir_from_env() {
    let Ok(root) = std::env::var("STASC_PARITY_DIR") else { return };
    let device = std::env::var("STASC_PARITY_DEVICE").unwrap_or_else(|_| "cuda".into());
    let mut failures = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs.into_iter().filter(|d| d.join("reference.json").is_file()) {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        let dtype = if meta["dtype"].as_str() == Some("bfloat16") { "bf16" } else { "f32" };
        let tolerance = meta["logits_tolerance"].as_f64().unwrap_or(1e-4);
        let opts =
            LoadOptions { device: device.parse().unwrap(), dtype: dtype.parse().unwrap(), max_model_len: Some(512) };
        let model = load_weights(&dir, &opts).unwrap();
        let refs = reference(&dir);
        let ids = refs["input_ids"].to_device(model.device());
        let ours = logits_of(&model, &ids).to_device(tch::Device::Cpu);
        let diff = max_abs_diff(&ours, &refs["logits"]);
        let vs_f32 = refs.get("logits_f32").map(|f32_logits| {
            format!(
                ", vs f32: stasc {:.3e}, HF {:.3e}",
                max_abs_diff(&ours, f32_logits),
                max_abs_diff(&refs["logits"], f32_logits)
            )
        });
        drop(model);
        let (_, got, want) = greedy_matches(&dir, &opts);
        let decidable = meta["greedy_decidable_tokens"].as_u64().map_or(want.len(), |n| n as usize);
        let agree = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        let same = agree >= decidable;
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        println!(
            "PARITY {name} {dtype} on {device}: max|logits - HF| = {diff:.3e} (tolerance {tolerance:.1e}{}); greedy: \
             first {agree}/{} tokens identical (must: {decidable}; HF min top-2 margin {:.2e}) -> {}",
            vs_f32.unwrap_or_default(),
            want.len(),
            meta["min_greedy_margin"].as_f64().unwrap_or(f64::NAN),
            if diff <= tolerance && same { "OK" } else { "FAIL" }
        );
        if diff > tolerance || !same {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "parity failures: {failures:?}");
}
