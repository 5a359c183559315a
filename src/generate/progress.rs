//! The progress bar of long generation runs: samples finished and generated tokens per second, on stderr, drawn only
//! when asked for and when stderr is a terminal.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar over samples, or nothing.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    tokens: std::cell::Cell<usize>,
}

impl Progress {
    /// A bar over `samples` samples when `enabled` and stderr is a terminal.
    pub(crate) fn new(enabled: bool, samples: u64) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} samples, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            ProgressBar::with_draw_target(Some(samples), ProgressDrawTarget::stderr()).with_style(style)
        });
        Progress { bar, started: Instant::now(), tokens: std::cell::Cell::new(0) }
    }

    /// Records a finished sample of `tokens` tokens.
    pub(crate) fn sample_done(&self, tokens: usize) {
        self.tokens.set(self.tokens.get() + tokens);
        if let Some(bar) = &self.bar {
            let rate = self.tokens.get() as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{rate:.0} tok/s"));
            bar.inc(1);
        }
    }

    /// Clears the bar.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
