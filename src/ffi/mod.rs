//! Foreign interfaces, each behind a safe Rust function: the C++ shim that build.rs compiles against libtorch's
//! headers (cuda_device.cpp: the caching allocator, current streams and devices, per-device seeds; cuda_graph.cpp:
//! CUDA graphs and pool streams; profiler.cpp: libtorch's Kineto profiler; attention.cpp: flash attention;
//! linear.cpp: a linear layer whose backward adds the weight's gradient within its product; train_ops.cpp: the
//! training passes' rotary embedding and SiLU-and-multiply as autograd ops calling back into crate::kernels), the
//! CUDA driver API (driver.rs) and NVRTC (nvrtc.rs), both opened with dlopen.
//! Without the shim (build.rs warns when it cannot build it) every shim function reports that it is unavailable.

pub mod driver;
pub mod nvrtc;

/// Why a foreign call could not be made or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FfiError {
    /// A shared library or one of its symbols could not be loaded.
    #[error("{0}")]
    Library(String),
    /// NVRTC rejected a kernel's source.
    #[error("compiling {kernel}: {log}")]
    Compile {
        /// The source's name.
        kernel: String,
        /// NVRTC's log.
        log: String,
    },
    /// A CUDA driver call returned an error.
    #[error("{call} failed: {error}")]
    Driver {
        /// The call (or kernel) that failed.
        call: String,
        /// The driver's error name.
        error: String,
    },
    /// A shim function is missing or threw.
    #[error("{0}")]
    Shim(String),
}

/// A libtorch CUDA stream as its packed id and device index (`c10::cuda::CUDAStream::pack3`); mirrors
/// `StascStream` in cuda_graph.cpp, whose layout the C++ compiler checks.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StascStream {
    id: i64,
    device: i32,
}
const _: () = assert!(std::mem::size_of::<StascStream>() == 16);

/// The memory pool of a CUDA graph (`at::cuda::MempoolId_t`), shared by the graphs of one decode loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MempoolId(u64, u64);

#[cfg(stasc_cuda_shim)]
mod sys {
    use super::StascStream;
    use std::ffi::c_void;
    extern "C" {
        pub fn stasc_cuda_empty_cache() -> i32;
        pub fn stasc_cuda_current_stream(device: i32) -> *mut c_void;
        pub fn stasc_cuda_manual_seed(device: i32, seed: u64) -> i32;
        pub fn stasc_cuda_set_device(device: i32) -> i32;
        pub fn stasc_cuda_set_memory_fraction(fraction: f64, device: i32) -> i32;
        pub fn stasc_sdp_use_cudnn(enabled: i32) -> i32;
        pub fn stasc_flash_attention_varlen(
            q: *const c_void,
            k: *const c_void,
            v: *const c_void,
            cu_seqlens: *const c_void,
            max_len: i64,
            scale: f64,
            out: *mut *mut c_void,
            err: *mut std::ffi::c_char,
            err_len: usize,
        ) -> i32;
        pub fn stasc_flash_attention_causal(
            q: *const c_void,
            k: *const c_void,
            v: *const c_void,
            scale: f64,
            out: *mut *mut c_void,
            err: *mut std::ffi::c_char,
            err_len: usize,
        ) -> i32;
        pub fn stasc_linears_grad_into(
            x: *const c_void,
            weights: *const *const c_void,
            n: i32,
            biases: *const *const c_void,
            n_biases: i32,
            out: *mut *mut c_void,
            err: *mut std::ffi::c_char,
            err_len: usize,
        ) -> i32;
        pub fn stasc_set_train_op_callback(f: super::TrainOpCallback);
        pub fn stasc_rotary(
            x: *const c_void,
            cos: *const c_void,
            sin: *const c_void,
            rot_heads: i64,
            out: *mut *mut c_void,
            err: *mut std::ffi::c_char,
            err_len: usize,
        ) -> i32;
        pub fn stasc_silu_mul(
            a: *const c_void,
            b: *const c_void,
            out: *mut *mut c_void,
            err: *mut std::ffi::c_char,
            err_len: usize,
        ) -> i32;
        pub fn stasc_silu_mul_rows(
            both: *const c_void,
            out: *mut *mut c_void,
            err: *mut std::ffi::c_char,
            err_len: usize,
        ) -> i32;
        pub fn stasc_cross_entropy_rows(
            logits: *const c_void,
            targets: *const c_void,
            out: *mut *mut c_void,
            err: *mut std::ffi::c_char,
            err_len: usize,
        ) -> i32;
        pub fn stasc_stream_from_pool(device: i32, out: *mut StascStream) -> i32;
        pub fn stasc_stream_current(device: i32, out: *mut StascStream) -> i32;
        pub fn stasc_stream_set_current(stream: *const StascStream) -> i32;
        pub fn stasc_stream_raw(stream: *const StascStream) -> *mut c_void;
        pub fn stasc_graph_new() -> *mut c_void;
        pub fn stasc_graph_capture_begin(graph: *mut c_void, pool_a: u64, pool_b: u64, thread_local: i32) -> i32;
        pub fn stasc_graph_capture_end(graph: *mut c_void) -> i32;
        pub fn stasc_graph_replay(graph: *mut c_void) -> i32;
        pub fn stasc_graph_pool(graph: *mut c_void, pool_a: *mut u64, pool_b: *mut u64) -> i32;
        pub fn stasc_graph_delete(graph: *mut c_void);
        pub fn stasc_profiler_start() -> i32;
        pub fn stasc_profiler_stop(path: *const std::ffi::c_char) -> i32;
    }
}

/// Whether build.rs compiled the C++ shim into this binary.
pub const HAS_SHIM: bool = cfg!(stasc_cuda_shim);

#[cfg(not(stasc_cuda_shim))]
fn unavailable() -> FfiError {
    FfiError::Shim("stasc was built without its CUDA shim (no CUDA headers beside libtorch; see build.rs)".into())
}

/// Runs `body` (unsafe shim calls) when the shim is built, else reports it unavailable.
macro_rules! shim {
    ($body:block) => {{
        #[cfg(stasc_cuda_shim)]
        // SAFETY: every shim function catches all C++ exceptions itself; pointers passed are to live locals or to
        // objects the shim created.
        let result = unsafe { $body };
        #[cfg(not(stasc_cuda_shim))]
        let result = Err(unavailable());
        result
    }};
}

fn status(code: i32, what: &str) -> Result<(), FfiError> {
    if code == 0 {
        Ok(())
    } else {
        Err(FfiError::Shim(format!("{what} threw")))
    }
}

/// `c10::cuda::CUDACachingAllocator::emptyCache()`.
pub fn empty_cache() -> Result<(), FfiError> {
    shim!({ status(sys::stasc_cuda_empty_cache(), "emptyCache") })
}

/// The raw `cudaStream_t` of the calling thread's current stream on `device`.
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn current_raw_stream(device: usize) -> Result<*mut std::ffi::c_void, FfiError> {
    shim!({ Ok(sys::stasc_cuda_current_stream(device as i32)) })
}

/// Seeds only `device`'s default CUDA generator.
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn manual_seed(device: usize, seed: u64) -> Result<(), FfiError> {
    shim!({ status(sys::stasc_cuda_manual_seed(device as i32, seed), "manual_seed") })
}

/// Makes `device` the calling thread's current CUDA device.
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn set_device(device: usize) -> Result<(), FfiError> {
    shim!({ status(sys::stasc_cuda_set_device(device as i32), "set_device") })
}

/// Caps the caching allocator at `fraction` of `device`'s memory.
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn set_memory_fraction(fraction: f64, device: usize) -> Result<(), FfiError> {
    shim!({ status(sys::stasc_cuda_set_memory_fraction(fraction, device as i32), "setMemoryFraction") })
}

/// Lets scaled-dot-product attention choose cuDNN's kernel, or not (`torch.backends.cuda.enable_cudnn_sdp`).
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn sdp_use_cudnn(enabled: bool) -> Result<(), FfiError> {
    shim!({ status(sys::stasc_sdp_use_cudnn(i32::from(enabled)), "setSDPUseCuDNN") })
}

/// Causal flash attention of packed `q` [N, heads, d] over `k`, `v` [N, kv_heads, d] within each segment that
/// `cu_seqlens` (int32 [segments + 1], from 0 to N) marks out, `max_len` the longest segment: libtorch's
/// `_flash_attention_forward` (CUDA, bf16/f16), differentiable. Returns [N, heads, d].
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn flash_attention_varlen(
    q: &tch::Tensor,
    k: &tch::Tensor,
    v: &tch::Tensor,
    cu_seqlens: &tch::Tensor,
    max_len: i64,
    scale: f64,
) -> Result<tch::Tensor, FfiError> {
    shim!({
        tensor_call("_flash_attention_forward", |out, err, len| {
            let h = handle;
            sys::stasc_flash_attention_varlen(h(q), h(k), h(v), h(cu_seqlens), max_len, scale, out, err, len)
        })
    })
}

/// Causal attention of `q` [B, M, heads, d] over `k`, `v` [B, N, kv_heads, d] with N >= M (strided, the last
/// dimension contiguous), the mask aligned to the bottom right: query i sees keys 0..=N - M + i. libtorch's
/// `_flash_attention_forward` (CUDA, bf16/f16). Returns [B, M, heads, d].
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn flash_attention_causal(
    q: &tch::Tensor,
    k: &tch::Tensor,
    v: &tch::Tensor,
    scale: f64,
) -> Result<tch::Tensor, FfiError> {
    shim!({
        tensor_call("_flash_attention_forward", |out, err, len| {
            sys::stasc_flash_attention_causal(handle(q), handle(k), handle(v), scale, out, err, len)
        })
    })
}

/// `x W^T + b` (x [.., in], `weight` [out, in], `bias` [out]) recorded for autograd so that backward adds the
/// weight's gradient into the weight's gradient tensor within the product (addmm_, beta 1) and hands autograd none
/// for it, instead of a new tensor that AccumulateGrad then adds in a pass of its own; the first gradient a weight
/// gets becomes its gradient tensor, as with AccumulateGrad. The bias's gradient is added into its gradient tensor
/// likewise; the input's flows as usual. Any device; differs from `x.linear(W, b)`'s accumulated gradient by one
/// rounding (the sum is rounded once).
pub fn linear_grad_into(
    x: &tch::Tensor,
    weight: &tch::Tensor,
    bias: Option<&tch::Tensor>,
) -> Result<tch::Tensor, FfiError> {
    linears_grad_into(x, &[weight], bias.as_slice())
}

/// [`linear_grad_into`] for several layers sharing the input `x`: their outputs concatenated on the last dimension
/// ([.., sum of out_i]), from one matrix product of the weights' rows stacked (and one each way in backward).
/// `biases` are one per weight or none. Where the weights (and their gradient tensors) lie back to back in one
/// buffer, as the trainer's flat buffers hold them, the stacked matrix is an alias; otherwise a copy.
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn linears_grad_into(
    x: &tch::Tensor,
    weights: &[&tch::Tensor],
    biases: &[&tch::Tensor],
) -> Result<tch::Tensor, FfiError> {
    shim!({
        let w: Vec<_> = weights.iter().map(|t| handle(t)).collect();
        let b: Vec<_> = biases.iter().map(|t| handle(t)).collect();
        tensor_call("linear", |out, err, len| {
            sys::stasc_linears_grad_into(
                handle(x),
                w.as_ptr(),
                w.len() as i32,
                b.as_ptr(),
                b.len() as i32,
                out,
                err,
                len,
            )
        })
    })
}

/// What train_ops.cpp calls to launch a training op's kernel: the op's number, its input handles (at::Tensor*,
/// borrowed) and their count, and slots for the new handles of its outputs (which the shim then owns) and their
/// count; 0 on success.
pub type TrainOpCallback =
    extern "C" fn(i32, *const *mut std::ffi::c_void, i32, *mut *mut std::ffi::c_void, i32) -> i32;

/// Registers the function that launches the kernels of [`rotary`] and [`silu_mul`] (crate::kernels does, once).
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn set_train_op_callback(f: TrainOpCallback) {
    #[cfg(stasc_cuda_shim)]
    // SAFETY: stores a function pointer.
    unsafe {
        sys::stasc_set_train_op_callback(f)
    };
}

/// `x` [.., heads, d], its first `rot_heads` heads rotated by `cos`, `sin` ([tokens, d]) and the others copied, as
/// one autograd op, forward and backward through the registered callback ([`set_train_op_callback`]).
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn rotary(x: &tch::Tensor, cos: &tch::Tensor, sin: &tch::Tensor, rot_heads: i64) -> Result<tch::Tensor, FfiError> {
    shim!({
        tensor_call("rotary", |out, err, len| {
            sys::stasc_rotary(handle(x), handle(cos), handle(sin), rot_heads, out, err, len)
        })
    })
}

/// `silu(a) * b` as one autograd op, forward and backward through the registered callback.
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn silu_mul(a: &tch::Tensor, b: &tch::Tensor) -> Result<tch::Tensor, FfiError> {
    shim!({ tensor_call("silu_mul", |out, err, len| sys::stasc_silu_mul(handle(a), handle(b), out, err, len)) })
}

/// `silu(gate) * up` of a fused gate/up output `both` [.., 2 width] (gate first) as one autograd op, forward and
/// backward through the registered callback.
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn silu_mul_rows(both: &tch::Tensor) -> Result<tch::Tensor, FfiError> {
    shim!({ tensor_call("silu_mul", |out, err, len| sys::stasc_silu_mul_rows(handle(both), out, err, len)) })
}

/// Each row's cross-entropy ([rows] f32) of `logits` [rows, vocab] against `targets` ([rows] int64) as one autograd
/// op, forward and backward through the registered callback.
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn cross_entropy_rows(logits: &tch::Tensor, targets: &tch::Tensor) -> Result<tch::Tensor, FfiError> {
    shim!({
        tensor_call("cross_entropy", |out, err, len| {
            sys::stasc_cross_entropy_rows(handle(logits), handle(targets), out, err, len)
        })
    })
}

/// A tch tensor as the shim takes it: its at::Tensor*.
#[cfg(stasc_cuda_shim)]
fn handle(t: &tch::Tensor) -> *const std::ffi::c_void {
    t.as_ptr() as *const std::ffi::c_void
}

/// Runs a shim call that writes a new tensor handle to its `out` argument on success and a NUL-terminated message
/// into its `err` buffer (of the given length) on failure; returns the tensor, which then owns the handle.
///
/// # Safety
/// `call` must pass live handles only and follow that contract.
#[cfg(stasc_cuda_shim)]
unsafe fn tensor_call(
    what: &str,
    call: impl FnOnce(*mut *mut std::ffi::c_void, *mut std::ffi::c_char, usize) -> i32,
) -> Result<tch::Tensor, FfiError> {
    let mut out: *mut std::ffi::c_void = std::ptr::null_mut();
    let mut err = [0 as std::ffi::c_char; 512];
    let code = call(&mut out, err.as_mut_ptr(), err.len());
    // SAFETY: as promised by the caller.
    unsafe { shim_output(what, code, out, &err) }
}

/// The tensor a shim call wrote to `out`, or the first line of the message it wrote to `err`.
///
/// # Safety
/// `out`, when not null, must be a new at::Tensor* that nothing else owns; `err` must be NUL-terminated.
#[cfg(stasc_cuda_shim)]
unsafe fn shim_output(
    what: &str,
    code: i32,
    out: *mut std::ffi::c_void,
    err: &[std::ffi::c_char],
) -> Result<tch::Tensor, FfiError> {
    if code != 0 || out.is_null() {
        // SAFETY: the buffer is NUL-terminated (zeroed, and the shim terminates what it copies).
        let why = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
        let first = why.lines().next().unwrap_or("threw").to_string();
        return Err(FfiError::Shim(format!("{what}: {first}")));
    }
    // SAFETY: the caller's promise: a new handle that the returned Tensor then owns.
    Ok(unsafe { tch::Tensor::from_ptr(out.cast()) })
}

/// Starts libtorch's Kineto profiler (CPU ops and every CUDA kernel of the process) until [`profiler_stop`].
pub fn profiler_start() -> Result<(), FfiError> {
    shim!({ status(sys::stasc_profiler_start(), "enabling the Kineto profiler") })
}

/// Stops the profiler started by [`profiler_start`] and saves its Chrome trace (JSON) to `path`.
#[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
pub fn profiler_stop(path: &std::path::Path) -> Result<(), FfiError> {
    let text = path.to_str().ok_or_else(|| FfiError::Shim(format!("{}: not UTF-8", path.display())))?;
    let path_c =
        std::ffi::CString::new(text).map_err(|_| FfiError::Shim(format!("{}: contains a NUL byte", path.display())))?;
    shim!({
        match sys::stasc_profiler_stop(path_c.as_ptr()) {
            0 => Ok(()),
            2 => Err(FfiError::Shim("the Kineto profiler was not running".into())),
            _ => Err(FfiError::Shim(format!("saving the Kineto trace to {} threw", path.display()))),
        }
    })
}

/// Runs `f` under the Kineto profiler when `trace` names a file, and saves the trace there after `f` returns
/// (whatever it returned); without `trace`, just runs `f`.
pub fn profiled<T>(trace: Option<&std::path::Path>, f: impl FnOnce() -> T) -> Result<T, FfiError> {
    if trace.is_some() {
        profiler_start()?;
    }
    let out = f();
    if let Some(path) = trace {
        profiler_stop(path)?;
    }
    Ok(out)
}

impl StascStream {
    /// A stream from libtorch's pool for `device`.
    #[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
    pub fn from_pool(device: usize) -> Result<Self, FfiError> {
        let mut out = StascStream::default();
        shim!({ status(sys::stasc_stream_from_pool(device as i32, &mut out), "getStreamFromPool").map(|()| out) })
    }

    /// The calling thread's current stream on `device`.
    #[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
    pub fn current(device: usize) -> Result<Self, FfiError> {
        let mut out = StascStream::default();
        shim!({ status(sys::stasc_stream_current(device as i32, &mut out), "getCurrentCUDAStream").map(|()| out) })
    }

    /// Makes this stream the calling thread's current stream on its device.
    pub fn make_current(&self) -> Result<(), FfiError> {
        shim!({ status(sys::stasc_stream_set_current(self), "setCurrentCUDAStream") })
    }

    /// The raw `cudaStream_t` (a `CUstream` for the driver API).
    pub fn raw(&self) -> Result<*mut std::ffi::c_void, FfiError> {
        shim!({
            let raw = sys::stasc_stream_raw(self);
            if raw.is_null() && self.id != 0 {
                Err(FfiError::Shim("CUDAStream::stream threw".into()))
            } else {
                Ok(raw)
            }
        })
    }

    /// The device index.
    pub fn device(&self) -> usize {
        self.device as usize
    }
}

/// An `at::cuda::CUDAGraph` owned by the shim. Dropping one whose capture ended destroys it; one whose capture
/// failed must be passed to [`Graph::leak`] (its destructor could throw).
#[derive(Debug)]
pub struct Graph {
    ptr: *mut std::ffi::c_void,
}

// SAFETY: the graph object is used by one thread at a time (the decode loop that owns it).
unsafe impl Send for Graph {}

impl Graph {
    /// A new, empty graph.
    pub fn new() -> Result<Self, FfiError> {
        shim!({
            let ptr = sys::stasc_graph_new();
            if ptr.is_null() {
                Err(FfiError::Shim("CUDAGraph() threw".into()))
            } else {
                Ok(Graph { ptr })
            }
        })
    }

    /// Starts capturing the current stream (thread-local capture mode), into `pool` (or a new pool).
    #[cfg_attr(not(stasc_cuda_shim), allow(unused_variables))]
    pub fn capture_begin(&mut self, pool: Option<MempoolId>) -> Result<(), FfiError> {
        let MempoolId(a, b) = pool.unwrap_or_default();
        shim!({ status(sys::stasc_graph_capture_begin(self.ptr, a, b, 1), "CUDAGraph::capture_begin") })
    }

    /// Ends the capture and instantiates the graph.
    pub fn capture_end(&mut self) -> Result<(), FfiError> {
        shim!({ status(sys::stasc_graph_capture_end(self.ptr), "CUDAGraph::capture_end") })
    }

    /// Launches the recorded work on the current stream.
    pub fn replay(&mut self) -> Result<(), FfiError> {
        shim!({ status(sys::stasc_graph_replay(self.ptr), "CUDAGraph::replay") })
    }

    /// The graph's memory pool, for later graphs to share.
    pub fn pool(&mut self) -> Result<MempoolId, FfiError> {
        let (mut a, mut b) = (0u64, 0u64);
        shim!({ status(sys::stasc_graph_pool(self.ptr, &mut a, &mut b), "CUDAGraph::pool").map(|()| MempoolId(a, b)) })
    }

    /// Forgets a graph whose capture failed without destroying it.
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        #[cfg(stasc_cuda_shim)]
        // SAFETY: the object was created by stasc_graph_new and is destroyed once; failed captures are leaked.
        unsafe {
            sys::stasc_graph_delete(self.ptr)
        }
    }
}
