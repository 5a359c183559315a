//! `stasc run --dry-run` on the shipped configs, run as a user would: exit codes, the resolved YAML, the one
//! warning line, and one-line errors for a bad config and a missing dataset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn stasc(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stasc")).args(args).current_dir(cwd).output().expect("stasc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn dry_run_on_cpu_demo_config_prints_resolved_config() {
    let out = stasc(
        &repo(""),
        &["run", "--config", "configs/cpu_demo.yaml", "--ft_config", "configs/cpu_fine_tune.yaml", "--dry-run"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "  model_path: .stasc/models/SmolLM2-135M-Instruct",
        "  num_star_iterations: 1",
        "  filter: non_decreasing",
        "  output_dir: runs/cpu_demo",
        "    lr_scheduler_type: cosine",
        "    adam_beta2: 0.999",
        "  num_processes: 1",
        "  format: jsonl",
        "  train_rows: 8",
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in:\n{stdout}");
    }
    assert!(stderr.is_empty(), "the CPU demo sets no ignored key, got: {stderr}");
}

#[test]
fn dry_run_on_paper_configs_with_both_flag_spellings() {
    // The paper config's data_path is relative; give it a dataset in a scratch working directory. Its model_path is
    // a hub id, so the embedded model stands in through an override (and the templates and few-shot files of the
    // clone, since the working directory has none).
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data/datasets/s_nq");
    std::fs::create_dir_all(&data).unwrap();
    for split in ["train.jsonl", "test.jsonl"] {
        std::fs::copy(repo("data/demo_nq").join(split), data.join(split)).unwrap();
    }
    let config = repo("configs/stasc_config.yaml");
    let ft = repo("configs/fine_tune.yaml");
    let accelerate = repo("configs/accelerate_config.yaml");
    let (config, ft, accelerate) = (config.to_str().unwrap(), ft.to_str().unwrap(), accelerate.to_str().unwrap());
    let model = format!("model_path={}", repo(".stasc/models/SmolLM2-135M-Instruct").display());
    let templates = format!("template_dir={}", repo("templates").display());
    let few_shots = format!("few_shot_dir={}", repo("few_shots").display());
    for (ft_flag, accelerate_flag) in
        [("--ft_config", "--accelerate_config_path"), ("--ft-config", "--accelerate-config-path")]
    {
        let out = stasc(
            cwd.path(),
            &[
                "run",
                "--config",
                config,
                ft_flag,
                ft,
                accelerate_flag,
                accelerate,
                "--dry-run",
                &model,
                &templates,
                &few_shots,
            ],
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
        for line in [
            "  num_star_iterations: 10",
            "  number_output_initial_generations: 5",
            "  temperature: 0.6",
            "  filter: improving",
            "    learning_rate: 7e-6",
            "  data_parallel_ranks: 2",
            "  dtype: bf16",
            "  training_rounds: 10",
        ] {
            assert!(stdout.lines().any(|l| l == line), "missing {line:?} in:\n{stdout}");
        }
        let warnings: Vec<&str> = stderr.lines().collect();
        assert_eq!(warnings.len(), 2, "two warning lines expected (ignored keys, report_to wandb), got:\n{stderr}");
        assert!(warnings[1].contains("report_to \"wandb\" is not supported"), "{}", warnings[1]);
        assert!(warnings[1].contains("use report_to: [\"mlflow\"]"), "{}", warnings[1]);
        let warning = warnings[0];
        assert!(warning.starts_with("warning: keys accepted but not acted on: "), "{warning}");
        for key in ["enforce_eager", "fsdp_config (10 keys)", "distributed_type"] {
            assert!(warning.contains(key), "{key} not in {warning}");
        }
    }
}

#[test]
fn bad_config_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    let shipped = std::fs::read_to_string(repo("configs/cpu_demo.yaml")).unwrap();
    std::fs::write(&config, shipped.replace("temperature: 0.6", "temprature: 0.6")).unwrap();
    let ft = repo("configs/cpu_fine_tune.yaml");
    let out = stasc(
        &repo(""),
        &["run", "--config", config.to_str().unwrap(), "--ft_config", ft.to_str().unwrap(), "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr,
        format!("error: {}: unknown key 'temprature' (did you mean 'temperature'?)\n", config.display())
    );
}

#[test]
fn missing_dataset_is_named() {
    let cwd = tempfile::tempdir().unwrap();
    let config = repo("configs/stasc_config.yaml");
    let ft = repo("configs/fine_tune.yaml");
    // A dry run checks every file a run opens: the hub id and the missing dataset are each one line, and it fails.
    let out = stasc(
        cwd.path(),
        &["run", "--config", config.to_str().unwrap(), "--ft_config", ft.to_str().unwrap(), "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let prefix = format!("error: {}: ", config.display());
    assert!(
        stderr.lines().any(|l| l == format!("{prefix}data_path: dataset data/datasets/s_nq not found (data_path)")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("{prefix}model_path Qwen/Qwen2.5-1.5B-Instruct is not a directory"))
                && l.contains("hf download Qwen/Qwen2.5-1.5B-Instruct --local-dir models/Qwen2.5-1.5B-Instruct")),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("dataset: null"));
    // A real run needs it: one line naming the file and the path.
    let out = stasc(cwd.path(), &["run", "--config", config.to_str().unwrap(), "--ft_config", ft.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert_eq!(last, format!("error: {}: dataset data/datasets/s_nq not found (data_path)", config.display()));
}

#[test]
fn an_os_error_is_said_once_on_one_line() {
    // A run directory that is a file: creating it fails with "File exists", which used to be printed two or three
    // times (once by the error naming the path, then again for every cause in the chain).
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("taken");
    std::fs::write(&out_dir, "not a directory").unwrap();
    let (config, ft) = (repo("configs/cpu_demo.yaml"), repo("configs/cpu_fine_tune.yaml"));
    let args = ["run", "--config", config.to_str().unwrap(), "--ft_config", ft.to_str().unwrap(), "--out"];
    let out =
        Command::new(env!("CARGO_BIN_EXE_stasc")).args(args).arg(&out_dir).current_dir(repo("")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert_eq!(last, format!("error: {}: File exists (os error 17)", out_dir.display()), "{stderr}");
}
