//! stasc: Self-Taught Self-Correction (STaSC) experiments on small language models.
//!
//! Data flow, and the allowed direction of use (a module may use only modules listed after it):
//! `cli` -> `sweep` -> `stasc` -> `train` / `generate` -> `dist` -> `model` -> `reward` / `prompt` -> `data` -> `config`.
//! `report` reads results from run directories and never computes them. `stats` (confidence intervals) is plain
//! arithmetic that any module may use; so is `progress` (the one progress display of every long phase).

pub mod cli;
pub mod config;
pub mod data;
pub mod dist;
pub mod generate;
pub mod model;
pub mod progress;
pub mod prompt;
pub mod report;
pub mod reward;
pub mod stasc;
pub mod stats;
pub mod sweep;
pub mod train;
