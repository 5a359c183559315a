//! `stasc report` run as a user would, on a sweep directory built from serialised `IterationMetrics` and
//! `SweepIndex` values: files written, exit codes, the paper table against the embedded published numbers, and a
//! one-line error for a directory without runs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stasc::stasc::{IterationMetrics, Transitions};
use stasc::sweep::{CellPlan, SweepIndex};

fn stasc(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stasc")).args(args).current_dir(cwd).output().expect("stasc runs")
}

fn metrics(variant: &str, iteration: usize, test_correction: f64, last: bool) -> IterationMetrics {
    let transitions = Transitions {
        correct_to_incorrect: 2.0,
        correct_to_correct: 10.0,
        incorrect_to_correct: 8.0,
        incorrect_to_incorrect: 80.0,
        pairs: 500,
    };
    IterationMetrics {
        iteration,
        variant: variant.into(),
        model: if iteration == 0 { "M0".into() } else { format!("iter_{}/model", iteration - 1) },
        initial_answers_from: iteration,
        train_initial_accuracy: Some(0.2),
        train_correction_accuracy: Some(0.22),
        test_initial_accuracy: 0.212,
        test_correction_accuracy: test_correction,
        transitions,
        train_transitions: transitions,
        filtered_pairs: 1500 - 10 * iteration,
        trained: !last,
        no_training_reason: last.then(|| "last iteration: evaluation only".to_string()),
        train_loss: (!last).then_some(0.9),
        loss_curve: if last { vec![] } else { vec![1.2, 0.9, 0.6] },
        phase_seconds: BTreeMap::from([("initial".into(), 12.5), ("corrections".into(), 30.0)]),
        tokens_per_s: BTreeMap::from([("initial".into(), 950.0), ("corrections".into(), 800.0)]),
        questions: Default::default(),
        intervals: Default::default(),
        test_rewards: Vec::new(),
    }
}

fn write_run(dir: &Path, variant: &str, accuracies: &[f64], done: bool) {
    for (i, &a) in accuracies.iter().enumerate() {
        let m = metrics(variant, i, a, done && i + 1 == accuracies.len());
        fs::create_dir_all(dir.join(format!("iter_{i}"))).unwrap();
        fs::write(dir.join(format!("iter_{i}/metrics.json")), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    }
    if done {
        fs::write(dir.join("DONE"), "{}").unwrap();
    }
}

fn write_sweep(root: &Path) -> PathBuf {
    let sweep = root.join("grid");
    let cells = ["variant=EIE", "variant=FNF", "variant=ENE"];
    let index = SweepIndex {
        name: "grid".into(),
        file: "experiments/grid.toml".into(),
        axes: vec!["variant".into()],
        cells: cells
            .iter()
            .map(|c| CellPlan {
                name: c.to_string(),
                overrides: vec![("variant".into(), c[8..].to_string())],
                dir: sweep.join(c),
                config: sweep.join(c).join("stasc_config.yaml"),
                ft_config: sweep.join(c).join("fine_tune.yaml"),
                accelerate_config: None,
            })
            .collect(),
    };
    fs::create_dir_all(&sweep).unwrap();
    fs::write(sweep.join("sweep.json"), serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    write_run(&sweep.join(cells[0]), "EIE", &[0.14, 0.23, 0.24], true);
    write_run(&sweep.join(cells[1]), "FNF", &[0.15], false);
    fs::create_dir_all(sweep.join(cells[2])).unwrap();
    fs::write(sweep.join(cells[2]).join("FAILED"), "stasc run exited with 1: killed\n").unwrap();
    sweep
}

#[test]
fn report_of_a_sweep_with_paper_table() {
    let tmp = tempfile::tempdir().unwrap();
    write_sweep(tmp.path());
    // Run from the temporary directory: the templates and published numbers are built into the binary.
    let out = stasc(tmp.path(), &["report", "grid", "--paper"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("note: variant=FNF: 1 iteration, running or failed"), "{stderr}");
    assert!(
        stderr.contains("note: variant=ENE: failed after 0 iterations: stasc run exited with 1: killed"),
        "{stderr}"
    );
    let report = tmp.path().join("reports/grid");
    for f in
        ["results.csv", "summary.csv", "summary.md", "summary.tex", "paper_table.csv", "paper_table.tex", "index.html"]
    {
        assert!(report.join(f).is_file(), "{f} missing; stdout:\n{stdout}");
    }
    let results = fs::read_to_string(report.join("results.csv")).unwrap();
    assert_eq!(results.lines().count(), 1 + 3 + 1);
    assert!(results
        .lines()
        .nth(2)
        .unwrap()
        .starts_with("variant=EIE,1,EIE,iter_0/model,1,0.2,0.22,0.212,0.23,2,10,8,80,500,"));
    let summary = fs::read_to_string(report.join("summary.csv")).unwrap();
    assert!(summary.contains("variant=EIE,EIE,done,3,,0.212,0.14,0.24,2,0.24,2\n"), "{summary}");
    // Ours 0.14, 0.23, 0.24 against the published EIE 0.138, 0.228, 0.216; max 0.24 (it 2) vs 0.23 (it 9).
    let paper = fs::read_to_string(report.join("paper_table.csv")).unwrap();
    let diff = paper.lines().find(|l| l.starts_with("EIE,difference,")).unwrap();
    assert_eq!(diff, "EIE,difference,,0.002,0.002,0.024,,,,,,,,,0.01,,");
    let enf = paper.lines().find(|l| l.starts_with("ENF,ours,")).unwrap();
    assert_eq!(enf, "ENF,ours,0,,,,,,,,,,,,,,");
    let html = fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("Paper table (Qwen2.5-1.5B-Instruct)") && html.matches("<svg").count() >= 5);
}

#[test]
fn report_of_an_empty_directory_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("empty")).unwrap();
    let out = stasc(tmp.path(), &["report", "empty"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "error: no runs found: no iter_0/metrics.json or sweep.json found under empty\n");
    assert!(!tmp.path().join("reports").exists());
}
