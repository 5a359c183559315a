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
    /// A tensor operation of a host-side collective failed.
    #[error("collective: {0}")]
    Torch(String),
    /// Shards and results do not match.
    #[error("sharded generation: {0}")]
    Shard(String),
}

/// Runs `work(worker)` for every worker, worker 0 on the calling thread and the others on scoped threads, and
/// returns the results in worker order. An error or panic of one worker aborts `group` (so the others leave their
/// collectives); the error returned is that of the worker that failed first, not the ones its abort caused.
pub fn run_workers<T, E, F>(group: &Group, work: F) -> Result<Vec<T>, E>
where
    T: Send,
    E: Send + std::fmt::Display + From<DistError>,
    F: Fn(usize) -> Result<T, E> + Sync,
{
    let guarded = |worker: usize| {
        let r = work(worker);
        if let Err(e) = &r {
            group.fail(worker, &format!("worker {worker}: {e}"));
        }
        r
    };
    let results: Vec<Result<T, E>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..group.workers()).map(|w| s.spawn(move || guarded(w))).collect();
        let first = guarded(0);
        let mut all = vec![first];
        for (k, h) in handles.into_iter().enumerate() {
            all.push(h.join().unwrap_or_else(|_| {
                let why = format!("worker {} panicked", k + 1);
                group.fail(k + 1, &why);
                Err(DistError::Aborted(why).into())
            }));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

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
            group.barrier()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "collective: bad batch");
    }
}
