//! `stasc score`: score existing generations from a JSONL file with any reward (built-in or plugin), without a
//! model. Each output line is the input object plus "score". Reads stasc's own run files as they are: initial.jsonl
//! ("text"), samples.jsonl ("correction_text", or --field initial_text) and corrections.jsonl (whose gold answers
//! come from the initial.jsonl of the run directory it sits in).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{Map, Value};

use crate::config::{EvaluatorMode, RewardChoice};
use crate::reward::Evaluator;

/// Score generations from a JSONL file. Each input line is {"gold": [...] or "...", "answer": "..."} (other keys
/// are kept), or a line of stasc's own initial.jsonl, corrections.jsonl or samples.jsonl; each output line is the
/// input object plus "score". Nothing is written if any line fails.
#[derive(Debug, clap::Args)]
#[command(after_help = "The scored text is --field, or else the first of \"answer\", \"text\" (initial.jsonl, \
                        corrections.jsonl) and \"correction_text\" (samples.jsonl) that a line has. A line without \
                        \"gold\" in a run directory's iter_<n>/ (corrections.jsonl) takes the gold answers of its \
                        question from that run's initial.jsonl.")]
pub struct Args {
    /// The reward: in_acc, em, f1, math_acc, or plugin:PATH_OR_NAME (the choices of stasc_config's
    /// `evaluator_function`).
    #[arg(long)]
    pub reward: RewardChoice,
    /// What is scored: "default" (the whole answer) or "final" (the text after the marker), as stasc_config's
    /// `evaluator_mode`.
    #[arg(long, default_value = "default")]
    pub mode: EvaluatorMode,
    /// The answer marker for --mode final (matched case-insensitively).
    #[arg(long, default_value = "Final Answer:")]
    pub marker: String,
    /// The JSONL file to score.
    #[arg(long)]
    pub input: PathBuf,
    /// The field holding the text to score [default: answer, text or correction_text, whichever a line has].
    #[arg(long, value_name = "NAME")]
    pub field: Option<String>,
    /// Where to write the scored JSONL (written to a temporary name, then renamed); stdout when absent.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Extra directories to look for plugins in (before STASC_PLUGIN_PATH and the build directories).
    #[arg(long = "plugin-dir")]
    pub plugin_dirs: Vec<PathBuf>,
}

/// One input line: the whole object (kept in the output), its gold answers and its answer text.
type InputLine = (Map<String, Value>, Vec<String>, String);

/// The fields tried, in order, for the text to score when --field is not given.
const ANSWER_FIELDS: [&str; 3] = ["answer", "text", "correction_text"];

/// Gold answers by (split, question id), from a run's initial.jsonl.
type GoldIndex = HashMap<(String, String), Vec<String>>;

/// Parses one input line into its object, gold answers and answer text; `field` names the text to score (else the
/// first of [`ANSWER_FIELDS`] present), and `golds` supplies gold answers for lines without them.
fn parse_line(line: &str, field: Option<&str>, golds: Option<&GoldIndex>) -> Result<InputLine, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object".to_string());
    };
    let gold = match object.get("gold") {
        Some(value) => gold_list(value).ok_or("\"gold\" must be a string or a list of strings")?,
        None => gold_from_run(&object, golds)?,
    };
    let field = match field {
        Some(f) => f,
        None => ANSWER_FIELDS.iter().copied().find(|f| object.contains_key(*f)).ok_or_else(|| {
            "missing \"answer\" (a string; stasc's own files: \"text\" or \"correction_text\")".to_string()
        })?,
    };
    let answer = match object.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(format!("\"{field}\" must be a string")),
        None => return Err(format!("missing \"{field}\" (a string)")),
    };
    Ok((object, gold, answer))
}

fn gold_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items.iter().map(|item| item.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

/// The gold answers of a corrections.jsonl line, from the run's initial answers (matched by split and id).
fn gold_from_run(object: &Map<String, Value>, golds: Option<&GoldIndex>) -> Result<Vec<String>, String> {
    let missing = "missing \"gold\" (a string or a list of strings)";
    let (Some(golds), Some(Value::String(split)), Some(Value::String(id))) =
        (golds, object.get("split"), object.get("id"))
    else {
        return Err(missing.to_string());
    };
    golds
        .get(&(split.clone(), id.clone()))
        .cloned()
        .ok_or_else(|| format!("{missing}, and the run's initial.jsonl has no {split} question {id:?}"))
}

/// For a file in a run directory's `iter_<n>/`, the gold answers of that run's questions: from initial.jsonl beside
/// it, or iter_0's (fixed initialization samples initial answers once). None elsewhere.
fn run_golds(input: &Path) -> anyhow::Result<Option<GoldIndex>> {
    let Some(iter_dir) = input.parent() else { return Ok(None) };
    let is_iter = iter_dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("iter_"));
    let run_dir = iter_dir.parent().unwrap_or(Path::new("."));
    let Some(initial) = [iter_dir.join("initial.jsonl"), run_dir.join("iter_0").join("initial.jsonl")]
        .into_iter()
        .find(|p| is_iter && p.is_file())
    else {
        return Ok(None);
    };
    let text = fs::read_to_string(&initial).with_context(|| format!("cannot read {}", initial.display()))?;
    let mut golds = GoldIndex::new();
    for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not valid JSON", initial.display(), index + 1))?;
        let (Some(split), Some(id), Some(gold)) =
            (value["split"].as_str(), value["id"].as_str(), gold_list(&value["gold"]))
        else {
            bail!("{}:{}: expected \"split\", \"id\" and \"gold\" (an initial answer)", initial.display(), index + 1);
        };
        golds.insert((split.to_string(), id.to_string()), gold);
    }
    Ok(Some(golds))
}

/// Writes `text` to `path` atomically (crate::atomic_file), so it is never left half-written.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    Ok(crate::atomic_file::write(path, text.as_bytes())?)
}

/// Scores every line of the input and writes the result.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let evaluator = Evaluator::from_choice(&args.reward, args.mode, &args.marker, &args.plugin_dirs)
        .with_context(|| format!("cannot use reward {:?}", args.reward.name()))?;
    let input = fs::read_to_string(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
    let golds = run_golds(&args.input)?;
    let mut output = String::with_capacity(input.len() * 2);
    let (mut count, mut total) = (0usize, 0.0f64);
    for (index, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("{}:{}", args.input.display(), index + 1);
        let (mut object, gold, answer) = match parse_line(line, args.field.as_deref(), golds.as_ref()) {
            Ok(parsed) => parsed,
            Err(message) => bail!("{location}: {message}"),
        };
        let score = evaluator.evaluate(&gold, &answer).with_context(|| format!("{location}: cannot score"))?;
        object.insert("score".to_string(), Value::from(score));
        output.push_str(&serde_json::to_string(&Value::Object(object)).context("serialising a scored line")?);
        output.push('\n');
        count += 1;
        total += score;
    }
    match &args.output {
        Some(path) => write_atomically(path, &output)?,
        None => std::io::stdout().lock().write_all(output.as_bytes()).context("writing to stdout")?,
    }
    let mean = if count == 0 { 0.0 } else { total / count as f64 };
    eprintln!(
        "scored {count} lines with {} (mode {}): mean score {mean:.4}",
        evaluator.reward_name(),
        evaluator.mode()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{parse_line, GoldIndex};

    fn parse(line: &str) -> Result<super::InputLine, String> {
        parse_line(line, None, None)
    }

    #[test]
    fn lines_accept_string_or_list_gold() {
        let (_, gold, answer) = parse(r#"{"gold": "5", "answer": "\\boxed{5}", "id": 3}"#).unwrap();
        assert_eq!((gold, answer.as_str()), (vec!["5".to_string()], "\\boxed{5}"));
        let (object, gold, _) = parse(r#"{"gold": ["a", "b"], "answer": ""}"#).unwrap();
        assert_eq!(gold, vec!["a", "b"]);
        assert!(object.contains_key("gold"));
    }

    #[test]
    fn bad_lines_say_what_is_expected() {
        assert!(parse("{").unwrap_err().contains("not valid JSON"));
        assert!(parse("[1]").unwrap_err().contains("JSON object"));
        assert!(parse(r#"{"answer": "x"}"#).unwrap_err().contains("missing \"gold\""));
        assert!(parse(r#"{"gold": [1], "answer": "x"}"#).unwrap_err().contains("list of strings"));
        assert!(parse(r#"{"gold": "x"}"#).unwrap_err().contains("missing \"answer\""));
        assert!(parse(r#"{"gold": "x", "answer": 3}"#).unwrap_err().contains("must be a string"));
    }

    #[test]
    fn stasc_files_are_read_as_they_are() {
        let initial = r#"{"split":"test","id":"q1","question":"?","gold":["Paris"],"sample":0,"text":"Paris"}"#;
        assert_eq!(parse(initial).unwrap().2, "Paris");
        let sample = r#"{"id":"q1","gold":["a"],"initial_text":"b","correction_text":"a"}"#;
        assert_eq!(parse(sample).unwrap().2, "a");
        assert_eq!(parse_line(sample, Some("initial_text"), None).unwrap().2, "b");
        assert!(parse_line(sample, Some("nope"), None).unwrap_err().contains("missing \"nope\""));
        let correction = r#"{"split":"train","id":"q1","initial_sample":0,"sample":1,"text":"Rome"}"#;
        assert!(parse(correction).unwrap_err().contains("missing \"gold\""));
        let golds: GoldIndex = [(("train".to_string(), "q1".to_string()), vec!["Rome".to_string()])].into();
        assert_eq!(parse_line(correction, None, Some(&golds)).unwrap().1, vec!["Rome"]);
        let other = correction.replace("q1", "q2");
        let err = parse_line(&other, None, Some(&golds)).unwrap_err();
        assert!(err.contains("initial.jsonl has no train question \"q2\""), "{err}");
    }
}
