//! Bookkeeping tests of the loop with a scripted fake backend: which model samples what, which base is fine-tuned,
//! what the filters keep, resume after a failure, config-change detection, checkpoint retention.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::*;
use crate::data::{Example, Splits};
use crate::prompt::ChatMessage;

/// A generation or training call the fake backend saw.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Call {
    Generate { model: String, keys: Vec<String> },
    Train { base: String, examples: usize },
}

/// Deterministic fake: a sample is correct when a hash of (model, key, index) says so; training writes a directory
/// whose name identifies the new model. It can be told to fail at the k-th call, to simulate a crash.
pub(super) struct FakeBackend {
    pub(super) calls: Rc<RefCell<Vec<Call>>>,
    pub(super) fail_at: Option<usize>,
    pub(super) correct_one_in: u64,
    /// What [`Backend::chunks_per_call`] says (the number of devices of a real backend).
    pub(super) chunks_per_call: usize,
}

fn model_name(p: &Path) -> String {
    let marker = p.join("name.txt");
    std::fs::read_to_string(marker).unwrap_or_else(|_| "M0".into())
}

impl Backend for FakeBackend {
    fn generate(
        &mut self,
        model: &Path,
        requests: &[SamplingJob],
        sampling: &SamplingSpec,
    ) -> Result<Vec<Vec<GeneratedSample>>, BackendError> {
        let mut calls = self.calls.borrow_mut();
        if self.fail_at == Some(calls.len()) {
            return Err("simulated crash".into());
        }
        let m = model_name(model);
        calls.push(Call::Generate { model: m.clone(), keys: requests.iter().map(|r| r.key.clone()).collect() });
        Ok(requests
            .iter()
            .map(|r| {
                (0..r.n)
                    .map(|i| {
                        let mut h = DefaultHasher::new();
                        (&m, &r.key, i, sampling.seed).hash(&mut h);
                        let v = h.finish();
                        let ok = v.is_multiple_of(self.correct_one_in);
                        GeneratedSample {
                            text: format!("{m}|{}|{i}|{}", r.key, if ok { "RIGHT" } else { "WRONG" }),
                            seed: v,
                            tokens: 3,
                            finish_reason: Some("eos".into()),
                        }
                    })
                    .collect()
            })
            .collect())
    }

    fn train(&mut self, base: &Path, examples: &[Vec<ChatMessage>], out: &Path) -> Result<TrainSummary, BackendError> {
        let mut calls = self.calls.borrow_mut();
        if self.fail_at == Some(calls.len()) {
            return Err("simulated crash".into());
        }
        let b = model_name(base);
        calls.push(Call::Train { base: b.clone(), examples: examples.len() });
        std::fs::create_dir_all(out)?;
        // Named after the iteration that trained it, so a resumed backend names models the same way.
        let iter = out.parent().and_then(|p| p.file_name()).unwrap().to_string_lossy().replace("iter_", "");
        let n: usize = iter.parse::<usize>()? + 1;
        std::fs::write(out.join("name.txt"), format!("T{n}({b})"))?;
        // The files a model is loaded (and identified) from, distinct per model.
        std::fs::write(out.join("config.json"), "{}")?;
        std::fs::write(out.join("model.safetensors"), format!("T{n}({b})"))?;
        Ok(TrainSummary { losses: vec![1.0, 0.5], tokens_per_s: 10.0, stage_seconds: None })
    }

    fn chunks_per_call(&self) -> usize {
        self.chunks_per_call
    }
}

pub(super) struct FakePrompts;
impl Prompts for FakePrompts {
    fn initial(&self, q: &str) -> Result<Vec<ChatMessage>, String> {
        Ok(vec![ChatMessage::new("user", q)])
    }
    fn correction(&self, q: &str, a: &str) -> Result<Vec<ChatMessage>, String> {
        Ok(vec![ChatMessage::new("user", q), ChatMessage::new("assistant", a), ChatMessage::new("user", "fix")])
    }
    fn sft(&self, q: &str, a: &str, c: &str) -> Result<Vec<ChatMessage>, String> {
        let mut m = self.correction(q, a)?;
        m.push(ChatMessage::new("assistant", c));
        Ok(m)
    }
}

pub(super) struct FakeScorer;
impl Scorer for FakeScorer {
    fn score(&self, _gold: &[String], text: &str) -> Result<f64, String> {
        Ok(if text.ends_with("RIGHT") { 1.0 } else { 0.0 })
    }
    fn scored_answer(&self, text: &str) -> Option<String> {
        text.rsplit('|').next().map(str::to_string)
    }
}

pub(super) fn splits(train: usize, test: usize) -> Splits {
    let ex =
        |p: &str, i: usize| Example { id: format!("{p}{i}"), question: format!("q {p}{i}"), gold: vec!["x".into()] };
    Splits { train: (0..train).map(|i| ex("tr", i)).collect(), test: (0..test).map(|i| ex("te", i)).collect() }
}

pub(super) fn spec(init: Initialization, filter: CorrectionFilter, ft: FineTuning, iterations: usize) -> RunSpec {
    RunSpec {
        run_name: "t".into(),
        model_path: PathBuf::from("/nonexistent/M0"),
        iterations,
        initialization: init,
        filter,
        fine_tuning: ft,
        pairing: Pairing::PerInitial,
        initial_samples: 3,
        correction_samples: 2,
        sampling: SamplingSpec { temperature: 0.6, top_p: 0.9, max_tokens: 16, seed: 42 },
        correctness: Correctness::FullReward,
        answer_cleaning: AnswerCleaning::None,
        sample_train_at_last_iteration: true,
        keep_checkpoints: false,
        chunk_prompts: 4,
    }
}

pub(super) struct Outcome {
    pub(super) calls: Vec<Call>,
    pub(super) metrics: Vec<IterationMetrics>,
}

pub(super) fn run(
    spec: &RunSpec,
    dir: &Path,
    fail_at: Option<usize>,
) -> (Result<Vec<IterationMetrics>, StascError>, Vec<Call>) {
    run_on(spec, dir, fail_at, 1)
}

/// [`run`] on a backend that takes `chunks_per_call` chunks a call (as one with that many devices does).
pub(super) fn run_on(
    spec: &RunSpec,
    dir: &Path,
    fail_at: Option<usize>,
    chunks_per_call: usize,
) -> (Result<Vec<IterationMetrics>, StascError>, Vec<Call>) {
    let calls = Rc::new(RefCell::new(Vec::new()));
    let mut backend = FakeBackend { calls: calls.clone(), fail_at, correct_one_in: 3, chunks_per_call };
    let fp = serde_json::to_value(spec).unwrap();
    let r = run_stasc(spec, &splits(6, 4), &mut backend, &FakePrompts, &FakeScorer, dir, &fp, &RunOptions::default());
    let c = calls.borrow().clone();
    (r, c)
}

pub(super) fn run_ok(spec: &RunSpec, dir: &Path) -> Outcome {
    let (r, calls) = run(spec, dir, None);
    Outcome { calls, metrics: r.unwrap() }
}

pub(super) fn generate_models(calls: &[Call], phase: &str) -> Vec<(String, String)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Generate { model, keys } => Some(keys.iter().map(move |k| (model.clone(), k.clone()))),
            _ => None,
        })
        .flatten()
        .filter(|(_, k)| k.contains(phase))
        .collect()
}

fn train_bases(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Train { base, .. } => Some(base.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn evolving_initialization_samples_initial_answers_from_the_current_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(Initialization::Evolving, CorrectionFilter::NonDecreasing, FineTuning::Evolving, 2);
    s.keep_checkpoints = true;
    let out = run_ok(&s, dir.path());
    let init = generate_models(&out.calls, "/initial/");
    for n in 0..=2 {
        let models: Vec<&String> =
            init.iter().filter(|(_, k)| k.starts_with(&format!("iter{n}/"))).map(|(m, _)| m).collect();
        assert_eq!(models.len(), 10, "6 train + 4 test prompts at iteration {n}");
        let expected = out.metrics[n].model.clone();
        let expected_name = if n == 0 { "M0".to_string() } else { model_name(Path::new(&expected)) };
        assert!(models.iter().all(|m| **m == expected_name), "iteration {n}: {models:?} vs {expected_name}");
    }
    assert_eq!(init.iter().filter(|(m, _)| m == "M0").count(), 10);
}

#[test]
fn fixed_initialization_samples_initial_answers_once_from_m0() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(Initialization::Fixed, CorrectionFilter::NonDecreasing, FineTuning::Evolving, 2);
    let out = run_ok(&s, dir.path());
    let init = generate_models(&out.calls, "/initial/");
    assert_eq!(init.len(), 10, "one round of initial answers only");
    assert!(init.iter().all(|(m, k)| m == "M0" && k.starts_with("iter0/")));
    assert!(out.metrics.iter().all(|m| m.initial_answers_from == 0));
    // Corrections still come from the current model.
    let corr = generate_models(&out.calls, "/correction/");
    assert!(corr.iter().any(|(m, k)| k.starts_with("iter2/") && m.starts_with('T')));
}

#[test]
fn fixed_fine_tuning_always_starts_from_m0() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(Initialization::Evolving, CorrectionFilter::NonDecreasing, FineTuning::Fixed, 3);
    let out = run_ok(&s, dir.path());
    assert_eq!(train_bases(&out.calls), vec!["M0", "M0", "M0"]);
}

#[test]
fn evolving_fine_tuning_starts_from_the_previous_model() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(Initialization::Evolving, CorrectionFilter::NonDecreasing, FineTuning::Evolving, 3);
    let out = run_ok(&s, dir.path());
    assert_eq!(train_bases(&out.calls), vec!["M0", "T1(M0)", "T2(T1(M0))"]);
}

#[test]
fn filtered_counts_match_the_filter_on_saved_rewards() {
    for filter in [CorrectionFilter::Improving, CorrectionFilter::NonDecreasing, CorrectionFilter::CorrectToCorrect] {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(Initialization::Evolving, filter, FineTuning::Evolving, 1);
        let out = run_ok(&s, dir.path());
        let corr: Vec<records::CorrectionRecord> =
            rundir::read_jsonl(&dir.path().join("iter_0/corrections.jsonl")).unwrap();
        let train: Vec<_> = corr.iter().filter(|c| c.split == records::Split::Train).collect();
        assert_eq!(train.len(), 6 * 3 * 2, "K_init x K_corr pairs per train question");
        let expected = train
            .iter()
            .filter(|c| match filter {
                CorrectionFilter::Improving => c.initial_reward == 0.0 && c.reward == 1.0,
                CorrectionFilter::NonDecreasing => c.reward == 1.0,
                CorrectionFilter::CorrectToCorrect => c.initial_reward == 1.0 && c.reward == 1.0,
            })
            .count();
        assert_eq!(out.metrics[0].filtered_pairs, expected, "{filter:?}");
        let pairs: Vec<records::TrainPair> = rundir::read_jsonl(&dir.path().join("iter_0/train_pairs.jsonl")).unwrap();
        assert_eq!(pairs.len(), expected);
        assert!(pairs.iter().all(|p| p.messages.last().unwrap().role == "assistant"));
        // The pair's correction was generated from its own initial answer.
        for p in &pairs {
            let c = train
                .iter()
                .find(|c| c.id == p.id && c.initial_sample == p.initial_sample && c.sample == p.correction_sample)
                .unwrap();
            assert!(c.text.contains(&format!("/{}/{}|", p.id, p.initial_sample)), "{}", c.text);
        }
    }
}

#[test]
fn transitions_and_accuracies_agree_with_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(Initialization::Evolving, CorrectionFilter::Improving, FineTuning::Evolving, 0);
    let out = run_ok(&s, dir.path());
    let m = &out.metrics[0];
    let corr: Vec<records::CorrectionRecord> =
        rundir::read_jsonl(&dir.path().join("iter_0/corrections.jsonl")).unwrap();
    let test: Vec<_> = corr.iter().filter(|c| c.split == records::Split::Test).collect();
    assert_eq!(m.transitions.pairs, 4);
    let c2c = test.iter().filter(|c| c.initial_reward == 1.0 && c.reward == 1.0).count() as f64 * 25.0;
    assert_eq!(m.transitions.correct_to_correct, c2c);
    let t = m.transitions;
    let total = t.correct_to_correct + t.correct_to_incorrect + t.incorrect_to_correct + t.incorrect_to_incorrect;
    assert!((total - 100.0).abs() < 1e-9);
    let acc = test.iter().map(|c| c.reward).sum::<f64>() / 4.0;
    assert_eq!(m.test_correction_accuracy, acc);
    assert!(!m.trained && m.train_loss.is_none(), "the last iteration evaluates only");
    assert!(dir.path().join("DONE").exists());
}

#[test]
fn empty_filtered_set_means_no_training() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(Initialization::Evolving, CorrectionFilter::Improving, FineTuning::Evolving, 2);
    let calls = Rc::new(RefCell::new(Vec::new()));
    // Nothing is ever correct, so nothing improves.
    let mut backend = FakeBackend { calls: calls.clone(), fail_at: None, correct_one_in: u64::MAX, chunks_per_call: 1 };
    let fp = serde_json::to_value(&s).unwrap();
    let m =
        run_stasc(&s, &splits(3, 2), &mut backend, &FakePrompts, &FakeScorer, dir.path(), &fp, &RunOptions::default())
            .unwrap();
    assert!(train_bases(&calls.borrow()).is_empty());
    assert_eq!(m[0].filtered_pairs, 0);
    assert!(!m[0].trained);
    assert_eq!(m[0].no_training_reason.as_deref(), Some("no pair passed the filter"));
    assert_eq!(m[1].model, "M0", "the model stays as it is");
}

#[test]
fn a_failed_run_resumes_without_sampling_anything_twice() {
    let s = spec(Initialization::Evolving, CorrectionFilter::NonDecreasing, FineTuning::Evolving, 2);
    let reference = tempfile::tempdir().unwrap();
    let full = run_ok(&s, reference.path());
    let total_calls = full.calls.len();
    for fail_at in 1..total_calls {
        let dir = tempfile::tempdir().unwrap();
        let (r, first) = run(&s, dir.path(), Some(fail_at));
        assert!(r.unwrap_err().to_string().contains("simulated crash"));
        let second = run_ok(&s, dir.path());
        let mut keys: Vec<String> = generate_models(&first, "iter").into_iter().map(|(_, k)| k).collect();
        keys.extend(generate_models(&second.calls, "iter").into_iter().map(|(_, k)| k));
        let mut dedup = keys.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(keys.len(), dedup.len(), "crash at call {fail_at}: a prompt was sampled twice");
        assert_eq!(keys.len(), generate_models(&full.calls, "iter").len(), "crash at call {fail_at}: lost prompts");
        for n in 0..=2 {
            for f in ["initial.jsonl", "corrections.jsonl", "train_pairs.jsonl"] {
                let a = std::fs::read_to_string(reference.path().join(format!("iter_{n}/{f}"))).unwrap();
                let b = std::fs::read_to_string(dir.path().join(format!("iter_{n}/{f}"))).unwrap();
                assert_eq!(a, b, "crash at call {fail_at}: iter_{n}/{f} differs");
            }
        }
        assert!(!dir.path().join("iter_0/.partial").exists());
    }
}

/// The generate calls' keys, call by call.
fn generate_calls(calls: &[Call]) -> Vec<Vec<String>> {
    calls.iter().filter_map(|c| if let Call::Generate { keys, .. } = c { Some(keys.clone()) } else { None }).collect()
}

#[test]
fn several_chunks_a_call_sample_and_save_what_one_chunk_a_call_does() {
    let s = spec(Initialization::Evolving, CorrectionFilter::NonDecreasing, FineTuning::Evolving, 1);
    let files = |dir: &Path| -> Vec<String> {
        let names = ["initial.jsonl", "corrections.jsonl", "train_pairs.jsonl"];
        (0..=1)
            .flat_map(|n| names.map(|f| std::fs::read_to_string(dir.join(format!("iter_{n}/{f}"))).unwrap()))
            .collect()
    };
    let reference = tempfile::tempdir().unwrap();
    let one = run_ok(&s, reference.path());
    let one_calls = generate_calls(&one.calls);
    for per_call in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let (r, calls) = run_on(&s, dir.path(), None, per_call);
        r.unwrap();
        assert_eq!(files(dir.path()), files(reference.path()), "{per_call} chunks a call");
        // Each call is `per_call` consecutive one-chunk calls of the same phase, joined.
        let mut expected = Vec::new();
        let phase_of = |keys: &[String]| keys[0].split('/').take(2).collect::<Vec<_>>().join("/");
        let mut group: Vec<Vec<String>> = Vec::new();
        for keys in &one_calls {
            if group.len() == per_call || group.first().is_some_and(|g| phase_of(g) != phase_of(keys)) {
                expected.push(group.concat());
                group.clear();
            }
            group.push(keys.clone());
        }
        expected.push(group.concat());
        assert_eq!(generate_calls(&calls), expected, "{per_call} chunks a call");
        assert!(expected.len() < one_calls.len());
    }
}

#[test]
fn a_run_killed_with_one_device_count_resumes_with_another() {
    let s = spec(Initialization::Evolving, CorrectionFilter::NonDecreasing, FineTuning::Evolving, 1);
    let reference = tempfile::tempdir().unwrap();
    run_ok(&s, reference.path());
    for (before, after) in [(2, 1), (1, 3), (3, 2)] {
        let (_, all) = run_on(&s, tempfile::tempdir().unwrap().path(), None, before);
        for fail_at in 1..all.len() {
            let dir = tempfile::tempdir().unwrap();
            let (r, first) = run_on(&s, dir.path(), Some(fail_at), before);
            assert!(r.unwrap_err().to_string().contains("simulated crash"));
            let (r, second) = run_on(&s, dir.path(), None, after);
            r.unwrap();
            let mut keys: Vec<String> = generate_models(&first, "iter").into_iter().map(|(_, k)| k).collect();
            keys.extend(generate_models(&second, "iter").into_iter().map(|(_, k)| k));
            let total = keys.len();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), total, "{before} then {after} chunks a call, crash at {fail_at}: sampled twice");
            for n in 0..=1 {
                for f in ["initial.jsonl", "corrections.jsonl", "train_pairs.jsonl"] {
                    let a = std::fs::read_to_string(reference.path().join(format!("iter_{n}/{f}"))).unwrap();
                    let b = std::fs::read_to_string(dir.path().join(format!("iter_{n}/{f}"))).unwrap();
                    assert_eq!(a, b, "{before} then {after} chunks a call, crash at {fail_at}: iter_{n}/{f}");
                }
            }
        }
    }
}

#[test]
fn a_changed_config_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(Initialization::Evolving, CorrectionFilter::NonDecreasing, FineTuning::Evolving, 0);
    run_ok(&s, dir.path());
    let mut changed = s.clone();
    changed.sampling.temperature = 0.7;
    let (r, _) = run(&changed, dir.path(), None);
    let err = r.unwrap_err().to_string();
    assert!(err.contains("sampling.temperature (0.6 -> 0.7)") && err.contains("--force"), "{err}");
    let calls = Rc::new(RefCell::new(Vec::new()));
    let mut backend = FakeBackend { calls, fail_at: None, correct_one_in: 3, chunks_per_call: 1 };
    let fp = serde_json::to_value(&changed).unwrap();
    let opts = RunOptions { force: true, ..Default::default() };
    run_stasc(&changed, &splits(6, 4), &mut backend, &FakePrompts, &FakeScorer, dir.path(), &fp, &opts).unwrap();
}

#[test]
fn only_the_current_checkpoint_is_kept_unless_asked() {
    let s = spec(Initialization::Evolving, CorrectionFilter::NonDecreasing, FineTuning::Evolving, 3);
    let dir = tempfile::tempdir().unwrap();
    run_ok(&s, dir.path());
    let kept: Vec<bool> = (0..3).map(|n| dir.path().join(format!("iter_{n}/model")).exists()).collect();
    assert_eq!(kept, vec![false, false, true]);
    let mut all = s.clone();
    all.keep_checkpoints = true;
    let dir = tempfile::tempdir().unwrap();
    run_ok(&all, dir.path());
    assert!((0..3).all(|n| dir.path().join(format!("iter_{n}/model")).exists()));
}

#[test]
fn variant_names_follow_the_paper() {
    let s = spec(Initialization::Fixed, CorrectionFilter::Improving, FineTuning::Evolving, 0);
    assert_eq!(s.variant(), "FIE");
}

#[test]
fn samples_jsonl_joins_each_correction_with_its_question_initial_answer_and_filter_decision() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(Initialization::Evolving, CorrectionFilter::Improving, FineTuning::Evolving, 1);
    run_ok(&s, dir.path());
    for n in 0..=1 {
        let iter = dir.path().join(format!("iter_{n}"));
        let lines: Vec<serde_json::Value> = rundir::read_jsonl(&iter.join("samples.jsonl")).unwrap();
        let corrections: Vec<records::CorrectionRecord> = rundir::read_jsonl(&iter.join("corrections.jsonl")).unwrap();
        let pairs: Vec<records::TrainPair> = rundir::read_jsonl(&iter.join("train_pairs.jsonl")).unwrap();
        assert_eq!(lines.len(), corrections.len(), "one line per correction");
        let keys: Vec<&str> = lines[0].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "correction_answer",
                "correction_finish_reason",
                "correction_reward",
                "correction_sample",
                "correction_text",
                "filter_reason",
                "gold",
                "id",
                "initial_answer",
                "initial_finish_reason",
                "initial_reward",
                "initial_sample",
                "initial_text",
                "kept",
                "question",
                "split",
                "train_pairs",
                "transition",
            ]
        );
        for (line, c) in lines.iter().zip(&corrections) {
            assert_eq!(line["id"], c.id.as_str());
            assert_eq!(line["question"], format!("q {}", c.id).as_str());
            assert_eq!(line["gold"], serde_json::json!(["x"]));
            assert_eq!(line["correction_text"], c.text.as_str());
            assert_eq!(line["correction_reward"], c.reward);
            assert_eq!(line["initial_reward"], c.initial_reward);
            let initial_text = line["initial_text"].as_str().unwrap();
            let expected_initial = format!("/{}|{}|", c.id, c.initial_sample);
            assert!(
                initial_text.contains(&expected_initial),
                "{initial_text} is the initial answer {expected_initial}"
            );
            assert_eq!(line["correction_answer"], c.text.rsplit('|').next().unwrap());
            assert_eq!(line["correction_finish_reason"], "eos");
            assert_eq!(line["initial_finish_reason"], "eos");
            let fixed = c.initial_reward == 0.0 && c.reward == 1.0;
            let transition = match (c.initial_reward == 1.0, c.reward == 1.0) {
                (true, false) => "C→I",
                (true, true) => "C→C",
                (false, true) => "I→C",
                (false, false) => "I→I",
            };
            assert_eq!(line["transition"], transition);
            match c.split {
                records::Split::Test => {
                    assert_eq!(line["kept"], serde_json::Value::Null);
                    assert_eq!(line["train_pairs"], 0);
                }
                records::Split::Train => {
                    assert_eq!(line["kept"], fixed, "{line}");
                    assert!(line["filter_reason"].as_str().unwrap().starts_with("improving: "));
                    let in_pairs = pairs.iter().any(|p| {
                        p.id == c.id && p.initial_sample == c.initial_sample && p.correction_sample == c.sample
                    });
                    assert_eq!(line["train_pairs"], usize::from(in_pairs));
                    assert_eq!(in_pairs, fixed);
                }
            }
        }
        let kept = lines.iter().filter(|l| l["kept"] == true).count();
        assert_eq!(kept, pairs.len(), "iteration {n}: kept lines are the train pairs");
        assert!(kept > 0 && lines.iter().any(|l| l["kept"] == false), "the fake draws both kinds");
    }
}

/// The fake backend, with every `prepare` and `generate` logged by model, in order.
struct Preparing {
    inner: FakeBackend,
    log: Vec<String>,
}

impl Backend for Preparing {
    fn prepare(&mut self, model: &Path) -> Result<(), BackendError> {
        self.log.push(format!("prepare {}", model_name(model)));
        Ok(())
    }

    fn generate(
        &mut self,
        model: &Path,
        requests: &[SamplingJob],
        sampling: &SamplingSpec,
    ) -> Result<Vec<Vec<GeneratedSample>>, BackendError> {
        let phase = if requests.iter().any(|r| r.key.contains("/initial/")) { "initial" } else { "corrections" };
        if self.log.last().is_none_or(|l| !l.ends_with(phase)) {
            self.log.push(format!("generate {} {phase}", model_name(model)));
        }
        self.inner.generate(model, requests, sampling)
    }

    fn train(&mut self, base: &Path, examples: &[Vec<ChatMessage>], out: &Path) -> Result<TrainSummary, BackendError> {
        self.inner.train(base, examples, out)
    }
}

#[test]
fn sampling_phases_load_their_model_first_and_time_loading_as_its_own_phase() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(Initialization::Evolving, CorrectionFilter::NonDecreasing, FineTuning::Evolving, 1);
    let inner =
        FakeBackend { calls: Rc::new(RefCell::new(Vec::new())), fail_at: None, correct_one_in: 3, chunks_per_call: 1 };
    let mut backend = Preparing { inner, log: Vec::new() };
    let fp = serde_json::to_value(&s).unwrap();
    let metrics =
        run_stasc(&s, &splits(6, 4), &mut backend, &FakePrompts, &FakeScorer, dir.path(), &fp, &RunOptions::default())
            .unwrap();
    assert_eq!(
        backend.log,
        [
            "prepare M0",
            "generate M0 initial",
            "prepare M0",
            "generate M0 corrections",
            "prepare T1(M0)",
            "generate T1(M0) initial",
            "prepare T1(M0)",
            "generate T1(M0) corrections",
        ]
    );
    for m in &metrics {
        assert!(m.phase_seconds.contains_key("load"), "{:?}", m.phase_seconds);
        assert!(!m.tokens_per_s.contains_key("load"), "loading has no tokens/s: {:?}", m.tokens_per_s);
        assert!(m.tokens_per_s.contains_key("initial") && m.tokens_per_s.contains_key("corrections"));
    }
}
