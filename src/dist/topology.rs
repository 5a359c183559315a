//! Which devices a run uses and how many data-parallel ranks it has. The ranks are accelerate's processes: the
//! global batch of an optimiser step is `per_device_train_batch_size x ranks x gradient_accumulation_steps`, as in
//! the reference. Each device gets one worker thread; when fewer devices than ranks are visible, ranks share
//! devices (a device runs its ranks' micro-batches one after another), so the arithmetic of a step, and with it the
//! loss, does not depend on how many GPUs the machine has.

use tch::Device;

use super::DistError;
use crate::config::RunDevices;
use crate::model::ModelDevice;

/// The devices of a run and its data-parallel rank count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Data-parallel ranks (accelerate's `num_processes`). Called `data_parallel_ranks` from the resolved config
    /// (`execution.data_parallel_ranks`) through [`DeviceAsk`] to the trainer's `Hyperparameters`: it counts ranks,
    /// not devices (ranks may share a device), and "ranks" alone could be any group's.
    pub data_parallel_ranks: usize,
    /// One worker per device; rank r runs on `devices[r % devices.len()]`.
    pub devices: Vec<Device>,
}

impl Topology {
    /// One rank on one device (what every single-device caller uses).
    pub fn single(device: Device) -> Self {
        Topology { data_parallel_ranks: 1, devices: vec![device] }
    }

    /// `data_parallel_ranks` ranks over `devices` (at least one of each).
    pub fn new(data_parallel_ranks: usize, devices: Vec<Device>) -> Result<Self, DistError> {
        if data_parallel_ranks == 0 || devices.is_empty() {
            return Err(DistError::Topology(format!(
                "a run needs at least one rank and one device, got {data_parallel_ranks} rank(s) on {} device(s)",
                devices.len()
            )));
        }
        Ok(Topology { data_parallel_ranks, devices })
    }

    /// The worker (index into `devices`) that runs rank `rank`.
    pub fn worker_of_rank(&self, rank: usize) -> usize {
        rank % self.devices.len()
    }

    /// For an optimiser step of `micro_batches` micro-batches: the micro-batch indices each worker runs, in order.
    /// Micro-batch j belongs to rank `j % ranks` (accelerate hands a process every ranks-th batch), and a rank's
    /// micro-batches run on its worker.
    pub fn step_assignment(&self, micro_batches: usize) -> Vec<Vec<usize>> {
        let mut per_worker = vec![Vec::new(); self.devices.len()];
        for j in 0..micro_batches {
            per_worker[self.worker_of_rank(j % self.data_parallel_ranks)].push(j);
        }
        per_worker
    }

    /// A one-line description, e.g. `2 ranks on cuda:0, cuda:1`.
    pub fn describe(&self) -> String {
        let devices: Vec<String> = self.devices.iter().map(|d| device_name(*d)).collect();
        let ranks = match self.data_parallel_ranks {
            1 => "1 rank".to_string(),
            n => format!("{n} ranks"),
        };
        format!("{ranks} on {}", devices.join(", "))
    }
}

/// `cpu` or `cuda:N`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".to_string(),
        Device::Vulkan => "vulkan".to_string(),
        Device::Cpu => "cpu".to_string(),
    }
}

/// The run devices of a command-line `--device`: the one place a [`ModelDevice`] becomes [`RunDevices`], and with it
/// the one place the two meanings of `cuda` meet. In stasc_config.yaml, `device: cuda` is every visible GPU: a run
/// spreads accelerate's ranks over them. On the command line, `--device cuda` is GPU 0, as for every command that
/// loads one model (`stasc generate`, the benchmarks); `stasc train` keeps that meaning rather than make one flag
/// mean two things, and changing what users already type would be worse than two documented meanings. `auto` is
/// auto in both: one rank per visible GPU when ranks are asked for.
impl From<ModelDevice> for RunDevices {
    fn from(device: ModelDevice) -> Self {
        match device {
            ModelDevice::Auto => RunDevices::Auto,
            ModelDevice::Cpu => RunDevices::Cpu,
            ModelDevice::Cuda(n) => RunDevices::Gpu(n),
        }
    }
}

/// What a run asks for: its devices and accelerate's `num_processes` and `gpu_ids`, with `source` naming the
/// accelerate file for messages.
#[derive(Debug, Clone, Copy)]
pub struct DeviceAsk<'a> {
    /// stasc_config's `device` (after accelerate's `use_cpu`), or a command line's `--device`.
    pub devices: RunDevices,
    /// Data-parallel ranks (accelerate's `num_processes`); `None` = one rank per usable device.
    pub data_parallel_ranks: Option<usize>,
    /// accelerate's `gpu_ids` (ordinals among the visible devices); `None` = all.
    pub gpu_ids: Option<&'a [usize]>,
    /// The accelerate file name (or `<default>`), for messages.
    pub source: &'a str,
}

/// Resolves `ask` against `visible_cuda` visible CUDA devices (`CUDA_VISIBLE_DEVICES` already applied by the
/// driver). Returns the topology and, when ranks must share devices, a one-line note saying so.
pub fn resolve(ask: &DeviceAsk<'_>, visible_cuda: usize) -> Result<(Topology, Option<String>), DistError> {
    let src = ask.source;
    let devices: Vec<Device> = match ask.devices {
        RunDevices::Cpu => vec![Device::Cpu],
        RunDevices::Auto if visible_cuda == 0 => vec![Device::Cpu],
        RunDevices::EveryGpu | RunDevices::Gpu(_) if visible_cuda == 0 => {
            return Err(DistError::Topology("device cuda was asked for but no CUDA device is visible".into()))
        }
        RunDevices::Gpu(n) if n >= visible_cuda => {
            return Err(DistError::Topology(format!(
                "device cuda:{n} was asked for but {visible_cuda} CUDA device(s) are visible"
            )))
        }
        RunDevices::Gpu(n) => vec![Device::Cuda(n)],
        RunDevices::Auto | RunDevices::EveryGpu => {
            let pool: Vec<usize> = match ask.gpu_ids {
                None => (0..visible_cuda).collect(),
                Some(ids) => {
                    if let Some(bad) = ids.iter().find(|&&i| i >= visible_cuda) {
                        return Err(DistError::Topology(format!(
                            "{src}: key 'gpu_ids' names GPU {bad} but {visible_cuda} CUDA device(s) are visible \
                             (ordinals count within CUDA_VISIBLE_DEVICES)"
                        )));
                    }
                    if let Some(dup) = ids.iter().enumerate().find(|(k, i)| ids[..*k].contains(i)) {
                        return Err(DistError::Topology(format!("{src}: key 'gpu_ids' names GPU {} twice", dup.1)));
                    }
                    if ids.is_empty() {
                        return Err(DistError::Topology(format!("{src}: key 'gpu_ids' names no GPU")));
                    }
                    ids.to_vec()
                }
            };
            let wanted = ask.data_parallel_ranks.unwrap_or(pool.len());
            pool.into_iter().take(wanted.max(1)).map(Device::Cuda).collect()
        }
    };
    let ranks = ask.data_parallel_ranks.unwrap_or(devices.len()).max(1);
    let topology = Topology::new(ranks, devices)?;
    let note = (topology.data_parallel_ranks > topology.devices.len()).then(|| {
        format!(
            "{src}: num_processes is {} but {} device(s) are used: ranks share devices (the same global batch and \
             loss as {} devices, more time per step)",
            topology.data_parallel_ranks,
            topology.devices.len(),
            topology.data_parallel_ranks
        )
    });
    Ok((topology, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(devices: RunDevices, ranks: Option<usize>, gpu_ids: Option<&[usize]>) -> DeviceAsk<'_> {
        DeviceAsk { devices, data_parallel_ranks: ranks, gpu_ids, source: "acc.yaml" }
    }

    #[test]
    fn reference_config_uses_two_gpus_when_two_are_visible() {
        let (t, note) = resolve(&ask(RunDevices::Auto, Some(2), None), 4).unwrap();
        assert_eq!(t, Topology { data_parallel_ranks: 2, devices: vec![Device::Cuda(0), Device::Cuda(1)] });
        assert_eq!(note, None);
        assert_eq!(t.describe(), "2 ranks on cuda:0, cuda:1");
    }

    #[test]
    fn ranks_share_devices_when_fewer_are_visible_and_say_so() {
        let (t, note) = resolve(&ask(RunDevices::EveryGpu, Some(2), None), 1).unwrap();
        assert_eq!(t, Topology { data_parallel_ranks: 2, devices: vec![Device::Cuda(0)] });
        assert!(note.unwrap().starts_with("acc.yaml: num_processes is 2 but 1 device(s) are used"));
        let (t, _) = resolve(&ask(RunDevices::Cpu, Some(2), None), 8).unwrap();
        assert_eq!(t, Topology { data_parallel_ranks: 2, devices: vec![Device::Cpu] });
        let (t, _) = resolve(&ask(RunDevices::Auto, Some(3), None), 0).unwrap();
        assert_eq!(t, Topology { data_parallel_ranks: 3, devices: vec![Device::Cpu] });
    }

    #[test]
    fn all_processes_means_every_usable_device() {
        let (t, _) = resolve(&ask(RunDevices::Auto, None, None), 3).unwrap();
        assert_eq!(t.data_parallel_ranks, 3);
        let (t, _) = resolve(&ask(RunDevices::Auto, None, Some(&[2, 0])), 3).unwrap();
        assert_eq!(t, Topology { data_parallel_ranks: 2, devices: vec![Device::Cuda(2), Device::Cuda(0)] });
        let (t, _) = resolve(&ask(RunDevices::Cpu, None, None), 3).unwrap();
        assert_eq!(t, Topology::single(Device::Cpu));
        let (t, _) = resolve(&ask(RunDevices::Gpu(1), None, None), 3).unwrap();
        assert_eq!(t, Topology::single(Device::Cuda(1)));
    }

    #[test]
    fn cuda_in_a_config_file_is_every_visible_gpu() {
        let devices: RunDevices = "cuda".parse().unwrap();
        let (t, _) = resolve(&ask(devices, None, None), 4).unwrap();
        assert_eq!(t.devices, (0..4).map(Device::Cuda).collect::<Vec<_>>());
        assert_eq!(t.data_parallel_ranks, 4);
    }

    #[test]
    fn cuda_on_the_command_line_is_gpu_0_alone() {
        let device: ModelDevice = "cuda".parse().unwrap();
        assert_eq!(RunDevices::from(device), RunDevices::Gpu(0));
        let (t, note) = resolve(&ask(RunDevices::from(device), Some(2), None), 4).unwrap();
        assert_eq!(t, Topology { data_parallel_ranks: 2, devices: vec![Device::Cuda(0)] });
        assert!(note.is_some(), "two ranks share GPU 0");
        assert_eq!(RunDevices::from(ModelDevice::Auto), RunDevices::Auto);
        assert_eq!(RunDevices::from(ModelDevice::Cpu), RunDevices::Cpu);
    }

    #[test]
    fn impossible_asks_are_one_line_errors() {
        let e = |a: DeviceAsk<'_>, visible| resolve(&a, visible).unwrap_err().to_string();
        assert_eq!(
            e(ask(RunDevices::Auto, Some(2), Some(&[0, 3])), 2),
            "acc.yaml: key 'gpu_ids' names GPU 3 but 2 CUDA device(s) are visible (ordinals count within \
             CUDA_VISIBLE_DEVICES)"
        );
        assert_eq!(e(ask(RunDevices::Auto, None, Some(&[1, 1])), 2), "acc.yaml: key 'gpu_ids' names GPU 1 twice");
        assert_eq!(
            e(ask(RunDevices::EveryGpu, None, None), 0),
            "device cuda was asked for but no CUDA device is visible"
        );
        assert_eq!(
            e(ask(RunDevices::Gpu(2), None, None), 2),
            "device cuda:2 was asked for but 2 CUDA device(s) are visible"
        );
    }

    #[test]
    fn micro_batches_go_to_ranks_round_robin_and_ranks_to_workers() {
        let two = Topology { data_parallel_ranks: 2, devices: vec![Device::Cuda(0), Device::Cuda(1)] };
        assert_eq!(two.step_assignment(5), vec![vec![0, 2, 4], vec![1, 3]]);
        let shared = Topology { data_parallel_ranks: 4, devices: vec![Device::Cuda(0), Device::Cuda(1)] };
        assert_eq!(shared.step_assignment(8), vec![vec![0, 2, 4, 6], vec![1, 3, 5, 7]]);
        let one = Topology { data_parallel_ranks: 2, devices: vec![Device::Cpu] };
        assert_eq!(one.step_assignment(3), vec![vec![0, 1, 2]]);
        assert_eq!(two.step_assignment(0), vec![Vec::<usize>::new(), vec![]]);
    }
}
