//! The rotary embedding of training passes (rotary.cu) as an autograd op: the forward and its backward each one
//! kernel, where libtorch's ops take three and five. The op itself is the C++ shim's (src/ffi/rotary.cpp, a
//! torch::autograd::Function), which calls back into [`launch_callback`] to launch the kernel on libtorch's
//! current stream for both directions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use tch::Tensor;

use super::{launch_error, Kernels};
use crate::ffi::driver::arg;

/// Threads per block.
const BLOCK: u32 = 256;
/// Blocks of the grid-stride loop at most.
const MAX_BLOCKS: i64 = 8192;

impl Kernels {
    /// `x` [.., heads, d] rotated by the tables `cos`, `sin` ([tokens, d], sin sign-folded as model/rope.rs keeps
    /// it; tokens = the product of x's leading dimensions), or with `backward` by the transposed rotation (a
    /// gradient's way back). `None` when the tensors are not contiguous, of one supported dtype, or of fitting
    /// shapes.
    pub fn rotary(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        backward: bool,
    ) -> Result<Option<Tensor>, tch::TchError> {
        let name = match x.kind() {
            tch::Kind::BFloat16 => "stasc_rotary_bf16",
            tch::Kind::Float => "stasc_rotary_f32",
            _ => return Ok(None),
        };
        let shape = x.size();
        let (Some(&d), true) = (shape.last(), shape.len() >= 2) else { return Ok(None) };
        let heads = shape[shape.len() - 2];
        let tokens = shape[..shape.len() - 2].iter().product::<i64>();
        let table = |t: &Tensor| {
            t.kind() == x.kind() && t.device() == x.device() && t.is_contiguous() && t.size() == [tokens, d]
        };
        if d % 2 != 0 || !x.is_contiguous() || !table(cos) || !table(sin) {
            return Ok(None);
        }
        let out = Tensor::f_empty(shape.as_slice(), (x.kind(), x.device()))?;
        let pairs = tokens * heads * (d / 2);
        if pairs == 0 {
            return Ok(Some(out));
        }
        let function = self.function(name)?;
        let ptrs = [x.data_ptr(), cos.data_ptr(), sin.data_ptr(), out.data_ptr()];
        let (heads, d, backward) = (heads as i32, d as i32, i32::from(backward));
        let mut args = [
            arg(&ptrs[0]),
            arg(&ptrs[1]),
            arg(&ptrs[2]),
            arg(&ptrs[3]),
            arg(&tokens),
            arg(&heads),
            arg(&d),
            arg(&backward),
        ];
        let blocks = (pairs + i64::from(BLOCK) - 1).div_euclid(i64::from(BLOCK)).clamp(1, MAX_BLOCKS) as u32;
        // SAFETY: arguments follow stasc_rotary_*; the four tensors are contiguous with the checked shapes and dtype.
        unsafe { function.launch(self.stream()?, (blocks, 1, 1), BLOCK, 0, &mut args) }.map_err(launch_error)?;
        Ok(Some(out))
    }
}

/// `x` [.., heads, d] rotated by `cos`, `sin` ([tokens, d]) through the kernel, recorded for autograd (its backward
/// is the kernel's transposed rotation); `None` where the kernels do not apply (CPU, no shim, switched off, shapes),
/// and the caller uses libtorch ops.
pub fn rotary_autograd(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>, tch::TchError> {
    if super::for_tensor(x).is_none() {
        return Ok(None);
    }
    // The kernel's own checks, made here so that the op never fails on a shape the kernel refuses.
    let shape = x.size();
    let tokens = shape[..shape.len().saturating_sub(2)].iter().product::<i64>();
    let fits = |t: &Tensor| t.kind() == x.kind() && t.is_contiguous() && t.size() == [tokens, shape[shape.len() - 1]];
    if shape.len() < 2 || !x.is_contiguous() || !fits(cos) || !fits(sin) || shape[shape.len() - 1] % 2 != 0 {
        return Ok(None);
    }
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| crate::ffi::set_rotary_callback(launch_callback));
    crate::ffi::rotary(x, cos, sin).map(Some).map_err(|e| tch::TchError::Torch(e.to_string()))
}

/// Kernel launches through the autograd op so far, forward and backward (tests check the op ran).
static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// How many times the rotary op launched its kernel in this process, forward and backward.
pub fn rotary_launches() -> u64 {
    LAUNCHES.load(Ordering::Relaxed)
}

/// What src/ffi/rotary.cpp calls to rotate (`backward` 0) or rotate back (1): borrows the three tensors, writes a
/// new tensor handle to `out`; 0 on success. Never unwinds into C++.
extern "C" fn launch_callback(
    x: *mut std::ffi::c_void,
    cos: *mut std::ffi::c_void,
    sin: *mut std::ffi::c_void,
    backward: i32,
    out: *mut *mut std::ffi::c_void,
) -> i32 {
    let run = || -> Option<*mut std::ffi::c_void> {
        // SAFETY: the shim passes live at::Tensor handles that it keeps owning: ManuallyDrop never frees them.
        let borrow = |p: *mut std::ffi::c_void| std::mem::ManuallyDrop::new(unsafe { Tensor::from_ptr(p.cast()) });
        let (x, cos, sin) = (borrow(x), borrow(cos), borrow(sin));
        let kernels = super::for_tensor(&x)?;
        let mut rotated = kernels.rotary(&x, &cos, &sin, backward != 0).ok()??;
        LAUNCHES.fetch_add(1, Ordering::Relaxed);
        let handle = rotated.as_mut_ptr();
        // The shim takes the handle over (and deletes it).
        std::mem::forget(rotated);
        Some(handle.cast())
    };
    match std::panic::catch_unwind(run) {
        Ok(Some(handle)) => {
            // SAFETY: the shim passes a valid slot for the handle.
            unsafe { *out = handle };
            0
        }
        _ => 1,
    }
}
