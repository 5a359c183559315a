//! Finding and reading results: a sweep directory (sweep.json), a single run directory (iter_0/) or a directory of
//! run directories. Reads what stasc wrote (metrics.json per iteration, DONE, FAILED, the resolved config and the
//! settings in it) and computes nothing; an incomplete run contributes the iterations it has.

use std::fs;
use std::path::{Path, PathBuf};

use crate::stasc::IterationMetrics;
use crate::sweep::SweepIndex;

use super::error::ReportError;
use super::settings::RunSettings;

/// What kind of directory the report was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A sweep directory with sweep.json.
    Sweep,
    /// One run directory (has iter_0/).
    SingleRun,
    /// A directory whose subdirectories are runs.
    RunDirectories,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellStatus {
    /// DONE exists: every planned iteration is there.
    Done,
    /// Neither DONE nor FAILED: still running, or stopped without recording why.
    Incomplete,
    /// The sweep recorded a failure (FAILED file) with this reason.
    Failed {
        /// First line of the FAILED file.
        reason: String,
    },
    /// A sweep cell whose directory holds no results yet.
    NotStarted,
}

/// The results of one run (a sweep cell, or a run directory).
#[derive(Debug, Clone, PartialEq)]
pub struct CellResults {
    /// Cell name (the run directory's name).
    pub name: String,
    /// The run directory.
    pub dir: PathBuf,
    /// Axis values of the cell: (axis key, value), in axis order.
    pub overrides: Vec<(String, String)>,
    /// Metrics of iterations 0, 1, ... that are complete.
    pub iterations: Vec<IterationMetrics>,
    /// Number of iterations the run was configured for (num_star_iterations + 1), when its config says.
    pub planned_iterations: Option<usize>,
    /// Whether the run finished, failed or is still going.
    pub status: CellStatus,
    /// What decided the run (config.resolved.yaml and question counts); None when it does not say.
    pub settings: Option<RunSettings>,
}

impl CellResults {
    /// The three-letter variant: from the metrics, else from the cell's `variant` or `init`/`filter`/`ft` axes.
    pub fn variant(&self) -> Option<String> {
        if let Some(m) = self.iterations.first() {
            return Some(m.variant.clone());
        }
        if let Some(v) = self.axis_value("variant") {
            return Some(v.to_string());
        }
        match (self.axis_value("init"), self.axis_value("filter"), self.axis_value("ft")) {
            (Some(i), Some(f), Some(t)) => Some(format!("{i}{f}{t}")),
            _ => None,
        }
    }

    /// The value of axis `key` in this cell.
    pub fn axis_value(&self, key: &str) -> Option<&str> {
        self.overrides.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A short description of the state, e.g. "done" or "2/11 iterations, running or failed".
    pub fn status_text(&self) -> String {
        let done = self.iterations.len();
        let count = match self.planned_iterations {
            Some(p) => format!("{done}/{p} iterations"),
            None if done == 1 => "1 iteration".into(),
            None => format!("{done} iterations"),
        };
        match &self.status {
            CellStatus::Done => "done".into(),
            CellStatus::Incomplete => format!("{count}, running or failed"),
            CellStatus::Failed { reason } => format!("failed after {count}: {reason}"),
            CellStatus::NotStarted => "not started".into(),
        }
    }
}

/// Everything a report shows: the runs found under one input directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    /// Name of the input (the sweep's name, or the directory's name).
    pub name: String,
    /// The input directory.
    pub input: PathBuf,
    /// How the input was recognised.
    pub kind: InputKind,
    /// Axis keys, outermost first (empty when the runs carry no axis values).
    pub axes: Vec<String>,
    /// The runs, in grid order (sweeps) or name order.
    pub cells: Vec<CellResults>,
}

/// Reads every run under `input` (a sweep directory, a run directory, or a directory of run directories).
pub fn load_results(input: &Path) -> Result<ResultSet, ReportError> {
    if !input.is_dir() {
        return Err(ReportError::NotADirectory { path: input.to_path_buf() });
    }
    let dir_name = directory_name(input);
    let index_path = input.join("sweep.json");
    if index_path.is_file() {
        let text = fs::read_to_string(&index_path).map_err(|e| ReportError::io(&index_path, e))?;
        let index: SweepIndex = serde_json::from_str(&text).map_err(|error| ReportError::Json {
            path: index_path.clone(),
            what: "sweep index (sweep.json)",
            error,
        })?;
        let mut cells = Vec::new();
        for plan in &index.cells {
            // The sweep may have been moved since it ran: its cells are looked up beside sweep.json first.
            let beside = input.join(&plan.name);
            let dir = if beside.is_dir() || !plan.dir.is_dir() { beside } else { plan.dir.clone() };
            cells.push(read_run(&plan.name, &dir, plan.overrides.clone(), true)?);
        }
        return Ok(ResultSet {
            name: index.name,
            input: input.to_path_buf(),
            kind: InputKind::Sweep,
            axes: index.axes,
            cells,
        });
    }
    if is_run_dir(input) {
        let cell = read_run(&dir_name, input, Vec::new(), false)?;
        return Ok(ResultSet {
            name: dir_name,
            input: input.to_path_buf(),
            kind: InputKind::SingleRun,
            axes: Vec::new(),
            cells: vec![cell],
        });
    }
    let mut runs = Vec::new();
    let entries = fs::read_dir(input).map_err(|e| ReportError::io(input, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ReportError::io(input, e))?;
        let path = entry.path();
        if path.is_dir() && (is_run_dir(&path) || path.join("FAILED").is_file()) {
            runs.push(path);
        }
    }
    if runs.is_empty() {
        return Err(ReportError::NoRuns { path: input.to_path_buf(), hint: no_runs_hint(input) });
    }
    runs.sort();
    let mut axes: Vec<String> = Vec::new();
    let mut cells = Vec::new();
    for path in runs {
        let name = directory_name(&path);
        let overrides = overrides_from_name(&name);
        for (k, _) in &overrides {
            if !axes.contains(k) {
                axes.push(k.clone());
            }
        }
        cells.push(read_run(&name, &path, overrides, false)?);
    }
    Ok(ResultSet { name: dir_name, input: input.to_path_buf(), kind: InputKind::RunDirectories, axes, cells })
}

/// Points at the run directory when the input is one of its iteration directories.
fn no_runs_hint(input: &Path) -> String {
    let is_iteration = input.join("metrics.json").is_file()
        || input.file_name().is_some_and(|n| n.to_string_lossy().starts_with("iter_"));
    if let Some(parent) = input.parent().filter(|p| is_iteration && is_run_dir(p)) {
        return format!(
            "; this looks like an iteration directory, did you mean its run directory {}?",
            parent.display()
        );
    }
    let mut sweeps: Vec<PathBuf> = fs::read_dir(input)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("sweep.json").is_file())
        .collect();
    sweeps.sort();
    match sweeps.first() {
        Some(first) => format!("; it holds sweep directories, report one at a time, e.g. {}", first.display()),
        None => String::new(),
    }
}

fn is_run_dir(dir: &Path) -> bool {
    dir.join("iter_0").is_dir() || dir.join("DONE").is_file()
}

/// The last component of a path, resolving `.` and `..` so `stasc report .` is named after the directory.
pub fn directory_name(dir: &Path) -> String {
    let resolved = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    resolved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "report".into())
}

/// Axis values from a sweep-style directory name (`init=E,filter=I,seed=42`); none when the name is not one.
fn overrides_from_name(name: &str) -> Vec<(String, String)> {
    let parts: Option<Vec<(String, String)>> = name
        .split(',')
        .map(|p| p.split_once('=').filter(|(k, v)| !k.is_empty() && !v.is_empty()))
        .map(|kv| kv.map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    parts.unwrap_or_default()
}

fn read_run(
    name: &str,
    dir: &Path,
    overrides: Vec<(String, String)>,
    in_sweep: bool,
) -> Result<CellResults, ReportError> {
    let mut iterations = Vec::new();
    loop {
        let path = dir.join(format!("iter_{}", iterations.len())).join("metrics.json");
        if !path.is_file() {
            break;
        }
        iterations.push(read_metrics(&path, iterations.len())?);
    }
    let failed = dir.join("FAILED");
    let status = if dir.join("DONE").is_file() {
        CellStatus::Done
    } else if failed.is_file() {
        let text = fs::read_to_string(&failed).map_err(|e| ReportError::io(&failed, e))?;
        let reason = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no reason recorded");
        CellStatus::Failed { reason: reason.to_string() }
    } else if in_sweep && iterations.is_empty() {
        CellStatus::NotStarted
    } else {
        CellStatus::Incomplete
    };
    let settings = RunSettings::read(dir, &iterations)?;
    Ok(CellResults {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        overrides,
        iterations,
        planned_iterations: planned_iterations(dir),
        status,
        settings,
    })
}

fn read_metrics(path: &Path, expected: usize) -> Result<IterationMetrics, ReportError> {
    let text = fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    let m: IterationMetrics = serde_json::from_str(&text).map_err(|error| ReportError::Json {
        path: path.to_path_buf(),
        what: "iteration metrics file",
        error,
    })?;
    if m.iteration != expected {
        return Err(ReportError::IterationMismatch { path: path.to_path_buf(), expected, found: m.iteration });
    }
    Ok(m)
}

/// num_star_iterations + 1, from the run's resolved config (or the sweep cell's stasc_config.yaml).
fn planned_iterations(dir: &Path) -> Option<usize> {
    ["config.resolved.yaml", "stasc_config.yaml"].iter().find_map(|f| {
        let text = fs::read_to_string(dir.join(f)).ok()?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        find_key(&doc, "num_star_iterations").and_then(|v| v.as_u64()).map(|n| n as usize + 1)
    })
}

/// The first value of `key` in a YAML document, searched depth-first (the resolved config nests it).
fn find_key<'a>(v: &'a serde_yaml::Value, key: &str) -> Option<&'a serde_yaml::Value> {
    match v {
        serde_yaml::Value::Mapping(m) => m.get(key).or_else(|| m.values().find_map(|child| find_key(child, key))),
        serde_yaml::Value::Sequence(s) => s.iter().find_map(|child| find_key(child, key)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testutil::*;

    #[test]
    fn single_run_directory_is_read_in_iteration_order() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("my_run");
        write_run(&run, "EIE", &[0.1, 0.3, 0.2], true);
        let set = load_results(&run).unwrap();
        assert_eq!(set.kind, InputKind::SingleRun);
        assert_eq!(set.name, "my_run");
        let cell = &set.cells[0];
        assert_eq!(cell.status, CellStatus::Done);
        let acc: Vec<f64> = cell.iterations.iter().map(|m| m.test_correction_accuracy).collect();
        assert_eq!(acc, vec![0.1, 0.3, 0.2]);
        assert_eq!(cell.variant().as_deref(), Some("EIE"));
    }

    #[test]
    fn sweep_cells_keep_grid_order_and_state() {
        let tmp = tempfile::tempdir().unwrap();
        let sweep = tmp.path().join("sw");
        let cells =
            [("variant=FNF,seed=1", Some("FNF")), ("variant=EIE,seed=1", Some("EIE")), ("variant=EIE,seed=2", None)];
        write_sweep_index(&sweep, "sw", &["variant", "seed"], &cells.iter().map(|c| c.0).collect::<Vec<_>>());
        write_run(&sweep.join(cells[0].0), "FNF", &[0.2, 0.25], true);
        write_run(&sweep.join(cells[1].0), "EIE", &[0.1], false);
        fs::create_dir_all(sweep.join(cells[2].0)).unwrap();
        fs::write(sweep.join(cells[2].0).join("FAILED"), "stasc run exited with 1: out of memory\n").unwrap();
        let set = load_results(&sweep).unwrap();
        assert_eq!(set.kind, InputKind::Sweep);
        let names: Vec<&str> = set.cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, cells.iter().map(|c| c.0).collect::<Vec<_>>());
        assert_eq!(set.cells[0].status, CellStatus::Done);
        assert_eq!(set.cells[1].status, CellStatus::Incomplete);
        assert_eq!(set.cells[1].status_text(), "1/2 iterations, running or failed");
        assert_eq!(set.cells[2].status, CellStatus::Failed { reason: "stasc run exited with 1: out of memory".into() });
        assert_eq!(set.cells[2].variant().as_deref(), Some("EIE"));
    }

    #[test]
    fn directory_of_runs_takes_axes_from_names() {
        let tmp = tempfile::tempdir().unwrap();
        write_run(&tmp.path().join("variant=EIE,seed=2"), "EIE", &[0.1], true);
        write_run(&tmp.path().join("variant=EIE,seed=1"), "EIE", &[0.2], true);
        fs::create_dir_all(tmp.path().join("not_a_run")).unwrap();
        let set = load_results(tmp.path()).unwrap();
        assert_eq!(set.kind, InputKind::RunDirectories);
        assert_eq!(set.axes, vec!["variant".to_string(), "seed".into()]);
        assert_eq!(set.cells.len(), 2);
        assert_eq!(set.cells[0].axis_value("seed"), Some("1"));
    }

    #[test]
    fn empty_directory_is_a_one_line_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_results(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains(&tmp.path().display().to_string()) && err.contains("no iter_0/metrics.json or sweep.json")
        );
        assert!(!err.contains('\n'));
        write_run(&tmp.path().join("run"), "EIE", &[0.1], true);
        let err = load_results(&tmp.path().join("run/iter_0")).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!("did you mean its run directory {}?", tmp.path().join("run").display())),
            "{err}"
        );
    }

    #[test]
    fn malformed_metrics_error_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        write_run(tmp.path(), "EIE", &[0.1, 0.2], true);
        let bad = tmp.path().join("iter_1").join("metrics.json");
        fs::write(&bad, "{\"iteration\": 1}").unwrap();
        let err = load_results(tmp.path()).unwrap_err().to_string();
        assert!(err.starts_with(&bad.display().to_string()), "{err}");
        assert!(err.contains("not a valid iteration metrics file"), "{err}");
    }

    #[test]
    fn misplaced_iteration_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        write_run(tmp.path(), "EIE", &[0.1, 0.2], true);
        let mut m = metrics("EIE", 0, 0.5);
        m.iteration = 7;
        fs::write(tmp.path().join("iter_1/metrics.json"), serde_json::to_string(&m).unwrap()).unwrap();
        let err = load_results(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("holds iteration 7, but lies in iter_1"), "{err}");
    }
}
