//! Builders of run and sweep directories for the report's unit tests: metrics written with serde from
//! `IterationMetrics` values, exactly as the loop writes them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::load::{load_results, ResultSet};
use super::table::Table;
use crate::stasc::spec::FilterLetter;
use crate::stasc::{IterationMetrics, QuestionRewards, Transitions};
use crate::stats::{wilson, Interval};
use crate::sweep::{CellPlan, SweepIndex};

/// The settings a test run's config.resolved.yaml records.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfigFixture {
    /// `stasc_config.model_path`.
    pub model_path: String,
    /// `stasc_config.protocol`.
    pub protocol: &'static str,
    /// `stasc_config.filter`; None = what the variant's letter gives under the protocol.
    pub filter: Option<&'static str>,
    /// `stasc_config.num_star_iterations`.
    pub iterations: usize,
}

impl RunConfigFixture {
    /// stasc's own defaults with the paper's model.
    pub fn stasc_defaults() -> Self {
        RunConfigFixture {
            model_path: "models/Qwen2.5-1.5B-Instruct".into(),
            protocol: "stasc",
            filter: None,
            iterations: 10,
        }
    }

    /// The paper protocol with the paper's model.
    pub fn paper() -> Self {
        RunConfigFixture { protocol: "paper", ..Self::stasc_defaults() }
    }
}

/// A config.resolved.yaml as the loop writes it (the keys the report reads, with the values each protocol gives).
pub fn resolved_config(f: &RunConfigFixture) -> String {
    resolved_config_for(f, "ENF")
}

/// [`resolved_config`] for a run of `variant` (its filter letter picks the filter when the fixture does not).
pub fn resolved_config_for(f: &RunConfigFixture, variant: &str) -> String {
    let paper = f.protocol == "paper";
    let pick = |stasc: &'static str, p: &'static str| if paper { p } else { stasc };
    let filter = f.filter.unwrap_or(match FilterLetter::of_variant(variant) {
        Some(FilterLetter::Improving) => "improving",
        _ => pick("non_decreasing", "correct_to_correct"),
    });
    format!(
        "stasc_version: 0.1.0
stasc_config:
  model_path: {model}
  num_star_iterations: {n}
  evaluator_mode: {mode}
  evaluator_function: in_acc
  number_output_initial_generations: 5
  number_output_corrections: 5
  temperature: 0.6
  top_p: 0.9
  max_tokens: 256
  protocol: {protocol}
  filter: {filter}
  pairing: {pairing}
  correctness: {correctness}
  use_few_shots: {few}
  sft_context: {sft}
  answer_cleaning: {cleaning}
fine_tune:
  training:
    learning_rate: 7e-6
    num_train_epochs: 1.0
    per_device_train_batch_size: 1
    gradient_accumulation_steps: 4
    max_steps: null
    average_tokens_across_devices: {average}
  peft:
    use_lora: false
    dora: false
accelerate:
  num_processes: 2
execution:
  data_parallel_ranks: 2
reward:
  name: in_acc
  plugin: null
",
        model = f.model_path,
        n = f.iterations,
        mode = pick("final", "default"),
        protocol = f.protocol,
        pairing = pick("per_initial", "all_pairs"),
        correctness = pick("full_reward", "positive_reward"),
        few = !paper,
        sft = pick("template", "correction_prompt"),
        cleaning = pick("none", "reference"),
        average = !paper,
    )
}

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
        prefill_tokens: Default::default(),
        prefill_tokens_saved: Default::default(),
    }
}

/// Gives `m` what the loop now records about its questions: `n` train and test questions, the test questions'
/// rewards (question `q<k>`: the first `round(accuracy * n)` correct), and intervals (Wilson for the test
/// accuracies, as the loop computes them; ±0.05 and ±2 points elsewhere).
pub fn with_questions(mut m: IterationMetrics, n: usize) -> IterationMetrics {
    let correct = |acc: f64| (acc * n as f64).round() as usize;
    let (initial, correction) = (correct(m.test_initial_accuracy), correct(m.test_correction_accuracy));
    m.questions.train = n;
    m.questions.test = n;
    m.test_rewards = (0..n)
        .map(|q| QuestionRewards {
            id: format!("q{q}"),
            initial: (q < initial) as u8 as f64,
            correction: (q < correction) as u8 as f64,
        })
        .collect();
    let around = |v: f64, h: f64| Interval { low: v - h, high: v + h };
    let mut put = |name: &str, i: Option<Interval>| {
        m.intervals.insert(name.to_string(), i.unwrap());
    };
    put("test_initial_accuracy", wilson(m.test_initial_accuracy, n));
    put("test_correction_accuracy", wilson(m.test_correction_accuracy, n));
    put("train_initial_accuracy", m.train_initial_accuracy.map(|v| around(v, 0.05)));
    put("train_correction_accuracy", m.train_correction_accuracy.map(|v| around(v, 0.05)));
    for (prefix, t) in [("transitions", m.transitions), ("train_transitions", m.train_transitions)] {
        let values = [t.correct_to_incorrect, t.correct_to_correct, t.incorrect_to_correct, t.incorrect_to_incorrect];
        for (name, v) in Transitions::NAMES.iter().zip(values) {
            put(&format!("{prefix}.{name}"), Some(around(v, 2.0)));
        }
    }
    m
}

/// Writes a run with one iteration per accuracy, under stasc's own defaults and with metrics as older runs wrote
/// them (no question counts, intervals or per-question rewards). A finished run (`done`) has DONE and an untrained
/// last iteration and was planned for exactly these iterations; an unfinished one was planned for one more.
pub fn write_run(dir: &Path, variant: &str, test_correction: &[f64], done: bool) {
    write_run_as(dir, variant, test_correction, done, Some(&RunConfigFixture::stasc_defaults()), 0);
}

/// A run of the paper protocol on 500/500 questions, with intervals and per-question rewards.
pub fn write_paper_run(dir: &Path, variant: &str, test_correction: &[f64], done: bool) {
    write_run_as(dir, variant, test_correction, done, Some(&RunConfigFixture::paper()), 500);
}

/// [`write_run`] with a given configuration (None: no config.resolved.yaml) and `questions` train and test
/// questions (0: metrics as older runs wrote them).
pub fn write_run_as(
    dir: &Path,
    variant: &str,
    test_correction: &[f64],
    done: bool,
    config: Option<&RunConfigFixture>,
    questions: usize,
) {
    for (i, &acc) in test_correction.iter().enumerate() {
        let mut m = metrics(variant, i, acc);
        if questions > 0 {
            m = with_questions(m, questions);
        }
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
    if let Some(config) = config {
        let config = RunConfigFixture { iterations: n, ..config.clone() };
        fs::write(dir.join("config.resolved.yaml"), resolved_config_for(&config, variant)).unwrap();
    }
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
        values: Default::default(),
        command_line: vec![],
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
