//! Turning source rows into [`Example`]s: the column mapping, the gold-answer shapes we accept (a string or a
//! non-empty list of strings), and the per-split checks (unique ids, at least one row). Shared by every format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::DataError;
use super::{Columns, Example};

/// Collects the examples of one split, rejecting duplicate ids (the loop pairs samples by id).
pub(crate) struct SplitBuilder {
    split: &'static str,
    examples: Vec<Example>,
    seen: HashMap<String, String>,
}

impl SplitBuilder {
    pub(crate) fn new(split: &'static str) -> Self {
        SplitBuilder { split, examples: Vec::new(), seen: HashMap::new() }
    }

    /// Adds an example read at `location` of `file`.
    pub(crate) fn push(&mut self, file: &Path, location: String, example: Example) -> Result<(), DataError> {
        if let Some(first) = self.seen.get(&example.id) {
            return Err(DataError::BadRow {
                file: file.to_path_buf(),
                reason: format!("duplicate id {:?} (first seen at {first})", example.id),
                location,
            });
        }
        self.seen.insert(example.id.clone(), format!("{}: {location}", file.display()));
        self.examples.push(example);
        Ok(())
    }

    /// The split's examples; a split with no rows is an error naming `source`.
    pub(crate) fn finish(self, source: &Path) -> Result<Vec<Example>, DataError> {
        if self.examples.is_empty() {
            return Err(DataError::EmptySplit { file: PathBuf::from(source), split: self.split });
        }
        Ok(self.examples)
    }
}

/// Describes a JSON value's type for a row error.
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => "a string".to_string(),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Builds an example from one JSON object row; the error reason names the column and what it expected.
pub(crate) fn example_from_json(row: &Value, columns: &Columns) -> Result<Example, String> {
    let Value::Object(map) = row else {
        return Err(format!("expected a JSON object, found {}", kind(row)));
    };
    let get = |column: &str| map.get(column).ok_or_else(|| format!("missing column '{column}'"));
    let id = match get(&columns.id)? {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        other => {
            return Err(format!(
                "column '{}' must be an integer or a non-empty string, found {}",
                columns.id,
                kind(other)
            ))
        }
    };
    let question = match get(&columns.question)? {
        Value::String(s) => s.clone(),
        other => return Err(format!("column '{}' must be a string, found {}", columns.question, kind(other))),
    };
    let gold = match get(&columns.gold)? {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
            format!("column '{}' must be a string or a list of strings, found a list with a non-string", columns.gold)
        })?,
        other => {
            return Err(format!(
                "column '{}' must be a string or a list of strings, found {}",
                columns.gold,
                kind(other)
            ))
        }
    };
    check_gold(&gold, &columns.gold)?;
    Ok(Example { id, question, gold })
}

/// A gold list must name at least one answer.
pub(crate) fn check_gold(gold: &[String], column: &str) -> Result<(), String> {
    if gold.is_empty() {
        return Err(format!("column '{column}' is an empty list (at least one gold answer is needed)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_int_or_string_ids_and_string_or_list_gold() {
        let c = Columns::default();
        let e =
            example_from_json(&json!({"question_id": 7, "question_text": "q", "reference": ["a", "b"]}), &c).unwrap();
        assert_eq!(e, Example { id: "7".into(), question: "q".into(), gold: vec!["a".into(), "b".into()] });
        let e = example_from_json(&json!({"question_id": "x1", "question_text": "q", "reference": "a"}), &c).unwrap();
        assert_eq!(e.gold, vec!["a"]);
    }

    #[test]
    fn bad_rows_name_the_column() {
        let c = Columns::default();
        let err = |row: Value| example_from_json(&row, &c).unwrap_err();
        assert_eq!(err(json!({"question_id": 1, "question_text": "q"})), "missing column 'reference'");
        assert_eq!(
            err(json!({"question_id": 1, "question_text": "q", "reference": []})),
            "column 'reference' is an empty list (at least one gold answer is needed)"
        );
        assert_eq!(
            err(json!({"question_id": 1.5, "question_text": "q", "reference": "a"})),
            "column 'question_id' must be an integer or a non-empty string, found number 1.5"
        );
        assert_eq!(
            err(json!({"question_id": 1, "question_text": "q", "reference": 5})),
            "column 'reference' must be a string or a list of strings, found number 5"
        );
        assert_eq!(err(json!([1])), "expected a JSON object, found a list");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let mut b = SplitBuilder::new("train");
        let ex = Example { id: "1".into(), question: "q".into(), gold: vec!["a".into()] };
        b.push(Path::new("t.jsonl"), "line 1".into(), ex.clone()).unwrap();
        let e = b.push(Path::new("t.jsonl"), "line 2".into(), ex).unwrap_err().to_string();
        assert_eq!(e, "t.jsonl: line 2: duplicate id \"1\" (first seen at t.jsonl: line 1)");
        assert!(SplitBuilder::new("test").finish(Path::new("d")).is_err());
    }
}
