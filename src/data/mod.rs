//! Datasets: train/test question sets with gold answers, loaded from HF `save_to_disk` directories (Arrow IPC),
//! JSONL or JSON files, with columns mapped through `id_col`, `question_col` and `gold_col`.

mod error;
mod hf_arrow;
mod json_files;
mod rows;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::StascConfig;

pub use error::DataError;

/// One question with its acceptable gold answers (math: a one-element list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Stable identifier (the `id_col` value, stringified).
    pub id: String,
    /// The question text.
    pub question: String,
    /// Acceptable gold answers.
    pub gold: Vec<String>,
}

/// The two splits a STaSC run uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Splits {
    /// Questions whose corrections become training data.
    pub train: Vec<Example>,
    /// Held-out questions, only evaluated.
    pub test: Vec<Example>,
}

impl Splits {
    /// Keeps only the first `max_train` / `max_test` examples of each split (`None` keeps all).
    pub fn cap(&mut self, max_train: Option<usize>, max_test: Option<usize>) {
        if let Some(n) = max_train {
            self.train.truncate(n);
        }
        if let Some(n) = max_test {
            self.test.truncate(n);
        }
    }
}

/// Which source columns hold the id, the question and the gold answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Columns {
    /// `id_col`.
    pub id: String,
    /// `question_col`.
    pub question: String,
    /// `gold_col`.
    pub gold: String,
}

impl Columns {
    /// The columns a stasc_config names.
    pub fn from_config(config: &StascConfig) -> Self {
        Columns { id: config.id_col.clone(), question: config.question_col.clone(), gold: config.gold_col.clone() }
    }
}

impl Default for Columns {
    /// The reference's Natural Questions columns.
    fn default() -> Self {
        Columns { id: "question_id".into(), question: "question_text".into(), gold: "reference".into() }
    }
}

/// The on-disk layouts a dataset may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// An HF `DatasetDict.save_to_disk` directory (Arrow IPC stream shards).
    HfSaveToDisk,
    /// A directory with train.jsonl and test.jsonl.
    Jsonl,
    /// A directory with train.json and test.json, each a list of objects.
    JsonFiles,
    /// One .json file holding {"train": [...], "test": [...]}.
    JsonObject,
}

/// Works out the layout of the dataset at `path` from the files it has.
pub fn detect_format(path: &Path) -> Result<DatasetFormat, DataError> {
    if !path.exists() {
        return Err(DataError::NotFound { path: path.to_path_buf() });
    }
    if path.is_file() {
        return match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Ok(DatasetFormat::JsonObject),
            _ => Err(DataError::UnknownLayout { path: path.to_path_buf() }),
        };
    }
    let has = |name: &str| path.join(name).is_file();
    if has(hf_arrow::DATASET_DICT) {
        Ok(DatasetFormat::HfSaveToDisk)
    } else if has("train.jsonl") || has("test.jsonl") {
        Ok(DatasetFormat::Jsonl)
    } else if has("train.json") || has("test.json") {
        Ok(DatasetFormat::JsonFiles)
    } else {
        Err(DataError::UnknownLayout { path: path.to_path_buf() })
    }
}

/// Loads the train and test splits of the dataset at `path`, mapping columns through `columns`.
pub fn load_splits(path: &Path, columns: &Columns) -> Result<Splits, DataError> {
    let in_dir = |split: &'static str, ext: &str| -> Result<std::path::PathBuf, DataError> {
        let file = path.join(format!("{split}.{ext}"));
        if file.is_file() {
            Ok(file)
        } else {
            Err(DataError::MissingSplit { dataset: path.to_path_buf(), split, expected: file.display().to_string() })
        }
    };
    let (train, test) = match detect_format(path)? {
        DatasetFormat::HfSaveToDisk => {
            (hf_arrow::read_split(path, "train", columns)?, hf_arrow::read_split(path, "test", columns)?)
        }
        DatasetFormat::Jsonl => (
            json_files::read_jsonl(&in_dir("train", "jsonl")?, "train", columns)?,
            json_files::read_jsonl(&in_dir("test", "jsonl")?, "test", columns)?,
        ),
        DatasetFormat::JsonFiles => (
            json_files::read_json_list(&in_dir("train", "json")?, "train", columns)?,
            json_files::read_json_list(&in_dir("test", "json")?, "test", columns)?,
        ),
        DatasetFormat::JsonObject => json_files::read_json_object(path, columns)?,
    };
    Ok(Splits { train, test })
}

#[cfg(test)]
mod tests;
