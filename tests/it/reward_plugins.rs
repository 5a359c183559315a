//! Reward plugins end to end: the example plugins and the misbehaving test plugins are built from plugins/ by the
//! test itself (`cargo build -p ...` into target/tmp/plugin-build, so `cargo test --workspace` needs no earlier
//! build step), then loaded through `Evaluator`, `stasc plugin list` and `stasc score`. One test scaffolds a plugin
//! with `stasc plugin new`, builds it with cargo and loads it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use stasc::reward::plugin::{file_sha256, library_file_name, PluginError};
use stasc::reward::{Evaluator, RewardError, RewardSource};

const PLUGIN_CRATES: [&str; 5] = [
    "math-tolerance",
    "in-acc-length-penalty",
    "stasc-test-misbehaving",
    "stasc-test-wrong-abi",
    "stasc-test-no-entry",
];

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

fn check(output: Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds the plugin crates once per test run and returns the directory holding their dylibs.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // A target directory of its own: no lock contention with the cargo running these tests.
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-build");
        let mut command = cargo();
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args(["build", "--offline", "--target-dir"]).arg(&target);
        for name in PLUGIN_CRATES {
            command.args(["-p", name]);
        }
        check(command.output().expect("cargo runs"), "building the plugin crates");
        target.join("debug")
    })
}

fn plugin_path(crate_name: &str) -> PathBuf {
    plugin_dir().join(library_file_name(crate_name))
}

fn gold(aliases: &[&str]) -> Vec<String> {
    aliases.iter().map(|s| s.to_string()).collect()
}

/// The evaluator of `reward` and `mode` as a config file writes them.
fn evaluator(reward: &str, mode: &str) -> Result<Evaluator, RewardError> {
    from_text(reward, mode, "Final Answer:", &[plugin_dir().to_path_buf()])
}

fn from_text(reward: &str, mode: &str, marker: &str, dirs: &[PathBuf]) -> Result<Evaluator, RewardError> {
    Evaluator::from_choice(&reward.parse().unwrap(), mode.parse().unwrap(), marker, dirs)
}

#[test]
fn example_plugins_load_by_name_and_by_path() {
    let tolerance = evaluator("plugin:math-tolerance", "default").unwrap();
    assert_eq!(tolerance.reward_name(), "math-tolerance");
    assert_eq!(tolerance.evaluate(&gold(&["3.14159265"]), "so \\boxed{3.1416}").unwrap(), 1.0);
    assert_eq!(tolerance.evaluate(&gold(&["3.14159265"]), "so \\boxed{3.2}").unwrap(), 0.0);
    let (path, sha256) = tolerance.plugin_record().expect("a plugin records its file");
    assert_eq!(path, plugin_path("math-tolerance"));
    assert_eq!(sha256, file_sha256(path).unwrap());
    assert!(matches!(tolerance.source(), RewardSource::Plugin { abi_version: 1, .. }));

    let by_path = format!("plugin:{}", plugin_path("in-acc-length-penalty").display());
    let penalty = from_text(&by_path, "final", "Final Answer:", &[]).unwrap();
    assert_eq!(penalty.evaluate(&gold(&["Paris"]), "Reasoning...\nFinal Answer: Paris").unwrap(), 1.0);
    assert_eq!(penalty.evaluate(&gold(&["Paris"]), "Paris. Final Answer: London").unwrap(), 0.0);
}

#[test]
fn a_panicking_plugin_fails_that_sample_and_the_host_keeps_running() {
    let plugin = evaluator("plugin:stasc-test-misbehaving", "default").unwrap();
    let err = plugin.evaluate(&gold(&["a"]), "panic").unwrap_err();
    assert!(matches!(err, RewardError::PluginPanicked { .. }), "{err}");
    assert!(err.to_string().contains("panicked: test-misbehaving was asked to panic"), "{err}");
    assert_eq!(plugin.evaluate(&gold(&["a", "b"]), "fine").unwrap(), 2.0, "the plugin still works after a panic");
    let err = plugin.evaluate(&gold(&["a"]), "error").unwrap_err();
    assert!(err.to_string().contains("failed: test-misbehaving was asked to fail"), "{err}");
}

#[test]
fn non_finite_plugin_scores_are_errors() {
    let plugin = evaluator("plugin:stasc-test-misbehaving", "default").unwrap();
    for answer in ["nan", "inf"] {
        let err = plugin.evaluate(&gold(&["a"]), answer).unwrap_err();
        assert!(matches!(err, RewardError::NonFinite { .. }), "{answer}: {err}");
        assert!(err.to_string().contains("non-finite score"), "{err}");
    }
}

#[test]
fn a_wrong_abi_version_is_refused_before_any_call() {
    let err = evaluator("plugin:stasc-test-wrong-abi", "default").unwrap_err();
    assert!(matches!(err, RewardError::Plugin(PluginError::WrongAbi { found: 999, expected: 1, .. })), "{err}");
    assert!(err.to_string().contains("has ABI version 999, but this stasc expects 1"), "{err}");
}

#[test]
fn a_dylib_without_the_entry_symbol_is_not_a_plugin() {
    let err = evaluator("plugin:stasc-test-no-entry", "default").unwrap_err();
    assert!(matches!(err, RewardError::Plugin(PluginError::MissingSymbol { .. })), "{err}");
    assert!(err.to_string().contains("exports no `stasc_reward_plugin`"), "{err}");
}

#[test]
fn missing_files_unknown_names_and_non_dylibs_are_clear_errors() {
    let err = evaluator("plugin:/no/such/dir/libreward.so", "default").unwrap_err();
    assert!(err.to_string().contains("/no/such/dir/libreward.so does not exist"), "{err}");
    let err = evaluator("plugin:no-such-plugin", "default").unwrap_err();
    assert!(err.to_string().contains("plugin \"no-such-plugin\" not found"), "{err}");
    assert!(err.to_string().contains(&plugin_dir().display().to_string()), "the searched directories are named: {err}");
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("libnotes.so");
    std::fs::write(&text, "plain text\n").unwrap();
    let err = evaluator(&format!("plugin:{}", text.display()), "default").unwrap_err();
    assert!(err.to_string().contains("is not a loadable dynamic library"), "{err}");
}

fn stasc(args: &[&str], plugin_path_env: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stasc"));
    command.args(args).env_remove("STASC_PLUGIN_PATH");
    if let Some(dir) = plugin_path_env {
        command.env("STASC_PLUGIN_PATH", dir);
    }
    command.output().expect("stasc runs")
}

#[test]
fn plugin_list_shows_builtins_plugins_and_abi_versions() {
    let dir = plugin_dir().display().to_string();
    let out = stasc(&["plugin", "list", "--plugin-dir", &dir], None);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for builtin in ["in_acc", "em", "f1", "math_acc"] {
        assert!(stdout.contains(&format!("  {builtin} ")), "{builtin} missing:\n{stdout}");
    }
    let line = |name: &str| stdout.lines().find(|l| l.trim_start().starts_with(name)).map(str::to_string);
    let tolerance = line("math-tolerance ").unwrap_or_else(|| panic!("math-tolerance missing:\n{stdout}"));
    assert!(tolerance.contains("ABI 1") && tolerance.contains(&plugin_path("math-tolerance").display().to_string()));
    assert!(line("in-acc-length-penalty ").is_some_and(|l| l.contains("ABI 1")), "{stdout}");
    assert!(stdout.contains("has ABI version 999"), "the wrong-ABI plugin is reported:\n{stdout}");
    assert!(!stdout.contains("no_entry"), "a library without the entry symbol is not listed:\n{stdout}");
}

#[test]
fn score_cli_uses_plugins_from_the_plugin_path_and_names_the_failing_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"gold\": \"2.5\", \"answer\": \"\\\\boxed{2.50001}\"}\n").unwrap();
    let input_arg = input.display().to_string();
    let out = stasc(&["score", "--reward", "plugin:math-tolerance", "--input", &input_arg], Some(plugin_dir()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"score\":1.0"), "{stdout}");

    std::fs::write(&input, "{\"gold\": [\"a\"], \"answer\": \"fine\"}\n{\"gold\": [\"a\"], \"answer\": \"nan\"}\n")
        .unwrap();
    let out = stasc(&["score", "--reward", "plugin:stasc-test-misbehaving", "--input", &input_arg], Some(plugin_dir()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{input_arg}:2")) && stderr.contains("non-finite score"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing is written when a line fails");
}

#[test]
fn a_scaffolded_plugin_builds_and_loads_without_edits() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();
    check(stasc(&["plugin", "new", "demo-reward", "--dir", &dir_arg], None), "stasc plugin new");
    let manifest = dir.path().join("demo-reward/Cargo.toml");
    assert!(manifest.is_file());
    let err = stasc(&["plugin", "new", "demo-reward", "--dir", &dir_arg], None);
    assert!(!err.status.success() && String::from_utf8_lossy(&err.stderr).contains("already exists"));

    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-build");
    let build = cargo()
        .args(["build", "--offline", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output();
    check(build.expect("cargo runs"), "building the scaffolded plugin");
    let library = target.join("debug").join(library_file_name("demo-reward"));
    let plugin = from_text(&format!("plugin:{}", library.display()), "default", "", &[]).unwrap();
    assert_eq!(plugin.reward_name(), "demo-reward");
    assert_eq!(plugin.evaluate(&gold(&["Paris"]), "It is PARIS.").unwrap(), 1.0);
    assert_eq!(plugin.evaluate(&gold(&["Paris"]), "It is Rome.").unwrap(), 0.0);
}

/// A backend whose every completion is `text` (the misbehaving plugin panics on "panic").
struct Scripted {
    text: &'static str,
}

impl stasc::stasc::Backend for Scripted {
    fn generate(
        &mut self,
        _model: &Path,
        requests: &[stasc::stasc::SamplingJob],
        _sampling: &stasc::stasc::SamplingSpec,
    ) -> Result<Vec<Vec<stasc::stasc::GeneratedSample>>, stasc::stasc::BackendError> {
        let sample =
            |seed| stasc::stasc::GeneratedSample { text: self.text.to_string(), seed, tokens: 1, finish_reason: None };
        Ok(requests.iter().map(|r| (0..r.n as u64).map(sample).collect()).collect())
    }

    fn train(
        &mut self,
        _base: &Path,
        _examples: &[Vec<stasc::prompt::ChatMessage>],
        _out: &Path,
    ) -> Result<stasc::stasc::TrainSummary, stasc::stasc::BackendError> {
        Err("this test never trains".into())
    }
}

struct OneTurn;

impl stasc::stasc::Prompts for OneTurn {
    fn initial(&self, q: &str) -> Result<Vec<stasc::prompt::ChatMessage>, String> {
        Ok(vec![stasc::prompt::ChatMessage::new("user", q)])
    }
    fn correction(&self, q: &str, _a: &str) -> Result<Vec<stasc::prompt::ChatMessage>, String> {
        self.initial(q)
    }
    fn sft(&self, q: &str, _a: &str, c: &str) -> Result<Vec<stasc::prompt::ChatMessage>, String> {
        Ok(vec![stasc::prompt::ChatMessage::new("user", q), stasc::prompt::ChatMessage::new("assistant", c)])
    }
}

#[test]
fn a_plugin_panic_during_a_run_stops_it_with_the_sample_named_and_the_run_resumes() {
    use stasc::stasc::from_config::EvaluatorScorer;
    use stasc::stasc::{
        AnswerCleaning, CorrectionFilter, Correctness, FineTuning, Initialization, Pairing, RunOptions, RunSpec,
        SamplingSpec,
    };

    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let example = |id: &str| stasc::data::Example { id: id.into(), question: format!("q {id}"), gold: gold(&["x"]) };
    let splits = stasc::data::Splits { train: vec![example("t1")], test: vec![example("q1"), example("q2")] };
    let spec = RunSpec {
        run_name: "plugin-panic".into(),
        model_path: dir.path().join("M0"),
        iterations: 0,
        initialization: Initialization::Evolving,
        filter: CorrectionFilter::Improving,
        fine_tuning: FineTuning::Fixed,
        pairing: Pairing::PerInitial,
        initial_samples: 1,
        correction_samples: 1,
        sampling: SamplingSpec { temperature: 0.6, top_p: 0.9, max_tokens: 8, seed: 1 },
        correctness: Correctness::FullReward,
        answer_cleaning: AnswerCleaning::None,
        sample_train_at_last_iteration: true,
        keep_checkpoints: false,
        chunk_prompts: 1,
    };
    let scorer = EvaluatorScorer(evaluator("plugin:stasc-test-misbehaving", "default").unwrap());
    let fingerprint = serde_json::json!({"reward": "stasc-test-misbehaving"});
    let run = |text: &'static str| {
        stasc::stasc::run_stasc(
            &spec,
            &splits,
            &mut Scripted { text },
            &OneTurn,
            &scorer,
            &run_dir,
            &fingerprint,
            &RunOptions::default(),
        )
    };

    // The panic stays inside the plugin: this process goes on, and the run stops with one error naming the sample.
    let err = run("panic").unwrap_err().to_string();
    assert!(err.starts_with("iteration 0, initial answers, question t1: plugin reward test-misbehaving ("), "{err}");
    assert!(err.ends_with("panicked: test-misbehaving was asked to panic"), "{err}");
    assert!(!run_dir.join("iter_0/initial.jsonl").exists(), "no phase is recorded complete");

    // The same run, once the samples can be scored, finishes (the plugin scores the number of gold answers).
    let metrics = run("fine").unwrap();
    assert_eq!(metrics[0].test_initial_accuracy, 1.0);
    assert!(run_dir.join("DONE").exists());
}
