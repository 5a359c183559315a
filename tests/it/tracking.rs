//! Experiment tracking end to end: one tiny `stasc run` on the CPU with `report_to: [mlflow, tensorboard]` against
//! the real MLflow server that scripts/test.sh starts (STASC_TEST_MLFLOW_URI); MLflow's REST API must give back the
//! resolved configuration, every iteration's metrics, every optimiser step's loss and the report; tensorboard's own
//! EventAccumulator must read the event files back; and a run whose MLflow server is not there still finishes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::stasc_run::tiny_run;

/// The tiny run every test here (and tests/it/lineage.rs) looks at.
pub(crate) struct TrackedRun {
    _tmp: tempfile::TempDir,
    /// The run directory.
    pub(crate) out: PathBuf,
    /// stdout and stderr of `stasc run`.
    pub(crate) log: String,
    /// The MLflow server it logged to.
    pub(crate) mlflow: String,
}

/// The MLflow server scripts/test.sh started.
fn mlflow_uri() -> String {
    std::env::var("STASC_TEST_MLFLOW_URI").unwrap_or_else(|_| {
        panic!(
            "STASC_TEST_MLFLOW_URI is not set: run the tests through scripts/test.sh, which installs MLflow \
             (scripts/setup_test.sh) and starts `mlflow server` on a loopback port"
        )
    })
}

/// Python of the venv with mlflow and tensorboard that scripts/setup_test.sh installs.
pub(crate) fn tracking_python() -> PathBuf {
    let cache = std::env::var_os("STASC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/stasc"));
    let python = cache.join("tracking-venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup_test.sh (scripts/test.sh does)", python.display());
    python
}

fn stasc(args: &[&str], config: &Path, ft: &Path, out: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stasc"));
    cmd.args(args).arg("--config").arg(config).arg("--ft_config").arg(ft).arg("--out").arg(out);
    cmd.env("OMP_NUM_THREADS", "1").env_remove("MLFLOW_EXPERIMENT_NAME").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// Adds `report_to` (and an experiment name) to the tiny run's fine_tune.yaml.
fn with_trackers(ft: &Path, report_to: &str) {
    let text = std::fs::read_to_string(ft).unwrap();
    let text = text.replace("training:\n", &format!("training:\n  report_to: {report_to}\n  project_name: stasc-it\n"));
    std::fs::write(ft, text).unwrap();
}

pub(crate) fn tracked_run() -> &'static TrackedRun {
    static RUN: OnceLock<TrackedRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let mlflow = mlflow_uri();
        let tmp = tempfile::tempdir().unwrap();
        let (config, ft) = tiny_run(tmp.path(), 4);
        with_trackers(&ft, "[mlflow, tensorboard, wandb]");
        let out = tmp.path().join("run");
        let (ok, log) = stasc(&["run"], &config, &ft, &out, &[("MLFLOW_TRACKING_URI", &mlflow)]);
        assert!(ok, "stasc run failed:\n{log}");
        TrackedRun { _tmp: tmp, out, log, mlflow }
    })
}

fn get(uri: &str, endpoint: &str) -> Value {
    let url = format!("{uri}/api/2.0/{endpoint}");
    let r = minreq::get(&url).with_timeout(30).send().unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(r.status_code, 200, "{url}: {}", r.as_str().unwrap_or(""));
    serde_json::from_str(r.as_str().unwrap()).unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

#[test]
fn wandb_gets_one_line_saying_what_to_use_instead() {
    let run = tracked_run();
    let lines: Vec<&str> = run.log.lines().filter(|l| l.contains("\"wandb\"")).collect();
    assert_eq!(lines.len(), 1, "{}", run.log);
    assert!(lines[0].starts_with("warning: ") && lines[0].contains("use report_to: [\"mlflow\"]"), "{}", lines[0]);
}

#[test]
fn mlflow_holds_the_config_the_metrics_every_step_and_the_report() {
    let run = tracked_run();
    let state = read_json(&run.out.join("tracking.json"));
    let run_id = state["mlflow"]["run_id"].as_str().expect("tracking.json names the MLflow run");
    assert_eq!(state["logged"]["mlflow"], serde_json::json!([0, 1]));
    let got = get(&run.mlflow, &format!("mlflow/runs/get?run_id={run_id}"));
    let info = &got["run"]["info"];
    assert_eq!(info["status"], "FINISHED");
    assert_eq!(info["run_name"], "run");
    let experiment =
        get(&run.mlflow, &format!("mlflow/experiments/get?experiment_id={}", info["experiment_id"].as_str().unwrap()));
    assert_eq!(experiment["experiment"]["name"], "stasc-it", "training.project_name names the experiment");

    // Parameters: the resolved configuration, every default filled in.
    let params: Vec<(String, String)> = got["run"]["data"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap().to_string(), p["value"].as_str().unwrap().to_string()))
        .collect();
    let param = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(param("stasc_config.temperature"), Some("0.6"));
    assert_eq!(param("stasc_config.number_output_initial_generations"), Some("2"));
    assert_eq!(param("fine_tune.training.learning_rate"), Some("0.00001"));
    assert_eq!(param("stasc_config.filter"), Some("non_decreasing"), "a default the file does not set");

    // Metrics per iteration, as metrics.json has them.
    for key in ["test/correction_accuracy", "test/initial_accuracy", "train/filtered_pairs"] {
        let history = get(&run.mlflow, &format!("mlflow/metrics/get-history?run_id={run_id}&metric_key={key}"));
        let mut points: Vec<(u64, f64)> = history["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["step"].as_u64().unwrap_or(0), m["value"].as_f64().unwrap()))
            .collect();
        points.sort_by_key(|p| p.0);
        let field = key.rsplit('/').next().unwrap();
        let field = if field == "filtered_pairs" { field.to_string() } else { format!("test_{field}") };
        let expected: Vec<(u64, f64)> = (0..=1)
            .map(|n| {
                let m = read_json(&run.out.join(format!("iter_{n}/metrics.json")));
                (n as u64, m[field.as_str()].as_f64().unwrap())
            })
            .collect();
        assert_eq!(points, expected, "{key}");
    }
    // Every optimiser step's loss, at its step.
    let train = read_json(&run.out.join("iter_0/train.json"));
    let losses: Vec<f64> = train["losses"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap()).collect();
    assert!(!losses.is_empty());
    let history = get(&run.mlflow, &format!("mlflow/metrics/get-history?run_id={run_id}&metric_key=sft/loss"));
    let mut steps: Vec<(u64, f64)> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_u64().unwrap_or(0), m["value"].as_f64().unwrap()))
        .collect();
    steps.sort_by_key(|p| p.0);
    assert_eq!(steps, losses.iter().enumerate().map(|(i, l)| (i as u64, *l)).collect::<Vec<_>>());
    let lr = get(&run.mlflow, &format!("mlflow/metrics/get-history?run_id={run_id}&metric_key=sft/learning_rate"));
    assert_eq!(lr["metrics"].as_array().unwrap().len(), losses.len(), "learning rate per step from train_log.jsonl");

    // The report and the resolved config as artifacts, downloadable from the server.
    let listed = get(&run.mlflow, &format!("mlflow/artifacts/list?run_id={run_id}&path=report"));
    let files: Vec<&str> = listed["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for f in ["report/index.html", "report/results.csv", "report/lineage"] {
        assert!(files.contains(&f), "{f} not in {files:?}");
    }
    let top = get(&run.mlflow, &format!("mlflow/artifacts/list?run_id={run_id}"));
    assert!(top["files"].as_array().unwrap().iter().any(|f| f["path"] == "config.resolved.yaml"), "{top}");
    let url = format!("{}/get-artifact?path=report/index.html&run_uuid={run_id}", run.mlflow);
    let page = minreq::get(&url).with_timeout(30).send().unwrap();
    assert_eq!(page.status_code, 200, "{url}");
    assert!(
        page.as_str().unwrap().contains("questions across iterations"),
        "the uploaded report links its lineage page"
    );
}

#[test]
fn tensorboard_reads_our_event_files_back() {
    let run = tracked_run();
    let dir = run.out.join("tensorboard");
    let script = "import json, sys\n\
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        acc = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0})\n\
        acc.Reload()\n\
        print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()['scalars']}))\n";
    let o = Command::new(tracking_python()).arg("-c").arg(script).arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scalars: Value = serde_json::from_slice(&o.stdout).unwrap();
    let points = |tag: &str| -> Vec<(u64, f64)> {
        scalars[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag} in {scalars}"))
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect()
    };
    for n in 0..=1u64 {
        let m = read_json(&run.out.join(format!("iter_{n}/metrics.json")));
        for (tag, field) in [
            ("test/correction_accuracy", "test_correction_accuracy"),
            ("test/initial_accuracy", "test_initial_accuracy"),
            ("train/filtered_pairs", "filtered_pairs"),
        ] {
            let expected = m[field].as_f64().unwrap() as f32 as f64;
            assert!(points(tag).contains(&(n, expected)), "{tag} at {n}: {:?} vs {expected}", points(tag));
        }
    }
    let train = read_json(&run.out.join("iter_0/train.json"));
    let losses: Vec<(u64, f64)> = train["losses"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64, l.as_f64().unwrap() as f32 as f64))
        .collect();
    assert_eq!(points("sft/loss"), losses);
}

#[test]
fn a_tracking_server_that_is_not_there_only_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, ft) = tiny_run(tmp.path(), 4);
    with_trackers(&ft, "mlflow");
    let out = tmp.path().join("eval");
    // Port 9 on loopback: nothing listens there, so every call is refused.
    let (ok, log) = stasc(&["eval"], &config, &ft, &out, &[("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")]);
    assert!(ok, "the run must go on without its tracker:\n{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.starts_with("warning: mlflow: ")).collect();
    assert_eq!(warnings.len(), 1, "one warning, then mlflow is off:\n{log}");
    assert!(
        warnings[0].contains("127.0.0.1:9") && warnings[0].contains("the run goes on without it"),
        "{}",
        warnings[0]
    );
    assert!(out.join("iter_0/metrics.json").is_file() && out.join("iter_0/samples.jsonl").is_file());
}
