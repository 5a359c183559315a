//! The Slurm executor (`sweep.executor = "slurm"`): the cells that are neither done nor running go to Slurm as
//! one job array, each task running `stasc run` for its cell; the job ids are recorded in `<sweep>/slurm/jobs.json`;
//! `--wait` follows the jobs through squeue. A cell counts as running while its run directory's lock is held or one
//! of its recorded array tasks is still in squeue, so rerunning `stasc sweep` submits only what is left.

pub mod options;
pub mod script;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use options::SlurmOptions;

use super::error::SweepError;
use super::exec::{cell_state, select, CellPlan, CellState, SweepOutcome};
use super::spec::SweepSpec;

/// Errors of talking to Slurm; each one line.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A Slurm command could not be started.
    #[error("cannot run {tool}: {source} (sweep.executor = \"slurm\" needs Slurm's commands on PATH)")]
    Missing {
        /// The command.
        tool: &'static str,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// sbatch refused the job array.
    #[error("sbatch refused {cells}: {message} (script {})", script.display())]
    Sbatch {
        /// The cells of the array, named.
        cells: String,
        /// sbatch's message, on one line.
        message: String,
        /// The batch script.
        script: PathBuf,
    },
    /// squeue failed.
    #[error("squeue failed: {message}")]
    Squeue {
        /// squeue's message, on one line.
        message: String,
    },
    /// The record of submitted jobs is unreadable.
    #[error("{}: not a record of submitted jobs ({source}); move it away to start the record afresh", path.display())]
    Record {
        /// jobs.json.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// One sbatch submission, as recorded in `<sweep>/slurm/jobs.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// The array's job id.
    pub job_id: String,
    /// When it was submitted (seconds since the Unix epoch).
    pub submitted: u64,
    /// The batch script.
    pub script: PathBuf,
    /// (array index, cell name) of its tasks.
    pub cells: Vec<(usize, String)>,
}

/// How `stasc sweep` runs under Slurm.
#[derive(Debug, Clone)]
pub struct SlurmRun {
    /// Only these cells (exact names).
    pub only: Vec<String>,
    /// Submit cells that failed before.
    pub retry_failed: bool,
    /// Follow the jobs until none is left in squeue, then report every cell.
    pub wait: bool,
    /// How often `--wait` asks squeue.
    pub poll: Duration,
    /// The stasc executable the tasks start.
    pub exe: PathBuf,
}

/// The directory of the scripts, Slurm's task output and jobs.json.
pub fn slurm_dir(spec: &SweepSpec) -> PathBuf {
    spec.out.join("slurm")
}

/// Reads jobs.json (empty when absent).
pub fn read_submissions(spec: &SweepSpec) -> Result<Vec<Submission>, SweepError> {
    let path = slurm_dir(spec).join("jobs.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| SlurmError::Record { path, source }.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(source) => Err(SweepError::Io { path, source }),
    }
}

/// Array tasks still known to squeue: (array job id, index) -> state (PENDING, RUNNING, ...).
pub fn queued_tasks(job_ids: &[String]) -> Result<BTreeMap<(String, usize), String>, SweepError> {
    let mut out = BTreeMap::new();
    if job_ids.is_empty() {
        return Ok(out);
    }
    let o = Command::new("squeue")
        .args(["-h", "-r", "-o", "%F|%K|%T", "-j", &job_ids.join(",")])
        .output()
        .map_err(|source| SlurmError::Missing { tool: "squeue", source })?;
    let stderr = one_line(&String::from_utf8_lossy(&o.stderr));
    if !o.status.success() {
        // Every id named has left Slurm's memory: nothing is queued.
        if stderr.contains("Invalid job id") {
            return Ok(out);
        }
        return Err(SlurmError::Squeue { message: stderr }.into());
    }
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let mut parts = line.trim().split('|');
        if let (Some(job), Some(index), Some(state)) = (parts.next(), parts.next(), parts.next()) {
            if let Ok(index) = index.parse() {
                out.insert((job.to_string(), index), state.to_string());
            }
        }
    }
    Ok(out)
}

/// Validated plans in, job array out: submits the selected cells that are neither done nor running (nor failed,
/// unless `retry_failed`), records the job, and with `wait` follows it to the end. `progress` gets one line per
/// change of the queue.
pub fn submit(
    spec: &SweepSpec,
    options: &SlurmOptions,
    plans: &[CellPlan],
    run: &SlurmRun,
    progress: &mut dyn FnMut(&str),
) -> Result<SweepOutcome, SweepError> {
    let selected = select(plans, &run.only)?;
    let dir = slurm_dir(spec);
    let mut submissions = read_submissions(spec)?;
    let earlier: Vec<String> = submissions.iter().map(|s| s.job_id.clone()).collect();
    let queue = queued_tasks(&earlier)?;
    // The latest recorded task of each cell.
    let mut task_of: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for s in &submissions {
        for (index, name) in &s.cells {
            task_of.insert(name.clone(), (s.job_id.clone(), *index));
        }
    }
    let mut status: BTreeMap<String, String> = BTreeMap::new();
    let mut to_submit: Vec<(usize, &CellPlan)> = Vec::new();
    let mut followed: Vec<String> = Vec::new();
    for &cell in &selected {
        let index = plans.iter().position(|p| p.name == cell.name).expect("selected from plans");
        let queued = task_of.get(&cell.name).and_then(|t| queue.get(t).map(|state| (t, state)));
        let s = match (cell_state(&cell.dir), queued) {
            (CellState::Done, _) => "done".to_string(),
            (_, Some(((job, i), state))) => {
                followed.push(job.clone());
                format!("queued: Slurm job {job}_{i} ({state})")
            }
            (_, None) if crate::rundir_lock::holder(&cell.dir).is_some() => {
                let holder = crate::rundir_lock::holder(&cell.dir).expect("checked");
                format!("running elsewhere: {}", holder.describe())
            }
            (CellState::Failed, None) if !run.retry_failed => "skipped: failed before (use --retry-failed)".into(),
            (_, None) => {
                to_submit.push((index, cell));
                continue;
            }
        };
        status.insert(cell.name.clone(), s);
    }
    if !to_submit.is_empty() {
        let submission = sbatch(spec, options, run, &dir, &to_submit, submissions.len() + 1)?;
        for (index, cell) in &to_submit {
            status.insert(cell.name.clone(), format!("submitted: Slurm job {}_{index}", submission.job_id));
            task_of.insert(cell.name.clone(), (submission.job_id.clone(), *index));
        }
        followed.push(submission.job_id.clone());
        submissions.push(submission);
        let json = serde_json::to_vec_pretty(&submissions).expect("submissions serialise");
        crate::sweep::exec::write_if_changed(&dir.join("jobs.json"), &json)?;
    }
    if run.wait && !followed.is_empty() {
        followed.sort();
        followed.dedup();
        follow(&followed, run.poll, progress)?;
        for cell in &selected {
            let Some((job, index)) = task_of.get(&cell.name) else { continue };
            if !followed.contains(job) {
                continue;
            }
            let s = match cell_state(&cell.dir) {
                CellState::Done => "ran".to_string(),
                CellState::Failed => {
                    let reason = fs::read_to_string(cell.dir.join("FAILED")).unwrap_or_default();
                    format!("failed: {}", reason.trim())
                }
                CellState::Pending => format!(
                    "failed: Slurm job {job}_{index} ended without finishing the cell (cancelled, out of time or \
                     killed; see {} and {}); rerun stasc sweep to resume it",
                    cell.dir.join("log.txt").display(),
                    dir.join(format!("{job}_{index}.out")).display()
                ),
            };
            status.insert(cell.name.clone(), s);
        }
    }
    let cells: Vec<(String, String)> =
        selected.iter().map(|c| (c.name.clone(), status.remove(&c.name).unwrap_or_default())).collect();
    let failed = cells.iter().filter(|(_, s)| s.starts_with("failed") || s.starts_with("skipped: failed")).count();
    Ok(SweepOutcome { cells, failed })
}

/// Writes the array's batch script (atomically) and submits it.
fn sbatch(
    spec: &SweepSpec,
    options: &SlurmOptions,
    run: &SlurmRun,
    dir: &Path,
    cells: &[(usize, &CellPlan)],
    number: usize,
) -> Result<Submission, SweepError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SweepError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let workdir = std::env::current_dir().map_err(io(Path::new(".")))?;
    // Slurm writes task output relative to nothing we control: give it an absolute directory.
    let slurm_dir = if dir.is_absolute() { dir.to_path_buf() } else { workdir.join(dir) };
    let job = script::ArrayJob { sweep: &spec.name, exe: &run.exe, workdir: &workdir, slurm_dir: &slurm_dir, cells };
    let script = dir.join(format!("array-{number:03}.sh"));
    crate::sweep::exec::write_if_changed(&script, script::batch_script(&job, options).as_bytes())?;
    for (_, cell) in cells {
        // A retried cell starts clean; its task records a new failure if it fails again.
        let _ = fs::remove_file(cell.dir.join("FAILED"));
    }
    let names = {
        let n: Vec<&str> = cells.iter().map(|(_, c)| c.name.as_str()).collect();
        match n.len() {
            1 => format!("cell {}", n[0]),
            k if k <= 3 => format!("cells {}", n.join(", ")),
            k => format!("cells {} and {} more", n[..3].join(", "), k - 3),
        }
    };
    let o = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script)
        .output()
        .map_err(|source| SlurmError::Missing { tool: "sbatch", source })?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    // --parsable prints "jobid" or "jobid;cluster".
    let job_id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if !o.status.success() || job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit()) {
        let message = one_line(&format!("{}{stdout}", String::from_utf8_lossy(&o.stderr)));
        return Err(SlurmError::Sbatch { cells: names, message, script }.into());
    }
    Ok(Submission {
        job_id,
        submitted: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        script,
        cells: cells.iter().map(|(i, c)| (*i, c.name.clone())).collect(),
    })
}

/// Polls squeue until none of `jobs`' tasks is left, reporting each change of the counts by state.
fn follow(jobs: &[String], poll: Duration, progress: &mut dyn FnMut(&str)) -> Result<(), SweepError> {
    let mut last = String::new();
    loop {
        let queue = queued_tasks(jobs)?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for state in queue.values() {
            *counts.entry(state.as_str()).or_default() += 1;
        }
        let line = if queue.is_empty() {
            format!("Slurm job {}: no task left in the queue", jobs.join(", "))
        } else {
            let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {}", s.to_lowercase())).collect();
            format!("Slurm job {}: {}", jobs.join(", "), parts.join(", "))
        };
        if line != last {
            progress(&line);
            last = line;
        }
        if queue.is_empty() {
            return Ok(());
        }
        std::thread::sleep(poll);
    }
}

/// A tool's message on one line: its non-empty lines joined.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}
