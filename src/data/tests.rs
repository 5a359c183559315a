//! Dataset loading tests: HF fixtures written by Python `datasets` (scripts/make_hf_fixture.py), the shipped demo
//! dataset, and broken inputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_ipc::writer::StreamWriter;

use super::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Copies an HF fixture into a temp dir so a test can damage it.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo(&format!("tests/fixtures/{name}"));
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let target = dir.path().join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir(&target).unwrap();
            for file in std::fs::read_dir(entry.path()).unwrap() {
                let file = file.unwrap();
                std::fs::copy(file.path(), target.join(file.file_name())).unwrap();
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
    dir
}

#[test]
fn hf_fixture_with_int_ids_and_list_gold() {
    let path = repo("tests/fixtures/hf_dataset");
    assert_eq!(detect_format(&path).unwrap(), DatasetFormat::HfSaveToDisk);
    let splits = load_splits(&path, &Columns::default()).unwrap();
    assert_eq!((splits.train.len(), splits.test.len()), (5, 3));
    // Rows come from two shards, in state.json order.
    let ids: Vec<&str> = splits.train.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["101", "102", "103", "104", "105"]);
    assert_eq!(splits.train[1].gold, ["Herman Melville", "Melville"]);
    assert_eq!(splits.train[3].question, "where is the city of münchen");
    assert_eq!(splits.test[2].gold, ["Pacific Ocean", "Pacific"]);
}

#[test]
fn hf_fixture_with_string_ids_and_string_gold() {
    let columns = Columns { id: "unique_id".into(), question: "problem".into(), gold: "answer".into() };
    let splits = load_splits(&repo("tests/fixtures/hf_dataset_string_gold"), &columns).unwrap();
    assert_eq!(splits.train[0].id, "test/algebra/1.json");
    assert_eq!(splits.train[1].gold, ["2"]);
    assert_eq!(splits.test[0].question, "What is $\\frac{6}{3}$?");
}

#[test]
fn hf_missing_column_lists_the_available_ones() {
    let columns = Columns { gold: "answer".into(), ..Columns::default() };
    let e = load_splits(&repo("tests/fixtures/hf_dataset"), &columns).unwrap_err().to_string();
    assert!(
        e.ends_with(
            "data-00000-of-00002.arrow: no column 'answer' (gold_col); columns are: question_id, question_text, \
             reference"
        ),
        "{e}"
    );
}

#[test]
fn hf_missing_split_names_the_path() {
    let dir = copy_fixture("hf_dataset");
    std::fs::write(dir.path().join("dataset_dict.json"), r#"{"splits": ["train"]}"#).unwrap();
    let e = load_splits(dir.path(), &Columns::default()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "dataset {}: split 'test' missing (looked for {} listed in dataset_dict.json)",
            dir.path().display(),
            dir.path().join("test").display()
        )
    );
}

#[test]
fn hf_invalid_arrow_file_is_named() {
    let dir = copy_fixture("hf_dataset");
    let shard = dir.path().join("test/data-00000-of-00001.arrow");
    std::fs::write(&shard, b"this is not arrow").unwrap();
    let e = load_splits(dir.path(), &Columns::default()).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: not a valid HF datasets Arrow file", shard.display())), "{e}");
}

/// Writes a one-shard split whose third row has an empty gold list and whose fourth has a null question.
fn write_bad_split(dir: &Path, split: &str) {
    let mut gold = ListBuilder::new(StringBuilder::new());
    for row in [vec!["a"], vec!["b", "c"], vec![], vec!["d"]] {
        for g in row {
            gold.values().append_value(g);
        }
        gold.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("question_id", Arc::new(Int64Array::from(vec![1, 2, 3, 4]))),
        ("question_text", Arc::new(StringArray::from(vec![Some("q1"), Some("q2"), Some("q3"), None]))),
        ("reference", Arc::new(gold.finish())),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    std::fs::create_dir_all(dir.join(split)).unwrap();
    let file = std::fs::File::create(dir.join(split).join("data-00000-of-00001.arrow")).unwrap();
    let mut writer = StreamWriter::try_new(file, &batch.schema()).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

#[test]
fn hf_bad_row_names_file_and_row() {
    let dir = copy_fixture("hf_dataset");
    std::fs::remove_dir_all(dir.path().join("test")).unwrap();
    write_bad_split(dir.path(), "test");
    let e = load_splits(dir.path(), &Columns::default()).unwrap_err().to_string();
    let shard = dir.path().join("test/data-00000-of-00001.arrow");
    assert_eq!(
        e,
        format!("{}: row 3: column 'reference' is an empty list (at least one gold answer is needed)", shard.display())
    );
}

#[test]
fn demo_dataset_loads_with_default_columns() {
    let path = repo("data/demo_nq");
    assert_eq!(detect_format(&path).unwrap(), DatasetFormat::Jsonl);
    let mut splits = load_splits(&path, &Columns::default()).unwrap();
    assert!(splits.train.len() >= 8 && splits.test.len() >= 8);
    assert!(splits.train.iter().chain(&splits.test).all(|e| !e.gold.is_empty() && !e.question.is_empty()));
    splits.cap(Some(2), Some(3));
    assert_eq!((splits.train.len(), splits.test.len()), (2, 3));
}

#[test]
fn json_directory_and_missing_split() {
    let dir = tempfile::tempdir().unwrap();
    let c = Columns { id: "id".into(), question: "q".into(), gold: "a".into() };
    std::fs::write(dir.path().join("train.json"), r#"[{"id": 1, "q": "x", "a": ["1", "one"]}]"#).unwrap();
    assert_eq!(detect_format(dir.path()).unwrap(), DatasetFormat::JsonFiles);
    let e = load_splits(dir.path(), &c).unwrap_err().to_string();
    assert!(e.contains("split 'test' missing") && e.contains("test.json"), "{e}");
    std::fs::write(dir.path().join("test.json"), r#"[{"id": 2, "q": "y", "a": "2"}]"#).unwrap();
    let splits = load_splits(dir.path(), &c).unwrap();
    assert_eq!((splits.train[0].gold.len(), splits.test[0].gold.len()), (2, 1));
}

#[test]
fn missing_or_unknown_paths_are_named() {
    let e = load_splits(Path::new("data/no_such_dataset"), &Columns::default()).unwrap_err().to_string();
    assert_eq!(e, "dataset data/no_such_dataset not found (data_path)");
    let dir = tempfile::tempdir().unwrap();
    let e = detect_format(dir.path()).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: no dataset found", dir.path().display())), "{e}");
}
