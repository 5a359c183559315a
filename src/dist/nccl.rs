//! NCCL through its C API. libtorch_cuda links libnccl.so.2, so the library is already in the process whenever
//! libtorch has CUDA; its functions are looked up once with `dlsym`. NCCL's C API is stable across 2.x releases,
//! and every call here takes pointers, integers and enums only.
//!
//! One process drives every device (one worker thread each), so the communicators come from one
//! `ncclCommInitAll` and each worker thread uses its own communicator: NCCL's one-device-per-thread model.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use libloading::Library;
use tch::{Device, Kind, Tensor};

use super::DistError;

type NcclComm = *mut c_void;
type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type CommInitAll = unsafe extern "C" fn(*mut NcclComm, c_int, *const c_int) -> c_int;
type CommDestroy = unsafe extern "C" fn(NcclComm) -> c_int;
type AllReduce = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, NcclComm, *mut c_void) -> c_int;
type Broadcast = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, NcclComm, *mut c_void) -> c_int;
type ReduceScatter =
    unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, NcclComm, *mut c_void) -> c_int;
type AllGather = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, NcclComm, *mut c_void) -> c_int;
type GetErrorString = unsafe extern "C" fn(c_int) -> *const c_char;

/// `ncclSum`.
const NCCL_SUM: c_int = 0;

/// NCCL settings stasc relies on, applied where the environment leaves them unset ([`default_settings`]):
/// `NCCL_GRAPH_REGISTER=0`, because a worker may replay a collective recorded in a CUDA graph while another runs
/// the same collective eagerly (crate::train::graphed), and NCCL's rule is that a collective's buffers are
/// registered on every rank or on none; graph registration would register only the recording worker's.
pub const DEFAULT_SETTINGS: [(&str, &str); 1] = [("NCCL_GRAPH_REGISTER", "0")];

/// Sets [`DEFAULT_SETTINGS`] that the process's environment leaves unset. Call it first thing in `main`, while the
/// process has one thread (NCCL reads them when a communicator is created).
pub fn default_settings() {
    for (name, value) in DEFAULT_SETTINGS {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
}

struct Api {
    _lib: Library,
    get_version: GetVersion,
    comm_init_all: CommInitAll,
    comm_destroy: CommDestroy,
    all_reduce: AllReduce,
    broadcast: Broadcast,
    reduce_scatter: ReduceScatter,
    all_gather: AllGather,
    get_error_string: GetErrorString,
}

fn load() -> Result<Api, String> {
    // SAFETY: opening libnccl only returns a handle to the copy libtorch_cuda already loaded (or loads the same
    // library); each symbol gets the signature of its declaration in nccl.h.
    unsafe {
        let lib = Library::new("libnccl.so.2")
            .or_else(|_| Library::new("libnccl.so"))
            .map_err(|e| format!("libnccl.so.2 is not loadable ({e}); libtorch without CUDA has no NCCL"))?;
        macro_rules! sym {
            ($name:literal) => {
                *lib.get(concat!($name, "\0").as_bytes()).map_err(|e| format!("{}: {e}", $name))?
            };
        }
        Ok(Api {
            get_version: sym!("ncclGetVersion"),
            comm_init_all: sym!("ncclCommInitAll"),
            comm_destroy: sym!("ncclCommDestroy"),
            all_reduce: sym!("ncclAllReduce"),
            broadcast: sym!("ncclBroadcast"),
            reduce_scatter: sym!("ncclReduceScatter"),
            all_gather: sym!("ncclAllGather"),
            get_error_string: sym!("ncclGetErrorString"),
            _lib: lib,
        })
    }
}

fn api() -> Result<&'static Api, DistError> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(|e| DistError::Nccl(e.clone()))
}

fn check(api: &Api, what: &str, code: c_int) -> Result<(), DistError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr((api.get_error_string)(code)) }.to_string_lossy().into_owned();
    Err(DistError::Nccl(format!("{what}: {text} (code {code})")))
}

/// The NCCL version in the process, e.g. 22807 for 2.28.7 (works without a GPU).
pub fn version() -> Result<i32, DistError> {
    let api = api()?;
    let mut v: c_int = 0;
    // SAFETY: writes one int.
    check(api, "ncclGetVersion", unsafe { (api.get_version)(&mut v) })?;
    Ok(v)
}

/// `ncclDataType_t` of a tensor kind.
fn data_type(kind: Kind) -> Result<c_int, DistError> {
    Ok(match kind {
        Kind::Int8 => 0,
        Kind::Uint8 => 1,
        Kind::Int => 2,
        Kind::Int64 => 4,
        Kind::Half => 6,
        Kind::Float => 7,
        Kind::Double => 8,
        Kind::BFloat16 => 9,
        other => return Err(DistError::Nccl(format!("no NCCL data type for {other:?}"))),
    })
}

/// A communicator handle; NCCL allows using it from any one thread at a time.
struct Comm(NcclComm);
// SAFETY: an NCCL communicator is an opaque heap object; each is used by one worker thread at a time.
unsafe impl Send for Comm {}
unsafe impl Sync for Comm {}

/// One communicator per device, all in this process.
pub struct Communicators {
    comms: Vec<Comm>,
    devices: Vec<i32>,
}

impl std::fmt::Debug for Communicators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicators").field("devices", &self.devices).finish()
    }
}

impl Communicators {
    /// Creates a clique over CUDA devices `devices` (ordinals among the visible ones); rank k is `devices[k]`.
    pub fn init_all(devices: &[usize]) -> Result<Self, DistError> {
        let api = api()?;
        let devices: Vec<i32> = devices.iter().map(|&d| d as i32).collect();
        let mut comms: Vec<NcclComm> = vec![std::ptr::null_mut(); devices.len()];
        // SAFETY: `comms` has room for one handle per device.
        check(api, "ncclCommInitAll", unsafe {
            (api.comm_init_all)(comms.as_mut_ptr(), devices.len() as c_int, devices.as_ptr())
        })?;
        Ok(Communicators { comms: comms.into_iter().map(Comm).collect(), devices })
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.comms.len()
    }

    /// Whether the clique is empty.
    pub fn is_empty(&self) -> bool {
        self.comms.is_empty()
    }

    fn comm_for(&self, rank: usize, t: &Tensor, what: &str) -> Result<NcclComm, DistError> {
        let Some(&device) = self.devices.get(rank) else {
            return Err(DistError::Nccl(format!("{what}: rank {rank} outside a clique of {}", self.devices.len())));
        };
        if t.device() != Device::Cuda(device as usize) || !t.is_contiguous() {
            return Err(DistError::Nccl(format!(
                "{what}: rank {rank} passed a tensor on {:?} (contiguous: {}), expected contiguous on cuda:{device}",
                t.device(),
                t.is_contiguous()
            )));
        }
        Ok(self.comms[rank].0)
    }

    /// Sums `t` in place over all ranks (every rank calls this with a tensor of the same shape and kind), on the
    /// calling thread's current stream of the tensor's device.
    pub fn all_reduce_sum(&self, rank: usize, t: &Tensor) -> Result<(), DistError> {
        let api = api()?;
        let comm = self.comm_for(rank, t, "ncclAllReduce")?;
        let ptr = t.data_ptr();
        let stream = crate::model::device::current_cuda_stream(t.device());
        // SAFETY: `ptr` is the contiguous storage of `t` (numel elements of its kind) on the communicator's device;
        // in-place operation is allowed by NCCL.
        check(api, "ncclAllReduce", unsafe {
            (api.all_reduce)(ptr, ptr, t.numel(), data_type(t.kind())?, NCCL_SUM, comm, stream)
        })
    }

    /// The byte offset and element count of rank `rank`'s part of `t` split in `len()` equal parts.
    fn part(&self, rank: usize, t: &Tensor, what: &str) -> Result<(usize, usize), DistError> {
        let (n, world) = (t.numel(), self.comms.len());
        if !n.is_multiple_of(world) {
            return Err(DistError::Nccl(format!("{what}: {n} elements do not split in {world} equal parts")));
        }
        Ok((rank * (n / world) * t.kind().elt_size_in_bytes(), n / world))
    }

    /// Sums `t` over all ranks into each rank's own part of it (part `rank` of `len()` equal parts), in place;
    /// the other parts are left unspecified. On the calling thread's current stream.
    pub fn reduce_scatter_sum(&self, rank: usize, t: &Tensor) -> Result<(), DistError> {
        let api = api()?;
        let comm = self.comm_for(rank, t, "ncclReduceScatter")?;
        let (offset, count) = self.part(rank, t, "ncclReduceScatter")?;
        let ptr = t.data_ptr();
        let stream = crate::model::device::current_cuda_stream(t.device());
        // SAFETY: `ptr` is the contiguous storage of `t` on the communicator's device; the receive buffer is this
        // rank's part of it, NCCL's in-place form (recvbuff = sendbuff + rank * recvcount).
        check(api, "ncclReduceScatter", unsafe {
            (api.reduce_scatter)(ptr, ptr.byte_add(offset), count, data_type(t.kind())?, NCCL_SUM, comm, stream)
        })
    }

    /// Copies every rank's own part of `t` (part `rank` of `len()` equal parts) into every rank's `t`, in place.
    pub fn all_gather(&self, rank: usize, t: &Tensor) -> Result<(), DistError> {
        let api = api()?;
        let comm = self.comm_for(rank, t, "ncclAllGather")?;
        let (offset, count) = self.part(rank, t, "ncclAllGather")?;
        let ptr = t.data_ptr();
        let stream = crate::model::device::current_cuda_stream(t.device());
        // SAFETY: as in reduce_scatter_sum; NCCL's in-place form (sendbuff = recvbuff + rank * sendcount).
        check(api, "ncclAllGather", unsafe {
            (api.all_gather)(ptr.byte_add(offset), ptr, count, data_type(t.kind())?, comm, stream)
        })
    }

    /// Copies rank `root`'s `t` into every rank's `t`.
    pub fn broadcast(&self, rank: usize, t: &Tensor, root: usize) -> Result<(), DistError> {
        let api = api()?;
        let comm = self.comm_for(rank, t, "ncclBroadcast")?;
        let ptr = t.data_ptr();
        let stream = crate::model::device::current_cuda_stream(t.device());
        // SAFETY: as in all_reduce_sum.
        check(api, "ncclBroadcast", unsafe {
            (api.broadcast)(ptr, ptr, t.numel(), data_type(t.kind())?, root as c_int, comm, stream)
        })
    }
}

impl Drop for Communicators {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            for c in &self.comms {
                // SAFETY: each handle came from ncclCommInitAll and is destroyed once, after the workers finished.
                unsafe {
                    (api.comm_destroy)(c.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nccl_is_in_the_process_whenever_libtorch_has_cuda() {
        // CPU-only libtorch builds have no NCCL; the pinned CUDA 13 build (setup.sh) does, GPU or not.
        let has_cuda_build = crate::model::device::libtorch_has_cuda();
        match version() {
            Ok(v) => assert!(v >= 20000, "NCCL version {v}"),
            Err(e) => assert!(!has_cuda_build, "libtorch_cuda is linked but NCCL is missing: {e}"),
        }
    }

    #[test]
    fn tensor_kinds_map_to_nccl_types() {
        assert_eq!(data_type(Kind::BFloat16).unwrap(), 9);
        assert_eq!(data_type(Kind::Float).unwrap(), 7);
        assert!(data_type(Kind::Bool).is_err());
    }
}
