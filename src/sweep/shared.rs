//! Which cells of a sweep share work, for `stasc sweep --dry-run`. Iteration 0 samples its initial answers from
//! M0 in every variant (evolving initialization samples from the current model, which is M0 at iteration 0; fixed
//! initialization samples once, from M0), and its corrections from M0 too, of those same initial answers: the
//! three STaSC choices (initialization, filter, fine-tuning) and what only acts later (pairing, correctness, the SFT
//! context, the reward that scores the samples) do not change a single sampled token there. Cells whose other
//! settings agree sample iteration 0 identically, and a run samples each such batch once per sweep
//! (`crate::stasc::shared`). This module predicts those groups from the resolved configurations; at run time the
//! batches themselves are keyed by content, so a prediction can only miss sharing, never invent it.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::SweepError;
use super::exec::write_cell_files;
use super::grid::expand;
use super::spec::SweepSpec;
use crate::config::document::load_yaml;
use crate::config::fine_tune::FINE_TUNE_KEYS;
use crate::config::stasc_config::STASC_KEYS;
use crate::config::{RunConfig, RunConfigPaths};

/// Resolved stasc_config keys that do not change what iteration 0 samples: the STaSC choices, what acts only
/// after sampling (filter, pairing, correctness, SFT context, the reward and how it scores), how many iterations
/// follow (except whether iteration 0 samples the train split, which is added separately), where the run goes,
/// and settings that change memory use, not arithmetic.
pub const NOT_DECIDING_ITERATION_0: &[&str] = &[
    "run_name",
    "output_dir",
    "initial_answer_with_new_model",
    "only_better_correction",
    "train_from_initial_model",
    "filter",
    "pairing",
    "correctness",
    "sft_context",
    "evaluator_function",
    "evaluator_mode",
    "evaluator_answer_marker",
    "num_star_iterations",
    "sample_train_at_last_iteration",
    "keep_checkpoints",
    "gpu_memory_utilization",
    "cache_dir",
    "enforce_eager",
    "protocol_departures",
];

/// A digest of everything in `config` that decides iteration 0's samples (initial answers and corrections).
pub fn iteration0_signature(config: &RunConfig) -> String {
    let c = &config.stasc_config;
    let mut stasc = serde_json::to_value(c).expect("config serialises");
    if let Some(o) = stasc.as_object_mut() {
        for k in NOT_DECIDING_ITERATION_0 {
            o.remove(*k);
        }
        let samples_train = c.num_star_iterations > 0 || c.sample_train_at_last_iteration;
        o.insert("samples_train_at_iteration_0".into(), samples_train.into());
    }
    let identity = serde_json::json!({ "stasc_config": stasc, "execution": config.execution });
    Sha256::digest(identity.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Each cell's name and resolved configuration, loaded as `stasc run` would load the files the sweep writes.
pub fn cell_configs(spec: &SweepSpec) -> Result<Vec<(String, RunConfig)>, SweepError> {
    let base_stasc = load_yaml(&spec.config, STASC_KEYS)?;
    let base_ft = load_yaml(&spec.ft_config, FINE_TUNE_KEYS)?;
    let scratch = tempfile::tempdir().map_err(|e| SweepError::Io { path: std::env::temp_dir(), source: e })?;
    let mut out = Vec::new();
    for cell in expand(spec, &base_stasc, &base_ft)? {
        let plan = write_cell_files(spec, &cell, &scratch.path().join(&cell.name))?;
        let paths = RunConfigPaths {
            config: plan.config,
            ft_config: plan.ft_config,
            accelerate_config: plan.accelerate_config,
        };
        let config = RunConfig::load(&paths).map_err(|source| SweepError::Cell {
            file: spec.file.clone(),
            cell: cell.name.clone(),
            source: Box::new(source),
        })?;
        out.push((cell.name, config));
    }
    Ok(out)
}

/// Groups of two or more cells (names, grid order) that sample iteration 0 identically.
pub fn iteration0_groups(cells: &[(String, RunConfig)]) -> Vec<Vec<String>> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (name, config) in cells {
        let sig = iteration0_signature(config);
        match groups.iter_mut().find(|(s, _)| *s == sig) {
            Some((_, names)) => names.push(name.clone()),
            None => groups.push((sig, vec![name.clone()])),
        }
    }
    groups.into_iter().map(|(_, names)| names).filter(|n| n.len() > 1).collect()
}

/// The dry run's lines about shared work.
pub fn describe(groups: &[Vec<String>], cells: usize, shared_dir: &Path) -> String {
    if groups.is_empty() {
        return "shared work: none (no two cells sample iteration 0 alike)\n".into();
    }
    let saved: usize = groups.iter().map(|g| g.len() - 1).sum();
    let mut out = format!(
        "shared work: iteration 0's initial answers and corrections (sampled from M0) are sampled once per group \
         below and read by the group's other cells from {} ({saved} of {cells} cells' iteration-0 sampling saved)\n",
        shared_dir.display()
    );
    for (i, g) in groups.iter().enumerate() {
        out.push_str(&format!("  group {} ({} cells): {}\n", i + 1, g.len(), g.join("; ")));
    }
    out
}
