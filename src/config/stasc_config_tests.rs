//! Unit tests of stasc_config.yaml loading: defaults, key errors, invalid values, ignored keys.

use super::*;
use crate::config::keys::check;

fn load_str(text: &str) -> Result<(StascConfig, IgnoredKeys), ConfigError> {
    let file = Path::new("configs/x.yaml");
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    let doc = crate::config::keys::yaml_to_json(file, yaml)?;
    check(file, &doc, STASC_KEYS)?;
    StascConfig::from_document(file, &doc)
}

fn err(text: &str) -> String {
    load_str(text).unwrap_err().to_string()
}

const MINIMAL: &str = "model_path: m\ndata_path: d\n";

#[test]
fn defaults_fill_every_field() {
    let (c, ignored) = load_str(MINIMAL).unwrap();
    assert_eq!(c.run_name, "x");
    assert_eq!(c.output_dir, PathBuf::from("runs/x"));
    assert_eq!((c.task_type, c.id_col.as_str(), c.gold_col.as_str()), (TaskType::Qa, "question_id", "reference"));
    assert_eq!(
        (c.evaluator_mode, c.evaluator_function),
        (EvaluatorMode::Final, RewardChoice::Builtin(EvaluatorFunction::InAcc))
    );
    assert_eq!((c.temperature, c.top_p, c.max_tokens, c.random_seed), (0.6, 0.9, 256, 42));
    assert_eq!((c.number_output_initial_generations, c.number_output_corrections, c.num_star_iterations), (5, 5, 10));
    assert_eq!(
        (c.filter, c.pairing, c.device, c.dtype),
        (CorrectionFilter::Improving, Pairing::PerInitial, RunDevices::Auto, Dtype::Auto)
    );
    assert!(ignored.keys.is_empty());
}

#[test]
fn the_paper_protocol_selects_the_published_settings() {
    let (c, _) = load_str("model_path: m\ndata_path: d\nprotocol: paper\nonly_better_correction: false\n").unwrap();
    assert_eq!(c.protocol, Protocol::Paper);
    assert_eq!((c.pairing, c.filter), (Pairing::AllPairs, CorrectionFilter::CorrectToCorrect));
    assert_eq!((c.correctness, c.evaluator_mode), (Correctness::PositiveReward, EvaluatorMode::Default));
    assert_eq!((c.use_few_shots, c.sft_context), (false, SftContext::CorrectionPrompt));
    assert_eq!(c.answer_cleaning, AnswerCleaning::Reference);
    assert!(c.sample_train_at_last_iteration);
    assert!(c.protocol_departures.is_empty());
    // stasc's own protocol is the default.
    let (d, _) = load_str("model_path: m\ndata_path: d\nonly_better_correction: false\n").unwrap();
    assert_eq!(d.protocol, Protocol::Stasc);
    assert_eq!((d.pairing, d.filter), (Pairing::PerInitial, CorrectionFilter::NonDecreasing));
    assert_eq!((d.correctness, d.evaluator_mode), (Correctness::FullReward, EvaluatorMode::Final));
    assert_eq!((d.use_few_shots, d.sft_context, d.answer_cleaning), (true, SftContext::Template, AnswerCleaning::None));
}

#[test]
fn explicit_keys_win_over_the_protocol_and_are_named() {
    let (c, _) = load_str(
        "model_path: m\ndata_path: d\nprotocol: paper\npairing: per_initial\nevaluator_mode: final\nsample_train_at_last_iteration: false\n",
    )
    .unwrap();
    assert_eq!((c.pairing, c.evaluator_mode), (Pairing::PerInitial, EvaluatorMode::Final));
    assert!(!c.sample_train_at_last_iteration);
    assert_eq!(
        c.protocol_departures,
        ["pairing: per_initial (paper: all_pairs)", "evaluator_mode: final (paper: default)"]
    );
    assert_eq!(
        err("model_path: m\ndata_path: d\nprotocol: papr\n"),
        "configs/x.yaml: key 'protocol' must be one of stasc, paper, found \"papr\" (did you mean 'paper'?)"
    );
    assert_eq!(
        err("model_path: m\ndata_path: d\nprotocl: paper\n"),
        "configs/x.yaml: unknown key 'protocl' (did you mean 'protocol'?)"
    );
}

#[test]
fn math_defaults_follow_task_type() {
    let (c, _) = load_str("model_path: m\ndata_path: d\ntask_type: math\n").unwrap();
    assert_eq!((c.id_col.as_str(), c.question_col.as_str(), c.gold_col.as_str()), ("unique_id", "problem", "answer"));
    assert_eq!(c.evaluator_function, RewardChoice::Builtin(EvaluatorFunction::MathAcc));
    assert_eq!(c.evaluator_answer_marker, "Final Answer: The final answer is");
}

#[test]
fn filter_derives_from_only_better_correction() {
    let (c, _) = load_str("model_path: m\ndata_path: d\nonly_better_correction: False\n").unwrap();
    assert_eq!(c.filter, CorrectionFilter::NonDecreasing);
    let (c, _) =
        load_str("model_path: m\ndata_path: d\nonly_better_correction: false\nfilter: correct_to_correct\n").unwrap();
    assert_eq!(c.filter, CorrectionFilter::CorrectToCorrect);
    assert_eq!(
        err("model_path: m\ndata_path: d\nonly_better_correction: true\nfilter: non_decreasing\n"),
        "configs/x.yaml: key 'filter' 'non_decreasing' contradicts only_better_correction: true"
    );
}

#[test]
fn missing_required_key() {
    assert_eq!(err("data_path: d\n"), "configs/x.yaml: missing required key 'model_path'");
}

#[test]
fn unknown_key_suggests_closest() {
    assert_eq!(
        err("model_path: m\ndata_path: d\ntemprature: 0.5\n"),
        "configs/x.yaml: unknown key 'temprature' (did you mean 'temperature'?)"
    );
}

#[test]
fn wrong_type_names_expected() {
    assert_eq!(
        err("model_path: m\ndata_path: d\ntemperature: hot\n"),
        "configs/x.yaml: key 'temperature' expects a number, found string \"hot\""
    );
    assert_eq!(
        err("model_path: m\ndata_path: d\nenforce_eager: yes\n"),
        "configs/x.yaml: key 'enforce_eager' expects a boolean (true or false), found string \"yes\""
    );
}

#[test]
fn invalid_values_are_named() {
    let cases = [
        ("temperature: -1", "key 'temperature' must be in [0, inf), found -1"),
        ("top_p: 0", "key 'top_p' must be in (0, 1], found 0"),
        ("top_p: 1.5", "key 'top_p' must be in (0, 1], found 1.5"),
        ("max_tokens: 0", "key 'max_tokens' must be at least 1, found 0"),
        ("task_type: chat", "key 'task_type' must be one of qa, math, found \"chat\""),
        ("evaluator_mode: last", "key 'evaluator_mode' must be one of default, final, found \"last\""),
        (
            "filter: improve",
            "key 'filter' must be one of improving, non_decreasing, correct_to_correct, found \"improve\" \
             (did you mean 'improving'?)",
        ),
        ("run_name: a/b", "key 'run_name' must be a plain name (it names a directory), found \"a/b\""),
        ("dtype: f64", "key 'dtype' must be one of auto, f32, bf16, f16, found \"f64\" (did you mean 'f32'?)"),
    ];
    for (line, want) in cases {
        let got = err(&format!("{MINIMAL}{line}\n"));
        assert!(got.starts_with("configs/x.yaml: ") && got.ends_with(want), "{line}: {got}");
    }
}

#[test]
fn vllm_keys_are_reported_as_ignored() {
    let (_, ignored) = load_str("model_path: m\ndata_path: d\ncache_dir: /c\nenforce_eager: False\n").unwrap();
    assert_eq!(ignored.keys, vec!["cache_dir", "enforce_eager"]);
}

#[test]
fn raw_struct_and_key_tree_agree() {
    let doc = serde_json::to_value(RawStascConfig::default()).unwrap();
    let names: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(names.len(), STASC_KEYS.len());
    check(Path::new("x"), &doc, STASC_KEYS).unwrap();
}

#[test]
fn kernel_and_memory_switches_are_on_by_default_and_recorded_only_when_off() {
    let (c, _) = load_str(MINIMAL).unwrap();
    // The environment gives the defaults (STASC_FUSED_KERNELS, STASC_BOUNDED_GENERATION); tests run without them.
    assert_eq!(
        (c.fused_kernels, c.bounded_generation),
        (
            crate::switch::env_flag(crate::kernels::SWITCH_ENV, true),
            crate::switch::env_flag(BOUNDED_GENERATION_ENV, true)
        )
    );
    assert!(crate::switch::env_flag("STASC_NO_SUCH_SWITCH_IS_SET", true));
    let on = load_str(&format!("{MINIMAL}fused_kernels: true\nbounded_generation: true\n")).unwrap().0;
    let yaml = serde_yaml::to_string(&on).unwrap();
    assert!(!yaml.contains("fused_kernels") && !yaml.contains("bounded_generation"), "{yaml}");
    let off = load_str(&format!("{MINIMAL}fused_kernels: false\nbounded_generation: false\n")).unwrap().0;
    assert_eq!((off.fused_kernels, off.bounded_generation), (false, false));
    let yaml = serde_yaml::to_string(&off).unwrap();
    assert!(yaml.contains("fused_kernels: false") && yaml.contains("bounded_generation: false"), "{yaml}");
    assert_eq!(
        err(&format!("{MINIMAL}fused_kernel: false\n")),
        "configs/x.yaml: unknown key 'fused_kernel' (did you mean 'fused_kernels'?)"
    );
}
