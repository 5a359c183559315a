//! The workers of one data-parallel job and their collectives. Every collective starts with a host barrier that a
//! failing worker can abort, so one worker's error (a bad batch, out of memory) ends the others with an error
//! instead of leaving them waiting in a collective forever. The reduction itself is NCCL between distinct CUDA
//! devices, and a host-side sum otherwise (CPU workers, or workers sharing a device), which adds the workers'
//! tensors in worker order so every worker gets bit-identical results.
//!
//! A worker that never reaches a collective (stuck, or gone without failing the group) would leave the others
//! waiting forever, so every wait has a timeout ([`DEFAULT_COLLECTIVE_TIMEOUT`], `STASC_COLLECTIVE_TIMEOUT_S`)
//! whose error names the workers that did not arrive.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tch::{Device, Tensor};

use super::nccl::Communicators;
use super::DistError;

/// How long a worker waits for the others at a collective when `STASC_COLLECTIVE_TIMEOUT_S` is not set: longer
/// than any step or checkpoint save between two collectives, as PyTorch's default process-group timeout is.
pub const DEFAULT_COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The environment variable that overrides [`DEFAULT_COLLECTIVE_TIMEOUT`], in seconds.
pub const COLLECTIVE_TIMEOUT_VAR: &str = "STASC_COLLECTIVE_TIMEOUT_S";

struct State {
    /// Which workers have reached the current barrier.
    arrived: Vec<bool>,
    generation: u64,
    aborted: Option<String>,
    /// The worker whose failure aborted the group, when a worker did.
    failed_worker: Option<usize>,
    /// Host reduction: each worker's contribution, in worker order.
    slots: Vec<Option<Tensor>>,
    /// Each worker's values in [`Group::exchange`].
    exchanged: Vec<Vec<u64>>,
}

/// A fixed set of workers (threads), one per device, that meet in collectives.
pub struct Group {
    workers: usize,
    state: Mutex<State>,
    wake: Condvar,
    nccl: Option<Communicators>,
    timeout: Duration,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("workers", &self.workers)
            .field("nccl", &self.nccl.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How a group reduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// NCCL: every worker owns a distinct CUDA device.
    Nccl,
    /// Host-side sums (CPU workers, workers sharing a device, or a single worker).
    Host,
}

/// The transport for workers on `devices`: NCCL when there are several and they are distinct CUDA devices.
pub fn transport_for(devices: &[Device]) -> Transport {
    let distinct_cuda =
        devices.iter().all(|d| d.is_cuda()) && devices.iter().enumerate().all(|(k, d)| !devices[..k].contains(d));
    if devices.len() > 1 && distinct_cuda {
        Transport::Nccl
    } else {
        Transport::Host
    }
}

impl Group {
    /// A group for one worker per entry of `devices`, with `transport` and the collective timeout of the
    /// environment ([`collective_timeout`]).
    pub fn new(devices: &[Device], transport: Transport) -> Result<Self, DistError> {
        let nccl = match transport {
            Transport::Host => None,
            Transport::Nccl => {
                let ordinals: Result<Vec<usize>, DistError> = devices
                    .iter()
                    .map(|d| match d {
                        Device::Cuda(i) => Ok(*i),
                        other => Err(DistError::Nccl(format!("NCCL needs CUDA devices, got {other:?}"))),
                    })
                    .collect();
                Some(Communicators::init_all(&ordinals?)?)
            }
        };
        Ok(Group {
            workers: devices.len(),
            state: Mutex::new(State {
                arrived: vec![false; devices.len()],
                generation: 0,
                aborted: None,
                failed_worker: None,
                slots: (0..devices.len()).map(|_| None).collect(),
                exchanged: vec![Vec::new(); devices.len()],
            }),
            wake: Condvar::new(),
            nccl,
            timeout: collective_timeout()?,
        })
    }

    /// The same group with another collective timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// How this group reduces.
    pub fn transport(&self) -> Transport {
        if self.nccl.is_some() {
            Transport::Nccl
        } else {
            Transport::Host
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends every current and future wait of the group with an error naming `why` (the first reason wins).
    pub fn abort(&self, why: &str) {
        let mut s = self.lock();
        if s.aborted.is_none() {
            s.aborted = Some(why.to_string());
        }
        self.wake.notify_all();
    }

    /// Records that `worker` failed (the first failure is remembered) and aborts the group with `why`.
    pub fn fail(&self, worker: usize, why: &str) {
        {
            let mut s = self.lock();
            if s.aborted.is_none() {
                s.failed_worker = Some(worker);
            }
        }
        self.abort(why);
    }

    /// The worker whose failure aborted the group first, if any.
    pub fn failed_worker(&self) -> Option<usize> {
        self.lock().failed_worker
    }

    /// Worker `worker` waits until every worker arrived. Fails when the group was aborted, or when a worker has not
    /// arrived within the group's timeout (the error names it, and the group is aborted so the others stop too).
    pub fn barrier(&self, worker: usize) -> Result<(), DistError> {
        let mut s = self.lock();
        if let Some(why) = &s.aborted {
            return Err(DistError::Aborted(why.clone()));
        }
        let generation = s.generation;
        s.arrived[worker] = true;
        if s.arrived.iter().all(|&a| a) {
            s.arrived.iter_mut().for_each(|a| *a = false);
            s.generation += 1;
            self.wake.notify_all();
            return Ok(());
        }
        // A limit too far away to represent is no limit.
        let deadline = Instant::now().checked_add(self.timeout);
        while s.generation == generation && s.aborted.is_none() {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                let missing: Vec<String> =
                    s.arrived.iter().enumerate().filter(|(_, &a)| !a).map(|(k, _)| k.to_string()).collect();
                let why = format!(
                    "worker {} did not reach a collective within {} s (worker {worker} waited; {COLLECTIVE_TIMEOUT_VAR} \
                     sets the limit)",
                    missing.join(", "),
                    self.timeout.as_secs_f64()
                );
                s.failed_worker = Some(worker);
                s.aborted = Some(why.clone());
                self.wake.notify_all();
                // Said at once: a worker that never returns also keeps the process from reporting the error.
                eprintln!("stasc: {why}");
                return Err(DistError::Timeout(why));
            }
            s = match left {
                Some(left) => self.wake.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0,
                None => self.wake.wait(s).unwrap_or_else(|p| p.into_inner()),
            };
        }
        match (&s.aborted, s.generation == generation) {
            (Some(why), true) => Err(DistError::Aborted(why.clone())),
            _ => Ok(()),
        }
    }

    /// Sums worker `worker`'s `t` with every other worker's, in place (all call it with same-shaped tensors).
    pub fn all_reduce_sum(&self, worker: usize, t: &Tensor) -> Result<(), DistError> {
        self.collective(worker, |c| c.all_reduce_sum(worker, t), || self.host_reduce(worker, t, None))
    }

    /// Sums `t` over the workers into worker `worker`'s own part of it: part `worker` of `workers()` equal parts
    /// (their element count must divide evenly). The other parts are left unspecified: NCCL leaves them as they
    /// were, the host sum fills them too.
    pub fn reduce_scatter_sum(&self, worker: usize, t: &Tensor) -> Result<(), DistError> {
        self.check_parts(t)?;
        self.collective(worker, |c| c.reduce_scatter_sum(worker, t), || self.host_reduce(worker, t, None))
    }

    /// Copies every worker's own part of `t` (part k of `workers()` equal parts from worker k) into every
    /// worker's `t`.
    pub fn all_gather(&self, worker: usize, t: &Tensor) -> Result<(), DistError> {
        self.check_parts(t)?;
        self.collective(worker, |c| c.all_gather(worker, t), || self.host_gather(worker, t))
    }

    /// Copies worker `root`'s `t` into every worker's `t`.
    pub fn broadcast(&self, worker: usize, t: &Tensor, root: usize) -> Result<(), DistError> {
        self.collective(worker, |c| c.broadcast(worker, t, root), || self.host_reduce(worker, t, Some(root)))
    }

    /// Sums `t` over the workers in place, as [`Group::all_reduce_sum`], while the calling thread's current stream
    /// is being recorded into a CUDA graph: NCCL only, and without the host barrier, since the recording runs
    /// nothing (the barrier belongs to the runs, and a graph's replays run only when every worker replays, see
    /// [`Group::all_agree`]).
    pub fn all_reduce_sum_in_graph(&self, worker: usize, t: &Tensor) -> Result<(), DistError> {
        self.in_graph(|c| c.all_reduce_sum(worker, t))
    }

    /// [`Group::reduce_scatter_sum`] while a CUDA graph is recorded, as [`Group::all_reduce_sum_in_graph`].
    pub fn reduce_scatter_sum_in_graph(&self, worker: usize, t: &Tensor) -> Result<(), DistError> {
        self.check_parts(t)?;
        self.in_graph(|c| c.reduce_scatter_sum(worker, t))
    }

    fn in_graph(&self, nccl: impl FnOnce(&Communicators) -> Result<(), DistError>) -> Result<(), DistError> {
        match (&self.nccl, self.workers) {
            (_, 1) => Ok(()),
            (Some(comms), _) => nccl(comms),
            (None, _) => Err(DistError::Nccl("collectives recorded in a CUDA graph need NCCL".into())),
        }
    }

    /// Every worker's `values`, in worker order, to every worker: a host collective for small facts every worker
    /// must know alike before deciding something together.
    pub fn exchange(&self, worker: usize, values: &[u64]) -> Result<Vec<Vec<u64>>, DistError> {
        if self.workers == 1 {
            return Ok(vec![values.to_vec()]);
        }
        self.lock().exchanged[worker] = values.to_vec();
        self.barrier(worker)?;
        let all = self.lock().exchanged.clone();
        // Everyone has read every worker's values before any is replaced.
        self.barrier(worker)?;
        Ok(all)
    }

    /// Whether `yes` holds for every worker (each says its own; all get the same answer).
    pub fn all_agree(&self, worker: usize, yes: bool) -> Result<bool, DistError> {
        Ok(self.exchange(worker, &[yes as u64])?.iter().all(|v| v == &[1]))
    }

    /// One collective: nothing for a single worker, else the barrier, then `nccl` or `host` by transport.
    fn collective(
        &self,
        worker: usize,
        nccl: impl FnOnce(&Communicators) -> Result<(), DistError>,
        host: impl FnOnce() -> Result<(), DistError>,
    ) -> Result<(), DistError> {
        if self.workers == 1 {
            return Ok(());
        }
        self.barrier(worker)?;
        match &self.nccl {
            Some(comms) => nccl(comms),
            None => host(),
        }
    }

    fn check_parts(&self, t: &Tensor) -> Result<(), DistError> {
        if t.dim() != 1 || !t.numel().is_multiple_of(self.workers) {
            return Err(DistError::Torch(format!(
                "a tensor of shape {:?} does not split in {} equal parts",
                t.size(),
                self.workers
            )));
        }
        Ok(())
    }

    /// Host collective: every worker deposits a copy, then each computes the sum (or takes `root`'s copy) in worker
    /// order on its own device, then every worker takes its deposit back.
    fn host_reduce(&self, worker: usize, t: &Tensor, root: Option<usize>) -> Result<(), DistError> {
        let torch = |what: &'static str| move |e: tch::TchError| DistError::Torch(format!("{what}: {e}"));
        let deposit = t.f_detach_copy().map_err(torch("copying a contribution"))?;
        self.lock().slots[worker] = Some(deposit);
        self.barrier(worker)?;
        let contributions: Vec<Tensor> = {
            let s = self.lock();
            let pick: Vec<usize> = match root {
                Some(r) => vec![r],
                None => (0..self.workers).collect(),
            };
            pick.iter().map(|&k| s.slots[k].as_ref().map(Tensor::shallow_clone)).collect::<Option<Vec<_>>>()
        }
        .ok_or_else(|| DistError::Aborted("a worker left a collective early".into()))?;
        let result = (|| -> Result<Tensor, DistError> {
            let device = t.device();
            let mut acc = contributions[0].f_to_device(device).map_err(torch("moving a contribution"))?;
            for c in &contributions[1..] {
                acc =
                    acc.f_add(&c.f_to_device(device).map_err(torch("moving a contribution"))?).map_err(torch("sum"))?;
            }
            Ok(acc)
        })();
        drop(contributions);
        // Everyone has read every deposit before any is taken back.
        let waited = self.barrier(worker);
        self.lock().slots[worker] = None;
        waited?;
        let mut t = t.shallow_clone();
        t.f_copy_(&result?).map_err(torch("writing the result"))?;
        Ok(())
    }
}

impl Group {
    /// Host all-gather: every worker deposits a copy of its own part, then each copies every part into its `t`,
    /// then every worker takes its deposit back.
    fn host_gather(&self, worker: usize, t: &Tensor) -> Result<(), DistError> {
        let torch = |what: &'static str| move |e: tch::TchError| DistError::Torch(format!("{what}: {e}"));
        let part = (t.numel() / self.workers) as i64;
        let own = t.f_narrow(0, worker as i64 * part, part).and_then(|p| p.f_detach_copy());
        self.lock().slots[worker] = Some(own.map_err(torch("copying a part"))?);
        self.barrier(worker)?;
        let parts: Option<Vec<Tensor>> = {
            let s = self.lock();
            s.slots.iter().map(|p| p.as_ref().map(Tensor::shallow_clone)).collect()
        };
        let copied = match parts {
            None => Err(DistError::Aborted("a worker left a collective early".into())),
            Some(parts) => parts.iter().enumerate().filter(|(k, _)| *k != worker).try_for_each(|(k, p)| {
                let mut dst = t.f_narrow(0, k as i64 * part, part).map_err(torch("a part"))?;
                dst.f_copy_(p).map(|_| ()).map_err(torch("writing a part"))
            }),
        };
        // Everyone has read every deposit before any is taken back.
        let waited = self.barrier(worker);
        self.lock().slots[worker] = None;
        waited?;
        copied
    }
}

/// The collective timeout: `STASC_COLLECTIVE_TIMEOUT_S` when set, else [`DEFAULT_COLLECTIVE_TIMEOUT`].
pub fn collective_timeout() -> Result<Duration, DistError> {
    parse_timeout(std::env::var(COLLECTIVE_TIMEOUT_VAR).ok().as_deref())
}

/// The timeout a value of `STASC_COLLECTIVE_TIMEOUT_S` gives (`None`: unset).
fn parse_timeout(value: Option<&str>) -> Result<Duration, DistError> {
    let Some(value) = value else {
        return Ok(DEFAULT_COLLECTIVE_TIMEOUT);
    };
    let seconds = value.trim().parse::<f64>().ok().filter(|s| *s > 0.0);
    seconds.and_then(|s| Duration::try_from_secs_f64(s).ok()).ok_or_else(|| {
        DistError::Topology(format!("{COLLECTIVE_TIMEOUT_VAR}={value:?}: expected a positive number of seconds"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn workers_agree_only_when_every_one_says_yes_round_after_round() {
        let group = Group::new(&[Device::Cpu; 3], Transport::Host).unwrap();
        // Round r: worker w says yes unless r == w; round 3 everyone says yes. Rounds follow each other at once,
        // so a vote cast for the next round must not change the answer another worker reads for this one.
        let answers: Vec<Vec<bool>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|w| {
                    let group = &group;
                    s.spawn(move || (0..4).map(|r| group.all_agree(w, r != w).unwrap()).collect::<Vec<bool>>())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for a in answers {
            assert_eq!(a, vec![false, false, false, true]);
        }
        // Each worker gets every worker's values, in worker order, whatever their lengths.
        let seen: Vec<Vec<Vec<u64>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|w| {
                    let group = &group;
                    s.spawn(move || group.exchange(w, &vec![w as u64 * 10; w + 1]).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for all in seen {
            assert_eq!(all, vec![vec![0], vec![10, 10], vec![20, 20, 20]]);
        }
        let single = Group::new(&[Device::Cpu], Transport::Host).unwrap();
        assert!(single.all_agree(0, true).unwrap() && !single.all_agree(0, false).unwrap());
        // Collectives recorded in a graph need NCCL; a host group says so instead of summing on the host.
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        let err = group.all_reduce_sum_in_graph(0, &t).unwrap_err().to_string();
        assert!(err.contains("need NCCL"), "{err}");
    }

    #[test]
    fn host_all_reduce_sums_in_worker_order_and_broadcast_copies_the_root() {
        let group = Group::new(&[Device::Cpu; 3], Transport::Host).unwrap();
        let results: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|w| {
                    let group = &group;
                    s.spawn(move || {
                        let t = Tensor::from_slice(&[w as f32, 1.0, 0.5 * w as f32]);
                        group.all_reduce_sum(w, &t).unwrap();
                        let b = Tensor::from_slice(&[10.0 * w as f32 + 1.0]);
                        group.broadcast(w, &b, 2).unwrap();
                        (Vec::<f32>::try_from(&t).unwrap(), Vec::<f32>::try_from(&b).unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sum, b) in results {
            assert_eq!(sum, vec![3.0, 3.0, 1.5]);
            assert_eq!(b, vec![21.0]);
        }
    }

    #[test]
    fn host_reduce_scatter_sums_each_part_and_all_gather_copies_each_workers_part() {
        let group = Group::new(&[Device::Cpu; 2], Transport::Host).unwrap();
        let results: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|w| {
                    let group = &group;
                    s.spawn(move || {
                        let x = w as f32;
                        let t = Tensor::from_slice(&[x, 1.0, 2.0 * x, 3.0]);
                        group.reduce_scatter_sum(w, &t).unwrap();
                        // Worker w's part is elements 2w and 2w + 1.
                        let summed = Vec::<f32>::try_from(&t.narrow(0, 2 * w as i64, 2)).unwrap();
                        let g = Tensor::from_slice(&[10.0 + x, 20.0 + x, 30.0 + x, 40.0 + x]);
                        group.all_gather(w, &g).unwrap();
                        (summed, Vec::<f32>::try_from(&g).unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results[0].0, vec![1.0, 2.0]);
        assert_eq!(results[1].0, vec![2.0, 6.0]);
        for (_, gathered) in &results {
            assert_eq!(gathered, &vec![10.0, 20.0, 31.0, 41.0]);
        }
        let odd = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        assert!(group.all_gather(0, &odd).unwrap_err().to_string().contains("does not split in 2 equal parts"));
    }

    #[test]
    fn an_aborting_worker_releases_the_others_with_its_reason() {
        let group = Group::new(&[Device::Cpu; 2], Transport::Host).unwrap();
        let errors: Vec<String> = std::thread::scope(|s| {
            let waiting = s.spawn(|| {
                let t = Tensor::zeros([2], (Kind::Float, Device::Cpu));
                group.all_reduce_sum(0, &t).unwrap_err().to_string()
            });
            let failing = s.spawn(|| {
                group.abort("worker 1 (cuda:1): out of memory");
                group.barrier(1).unwrap_err().to_string()
            });
            vec![waiting.join().unwrap(), failing.join().unwrap()]
        });
        for e in errors {
            assert_eq!(e, "another worker failed: worker 1 (cuda:1): out of memory");
        }
    }

    #[test]
    fn the_timeout_variable_takes_positive_seconds() {
        for (value, expected) in [("90", Some(90.0)), (" 0.5 ", Some(0.5)), ("0", None), ("-3", None), ("soon", None)] {
            let got = parse_timeout(Some(value));
            assert_eq!(got.as_ref().ok().map(Duration::as_secs_f64), expected, "{value:?}: {got:?}");
        }
        let err = parse_timeout(Some("1e300")).unwrap_err().to_string();
        assert_eq!(err, "STASC_COLLECTIVE_TIMEOUT_S=\"1e300\": expected a positive number of seconds");
        assert_eq!(parse_timeout(None).unwrap(), DEFAULT_COLLECTIVE_TIMEOUT);
    }

    #[test]
    fn nccl_only_between_distinct_cuda_devices() {
        assert_eq!(transport_for(&[Device::Cuda(0), Device::Cuda(1)]), Transport::Nccl);
        assert_eq!(transport_for(&[Device::Cuda(0), Device::Cuda(0)]), Transport::Host);
        assert_eq!(transport_for(&[Device::Cuda(0)]), Transport::Host);
        assert_eq!(transport_for(&[Device::Cpu, Device::Cpu]), Transport::Host);
    }

    #[test]
    fn repeated_collectives_do_not_mix_rounds() {
        let group = Group::new(&[Device::Cpu; 2], Transport::Host).unwrap();
        let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|w| {
                    let group = &group;
                    s.spawn(move || {
                        (0..50)
                            .map(|round| {
                                let t = Tensor::from_slice(&[(round * 10 + w) as f32]);
                                group.all_reduce_sum(w, &t).unwrap();
                                t.double_value(&[0]) as f32
                            })
                            .collect::<Vec<f32>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let expected: Vec<f32> = (0..50).map(|r| (20 * r + 1) as f32).collect();
        assert_eq!(sums, vec![expected.clone(), expected]);
    }
}
