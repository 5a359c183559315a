//! The state of every cell of a sweep, read from the files alone (sweep.json, each cell's DONE, FAILED and
//! status.json), and the table `stasc sweep status` and a sweep's live view print: done; running (iteration,
//! phase, progress with a bar and ETA, tokens/s, since when, where); failed (the error's last line and the log);
//! pending. "Running" means a status.json heartbeat fresher than
//! [`ALIVE_WITHIN_S`](crate::stasc::status::ALIVE_WITHIN_S).

use std::path::{Path, PathBuf};

use super::error::SweepError;
use super::exec::SweepIndex;
use crate::stasc::status::{read_status, RunState, RunStatus};

/// What a cell is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum CellView {
    /// DONE exists.
    Done,
    /// A runner's heartbeat is fresh.
    Running(RunStatus),
    /// The cell failed: FAILED exists, or the runner recorded an error.
    Failed {
        /// The error's last line.
        reason: String,
        /// The cell's log.
        log: PathBuf,
    },
    /// Not started, or interrupted (then `last` is what its dead runner wrote last).
    Pending {
        /// The last status of a runner that stopped without finishing.
        last: Option<RunStatus>,
    },
}

/// One cell's row.
#[derive(Debug, Clone, PartialEq)]
pub struct CellRow {
    /// Cell name.
    pub name: String,
    /// The cell's run directory.
    pub dir: PathBuf,
    /// Its state.
    pub view: CellView,
}

/// Reads sweep.json of the sweep directory `dir`.
pub fn read_index(dir: &Path) -> Result<SweepIndex, SweepError> {
    let path = dir.join("sweep.json");
    let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SweepError::Index { path: path.clone(), message: "not found".into() },
        _ => SweepError::Io { path: path.clone(), source },
    })?;
    serde_json::from_str(&text).map_err(|e| SweepError::Index { path, message: e.to_string() })
}

/// The state of the cell whose run directory is `dir`, at `now` (Unix seconds).
pub fn cell_view(dir: &Path, now: f64) -> CellView {
    if dir.join("DONE").exists() {
        return CellView::Done;
    }
    let log = dir.join("log.txt");
    let status = read_status(dir);
    // A held run-directory lock also says a runner is there (its heartbeat may lag during a long step).
    let held = || crate::rundir_lock::holder(dir).is_some();
    if let Some(s) = status.as_ref().filter(|s| s.state == RunState::Running && (s.alive_at(now) || held())) {
        return CellView::Running(s.clone());
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("FAILED")) {
        return CellView::Failed { reason: last_line(&text), log };
    }
    match status {
        Some(s) if s.state == RunState::Failed => {
            CellView::Failed { reason: s.error.clone().unwrap_or_else(|| "failed".into()), log }
        }
        last => CellView::Pending { last: last.filter(|s| s.state == RunState::Running) },
    }
}

/// Every cell of the sweep in `dir`, in grid order.
pub fn read_sweep(dir: &Path, now: f64) -> Result<(SweepIndex, Vec<CellRow>), SweepError> {
    let index = read_index(dir)?;
    let rows = index
        .cells
        .iter()
        .map(|c| CellRow { name: c.name.clone(), dir: c.dir.clone(), view: cell_view(&c.dir, now) })
        .collect();
    Ok((index, rows))
}

fn last_line(text: &str) -> String {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// The table of `rows` at `now`: a count line, then one line per cell (two for a failed cell: its log).
pub fn render(title: &str, rows: &[CellRow], now: f64) -> String {
    let count = |f: fn(&CellView) -> bool| rows.iter().filter(|r| f(&r.view)).count();
    let mut out = format!(
        "{title}: {} cells: {} done, {} running, {} failed, {} pending\n",
        rows.len(),
        count(|v| matches!(v, CellView::Done)),
        count(|v| matches!(v, CellView::Running(_))),
        count(|v| matches!(v, CellView::Failed { .. })),
        count(|v| matches!(v, CellView::Pending { .. })),
    );
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in rows {
        let (state, detail) = match &r.view {
            CellView::Done => ("done", String::new()),
            CellView::Running(s) => ("running", running_detail(s, now)),
            CellView::Failed { reason, log } => {
                ("failed", format!("{reason}\n{:width$}          log: {}", "", log.display()))
            }
            CellView::Pending { last: None } => ("pending", String::new()),
            CellView::Pending { last: Some(s) } => ("pending", interrupted_detail(s, now)),
        };
        out.push_str(format!("{:width$}  {state:<8}  {detail}", r.name).trim_end());
        out.push('\n');
    }
    out
}

/// "iteration 0 corrections [=====>    ] 12/30 samples, 812 tok/s, ETA 0:45, since 08:31:02 UTC (12 s), on host pid 7 (job 5_1)"
fn running_detail(s: &RunStatus, now: f64) -> String {
    let mut parts = Vec::new();
    match (s.iteration, &s.phase) {
        (Some(n), Some(p)) => parts.push(format!("iteration {n} {p}")),
        (None, Some(p)) => parts.push(p.clone()),
        _ => parts.push("starting".into()),
    }
    let unit = s.unit.as_deref().unwrap_or("");
    match s.total {
        Some(t) if t > 0 => parts.push(format!("{} {}/{t} {unit}", text_bar(s.done, t, 20), s.done)),
        _ if s.done > 0 => parts.push(format!("{} {unit}", s.done)),
        _ => {}
    }
    let mut tail = Vec::new();
    if let Some(d) = &s.detail {
        tail.push(d.clone());
    }
    if let Some(r) = s.tokens_per_s {
        tail.push(format!("{r:.0} tok/s"));
    }
    if let Some(e) = s.eta_s {
        tail.push(format!("ETA {}", duration(e)));
    }
    let since = s.phase_started_at.unwrap_or(s.started_at);
    tail.push(format!("since {} ({} ago)", utc_time(since), duration(now - since)));
    tail.push(format!("on {}", place(s)));
    format!("{} ({})", parts.join(" "), tail.join(", "))
}

fn interrupted_detail(s: &RunStatus, now: f64) -> String {
    let at = match (s.iteration, &s.phase) {
        (Some(n), Some(p)) => format!(" in iteration {n} {p}"),
        (None, Some(p)) => format!(" in {p}"),
        _ => String::new(),
    };
    format!(
        "(interrupted{at}: last heartbeat {} ago on {}; resumes where it stopped)",
        duration(now - s.heartbeat_at),
        place(s)
    )
}

/// host pid N, and the Slurm job when there is one.
fn place(s: &RunStatus) -> String {
    let job = s.slurm_job_id.as_ref().map(|j| format!(", job {j}")).unwrap_or_default();
    format!("{} pid {}{job}", s.host, s.pid)
}

/// `[=====>    ]` of `width` characters.
pub fn text_bar(done: u64, total: u64, width: usize) -> String {
    let filled = ((done.min(total) as f64 / total.max(1) as f64) * width as f64).round() as usize;
    let mut bar = "=".repeat(filled);
    if filled < width {
        bar.push('>');
        bar.push_str(&" ".repeat(width - filled - 1));
    }
    format!("[{bar}]")
}

/// `1:02:03`, `2:03` or `5 s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{}:{:02}", s / 60, s % 60),
        _ => format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
    }
}

/// `2026-11-30 08:31:02 UTC` from Unix seconds (the prompt templates' UTC calendar, so no time crate is needed).
pub fn utc_time(unix: f64) -> String {
    crate::prompt::utc_datetime(unix.max(0.0) as i64)
}

/// Whether every cell has ended (done or failed): a `--watch` stops there.
pub fn all_ended(rows: &[CellRow]) -> bool {
    rows.iter().all(|r| matches!(r.view, CellView::Done | CellView::Failed { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stasc::status::{unix_now, ALIVE_WITHIN_S, STATUS_FILE};

    fn status(state: RunState, heartbeat_at: f64) -> RunStatus {
        RunStatus {
            state,
            host: "node7".into(),
            pid: 4242,
            slurm_job_id: Some("88_1".into()),
            started_at: heartbeat_at - 100.0,
            heartbeat_at,
            iteration: Some(1),
            phase: Some("corrections".into()),
            detail: None,
            phase_started_at: Some(heartbeat_at - 30.0),
            done: 15,
            total: Some(60),
            unit: Some("samples".into()),
            tokens_per_s: Some(812.4),
            eta_s: Some(90.0),
            error: None,
        }
    }

    fn write_status(dir: &Path, s: &RunStatus) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(STATUS_FILE), serde_json::to_string(s).unwrap()).unwrap();
    }

    #[test]
    fn cells_are_done_running_failed_or_pending_from_their_files() {
        let root = tempfile::tempdir().unwrap();
        let now = unix_now();
        let done = root.path().join("done");
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(done.join("DONE"), "{}").unwrap();
        let running = root.path().join("running");
        write_status(&running, &status(RunState::Running, now - 3.0));
        let stale = root.path().join("stale");
        write_status(&stale, &status(RunState::Running, now - ALIVE_WITHIN_S - 5.0));
        let failed = root.path().join("failed");
        std::fs::create_dir_all(&failed).unwrap();
        std::fs::write(failed.join("FAILED"), "stasc run exited with 1: error: out of memory (see x/log.txt)\n")
            .unwrap();
        let fresh = root.path().join("never-started");

        assert_eq!(cell_view(&done, now), CellView::Done);
        assert!(matches!(cell_view(&running, now), CellView::Running(s) if s.pid == 4242));
        assert!(matches!(cell_view(&stale, now), CellView::Pending { last: Some(_) }));
        assert_eq!(
            cell_view(&failed, now),
            CellView::Failed {
                reason: "stasc run exited with 1: error: out of memory (see x/log.txt)".into(),
                log: failed.join("log.txt")
            }
        );
        assert_eq!(cell_view(&fresh, now), CellView::Pending { last: None });
        // A runner that recorded its own failure (a plain `stasc run`, no FAILED file) is failed too.
        let own = root.path().join("own-failure");
        write_status(&own, &RunStatus { error: Some("no pair".into()), ..status(RunState::Failed, now) });
        assert!(matches!(cell_view(&own, now), CellView::Failed { reason, .. } if reason == "no pair"));
    }

    #[test]
    fn the_table_shows_progress_rate_eta_and_where_a_cell_runs() {
        let now = 1_764_491_462.0; // 2025-11-30 08:31:02 UTC
        let rows = vec![
            CellRow { name: "variant=EIE".into(), dir: "a".into(), view: CellView::Done },
            CellRow {
                name: "variant=FIE".into(),
                dir: "b".into(),
                view: CellView::Running(status(RunState::Running, now)),
            },
            CellRow {
                name: "variant=ENE".into(),
                dir: "c".into(),
                view: CellView::Failed { reason: "error: boom".into(), log: "c/log.txt".into() },
            },
            CellRow { name: "variant=FNE".into(), dir: "d".into(), view: CellView::Pending { last: None } },
        ];
        let table = render("sweep demo", &rows, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "sweep demo: 4 cells: 1 done, 1 running, 1 failed, 1 pending");
        assert_eq!(lines[1], "variant=EIE  done");
        assert_eq!(
            lines[2],
            "variant=FIE  running   iteration 1 corrections [=====>              ] 15/60 samples (812 tok/s, ETA 1:30, \
             since 2025-11-30 08:30:32 UTC (30 s ago), on node7 pid 4242, job 88_1)"
        );
        assert_eq!(lines[3], "variant=ENE  failed    error: boom");
        assert_eq!(lines[4].trim(), "log: c/log.txt");
        assert_eq!(lines[5], "variant=FNE  pending");
        assert!(!all_ended(&rows));
    }

    #[test]
    fn times_and_bars_are_formatted_plainly() {
        assert_eq!(utc_time(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(duration(5.2), "5 s");
        assert_eq!(duration(125.0), "2:05");
        assert_eq!(duration(3725.0), "1:02:05");
        assert_eq!(text_bar(0, 4, 4), "[>   ]");
        assert_eq!(text_bar(4, 4, 4), "[====]");
    }
}
