//! The Slurm executor against a real one-node Slurm cluster on this machine (scripts/slurm/setup.sh installs and
//! starts it; every test runs it first, so a cluster that cannot start fails the tests with the script's reason):
//! a 2-cell sweep as one job array with its report, a task cancelled mid-run and resubmitted, and two runners on one
//! cell. Cells run the tiny random Qwen2 of tests/fixtures on the CPU with short prompts, so each takes seconds.
//! Every test's name starts with `slurm_` (`cargo test --test it slurm_` selects them); they run one at a time,
//! because the cluster has only as many CPUs as the machine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One Slurm test at a time: they share the cluster's CPUs, and the cancel test needs its task to start promptly.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Runs scripts/slurm/setup.sh once per test process; a failure is every Slurm test's failure, with its reason.
fn cluster() -> std::sync::MutexGuard<'static, ()> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let guard = CLUSTER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let ready = READY.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm/setup.sh");
        let o = Command::new(&script).output().map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("{} failed: {}", script.display(), String::from_utf8_lossy(&o.stderr).trim()))
        }
    });
    if let Err(reason) = ready {
        panic!("the Slurm cluster for these tests did not start: {reason}");
    }
    guard
}

/// A sweep over the tiny model: `seeds` cells, `train` questions each; under `executor = "slurm"`, one CPU per cell.
pub(crate) struct TinySweep {
    dir: tempfile::TempDir,
}

impl TinySweep {
    pub(crate) fn new(seeds: &[u32], train: usize, max_tokens: usize, executor: &str) -> TinySweep {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let d = dir.path();
        let data = d.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let row = |i: usize, prefix: &str| {
            format!("{{\"question_id\": \"{prefix}{i}\", \"question_text\": \"what is {i} plus one\", \"reference\": [\"{}\"]}}", i + 1)
        };
        let rows = |n: usize, prefix: &str| (0..n).map(|i| row(i, prefix)).collect::<Vec<_>>().join("\n");
        std::fs::write(data.join("train.jsonl"), rows(train, "tr")).unwrap();
        std::fs::write(data.join("test.jsonl"), rows(2, "te")).unwrap();
        // Short prompts: the tiny model's context is 256 tokens.
        let prompts = d.join("templates/prompts/qa");
        std::fs::create_dir_all(&prompts).unwrap();
        let q = "user('Q: ' ~ question)";
        std::fs::write(prompts.join("initial.jinja"), format!("{{% set messages = [{q}] %}}")).unwrap();
        std::fs::write(
            prompts.join("correction.jinja"),
            format!("{{% set messages = [{q}, assistant(initial_answer), user('Fix it.')] %}}"),
        )
        .unwrap();
        std::fs::write(
            prompts.join("sft.jinja"),
            format!("{{% set messages = [{q}, assistant(initial_answer), user('Fix it.'), assistant(correction)] %}}"),
        )
        .unwrap();
        std::fs::create_dir_all(d.join("no_few_shots")).unwrap();
        std::fs::write(
            d.join("stasc.yaml"),
            format!(
                "model_path: {model}\ndata_path: {data}\ntask_type: qa\nnum_star_iterations: 1\nrun_name: tiny\n\
                 template_dir: {templates}\nfew_shot_dir: {few}\nnumber_output_initial_generations: 2\n\
                 number_output_corrections: 1\nmax_tokens: {max_tokens}\ndevice: cpu\ndtype: f32\nchunk_prompts: 4\n\
                 only_better_correction: false\nsample_train_at_last_iteration: false\n",
                model = root.join("tests/fixtures/tiny_models/qwen2_tied").display(),
                data = data.display(),
                templates = d.join("templates").display(),
                few = d.join("no_few_shots").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("ft.yaml"),
            "training:\n  learning_rate: 1.0e-4\n  num_train_epochs: 1\n  per_device_train_batch_size: 4\n",
        )
        .unwrap();
        let seeds: Vec<String> = seeds.iter().map(u32::to_string).collect();
        std::fs::write(
            d.join("sweep.toml"),
            format!(
                "[sweep]\nname = \"tiny\"\nconfig = \"stasc.yaml\"\nft_config = \"ft.yaml\"\nout = \"out\"\n\
                 executor = \"{executor}\"\n{slurm}\n[grid]\nseed = [{}]\n",
                seeds.join(", "),
                slurm = if executor == "slurm" { "\n[slurm]\ncpus_per_task = 1\ntime = \"30:00\"\n" } else { "" },
            ),
        )
        .unwrap();
        TinySweep { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn cell(&self, seed: u32) -> PathBuf {
        self.path().join(format!("out/seed={seed}"))
    }

    /// `stasc ARGS` in the sweep's directory.
    pub(crate) fn stasc(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_stasc")).current_dir(self.path()).args(args).output().unwrap()
    }

    fn jobs(&self) -> Vec<serde_json::Value> {
        match std::fs::read_to_string(self.path().join("out/slurm/jobs.json")) {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(_) => vec![],
        }
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Waits until `done` holds, failing after `limit` with `what`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process stopped with SIGSTOP; continued (SIGCONT) by `resume` or on drop, so a failing test leaves none stopped.
struct Paused(u32);

impl Paused {
    /// Stops process `pid`.
    fn new(pid: u32) -> Paused {
        let o = signal(pid, "-STOP");
        assert!(o.status.success(), "kill -STOP {pid}: {}", text(&o));
        Paused(pid)
    }

    /// Continues the process.
    fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        // Not checked: a panic here while a failed test unwinds would abort the test process.
        let _ = signal(self.0, "-CONT");
    }
}

/// Sends `sig` (as kill(1) spells it) to `pid`.
fn signal(pid: u32, sig: &str) -> Output {
    Command::new("kill").arg(sig).arg(pid.to_string()).output().expect("kill(1) runs")
}

/// Whether squeue still lists any task of `job`.
fn in_queue(job: &str) -> bool {
    let o = Command::new("squeue").args(["-h", "-r", "-j", job, "-o", "%i"]).output().unwrap();
    !String::from_utf8_lossy(&o.stdout).trim().is_empty()
}

/// (split, id, sample) of every line of a JSONL file, checked to be unique.
fn unique_keys(path: &Path, sample_key: &[&str]) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = sample_key.iter().map(|k| v[k].to_string()).collect::<Vec<_>>().join("/");
        assert!(keys.insert(key.clone()), "{} holds {key} twice", path.display());
    }
    keys
}

/// The cell's samples: every train question K=2 initial answers and 1 correction each, every test question 1 + 1;
/// none missing, none twice.
pub(crate) fn assert_complete_samples(cell: &Path, train: usize) {
    let initial = unique_keys(&cell.join("iter_0/initial.jsonl"), &["split", "id", "sample"]);
    assert_eq!(initial.len(), train * 2 + 2, "initial answers of {}", cell.display());
    let corrections = unique_keys(&cell.join("iter_0/corrections.jsonl"), &["split", "id", "initial_sample", "sample"]);
    assert_eq!(corrections.len(), train * 2 + 2, "corrections of {}", cell.display());
}

#[test]
fn slurm_sweep_runs_two_cells_as_one_job_array_with_the_report() {
    let _cluster = cluster();
    let sweep = TinySweep::new(&[1, 2], 3, 16, "slurm");
    let o = sweep.stasc(&["sweep", "sweep.toml", "--wait"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let jobs = sweep.jobs();
    assert_eq!(jobs.len(), 1, "one job array for both cells: {jobs:?}");
    assert_eq!(jobs[0]["cells"], serde_json::json!([[0, "seed=1"], [1, "seed=2"]]));
    let job = jobs[0]["job_id"].as_str().unwrap();
    assert!(out.contains(&format!("Slurm job {job}: no task left in the queue")), "{out}");
    for seed in [1, 2] {
        let cell = sweep.cell(seed);
        assert!(out.lines().any(|l| l.starts_with(&format!("seed={seed} ")) && l.ends_with(" ran")), "{out}");
        assert!(cell.join("DONE").exists(), "{}", cell.display());
        let log = std::fs::read_to_string(cell.join("log.txt")).unwrap();
        assert!(log.contains("[slurm] job ") && log.contains(&format!("(array task {job}_")), "{log}");
        assert_complete_samples(&cell, 3);
    }
    // Nothing left to submit: a rerun reports both cells done and submits nothing.
    let again = sweep.stasc(&["sweep", "sweep.toml"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(text(&again).matches(" done\n").count(), 2, "{}", text(&again));
    assert_eq!(sweep.jobs().len(), 1);
    let report = sweep.stasc(&["report", "out", "--out", "report"]);
    assert!(report.status.success(), "{}", text(&report));
    let csv = std::fs::read_to_string(sweep.path().join("report/results.csv")).unwrap();
    assert!(csv.contains("seed=1") && csv.contains("seed=2"), "{csv}");
}

#[test]
fn slurm_cancelled_task_resumes_on_resubmission_without_lost_or_repeated_samples() {
    let _cluster = cluster();
    let train = 60;
    let sweep = TinySweep::new(&[5], train, 64, "slurm");
    let o = sweep.stasc(&["sweep", "sweep.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("submitted: Slurm job"), "{}", text(&o));
    let job = sweep.jobs()[0]["job_id"].as_str().unwrap().to_string();
    let cell = sweep.cell(5);
    let chunks = cell.join("iter_0/.partial/initial");
    // Cancel once a few chunks (4 prompts each) of the first phase are saved, while it is still sampling.
    wait_for("saved chunks", Duration::from_secs(300), || chunks.join("chunk-00002.jsonl").exists());
    let cancel = Command::new("scancel").arg(format!("{job}_0")).output().unwrap();
    assert!(cancel.status.success(), "{}", text(&cancel));
    wait_for("the cancelled task to leave the queue", Duration::from_secs(120), || !in_queue(&job));
    assert!(
        !cell.join("iter_0/initial.jsonl").exists(),
        "the first phase ended before the task was cancelled: give the cell more questions"
    );
    assert!(!cell.join("FAILED").exists(), "a cancelled task is not a failed cell");
    let saved: Vec<(PathBuf, String)> = std::fs::read_dir(&chunks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    assert!(saved.len() >= 3, "{saved:?}");

    let dry = sweep.stasc(&["sweep", "sweep.toml", "--dry-run"]);
    assert!(text(&dry).contains("seed=5") && text(&dry).contains("to run"), "{}", text(&dry));
    let o = sweep.stasc(&["sweep", "sweep.toml", "--wait"]);
    assert!(o.status.success(), "{}", text(&o));
    let jobs = sweep.jobs();
    assert_eq!(jobs.len(), 2, "the unfinished cell was submitted again: {jobs:?}");
    assert_ne!(jobs[1]["job_id"], jobs[0]["job_id"]);
    assert!(cell.join("DONE").exists());
    assert_complete_samples(&cell, train);
    // The chunks saved before the cancel are in the final file as they were: resumed, not sampled again.
    let initial = std::fs::read_to_string(cell.join("iter_0/initial.jsonl")).unwrap();
    for (path, chunk) in &saved {
        assert!(initial.contains(chunk.as_str()), "{} was not kept", path.display());
    }
}

#[test]
fn slurm_two_runners_on_one_cell_only_one_runs_it() {
    let _cluster = cluster();
    let train = 60;
    let sweep = TinySweep::new(&[9], train, 64, "slurm");
    // Have stasc write the cell's files without running it: planning writes them before `--only` is checked.
    let cell = sweep.cell(9);
    let planned = sweep.stasc(&["sweep", "sweep.toml", "--only", "no-such-cell"]);
    assert!(text(&planned).contains("no cell named 'no-such-cell'"), "{}", text(&planned));
    assert!(cell.join("stasc_config.yaml").exists());
    let run_args = |c: &mut Command| {
        c.current_dir(sweep.path())
            .args(["run", "--config", "out/seed=9/stasc_config.yaml", "--ft_config", "out/seed=9/fine_tune.yaml"])
            .args(["--out", "out/seed=9"]);
    };
    // Runner 1: a plain `stasc run` of the cell.
    let mut first = Command::new(env!("CARGO_BIN_EXE_stasc"));
    run_args(&mut first);
    let mut first = first.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the first runner's lock", Duration::from_secs(60), || stasc::rundir_lock::holder(&cell).is_some());
    let holder = stasc::rundir_lock::holder(&cell).unwrap();
    assert_eq!(holder.pid, first.id());
    // Runner 1 is stopped (SIGSTOP) while the others try, so how fast this machine runs it cannot end it first; a
    // stopped process keeps its flock, as a slow one would.
    let paused = Paused::new(first.id());
    assert!(first.try_wait().unwrap().is_none(), "runner 1 ended before it could be paused; give it more work");

    // Runner 2: the same command is refused, naming the holder, with the busy exit status.
    let mut second = Command::new(env!("CARGO_BIN_EXE_stasc"));
    run_args(&mut second);
    let o = second.output().unwrap();
    assert_eq!(o.status.code(), Some(i32::from(stasc::rundir_lock::BUSY_EXIT_CODE)), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains(&format!("is being run by host {} pid {}", holder.host, first.id())), "{said}");

    // Runner 3: the sweep sees the cell running and submits nothing.
    let o = sweep.stasc(&["sweep", "sweep.toml", "--wait"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("running elsewhere: host {} pid {}", holder.host, first.id())), "{}", text(&o));
    assert!(sweep.jobs().is_empty(), "nothing submitted while the cell runs");

    // Runner 4: an array task started on the held cell (as if submitted just before runner 1 took it) skips it.
    let plan = stasc::sweep::CellPlan {
        name: "seed=9".into(),
        overrides: vec![],
        dir: PathBuf::from("out/seed=9"),
        config: PathBuf::from("out/seed=9/stasc_config.yaml"),
        ft_config: PathBuf::from("out/seed=9/fine_tune.yaml"),
        accelerate_config: None,
    };
    let cells = [(0, &plan)];
    let job = stasc::sweep::slurm::script::ArrayJob {
        sweep: "tiny",
        exe: Path::new(env!("CARGO_BIN_EXE_stasc")),
        workdir: sweep.path(),
        slurm_dir: sweep.path(),
        cells: &cells,
    };
    let script = sweep.path().join("task.sh");
    let options = stasc::sweep::slurm::SlurmOptions { cpus_per_task: Some(1), ..Default::default() };
    std::fs::write(&script, stasc::sweep::slurm::script::batch_script(&job, &options)).unwrap();
    let o = Command::new("sbatch").arg("--wait").arg(&script).current_dir(sweep.path()).output().unwrap();
    assert!(o.status.success(), "the task that found the cell held ends without failing: {}", text(&o));
    assert!(first.try_wait().unwrap().is_none(), "runner 1 is paused and still holds the cell");
    paused.resume();
    let log = std::fs::read_to_string(cell.join("log.txt")).unwrap();
    assert!(log.contains(&format!("pid {}", first.id())) && log.contains("skipping it"), "{log}");
    assert!(!cell.join("FAILED").exists());

    let status = first.wait().unwrap();
    assert!(status.success());
    assert!(cell.join("DONE").exists());
    assert_complete_samples(&cell, train);
    assert_eq!(stasc::rundir_lock::holder(&cell), None, "released at the end");
}
