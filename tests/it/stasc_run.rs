//! `stasc run` end to end on the CPU with the real SmolLM2-135M-Instruct (converted by scripts/setup.sh): a few
//! questions, one fine-tuning round; the run-directory layout and metrics; resuming after kill -9 in the middle of
//! generation and in the middle of training gives the same samples as an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn model_dir() -> PathBuf {
    let cache = std::env::var_os("STASC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/stasc"));
    let dir = cache.join("models/SmolLM2-135M-Instruct");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run scripts/setup.sh first", dir.display());
    dir
}

/// Writes a tiny run's configs and data into `dir`; returns (stasc_config, fine_tune) paths.
pub(crate) fn tiny_run(dir: &Path, chunk_prompts: usize) -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let train: Vec<&str> = include_str!("../../data/demo_nq/train.jsonl").lines().take(3).collect();
    let test: Vec<&str> = include_str!("../../data/demo_nq/test.jsonl").lines().take(2).collect();
    std::fs::write(data.join("train.jsonl"), train.join("\n")).unwrap();
    std::fs::write(data.join("test.jsonl"), test.join("\n")).unwrap();
    std::fs::create_dir_all(dir.join("no_few_shots")).unwrap();
    let config = dir.join("stasc.yaml");
    std::fs::write(
        &config,
        format!(
            "model_path: {model}\nrandom_seed: 7\ntask_type: qa\ndata_path: {data}\nnum_star_iterations: 1\n\
             run_name: tiny\ninitial_answer_with_new_model: true\nonly_better_correction: false\n\
             train_from_initial_model: true\nevaluator_mode: default\nevaluator_function: in_acc\n\
             few_shot_dir: {few}\ntemplate_dir: {templates}\nnumber_output_initial_generations: 2\n\
             number_output_corrections: 1\ntemperature: 0.6\ntop_p: 0.9\nmax_tokens: 24\ndevice: cpu\ndtype: f32\n\
             chunk_prompts: {chunk_prompts}\n",
            model = model_dir().display(),
            data = data.display(),
            few = dir.join("no_few_shots").display(),
            templates = root.join("templates").display(),
        ),
    )
    .unwrap();
    let ft = dir.join("ft.yaml");
    std::fs::write(
        &ft,
        "training:\n  learning_rate: 1.0e-5\n  num_train_epochs: 1\n  per_device_train_batch_size: 2\n  \
         gradient_accumulation_steps: 1\n  seed: 7\n",
    )
    .unwrap();
    (config, ft)
}

fn stasc_run(config: &Path, ft: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stasc"));
    cmd.args(["run", "--config"]).arg(config).arg("--ft_config").arg(ft).arg("--out").arg(out);
    // One libtorch thread: identical arithmetic in every run, so samples can be compared across runs.
    cmd.env("OMP_NUM_THREADS", "1").stdin(Stdio::null());
    cmd
}

fn run_to_end(config: &Path, ft: &Path, out: &Path) -> String {
    let o = stasc_run(config, ft, out).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "stasc run failed:\n{text}");
    text
}

/// Starts a run and kills it with SIGKILL as soon as `ready` says so.
fn kill_when(config: &Path, ft: &Path, out: &Path, ready: impl Fn(&Path) -> bool) {
    let mut child: Child = stasc_run(config, ft, out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if ready(out) {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before the kill point was reached");
        }
        assert!(start.elapsed() < Duration::from_secs(600), "kill point never reached");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn cpu_run_writes_the_layout_and_resumes_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, ft) = tiny_run(tmp.path(), 1);

    // Uninterrupted reference run.
    let full = tmp.path().join("full");
    let log = run_to_end(&config, &ft, &full);
    assert!(log.contains("test_correction"), "{log}");
    for f in [
        "config.resolved.yaml",
        "DONE",
        "iter_0/initial.jsonl",
        "iter_0/corrections.jsonl",
        "iter_0/train_pairs.jsonl",
        "iter_0/metrics.json",
        "iter_1/metrics.json",
    ] {
        assert!(full.join(f).exists(), "missing {f}");
    }
    let m0: serde_json::Value = serde_json::from_str(&read(&full.join("iter_0/metrics.json"))).unwrap();
    for key in [
        "train_initial_accuracy",
        "train_correction_accuracy",
        "test_initial_accuracy",
        "test_correction_accuracy",
        "transitions",
        "train_transitions",
        "filtered_pairs",
        "train_loss",
        "phase_seconds",
        "tokens_per_s",
    ] {
        assert!(m0.get(key).is_some(), "metrics.json lacks {key}: {m0}");
    }
    for key in ["correct_to_incorrect", "correct_to_correct", "incorrect_to_correct", "incorrect_to_incorrect"] {
        assert!(m0["transitions"].get(key).is_some() && m0["train_transitions"].get(key).is_some());
    }
    let initial = read(&full.join("iter_0/initial.jsonl"));
    assert_eq!(initial.lines().count(), 3 * 2 + 2, "K_init=2 per train question, 1 per test question");
    let first: serde_json::Value = serde_json::from_str(initial.lines().next().unwrap()).unwrap();
    assert!(first["seed"].is_u64() && first["text"].is_string() && first["reward"].is_number(), "{first}");
    let m1: serde_json::Value = serde_json::from_str(&read(&full.join("iter_1/metrics.json"))).unwrap();
    assert!(m1["train_loss"].is_null(), "the last iteration does not train");
    let trained = m0["trained"].as_bool().unwrap();
    // These easy questions give correct->correct pairs for this seed, so the kill-in-training case below runs.
    assert!(trained && m0["filtered_pairs"].as_u64().unwrap() > 0, "{m0}");
    assert_eq!(full.join("iter_0/model/model.safetensors").exists(), trained);
    let record: serde_json::Value = serde_json::from_str(&read(&full.join("iter_0/train.json"))).unwrap();
    for stage in ["tokenize", "load", "steps", "save"] {
        assert!(record["stage_seconds"][stage].as_f64().is_some_and(|s| s >= 0.0), "train.json: {record}");
    }

    // Killed while generating initial answers: after the second saved chunk.
    let gen = tmp.path().join("killed_in_generation");
    kill_when(&config, &ft, &gen, |out| out.join("iter_0/.partial/initial/chunk-00001.jsonl").exists());
    let chunk0 = read(&gen.join("iter_0/.partial/initial/chunk-00000.jsonl"));
    run_to_end(&config, &ft, &gen);
    assert!(read(&gen.join("iter_0/initial.jsonl")).starts_with(&chunk0), "saved chunks are reused, not sampled again");
    for f in [
        "iter_0/initial.jsonl",
        "iter_0/corrections.jsonl",
        "iter_0/train_pairs.jsonl",
        "iter_1/initial.jsonl",
        "iter_1/corrections.jsonl",
    ] {
        assert_eq!(read(&full.join(f)), read(&gen.join(f)), "{f} differs after resuming");
    }
    assert!(!gen.join("iter_0/.partial").exists());

    // Killed while fine-tuning.
    {
        let tr = tmp.path().join("killed_in_training");
        kill_when(&config, &ft, &tr, |out| {
            out.join("iter_0/train_pairs.jsonl").exists() && !out.join("iter_0/train.json").exists()
        });
        assert!(!tr.join("iter_0/train.json").exists());
        run_to_end(&config, &ft, &tr);
        for f in ["iter_0/corrections.jsonl", "iter_1/initial.jsonl", "iter_1/corrections.jsonl"] {
            assert_eq!(read(&full.join(f)), read(&tr.join(f)), "{f} differs after resuming in training");
        }
        assert!(!tr.join("iter_0/.model.tmp").exists());
    }

    // A changed configuration is refused, naming the key.
    let text = read(&config).replace("temperature: 0.6", "temperature: 0.7");
    std::fs::write(&config, text).unwrap();
    let o = stasc_run(&config, &ft, &full).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("temperature") && err.contains("--force"), "{err}");
}

#[test]
fn eval_is_iteration_zero_without_training() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, _) = tiny_run(tmp.path(), 128);
    let out = tmp.path().join("eval");
    let o = Command::new(env!("CARGO_BIN_EXE_stasc"))
        .args(["eval", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    let m: serde_json::Value = serde_json::from_str(&read(&out.join("iter_0/metrics.json"))).unwrap();
    assert_eq!(m["trained"], serde_json::json!(false));
    assert!(m["train_loss"].is_null() && m["test_correction_accuracy"].is_number(), "{m}");
    assert!(out.join("DONE").exists() && !out.join("iter_1").exists() && !out.join("iter_0/model").exists());
    assert!(out.join("iter_0/train_pairs.jsonl").exists(), "the filtered pairs are still recorded");
}

#[test]
fn a_copied_binary_runs_from_a_directory_without_templates() {
    // The binary as a user installs it: copied out of the clone, run from a project directory of their own that has
    // no templates/ or few_shots/, with a config that does not name them (the built-in files are used).
    let tmp = tempfile::tempdir().unwrap();
    let stasc = tmp.path().join("bin/stasc");
    std::fs::create_dir_all(stasc.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_stasc"), &stasc).unwrap();
    let project = tmp.path().join("project");
    std::fs::create_dir_all(project.join("data")).unwrap();
    let first = |text: &str| text.lines().next().unwrap().to_string();
    std::fs::write(project.join("data/train.jsonl"), first(include_str!("../../data/demo_nq/train.jsonl"))).unwrap();
    std::fs::write(project.join("data/test.jsonl"), first(include_str!("../../data/demo_nq/test.jsonl"))).unwrap();
    std::fs::write(
        project.join("stasc.yaml"),
        format!(
            "model_path: {}\ndata_path: data\ntask_type: qa\nnumber_output_initial_generations: 1\n\
             number_output_corrections: 1\nmax_tokens: 8\ndevice: cpu\ndtype: f32\n",
            model_dir().display()
        ),
    )
    .unwrap();
    let eval = Command::new(&stasc)
        .current_dir(&project)
        .args(["eval", "--config", "stasc.yaml", "--out", "out"])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&eval.stdout), String::from_utf8_lossy(&eval.stderr));
    assert!(eval.status.success(), "{text}");
    assert!(!text.contains("no few-shot file"), "the built-in few-shot files are used:\n{text}");
    assert!(project.join("out/iter_0/metrics.json").is_file() && project.join("out/DONE").is_file());
    assert!(!project.join("templates").exists() && !project.join("few_shots").exists());

    // `stasc templates export` writes the same files out for editing.
    let export = Command::new(&stasc).current_dir(&project).args(["templates", "export", "."]).output().unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    assert_eq!(
        read(&project.join("templates/prompts/qa/initial.jinja")),
        include_str!("../../templates/prompts/qa/initial.jinja")
    );
    assert_eq!(read(&project.join("few_shots/qa_initial.json")), include_str!("../../few_shots/qa_initial.json"));
}
