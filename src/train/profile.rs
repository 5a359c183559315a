//! Opt-in phase timing of the training loop (`STASC_TRAIN_PROFILE=1`): where a step's time goes, and whether the
//! host or the GPU sets the pace.

use std::time::Instant;

/// Steps left out of the profile (libtorch and cuBLAS initialise lazily during the first ones).
const PROFILE_SKIP: usize = 2;

/// Opt-in phase timing (`STASC_TRAIN_PROFILE=1`): synchronises the device after each phase of a step and prints
/// the mean time of each ([`PHASES`]) when the loop ends. With overlapped gradient sums, forward+backward includes
/// the sums that ran beside it and "sums" is what was left after backward. Costs the overlap of
/// host and device work, so timings with it on are not throughput numbers.
pub(super) struct Profile {
    device: Option<tch::Device>,
    last: Instant,
    last_cpu: f64,
    totals: [f64; PHASES.len()],
    /// Per phase: wall seconds until the host had queued the phase's work (before the sync), and this thread's CPU
    /// seconds meanwhile. Issue time near the total means the host is the bottleneck; CPU time well under the
    /// issue time means the thread waited (a lock, a sync) rather than worked.
    issue: [f64; PHASES.len()],
    cpu: [f64; PHASES.len()],
}

/// The phases of a step, in order; the last is what the loop does after a step's update and before the next step
/// begins (reading the previous step's loss back, reporting it).
const PHASES: [&str; 5] = ["forward+backward", "sums", "clip", "update", "between steps"];

/// The index of the between-steps phase, timed by [`Profile::begin`].
const BETWEEN: usize = PHASES.len() - 1;

impl Profile {
    pub(super) fn from_env(device: tch::Device, first_worker: bool) -> Self {
        let on = first_worker && std::env::var("STASC_TRAIN_PROFILE").is_ok_and(|v| v == "1");
        let zero = [0.0; PHASES.len()];
        Profile {
            device: on.then_some(device),
            last: Instant::now(),
            last_cpu: 0.0,
            totals: zero,
            issue: zero,
            cpu: zero,
        }
    }

    fn sync(&self) {
        if let Some(tch::Device::Cuda(i)) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    pub(super) fn begin(&mut self, step: usize) {
        if step == PROFILE_SKIP {
            self.totals = [0.0; PHASES.len()];
            self.issue = [0.0; PHASES.len()];
            self.cpu = [0.0; PHASES.len()];
        }
        if self.device.is_some() {
            if step > PROFILE_SKIP {
                self.mark(BETWEEN);
            } else {
                self.sync();
                self.last = Instant::now();
                self.last_cpu = thread_cpu_seconds();
            }
        }
    }

    /// Ends phase `i` of [`PHASES`].
    pub(super) fn mark(&mut self, i: usize) {
        if self.device.is_some() {
            self.issue[i] += self.last.elapsed().as_secs_f64();
            self.cpu[i] += thread_cpu_seconds() - self.last_cpu;
            self.sync();
            self.totals[i] += self.last.elapsed().as_secs_f64();
            self.last = Instant::now();
            self.last_cpu = thread_cpu_seconds();
        }
    }

    pub(super) fn report(&self, steps: usize) {
        let steps = steps.saturating_sub(PROFILE_SKIP);
        if self.device.is_some() && steps > 0 {
            let ms = |s: f64| 1e3 * s / steps as f64;
            let phases: Vec<String> = (0..PHASES.len())
                .map(|i| {
                    let (name, total, issue, cpu) = (PHASES[i], self.totals[i], self.issue[i], self.cpu[i]);
                    format!("{name} {:.1} (queued in {:.1}, host CPU {:.1})", ms(total), ms(issue), ms(cpu))
                })
                .collect();
            eprintln!("train profile over {steps} steps (ms/step): {}", phases.join(", "));
        }
    }
}

/// This thread's CPU time in seconds (0 where the clock is unavailable).
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own and reads nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc == 0 {
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    } else {
        0.0
    }
}
