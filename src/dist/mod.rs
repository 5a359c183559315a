//! Several devices of one host in one process: which devices and how many data-parallel ranks a run uses
//! ([`topology`]), how generation work is split across devices and merged back ([`shard`]), the collectives the
//! data-parallel trainer needs ([`group`]: NCCL between GPUs, [`nccl`]), and the NVLink multicast guards every
//! environment stasc starts keeps ([`guard`]).
//!
//! One worker thread per device, all in one process: the models, tokenizers and CUDA graphs stay per thread, the
//! loop's bookkeeping stays on the calling thread, and a world of one device is the same code with one worker.

pub mod group;
pub mod guard;
pub mod nccl;
pub mod shard;
pub mod topology;

pub use group::{transport_for, Group, Transport};
pub use topology::{device_name, DeviceAsk, Topology};

/// Why a multi-device step failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistError {
    /// The devices asked for cannot be used.
    #[error("{0}")]
    Topology(String),
    /// NCCL is missing or a call failed.
    #[error("NCCL: {0}")]
    Nccl(String),
    /// Another worker failed, so this one stopped.
    #[error("another worker failed: {0}")]
    Aborted(String),
    /// A worker panicked; the panic's message.
    #[error("{0}")]
    Panicked(String),
    /// A worker did not reach a collective in time.
    #[error("{0}")]
    Timeout(String),
    /// A tensor operation of a host-side collective failed.
    #[error("collective: {0}")]
    Torch(String),
    /// Shards and results do not match.
    #[error("sharded generation: {0}")]
    Shard(String),
}

/// Runs `work(worker)` for every worker, worker 0 on the calling thread and the others on scoped threads, and
/// returns the results in worker order. An error or panic of one worker aborts `group` at once (so the others leave
/// their collectives instead of waiting for a worker that is gone); a panic becomes that worker's error. The error
/// returned is that of the worker that failed first, not the ones its abort caused.
pub fn run_workers<T, E, F>(group: &Group, work: F) -> Result<Vec<T>, E>
where
    T: Send,
    E: Send + std::fmt::Display + From<DistError>,
    F: Fn(usize) -> Result<T, E> + Sync,
{
    let guarded = |worker: usize| {
        // The closure only borrows what the other workers see through `group`, which stays usable after a panic.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(worker))) {
            Ok(Err(e)) => {
                group.fail(worker, &format!("worker {worker}: {e}"));
                Err(e)
            }
            Ok(ok) => ok,
            Err(payload) => {
                let why = panic_reason(worker, payload.as_ref());
                group.fail(worker, &why);
                Err(DistError::Panicked(why).into())
            }
        }
    };
    let results: Vec<Result<T, E>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..group.workers()).map(|w| s.spawn(move || guarded(w))).collect();
        let first = guarded(0);
        let mut all = vec![first];
        // Panics are caught inside `guarded`; one that escapes it is a bug of this function, passed on as such.
        all.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|payload| std::panic::resume_unwind(payload))));
        all
    });
    let first_failure = group.failed_worker();
    let mut out = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for (w, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => out.push(v),
            Err(e) => errors.push((w, e)),
        }
    }
    if errors.is_empty() {
        return Ok(out);
    }
    let pick = errors.iter().position(|(w, _)| Some(*w) == first_failure).unwrap_or(0);
    Err(errors.swap_remove(pick).1)
}

/// What a worker's panic said, as one line.
fn panic_reason(worker: usize, payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string());
    format!("worker {worker} panicked: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tch::{Device, Tensor};

    #[test]
    fn workers_run_in_parallel_and_a_failure_is_reported_not_the_echo() {
        let group = Group::new(&[Device::Cpu; 3], Transport::Host).unwrap();
        let ok: Vec<usize> = run_workers(&group, |w| Ok::<_, DistError>(w * 10)).unwrap();
        assert_eq!(ok, vec![0, 10, 20]);
        let group = Group::new(&[Device::Cpu; 3], Transport::Host).unwrap();
        let e = run_workers(&group, |w| -> Result<(), DistError> {
            if w == 2 {
                return Err(DistError::Torch("bad batch".into()));
            }
            group.barrier(w)
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "collective: bad batch");
    }

    #[test]
    fn a_worker_panicking_mid_step_fails_the_group_at_once() {
        // Without the panic reaching the group, worker 0 would wait in its second step's all-reduce until the
        // (long) timeout and report a timeout instead of the panic.
        for panicking in [0, 2] {
            let group = Group::new(&[Device::Cpu; 3], Transport::Host).unwrap().with_timeout(Duration::from_secs(600));
            let e = run_workers(&group, |w| -> Result<(), DistError> {
                for step in 0..3 {
                    let grad = Tensor::from_slice(&[w as f32 + step as f32]);
                    if step == 1 && w == panicking {
                        panic!("bad micro-batch in step {step}");
                    }
                    group.all_reduce_sum(w, &grad)?;
                }
                Ok(())
            })
            .unwrap_err();
            assert_eq!(e.to_string(), format!("worker {panicking} panicked: bad micro-batch in step 1"));
            assert_eq!(group.failed_worker(), Some(panicking));
        }
    }

    #[test]
    fn a_worker_that_does_not_arrive_is_named_after_the_timeout() {
        let group = Group::new(&[Device::Cpu; 2], Transport::Host).unwrap().with_timeout(Duration::from_millis(50));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = std::sync::Mutex::new(rx);
        let e = run_workers(&group, |w| -> Result<(), DistError> {
            if w == 1 {
                // Late: it arrives only after worker 0's wait has ended.
                rx.lock().unwrap().recv().unwrap();
                return group.barrier(w);
            }
            let r = group.barrier(w);
            tx.send(()).unwrap();
            r
        })
        .unwrap_err();
        let message = e.to_string();
        assert!(message.starts_with("worker 1 did not reach a collective within 0.05 s (worker 0 waited"), "{message}");
        assert!(message.contains("STASC_COLLECTIVE_TIMEOUT_S"), "{message}");
    }
}
