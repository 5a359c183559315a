//! `stasc score` as a user runs it: on the reward goldens (tests/fixtures/rewards/cases.jsonl, the reference's
//! scores), to a file and to stdout, and with one-line errors naming the file and line.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn stasc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stasc")).args(args).output().expect("stasc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The number after `"score":` in an output line, parsed exactly from its text.
fn raw_score(line: &str) -> f64 {
    let start = line.find("\"score\":").unwrap_or_else(|| panic!("no score in {line}")) + "\"score\":".len();
    let end = line[start..].find([',', '}']).map_or(line.len(), |i| start + i);
    line[start..end].parse().unwrap_or_else(|_| panic!("score is not a number in {line}"))
}

#[test]
fn score_reproduces_the_reference_on_the_golden_fixture() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rewards/cases.jsonl");
    let mut groups: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(&fixture).unwrap().lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let key = |k: &str| case[k].as_str().unwrap().to_string();
        groups.entry((key("reward"), key("mode"), key("marker"))).or_default().push(line.to_string());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for ((reward, mode, marker), lines) in groups {
        let input = dir.path().join(format!("{reward}-{mode}.jsonl"));
        let output = dir.path().join(format!("{reward}-{mode}.scored.jsonl"));
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let (input_arg, output_arg) = (input.display().to_string(), output.display().to_string());
        let out = stasc(&[
            "score",
            "--reward",
            &reward,
            "--mode",
            &mode,
            "--marker",
            &marker,
            "--input",
            &input_arg,
            "--output",
            &output_arg,
        ]);
        assert!(out.status.success(), "{reward}/{mode}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(&format!("scored {} lines with {reward}", lines.len())));
        let scored = std::fs::read_to_string(&output).unwrap();
        assert_eq!(scored.lines().count(), lines.len());
        for (scored_line, input_line) in scored.lines().zip(&lines) {
            let case: Value = serde_json::from_str(input_line).unwrap();
            let expected: f64 = case["expected_repr"].as_str().unwrap().parse().unwrap();
            assert_eq!(raw_score(scored_line).to_bits(), expected.to_bits(), "{reward}/{mode}: {scored_line}");
            let scored_case: Value = serde_json::from_str(scored_line).unwrap();
            assert_eq!(scored_case["answer"], case["answer"], "input fields are kept");
            checked += 1;
        }
    }
    assert!(checked >= 300, "only {checked} lines checked");
}

#[test]
fn score_writes_to_stdout_and_accepts_a_gold_string() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("math.jsonl");
    std::fs::write(&input, "{\"id\": 7, \"gold\": \"\\\\frac{1}{2}\", \"answer\": \"so \\\\boxed{0.5}\"}\n\n").unwrap();
    let out = stasc(&["score", "--reward", "math_acc", "--input", &input.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "blank lines are skipped");
    assert_eq!((lines[0]["id"].as_i64(), lines[0]["score"].as_f64()), (Some(7), Some(1.0)));
}

#[test]
fn bad_lines_and_bad_rewards_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("qa.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&input, "{\"gold\": [\"Paris\"], \"answer\": \"Paris\"}\n{\"gold\": [1], \"answer\": \"x\"}\n")
        .unwrap();
    let (input_arg, output_arg) = (input.display().to_string(), output.display().to_string());
    let out = stasc(&["score", "--reward", "in_acc", "--input", &input_arg, "--output", &output_arg]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{input_arg}:2: \"gold\" must be a string or a list of strings")), "{stderr}");
    assert!(!output.exists(), "no output file when a line fails");

    let out = stasc(&["score", "--reward", "bleu", "--input", &input_arg]);
    // The same choices, and the same words, as stasc_config's evaluator_function.
    let expected =
        "'--reward <REWARD>': must be one of in_acc, em, f1, math_acc, found \"bleu\"; or plugin:PATH_OR_NAME";
    assert!(text(&out.stderr).contains(expected), "{}", text(&out.stderr));
    let out = stasc(&["score", "--reward", "em", "--mode", "last", "--input", &input_arg]);
    let expected = "'--mode <MODE>': must be one of default, final, found \"last\"";
    assert!(text(&out.stderr).contains(expected), "{}", text(&out.stderr));
    let out = stasc(&["score", "--reward", "em", "--input", &dir.path().join("missing.jsonl").display().to_string()]);
    assert!(text(&out.stderr).contains("missing.jsonl"), "{}", text(&out.stderr));
}
