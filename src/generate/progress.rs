//! The generator's progress: samples finished and generated tokens, counted into the enclosing "samples" phase of
//! [`crate::progress`] (the STaSC loop's) or, when there is none, into a "sampling" phase of its own.

use crate::progress::Phase;

/// A progress counter over samples, or nothing.
pub(crate) struct Progress {
    phase: Option<Phase>,
    first_done: std::cell::Cell<bool>,
}

impl Progress {
    /// A counter over `samples` samples when `enabled` (shown in the one progress style of [`crate::progress`]).
    pub(crate) fn new(enabled: bool, samples: u64) -> Self {
        let phase = enabled.then(|| {
            let phase = Phase::join_or_begin("sampling", Some(samples), "samples", true);
            // Until the first sample ends the bar shows what the time goes to.
            phase.note("prefill and decoding");
            phase
        });
        Progress { phase, first_done: std::cell::Cell::new(false) }
    }

    /// Records a finished sample of `tokens` tokens.
    pub(crate) fn sample_done(&self, tokens: usize) {
        if let Some(phase) = &self.phase {
            if !self.first_done.replace(true) {
                phase.note("");
            }
            phase.advance(1, tokens as u64);
        }
    }

    /// Ends the counter (the enclosing phase, if joined, goes on).
    pub(crate) fn finish(&self) {
        if let Some(phase) = &self.phase {
            phase.note("");
        }
    }
}
