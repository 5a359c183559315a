//! stasc: Self-Taught Self-Correction (STaSC) experiments on small language models.
//!
//! Data flow, and the allowed direction of use (a module may use only modules listed after it):
//! `cli` -> `sweep` -> `stasc` -> `train` / `generate` -> `dist` -> `model` -> `kernels` -> `ffi` -> `reward` / `prompt` -> `data` -> `config`.
//! `report` reads results from run directories and never computes them. `stats` (confidence intervals) is plain
//! arithmetic that any module may use; so are `atomic_file` (temporary file + rename), `parallel` (a slice mapped on all cores, in order), `rundir_lock` (who works in a run directory) and `progress` (the one
//! progress display of every long phase). `track` (experiment trackers) observes `stasc` runs from `cli` and uploads
//! what `report` writes.

pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod data;
pub mod dist;
pub mod ffi;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod parallel;
pub mod progress;
pub mod prompt;
pub mod report;
pub mod reward;
pub mod rundir_lock;
pub mod stasc;
pub mod stats;
pub mod sweep;
pub mod switch;
pub mod track;
pub mod train;
