//! What a run reports while it trains: one [`StepRecord`] per optimiser step, appended to train_log.jsonl as it
//! happens, and the steps counted in the one progress style of [`crate::progress`] (loss, tokens/s, ETA).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::TrainError;

/// One optimiser step, as train_log.jsonl records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// 1-based optimiser step.
    pub step: usize,
    /// Mean token loss of the step (HF's logged training loss with logging_steps = 1).
    pub loss: f64,
    /// Learning rate the step used.
    pub lr: f64,
    /// Global L2 gradient norm before clipping.
    pub grad_norm: f64,
    /// Real (unpadded) tokens per second over this step.
    pub tokens_per_s: f64,
    /// Real tokens of the step.
    #[serde(skip)]
    pub tokens: usize,
    /// Wall time of the step in seconds.
    #[serde(skip)]
    pub seconds: f64,
}

/// train_log.jsonl, written line by line.
#[derive(Debug)]
pub struct TrainLog {
    path: PathBuf,
    file: std::fs::File,
}

impl TrainLog {
    /// Creates (truncates) the log at `path`.
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        let file = std::fs::File::create(path).map_err(TrainError::io(path))?;
        Ok(TrainLog { path: path.to_path_buf(), file })
    }

    /// Appends one step.
    pub fn append(&mut self, record: &StepRecord) -> Result<(), TrainError> {
        let line =
            serde_json::to_string(record).map_err(|source| TrainError::Json { path: self.path.clone(), source })?;
        writeln!(self.file, "{line}").and_then(|_| self.file.flush()).map_err(TrainError::io(&self.path))
    }
}

/// Progress over the optimiser steps: joins the enclosing "steps" phase (the STaSC loop's fine-tuning) or opens
/// a "fine-tuning" phase of its own.
pub fn progress_bar(total_steps: usize, visible: bool) -> ProgressBar {
    let phase = visible.then(|| {
        let phase = crate::progress::Phase::join_or_begin("fine-tuning", Some(total_steps as u64), "steps", true);
        phase.note("loading the model");
        phase
    });
    ProgressBar { phase }
}

/// The training steps' progress (see [`progress_bar`]).
pub struct ProgressBar {
    phase: Option<crate::progress::Phase>,
}

impl ProgressBar {
    /// Ends the training's own phase (a joined one goes on).
    pub fn finish_and_clear(&self) {
        if let Some(p) = &self.phase {
            p.note("");
        }
    }
}

/// Counts a finished step, with its loss as the note.
pub fn show_step(bar: &ProgressBar, record: &StepRecord) {
    if let Some(p) = &bar.phase {
        p.note(format!("loss {:.4}", record.loss));
        p.advance(1, record.tokens as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_have_the_documented_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_log.jsonl");
        let mut log = TrainLog::create(&path).unwrap();
        let r =
            StepRecord { step: 1, loss: 2.5, lr: 1e-4, grad_norm: 0.5, tokens_per_s: 100.0, tokens: 7, seconds: 0.1 };
        log.append(&r).unwrap();
        log.append(&StepRecord { step: 2, ..r }).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["grad_norm", "loss", "lr", "step", "tokens_per_s"]);
        assert_eq!(text.lines().count(), 2);
    }
}
