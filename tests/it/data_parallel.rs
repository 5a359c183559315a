//! Data parallelism on the CPU. Two CPU worker threads with host-side sums stand in for two GPUs: the trainer,
//! the micro-batch split, the loss normalisation and the generation shards are the code that runs on GPUs, where
//! only the sum itself goes through NCCL. Checked here: the loss of a 2-rank run equals the single-device loss at
//! the same global batch (bit for bit when the ranks share one device, within f32 reassociation across two
//! workers), the first worker's checkpoint is the single-device one, a worker's failure ends the job with its own
//! error, and sharded generation returns exactly the single-device samples in request order. Per-rank loss
//! normalisation (`average_tokens_across_devices: false`): the step loss is the mean over ranks of each rank's mean
//! token loss (checked against forward passes), it equals whole-step when every rank has as many label tokens and
//! on one rank, and two workers give what two ranks on one device give.

use std::path::{Path, PathBuf};

use stasc::config::{FineTuneConfig, RunConfig, RunConfigPaths};
use stasc::dist::Topology;
use stasc::model::{load_weights, CausalLm, LoadOptions};
use stasc::prompt::ChatMessage;
use stasc::stasc::backend::{Backend, SamplingJob};
use stasc::stasc::spec::SamplingSpec;
use stasc::stasc::tch_backend::TchBackend;
use stasc::train::batching::epoch_batches;
use stasc::train::bench::fixed_shape_hyperparameters;
use stasc::train::trainer::train_examples;
use stasc::train::{fine_tune, Hyperparameters, LoopSummary, TokenizedExample, TrainOptions, TrainReport};
use tch::{Device, Kind, Reduction, Tensor};

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

/// fine_tune.yaml with `extra` lines appended to its `training` section.
fn ft_config(dir: &Path, accumulation: usize, extra: &str) -> FineTuneConfig {
    let path = dir.join(format!("ft_{accumulation}_{}.yaml", extra.len()));
    let text = format!(
        "data:\n  block_size: 256\ntraining:\n  learning_rate: 3.0e-3\n  num_train_epochs: 2\n  \
         per_device_train_batch_size: 2\n  gradient_accumulation_steps: {accumulation}\n  weight_decay: 0.1\n  \
         warmup_ratio: 0.1\n  lr_scheduler_type: cosine\n  max_grad_norm: 1.0\n  seed: 11\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    FineTuneConfig::load(&path).unwrap().0
}

/// 18 examples in micro-batches of 2: 9 micro-batches an epoch, so with 4 per step the steps take 4, 4 and 1
/// micro-batches, and in the last one the second rank has nothing to do.
fn train(dir: &Path, name: &str, topology: Topology, accumulation: usize) -> (TrainReport, Vec<(String, Tensor)>) {
    train_with(dir, name, topology, accumulation, "")
}

fn train_with(
    dir: &Path,
    name: &str,
    topology: Topology,
    accumulation: usize,
    extra: &str,
) -> (TrainReport, Vec<(String, Tensor)>) {
    let chats: Vec<Vec<ChatMessage>> = (0..18).map(chat).collect();
    let out = dir.join(name);
    let opts = TrainOptions { topology: Some(topology), progress: false, ..TrainOptions::default() };
    let report = fine_tune(&tiny_chat_model(), &chats, &ft_config(dir, accumulation, extra), &opts, &out).unwrap();
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

const PER_RANK: &str = "  average_tokens_across_devices: false\n";

/// Weights of two runs agree within the f32 reassociation of two workers (see the test above); returns the worst.
fn assert_close_weights(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let mut worst = 0.0f64;
    for ((name, x), (other, y)) in a.iter().zip(b) {
        assert_eq!(name, other);
        let diff = (x - y).abs().max().double_value(&[]);
        worst = worst.max(diff);
        assert!(diff <= 1e-4, "{name}: max |difference| {diff}");
    }
    worst
}

#[test]
fn per_rank_normalisation_on_two_workers_matches_two_ranks_on_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Topology::new(2, vec![Device::Cpu]).unwrap();
    let (one_device, one_device_w) = train_with(dir.path(), "shared", shared.clone(), 2, PER_RANK);
    let two = Topology::new(2, vec![Device::Cpu, Device::Cpu]).unwrap();
    let (parallel, parallel_w) = train_with(dir.path(), "parallel", two, 2, PER_RANK);
    assert_eq!(parallel.steps.len(), 6);
    for (p, s) in parallel.steps.iter().zip(&one_device.steps) {
        assert_eq!((p.lr, p.tokens), (s.lr, s.tokens));
        assert!((p.loss - s.loss).abs() <= 1e-5 * s.loss, "step {}: loss {} vs {}", s.step, p.loss, s.loss);
        assert!((p.grad_norm - s.grad_norm).abs() <= 1e-4 * s.grad_norm, "step {}: grad norm", s.step);
    }
    let worst = assert_close_weights(&parallel_w, &one_device_w);
    // The chats' answers differ in length, so the ranks' label tokens differ and the normalisation matters.
    let (whole, _) = train(dir.path(), "whole", shared, 2);
    let gap = whole.steps.iter().zip(&one_device.steps).map(|(w, p)| (w.loss - p.loss).abs()).fold(0.0, f64::max);
    assert!(gap > 1e-4, "per-rank and whole-step losses should differ somewhere, largest gap {gap:e}");
    eprintln!(
        "per-rank, 2 workers vs 2 ranks on one device: worst weight difference {worst:e}; gap to whole-step {gap:e}"
    );
}

fn cpu_f32() -> LoadOptions {
    LoadOptions { device: "cpu".parse().unwrap(), dtype: "f32".parse().unwrap(), max_model_len: None }
}

/// Examples of the given (length, label tokens), with fixed token ids below the tiny model's vocabulary.
fn token_examples(shapes: &[(usize, usize)]) -> Vec<TokenizedExample> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(len, answer))| {
            let input_ids: Vec<i64> = (0..len).map(|k| ((i * 37 + k * 11 + k * k) % 290 + 5) as i64).collect();
            let labels = (0..len).map(|k| if k >= len - answer { input_ids[k] } else { -100 }).collect();
            TokenizedExample { input_ids, labels }
        })
        .collect()
}

/// One optimiser step of one example per micro-batch over `ranks` ranks (all on one CPU worker).
fn hyper(ranks: usize, accumulation: usize, whole_step: bool, steps: usize) -> Hyperparameters {
    Hyperparameters {
        learning_rate: 1e-3,
        max_steps: Some(steps),
        gradient_accumulation_steps: accumulation,
        data_parallel_ranks: ranks,
        average_tokens_across_devices: whole_step,
        ..fixed_shape_hyperparameters(1, steps, false)
    }
}

/// `examples` placed so that the loop's first-epoch shuffle draws them in the given order: micro-batch j of a step
/// is then `examples[j]`, on rank `j % ranks`.
fn in_draw_order(examples: &[TokenizedExample], hp: &Hyperparameters) -> Vec<TokenizedExample> {
    let lengths: Vec<usize> = examples.iter().map(TokenizedExample::len).collect();
    let order = epoch_batches(&lengths, 1, hp.seed, 0, hp.group_by_length).concat();
    let mut placed = examples.to_vec();
    for (example, &slot) in examples.iter().zip(&order) {
        placed[slot] = example.clone();
    }
    placed
}

fn run(hp: &Hyperparameters, examples: &[TokenizedExample]) -> (LoopSummary, Vec<(String, Tensor)>) {
    let mut model = load_weights(&tiny_chat_model(), &cpu_f32()).unwrap();
    let summary = train_examples(&mut model, None, &in_draw_order(examples, hp), 0, hp, &mut |_| Ok(())).unwrap();
    let mut weights: Vec<_> = model.named_weights().into_iter().collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    (summary, weights)
}

/// The summed token cross-entropy of `e` at the model's weights, from a plain forward pass (no trainer code).
fn summed_token_loss(model: &CausalLm, e: &TokenizedExample) -> f64 {
    let ids = Tensor::from_slice(&e.input_ids).view([1, -1]);
    let logits = tch::no_grad(|| model.forward_logits(&ids)).unwrap().squeeze_dim(0).to_kind(Kind::Float);
    let n = e.len() as i64 - 1;
    let targets = Tensor::from_slice(&e.labels[1..]);
    logits.narrow(0, 0, n).cross_entropy_loss::<Tensor>(&targets, None, Reduction::Sum, -100, 0.0).double_value(&[])
}

fn same_run(a: &(LoopSummary, Vec<(String, Tensor)>), b: &(LoopSummary, Vec<(String, Tensor)>)) {
    let key = |s: &LoopSummary| s.steps.iter().map(|r| (r.loss, r.grad_norm, r.lr)).collect::<Vec<_>>();
    assert_eq!(key(&a.0), key(&b.0));
    for ((name, x), (_, y)) in a.1.iter().zip(&b.1) {
        assert!(x.equal(y), "{name} differs");
    }
}

#[test]
fn per_rank_loss_is_the_mean_of_each_ranks_mean_token_loss() {
    // Drawn in this order, rank 0 gets examples 0 and 2 (1 + 2 label tokens), rank 1 examples 1 and 3 (7 + 6).
    let examples = token_examples(&[(12, 1), (9, 7), (15, 2), (11, 6)]);
    let model = load_weights(&tiny_chat_model(), &cpu_f32()).unwrap();
    let sums: Vec<f64> = examples.iter().map(|e| summed_token_loss(&model, e)).collect();
    let targets: Vec<f64> = examples.iter().map(|e| e.num_targets() as f64).collect();
    assert_eq!(targets, [1.0, 7.0, 2.0, 6.0]);
    let rank0 = (sums[0] + sums[2]) / (targets[0] + targets[2]);
    let rank1 = (sums[1] + sums[3]) / (targets[1] + targets[3]);
    let per_rank_expected = (rank0 + rank1) / 2.0;
    let whole_expected = sums.iter().sum::<f64>() / targets.iter().sum::<f64>();

    let per_rank = run(&hyper(2, 2, false, 1), &examples);
    let whole = run(&hyper(2, 2, true, 1), &examples);
    let (p, w) = (per_rank.0.steps[0].loss, whole.0.steps[0].loss);
    eprintln!(
        "rank means {rank0} {rank1}: per-rank {p} (expected {per_rank_expected}), whole-step {w} (expected \
         {whole_expected})"
    );
    assert!((p - per_rank_expected).abs() <= 1e-5 * per_rank_expected, "per-rank {p} vs {per_rank_expected}");
    assert!((w - whole_expected).abs() <= 1e-5 * whole_expected, "whole-step {w} vs {whole_expected}");
    assert!((p - w).abs() > 100.0 * 1e-5 * w, "the modes should differ: {p} vs {w}");
    assert_ne!(per_rank.0.steps[0].grad_norm, whole.0.steps[0].grad_norm);
}

#[test]
fn equal_label_tokens_per_rank_make_the_modes_agree() {
    // Rank 0: 3 + 5 label tokens, rank 1: 5 + 3; every micro-batch is divided by 16 either way.
    let examples = token_examples(&[(12, 3), (9, 5), (15, 5), (11, 3)]);
    same_run(&run(&hyper(2, 2, false, 1), &examples), &run(&hyper(2, 2, true, 1), &examples));
}

#[test]
fn one_rank_normalises_the_same_either_way() {
    let examples = token_examples(&[(12, 1), (9, 7), (15, 2), (11, 6), (10, 3), (14, 10), (8, 1), (13, 9)]);
    let per_rank = run(&hyper(1, 4, false, 2), &examples);
    assert_eq!(per_rank.0.steps.len(), 2);
    same_run(&per_rank, &run(&hyper(1, 4, true, 2), &examples));
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
    let e = fine_tune(&missing, &[chat(1)], &ft_config(dir.path(), 1, ""), &opts, &dir.path().join("out")).unwrap_err();
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
    let requests: Vec<SamplingJob> = (0..7)
        .map(|i| SamplingJob {
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
    use stasc::stasc::tch_backend::generation_note;
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

/// Trains `examples` on two CPU workers (host sums) with `hp`, optionally with LoRA adapters on `q_proj` and
/// `down_proj`; returns worker 0's summary and trained tensors (weights, or adapters) by name.
fn two_workers(model: &Path, hp: &Hyperparameters, examples: &[TokenizedExample], lora: bool) -> TrainedRun {
    two_workers_on([Device::Cpu, Device::Cpu], &cpu_f32(), model, hp, examples, lora)
}

/// [`two_workers`] on `devices` (NCCL between two CUDA devices) with `load` (its device is replaced).
fn two_workers_on(
    devices: [Device; 2],
    load: &LoadOptions,
    model: &Path,
    hp: &Hyperparameters,
    examples: &[TokenizedExample],
    lora: bool,
) -> TrainedRun {
    use stasc::dist::{run_workers, transport_for, Group};
    use stasc::train::lora::{LoraAdapters, LoraSpec};
    use stasc::train::trainer::{train_replica, Worker};
    let topology = Topology::new(2, devices.to_vec()).unwrap();
    let group = Group::new(&topology.devices, transport_for(&devices)).unwrap();
    let spec = LoraSpec {
        rank: 4,
        alpha: 8,
        dropout: 0.0,
        target_modules: vec!["q_proj".into(), "down_proj".into()],
        dora: false,
    };
    // Adapters draw their initial values from the global generator: one worker at a time, from one seed, so every
    // run starts from the same adapters.
    let init = std::sync::Mutex::new(());
    let runs = run_workers(&group, |w| -> Result<TrainedRun, stasc::train::TrainError> {
        let opts = LoadOptions { device: devices[w].into(), ..load.clone() };
        let mut m = load_weights(model, &opts)?;
        let adapters = if lora {
            let _one_at_a_time = init.lock().unwrap();
            tch::manual_seed(7);
            Some(LoraAdapters::attach(&mut m, &spec)?)
        } else {
            None
        };
        let worker = Worker { group: &group, index: w, topology: &topology };
        let summary = train_replica(&mut m, adapters.as_ref(), examples, 0, hp, &worker, None)?;
        let mut trained: Vec<(String, Tensor)> = match &adapters {
            Some(a) => a.named_parameters(),
            None => m.named_weights().into_iter().collect(),
        };
        trained.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((summary, trained))
    })
    .unwrap();
    runs.into_iter().next().unwrap()
}

type TrainedRun = (LoopSummary, Vec<(String, Tensor)>);

/// The largest difference between two runs' trained weights (same names in the same order).
fn max_weight_diff(a: &TrainedRun, b: &TrainedRun) -> f64 {
    a.1.iter().zip(&b.1).map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn gradient_sums_overlapped_with_backward_give_the_whole_buffer_sum_bit_for_bit() {
    // 11 examples of varied length: with 1 x 2 accumulation x 2 ranks the third step has 3 micro-batches, so rank 1
    // has one pass where rank 0 has two, and a token budget of 40 splits rank 0's packed examples into two passes.
    let shapes = [(12, 3), (9, 5), (15, 5), (11, 3), (20, 4), (7, 2), (16, 6), (13, 1), (10, 10), (18, 2), (14, 7)];
    let examples = token_examples(&shapes);
    let cases: [(&str, bool, bool, usize, bool); 6] = [
        ("qwen2_untied", true, false, 8192, false),
        ("qwen2_untied", true, false, 40, false),
        ("qwen2_untied", false, false, 8192, false),
        ("qwen2_tied", true, true, 8192, false),
        ("qwen2_tied", false, false, 8192, false),
        ("qwen2_untied", true, false, 8192, true),
    ];
    let key = |s: &LoopSummary| s.steps.iter().map(|r| (r.loss, r.grad_norm, r.lr)).collect::<Vec<_>>();
    for (model, packing, checkpointing, budget, lora) in cases {
        let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_models").join(model);
        let hp = |overlap: bool, in_graphs: bool| Hyperparameters {
            packing,
            gradient_checkpointing: checkpointing,
            max_tokens_per_pass: budget,
            overlap_grad_sums: overlap,
            sums_in_graphs: in_graphs,
            max_steps: Some(3),
            ..hyper(2, 2, true, 3)
        };
        let case = format!("{model} packing={packing} checkpointing={checkpointing} budget={budget} lora={lora}");
        let overlapped = two_workers(&model_dir, &hp(true, false), &examples, lora);
        let at_the_end = two_workers(&model_dir, &hp(false, false), &examples, lora);
        // Asked to record sums into graphs, CPU workers (no graphs, host sums) still agree before every step's last
        // pass, every worker the same number of times, and run it eagerly: the same run to the bit.
        let voted = two_workers(&model_dir, &hp(true, true), &examples, lora);
        assert_eq!(key(&voted.0), key(&overlapped.0), "{case}");
        for ((name, x), (_, y)) in voted.1.iter().zip(&overlapped.1) {
            assert!(x.equal(y), "{case}: {name} differs with sums_in_graphs");
        }
        assert_eq!(overlapped.0.steps.len(), 3, "{case}");
        assert_eq!(key(&overlapped.0), key(&at_the_end.0), "{case}");
        assert_eq!(overlapped.1.len(), at_the_end.1.len(), "{case}");
        for ((name, x), (_, y)) in overlapped.1.iter().zip(&at_the_end.1) {
            assert!(x.equal(y), "{case}: {name} differs");
        }
        // The run trained: the first step moved the weights away from where they started.
        let fresh = load_weights(&model_dir, &cpu_f32()).unwrap().named_weights();
        let moved = overlapped.1.iter().any(|(name, t)| fresh.get(name).is_some_and(|f| !f.equal(t)));
        assert!(moved || lora, "{case}: no weight changed");
    }
}

#[test]
fn a_sharded_optimizer_state_gives_the_unsharded_update() {
    let examples = token_examples(&[(12, 3), (9, 5), (15, 5), (11, 3), (20, 4), (7, 2), (16, 6), (13, 1), (10, 10)]);
    for (model, packing, lora) in
        [("qwen2_untied", true, false), ("qwen2_tied", false, false), ("qwen2_tied", true, true)]
    {
        let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_models").join(model);
        for max_grad_norm in [0.0, 1.0] {
            let hp = |shard: bool| Hyperparameters {
                packing,
                max_grad_norm,
                shard_optimizer_state: shard,
                max_steps: Some(3),
                ..hyper(2, 2, true, 3)
            };
            let case = format!("{model} packing={packing} lora={lora} max_grad_norm={max_grad_norm}");
            let sharded = two_workers(&model_dir, &hp(true), &examples, lora);
            let whole = two_workers(&model_dir, &hp(false), &examples, lora);
            assert_eq!(sharded.0.steps.len(), 3, "{case}");
            for (s, w) in sharded.0.steps.iter().zip(&whole.0.steps) {
                // The norm is summed from each worker's parts' norms: equal up to the f32 reassociation of the
                // squares' sum (~3e-6 relative seen on the tiny models).
                let relative = (s.grad_norm - w.grad_norm).abs() / w.grad_norm;
                assert!(relative <= 2e-5, "{case} step {}: norm {} vs {}", s.step, s.grad_norm, w.grad_norm);
                if max_grad_norm == 0.0 {
                    assert_eq!(s.loss, w.loss, "{case} step {}", s.step);
                }
            }
            for ((name, x), (_, y)) in sharded.1.iter().zip(&whole.1) {
                if max_grad_norm == 0.0 {
                    // Without clipping the norm is only reported: the update is the same to the last bit.
                    assert!(x.equal(y), "{case}: {name} differs");
                } else {
                    let diff = (x - y).abs().max().double_value(&[]);
                    assert!(diff <= 1e-5, "{case}: {name} differs by {diff}");
                }
            }
            let clipped = whole.0.steps.iter().any(|s| s.grad_norm > 1.0);
            assert!(clipped || max_grad_norm == 0.0 || lora, "{case}: clipping never acted: {:?}", whole.0.steps);
        }
    }
}

#[test]
#[ignore = "needs two CUDA GPUs: run by scripts/train_bench/run.sh (part 6)"]
fn on_two_gpus_overlapped_and_sharded_sums_give_the_whole_sum_update() {
    use stasc::train::graphed::{replays, set_mode, GraphMode};
    assert!(tch::Cuda::device_count() >= 2, "needs two CUDA GPUs");
    let devices = [Device::Cuda(0), Device::Cuda(1)];
    let examples = token_examples(&[(12, 3), (9, 5), (15, 5), (11, 3), (20, 4), (7, 2), (16, 6), (13, 1), (10, 10)]);
    let model_dir = tiny_chat_model();
    // Sums are compared bit for bit, so every run takes the same unpadded eager passes; the CUDA graphs that
    // training uses by default are checked at the end.
    set_mode(GraphMode::Off);
    for dtype in ["f32", "bf16"] {
        let load =
            LoadOptions { device: "cuda:0".parse().unwrap(), dtype: dtype.parse().unwrap(), max_model_len: None };
        let hp = |overlap: bool, shard: bool, max_grad_norm: f64| Hyperparameters {
            overlap_grad_sums: overlap,
            shard_optimizer_state: shard,
            max_grad_norm,
            max_steps: Some(3),
            ..hyper(2, 2, true, 3)
        };
        for max_grad_norm in [0.0, 1.0] {
            let base = two_workers_on(devices, &load, &model_dir, &hp(false, false, max_grad_norm), &examples, false);
            let again = two_workers_on(devices, &load, &model_dir, &hp(false, false, max_grad_norm), &examples, false);
            // Whether the GPU repeats a run bit for bit; if not, runs can only be compared within its spread.
            let spread = max_weight_diff(&base, &again);
            for (overlap, shard) in [(true, false), (false, true), (true, true)] {
                let run =
                    two_workers_on(devices, &load, &model_dir, &hp(overlap, shard, max_grad_norm), &examples, false);
                let diff = max_weight_diff(&run, &base);
                let norms: Vec<(f64, f64)> =
                    run.0.steps.iter().zip(&base.0.steps).map(|(r, b)| (r.grad_norm, b.grad_norm)).collect();
                eprintln!(
                    "OVERLAP {dtype} max_grad_norm={max_grad_norm} overlap={overlap} shard={shard}: weights differ by at \
                     most {diff:e} from the whole sum after backward (run-to-run {spread:e}); norms {norms:?}"
                );
                if max_grad_norm == 0.0 && spread == 0.0 {
                    assert_eq!(diff, 0.0, "{dtype} overlap={overlap} shard={shard}");
                } else {
                    // Clipping's norm is summed from the workers' parts (rounding), bf16 rounds the weights.
                    let tolerance = if dtype == "bf16" { 2e-2 } else { 1e-5 } + 2.0 * spread;
                    assert!(diff <= tolerance, "{dtype} overlap={overlap} shard={shard}: {diff} > {tolerance}");
                }
            }
        }
    }
    // The default: passes replayed from CUDA graphs, here with sharded sums after backward, give what the same
    // padded passes give eagerly, within the GPU's run-to-run spread.
    let load = LoadOptions { device: "cuda:0".parse().unwrap(), dtype: "bf16".parse().unwrap(), max_model_len: None };
    let hp =
        Hyperparameters { shard_optimizer_state: true, max_grad_norm: 1.0, max_steps: Some(3), ..hyper(2, 2, true, 3) };
    let run = |mode: GraphMode| {
        set_mode(mode);
        two_workers_on(devices, &load, &model_dir, &hp, &examples, false)
    };
    let eager = run(GraphMode::ShapesOnly);
    let eager_again = run(GraphMode::ShapesOnly);
    let before = replays();
    let graphed = run(GraphMode::Graphs);
    let replayed = replays() - before;
    set_mode(GraphMode::Off);
    let (diff, spread) = (max_weight_diff(&graphed, &eager), max_weight_diff(&eager_again, &eager));
    eprintln!(
        "OVERLAP graphs on two GPUs: {replayed} replays; weights differ by {diff:e} from eager (run-to-run {spread:e})"
    );
    // Step 1 records each worker's pass, step 2 replays (its last step may leave one worker without examples).
    assert!(replayed >= 1, "{replayed} graph replays");
    assert!(diff <= 2.0 * spread, "graphed passes on two GPUs differ by {diff} (run-to-run {spread})");
}

#[test]
#[ignore = "needs two CUDA GPUs: run by scripts/train_bench/graphs.sh"]
fn on_two_gpus_sums_recorded_in_graphs_give_the_eager_overlapped_update() {
    use stasc::train::graphed::{set_mode, summing_replays, GraphMode};
    assert!(tch::Cuda::device_count() >= 2, "needs two CUDA GPUs");
    stasc::dist::nccl::default_settings();
    let devices = [Device::Cuda(0), Device::Cuda(1)];
    // 24 examples, 6 steps of 4 (2 per worker): every worker's pass falls in one shape bucket, seen in step 0,
    // recorded after its warm-up in step 1 and replayed with its sums from step 2 on.
    let shapes: Vec<(usize, usize)> = (0..24).map(|i| (8 + (i * 7) % 13, 1 + (i * 5) % 6)).collect();
    let examples = token_examples(&shapes);
    let model_dir = tiny_chat_model();
    let load = LoadOptions { device: "cuda:0".parse().unwrap(), dtype: "bf16".parse().unwrap(), max_model_len: None };
    for (shard, max_grad_norm) in [(false, 0.0), (true, 1.0)] {
        let hp = Hyperparameters {
            overlap_grad_sums: true,
            sums_in_graphs: true,
            shard_optimizer_state: shard,
            max_grad_norm,
            max_steps: Some(6),
            ..hyper(2, 2, true, 6)
        };
        let run = |mode: GraphMode| {
            set_mode(mode);
            two_workers_on(devices, &load, &model_dir, &hp, &examples, false)
        };
        // The same padded passes with their sums run eagerly, twice (the GPU's run-to-run spread), then graphed.
        let eager = run(GraphMode::ShapesOnly);
        let eager_again = run(GraphMode::ShapesOnly);
        let before = summing_replays();
        let graphed = run(GraphMode::Graphs);
        let replayed = summing_replays() - before;
        let (diff, spread) = (max_weight_diff(&graphed, &eager), max_weight_diff(&eager_again, &eager));
        let losses = |r: &TrainedRun| r.0.steps.iter().map(|s| s.loss).collect::<Vec<_>>();
        eprintln!(
            "GRAPHED SUMS shard={shard} max_grad_norm={max_grad_norm}: {replayed} replays with sums; weights differ by \
             {diff:e} from eager (run-to-run {spread:e}); losses {:?} vs {:?}",
            losses(&graphed),
            losses(&eager)
        );
        assert_eq!(graphed.0.steps.len(), 6);
        // Steps 2-5 replay on both workers.
        assert!(replayed >= 8, "{replayed} replays with sums in the graph");
        assert!(diff <= 2.0 * spread, "sums in graphs differ by {diff} (run-to-run {spread})");
        for ((g, e), a) in graphed.0.steps.iter().zip(&eager.0.steps).zip(&eager_again.0.steps) {
            let tolerance = 2.0 * (a.loss - e.loss).abs() + 1e-6 * e.loss.abs();
            assert!((g.loss - e.loss).abs() <= tolerance, "step {}: loss {} vs {}", g.step, g.loss, e.loss);
        }
    }
    set_mode(GraphMode::Off);
}
