//! Command-line overrides and the checks of `--dry-run`, run as a user would on the CPU demo configs: overrides
//! reach the resolved configuration and their errors are one line; each file a run opens, when missing, is one
//! problem line and a failing exit status; sweeps check every cell and print what each will sample and train.

use std::path::{Path, PathBuf};
use std::process::Output;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn stasc(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_stasc"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("stasc runs")
}

/// `stasc run --dry-run` on the CPU demo configs with `overrides`.
fn dry_run(overrides: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["run", "--config", "configs/cpu_demo.yaml", "--ft_config", "configs/cpu_fine_tune.yaml"];
    args.push("--dry-run");
    args.extend(overrides);
    let out = stasc(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The problem lines of a dry run, without the `error: configs/cpu_demo.yaml: ` prefix.
fn problems(stderr: &str) -> Vec<String> {
    stderr.lines().filter_map(|l| l.strip_prefix("error: configs/cpu_demo.yaml: ")).map(str::to_string).collect()
}

#[test]
fn overrides_reach_the_resolved_configuration_and_are_recorded() {
    let (code, stdout, stderr) =
        dry_run(&["temperature=0.9", "ft.training.learning_rate=3e-5", "run_name=2024", "max_train_examples=null"]);
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "  temperature: 0.9",
        "    learning_rate: 0.00003",
        "  run_name: '2024'",
        "  max_train_examples: null",
        "- temperature=0.9",
        "- ft.training.learning_rate=3e-5",
        // The budget of the demo: 2 iterations of 8 train (K 2/2) and 8 test questions, max_tokens 64: per
        // iteration 8 + 16 initial answers and 8 + 32 corrections.
        "  samples: 128",
        "  generated_tokens_at_most: 8192",
        "  train_examples_per_round_at_most: 32",
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains("overrides:\n- temperature=0.9\n"), "{stdout}");
}

#[test]
fn override_errors_are_one_line_naming_the_override() {
    for (args, expected) in [
        (
            vec!["temprature=0.9"],
            "error: command-line override 'temprature=0.9': unknown key 'temprature' (did you mean 'temperature'?)",
        ),
        (
            vec!["learning_rate=1e-5"],
            "error: command-line override 'learning_rate=1e-5': unknown key 'learning_rate' (did you mean \
             'ft.training.learning_rate'?)",
        ),
        (
            vec!["ft.training.learning_rate=fast"],
            "error: command-line override 'ft.training.learning_rate=fast': key 'ft.training.learning_rate' expects \
             a number, found string \"fast\"",
        ),
        (vec!["top_p=1.5"], "error: command-line override 'top_p=1.5': must be in (0, 1], found 1.5"),
        (vec!["filter=sometimes"], "error: command-line override 'filter=sometimes': "),
    ] {
        let (code, stdout, stderr) = dry_run(&args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(expected), "{args:?}: expected {expected:?}, got {stderr:?}");
    }
}

#[test]
fn every_missing_file_is_one_problem_line() {
    let (code, stdout, stderr) = dry_run(&[
        "model_path=Qwen/Qwen2.5-1.5B-Instruct",
        "data_path=data/no_such_dataset",
        "template_dir=no_such_templates",
        "evaluator_function=plugin:no_such_plugin",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.contains("dataset: null") && stdout.contains("budget: null"), "{stdout}");
    let lines = problems(&stderr);
    assert_eq!(lines.len(), 4, "{stderr}");
    assert_eq!(
        lines[0],
        "model_path Qwen/Qwen2.5-1.5B-Instruct is not a directory but looks like a Hugging Face hub id; stasc reads \
         local checkpoints and does not download: run `hf download Qwen/Qwen2.5-1.5B-Instruct --local-dir \
         models/Qwen2.5-1.5B-Instruct` (pip install huggingface_hub; older versions spell it huggingface-cli \
         download), then set model_path: models/Qwen2.5-1.5B-Instruct"
    );
    assert_eq!(lines[1], "data_path: dataset data/no_such_dataset not found (data_path)");
    assert!(
        lines[2].starts_with("template_dir: no prompt templates for task 'qa' in no_such_templates/prompts"),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("evaluator_function plugin:no_such_plugin: plugin \"no_such_plugin\" not found"),
        "{lines:?}"
    );

    // A directory that is not a checkpoint, few-shot files that are not there.
    let dir = tempfile::tempdir().unwrap();
    let (model, few_shots) = (dir.path().join("model"), dir.path().join("few_shots"));
    std::fs::create_dir_all(&model).unwrap();
    std::fs::create_dir_all(&few_shots).unwrap();
    let (code, _, stderr) =
        dry_run(&[&format!("model_path={}", model.display()), &format!("few_shot_dir={}", few_shots.display())]);
    assert_eq!(code, Some(1));
    let lines = problems(&stderr);
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("model_path {}: ", model.display())) && lines[0].contains("config.json"),
        "{lines:?}"
    );
    for (line, kind) in lines[1..].iter().zip(["initial", "correction"]) {
        assert_eq!(
            line,
            &format!(
                "few_shot_dir: {}/qa_{kind}.json does not exist, so the qa {kind} prompts would get no few-shot \
                 messages although use_few_shots is true; add the file or set use_few_shots: false",
                few_shots.display()
            )
        );
    }
    // Zero-shot on purpose is no problem.
    let (code, _, stderr) = dry_run(&[&format!("few_shot_dir={}", few_shots.display()), "use_few_shots=false"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn dataset_splits_and_columns_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo("data/demo_nq/train.jsonl"), dir.path().join("train.jsonl")).unwrap();
    let data = format!("data_path={}", dir.path().display());
    let (code, _, stderr) = dry_run(&[&data]);
    assert_eq!(code, Some(1));
    assert_eq!(
        problems(&stderr),
        vec![format!("data_path: dataset {0}: split 'test' missing (looked for {0}/test.jsonl)", dir.path().display())]
    );
    let (code, _, stderr) = dry_run(&["question_col=query"]);
    assert_eq!(code, Some(1));
    let lines = problems(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("data_path: ") && lines[0].contains("query"), "{lines:?}");
}

#[test]
fn over_long_prompts_are_named_by_question_unless_truncation_is_allowed() {
    let (code, _, stderr) = dry_run(&["max_model_len=40"]);
    assert_eq!(code, Some(1));
    let lines = problems(&stderr);
    // 16 questions x 2 prompts: five listed, the rest counted.
    assert_eq!(lines.len(), 6, "{stderr}");
    let first = &lines[0];
    assert!(first.starts_with("data/demo_nq: question \""), "{first}");
    assert!(
        first.contains("(train split): its initial prompt has ")
            && first.ends_with(
                "tokens, but max_model_len 40 leaves room for 39; raise max_model_len, shorten the question, or set \
                 truncate_prompts: true to drop the prompt's first tokens"
            ),
        "{first}"
    );
    assert_eq!(lines[5], "data/demo_nq: 27 more prompts are longer than max_model_len 40 allows");
    let (code, stdout, stderr) = dry_run(&["max_model_len=40", "truncate_prompts=true"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.lines().any(|l| l == "  truncate_prompts: true"), "{stdout}");
}

#[test]
fn sweep_dry_run_checks_every_cell_and_prints_its_budget() {
    let out = stasc(&["sweep", "experiments/demo.toml", "--dry-run", "max_tokens=32"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // Each cell: 2 iterations of 6 train (K 2/1) and 6 test questions, at most 32 tokens each.
    // ENF samples initial answers at both iterations, FNE only at iteration 0: 2 x (18 + 18) and 36 + 18.
    for (cell, work) in [
        ("variant=ENF,seed=42", " 72 samples, ≤ 2,304 tokens sampled, ≤ "),
        ("variant=FNE,seed=42", " 54 samples, ≤ 1,728 tokens sampled, ≤ "),
    ] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(cell)).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains(work), "{line}");
    }
    assert!(stdout.contains(" 126 samples, ≤ 4,032 tokens sampled, ≤ "), "the total: {stdout}");
    assert!(stdout.contains("every cell's configuration is valid"), "{stdout}");

    let out = stasc(&["sweep", "experiments/demo.toml", "--dry-run", "model_path=Org/Model"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: experiments/demo.toml: every cell: model_path Org/Model is not a directory"),
        "{stderr}"
    );

    let out = stasc(&["sweep", "experiments/demo.toml", "--dry-run", "train_from_initial_model=true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: command-line override 'train_from_initial_model=true': the grid of experiments/demo.toml gives this key different values"),
        "{stderr}"
    );
}
