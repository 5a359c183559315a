//! The CUDA driver API (libcuda.so.1, opened with dlopen) for the little that running our own kernels needs: load a
//! CUBIN into a device's primary context (the one libtorch's runtime uses), look up its functions, and launch them
//! on a given stream, which CUDA graph capture then records like any libtorch kernel; and events that order one
//! stream after another (the data-parallel trainer sums gradients on a side stream while backward goes on).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::OnceLock;

use libloading::Library;

use super::FfiError;

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuModule = *mut c_void;
type CuFunction = *mut c_void;

/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR` and `_MINOR`.
const ATTRIBUTE_CC_MAJOR: c_int = 75;
const ATTRIBUTE_CC_MINOR: c_int = 76;

#[allow(clippy::type_complexity)]
struct Api {
    _lib: Library,
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    attribute: unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    ctx_get_current: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    ctx_set_current: unsafe extern "C" fn(CuContext) -> CuResult,
    module_load_data: unsafe extern "C" fn(*mut CuModule, *const c_void) -> CuResult,
    module_get_function: unsafe extern "C" fn(*mut CuFunction, CuModule, *const c_char) -> CuResult,
    launch: unsafe extern "C" fn(
        CuFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        *mut c_void,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
    error_name: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    stream_synchronize: unsafe extern "C" fn(*mut c_void) -> CuResult,
    stream_is_capturing: unsafe extern "C" fn(*mut c_void, *mut c_int) -> CuResult,
    stream_end_capture: unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> CuResult,
    graph_destroy: unsafe extern "C" fn(*mut c_void) -> CuResult,
    event_create: unsafe extern "C" fn(*mut *mut c_void, c_uint) -> CuResult,
    event_record: unsafe extern "C" fn(*mut c_void, *mut c_void) -> CuResult,
    event_destroy: unsafe extern "C" fn(*mut c_void) -> CuResult,
    stream_wait_event: unsafe extern "C" fn(*mut c_void, *mut c_void, c_uint) -> CuResult,
    event_synchronize: unsafe extern "C" fn(*mut c_void) -> CuResult,
}

fn load() -> Result<Api, FfiError> {
    // SAFETY: libcuda is the driver libtorch itself uses; each symbol gets its signature from cuda.h (CUDA 12/13).
    unsafe {
        let lib = Library::new("libcuda.so.1").map_err(|e| FfiError::Library(format!("libcuda.so.1: {e}")))?;
        macro_rules! sym {
            ($name:literal) => {
                *lib.get(concat!($name, "\0").as_bytes()).map_err(|e| FfiError::Library(format!("{}: {e}", $name)))?
            };
        }
        let api = Api {
            init: sym!("cuInit"),
            device_get: sym!("cuDeviceGet"),
            attribute: sym!("cuDeviceGetAttribute"),
            primary_ctx_retain: sym!("cuDevicePrimaryCtxRetain"),
            ctx_get_current: sym!("cuCtxGetCurrent"),
            ctx_set_current: sym!("cuCtxSetCurrent"),
            module_load_data: sym!("cuModuleLoadData"),
            module_get_function: sym!("cuModuleGetFunction"),
            launch: sym!("cuLaunchKernel"),
            error_name: sym!("cuGetErrorName"),
            stream_synchronize: sym!("cuStreamSynchronize"),
            stream_is_capturing: sym!("cuStreamIsCapturing"),
            stream_end_capture: sym!("cuStreamEndCapture"),
            graph_destroy: sym!("cuGraphDestroy"),
            event_create: sym!("cuEventCreate"),
            event_record: sym!("cuEventRecord"),
            // cuda.h maps cuEventDestroy to its _v2 ABI.
            event_destroy: sym!("cuEventDestroy_v2"),
            stream_wait_event: sym!("cuStreamWaitEvent"),
            event_synchronize: sym!("cuEventSynchronize"),
            _lib: lib,
        };
        check(&api, (api.init)(0), "cuInit")?;
        Ok(api)
    }
}

fn api() -> Result<&'static Api, FfiError> {
    static API: OnceLock<Result<Api, FfiError>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn check(api: &Api, code: CuResult, call: &str) -> Result<(), FfiError> {
    if code == 0 {
        return Ok(());
    }
    let mut name: *const c_char = std::ptr::null();
    // SAFETY: cuGetErrorName writes a pointer to a static string (or leaves it null for unknown codes).
    let name = unsafe {
        (api.error_name)(code, &mut name);
        if name.is_null() {
            format!("error {code}")
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    };
    Err(FfiError::Driver { call: call.to_string(), error: name })
}

/// Waits for the work queued on `stream` (a raw `cudaStream_t`/`CUstream`).
///
/// # Safety
/// `stream` must be a live stream handle (from libtorch) on the current context.
pub unsafe fn stream_synchronize(stream: *mut c_void) -> Result<(), FfiError> {
    let api = api()?;
    // SAFETY: the caller passes a live stream handle.
    check(api, unsafe { (api.stream_synchronize)(stream) }, "cuStreamSynchronize")
}

/// `stream`'s capture status: 0 not capturing, 1 capturing, 2 capture invalidated.
///
/// # Safety
/// `stream` must be a live stream handle (from libtorch) on the current context.
pub unsafe fn stream_capture_status(stream: *mut c_void) -> Result<i32, FfiError> {
    let api = api()?;
    let mut status = 0;
    // SAFETY: a live stream handle and an out-pointer to a local.
    check(api, unsafe { (api.stream_is_capturing)(stream, &mut status) }, "cuStreamIsCapturing")?;
    Ok(status)
}

/// Ends a capture on `stream` and throws the recorded graph away (a capture that cannot be finished normally).
///
/// # Safety
/// `stream` must be a live stream handle (from libtorch) on the current context.
pub unsafe fn abandon_capture(stream: *mut c_void) -> Result<(), FfiError> {
    let api = api()?;
    let mut graph = std::ptr::null_mut();
    // SAFETY: a live stream handle; the graph, if one comes back, is ours to destroy.
    unsafe {
        let ended = (api.stream_end_capture)(stream, &mut graph);
        if !graph.is_null() {
            (api.graph_destroy)(graph);
        }
        check(api, ended, "cuStreamEndCapture")
    }
}

/// `CU_EVENT_DISABLE_TIMING`: the event only orders streams.
const EVENT_DISABLE_TIMING: c_uint = 0x2;

/// `CU_EVENT_WAIT_EXTERNAL`: a wait captured into a CUDA graph as an external event wait node.
const EVENT_WAIT_EXTERNAL: c_uint = 0x1;

/// A CUDA event that orders one stream after another (no timing), reusable: each [`Event::order`] records it anew.
#[derive(Debug)]
pub struct Event {
    event: *mut c_void,
}

// SAFETY: a CUevent handle may be recorded and waited on from any thread; each Event is used by one at a time.
unsafe impl Send for Event {}

impl Event {
    /// A new event in device `ordinal`'s primary context.
    pub fn new(ordinal: usize) -> Result<Event, FfiError> {
        let api = api()?;
        let (context, _) = Context::primary(ordinal)?;
        context.enter(api)?;
        let mut event = std::ptr::null_mut();
        // SAFETY: out-pointer to a local, in a current context.
        check(api, unsafe { (api.event_create)(&mut event, EVENT_DISABLE_TIMING) }, "cuEventCreate")?;
        Ok(Event { event })
    }

    /// Makes the work queued on `waiter` from now on wait for the work queued on `producer` so far (the host does
    /// not wait).
    ///
    /// # Safety
    /// Both must be live stream handles (from libtorch) of the event's device.
    pub unsafe fn order(&self, producer: *mut c_void, waiter: *mut c_void) -> Result<(), FfiError> {
        let api = api()?;
        // SAFETY: live streams of the event's context; the wait takes the event's state at this call, so the
        // next record does not disturb it.
        unsafe {
            check(api, (api.event_record)(self.event, producer), "cuEventRecord")?;
            check(api, (api.stream_wait_event)(waiter, self.event, 0), "cuStreamWaitEvent")
        }
    }

    /// Makes the work queued on `waiter` from now on wait for the work the event was last recorded after. While
    /// `waiter` is being captured into a CUDA graph the wait is recorded as an external event wait
    /// (`CU_EVENT_WAIT_EXTERNAL`, which CUDA refuses outside a capture): each launch of the graph then waits for the
    /// event's last record before that launch, not for the record at capture time.
    ///
    /// # Safety
    /// `waiter` must be a live stream handle (from libtorch) of the event's device.
    pub unsafe fn wait_on(&self, waiter: *mut c_void) -> Result<(), FfiError> {
        let api = api()?;
        // SAFETY: a live stream (the caller's promise).
        let capturing = unsafe { stream_capture_status(waiter) }? != 0;
        let flags = if capturing { EVENT_WAIT_EXTERNAL } else { 0 };
        // SAFETY: as above; the event is alive for `self`.
        check(api, unsafe { (api.stream_wait_event)(waiter, self.event, flags) }, "cuStreamWaitEvent")
    }
}

impl Event {
    /// Records the event after the work queued on `stream` so far.
    ///
    /// # Safety
    /// `stream` must be a live stream handle (from libtorch) of the event's device.
    pub unsafe fn record(&self, stream: *mut c_void) -> Result<(), FfiError> {
        let api = api()?;
        // SAFETY: a live stream of the event's context (the caller's promise).
        check(api, unsafe { (api.event_record)(self.event, stream) }, "cuEventRecord")
    }

    /// Blocks the calling thread until the work the event was last recorded after is done.
    pub fn synchronize(&self) -> Result<(), FfiError> {
        let api = api()?;
        // SAFETY: a live event handle; an event never recorded completes at once.
        check(api, unsafe { (api.event_synchronize)(self.event) }, "cuEventSynchronize")
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            // SAFETY: created by cuEventCreate and destroyed once; the driver frees it once pending work is done.
            unsafe {
                (api.event_destroy)(self.event);
            }
        }
    }
}

/// A device's primary context: the context libtorch's runtime calls run in.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    ctx: CuContext,
}

// SAFETY: a CUcontext handle may be used from any thread (the driver API is thread-safe).
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl Context {
    /// The primary context of CUDA device `ordinal` and its compute capability as `major * 10 + minor`. Retained
    /// once per device for the process (the first successful call); later calls return it without retaining it
    /// again, so callers that make an event per generate call or training step do not pile up references.
    pub fn primary(ordinal: usize) -> Result<(Context, u32), FfiError> {
        const MAX_DEVICES: usize = 64;
        static RETAINED: [std::sync::OnceLock<(usize, u32)>; MAX_DEVICES] =
            [const { std::sync::OnceLock::new() }; MAX_DEVICES];
        let Some(slot) = RETAINED.get(ordinal) else { return Self::retain(ordinal) };
        if let Some(&(ctx, arch)) = slot.get() {
            return Ok((Context { ctx: ctx as CuContext }, arch));
        }
        let (context, arch) = Self::retain(ordinal)?;
        // Two threads may both retain on first use; the loser's extra reference is harmless (never released, as
        // before) and it returns the context the slot holds.
        let &(ctx, arch) = slot.get_or_init(|| (context.ctx as usize, arch));
        Ok((Context { ctx: ctx as CuContext }, arch))
    }

    /// Retains device `ordinal`'s primary context and reads its compute capability.
    fn retain(ordinal: usize) -> Result<(Context, u32), FfiError> {
        let api = api()?;
        let (mut dev, mut major, mut minor, mut ctx) = (0, 0, 0, std::ptr::null_mut());
        // SAFETY: plain driver calls with out-pointers to locals.
        unsafe {
            check(api, (api.device_get)(&mut dev, ordinal as c_int), "cuDeviceGet")?;
            check(api, (api.attribute)(&mut major, ATTRIBUTE_CC_MAJOR, dev), "cuDeviceGetAttribute")?;
            check(api, (api.attribute)(&mut minor, ATTRIBUTE_CC_MINOR, dev), "cuDeviceGetAttribute")?;
            check(api, (api.primary_ctx_retain)(&mut ctx, dev), "cuDevicePrimaryCtxRetain")?;
        }
        Ok((Context { ctx }, (major * 10 + minor) as u32))
    }

    /// Makes this context current on the calling thread unless it already is (the runtime makes it current on
    /// threads that used the device; a fresh thread may have none).
    fn enter(&self, api: &Api) -> Result<(), FfiError> {
        let mut current = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; the context was retained and is never released.
        unsafe {
            check(api, (api.ctx_get_current)(&mut current), "cuCtxGetCurrent")?;
            if current != self.ctx {
                check(api, (api.ctx_set_current)(self.ctx), "cuCtxSetCurrent")?;
            }
        }
        Ok(())
    }

    /// Loads `cubin` into this context and looks up the functions `names`.
    pub fn load(&self, cubin: &[u8], names: &[&'static str]) -> Result<Vec<Function>, FfiError> {
        let api = api()?;
        self.enter(api)?;
        let mut module = std::ptr::null_mut();
        // SAFETY: the image is a complete CUBIN from NVRTC; the module stays loaded for the life of the process
        // (functions point into it).
        unsafe {
            check(api, (api.module_load_data)(&mut module, cubin.as_ptr() as *const c_void), "cuModuleLoadData")?
        };
        names
            .iter()
            .map(|name| {
                let cname = CString::new(*name).map_err(|_| FfiError::Library(format!("kernel name {name:?}")))?;
                let mut function = std::ptr::null_mut();
                // SAFETY: out-pointer to a local, a loaded module and a NUL-terminated name.
                unsafe {
                    check(
                        api,
                        (api.module_get_function)(&mut function, module, cname.as_ptr()),
                        &format!("cuModuleGetFunction({name})"),
                    )?
                };
                Ok(Function { function, context: *self, name })
            })
            .collect()
    }
}

/// A kernel of a loaded module.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    function: CuFunction,
    context: Context,
    name: &'static str,
}

// SAFETY: a CUfunction handle may be launched from any thread.
unsafe impl Send for Function {}
// SAFETY: as above.
unsafe impl Sync for Function {}

/// One kernel argument: a pointer to its value, as cuLaunchKernel takes them.
pub type Arg = *mut c_void;

/// The address of a kernel argument (the value must outlive the launch call, not the kernel).
pub fn arg<T>(value: &T) -> Arg {
    value as *const T as *mut c_void
}

impl Function {
    /// Launches the kernel on `stream` with `grid` x `block` threads, `shared` bytes of dynamic shared memory and
    /// the arguments `args` (pointers to values whose types match the kernel's parameters).
    ///
    /// # Safety
    /// The arguments must match the kernel's parameter list, and every device pointer among them must stay valid
    /// until the kernel has run on `stream`.
    pub unsafe fn launch(
        &self,
        stream: *mut c_void,
        grid: (u32, u32, u32),
        block: u32,
        shared: u32,
        args: &mut [Arg],
    ) -> Result<(), FfiError> {
        let api = api()?;
        self.context.enter(api)?;
        let code = (api.launch)(
            self.function,
            grid.0,
            grid.1,
            grid.2,
            block,
            1,
            1,
            shared,
            stream,
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        );
        check(api, code, self.name)
    }
}
