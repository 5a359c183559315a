//! Sweep execution: validate every cell before launching any, write each cell's config files, skip finished cells,
//! run the rest (each in its own `stasc run` child process, so a crash or out-of-memory error stays in its cell),
//! spread over devices, and record failures without stopping the other cells.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::error::SweepError;
use super::grid::Cell;
use super::spec::SweepSpec;
use crate::config::{RunConfig, RunConfigPaths};

/// One cell ready to run: where its files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellPlan {
    /// Cell name (its directory name).
    pub name: String,
    /// The axis values of this cell.
    pub overrides: Vec<(String, String)>,
    /// The cell's run directory.
    pub dir: PathBuf,
    /// The cell's stasc_config.yaml.
    pub config: PathBuf,
    /// The cell's fine_tune.yaml.
    pub ft_config: PathBuf,
    /// The accelerate config shared by all cells, if any.
    pub accelerate_config: Option<PathBuf>,
}

/// The index of a sweep (`<out>/sweep.json`), which reports read to label cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepIndex {
    /// Sweep name.
    pub name: String,
    /// The sweep file.
    pub file: PathBuf,
    /// Axis keys, outermost first.
    pub axes: Vec<String>,
    /// Every cell, in grid order.
    pub cells: Vec<CellPlan>,
    /// Each cell's axis values as the sweep file writes them, by cell name: what tells apart two values that look
    /// alike in cell names (those names carry a short hash of the value). Empty in sweeps made before it was kept.
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// The command-line overrides every cell was run with, as typed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_line: Vec<String>,
}

/// State of a cell as seen before running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    /// DONE exists.
    Done,
    /// FAILED exists (kept unless --retry-failed).
    Failed,
    /// Not finished: to run (or resume).
    Pending,
}

/// Reads a cell's state from its directory.
pub fn cell_state(dir: &Path) -> CellState {
    if dir.join("DONE").exists() {
        CellState::Done
    } else if dir.join("FAILED").exists() {
        CellState::Failed
    } else {
        CellState::Pending
    }
}

/// Runs one cell; the real one starts `stasc run` as a child process.
pub trait CellRunner: Sync {
    /// Runs `cell` pinned to `device` (None: no pinning), logging to `log`. Err carries a one-line reason.
    fn run(&self, cell: &CellPlan, device: Option<&str>, log: &Path) -> Result<(), String>;
}

/// How a sweep is run.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Only these cells (exact names).
    pub only: Vec<String>,
    /// Run cells that failed before.
    pub retry_failed: bool,
    /// Devices to spread cells over; overrides the file's `sweep.devices`.
    pub devices: Option<Vec<String>>,
}

/// What happened to each cell.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepOutcome {
    /// (cell, result): "done" (already), "ran", "failed: reason", "skipped: failed before".
    pub cells: Vec<(String, String)>,
    /// Number of cells that failed in this invocation or were left failed.
    pub failed: usize,
}

/// Expands the sweep, validates every cell's configuration (via the same loader `stasc run` uses) and returns the
/// plans. Writes the cell config files (only where they changed) and sweep.json unless `dry_run`.
pub fn plan(spec: &SweepSpec, dry_run: bool) -> Result<Vec<CellPlan>, SweepError> {
    let cells = super::overrides::cells(spec)?;
    let scratch = tempfile::tempdir().map_err(|e| SweepError::Io { path: std::env::temp_dir(), source: e })?;
    let mut checked = Vec::new();
    for cell in &cells {
        // Validate from files written exactly as the child will read them, before any cell directory exists.
        let check_dir = scratch.path().join(&cell.name);
        let check = write_cell_files(spec, cell, &check_dir)?;
        RunConfig::load(&RunConfigPaths {
            config: check.config.clone(),
            ft_config: check.ft_config.clone(),
            accelerate_config: check.accelerate_config.clone(),
        })
        .map_err(|source| SweepError::Cell {
            file: spec.file.clone(),
            cell: cell.name.clone(),
            source: Box::new(source),
        })?;
        checked.push(check);
    }
    let mut plans = Vec::new();
    for (cell, check) in cells.iter().zip(checked) {
        let dir = spec.out.join(&cell.name);
        plans.push(if dry_run {
            CellPlan {
                dir: dir.clone(),
                config: dir.join("stasc_config.yaml"),
                ft_config: dir.join("fine_tune.yaml"),
                ..check
            }
        } else {
            write_cell_files(spec, cell, &dir)?
        });
    }
    if !dry_run {
        let index = SweepIndex {
            name: spec.name.clone(),
            file: spec.file.clone(),
            axes: spec.grid.iter().map(|a| a.key.clone()).collect(),
            cells: plans.clone(),
            values: cells.iter().map(|c| (c.name.clone(), c.values.iter().cloned().collect())).collect(),
            command_line: spec.overrides.iter().map(|o| o.text.clone()).collect(),
        };
        let json = serde_json::to_vec_pretty(&index).expect("sweep index serialises");
        write_if_changed(&spec.out.join("sweep.json"), &json)?;
    }
    Ok(plans)
}

/// Writes a cell's stasc_config.yaml and fine_tune.yaml into `dir` (run_name and output_dir set to the cell's).
pub(crate) fn write_cell_files(spec: &SweepSpec, cell: &Cell, dir: &Path) -> Result<CellPlan, SweepError> {
    let mut stasc = cell.stasc.clone();
    // Each cell runs in its own directory, named after it.
    crate::config::document::set_dotted(&mut stasc, "run_name", serde_json::Value::String(cell.name.clone()));
    crate::config::document::set_dotted(&mut stasc, "output_dir", serde_json::Value::String(dir.display().to_string()));
    let config = dir.join("stasc_config.yaml");
    let ft_config = dir.join("fine_tune.yaml");
    write_if_changed(&config, serde_yaml::to_string(&stasc).expect("json values serialise").as_bytes())?;
    write_if_changed(&ft_config, serde_yaml::to_string(&cell.fine_tune).expect("json values serialise").as_bytes())?;
    Ok(CellPlan {
        name: cell.name.clone(),
        overrides: cell.overrides.clone(),
        dir: dir.to_path_buf(),
        config,
        ft_config,
        accelerate_config: spec.accelerate_config.clone(),
    })
}

/// Writes through a temporary file and a rename, and leaves an identical file untouched.
pub(crate) fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
    if fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    crate::atomic_file::write(path, bytes).map_err(|e| SweepError::Io { path: e.path, source: e.source })
}

/// The plans `only` names (all when empty), in grid order; a name that is no cell is an error suggesting the
/// closest.
pub fn select<'a>(plans: &'a [CellPlan], only: &[String]) -> Result<Vec<&'a CellPlan>, SweepError> {
    for name in only {
        if !plans.iter().any(|p| &p.name == name) {
            let suggestion =
                crate::config::keys::closest(name, plans.iter().map(|p| p.name.as_str())).map(str::to_string);
            return Err(SweepError::NoSuchCell { name: name.clone(), suggestion });
        }
    }
    Ok(plans.iter().filter(|p| only.is_empty() || only.contains(&p.name)).collect())
}

/// Runs the planned cells with `runner`, one worker per device, and records failures in each cell's FAILED file.
pub fn execute(
    spec: &SweepSpec,
    plans: &[CellPlan],
    options: &SweepOptions,
    runner: &dyn CellRunner,
) -> Result<SweepOutcome, SweepError> {
    let selected = select(plans, &options.only)?;
    let mut results: Vec<(String, String)> = Vec::new();
    let mut queue = VecDeque::new();
    for p in &selected {
        match cell_state(&p.dir) {
            CellState::Done => results.push((p.name.clone(), "done".into())),
            CellState::Failed if !options.retry_failed => {
                results.push((p.name.clone(), "skipped: failed before (use --retry-failed)".into()))
            }
            _ => queue.push_back(*p),
        }
    }
    let devices: Vec<Option<String>> = match options.devices.as_ref().unwrap_or(&spec.devices) {
        d if d.is_empty() => vec![None],
        d => d.iter().cloned().map(Some).collect(),
    };
    let queue = Mutex::new(queue);
    let ran = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for device in &devices {
            let (queue, ran) = (&queue, &ran);
            s.spawn(move || loop {
                let Some(cell) = queue.lock().expect("queue lock").pop_front() else { break };
                // Another runner (a second sweep, a plain `stasc run`, a Slurm task) works in this cell: leave it.
                if let Some(holder) = crate::rundir_lock::holder(&cell.dir) {
                    ran.lock().expect("results lock").push((cell.name.clone(), running_elsewhere(&holder)));
                    continue;
                }
                let _ = fs::remove_file(cell.dir.join("FAILED"));
                let log = cell.dir.join("log.txt");
                let result = runner.run(cell, device.as_deref(), &log);
                let done = result.is_ok() && cell.dir.join("DONE").exists();
                let status = match (done, crate::rundir_lock::holder(&cell.dir), result) {
                    (true, _, _) => "ran".to_string(),
                    // The child found the lock taken between our look and its start, and skipped the cell.
                    (false, Some(holder), _) => running_elsewhere(&holder),
                    (false, None, Ok(())) => record_failure(cell, "the run ended without writing DONE"),
                    (false, None, Err(reason)) => record_failure(cell, &reason),
                };
                ran.lock().expect("results lock").push((cell.name.clone(), status));
            });
        }
    });
    results.extend(ran.into_inner().expect("results lock"));
    // Report in grid order.
    results.sort_by_key(|(n, _)| selected.iter().position(|p| &p.name == n));
    let failed = results.iter().filter(|(_, s)| s.starts_with("failed") || s.starts_with("skipped: failed")).count();
    Ok(SweepOutcome { cells: results, failed })
}

/// The outcome of a cell that another runner holds: neither ran here nor failed.
fn running_elsewhere(holder: &crate::rundir_lock::LockHolder) -> String {
    format!("running elsewhere: {}", holder.describe())
}

fn record_failure(cell: &CellPlan, reason: &str) -> String {
    let _ = fs::create_dir_all(&cell.dir);
    let _ = fs::write(cell.dir.join("FAILED"), format!("{reason}\n"));
    format!("failed: {reason}")
}

/// The arguments after the executable that run one cell: `run --config C --ft_config F
/// [--accelerate_config_path A] --out DIR`. Local cells and Slurm array tasks both start exactly this (the CLI's
/// parser is checked against it in `cli::sweep`'s tests).
pub fn run_argv(cell: &CellPlan) -> Vec<std::ffi::OsString> {
    let mut argv: Vec<std::ffi::OsString> =
        vec!["run".into(), "--config".into(), cell.config.clone().into(), "--ft_config".into()];
    argv.push(cell.ft_config.clone().into());
    if let Some(a) = &cell.accelerate_config {
        argv.push("--accelerate_config_path".into());
        argv.push(a.clone().into());
    }
    argv.push("--out".into());
    argv.push(cell.dir.clone().into());
    argv
}

/// Runs a cell as `stasc run --config .. --ft_config .. [--accelerate_config_path ..] --out <cell dir>`, with
/// CUDA_VISIBLE_DEVICES set to the cell's device entry (one GPU, or a group such as `0,1` for a cell whose
/// accelerate config asks for two processes), the NVLink multicast guards set, and stdout and stderr appended to the
/// cell's log.
pub struct ProcessRunner {
    /// The stasc executable (normally the running one).
    pub exe: PathBuf,
}

impl CellRunner for ProcessRunner {
    fn run(&self, cell: &CellPlan, device: Option<&str>, log: &Path) -> Result<(), String> {
        fs::create_dir_all(&cell.dir).map_err(|e| format!("{}: {e}", cell.dir.display()))?;
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args(run_argv(cell)).stdout(out).stderr(err).stdin(std::process::Stdio::null());
        if let Some(d) = device {
            cmd.env("CUDA_VISIBLE_DEVICES", d);
        }
        crate::dist::guard::apply_to_command(&mut cmd);
        let status = cmd.status().map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        if status.success() {
            Ok(())
        } else {
            let text = fs::read_to_string(log).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            Err(format!("stasc run exited with {status}: {last} (see {})", log.display()))
        }
    }
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn cells_start_with_the_multicast_guards_and_their_device_group() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("fake-stasc");
        fs::write(&exe, "#!/bin/sh\nenv\n").unwrap();
        fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let cell = CellPlan {
            name: "c".into(),
            overrides: vec![],
            dir: dir.path().join("c"),
            config: dir.path().join("c.yaml"),
            ft_config: dir.path().join("ft.yaml"),
            accelerate_config: None,
        };
        let log = dir.path().join("log.txt");
        ProcessRunner { exe }.run(&cell, Some("0,1"), &log).unwrap();
        let env = fs::read_to_string(&log).unwrap();
        let pairs: Vec<(&str, &str)> = env.lines().filter_map(|l| l.split_once('=')).collect();
        assert_eq!(crate::dist::guard::missing_in(pairs.iter().copied()), Vec::<&str>::new(), "{env}");
        assert!(pairs.contains(&("CUDA_VISIBLE_DEVICES", "0,1")), "{env}");
    }
}
