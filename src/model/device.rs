//! Where and in which precision a model runs: the `--device` (auto|cpu|cuda|cuda:N) and `--dtype` (auto|f32|bf16|f16)
//! choices, parsed from text and resolved against the machine (auto = the first CUDA device if there is one, then bf16
//! on CUDA and f32 on CPU).

use std::fmt;
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use super::error::ModelError;

/// The one device a model is loaded on (the command line's `--device`): `cuda` is CUDA device 0. A run's
/// stasc_config `device` is [`crate::config::RunDevices`] instead, where `cuda` is every visible GPU; the two meet
/// only in `crate::dist::topology` (`RunDevices::from`), which says why they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelDevice {
    /// CUDA device 0 when available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for ModelDevice {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ModelDevice::Auto),
            "cpu" => Ok(ModelDevice::Cpu),
            "cuda" => Ok(ModelDevice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(ModelDevice::Cuda)
                .ok_or_else(|| ModelError::Device(format!("device {other:?}: expected auto, cpu, cuda or cuda:N"))),
        }
    }
}

impl fmt::Display for ModelDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelDevice::Auto => write!(f, "auto"),
            ModelDevice::Cpu => write!(f, "cpu"),
            ModelDevice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<Device> for ModelDevice {
    fn from(device: Device) -> Self {
        match device {
            Device::Cuda(n) => ModelDevice::Cuda(n),
            _ => ModelDevice::Cpu,
        }
    }
}

impl ModelDevice {
    /// The concrete device; asking for a CUDA device that does not exist is an error.
    pub fn resolve(self) -> Result<Device, ModelError> {
        match self {
            ModelDevice::Auto => Ok(Device::cuda_if_available()),
            ModelDevice::Cpu => Ok(Device::Cpu),
            ModelDevice::Cuda(n) => {
                let count = tch::Cuda::device_count();
                if (n as i64) < count {
                    Ok(Device::Cuda(n))
                } else {
                    Err(ModelError::Device(format!(
                        "device cuda:{n} requested but {count} CUDA device(s) are available"
                    )))
                }
            }
        }
    }
}

/// The floating-point type the weights and activations use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtypeSpec {
    /// bf16 on CUDA, f32 on the CPU.
    #[default]
    Auto,
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl FromStr for DtypeSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DtypeSpec::Auto),
            "f32" | "float32" => Ok(DtypeSpec::F32),
            "bf16" | "bfloat16" => Ok(DtypeSpec::Bf16),
            "f16" | "float16" => Ok(DtypeSpec::F16),
            other => Err(ModelError::Device(format!("dtype {other:?}: expected auto, f32, bf16 or f16"))),
        }
    }
}

impl fmt::Display for DtypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DtypeSpec::Auto => "auto",
            DtypeSpec::F32 => "f32",
            DtypeSpec::Bf16 => "bf16",
            DtypeSpec::F16 => "f16",
        })
    }
}

impl DtypeSpec {
    /// The libtorch kind for a model on `device`.
    pub fn resolve(self, device: Device) -> Kind {
        match self {
            DtypeSpec::Auto if device.is_cuda() => Kind::BFloat16,
            DtypeSpec::Auto | DtypeSpec::F32 => Kind::Float,
            DtypeSpec::Bf16 => Kind::BFloat16,
            DtypeSpec::F16 => Kind::Half,
        }
    }
}

/// How to load a model: device, dtype and the longest sequence it will be run on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Where to run.
    pub device: ModelDevice,
    /// Which precision.
    pub dtype: DtypeSpec,
    /// Longest sequence (prompt + generated) to support; the model's own context when `None`. Smaller values keep
    /// the rotary tables and KV caches small.
    pub max_model_len: Option<i64>,
}

/// Returns the CUDA caching allocator's unused blocks to the driver, so memory a finished phase used (a generation
/// model dropped before fine-tuning, the trainer's optimiser state) is not kept reserved. A no-op without CUDA, or
/// when build.rs could not compile the CUDA shim (it warns then).
pub fn release_cuda_cache() {
    if crate::ffi::HAS_SHIM && tch::Cuda::is_available() {
        let _ = crate::ffi::empty_cache();
    }
}

/// The calling thread's current CUDA stream of `device` (null, the legacy default stream, on the CPU or without
/// the shim: libtorch queues its work there unless a stream was set).
pub fn current_cuda_stream(device: Device) -> *mut std::ffi::c_void {
    match device {
        Device::Cuda(i) => crate::ffi::current_raw_stream(i).unwrap_or(std::ptr::null_mut()),
        _ => std::ptr::null_mut(),
    }
}

/// Seeds the random generator that `device`'s kernels draw from (dropout masks), and only that one on CUDA, so
/// worker threads on different GPUs do not reseed each other. On the CPU (one generator per process) and without
/// the shim this is `torch.manual_seed`, which reseeds every device.
pub fn seed_device(device: Device, seed: i64) {
    if let Device::Cuda(i) = device {
        // A failure (bad ordinal, no shim) falls through to the global seed.
        if crate::ffi::manual_seed(i, seed as u64).is_ok() {
            return;
        }
    }
    tch::manual_seed(seed);
}

/// Makes `device` the calling thread's current CUDA device (a no-op for the CPU or without the shim). Worker
/// threads call it first: CUDA graph capture and stream lookups without a device index use the current device.
pub fn set_current_device(device: Device) {
    if let Device::Cuda(i) = device {
        let _ = crate::ffi::set_device(i);
    }
}

/// The CUDA caching allocator's configuration variable (read once, when CUDA starts).
pub const ALLOC_CONF_ENV: &str = "PYTORCH_CUDA_ALLOC_CONF";

/// Gives the CUDA caching allocator expandable segments unless the user configured it: generation allocates
/// differently shaped buffers for every batch of prompts, and with fixed-size segments the freed space fragments
/// until a capped process runs out of memory with much of it reserved but unusable (measured on an H200: under a
/// 35 GB cap a paper-scale iteration failed with 19 GB reserved and free; with expandable segments it ran under a
/// 21 GB cap at the same speed). Call it first thing in `main`, before CUDA starts.
pub fn default_allocator_config() {
    if std::env::var_os(ALLOC_CONF_ENV).is_none() {
        std::env::set_var(ALLOC_CONF_ENV, "expandable_segments:True");
    }
}

/// Environment switch for cuDNN's scaled-dot-product attention (off unless set to 1).
pub const SDPA_CUDNN_ENV: &str = "STASC_SDPA_CUDNN";

/// Keeps scaled-dot-product attention off cuDNN's kernel unless `STASC_SDPA_CUDNN=1`: libtorch builds a cuDNN
/// execution plan for every new shape, and packed training passes and prefill batches take a new shape almost every
/// call. On an H200 that planning cost ~1.2 ms of host time per attention call, 59 ms of a 170 ms training step at
/// the reference's settings, with the GPU idle (Kineto trace, `scripts/kernels/trace_host.py`); without it
/// `stasc bench train --realistic` trained at 31.0k instead of 24.5k tok/s (same call), and paper-scale sampling
/// stayed within 0.3% of its earlier figures (another call). Flash attention runs the same computation without planning. Call it once in `main`.
pub fn default_attention_backends() {
    let cudnn = crate::switch::env_flag(SDPA_CUDNN_ENV, false);
    if crate::ffi::HAS_SHIM {
        let _ = crate::ffi::sdp_use_cudnn(cudnn);
    }
}

/// Caps what this process's CUDA caching allocator may reserve on `device` at `fraction` of the card's memory
/// (1.0 lifts the cap). Past the cap the allocator returns its cached blocks to the driver and retries, and only
/// then fails with out-of-memory. A no-op for the CPU or without the shim; returns false when the cap could not be
/// set (a bad ordinal, or a fraction outside (0, 1]).
pub fn cap_cuda_memory(device: Device, fraction: f64) -> bool {
    match device {
        // setMemoryFraction checks the fraction and the ordinal.
        Device::Cuda(i) if crate::ffi::HAS_SHIM => crate::ffi::set_memory_fraction(fraction, i).is_ok(),
        _ => true,
    }
}

/// Free and total bytes of CUDA device `device` as the driver sees them (`cudaMemGetInfo`), or `None` for the CPU
/// or when the CUDA runtime cannot be found. Makes `device` the calling thread's current device.
pub fn cuda_memory_info(device: Device) -> Option<(u64, u64)> {
    let Device::Cuda(_) = device else { return None };
    set_current_device(device);
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: the CUDA runtime is already loaded by libtorch_cuda (opening it again returns a handle), and
    // cudaMemGetInfo(size_t*, size_t*) -> cudaError_t is called with two valid out-pointers.
    unsafe {
        let lib = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]
            .iter()
            .find_map(|n| libloading::Library::new(n).ok())?;
        let get: libloading::Symbol<MemGetInfo> = lib.get(b"cudaMemGetInfo\0").ok()?;
        let (mut free, mut total) = (0usize, 0usize);
        (get(&mut free, &mut total) == 0).then_some((free as u64, total as u64))
    }
}

/// Whether the linked libtorch is a CUDA build (true on a machine without a GPU too); NCCL comes with it.
pub fn libtorch_has_cuda() -> bool {
    // SAFETY: only opens (or finds already open) a library that libtorch itself links.
    unsafe { libloading::Library::new("libtorch_cuda.so").is_ok() }
}

/// Starts copying CUDA tensor `t` (as `kind`) to the host without blocking: libtorch pins the host tensor of a
/// non-blocking device-to-host copy, and the returned event, recorded after the copy on the calling thread's current
/// stream, says when it is done. `None` when the tensor is not on CUDA or the event cannot be made (the caller
/// copies synchronously).
pub fn start_host_copy(t: &Tensor, kind: Kind) -> Option<(Tensor, crate::ffi::driver::Event)> {
    let Device::Cuda(ordinal) = t.device() else { return None };
    let event = crate::ffi::driver::Event::new(ordinal).ok()?;
    let stream = crate::ffi::current_raw_stream(ordinal).ok().filter(|s| !s.is_null())?;
    let host = t.f_to_device_(Device::Cpu, kind, true, false).ok()?;
    // SAFETY: the calling thread's current stream on the event's device, from libtorch.
    unsafe { event.record(stream) }.ok()?;
    Some((host, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!("cuda:1".parse::<ModelDevice>().unwrap(), ModelDevice::Cuda(1));
        assert_eq!("cuda".parse::<ModelDevice>().unwrap(), ModelDevice::Cuda(0));
        assert!("gpu".parse::<ModelDevice>().unwrap_err().to_string().contains("cuda:N"));
        assert_eq!("bf16".parse::<DtypeSpec>().unwrap(), DtypeSpec::Bf16);
        assert_eq!(DtypeSpec::Auto.resolve(Device::Cpu), Kind::Float);
        assert_eq!(DtypeSpec::Auto.resolve(Device::Cuda(0)), Kind::BFloat16);
    }
}
