//! HF `datasets` `DatasetDict.save_to_disk` directories: `dataset_dict.json` lists the splits; each split directory
//! has `state.json` naming its `data-0000i-of-0000n.arrow` shards, which are Arrow IPC *stream* files. Ids may be
//! any integer or string type, questions any string type, gold a string or a (large / fixed-size) list of strings.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_ipc::reader::StreamReader;
use arrow_schema::DataType;
use serde_json::Value;

use super::error::DataError;
use super::rows::{check_gold, SplitBuilder};
use super::{Columns, Example};

/// The file that marks a `DatasetDict.save_to_disk` directory.
pub(crate) const DATASET_DICT: &str = "dataset_dict.json";

fn read_json(path: &Path) -> Result<Value, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| DataError::Json {
        file: path.to_path_buf(),
        location: String::new(),
        message: e.to_string(),
    })
}

/// Reads one split of the `DatasetDict` directory `dataset`.
pub(crate) fn read_split(dataset: &Path, split: &'static str, columns: &Columns) -> Result<Vec<Example>, DataError> {
    let split_dir = dataset.join(split);
    let listed = read_json(&dataset.join(DATASET_DICT))?
        .get("splits")
        .and_then(Value::as_array)
        .is_some_and(|splits| splits.iter().any(|s| s.as_str() == Some(split)));
    if !listed || !split_dir.is_dir() {
        let expected = format!("{} listed in {DATASET_DICT}", split_dir.display());
        return Err(DataError::MissingSplit { dataset: dataset.to_path_buf(), split, expected });
    }
    let mut builder = SplitBuilder::new(split);
    for file in shard_files(&split_dir)? {
        read_shard(&file, columns, &mut builder)?;
    }
    builder.finish(&split_dir)
}

/// The split's shards in order: as `state.json` lists them, or sorted `*.arrow` files when it is absent.
fn shard_files(split_dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let state = split_dir.join("state.json");
    if state.is_file() {
        let value = read_json(&state)?;
        let files = value.get("_data_files").and_then(Value::as_array).ok_or_else(|| DataError::Json {
            file: state.clone(),
            location: String::new(),
            message: "no _data_files list".to_string(),
        })?;
        return files
            .iter()
            .map(|entry| {
                entry.get("filename").and_then(Value::as_str).map(|name| split_dir.join(name)).ok_or_else(|| {
                    DataError::Json {
                        file: state.clone(),
                        location: String::new(),
                        message: "a _data_files entry has no filename".to_string(),
                    }
                })
            })
            .collect();
    }
    let entries =
        std::fs::read_dir(split_dir).map_err(|source| DataError::Io { path: split_dir.to_path_buf(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "arrow"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::Arrow {
            file: split_dir.to_path_buf(),
            message: "no state.json and no .arrow files".to_string(),
        });
    }
    Ok(files)
}

fn read_shard(file: &Path, columns: &Columns, builder: &mut SplitBuilder) -> Result<(), DataError> {
    let arrow_error = |message: String| DataError::Arrow { file: file.to_path_buf(), message };
    let handle = File::open(file).map_err(|source| DataError::Io { path: file.to_path_buf(), source })?;
    let reader = StreamReader::try_new(BufReader::new(handle), None).map_err(|e| arrow_error(e.to_string()))?;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| arrow_error(e.to_string()))?;
        let ids = column(file, &batch, &columns.id, "id_col")?;
        let questions = column(file, &batch, &columns.question, "question_col")?;
        let golds = column(file, &batch, &columns.gold, "gold_col")?;
        let question_strings = Strings::of(questions.as_ref()).ok_or_else(|| {
            arrow_error(format!(
                "column '{}' (question_col) has type {}; expected a string",
                columns.question,
                questions.data_type()
            ))
        })?;
        check_id_type(ids.data_type()).map_err(|found| {
            arrow_error(format!("column '{}' (id_col) has type {found}; expected an integer or a string", columns.id))
        })?;
        for i in 0..batch.num_rows() {
            row += 1;
            let location = format!("row {row}");
            let bad =
                |reason: String| DataError::BadRow { file: file.to_path_buf(), location: location.clone(), reason };
            let id = id_at(ids.as_ref(), i).ok_or_else(|| bad(format!("column '{}' is null", columns.id)))?;
            let question = question_strings
                .get(i)
                .ok_or_else(|| bad(format!("column '{}' is null", columns.question)))?
                .to_string();
            let gold = gold_at(golds.as_ref(), i, &columns.gold).map_err(|reason| match reason {
                GoldError::Row(reason) => bad(reason),
                GoldError::Type(message) => arrow_error(message),
            })?;
            builder.push(file, location.clone(), Example { id, question, gold })?;
        }
    }
    Ok(())
}

fn column(file: &Path, batch: &RecordBatch, name: &str, key: &'static str) -> Result<ArrayRef, DataError> {
    batch.column_by_name(name).cloned().ok_or_else(|| DataError::MissingColumn {
        file: file.to_path_buf(),
        column: name.to_string(),
        key,
        available: batch.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
    })
}

/// A string column of any Arrow string layout.
enum Strings<'a> {
    Small(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
}

impl<'a> Strings<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        match array.data_type() {
            DataType::Utf8 => Some(Strings::Small(array.as_string::<i32>())),
            DataType::LargeUtf8 => Some(Strings::Large(array.as_string::<i64>())),
            DataType::Utf8View => Some(Strings::View(array.as_string_view())),
            _ => None,
        }
    }

    /// The string at `i`, or `None` when it is null.
    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strings::Small(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

fn check_id_type(data_type: &DataType) -> Result<(), String> {
    use DataType::*;
    match data_type {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Utf8 | LargeUtf8 | Utf8View => Ok(()),
        other => Err(other.to_string()),
    }
}

/// The id at row `i` as text, `None` when null. The type was checked by [`check_id_type`].
fn id_at(array: &dyn Array, i: usize) -> Option<String> {
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(i).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(i).to_string(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(i).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(i).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(i).to_string(),
        _ => Strings::of(array)?.get(i)?.to_string(),
    })
}

enum GoldError {
    /// This row is bad.
    Row(String),
    /// The column's type is unusable for every row.
    Type(String),
}

fn gold_at(array: &dyn Array, i: usize, name: &str) -> Result<Vec<String>, GoldError> {
    let wrong_type = || {
        GoldError::Type(format!(
            "column '{name}' (gold_col) has type {}; expected a string or a list of strings",
            array.data_type()
        ))
    };
    if let Some(strings) = Strings::of(array) {
        let value = strings.get(i).ok_or_else(|| GoldError::Row(format!("column '{name}' is null")))?;
        return Ok(vec![value.to_string()]);
    }
    if array.is_null(i) {
        return Err(GoldError::Row(format!("column '{name}' is null")));
    }
    let items: ArrayRef = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value(i),
        DataType::LargeList(_) => array.as_list::<i64>().value(i),
        DataType::FixedSizeList(_, _) => array.as_fixed_size_list().value(i),
        _ => return Err(wrong_type()),
    };
    let strings = Strings::of(items.as_ref()).ok_or_else(wrong_type)?;
    let gold = (0..items.len())
        .map(|j| strings.get(j).map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| GoldError::Row(format!("column '{name}' has a null answer in its list")))?;
    check_gold(&gold, name).map_err(GoldError::Row)?;
    Ok(gold)
}
