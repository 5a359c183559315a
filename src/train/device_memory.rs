//! GPU memory in use, for benchmark reports. tch exposes no allocator statistics, so this asks the CUDA runtime
//! that libtorch already loaded (`cudaMemGetInfo`): used = total - free on the current device. That counts the
//! CUDA context and everything libtorch's caching allocator has reserved, so it bounds the peak of allocated
//! tensors from above (compare with `torch.cuda.max_memory_reserved()` plus the context, not `max_memory_allocated`).

use libloading::{Library, Symbol};

type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;

/// Runtime library names, newest first (torch 2.11's CUDA 13 wheel first).
const CUDART: &[&str] = &["libcudart.so.13", "libcudart.so.12", "libcudart.so"];

/// Bytes in use on the current CUDA device, or `None` when no CUDA runtime can be found.
pub fn cuda_used_bytes() -> Option<u64> {
    if !tch::Cuda::is_available() {
        return None;
    }
    for name in CUDART {
        // SAFETY: loading the CUDA runtime runs no foreign initialisation beyond what libtorch already did, and
        // cudaMemGetInfo has exactly this C signature (size_t* free, size_t* total) -> cudaError_t.
        unsafe {
            let Ok(lib) = Library::new(name) else { continue };
            let Ok(f): Result<Symbol<MemGetInfo>, _> = lib.get(b"cudaMemGetInfo\0") else { continue };
            let (mut free, mut total) = (0usize, 0usize);
            if f(&mut free, &mut total) == 0 {
                return Some(total.saturating_sub(free) as u64);
            }
        }
    }
    None
}
