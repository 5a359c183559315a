//! A real two-cell CPU sweep on the tiny Qwen2 fixture: iteration 0 is sampled once and read by the other cell,
//! with the same results as an unshared run; the cells' logs carry one line per phase change (no terminal);
//! `stasc sweep --dry-run` names the cells that share work; `stasc sweep status` shows done, running, failed and
//! pending cells from their files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stasc::stasc::status::{host_name, unix_now, RunState, RunStatus, STATUS_FILE};
use stasc::sweep::{CellPlan, SweepIndex};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn stasc(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stasc"));
    // One libtorch thread: identical arithmetic in every run, so samples can be compared across runs.
    cmd.current_dir(cwd).args(args).env("OMP_NUM_THREADS", "1").env_remove("STASC_SHARED_DIR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A sweep of two variants of a tiny run: the tiny random Qwen2 (a 256-token context, so short prompts), 3 train +
/// 2 test questions, one fine-tuning round (ENE trains; FIF's improving filter keeps nothing, so it does not).
fn write_sweep(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Train gold "the" normalises to nothing, which in_acc (like the reference) finds in every answer: every train
    // sample is correct, so the N filter keeps pairs and the tiny random model gets fine-tuned.
    let row = |i: usize, q: &str, gold: &str| {
        format!("{{\"question_id\": {i}, \"question_text\": \"{q}\", \"reference\": [\"{gold}\"]}}")
    };
    let train =
        [row(1, "capital of france", "the"), row(2, "color of the sky", "the"), row(3, "days in a week", "the")];
    let test = [row(4, "largest planet", "Jupiter"), row(5, "king of the jungle", "lion")];
    std::fs::write(data.join("train.jsonl"), train.join("\n")).unwrap();
    std::fs::write(data.join("test.jsonl"), test.join("\n")).unwrap();
    let qa = dir.join("templates/prompts/qa");
    std::fs::create_dir_all(&qa).unwrap();
    for f in ["initial.jinja", "correction.jinja", "sft.jinja"] {
        std::fs::copy(root().join("templates/prompts/qa").join(f), qa.join(f)).unwrap();
    }
    std::fs::write(
        qa.join("texts.jinja"),
        "{% set initial_instruction %}Answer.{% endset %}\n{% set correction_instruction %}Fix it.{% endset %}\n\
         {% macro question_block(question) %}{{ question }}{% endmacro %}\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("no_few_shots")).unwrap();
    std::fs::write(
        dir.join("stasc.yaml"),
        format!(
            "model_path: {model}\nrandom_seed: 7\ntask_type: qa\ndata_path: data\nnum_star_iterations: 1\n\
             evaluator_function: in_acc\nfew_shot_dir: no_few_shots\nuse_few_shots: false\ntemplate_dir: templates\n\
             number_output_initial_generations: 2\nnumber_output_corrections: 1\ntemperature: 0.8\ntop_p: 0.95\n\
             max_tokens: 8\nmax_model_len: 256\ndevice: cpu\ndtype: f32\nchunk_prompts: 2\n",
            model = root().join("tests/fixtures/tiny_models/qwen2_untied").display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("ft.yaml"),
        "data:\n  block_size: 256\ntraining:\n  learning_rate: 1.0e-3\n  num_train_epochs: 1\n  \
         per_device_train_batch_size: 2\n  seed: 7\n",
    )
    .unwrap();
    let sweep = dir.join("s.toml");
    std::fs::write(
        &sweep,
        "[sweep]\nname = \"tiny\"\nconfig = \"stasc.yaml\"\nft_config = \"ft.yaml\"\nout = \"runs/tiny\"\n\
         [set]\nevaluator_mode = \"default\"\n[grid]\nvariant = [\"ENE\", \"FIF\"]\n",
    )
    .unwrap();
    sweep
}

fn without_timings(metrics: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(metrics).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("phase_seconds");
    o.remove("tokens_per_s");
    // What the engine prefilled is work done, not a result: a cell that read shared samples prefilled nothing.
    o.remove("prefill_tokens");
    o.remove("prefill_tokens_saved");
    v
}

#[test]
fn a_sweep_samples_iteration_zero_once_and_logs_one_line_per_phase() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_sweep(d);

    let dry = stasc(d, &["sweep", "s.toml", "--dry-run"], &[]);
    let dry_text = text(&dry);
    assert!(dry.status.success(), "{dry_text}");
    assert!(dry_text.contains("group 1 (2 cells): variant=ENE; variant=FIF"), "{dry_text}");

    let out = stasc(d, &["sweep", "s.toml"], &[]);
    let sweep_text = text(&out);
    assert!(out.status.success(), "{sweep_text}");
    let cells = ["variant=ENE", "variant=FIF"];
    let logs: Vec<String> =
        cells.iter().map(|c| std::fs::read_to_string(d.join("runs/tiny").join(c).join("log.txt")).unwrap()).collect();

    // Every batch in the shared directory was sampled by exactly one cell; the second cell read iteration 0.
    let shared = d.join("runs/tiny/.shared");
    let entries = std::fs::read_dir(&shared)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"));
    let sampled: usize = logs.iter().map(|l| l.matches("shared work: sampled").count()).sum();
    assert_eq!(sampled, entries.count(), "{}", logs.join("\n"));
    // 5 initial prompts and 8 correction prompts in chunks of 2: 3 + 4 batches at iteration 0.
    assert_eq!(logs[1].matches("shared work: read").count(), 7, "{}", logs[1]);
    assert!(logs[1].contains("batches sampled here, 7 read from"), "{}", logs[1]);

    // The second cell alone, without sharing, samples exactly what it read.
    let cell = d.join("runs/tiny/variant=FIF");
    let alone = d.join("alone");
    let run = stasc(
        d,
        &[
            "run",
            "--config",
            cell.join("stasc_config.yaml").to_str().unwrap(),
            "--ft_config",
            cell.join("fine_tune.yaml").to_str().unwrap(),
            "--out",
            alone.to_str().unwrap(),
        ],
        &[("STASC_SHARED_DIR", "off")],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert!(!text(&run).contains("shared work"), "{}", text(&run));
    for f in
        ["iter_0/initial.jsonl", "iter_0/corrections.jsonl", "iter_0/train_pairs.jsonl", "iter_1/corrections.jsonl"]
    {
        let a = std::fs::read_to_string(cell.join(f)).unwrap();
        assert_eq!(a, std::fs::read_to_string(alone.join(f)).unwrap(), "{f}");
    }
    for n in 0..=1 {
        let f = format!("iter_{n}/metrics.json");
        let shared_metrics = without_timings(&std::fs::read_to_string(cell.join(&f)).unwrap());
        assert_eq!(shared_metrics, without_timings(&std::fs::read_to_string(alone.join(&f)).unwrap()), "{f}");
    }

    // Without a terminal: one line as each phase begins and one as it ends, in order, and no bar drawing.
    let log = &logs[0];
    assert!(!log.contains('\r') && !log.contains('\x1b'), "{log}");
    let phases = [
        "[stasc] iteration 0: initial answers (8 samples): started",
        "[stasc] iteration 0: initial answers: done, 8 samples in",
        "[stasc] iteration 0: corrections (8 samples): started",
        "[stasc] iteration 0: corrections: done, 8 samples in",
        "[stasc] iteration 0: fine-tuning: started",
        "[stasc] iteration 0: fine-tuning: done,",
        "[stasc] iteration 1: initial answers (8 samples): started",
        "[stasc] iteration 1: corrections (8 samples): started",
    ];
    let mut at = 0;
    for p in phases {
        let found = log[at..].find(p).unwrap_or_else(|| panic!("{p:?} after byte {at} of:\n{log}"));
        at += found + p.len();
    }
    assert!(log.contains("[stasc] loading tiny_models/qwen2_untied (27 tensors): started"), "{log}");
    assert!(log.contains("[stasc] loading iter_0/model (27 tensors): started"), "{log}");
    // The sweep itself prints a line per cell as its phase changes, and at its end.
    for c in cells {
        assert!(sweep_text.contains(&format!("[sweep] {c}: done")), "{sweep_text}");
    }

    // The status table of the finished sweep, and its status.json files.
    let status = stasc(d, &["sweep", "status", "runs/tiny"], &[]);
    let table = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.status.success(), "{}", text(&status));
    assert!(table.starts_with("sweep tiny (runs/tiny): 2 cells: 2 done, 0 running, 0 failed, 0 pending"), "{table}");
    let last: RunStatus = serde_json::from_str(&std::fs::read_to_string(cell.join(STATUS_FILE)).unwrap()).unwrap();
    assert_eq!((last.state, last.host.as_str()), (RunState::Done, host_name().as_str()));
}

fn plan(dir: &Path, name: &str) -> CellPlan {
    CellPlan {
        name: name.into(),
        overrides: vec![("variant".into(), name.into())],
        dir: dir.join(name),
        config: dir.join(name).join("stasc_config.yaml"),
        ft_config: dir.join(name).join("fine_tune.yaml"),
        accelerate_config: None,
    }
}

#[test]
fn sweep_status_shows_done_running_failed_and_pending_cells() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("runs/s");
    let cells: Vec<CellPlan> = ["EIE", "EIF", "FIE", "FIF"].iter().map(|n| plan(&d, n)).collect();
    let index = SweepIndex {
        name: "s".into(),
        file: "s.toml".into(),
        axes: vec!["variant".into()],
        cells: cells.clone(),
        values: Default::default(),
        command_line: vec![],
    };
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("sweep.json"), serde_json::to_string(&index).unwrap()).unwrap();
    for c in &cells {
        std::fs::create_dir_all(&c.dir).unwrap();
    }
    std::fs::write(cells[0].dir.join("DONE"), "{}").unwrap();
    let now = unix_now();
    let running = RunStatus {
        state: RunState::Running,
        host: "gpu-node-3".into(),
        pid: 31337,
        slurm_job_id: Some("4242_1".into()),
        started_at: now - 600.0,
        heartbeat_at: now - 2.0,
        iteration: Some(2),
        phase: Some("corrections".into()),
        detail: None,
        phase_started_at: Some(now - 60.0),
        done: 250,
        total: Some(1000),
        unit: Some("samples".into()),
        tokens_per_s: Some(18514.0),
        eta_s: Some(180.0),
        error: None,
    };
    std::fs::write(cells[1].dir.join(STATUS_FILE), serde_json::to_string(&running).unwrap()).unwrap();
    let reason = "stasc run exited with exit status: 1: error: iteration 1, fine-tuning: out of memory (see log.txt)";
    std::fs::write(cells[2].dir.join("FAILED"), format!("{reason}\n")).unwrap();
    // The last cell's runner died an hour ago: pending, resumable.
    let dead = RunStatus { heartbeat_at: now - 3600.0, ..running.clone() };
    std::fs::write(cells[3].dir.join(STATUS_FILE), serde_json::to_string(&dead).unwrap()).unwrap();

    let out = stasc(dir.path(), &["sweep", "status", "runs/s"], &[]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "sweep s (runs/s): 4 cells: 1 done, 1 running, 1 failed, 1 pending");
    assert_eq!(lines[1], "EIE  done");
    assert!(lines[2].starts_with("EIF  running   iteration 2 corrections [=====>"), "{table}");
    for part in ["250/1000 samples", "18514 tok/s", "ETA 3:00", "since ", "on gpu-node-3 pid 31337, job 4242_1"] {
        assert!(lines[2].contains(part), "{part} in {table}");
    }
    assert_eq!(lines[3], format!("FIE  failed    {reason}"));
    assert_eq!(lines[4].trim(), format!("log: {}", cells[2].dir.join("log.txt").display()));
    assert!(lines[5].starts_with("FIF  pending   (interrupted in iteration 2 corrections: last heartbeat 1:00:0"));

    let missing = stasc(dir.path(), &["sweep", "status", "runs/none"], &[]);
    let err = String::from_utf8_lossy(&missing.stderr).to_string();
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("runs/none/sweep.json: not found"), "{err}");
}

#[test]
fn the_dry_run_groups_cells_that_sample_iteration_zero_alike() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_sweep(d);
    // Two seeds: a cell shares iteration 0 with the other variant of its seed, never across seeds.
    std::fs::write(
        d.join("seeds.toml"),
        "[sweep]\nname = \"seeds\"\nconfig = \"stasc.yaml\"\nft_config = \"ft.yaml\"\n\
         [grid]\nseed = [1, 2]\nvariant = [\"EIE\", \"FNF\"]\n",
    )
    .unwrap();
    let out = stasc(d, &["sweep", "seeds.toml", "--dry-run"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains("(2 of 4 cells' iteration-0 sampling saved)"), "{stdout}");
    assert!(stdout.contains("group 1 (2 cells): seed=1,variant=EIE; seed=1,variant=FNF"), "{stdout}");
    assert!(stdout.contains("group 2 (2 cells): seed=2,variant=EIE; seed=2,variant=FNF"), "{stdout}");
    // A different temperature decides other samples: nothing is shared.
    std::fs::write(
        d.join("temps.toml"),
        "[sweep]\nname = \"temps\"\nconfig = \"stasc.yaml\"\nft_config = \"ft.yaml\"\n[grid]\ntemperature = [0.6, 0.7]\n",
    )
    .unwrap();
    let out = stasc(d, &["sweep", "temps.toml", "--dry-run"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("shared work: none"), "{}", text(&out));
}
