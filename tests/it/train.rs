//! Fine-tuning end to end on the CPU: parity with HF Trainer (committed cases recorded by
//! scripts/parity/train_parity.py: per-step loss, lr and grad norm, tensors after 3 steps, for full fine-tuning,
//! LoRA and DoRA; and by scripts/parity/train_parity_ddp.py: transformers 4.47.1 on 2 DDP processes, per-rank and
//! whole-step loss normalisation, and its weight-decay groups, which decay Qwen2's norm weights), HF's
//! learning-rate schedules and decay groups (later transformers and 4.47.1), the last-assistant label mask on
//! a rendered chat, loss falling on a toy set, LoRA touching only adapters, gradient checkpointing matching the plain pass, and
//! checkpoints that survive a save/load round trip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use stasc::config::choices::DecayParameters;
use stasc::config::{FineTuneConfig, LrSchedulerType};
use stasc::model::{load_model, load_weights, Architecture, ModelFiles, Tokenizer};
use stasc::prompt::ChatMessage;
use stasc::train::lora::{LoraAdapters, LoraSpec};
use stasc::train::optim::{gets_weight_decay, is_decayed};
use stasc::train::parity::{run_case, run_case_with};
use stasc::train::schedule::LrSchedule;
use stasc::train::tokenize::{tokenize_chat, IGNORE_INDEX};
use stasc::train::trainer::train_examples;
use stasc::train::{checkpoint, fine_tune, Hyperparameters, TokenizedExample, TrainError, TrainOptions};
use tch::Tensor;

fn parity_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train/parity")
}

fn tiny_chat_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_models/qwen2_untied")
}

fn cpu() -> stasc::model::LoadOptions {
    stasc::model::LoadOptions { device: "cpu".parse().unwrap(), dtype: "f32".parse().unwrap(), max_model_len: None }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn full_lora_and_dora_match_hf_trainer() {
    for case in ["full", "lora", "dora"] {
        let report = run_case(&parity_dir(), case, "cpu".parse().unwrap(), None).unwrap();
        assert!(report.failures.is_empty(), "{case}:\n{}\n{}", report.failures.join("\n"), report.lines.join("\n"));
        assert_eq!(report.lines.len(), 3 * 3 + 1, "{case}: three steps of loss, lr and grad norm, then tensors");
    }
}

#[test]
fn both_loss_normalisations_match_transformers_4_47_1_on_two_processes() {
    let mut first_losses = Vec::new();
    for case in ["ddp_per_rank", "ddp_whole_step"] {
        let report = run_case(&parity_dir(), case, "cpu".parse().unwrap(), None).unwrap();
        assert!(report.failures.is_empty(), "{case}:\n{}\n{}", report.failures.join("\n"), report.lines.join("\n"));
        assert_eq!(report.lines.len(), 1 + 2 * 3 + 1, "{case}: decay group, two steps of loss, lr, grad norm, tensors");
        eprintln!("{case}:\n{}", report.lines.join("\n"));
        first_losses.push(json(&parity_dir().join(format!("{case}.json")))["reference"]["losses"][0].as_f64().unwrap());
    }
    // The two cases differ (rank 0 has far fewer label tokens), so matching both is not matching one twice.
    assert!((first_losses[0] - first_losses[1]).abs() > 1e-2, "{first_losses:?}");
}

#[test]
fn learning_rates_equal_transformers_schedulers() {
    for run in json(&parity_dir().join("schedules.json")).as_array().unwrap() {
        let kind = match run["kind"].as_str().unwrap() {
            "linear" => LrSchedulerType::Linear,
            "cosine" => LrSchedulerType::Cosine,
            "constant" => LrSchedulerType::Constant,
            _ => LrSchedulerType::ConstantWithWarmup,
        };
        let total = run["total_steps"].as_u64().unwrap() as usize;
        let warmup_steps = run["warmup_steps"].as_u64().unwrap() as usize;
        let warmup_ratio = run["warmup_ratio"].as_f64().unwrap();
        let s = LrSchedule {
            kind,
            base_lr: run["base_lr"].as_f64().unwrap(),
            warmup_steps: LrSchedule::warmup_steps(total, warmup_steps, warmup_ratio),
            total_steps: total,
        };
        for (k, lr) in run["lrs"].as_array().unwrap().iter().enumerate() {
            let lr = lr.as_f64().unwrap();
            // LambdaLR multiplies base_lr by the factor in Python floats: the same IEEE operations.
            assert!((s.lr(k) - lr).abs() <= 1e-15 * lr.abs(), "{run:?} step {k}: {} vs {lr}", s.lr(k));
        }
    }
}

#[test]
fn decay_groups_equal_trainer_get_decay_parameter_names() {
    let models = json(&parity_dir().join("decay.json"));
    for (model, groups) in models.as_object().unwrap() {
        for name in groups["decay"].as_array().unwrap() {
            assert!(gets_weight_decay(name.as_str().unwrap()), "{model}: {name} should decay");
        }
        for name in groups["no_decay"].as_array().unwrap() {
            assert!(!gets_weight_decay(name.as_str().unwrap()), "{model}: {name} should not decay");
        }
        // Full models have biases and norms outside the decay group; a PEFT model trains only adapters, all decayed.
        assert_eq!(groups["no_decay"].as_array().unwrap().is_empty(), model.ends_with("dora"), "{model}");
    }
}

/// The 4.47.1 case with weight decay 0.1 (per-rank normalisation: the paper protocol's training): stasc matches it
/// with `decay_parameters: transformers_4_47_1`; with `names` the five RMSNorm weights miss 4.47.1's decay and end
/// about w * wd * (sum of the lrs) = 1.5e-4 higher (w ~ 1: RMSNorm weights start at 1 and move ~lr per step), three
/// times the tolerance, while every other tensor still matches.
#[test]
fn weight_decay_groups_match_transformers_4_47_1_on_qwen2_and_names_does_not() {
    let case = json(&parity_dir().join("ddp_decay.json"));
    assert_eq!(case["decay_parameters"], "transformers_4_47_1");
    let wd = case["hyperparameters"]["weight_decay"].as_f64().unwrap();
    let lrs: Vec<f64> =
        case["reference"]["learning_rates"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap()).collect();
    assert_eq!((wd, lrs.as_slice()), (0.1, [1e-3, 5e-4].as_slice()));
    let decay_shift = wd * lrs.iter().sum::<f64>();
    let tolerance = 0.05 * 1e-3;
    let is_norm = |name: &str| name.ends_with("layernorm.weight") || name == "model.norm.weight";

    let report = run_case(&parity_dir(), "ddp_decay", "cpu".parse().unwrap(), None).unwrap();
    eprintln!("transformers_4_47_1:\n{}", report.lines.join("\n"));
    assert!(report.failures.is_empty(), "{}\n{}", report.failures.join("\n"), report.lines.join("\n"));
    assert_eq!(report.lines[0], "decay group (transformers_4_47_1): 21 of 27 parameters");
    let worst_norm = report.tensor_diffs.iter().filter(|(n, _)| is_norm(n)).map(|(_, d)| *d).fold(0.0, f64::max);
    assert!(worst_norm < 0.1 * decay_shift, "norm weights {worst_norm:.3e}");

    let names =
        run_case_with(&parity_dir(), "ddp_decay", "cpu".parse().unwrap(), None, Some(DecayParameters::Names)).unwrap();
    eprintln!("names:\n{}\n{}", names.lines.join("\n"), names.failures.join("\n"));
    let mut norms = 0;
    for (tensor, diff) in &names.tensor_diffs {
        if is_norm(tensor) {
            norms += 1;
            assert!((diff / decay_shift - 1.0).abs() < 0.05, "{tensor}: {diff:.3e} vs {decay_shift:.3e}");
        } else {
            assert!(*diff < tolerance, "{tensor}: {diff:.3e}");
        }
    }
    assert_eq!(norms, 5, "input and post-attention norms of 2 layers, and model.norm");
    let failed_tensors: Vec<&str> =
        names.failures.iter().filter_map(|f| f.split(':').next()).filter(|t| t.starts_with("model.")).collect();
    assert_eq!(failed_tensors.len(), 5, "{:?}", names.failures);
    assert!(failed_tensors.iter().all(|t| is_norm(t)), "{failed_tensors:?}");
    assert!(names.failures.iter().any(|f| f.starts_with("decay group (names) differs")), "{:?}", names.failures);
    // Step 1 starts from the same weights; step 2 sees the norm weights 1.5e-4 off, which moves its gradient norm by
    // ~2e-4 relative (observed 7.01988 vs 4.47.1's 7.01837; 7.01836 with transformers_4_47_1).
    let step_failures: Vec<&String> = names.failures.iter().filter(|f| f.starts_with("step ")).collect();
    assert!(step_failures.iter().all(|f| f.starts_with("step 2 ")), "{step_failures:?}");
    assert!(step_failures.iter().any(|f| f.starts_with("step 2 grad_norm")), "{step_failures:?}");
}

#[test]
fn transformers_4_47_1_rule_equals_its_get_decay_parameter_names() {
    let recorded = json(&parity_dir().join("decay_4_47_1.json"));
    assert_eq!(recorded["transformers"], "4.47.1");
    let mut differs_from_names = Vec::new();
    for (model, groups) in recorded["models"].as_object().unwrap() {
        let class = groups["architecture"].as_str().unwrap();
        let architecture = Architecture::ALL.into_iter().find(|a| a.hf_name() == class).unwrap();
        let name_list = |key: &str| -> Vec<String> {
            groups[key].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
        };
        let (decay, no_decay) = (name_list("decay"), name_list("no_decay"));
        for name in &decay {
            assert!(
                is_decayed(DecayParameters::Transformers4_47_1, architecture, name),
                "{model}: {name} should decay"
            );
        }
        for name in &no_decay {
            assert!(
                !is_decayed(DecayParameters::Transformers4_47_1, architecture, name),
                "{model}: {name} should not decay"
            );
        }
        if decay
            .iter()
            .chain(&no_decay)
            .any(|n| is_decayed(DecayParameters::Names, architecture, n) != decay.contains(n))
        {
            differs_from_names.push(model.as_str());
        }
    }
    // Only Llama's norms are in 4.47.1's ALL_LAYERNORM_LAYERS: the two rules agree on Llama alone.
    differs_from_names.sort();
    assert_eq!(differs_from_names, vec!["phi3", "qwen2_tied", "qwen2_untied"]);
}

fn tiny_tokenizer() -> Tokenizer {
    Tokenizer::load(&ModelFiles::resolve(&tiny_chat_model()).unwrap(), &[2]).unwrap()
}

fn chat(question: &str, answer: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Answer briefly."),
        ChatMessage::new("user", question),
        ChatMessage::new("assistant", answer),
    ]
}

#[test]
fn labels_cover_the_last_assistant_message_and_its_end_token() {
    let tok = tiny_tokenizer();
    let mut messages = chat("What is 2+2?", "It is 5.");
    messages.push(ChatMessage::new("user", "Check your answer."));
    messages.push(ChatMessage::new("assistant", "Corrected: it is 4."));
    let e = tokenize_chat(&tok, &messages, 0).unwrap();
    let rendered = tok.apply_chat_template(&messages, false).unwrap();
    assert!(rendered.ends_with("<|im_start|>assistant\nCorrected: it is 4.<|im_end|>\n"), "{rendered}");
    let ids: Vec<u32> = e.input_ids.iter().map(|&t| t as u32).collect();
    assert_eq!(tok.decode(&ids, false).unwrap(), rendered);
    let labelled: Vec<u32> = e.labels.iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect();
    assert_eq!(tok.decode(&labelled, false).unwrap(), "Corrected: it is 4.<|im_end|>");
    // The labelled tokens are one contiguous run, ending just before the template's trailing newline.
    let first = e.labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
    let last = e.labels.iter().rposition(|&l| l != IGNORE_INDEX).unwrap();
    assert_eq!(last - first + 1, labelled.len());
    assert_eq!(last, e.len() - 2);
    let err = tokenize_chat(&tok, &messages[..4], 3).unwrap_err().to_string();
    assert!(err.starts_with("example 3: the last message must be the assistant's"), "{err}");
}

/// Tokenising a fine-tuning run's examples on all cores keeps their order and counts, and an unusable
/// conversation among hundreds is named by its own index (not its thread's part).
#[test]
fn examples_tokenised_in_parallel_keep_their_order_and_name_a_bad_one() {
    use stasc::config::Truncation;
    use stasc::train::tokenize::tokenize_all;
    let tok = tiny_tokenizer();
    let chats: Vec<Vec<ChatMessage>> =
        (0..300).map(|i| chat(&format!("What is {i} times {}?", i % 7), &"so ".repeat(1 + i % 5))).collect();
    let (all, stats) = tokenize_all(&tok, &chats, 4096, Truncation::Drop).unwrap();
    let one_by_one: Vec<_> = chats.iter().enumerate().map(|(i, c)| tokenize_chat(&tok, c, i).unwrap()).collect();
    assert_eq!(all, one_by_one);
    assert_eq!((stats.given, stats.kept), (300, 300));
    let mut broken = chats.clone();
    broken[217].pop();
    broken[250].pop();
    let err = tokenize_all(&tok, &broken, 4096, Truncation::Drop).unwrap_err().to_string();
    assert!(err.starts_with("example 217: the last message must be the assistant's"), "{err}");
}

fn write_ft_config(dir: &Path, extra: &str) -> FineTuneConfig {
    let path = dir.join("fine_tune.yaml");
    let text = format!(
        "data:\n  block_size: 256\ntraining:\n  learning_rate: 3.0e-3\n  num_train_epochs: 6\n  \
         per_device_train_batch_size: 2\n  gradient_accumulation_steps: 2\n  weight_decay: 0.1\n  \
         warmup_ratio: 0.1\n  lr_scheduler_type: cosine\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    FineTuneConfig::load(&path).unwrap().0
}

fn toy_chats() -> Vec<Vec<ChatMessage>> {
    (0..6).map(|i| chat(&format!("What is {i} plus {i}?"), &format!("{i} plus {i} is {}.", 2 * i))).collect()
}

fn quiet() -> TrainOptions {
    TrainOptions { device: "cpu".parse().unwrap(), progress: false, ..TrainOptions::default() }
}

#[test]
fn loss_falls_and_the_checkpoint_reloads_with_equal_logits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_ft_config(dir.path(), "");
    let out = dir.path().join("model");
    let report = fine_tune(&tiny_chat_model(), &toy_chats(), &cfg, &quiet(), &out).unwrap();
    // 6 examples, 2 micro-batches of 2 per step -> 2 steps per epoch (the second takes the last micro-batch).
    assert_eq!(report.steps.len(), 12);
    let stages = report.stage_seconds;
    assert!(stages.tokenize >= 0.0 && stages.load > 0.0 && stages.steps > 0.0 && stages.save > 0.0, "{stages}");
    let losses = report.losses();
    assert!(losses[11] < 0.7 * losses[0], "{losses:?}");
    assert_eq!(report.data.kept, 6);
    let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 12);
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["step"], 1);
    assert_eq!(first["lr"], 0.0, "warm-up starts at 0 as in HF");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(!checkpoint::partial_dir(&out).exists());

    // The saved model reproduces the trained weights: train the same run in memory and compare logits.
    let reloaded = load_model(&out, &cpu()).unwrap();
    let base = load_weights(&tiny_chat_model(), &cpu()).unwrap();
    let ids = Tensor::from_slice(&[1i64, 20, 30, 40, 2, 5, 7]).view([1, -1]);
    let before = tch::no_grad(|| base.forward_logits(&ids)).unwrap();
    let after = tch::no_grad(|| reloaded.model.forward_logits(&ids)).unwrap();
    assert!(!before.allclose(&after, 1e-3, 1e-3, false), "training changed the model");
    let config = json(&out.join("config.json"));
    assert_eq!(config["dtype"], "float32");
}

fn examples(tok: &Tokenizer) -> Vec<TokenizedExample> {
    toy_chats().iter().enumerate().map(|(i, c)| tokenize_chat(tok, c, i).unwrap()).collect()
}

fn hyper(checkpointing: bool) -> Hyperparameters {
    let mut hp =
        Hyperparameters::from_training_args(&write_ft_config(tempfile::tempdir().unwrap().path(), "").training, false);
    hp.max_steps = Some(3);
    hp.gradient_checkpointing = checkpointing;
    hp
}

#[test]
fn saved_weights_reload_bit_exactly() {
    let data = examples(&tiny_tokenizer());
    let mut model = load_weights(&tiny_chat_model(), &cpu()).unwrap();
    train_examples(&mut model, None, &data, 0, &hyper(false), &mut |_| Ok(())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut weights: Vec<_> = model.named_weights().into_iter().collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    checkpoint::write_model_dir(&tiny_chat_model(), dir.path(), &weights).unwrap();
    let reloaded = load_weights(dir.path(), &cpu()).unwrap();
    let ids = Tensor::from_slice(&[1i64, 20, 30, 40, 2, 5, 7]).view([1, -1]);
    let a = tch::no_grad(|| model.forward_logits(&ids)).unwrap();
    let b = tch::no_grad(|| reloaded.forward_logits(&ids)).unwrap();
    assert!(a.equal(&b), "logits differ after a save/load round trip");
}

#[test]
fn gradient_checkpointing_matches_the_plain_pass() {
    let data = examples(&tiny_tokenizer());
    let mut results = Vec::new();
    for checkpointing in [false, true] {
        let mut model = load_weights(&tiny_chat_model(), &cpu()).unwrap();
        let run = train_examples(&mut model, None, &data, 0, &hyper(checkpointing), &mut |_| Ok(())).unwrap();
        results.push((run, model.named_weights()));
    }
    let ((plain, w0), (ckpt, w1)) = (&results[0], &results[1]);
    for (a, b) in plain.steps.iter().zip(&ckpt.steps) {
        assert!((a.loss - b.loss).abs() < 1e-5 * a.loss && (a.grad_norm - b.grad_norm).abs() < 1e-5 * a.grad_norm);
    }
    for (name, t) in w0 {
        let diff = (t - &w1[name]).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
}

fn lora_spec(targets: &[&str], dora: bool) -> LoraSpec {
    LoraSpec { rank: 4, alpha: 8, dropout: 0.1, target_modules: targets.iter().map(|s| s.to_string()).collect(), dora }
}

#[test]
fn lora_trains_only_the_adapters() {
    let data = examples(&tiny_tokenizer());
    for dora in [false, true] {
        let mut model = load_weights(&tiny_chat_model(), &cpu()).unwrap();
        let base: HashMap<String, Tensor> = model.named_weights().into_iter().map(|(k, v)| (k, v.copy())).collect();
        tch::manual_seed(0);
        let adapters =
            LoraAdapters::attach(&mut model, &lora_spec(&["q_proj", "self_attn.v_proj", "down_proj"], dora)).unwrap();
        assert_eq!(adapters.modules.len(), 3 * 2);
        let init: Vec<Tensor> = adapters.peft_state_dict().into_iter().map(|(_, t)| t.copy()).collect();
        let run = train_examples(&mut model, Some(&adapters), &data, 0, &hyper(false), &mut |_| Ok(())).unwrap();
        assert_eq!(run.trainable_params, init.iter().map(|t| t.numel() as i64).sum::<i64>());
        for (name, t) in model.named_weights() {
            assert!(t.equal(&base[&name]), "dora={dora}: base weight {name} changed");
            assert!(!t.requires_grad(), "{name} should stay frozen");
        }
        let moved = adapters.peft_state_dict().iter().zip(&init).filter(|((_, t), i)| !t.equal(i)).count();
        assert_eq!(moved, init.len(), "dora={dora}: every adapter tensor trains");
    }
}

#[test]
fn lora_output_is_peft_format_and_merged_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_ft_config(
        dir.path(),
        "  max_steps: 2\npeft:\n  use_lora: true\n  lora_rank: 4\n  lora_alpha: 8\n  lora_target_modules: [q_proj, v_proj]\n  dora: true\n",
    );
    let merged = dir.path().join("merged");
    fine_tune(&tiny_chat_model(), &toy_chats(), &cfg, &quiet(), &merged).unwrap();
    assert!(merged.join("model.safetensors").is_file() && merged.join("adapter/adapter_config.json").is_file());
    load_model(&merged, &cpu()).unwrap();
    let names: Vec<String> = Tensor::read_safetensors(merged.join("adapter/adapter_model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for key in [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
    ] {
        assert!(names.iter().any(|n| n == key), "{key} missing from {names:?}");
    }
    assert_eq!(names.len(), 2 * 2 * 3);
    let config = json(&merged.join("adapter/adapter_config.json"));
    assert_eq!(
        (config["peft_type"].as_str(), config["r"].as_u64(), config["use_dora"].as_bool()),
        (Some("LORA"), Some(4), Some(true))
    );

    let adapter_only = dir.path().join("adapter");
    let opts = TrainOptions { merge_lora: false, ..quiet() };
    fine_tune(&tiny_chat_model(), &toy_chats(), &cfg, &opts, &adapter_only).unwrap();
    assert!(
        adapter_only.join("adapter_model.safetensors").is_file() && !adapter_only.join("model.safetensors").exists()
    );
}

#[test]
fn unknown_lora_targets_list_the_available_modules() {
    let mut model = load_weights(&tiny_chat_model(), &cpu()).unwrap();
    let err = LoraAdapters::attach(&mut model, &lora_spec(&["query_key_value", "q_proj"], false)).unwrap_err();
    assert!(matches!(err, TrainError::LoraTargets { .. }));
    assert_eq!(
        err.to_string(),
        "peft.lora_target_modules: query_key_value match no module of this model (available: q_proj, k_proj, v_proj, \
         o_proj, gate_proj, up_proj, down_proj)"
    );
    assert!(model.layers().iter().all(|l| l.mlp.down_proj.adapter.is_none()), "nothing left attached");
}

#[test]
fn bench_train_trace_saves_the_timed_steps_ops() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("train.json");
    let config = super::model_parity::fixture("phi3").join("config.json");
    let args = ["bench", "train", "--config-json", config.to_str().unwrap(), "--batch", "2", "--seq", "16"];
    let rest = ["--steps", "1", "--warmup", "0", "--device", "cpu", "--trace", trace.to_str().unwrap()];
    let (stdout, _) = super::generation::stasc(&[&args[..], &rest[..]].concat());
    assert!(stdout.contains("stasc train bs=2 seq=16"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let names: Vec<&str> = json["traceEvents"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    // The backward pass is in the trace, not only the forward.
    assert!(names.iter().any(|n| n.contains("Backward")), "no autograd backward among {} events", names.len());
}

#[test]
fn bench_train_parallel_realistic_compares_overlapped_sharded_sums_with_the_whole_sum_and_one_device() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny Qwen2 with room for the realistic lengths (200-600 tokens).
    let text = std::fs::read_to_string(super::model_parity::fixture("qwen2_untied").join("config.json")).unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, text.replace("\"max_position_embeddings\": 256", "\"max_position_embeddings\": 1024"))
        .unwrap();
    let args = ["bench", "train-parallel", "--config-json", config.to_str().unwrap(), "--devices", "cpu,cpu"];
    let rest =
        ["--realistic", "--steps", "2", "--warmup", "1", "--overlap", "--compare-unoverlapped", "--dtype", "f32"];
    let (stdout, _) = super::generation::stasc(&[&args[..], &rest[..]].concat());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        lines[0].starts_with("stasc train-parallel realistic (") && lines[0].contains("ranks=2 on cpu,cpu: "),
        "{stdout}"
    );
    assert!(lines[1].contains("on cpu,cpu, one sum after backward, unsharded: "), "{stdout}");
    assert!(lines[3].contains("ranks=2 on cpu: "), "{stdout}");
    // Overlapped and sharded: the same sums, so the same losses while clipping rounds alike.
    let said = |line: &str, key: &str| -> f64 {
        line.split(key).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(said(lines[2], "at most ") <= 1e-6, "{stdout}");
    assert!(said(lines[4], "at most ") <= 1e-5, "{stdout}");
    assert!(lines[4].starts_with("stasc train-parallel speed-up x"), "{stdout}");
}
