//! Sweep execution with a fake cell runner: every cell validated before any runs, finished cells skipped, failures
//! recorded and isolated, --only and --retry-failed, several devices.

use std::path::Path;
use std::sync::Mutex;

use super::*;

struct FakeRunner {
    fail: Vec<String>,
    calls: Mutex<Vec<(String, Option<String>)>>,
}

impl CellRunner for FakeRunner {
    fn run(&self, cell: &CellPlan, device: Option<&str>, _log: &Path) -> Result<(), String> {
        self.calls.lock().unwrap().push((cell.name.clone(), device.map(str::to_string)));
        if self.fail.contains(&cell.name) {
            return Err("boom".into());
        }
        std::fs::write(cell.dir.join("DONE"), "{}").map_err(|e| e.to_string())
    }
}

fn runner(fail: &[&str]) -> FakeRunner {
    FakeRunner { fail: fail.iter().map(|s| s.to_string()).collect(), calls: Mutex::new(vec![]) }
}

/// A sweep over the shipped CPU demo configs, written into a temporary directory.
fn sweep(dir: &Path, grid: &str) -> SweepSpec {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        "[sweep]\nname = \"t\"\nconfig = \"{root}/configs/cpu_demo.yaml\"\nft_config = \"{root}/configs/cpu_fine_tune.yaml\"\nout = \"{}\"\n[grid]\n{grid}",
        dir.join("out").display()
    );
    let file = dir.join("s.toml");
    std::fs::write(&file, &text).unwrap();
    SweepSpec::load(&file).unwrap()
}

fn names(outcome: &SweepOutcome) -> Vec<(&str, &str)> {
    outcome.cells.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect()
}

#[test]
fn cells_run_once_and_finished_cells_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep(dir.path(), "variant = [\"EIE\", \"FNF\"]\nseed = [1, 2]\n");
    let plans = plan(&spec, false).unwrap();
    assert_eq!(plans.len(), 4);
    assert!(plans[0].config.exists() && dir.path().join("out/sweep.json").exists());
    let r = runner(&[]);
    let out = execute(&spec, &plans, &SweepOptions::default(), &r).unwrap();
    assert_eq!(out.failed, 0);
    assert!(names(&out).iter().all(|(_, s)| *s == "ran"));
    let again = execute(&spec, &plans, &SweepOptions::default(), &runner(&[])).unwrap();
    assert!(names(&again).iter().all(|(_, s)| *s == "done"));
    // Each cell's config carries its overrides and its own directory.
    let text = std::fs::read_to_string(&plans[2].config).unwrap();
    assert!(text.contains("initial_answer_with_new_model: false") && text.contains("random_seed: 1"), "{text}");
}

#[test]
fn a_failing_cell_does_not_stop_the_others_and_is_retried_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep(dir.path(), "variant = [\"EIE\", \"ENE\", \"FIE\"]\n");
    let plans = plan(&spec, false).unwrap();
    let out = execute(&spec, &plans, &SweepOptions::default(), &runner(&["variant=ENE"])).unwrap();
    assert_eq!(out.failed, 1);
    assert_eq!(names(&out), vec![("variant=EIE", "ran"), ("variant=ENE", "failed: boom"), ("variant=FIE", "ran")]);
    assert!(plans[1].dir.join("FAILED").exists());
    let skipped = execute(&spec, &plans, &SweepOptions::default(), &runner(&[])).unwrap();
    assert!(skipped.cells[1].1.starts_with("skipped: failed before"));
    let retry = SweepOptions { retry_failed: true, ..Default::default() };
    let r = runner(&[]);
    let retried = execute(&spec, &plans, &retry, &r).unwrap();
    assert_eq!(retried.failed, 0);
    assert_eq!(r.calls.lock().unwrap().len(), 1, "only the failed cell runs again");
    assert!(!plans[1].dir.join("FAILED").exists());
}

#[test]
fn only_runs_the_named_cells_and_suggests_on_a_typo() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep(dir.path(), "init = [\"E\", \"F\"]\n");
    let plans = plan(&spec, false).unwrap();
    let only = SweepOptions { only: vec!["init=F".into()], ..Default::default() };
    let r = runner(&[]);
    execute(&spec, &plans, &only, &r).unwrap();
    assert_eq!(r.calls.lock().unwrap().clone(), vec![("init=F".to_string(), None)]);
    let typo = SweepOptions { only: vec!["init=G".into()], ..Default::default() };
    let err = execute(&spec, &plans, &typo, &runner(&[])).unwrap_err().to_string();
    assert!(err.contains("no cell named 'init=G'") && err.contains("did you mean"), "{err}");
}

#[test]
fn cells_spread_over_devices() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep(dir.path(), "seed = [1, 2, 3, 4]\n");
    let plans = plan(&spec, false).unwrap();
    let opts = SweepOptions { devices: Some(vec!["0".into(), "1".into()]), ..Default::default() };
    let r = runner(&[]);
    execute(&spec, &plans, &opts, &r).unwrap();
    let calls = r.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|(_, d)| d.as_deref() == Some("0") || d.as_deref() == Some("1")));
}

#[test]
fn an_invalid_cell_stops_the_sweep_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep(dir.path(), "temperature = [0.6, -1.0]\n");
    let err = plan(&spec, false).unwrap_err().to_string();
    assert!(err.contains("cell temperature=-1.0") && err.contains("temperature"), "{err}");
    assert!(!dir.path().join("out/temperature=0.6").exists(), "nothing is written before every cell is valid");
}

#[test]
fn a_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep(dir.path(), "variant = [\"EIE\"]\n");
    let plans = plan(&spec, true).unwrap();
    assert_eq!(plans[0].name, "variant=EIE");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn models_in_folders_of_one_name_get_their_own_directories_and_sweep_json_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep(dir.path(), "model = [\"zoo/a/smol\", \"zoo/b/smol\"]\n");
    let plans = plan(&spec, false).unwrap();
    assert_ne!(plans[0].dir, plans[1].dir);
    for (p, model) in plans.iter().zip(["zoo/a/smol", "zoo/b/smol"]) {
        assert!(p.name.starts_with("model=smol-"), "{}", p.name);
        let text = std::fs::read_to_string(&p.config).unwrap();
        assert!(text.contains(&format!("model_path: {model}")), "{text}");
    }
    let index: SweepIndex = serde_json::from_slice(&std::fs::read(dir.path().join("out/sweep.json")).unwrap()).unwrap();
    assert_eq!(index.values[&plans[1].name]["model"], serde_json::json!("zoo/b/smol"));
    assert_eq!(index.values[&plans[0].name]["model"], serde_json::json!("zoo/a/smol"));
}

#[test]
fn a_cell_another_runner_holds_is_left_to_it_and_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep(dir.path(), "variant = [\"EIE\", \"FNF\"]\n");
    let plans = plan(&spec, false).unwrap();
    let held = crate::rundir_lock::RunDirLock::acquire(&plans[0].dir).unwrap();
    let r = runner(&[]);
    let out = execute(&spec, &plans, &SweepOptions::default(), &r).unwrap();
    assert_eq!(out.failed, 0);
    let host = crate::rundir_lock::host_name();
    let expected = format!("running elsewhere: host {host} pid {}", std::process::id());
    assert!(out.cells[0].1.starts_with(&expected), "{:?}", out.cells);
    assert_eq!(out.cells[1].1, "ran");
    assert_eq!(r.calls.lock().unwrap().len(), 1, "the held cell is not started");
    assert!(!plans[0].dir.join("FAILED").exists());
    drop(held);
    let out = execute(&spec, &plans, &SweepOptions::default(), &r).unwrap();
    assert_eq!(names(&out), vec![("variant=EIE", "ran"), ("variant=FNF", "done")]);
}
