//! Datasets: train/test question sets with gold answers, loaded from HF `save_to_disk` directories (Arrow IPC),
//! JSONL or JSON files, with columns mapped through `id_col`, `question_col` and `gold_col`.

use serde::{Deserialize, Serialize};

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
