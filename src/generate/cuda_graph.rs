//! CUDA graphs for the decode step, through libtorch's own `at::cuda::CUDAGraph` (which routes the captured
//! allocations to a private memory pool of the caching allocator), reached through the C++ shim (crate::ffi,
//! src/ffi/cuda_graph.cpp) so the compiler checks every signature. Without the shim graphs are unavailable and decode
//! runs eagerly.
//!
//! Why: a decode step of a 1.5B model is ~600 small kernels; launched one by one the host, not the GPU, sets the pace
//! (tens of microseconds per launch on some machines). One graph replay launches them all at once.
//!
//! Capture starts only on a fresh non-default stream, and ends through libtorch only after the driver confirms the
//! stream is still capturing; otherwise the capture is abandoned through the driver, the half-made graph object is
//! leaked on purpose (its destructor could throw) and the caller falls back to eager steps.

use crate::ffi::driver;
pub(crate) use crate::ffi::MempoolId;
use crate::ffi::{FfiError, Graph, StascStream};

/// `CU_STREAM_CAPTURE_STATUS_ACTIVE`.
const CAPTURE_STATUS_ACTIVE: i32 = 1;

/// A captured CUDA graph, replayed on the current stream.
pub(crate) struct CudaGraph {
    graph: Graph,
}

/// Why a capture did not produce a graph.
pub(crate) enum CaptureError<E> {
    /// The warm-up run of the work failed (a real error: nothing was recorded).
    Work(E),
    /// Recording failed (the work's error, if it returned one, and a description); the recorded copy never ran, so
    /// without a warm-up the work is still to be done.
    Recording(Option<E>, String),
    /// The streams could not be set up: the work did not run at all.
    Unavailable(String),
}

/// Waits for `stream`'s work. Stream (not device) synchronisation: another worker thread may be capturing on this
/// device, and a device synchronisation would break its capture.
fn sync(stream: &StascStream) -> Result<(), FfiError> {
    // SAFETY: the raw handle of a libtorch stream that `stream` keeps alive.
    unsafe { driver::stream_synchronize(stream.raw()?) }
}

/// A non-default CUDA stream of one device on which graphs are captured (the same one for every capture of a
/// generate call, so lazily created per-stream resources such as cuBLAS workspaces exist after the first warm-up).
pub(crate) struct CaptureStream {
    side: StascStream,
}

impl CaptureStream {
    /// Takes a stream from libtorch's pool for CUDA device `device`.
    pub(crate) fn new(device: usize) -> Result<Self, String> {
        let side = StascStream::from_pool(device).map_err(|e| e.to_string())?;
        // The driver API is what checks capture status below: make sure it loads now, not mid-capture.
        {
            let raw = side.raw().map_err(|e| e.to_string())?;
            // SAFETY: the raw handle of the pool stream `side` keeps alive.
            unsafe { driver::stream_capture_status(raw) }.map_err(|e| e.to_string())?
        };
        Ok(CaptureStream { side })
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
        let unavailable = |e: FfiError| CaptureError::Unavailable(e.to_string());
        let previous = StascStream::current(self.side.device()).map_err(unavailable)?;
        // Work queued on the caller's stream (the prefill that filled the cache) ends before the side stream runs.
        sync(&previous).map_err(unavailable)?;
        self.side.make_current().map_err(unavailable)?;
        let result = self.record(pool, warm_up, &mut work);
        let restored = previous.make_current().and_then(|()| sync(&self.side));
        match (result, restored) {
            (Ok(graph), Ok(())) => Ok(graph),
            (Ok(_), Err(e)) => Err(CaptureError::Recording(None, e.to_string())),
            (Err(e), _) => Err(e),
        }
    }

    fn record<E>(
        &self,
        pool: Option<MempoolId>,
        warm_up: bool,
        work: &mut impl FnMut() -> Result<(), E>,
    ) -> Result<CudaGraph, CaptureError<E>> {
        let recording = |e: FfiError| CaptureError::Recording(None, e.to_string());
        if warm_up {
            let warm = work();
            sync(&self.side).map_err(recording)?;
            warm.map_err(CaptureError::Work)?;
        }
        let raw = self.side.raw().map_err(recording)?;
        let mut graph = Graph::new().map_err(recording)?;
        if let Err(e) = graph.capture_begin(pool) {
            graph.leak();
            return Err(recording(e));
        }
        let recorded = work();
        // SAFETY: `raw` is the capture stream's handle, alive for this scope.
        let status = unsafe { driver::stream_capture_status(raw) }.unwrap_or(0);
        if status == CAPTURE_STATUS_ACTIVE && recorded.is_ok() {
            if let Err(e) = graph.capture_end() {
                graph.leak();
                return Err(recording(e));
            }
            return Ok(CudaGraph { graph });
        }
        // Abandon the capture without libtorch (whose capture_end would throw); leak the object on purpose.
        if status != 0 {
            // SAFETY: as above.
            let _ = unsafe { driver::abandon_capture(raw) };
        }
        graph.leak();
        Err(match recorded {
            Err(e) => CaptureError::Recording(Some(e), "recording failed".into()),
            Ok(()) => CaptureError::Recording(None, format!("stream capture was invalidated (status {status})")),
        })
    }
}

/// While alive, the calling thread's current stream on one device is a stream of its own from libtorch's pool
/// (restored on drop). Worker threads sharing a GPU then never queue work on the same (legacy default) stream.
pub(crate) struct OwnStream {
    previous: StascStream,
}

impl OwnStream {
    /// Switches the calling thread to a pool stream of CUDA device `device`; `None` without the shim.
    pub(crate) fn enter(device: usize) -> Option<Self> {
        let previous = StascStream::current(device).ok()?;
        let own = StascStream::from_pool(device).ok()?;
        // Work already queued on the previous stream (the model's weights) is done before the new one runs.
        sync(&previous).ok()?;
        own.make_current().ok()?;
        Some(OwnStream { previous })
    }
}

impl Drop for OwnStream {
    fn drop(&mut self) {
        // Waits for this stream's work, then restores the caller's.
        if let Ok(own) = StascStream::current(self.previous.device()) {
            let _ = sync(&own);
        }
        let _ = self.previous.make_current();
    }
}

impl CudaGraph {
    /// Launches the recorded work on the current stream.
    pub(crate) fn replay(&mut self) -> Result<(), FfiError> {
        self.graph.replay()
    }

    /// The memory pool of this graph, for later graphs to share.
    pub(crate) fn pool(&mut self) -> Result<MempoolId, FfiError> {
        self.graph.pool()
    }
}
