//! JSON datasets: `train.jsonl` / `test.jsonl` (one object per line), `train.json` / `test.json` (a list of
//! objects each), or one `.json` file holding `{"train": [...], "test": [...]}`.

use std::path::Path;

use serde_json::Value;

use super::error::DataError;
use super::rows::{example_from_json, SplitBuilder};
use super::{Columns, Example};

fn read(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })
}

fn parse_json(path: &Path, text: &str) -> Result<Value, DataError> {
    serde_json::from_str(text).map_err(|e| DataError::Json {
        file: path.to_path_buf(),
        location: String::new(),
        message: e.to_string(),
    })
}

/// Reads one JSONL split; rows are located by their 1-based line number, blank lines skipped.
pub(crate) fn read_jsonl(path: &Path, split: &'static str, columns: &Columns) -> Result<Vec<Example>, DataError> {
    let text = read(path)?;
    let mut builder = SplitBuilder::new(split);
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("line {}", index + 1);
        let row: Value = serde_json::from_str(line).map_err(|e| DataError::Json {
            file: path.to_path_buf(),
            location: format!("{location}: "),
            message: e.to_string(),
        })?;
        push_row(&mut builder, path, location, &row, columns)?;
    }
    builder.finish(path)
}

/// Maps one JSON row object to an example (a bad row names the file and `location`) and adds it to the split.
fn push_row(
    builder: &mut SplitBuilder,
    path: &Path,
    location: String,
    row: &Value,
    columns: &Columns,
) -> Result<(), DataError> {
    let example = example_from_json(row, columns).map_err(|reason| DataError::BadRow {
        file: path.to_path_buf(),
        location: location.clone(),
        reason,
    })?;
    builder.push(path, location, example)
}

/// Reads one split held as a JSON list of objects (`rows`), located as `<prefix>row N`.
fn rows_to_split(
    path: &Path,
    rows: &Value,
    split: &'static str,
    prefix: &str,
    columns: &Columns,
) -> Result<Vec<Example>, DataError> {
    let Value::Array(rows) = rows else {
        return Err(DataError::BadRow {
            file: path.to_path_buf(),
            location: format!("{prefix}split").trim().to_string(),
            reason: "expected a JSON list of row objects".to_string(),
        });
    };
    let mut builder = SplitBuilder::new(split);
    for (index, row) in rows.iter().enumerate() {
        let location = format!("{prefix}row {}", index + 1);
        push_row(&mut builder, path, location, row, columns)?;
    }
    builder.finish(path)
}

/// Reads one split from a `.json` file holding a list of objects.
pub(crate) fn read_json_list(path: &Path, split: &'static str, columns: &Columns) -> Result<Vec<Example>, DataError> {
    let value = parse_json(path, &read(path)?)?;
    rows_to_split(path, &value, split, "", columns)
}

/// Reads both splits from one `.json` file holding `{"train": [...], "test": [...]}`.
pub(crate) fn read_json_object(path: &Path, columns: &Columns) -> Result<(Vec<Example>, Vec<Example>), DataError> {
    let value = parse_json(path, &read(path)?)?;
    let split = |name: &'static str| -> Result<Vec<Example>, DataError> {
        let rows = value.get(name).ok_or_else(|| DataError::MissingSplit {
            dataset: path.to_path_buf(),
            split: name,
            expected: format!("a \"{name}\" list at the top level"),
        })?;
        rows_to_split(path, rows, name, &format!("{name} "), columns)
    };
    Ok((split("train")?, split("test")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn jsonl_rows_and_bad_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let c = Columns::default();
        let good = "{\"question_id\": 1, \"question_text\": \"q1\", \"reference\": [\"a\"]}\n\n\
                    {\"question_id\": 2, \"question_text\": \"q2\", \"reference\": \"b\"}\n";
        let path = write(dir.path(), "train.jsonl", good);
        let rows = read_jsonl(&path, "train", &c).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].gold, vec!["b"]);

        let bad = format!("{good}{{\"question_id\": 3, \"question_text\": \"q3\", \"reference\": []}}\n");
        let path = write(dir.path(), "bad.jsonl", &bad);
        let e = read_jsonl(&path, "train", &c).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: line 4: column 'reference' is an empty list (at least one gold answer is needed)",
                path.display()
            )
        );

        let path = write(dir.path(), "broken.jsonl", "{\"question_id\": 1,\n");
        let e = read_jsonl(&path, "train", &c).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: line 1: not valid JSON", path.display())), "{e}");
    }

    #[test]
    fn json_object_with_both_splits() {
        let dir = tempfile::tempdir().unwrap();
        let c = Columns { id: "id".into(), question: "q".into(), gold: "a".into() };
        let path = write(
            dir.path(),
            "d.json",
            r#"{"train": [{"id": 1, "q": "x", "a": "1"}], "test": [{"id": "t", "q": "y", "a": ["2"]}]}"#,
        );
        let (train, test) = read_json_object(&path, &c).unwrap();
        assert_eq!((train[0].id.as_str(), test[0].id.as_str()), ("1", "t"));

        let path = write(
            dir.path(),
            "e.json",
            r#"{"train": [{"id": 1, "q": "x", "a": "1"}, {"id": 2, "q": 3, "a": "1"}], "test": []}"#,
        );
        let e = read_json_object(&path, &c).unwrap_err().to_string();
        assert_eq!(e, format!("{}: train row 2: column 'q' must be a string, found number 3", path.display()));

        let path = write(dir.path(), "f.json", r#"{"train": [{"id": 1, "q": "x", "a": "1"}]}"#);
        let e = read_json_object(&path, &c).unwrap_err().to_string();
        assert!(e.contains("split 'test' missing"), "{e}");
    }
}
