//! `<run dir>/status.json`: who is running the run and what it is doing, for `stasc sweep status` and a sweep's live
//! view. A background thread rewrites it (temporary file + rename) whenever a phase begins or ends and at least
//! every [`HEARTBEAT_EVERY`] in between; the heartbeat is how a reader tells a live runner from a dead one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::StascError;
use super::rundir::write_json;

/// The file's name inside a run directory.
pub const STATUS_FILE: &str = "status.json";
/// Longest gap between two writes while a run is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A runner whose heartbeat is older than this is taken for dead (12 missed heartbeats: a busy or NFS-mounted
/// disk can delay a write, but not by a minute).
pub const ALIVE_WITHIN_S: f64 = 60.0;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// A runner works on it (if its heartbeat is fresh).
    Running,
    /// The runner finished the run.
    Done,
    /// The runner stopped with an error.
    Failed,
}

/// The content of status.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    /// Running, done or failed.
    pub state: RunState,
    /// Host of the runner.
    pub host: String,
    /// Process id of the runner.
    pub pid: u32,
    /// Slurm job id (`<array job>_<task>` for an array task) when the runner is a Slurm job.
    pub slurm_job_id: Option<String>,
    /// When the runner started, Unix seconds.
    pub started_at: f64,
    /// Last write, Unix seconds.
    pub heartbeat_at: f64,
    /// STaSC iteration of the current phase.
    pub iteration: Option<usize>,
    /// Current phase ("initial answers", "corrections", "fine-tuning"); None between phases.
    pub phase: Option<String>,
    /// What the phase is busy with inside (e.g. "loading M0"), when that is a phase of its own.
    pub detail: Option<String>,
    /// When the current phase began, Unix seconds.
    pub phase_started_at: Option<f64>,
    /// Units of the phase done.
    pub done: u64,
    /// Units in the phase, when known.
    pub total: Option<u64>,
    /// What a unit is ("samples", "steps").
    pub unit: Option<String>,
    /// Generated or trained tokens per second in the phase so far.
    pub tokens_per_s: Option<f64>,
    /// Seconds left in the phase at the rate so far.
    pub eta_s: Option<f64>,
    /// The error's last line, when failed.
    pub error: Option<String>,
}

impl RunStatus {
    /// Whether the runner was alive `ALIVE_WITHIN_S` before `now` (Unix seconds).
    pub fn alive_at(&self, now: f64) -> bool {
        now - self.heartbeat_at <= ALIVE_WITHIN_S
    }
}

/// Reads a run directory's status.json; None when there is none or it cannot be parsed (a reader never fails on
/// it: the file is advisory, DONE and FAILED are authoritative).
pub fn read_status(run_dir: &Path) -> Option<RunStatus> {
    let text = std::fs::read_to_string(run_dir.join(STATUS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The Slurm job this process runs in: `<array job>_<task>` for an array task, else the job id.
pub fn slurm_job_id() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(job), Some(task)) => Some(format!("{job}_{task}")),
        _ => var("SLURM_JOB_ID"),
    }
}

/// Keeps status.json current while a run is alive; [`StatusWriter::finish`] records how it ended.
pub struct StatusWriter {
    path: PathBuf,
    base: Arc<Mutex<RunStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusWriter {
    /// Writes a first status.json in `run_dir` and starts the heartbeat thread.
    pub fn start(run_dir: &Path) -> Result<Self, StascError> {
        let now = unix_now();
        let base = RunStatus {
            state: RunState::Running,
            host: host_name(),
            pid: std::process::id(),
            slurm_job_id: slurm_job_id(),
            started_at: now,
            heartbeat_at: now,
            iteration: None,
            phase: None,
            detail: None,
            phase_started_at: None,
            done: 0,
            total: None,
            unit: None,
            tokens_per_s: None,
            eta_s: None,
            error: None,
        };
        let path = run_dir.join(STATUS_FILE);
        write_json(&path, &current(&base))?;
        let base = Arc::new(Mutex::new(base));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (path, base, stop) = (path.clone(), base.clone(), stop.clone());
            std::thread::spawn(move || loop {
                let seen = crate::progress::changes();
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let status = current(&base.lock().unwrap_or_else(|p| p.into_inner()));
                if let Err(e) = write_json(&path, &status) {
                    // A status file that cannot be written must not stop the run it describes.
                    crate::progress::line(&format!("warning: {e}"));
                }
                crate::progress::wait_for_change(seen, HEARTBEAT_EVERY);
            })
        };
        Ok(StatusWriter { path, base, stop, thread: Some(thread) })
    }

    /// Stops the heartbeat and records the end: done, or failed with the error's last line.
    pub fn finish(mut self, error: Option<&str>) -> Result<(), StascError> {
        self.stop_thread();
        let mut status = current(&self.base.lock().unwrap_or_else(|p| p.into_inner()));
        status.state = if error.is_some() { RunState::Failed } else { RunState::Done };
        status.error = error.map(|e| e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(e).trim().to_string());
        write_json(&self.path, &status)
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        crate::progress::notify_change();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The base status with the heartbeat now and the current phase's progress.
fn current(base: &RunStatus) -> RunStatus {
    let mut s = base.clone();
    s.heartbeat_at = unix_now();
    if let Some(p) = crate::progress::snapshot() {
        s.iteration = p.iteration;
        s.phase = Some(p.phase.clone());
        s.detail = p.detail.clone();
        s.phase_started_at = Some(s.heartbeat_at - p.seconds);
        s.done = p.done;
        s.total = p.total;
        s.unit = Some(p.unit.clone());
        s.tokens_per_s = p.tokens_per_s();
        s.eta_s = p.eta_seconds();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_records_the_runner_and_how_the_run_ended() {
        let dir = tempfile::tempdir().unwrap();
        let writer = StatusWriter::start(dir.path()).unwrap();
        let first = read_status(dir.path()).unwrap();
        assert_eq!(first.state, RunState::Running);
        assert_eq!(first.pid, std::process::id());
        assert_eq!(first.host, host_name());
        assert!(first.alive_at(unix_now()));
        assert!(!first.alive_at(first.heartbeat_at + ALIVE_WITHIN_S + 1.0));
        writer.finish(Some("iteration 1, corrections: out of memory\n\nCUDA error: out of memory\n")).unwrap();
        let last = read_status(dir.path()).unwrap();
        assert_eq!(last.state, RunState::Failed);
        assert_eq!(last.error.as_deref(), Some("CUDA error: out of memory"));
        assert_eq!(last.started_at, first.started_at);
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, vec![STATUS_FILE.to_string()], "no temporary file is left behind");
    }
}
