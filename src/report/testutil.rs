//! Builders of run and sweep directories for the report's unit tests: metrics written with serde from
//! `IterationMetrics` values, exactly as the loop writes them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::load::{load_results, ResultSet};
use super::table::Table;
use crate::stasc::{IterationMetrics, Transitions};
use crate::sweep::{CellPlan, SweepIndex};

/// Metrics of one iteration: the given test correction accuracy, fixed known values elsewhere.
pub fn metrics(variant: &str, iteration: usize, test_correction: f64) -> IterationMetrics {
    let t = |a, b, c, d, pairs| Transitions {
        correct_to_incorrect: a,
        correct_to_correct: b,
        incorrect_to_correct: c,
        incorrect_to_incorrect: d,
        pairs,
    };
    IterationMetrics {
        iteration,
        variant: variant.into(),
        model: "M0".into(),
        initial_answers_from: 0,
        train_initial_accuracy: Some(0.5),
        train_correction_accuracy: Some(0.6),
        test_initial_accuracy: 0.25,
        test_correction_accuracy: test_correction,
        transitions: t(10.0, 20.0, 30.0, 40.0, 500),
        train_transitions: t(5.0, 15.0, 25.0, 55.0, 2000),
        filtered_pairs: 100 + iteration,
        trained: true,
        no_training_reason: None,
        train_loss: Some(1.5),
        loss_curve: vec![2.0, 1.0],
        phase_seconds: BTreeMap::from([("initial".into(), 10.0), ("corrections".into(), 20.0), ("train".into(), 30.0)]),
        tokens_per_s: BTreeMap::from([
            ("initial".into(), 100.0),
            ("corrections".into(), 200.0),
            ("train".into(), 300.0),
        ]),
        questions: Default::default(),
        intervals: Default::default(),
        test_rewards: Vec::new(),
    }
}

/// Writes a run with one iteration per accuracy. A finished run (`done`) has DONE and an untrained last
/// iteration and was planned for exactly these iterations; an unfinished one was planned for one more.
pub fn write_run(dir: &Path, variant: &str, test_correction: &[f64], done: bool) {
    for (i, &acc) in test_correction.iter().enumerate() {
        let mut m = metrics(variant, i, acc);
        if done && i + 1 == test_correction.len() {
            m.trained = false;
            m.no_training_reason = Some("last iteration: evaluation only".into());
            m.train_loss = None;
            m.loss_curve.clear();
            m.phase_seconds.remove("train");
            m.tokens_per_s.remove("train");
        }
        let iter_dir = dir.join(format!("iter_{i}"));
        fs::create_dir_all(&iter_dir).unwrap();
        fs::write(iter_dir.join("metrics.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
    }
    let n = if done { test_correction.len() - 1 } else { test_correction.len() };
    fs::write(dir.join("config.resolved.yaml"), format!("stasc:\n  num_star_iterations: {n}\n")).unwrap();
    if done {
        fs::write(dir.join("DONE"), "{\"iterations\": 1}\n").unwrap();
    }
}

/// Writes sweep.json for cells named `k=v,k=v` (their overrides parsed from the names).
pub fn write_sweep_index(dir: &Path, name: &str, axes: &[&str], cells: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    let index = SweepIndex {
        name: name.into(),
        file: PathBuf::from("experiments/test.toml"),
        axes: axes.iter().map(|a| a.to_string()).collect(),
        cells: cells
            .iter()
            .map(|c| CellPlan {
                name: c.to_string(),
                overrides: c
                    .split(',')
                    .map(|kv| kv.split_once('=').unwrap())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                dir: PathBuf::from("runs/elsewhere").join(c),
                config: PathBuf::from("runs/elsewhere").join(c).join("stasc_config.yaml"),
                ft_config: PathBuf::from("runs/elsewhere").join(c).join("fine_tune.yaml"),
                accelerate_config: None,
            })
            .collect(),
    };
    fs::write(dir.join("sweep.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
}

/// The cells of column `name`.
pub fn column<'a>(t: &'a Table, name: &str) -> Vec<&'a str> {
    let i = t.headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}: {:?}", t.headers));
    t.rows.iter().map(|r| r[i].as_str()).collect()
}

/// A sweep of EIE seeds 1 and 2 (finished, 4 iterations) and FNF seed 1 (2 of 3 iterations).
pub fn sweep() -> (tempfile::TempDir, ResultSet) {
    let tmp = tempfile::tempdir().unwrap();
    let names = ["variant=EIE,seed=1", "variant=EIE,seed=2", "variant=FNF,seed=1"];
    write_sweep_index(tmp.path(), "sw", &["variant", "seed"], &names);
    write_run(&tmp.path().join(names[0]), "EIE", &[0.125, 0.25, 0.25, 0.1875], true);
    write_run(&tmp.path().join(names[1]), "EIE", &[0.125, 0.375, 0.25, 0.25], true);
    write_run(&tmp.path().join(names[2]), "FNF", &[0.5, 0.25], false);
    let set = load_results(tmp.path()).unwrap();
    (tmp, set)
}
