//! Data parallelism on the CPU. Two CPU worker threads with host-side sums stand in for two GPUs: the trainer,
//! the micro-batch split, the loss normalisation and the generation shards are the code that runs on GPUs, where
//! only the sum itself goes through NCCL. Checked here: the loss of a 2-rank run equals the single-device loss at
//! the same global batch (bit for bit when the ranks share one device, within f32 reassociation across two
//! workers), the first worker's checkpoint is the single-device one, a worker's failure ends the job with its own
//! error, and sharded generation returns exactly the single-device samples in request order.

use std::path::{Path, PathBuf};

use stasc::config::{FineTuneConfig, RunConfig, RunConfigPaths};
use stasc::dist::Topology;
use stasc::prompt::ChatMessage;
use stasc::stasc::backend::{Backend, GenerationRequest};
use stasc::stasc::engine::TchBackend;
use stasc::stasc::spec::SamplingSpec;
use stasc::train::{fine_tune, TrainOptions, TrainReport};
use tch::{Device, Tensor};

fn tiny_chat_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_models/qwen2_untied")
}

fn chat(i: usize) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Answer briefly."),
        ChatMessage::new("user", format!("What is {i} times {}?", i % 4 + 1)),
        ChatMessage::new("assistant", format!("{i} times {} is {}.", i % 4 + 1, i * (i % 4 + 1))),
    ]
}

fn ft_config(dir: &Path, accumulation: usize) -> FineTuneConfig {
    let path = dir.join(format!("ft_{accumulation}.yaml"));
    let text = format!(
        "data:\n  block_size: 256\ntraining:\n  learning_rate: 3.0e-3\n  num_train_epochs: 2\n  \
         per_device_train_batch_size: 2\n  gradient_accumulation_steps: {accumulation}\n  weight_decay: 0.1\n  \
         warmup_ratio: 0.1\n  lr_scheduler_type: cosine\n  max_grad_norm: 1.0\n  seed: 11\n"
    );
    std::fs::write(&path, text).unwrap();
    FineTuneConfig::load(&path).unwrap().0
}

/// 18 examples in micro-batches of 2: 9 micro-batches an epoch, so with 4 per step the steps take 4, 4 and 1
/// micro-batches, and in the last one the second rank has nothing to do.
fn train(dir: &Path, name: &str, topology: Topology, accumulation: usize) -> (TrainReport, Vec<(String, Tensor)>) {
    let chats: Vec<Vec<ChatMessage>> = (0..18).map(chat).collect();
    let out = dir.join(name);
    let opts = TrainOptions { topology: Some(topology), progress: false, ..TrainOptions::default() };
    let report = fine_tune(&tiny_chat_model(), &chats, &ft_config(dir, accumulation), &opts, &out).unwrap();
    let mut weights = Tensor::read_safetensors(out.join("model.safetensors")).unwrap();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    (report, weights)
}

#[test]
fn two_ranks_give_the_single_device_loss_at_the_same_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    // The reference global batch: 2 examples x 2 ranks x 2 accumulation = 8, on one device as 4 accumulation steps.
    let (single, single_w) = train(dir.path(), "single", Topology::single(Device::Cpu), 4);
    let shared = Topology::new(2, vec![Device::Cpu]).unwrap();
    let (shared, shared_w) = train(dir.path(), "shared", shared, 2);
    let two = Topology::new(2, vec![Device::Cpu, Device::Cpu]).unwrap();
    let (parallel, parallel_w) = train(dir.path(), "parallel", two, 2);

    assert_eq!(single.steps.len(), 6, "3 steps an epoch (4, 4 and 1 micro-batches), 2 epochs");
    // Two ranks on one device run the single-device arithmetic in the same order: identical to the last bit.
    assert_eq!(
        shared.steps.iter().map(|s| (s.loss, s.grad_norm, s.lr, s.tokens)).collect::<Vec<_>>(),
        single.steps.iter().map(|s| (s.loss, s.grad_norm, s.lr, s.tokens)).collect::<Vec<_>>()
    );
    for ((name, a), (_, b)) in shared_w.iter().zip(&single_w) {
        assert!(a.equal(b), "{name} differs between 2 ranks on one device and one rank");
    }
    // Two workers add their partial gradients ((g0 + g2) + (g1 + g3) instead of ((g0 + g1) + g2) + g3): f32
    // reassociation, ~1e-7 relative per step, which Adam's normalised update keeps at that scale.
    assert_eq!(parallel.steps.len(), single.steps.len());
    for (p, s) in parallel.steps.iter().zip(&single.steps) {
        assert_eq!((p.lr, p.tokens), (s.lr, s.tokens));
        assert!((p.loss - s.loss).abs() <= 1e-5 * s.loss, "step {}: loss {} vs {}", s.step, p.loss, s.loss);
        assert!(
            (p.grad_norm - s.grad_norm).abs() <= 1e-4 * s.grad_norm,
            "step {}: grad norm {} vs {}",
            s.step,
            p.grad_norm,
            s.grad_norm
        );
    }
    let mut worst = 0.0f64;
    for ((name, a), (_, b)) in parallel_w.iter().zip(&single_w) {
        let diff = (a - b).abs().max().double_value(&[]);
        worst = worst.max(diff);
        assert!(diff <= 1e-4, "{name}: max |difference| {diff}");
    }
    assert!(single.steps.last().unwrap().loss < single.steps[0].loss, "the run learned something");
    eprintln!("2 workers vs 1 device: worst weight difference {worst:e}");
}

#[test]
fn a_failing_worker_ends_the_job_with_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    // An example longer than block_size is dropped; a model directory that does not exist fails every worker.
    let opts = TrainOptions {
        topology: Some(Topology::new(2, vec![Device::Cpu, Device::Cpu]).unwrap()),
        progress: false,
        ..TrainOptions::default()
    };
    let missing = dir.path().join("no_such_model");
    let e = fine_tune(&missing, &[chat(1)], &ft_config(dir.path(), 1), &opts, &dir.path().join("out")).unwrap_err();
    assert!(e.to_string().contains("no_such_model"), "{e}");
    assert!(!dir.path().join("out").exists(), "nothing half-written");
}

fn run_config(dir: &Path) -> RunConfig {
    run_config_with(dir, "")
}

fn run_config_with(dir: &Path, extra: &str) -> RunConfig {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("train.jsonl"), "{\"question\": \"q\", \"answers\": [\"a\"]}\n").unwrap();
    std::fs::write(data.join("test.jsonl"), "{\"question\": \"q\", \"answers\": [\"a\"]}\n").unwrap();
    let config = dir.join("stasc.yaml");
    std::fs::write(
        &config,
        format!(
            "model_path: {}\ndata_path: {}\ntask_type: qa\nrun_name: dp\ndevice: cpu\ndtype: f32\n{extra}",
            tiny_chat_model().display(),
            data.display()
        ),
    )
    .unwrap();
    let ft = dir.join("ft.yaml");
    std::fs::write(&ft, "training:\n  learning_rate: 1.0e-5\n").unwrap();
    RunConfig::load(&RunConfigPaths { config, ft_config: ft, accelerate_config: None }).unwrap()
}

#[test]
fn sharded_generation_returns_the_single_device_samples_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = run_config(dir.path());
    let requests: Vec<GenerationRequest> = (0..7)
        .map(|i| GenerationRequest {
            key: format!("iter0/initial/train/q{i}"),
            messages: vec![ChatMessage::new("user", format!("Name a number above {i}."))],
            n: 1 + i % 3,
        })
        .collect();
    let sampling = SamplingSpec { temperature: 0.8, top_p: 0.9, max_tokens: 12, seed: 3 };
    let mut single = TchBackend::with_topology(&config, Topology::single(Device::Cpu), false);
    let expected = single.generate(&tiny_chat_model(), &requests, &sampling).unwrap();
    let three = Topology::new(1, vec![Device::Cpu; 3]).unwrap();
    let mut sharded = TchBackend::with_topology(&config, three, false);
    let got = sharded.generate(&tiny_chat_model(), &requests, &sampling).unwrap();
    assert_eq!(got.len(), requests.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.len(), requests[i].n, "request {i}");
        assert_eq!(g, e, "request {i}");
    }
    // The second call reuses the models loaded on each worker and draws the same samples again.
    assert_eq!(sharded.generate(&tiny_chat_model(), &requests, &sampling).unwrap(), expected);
    let distinct: std::collections::HashSet<&str> = expected.iter().flatten().map(|s| s.text.as_str()).collect();
    assert!(distinct.len() > 3, "sampling drew different texts: {distinct:?}");
}

#[test]
fn runs_are_told_when_sharded_samples_can_differ_from_one_gpu() {
    use stasc::stasc::engine::generation_note;
    let dir = tempfile::tempdir().unwrap();
    let two_gpus = Topology::new(2, vec![Device::Cuda(0), Device::Cuda(1)]).unwrap();
    let plain = run_config(dir.path());
    let note = generation_note(&plain, &two_gpus).unwrap();
    assert!(note.ends_with("only with batch_invariant: true (otherwise rounding can flip tokens)"), "{note}");
    assert_eq!(generation_note(&plain, &Topology::single(Device::Cuda(0))), None);
    assert_eq!(generation_note(&plain, &Topology::new(1, vec![Device::Cpu; 2]).unwrap()), None);
    let fixed = run_config_with(dir.path(), "batch_invariant: true\nmax_model_len: 512\n");
    assert_eq!(generation_note(&fixed, &two_gpus), None);
    let unbounded = run_config_with(dir.path(), "batch_invariant: true\n");
    assert!(generation_note(&unbounded, &two_gpus).unwrap().contains("set max_model_len"));
}
