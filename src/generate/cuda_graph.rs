//! CUDA graphs for the decode step, through libtorch's own `at::cuda::CUDAGraph` (which routes the captured
//! allocations to a private memory pool of the caching allocator). tch exposes no graph API, so the few C++ entry
//! points are looked up by their Itanium-mangled names in the libtorch libraries already loaded by the process and
//! called through the C ABI: every argument and result is a pointer, an integer, or a trivially copyable 16-byte
//! struct (`c10::cuda::CUDAStream`, `std::pair<u64, u64>`), which the x86-64 System V ABI passes identically from C
//! and C++. A missing symbol just disables graphs.
//!
//! Why: a decode step of a 1.5B model is ~600 small kernels; launched one by one the host, not the GPU, sets the pace
//! (tens of microseconds per launch on some machines). One graph replay launches them all at once.
//!
//! C++ exceptions cannot cross into Rust, so the calls that may throw are guarded: capture starts only on a fresh
//! non-default stream, and capture ends through `at::cuda::CUDAGraph::capture_end` only after the CUDA runtime
//! confirms the stream is still capturing; otherwise the capture is abandoned through the runtime's C API, the
//! half-made graph object is leaked on purpose (its destructor would throw) and the caller falls back to eager steps.

use std::ffi::c_void;
use std::sync::OnceLock;

use libloading::Library;

/// `c10::cuda::CUDAStream` by value: { c10::Device { int8 type, int8 index }, int64 id }.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct CudaStreamRepr {
    device_type: i8,
    device_index: i8,
    id: i64,
}

/// `at::cuda::MempoolId_t` = `std::pair<unsigned long long, unsigned long long>`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MempoolId(u64, u64);

type GraphCtor = unsafe extern "C" fn(*mut c_void, bool);
type GraphMethod = unsafe extern "C" fn(*mut c_void);
type GraphCaptureBegin = unsafe extern "C" fn(*mut c_void, MempoolId, i32);
type GraphPool = unsafe extern "C" fn(*mut c_void) -> MempoolId;
type StreamFromPool = unsafe extern "C" fn(bool, i8) -> CudaStreamRepr;
type CurrentStream = unsafe extern "C" fn(i8) -> CudaStreamRepr;
type SetCurrentStream = unsafe extern "C" fn(CudaStreamRepr);
type RawStream = unsafe extern "C" fn(*const CudaStreamRepr) -> *mut c_void;
type IsCapturing = unsafe extern "C" fn(*mut c_void, *mut i32) -> i32;
type EndCapture = unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> i32;
type StreamSync = unsafe extern "C" fn(*mut c_void) -> i32;

/// `cudaStreamCaptureModeThreadLocal`: other threads' unsafe CUDA calls do not break this capture.
const CAPTURE_MODE_THREAD_LOCAL: i32 = 1;
/// `cudaStreamCaptureStatusActive`.
const CAPTURE_STATUS_ACTIVE: i32 = 1;
/// Bytes reserved for an `at::cuda::CUDAGraph` object (about 150 in libtorch 2.11).
const GRAPH_OBJECT_BYTES: usize = 2048;

struct Api {
    _libs: Vec<Library>,
    ctor: GraphCtor,
    dtor: GraphMethod,
    capture_begin: GraphCaptureBegin,
    capture_end: GraphMethod,
    replay: GraphMethod,
    pool: GraphPool,
    stream_from_pool: StreamFromPool,
    current_stream: CurrentStream,
    set_current_stream: SetCurrentStream,
    raw_stream: RawStream,
    is_capturing: IsCapturing,
    end_capture: EndCapture,
    stream_sync: StreamSync,
}

fn load() -> Result<Api, String> {
    // SAFETY: these libraries are already loaded by libtorch; opening them again only returns handles, and every
    // symbol is given the signature of its C++ declaration in libtorch 2.11 (see the module docs for the ABI).
    unsafe {
        let open = |names: &[&str]| {
            names.iter().find_map(|n| Library::new(n).ok()).ok_or_else(|| format!("none of {names:?} is loadable"))
        };
        let torch_cuda = open(&["libtorch_cuda.so"])?;
        let c10_cuda = open(&["libc10_cuda.so"])?;
        let cudart = open(&["libcudart.so.13", "libcudart.so.12", "libcudart.so"])?;
        macro_rules! sym {
            ($lib:expr, $name:literal) => {
                *$lib.get(concat!($name, "\0").as_bytes()).map_err(|e| format!("{}: {e}", $name))?
            };
        }
        Ok(Api {
            ctor: sym!(torch_cuda, "_ZN2at4cuda9CUDAGraphC1Eb"),
            dtor: sym!(torch_cuda, "_ZN2at4cuda9CUDAGraphD1Ev"),
            capture_begin: sym!(torch_cuda, "_ZN2at4cuda9CUDAGraph13capture_beginESt4pairIyyE21cudaStreamCaptureMode"),
            capture_end: sym!(torch_cuda, "_ZN2at4cuda9CUDAGraph11capture_endEv"),
            replay: sym!(torch_cuda, "_ZN2at4cuda9CUDAGraph6replayEv"),
            pool: sym!(torch_cuda, "_ZN2at4cuda9CUDAGraph4poolEv"),
            stream_from_pool: sym!(c10_cuda, "_ZN3c104cuda17getStreamFromPoolEba"),
            current_stream: sym!(c10_cuda, "_ZN3c104cuda20getCurrentCUDAStreamEa"),
            set_current_stream: sym!(c10_cuda, "_ZN3c104cuda20setCurrentCUDAStreamENS0_10CUDAStreamE"),
            raw_stream: sym!(c10_cuda, "_ZNK3c104cuda10CUDAStream6streamEv"),
            is_capturing: sym!(cudart, "cudaStreamIsCapturing"),
            end_capture: sym!(cudart, "cudaStreamEndCapture"),
            stream_sync: sym!(cudart, "cudaStreamSynchronize"),
            _libs: vec![torch_cuda, c10_cuda, cudart],
        })
    }
}

fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// A captured CUDA graph, replayed on the current stream.
pub(crate) struct CudaGraph {
    object: Box<[u128]>,
    api: &'static Api,
}

/// Why a capture did not produce a graph.
pub(crate) enum CaptureError<E> {
    /// The warm-up run of the work failed (a real error: nothing was recorded).
    Work(E),
    /// Recording failed (the work's error, if it returned one, and a description); the recorded copy never ran, so
    /// without a warm-up the work is still to be done.
    Recording(Option<E>, String),
}

/// A non-default CUDA stream of one device on which graphs are captured (the same one for every capture of a
/// generate call, so lazily created per-stream resources such as cuBLAS workspaces exist after the first warm-up).
pub(crate) struct CaptureStream {
    api: &'static Api,
    side: CudaStreamRepr,
}

impl CaptureStream {
    /// Takes a stream from libtorch's pool for CUDA device `device`.
    pub(crate) fn new(device: usize) -> Result<Self, String> {
        let api = api()?;
        // SAFETY: ABI as described in the module docs.
        let side = unsafe { (api.stream_from_pool)(false, device as i8) };
        Ok(CaptureStream { api, side })
    }

    /// Records `work` into a graph on this stream, sharing the memory pool `pool` (a previous graph's) when given.
    /// With `warm_up`, `work` first runs once for real on the stream (lazy initialisation must not be captured);
    /// without, the new graph is replayed once instead. Either way the work is done exactly once.
    pub(crate) fn capture<E>(
        &self,
        pool: Option<MempoolId>,
        warm_up: bool,
        mut work: impl FnMut() -> Result<(), E>,
    ) -> Result<CudaGraph, CaptureError<E>> {
        let api = self.api;
        // Stream (not device) synchronisation: another worker thread may be capturing on this device, and a device
        // synchronisation would break its capture.
        let sync = |stream: &CudaStreamRepr| {
            // SAFETY: ABI as described in the module docs; the stream handle is live.
            unsafe { (api.stream_sync)((api.raw_stream)(stream)) }
        };
        // SAFETY: ABI as described in the module docs; the object buffer outlives every call on it.
        unsafe {
            let previous = (api.current_stream)(self.side.device_index);
            // Work queued on the caller's stream (the prefill that filled the cache) ends before the side stream runs.
            sync(&previous);
            (api.set_current_stream)(self.side);
            if warm_up {
                let warm = work();
                sync(&self.side);
                if let Err(e) = warm {
                    (api.set_current_stream)(previous);
                    return Err(CaptureError::Work(e));
                }
            }
            let mut object = vec![0u128; GRAPH_OBJECT_BYTES / 16].into_boxed_slice();
            let this = object.as_mut_ptr() as *mut c_void;
            (api.ctor)(this, false);
            (api.capture_begin)(this, pool.unwrap_or_default(), CAPTURE_MODE_THREAD_LOCAL);
            let recorded = work();
            let stream = (api.raw_stream)(&self.side);
            let mut status = 0i32;
            let queried = (api.is_capturing)(stream, &mut status);
            let result = if queried == 0 && status == CAPTURE_STATUS_ACTIVE && recorded.is_ok() {
                (api.capture_end)(this);
                Ok(CudaGraph { object, api })
            } else {
                // Abandon the capture without libtorch (whose capture_end would throw); leak the object on purpose.
                let mut graph = std::ptr::null_mut();
                if status != 0 {
                    (api.end_capture)(stream, &mut graph);
                }
                std::mem::forget(object);
                match recorded {
                    Err(e) => Err(CaptureError::Recording(Some(e), "recording failed".into())),
                    Ok(()) => {
                        Err(CaptureError::Recording(None, format!("stream capture was invalidated (status {status})")))
                    }
                }
            };
            (api.set_current_stream)(previous);
            sync(&self.side);
            result
        }
    }
}

/// While alive, the calling thread's current stream on one device is a stream of its own from libtorch's pool
/// (restored on drop). Worker threads sharing a GPU then never queue work on the same (legacy default) stream.
pub(crate) struct OwnStream {
    api: &'static Api,
    previous: CudaStreamRepr,
}

impl OwnStream {
    /// Switches the calling thread to a pool stream of CUDA device `device`; `None` when the API is unavailable.
    pub(crate) fn enter(device: usize) -> Option<Self> {
        let api = api().ok()?;
        // SAFETY: ABI as described in the module docs.
        unsafe {
            let previous = (api.current_stream)(device as i8);
            let own = (api.stream_from_pool)(false, device as i8);
            // Work already queued on the previous stream (the model's weights) is done before the new one runs.
            (api.stream_sync)((api.raw_stream)(&previous));
            (api.set_current_stream)(own);
            Some(OwnStream { api, previous })
        }
    }
}

impl Drop for OwnStream {
    fn drop(&mut self) {
        // SAFETY: ABI as described in the module docs; waits for this stream's work, then restores the caller's.
        unsafe {
            let own = (self.api.current_stream)(self.previous.device_index);
            (self.api.stream_sync)((self.api.raw_stream)(&own));
            (self.api.set_current_stream)(self.previous);
        }
    }
}

impl CudaGraph {
    /// Launches the recorded work on the current stream.
    pub(crate) fn replay(&mut self) {
        // SAFETY: the object was constructed and its capture ended successfully.
        unsafe { (self.api.replay)(self.object.as_mut_ptr() as *mut c_void) }
    }

    /// The memory pool of this graph, for later graphs to share.
    pub(crate) fn pool(&mut self) -> MempoolId {
        // SAFETY: as for replay.
        unsafe { (self.api.pool)(self.object.as_mut_ptr() as *mut c_void) }
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: destroys the object constructed in `CaptureStream::capture`, once.
        unsafe { (self.api.dtor)(self.object.as_mut_ptr() as *mut c_void) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn graph_symbols_resolve_when_libtorch_has_cuda() {
        // SAFETY: only checks whether the library can be opened.
        if unsafe { libloading::Library::new("libtorch_cuda.so") }.is_err() {
            return; // a CPU-only libtorch: graphs are simply unavailable
        }
        if let Err(why) = super::api() {
            panic!("libtorch_cuda.so is loaded but its graph symbols are not usable: {why}");
        }
    }
}
