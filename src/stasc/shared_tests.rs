//! Sampling shared between runs ([`super::shared`]), with the scripted fake backend of `tests.rs`: a batch is
//! sampled once however many runs need it, what a run reads equals what it would have sampled, and batches that
//! differ in model, prompts or settings are not mixed up.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use super::shared::SharedSampling;
use super::tests::{splits, Call, FakeBackend, FakePrompts, FakeScorer};
use super::*;

/// M0 as a directory with the files a model is identified by.
fn m0(dir: &Path) -> std::path::PathBuf {
    let m = dir.join("M0");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("config.json"), "{}").unwrap();
    std::fs::write(m.join("model.safetensors"), "M0 weights").unwrap();
    m
}

fn spec(model: &Path, init: Initialization, filter: CorrectionFilter, ft: FineTuning) -> RunSpec {
    RunSpec { model_path: model.to_path_buf(), ..super::tests::spec(init, filter, ft, 1) }
}

/// Runs `spec` in `run_dir`, sharing through `shared` when given; returns the backend's generation keys.
fn run(spec: &RunSpec, run_dir: &Path, shared: Option<&Path>) -> Vec<String> {
    let calls = Rc::new(RefCell::new(Vec::new()));
    let mut fake = FakeBackend { calls: calls.clone(), fail_at: None, correct_one_in: 3, chunks_per_call: 1 };
    let fp = serde_json::to_value(spec).unwrap();
    let (train, test) = (6, 4);
    let options = RunOptions::default();
    match shared {
        Some(dir) => {
            let mut backend = SharedSampling::new(&mut fake, dir, run_dir, serde_json::json!({"device": "fake"}));
            run_stasc(spec, &splits(train, test), &mut backend, &FakePrompts, &FakeScorer, run_dir, &fp, &options)
                .unwrap();
        }
        None => {
            run_stasc(spec, &splits(train, test), &mut fake, &FakePrompts, &FakeScorer, run_dir, &fp, &options)
                .unwrap();
        }
    }
    let keys = calls
        .borrow()
        .iter()
        .filter_map(|c| match c {
            Call::Generate { keys, .. } => Some(keys.clone()),
            Call::Train { .. } => None,
        })
        .flatten()
        .collect();
    keys
}

fn file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

#[test]
fn iteration_zero_is_sampled_once_across_variants_and_reads_back_what_it_would_sample() {
    let root = tempfile::tempdir().unwrap();
    let model = m0(root.path());
    let shared = root.path().join("sweep/.shared");
    use super::{CorrectionFilter as C, FineTuning as Ft, Initialization as I};
    let variants = [
        ("EIE", I::Evolving, C::Improving, Ft::Evolving),
        ("FNF", I::Fixed, C::NonDecreasing, Ft::Fixed),
        ("EIF", I::Evolving, C::Improving, Ft::Fixed),
    ];
    let mut sampled_iter0 = 0;
    for (k, (name, init, filter, ft)) in variants.iter().enumerate() {
        let s = spec(&model, *init, *filter, *ft);
        let keys = run(&s, &root.path().join("sweep").join(name), Some(&shared));
        let iter0 = keys.iter().filter(|k| k.starts_with("iter0/")).count();
        if k == 0 {
            // 6 train + 4 test initial prompts, 6 x 3 + 4 corrections prompts.
            assert_eq!(iter0, 10 + 22, "{name} samples iteration 0");
        } else {
            assert_eq!(iter0, 0, "{name} reads iteration 0 from the shared directory: {keys:?}");
        }
        if *name == "EIF" {
            // EIE and EIF both fine-tune M0 on the same pairs at iteration 0: the same M1 (same files), so
            // iteration 1 is shared too.
            assert!(keys.is_empty(), "EIF samples nothing of its own: {keys:?}");
        }
        sampled_iter0 += iter0;
        // The same run without sharing writes exactly the same samples and pairs.
        let alone = root.path().join("alone").join(name);
        run(&s, &alone, None);
        let shared_dir = root.path().join("sweep").join(name);
        for f in
            ["iter_0/initial.jsonl", "iter_0/corrections.jsonl", "iter_0/train_pairs.jsonl", "iter_1/corrections.jsonl"]
        {
            assert_eq!(file(&shared_dir, f), file(&alone, f), "{name}: {f}");
        }
    }
    assert_eq!(sampled_iter0, 32, "iteration 0 sampled once for three variants");
    let entries = std::fs::read_dir(&shared)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"));
    // Chunks of 4 prompts: 3 of initial answers (10 prompts), 6 of corrections (22 prompts) at iteration 0, plus
    // the later batches of each run.
    assert!(entries.count() >= 9);
}

#[test]
fn a_different_seed_or_model_samples_again() {
    let root = tempfile::tempdir().unwrap();
    let model = m0(root.path());
    let shared = root.path().join(".shared");
    let s = spec(&model, Initialization::Fixed, CorrectionFilter::Improving, FineTuning::Fixed);
    run(&s, &root.path().join("a"), Some(&shared));
    let mut seed = s.clone();
    seed.sampling.seed += 1;
    assert_eq!(
        run(&seed, &root.path().join("b"), Some(&shared)).iter().filter(|k| k.starts_with("iter0/")).count(),
        32
    );
    // Same path, other weights: the files are what counts, not the name.
    std::fs::write(model.join("model.safetensors"), "other weights").unwrap();
    assert_eq!(run(&s, &root.path().join("c"), Some(&shared)).iter().filter(|k| k.starts_with("iter0/")).count(), 32);
}
