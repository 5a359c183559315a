//! `stasc score`: score existing generations from a JSONL file with any reward (built-in or plugin), without a
//! model. Each output line is the input object plus "score".

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{Map, Value};

use crate::reward::Evaluator;

/// Score generations from a JSONL file. Each input line is {"gold": [...] or "...", "answer": "..."} (other keys
/// are kept); each output line is the input object plus "score". Nothing is written if any line fails.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The reward: in_acc, em, f1, math_acc, or plugin:PATH_OR_NAME.
    #[arg(long)]
    pub reward: String,
    /// What is scored: "default" (the whole answer) or "final" (the text after the marker).
    #[arg(long, default_value = "default")]
    pub mode: String,
    /// The answer marker for --mode final (matched case-insensitively).
    #[arg(long, default_value = "Final Answer:")]
    pub marker: String,
    /// The JSONL file to score.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the scored JSONL (written to a temporary name, then renamed); stdout when absent.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Extra directories to look for plugins in (before STASC_PLUGIN_PATH and the build directories).
    #[arg(long = "plugin-dir")]
    pub plugin_dirs: Vec<PathBuf>,
}

/// One input line: the whole object (kept in the output), its gold answers and its answer text.
type InputLine = (Map<String, Value>, Vec<String>, String);

/// Parses one input line into its object, gold answers and answer text.
fn parse_line(line: &str) -> Result<InputLine, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object".to_string());
    };
    let gold = match object.get("gold") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("\"gold\" must be a string or a list of strings")?,
        Some(_) => return Err("\"gold\" must be a string or a list of strings".to_string()),
        None => return Err("missing \"gold\" (a string or a list of strings)".to_string()),
    };
    let answer = match object.get("answer") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("\"answer\" must be a string".to_string()),
        None => return Err("missing \"answer\" (a string)".to_string()),
    };
    Ok((object, gold, answer))
}

/// Writes `text` to `path` through a temporary file in the same directory, so it is never left half-written.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".stasc-score-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    temp.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", temp.path().display()))?;
    temp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Scores every line of the input and writes the result.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let evaluator = Evaluator::from_spec(&args.reward, &args.mode, &args.marker, &args.plugin_dirs)
        .with_context(|| format!("cannot use reward {:?}", args.reward))?;
    let input = fs::read_to_string(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
    let mut output = String::with_capacity(input.len() * 2);
    let (mut count, mut total) = (0usize, 0.0f64);
    for (index, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("{}:{}", args.input.display(), index + 1);
        let (mut object, gold, answer) = match parse_line(line) {
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
    use super::parse_line;

    #[test]
    fn lines_accept_string_or_list_gold() {
        let (_, gold, answer) = parse_line(r#"{"gold": "5", "answer": "\\boxed{5}", "id": 3}"#).unwrap();
        assert_eq!((gold, answer.as_str()), (vec!["5".to_string()], "\\boxed{5}"));
        let (object, gold, _) = parse_line(r#"{"gold": ["a", "b"], "answer": ""}"#).unwrap();
        assert_eq!(gold, vec!["a", "b"]);
        assert!(object.contains_key("gold"));
    }

    #[test]
    fn bad_lines_say_what_is_expected() {
        assert!(parse_line("{").unwrap_err().contains("not valid JSON"));
        assert!(parse_line("[1]").unwrap_err().contains("JSON object"));
        assert!(parse_line(r#"{"answer": "x"}"#).unwrap_err().contains("missing \"gold\""));
        assert!(parse_line(r#"{"gold": [1], "answer": "x"}"#).unwrap_err().contains("list of strings"));
        assert!(parse_line(r#"{"gold": "x"}"#).unwrap_err().contains("missing \"answer\""));
        assert!(parse_line(r#"{"gold": "x", "answer": 3}"#).unwrap_err().contains("must be a string"));
    }
}
