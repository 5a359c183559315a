//! Per-question lineage end to end: the tiny tracked run's samples.jsonl (from the real engine: finish reasons, the
//! text the reward read), `stasc score` on stasc's own files, and the report's lineage page opened in headless
//! Chromium (Debian's `chromium`, installed by scripts/setup_test.sh): no console message, every question there,
//! and the transition filter showing exactly the questions with that transition.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::tracking::tracked_run;

fn jsonl(p: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn samples_jsonl_joins_what_the_engine_and_the_reward_saw() {
    let run = tracked_run();
    for n in 0..=1 {
        let dir = run.out.join(format!("iter_{n}"));
        let samples = jsonl(&dir.join("samples.jsonl"));
        let corrections = jsonl(&dir.join("corrections.jsonl"));
        assert_eq!(samples.len(), corrections.len());
        for (s, c) in samples.iter().zip(&corrections) {
            assert_eq!(
                (&s["id"], &s["correction_text"], &s["correction_reward"]),
                (&c["id"], &c["text"], &c["reward"])
            );
            assert!(!s["question"].as_str().unwrap().is_empty() && !s["gold"].as_array().unwrap().is_empty());
            for key in ["initial_finish_reason", "correction_finish_reason"] {
                let reason = s[key].as_str().unwrap_or_else(|| panic!("{key} missing in {s}"));
                assert!(["eos", "max_tokens", "max_model_len"].contains(&reason), "{reason}");
            }
            // evaluator_mode default: the reward read the whole text.
            assert_eq!((&s["initial_answer"], &s["correction_answer"]), (&Value::Null, &Value::Null));
            assert!(["I→C", "C→I", "C→C", "I→I"].contains(&s["transition"].as_str().unwrap()));
        }
        assert!(samples.iter().any(|s| s["kept"].is_boolean()) && samples.iter().any(|s| s["kept"].is_null()));
    }
}

#[test]
fn score_reads_stasc_files_directly() {
    let run = tracked_run();
    for file in ["initial.jsonl", "corrections.jsonl", "samples.jsonl"] {
        let input = run.out.join("iter_0").join(file);
        let o = Command::new(env!("CARGO_BIN_EXE_stasc"))
            .args(["score", "--reward", "in_acc", "--input"])
            .arg(&input)
            .output()
            .unwrap();
        assert!(o.status.success(), "{file}: {}", String::from_utf8_lossy(&o.stderr));
        let scored: Vec<Value> =
            String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let original = jsonl(&input);
        assert_eq!(scored.len(), original.len());
        let reward_key = if file == "samples.jsonl" { "correction_reward" } else { "reward" };
        for (s, r) in scored.iter().zip(&original) {
            assert_eq!(s["score"], r[reward_key], "{file}: the run's own reward (in_acc, default mode)");
        }
    }
}

/// Runs headless Chromium on `page` (with `hash`); returns the DOM after scripts ran and the console lines.
fn chromium(page: &Path, hash: &str, profile: &Path) -> (String, Vec<String>) {
    let url = format!("file://{}{hash}", page.display());
    let o = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(&url)
        .output()
        .unwrap_or_else(|e| panic!("chromium: {e} (scripts/setup_test.sh installs Debian's chromium)"));
    assert!(o.status.success(), "chromium failed: {}", String::from_utf8_lossy(&o.stderr));
    let console =
        String::from_utf8_lossy(&o.stderr).lines().filter(|l| l.contains(":CONSOLE")).map(String::from).collect();
    (String::from_utf8_lossy(&o.stdout).into_owned(), console)
}

/// The `data-id`s of the question articles in a DOM dump.
fn shown_ids(dom: &str) -> BTreeSet<String> {
    dom.split("<article class=\"question\"")
        .skip(1)
        .map(|a| {
            let start = a.find("data-id=\"").unwrap() + "data-id=\"".len();
            a[start..start + a[start..].find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn the_lineage_page_shows_every_question_and_filters_by_transition_in_chromium() {
    let run = tracked_run();
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let o = Command::new(env!("CARGO_BIN_EXE_stasc"))
        .arg("report")
        .arg(&run.out)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(index.contains("<a href=\"lineage/run.html\">questions across iterations</a>"), "{index}");
    let page: PathBuf = report.join("lineage/run.html");
    let profile = tmp.path().join("chromium-profile");

    // The console check catches errors: a broken copy of the page must be flagged.
    let broken = tmp.path().join("broken.html");
    std::fs::write(&broken, std::fs::read_to_string(&page).unwrap().replacen("init();", "init(); null.x;", 1)).unwrap();
    let (_, console) = chromium(&broken, "", &profile);
    assert!(console.iter().any(|l| l.contains("Uncaught TypeError")), "{console:?}");

    let samples: Vec<Value> = (0..=1).flat_map(|n| jsonl(&run.out.join(format!("iter_{n}/samples.jsonl")))).collect();
    let questions: BTreeSet<String> = samples.iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(questions.len(), 5, "3 train + 2 test questions");
    let (dom, console) = chromium(&page, "", &profile);
    assert!(console.is_empty(), "console messages: {console:?}");
    assert_eq!(shown_ids(&dom), questions);
    for s in &samples {
        let q = s["question"].as_str().unwrap();
        let escaped = q.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        assert!(dom.contains(&escaped), "question {q:?} not on the page");
    }
    assert!(dom.contains("5 of 5 questions shown"));

    for transition in ["I→C", "C→C", "I→I", "C→I"] {
        let expected: BTreeSet<String> = samples
            .iter()
            .filter(|s| s["transition"] == transition)
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        let hash = format!("#transition={}", transition.replace('→', "%E2%86%92"));
        let (dom, console) = chromium(&page, &hash, &profile);
        assert!(console.is_empty(), "console messages: {console:?}");
        assert_eq!(shown_ids(&dom), expected, "questions with a {transition} sample");
    }
    let (dom, _) = chromium(&page, "#split=test", &profile);
    let test_ids: BTreeSet<String> =
        samples.iter().filter(|s| s["split"] == "test").map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(shown_ids(&dom), test_ids);
}
