//! The live view of a local sweep while its cells run: in a terminal, the `stasc sweep status` table redrawn
//! every second (a bar, rate and ETA per running cell); without a terminal, one line per cell whenever its phase
//! changes. It reads the cells' files, as `stasc sweep status` does from another shell.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::time::Duration;

use super::exec::CellPlan;
use super::status::{cell_view, render, CellRow, CellView};
use crate::stasc::status::unix_now;

/// How often the view looks at the cells' files.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Runs `work` while showing the cells of `plans` on stderr (bars in a terminal, lines otherwise); `visible`
/// false shows nothing.
pub fn while_running<T>(title: &str, plans: &[CellPlan], visible: bool, work: impl FnOnce() -> T) -> T {
    if !visible {
        return work();
    }
    let terminal = std::io::stderr().is_terminal();
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut view = View { title, plans, drawn_lines: 0, last: HashMap::new() };
            loop {
                if terminal {
                    view.redraw();
                } else {
                    view.print_changes();
                }
                match stopped.recv_timeout(REFRESH) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => break,
                }
            }
            if !terminal {
                view.print_changes();
            }
        });
        let out = work();
        drop(stop);
        out
    })
}

struct View<'a> {
    title: &'a str,
    plans: &'a [CellPlan],
    drawn_lines: usize,
    last: HashMap<String, String>,
}

impl View<'_> {
    fn rows(&self) -> Vec<CellRow> {
        let now = unix_now();
        self.plans
            .iter()
            .map(|p| CellRow { name: p.name.clone(), dir: p.dir.clone(), view: cell_view(&p.dir, now) })
            .collect()
    }

    /// Replaces the table drawn last time with the current one.
    fn redraw(&mut self) {
        let table = render(self.title, &self.rows(), unix_now());
        let mut err = std::io::stderr().lock();
        if self.drawn_lines > 0 {
            // Up to the first line of the last table, then clear to the end of the screen.
            let _ = write!(err, "\x1b[{}F\x1b[J", self.drawn_lines);
        }
        let _ = write!(err, "{table}");
        let _ = err.flush();
        self.drawn_lines = table.lines().count();
    }

    /// One line per cell whose state or phase changed since the last look.
    fn print_changes(&mut self) {
        for row in self.rows() {
            let Some(line) = change_line(&row.view) else { continue };
            if self.last.get(&row.name) != Some(&line) {
                eprintln!("[sweep] {}: {line}", row.name);
                self.last.insert(row.name, line);
            }
        }
    }
}

/// What a cell's phase line says; None for a cell that has not started.
pub fn change_line(view: &CellView) -> Option<String> {
    match view {
        CellView::Done => Some("done".into()),
        CellView::Failed { reason, log } => Some(format!("failed: {reason} (log: {})", log.display())),
        CellView::Pending { .. } => None,
        CellView::Running(s) => {
            let phase = match (s.iteration, &s.phase) {
                (Some(n), Some(p)) => format!("iteration {n} {p}"),
                (None, Some(p)) => p.clone(),
                _ => "starting".into(),
            };
            let size = match (s.total, &s.unit) {
                (Some(t), Some(u)) => format!(" ({t} {u})"),
                _ => String::new(),
            };
            let job = s.slurm_job_id.as_ref().map(|j| format!(", job {j}")).unwrap_or_default();
            Some(format!("{phase}{size} on {} pid {}{job}", s.host, s.pid))
        }
    }
}
