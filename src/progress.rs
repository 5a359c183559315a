//! One progress style for every long phase (model loading, sampling, fine-tuning, the STaSC loop's phases): in a
//! terminal, a bar with elapsed time, count, rate and ETA that keeps ticking while nothing finishes (so a long
//! prefill or load never looks like a hang); without a terminal (CI, a pipe, a sweep cell's log.txt), one line when
//! a phase begins and one when it ends, and nothing in between.
//!
//! Phases nest: the STaSC loop opens "iteration 0: initial answers" over all its samples, and the generator's own
//! counter joins it instead of opening a second bar ([`Phase::join_or_begin`]). The outermost phase is what a run's
//! status.json reports ([`snapshot`]). Nothing is shown unless [`set_enabled`] was called: the library is quiet in
//! tests and when embedded.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a terminal bar redraws on its own, so elapsed time and ETA move while no unit finishes.
pub const TICK: Duration = Duration::from_millis(500);

static ENABLED: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The bar template for phases of known size: elapsed, label, bar, count, rates, ETA.
pub const BAR_TEMPLATE: &str = "{elapsed_precise} {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}";
/// The template for phases of unknown size: the same fields without bar and ETA.
pub const SPINNER_TEMPLATE: &str = "{elapsed_precise} {prefix} {spinner} {pos} {msg}";

/// Turns progress output on (the command-line tools do; the library alone stays quiet).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

/// Whether progress output is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// How phases are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Nothing (progress off, or the caller asked for quiet).
    Hidden,
    /// Redrawn bars on stderr (stderr is a terminal).
    Bars,
    /// One line per phase change on stderr.
    Lines,
}

impl Display {
    /// The display for a phase that asked to be `visible`: bars on a terminal, lines otherwise.
    pub fn for_stderr(visible: bool) -> Self {
        match (visible && enabled(), std::io::stderr().is_terminal()) {
            (false, _) => Display::Hidden,
            (true, true) => Display::Bars,
            (true, false) => Display::Lines,
        }
    }
}

/// What a phase has done so far; the outermost phase's is published for status.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Full label, e.g. "iteration 0: initial answers".
    pub label: String,
    /// The STaSC iteration, when the phase belongs to one.
    pub iteration: Option<usize>,
    /// The phase's name without the iteration, e.g. "initial answers".
    pub phase: String,
    /// Units done.
    pub done: u64,
    /// Units in the phase, when known.
    pub total: Option<u64>,
    /// What a unit is ("samples", "steps", "tensors").
    pub unit: String,
    /// Generated or trained tokens so far.
    pub tokens: u64,
    /// Seconds since the phase began.
    pub seconds: f64,
    /// The innermost phase's label when it differs (e.g. "loading model" inside "initial answers").
    pub detail: Option<String>,
}

impl Snapshot {
    /// Tokens per second so far (None before the first token).
    pub fn tokens_per_s(&self) -> Option<f64> {
        (self.tokens > 0 && self.seconds > 0.0).then(|| self.tokens as f64 / self.seconds)
    }

    /// Seconds left at the rate so far, when the size is known and some work is done.
    pub fn eta_seconds(&self) -> Option<f64> {
        let total = self.total?;
        (self.done > 0 && self.seconds > 0.0)
            .then(|| total.saturating_sub(self.done) as f64 * self.seconds / self.done as f64)
    }
}

struct Shared {
    id: u64,
    label: String,
    iteration: Option<usize>,
    phase: String,
    unit: String,
    started: Instant,
    done: AtomicU64,
    tokens: AtomicU64,
    total: Mutex<Option<u64>>,
    note: Mutex<String>,
    bar: Option<ProgressBar>,
    display: Display,
}

impl Shared {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            label: self.label.clone(),
            iteration: self.iteration,
            phase: self.phase.clone(),
            done: self.done.load(Ordering::Relaxed),
            total: *self.total.lock().unwrap_or_else(|p| p.into_inner()),
            unit: self.unit.clone(),
            tokens: self.tokens.load(Ordering::Relaxed),
            seconds: self.started.elapsed().as_secs_f64(),
            detail: None,
        }
    }

    /// The bar's message: unit, rates and the caller's note.
    fn message(&self) -> String {
        let s = self.snapshot();
        let mut parts = vec![self.unit.clone()];
        if s.done > 0 && s.seconds > 0.0 {
            parts.push(format!("{:.2} {}/s", s.done as f64 / s.seconds, self.unit));
        }
        if let Some(rate) = s.tokens_per_s() {
            parts.push(format!("{rate:.0} tok/s"));
        }
        let note = self.note.lock().unwrap_or_else(|p| p.into_inner());
        if !note.is_empty() {
            parts.push(note.clone());
        }
        parts.join(", ")
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(self.message());
        }
    }
}

/// The open phases, outermost first, and a signal for status writers that wait for a change.
struct Registry {
    open: Mutex<Vec<Arc<Shared>>>,
    changed: Condvar,
    generation: AtomicU64,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry { open: Mutex::new(Vec::new()), changed: Condvar::new(), generation: AtomicU64::new(0) })
}

fn multi() -> &'static MultiProgress {
    static M: OnceLock<MultiProgress> = OnceLock::new();
    M.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

fn announce_change() {
    let r = registry();
    // Under the lock, so a waiter between its check and its wait cannot miss the change.
    let _open = r.open.lock().unwrap_or_else(|p| p.into_inner());
    r.generation.fetch_add(1, Ordering::SeqCst);
    r.changed.notify_all();
}

/// Wakes every [`wait_for_change`] (a status writer that is to stop) as a phase change would.
pub fn notify_change() {
    announce_change();
}

/// A number of phase changes so far; [`wait_for_change`] returns when it moves.
pub fn changes() -> u64 {
    registry().generation.load(Ordering::SeqCst)
}

/// Waits until a phase begins or ends after `seen` (a value of [`changes`]), or `timeout` passes.
pub fn wait_for_change(seen: u64, timeout: Duration) {
    let r = registry();
    let guard = r.open.lock().unwrap_or_else(|p| p.into_inner());
    let _ = r.changed.wait_timeout_while(guard, timeout, |_| r.generation.load(Ordering::SeqCst) == seen);
}

/// The outermost open phase (what the run is doing), with the innermost one's label as its detail.
pub fn snapshot() -> Option<Snapshot> {
    let open = registry().open.lock().unwrap_or_else(|p| p.into_inner());
    let outer = open.first()?;
    let mut s = outer.snapshot();
    if open.len() > 1 {
        s.detail = open.last().map(|p| p.label.clone());
    }
    Some(s)
}

/// Prints a line on stderr above any bars (a plain eprintln would be drawn over).
pub fn line(text: &str) {
    if std::io::stderr().is_terminal() && !registry().open.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
        let _ = multi().println(text);
    } else {
        eprintln!("{text}");
    }
}

/// An open phase; it ends when finished or dropped.
pub struct Phase {
    shared: Arc<Shared>,
    /// False when this handle joined an enclosing phase (it then only forwards counts).
    owner: bool,
}

impl Phase {
    /// Opens a phase called `label` (of STaSC iteration `iteration`, when it belongs to one) over `total` units
    /// (None: unknown), shown when `visible`.
    pub fn begin(iteration: Option<usize>, name: &str, total: Option<u64>, unit: &str, visible: bool) -> Phase {
        let label = match iteration {
            Some(n) => format!("iteration {n}: {name}"),
            None => name.to_string(),
        };
        let display = Display::for_stderr(visible);
        let bar = (display == Display::Bars).then(|| {
            let (bar, template) = match total {
                Some(len) => (ProgressBar::new(len), BAR_TEMPLATE),
                None => (ProgressBar::new_spinner(), SPINNER_TEMPLATE),
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = multi().add(bar.with_style(style).with_prefix(label.clone()).with_message(unit.to_string()));
            bar.enable_steady_tick(TICK);
            bar
        });
        if display == Display::Lines {
            let size = total.map(|t| format!(" ({t} {unit})")).unwrap_or_default();
            eprintln!("[stasc] {label}{size}: started");
        }
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            label,
            iteration,
            phase: name.to_string(),
            unit: unit.to_string(),
            started: Instant::now(),
            done: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            total: Mutex::new(total),
            note: Mutex::new(String::new()),
            bar,
            display,
        });
        registry().open.lock().unwrap_or_else(|p| p.into_inner()).push(shared.clone());
        announce_change();
        Phase { shared, owner: true }
    }

    /// Joins the innermost open phase counting `unit` (the loop's "initial answers" for the generator's samples);
    /// opens a phase of its own when there is none. A joined phase takes `total` when it had no size yet.
    pub fn join_or_begin(name: &str, total: Option<u64>, unit: &str, visible: bool) -> Phase {
        let found = {
            let open = registry().open.lock().unwrap_or_else(|p| p.into_inner());
            open.iter().rev().find(|p| p.unit == unit).cloned()
        };
        if let Some(shared) = found {
            let mut t = shared.total.lock().unwrap_or_else(|p| p.into_inner());
            if t.is_none() && total.is_some() {
                *t = total;
                if let (Some(bar), Some(len)) = (&shared.bar, total) {
                    bar.set_length(len);
                    bar.set_style(
                        ProgressStyle::with_template(BAR_TEMPLATE)
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                }
            }
            drop(t);
            return Phase { shared, owner: false };
        }
        Phase::begin(None, name, total, unit, visible)
    }

    /// Counts `units` done and `tokens` generated or trained.
    pub fn advance(&self, units: u64, tokens: u64) {
        self.shared.done.fetch_add(units, Ordering::Relaxed);
        self.shared.tokens.fetch_add(tokens, Ordering::Relaxed);
        if let Some(bar) = &self.shared.bar {
            bar.inc(units);
        }
        self.shared.refresh();
    }

    /// Sets a short note shown after the rates (e.g. the last loss).
    pub fn note(&self, text: impl Into<String>) {
        *self.shared.note.lock().unwrap_or_else(|p| p.into_inner()) = text.into();
        self.shared.refresh();
    }

    /// What this phase has done so far.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// Ends the phase (also done on drop); a joined handle ends nothing.
    pub fn finish(self) {}
}

impl Drop for Phase {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let s = &self.shared;
        registry().open.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| p.id != s.id);
        let summary = summary_line(&s.snapshot());
        match s.display {
            Display::Hidden => {}
            Display::Lines => eprintln!("[stasc] {summary}"),
            Display::Bars => {
                // Printed while the bar still exists, so the line lands above it and the cleared bar leaves the
                // cursor at the start of a line.
                let _ = multi().println(format!("[stasc] {summary}"));
                if let Some(bar) = &s.bar {
                    bar.finish_and_clear();
                    multi().remove(bar);
                }
            }
        }
        announce_change();
    }
}

/// The line a finished phase leaves: what it did, how long it took, how fast.
pub fn summary_line(s: &Snapshot) -> String {
    let count = match s.total {
        Some(t) if t != s.done => format!("{}/{} {}", s.done, t, s.unit),
        _ => format!("{} {}", s.done, s.unit),
    };
    let rate = s.tokens_per_s().map(|r| format!(", {r:.0} tok/s")).unwrap_or_default();
    format!("{}: done, {count} in {:.1} s{rate}", s.label, s.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_name_the_phase_count_time_and_rate() {
        let s = Snapshot {
            label: "iteration 0: initial answers".into(),
            iteration: Some(0),
            phase: "initial answers".into(),
            done: 30,
            total: Some(30),
            unit: "samples".into(),
            tokens: 600,
            seconds: 2.0,
            detail: None,
        };
        assert_eq!(summary_line(&s), "iteration 0: initial answers: done, 30 samples in 2.0 s, 300 tok/s");
        let partial = Snapshot { done: 10, tokens: 0, ..s.clone() };
        assert_eq!(summary_line(&partial), "iteration 0: initial answers: done, 10/30 samples in 2.0 s");
        assert_eq!(partial.eta_seconds(), Some(4.0));
        assert_eq!(Snapshot { done: 0, ..s }.eta_seconds(), None);
    }

    #[test]
    fn the_templates_parse_and_show_rate_and_eta() {
        for t in [BAR_TEMPLATE, SPINNER_TEMPLATE] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
            assert!(t.contains("{elapsed_precise}") && t.contains("{msg}"), "{t}");
        }
        assert!(BAR_TEMPLATE.contains("{eta}"));
    }

    #[test]
    fn a_counter_joins_the_enclosing_phase_of_its_unit() {
        // A unit no other test uses: the registry is process-wide.
        let outer = Phase::begin(Some(3), "joining test", None, "join-test-units", false);
        let inner = Phase::join_or_begin("sampling", Some(8), "join-test-units", false);
        inner.advance(2, 40);
        inner.advance(1, 10);
        drop(inner);
        let s = outer.snapshot();
        assert_eq!((s.done, s.total, s.tokens), (3, Some(8), 50));
        assert_eq!(s.label, "iteration 3: joining test");
        drop(outer);
        let alone = Phase::join_or_begin("sampling", Some(2), "join-test-units", false);
        assert_eq!(alone.snapshot().done, 0, "after the outer phase ended, a new phase opens");
    }
}
