//! The built-in rewards against the reference implementation's scores (tests/fixtures/rewards, written by
//! scripts/make_reward_goldens.py): every case must agree exactly, the documented divergences must still diverge,
//! and the LaTeX renderer must match pylatexenc on its supported subset.

use std::path::Path;

use serde_json::Value;
use stasc::reward::math::latex_to_text;
use stasc::reward::Evaluator;

fn fixture(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rewards").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn str_field<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key].as_str().unwrap_or_else(|| panic!("{key} missing in {case}"))
}

fn gold(case: &Value) -> Vec<String> {
    case["gold"].as_array().expect("gold list").iter().map(|g| g.as_str().expect("gold string").to_string()).collect()
}

fn score(case: &Value) -> f64 {
    let reward = str_field(case, "reward").parse().expect("a built-in reward");
    let mode = str_field(case, "mode").parse().expect("an evaluator mode");
    let evaluator = Evaluator::from_choice(&reward, mode, str_field(case, "marker"), &[]).expect("built-in evaluator");
    evaluator.evaluate(&gold(case), str_field(case, "answer")).expect("score")
}

fn expected(case: &Value) -> f64 {
    // Python's repr of the float, parsed exactly (correct rounding), so the comparison can be bit-for-bit.
    str_field(case, "expected_repr").parse().expect("expected_repr is a float")
}

#[test]
fn builtin_rewards_match_the_reference_on_every_case() {
    let cases = fixture("cases.jsonl");
    assert!(cases.len() >= 300, "the fixture has {} cases", cases.len());
    let mut mismatches = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (got, want) = (score(case), expected(case));
        if got.to_bits() != want.to_bits() {
            mismatches.push(format!("line {}: got {got}, reference {want}: {case}", i + 1));
        }
    }
    assert!(mismatches.is_empty(), "{} of {} cases differ:\n{}", mismatches.len(), cases.len(), mismatches.join("\n"));
}

#[test]
fn every_reward_and_mode_is_covered_by_the_fixture() {
    let cases = fixture("cases.jsonl");
    for (reward, mode) in [
        ("in_acc", "default"),
        ("in_acc", "final"),
        ("em", "default"),
        ("em", "final"),
        ("f1", "default"),
        ("f1", "final"),
        ("math_acc", "final"),
    ] {
        let selected: Vec<&Value> = cases.iter().filter(|c| c["reward"] == reward && c["mode"] == mode).collect();
        let positives = selected.iter().filter(|c| expected(c) > 0.0).count();
        assert!(
            positives >= 5 && selected.len() - positives >= 5,
            "{reward}/{mode}: {positives} of {}",
            selected.len()
        );
    }
}

#[test]
fn documented_divergences_still_diverge() {
    for case in fixture("known_divergences.jsonl") {
        assert_eq!(expected(&case), 1.0, "{case}");
        assert_eq!(score(&case), 0.0, "stasc now agrees with the reference; move this case to cases.jsonl: {case}");
    }
}

#[test]
fn latex_rendering_matches_pylatexenc() {
    for case in fixture("latex2text.jsonl") {
        let input = str_field(&case, "input");
        assert_eq!(latex_to_text(input).as_deref(), Some(str_field(&case, "output")), "input {input:?}");
    }
}
