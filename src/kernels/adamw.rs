//! Launching adamw.cu's kernel: one fused AdamW update (clip scale, decay, moments, update, zeroed gradient) over
//! the optimiser's flat buffers.

use tch::{Kind, Tensor};

use super::{launch_error, Kernels};
use crate::ffi::driver::arg;

/// The scalars of one update, laid out as `Step` in adamw.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Elements of every buffer.
    pub n: i64,
    /// The first `decayed` elements get weight decay (0: none this step).
    pub decayed: i64,
    /// `1 - lr * weight_decay`.
    pub decay_factor: f32,
    /// `1 - beta1`, the first moment's lerp weight.
    pub one_minus_beta1: f32,
    /// `1 - beta2`, the second moment's lerp weight.
    pub one_minus_beta2: f32,
    /// What `sqrt(v)` is multiplied by: `-1 / (sqrt(bias_correction2) * step_size)`.
    pub scale: f32,
    /// What is then added: `-eps / step_size`.
    pub shift: f32,
    /// 0 when the learning rate is 0 (only the moments move), else 1.
    pub update_params: i32,
}

/// Threads per block; every thread takes 16 bytes of each buffer at a time.
const BLOCK: u32 = 256;
/// Blocks of the grid-stride loop: enough to fill any current GPU several times over.
const MAX_BLOCKS: u64 = 8192;

impl Kernels {
    /// Runs one AdamW update on the flat buffers `params`, `grads`, `exp_avg`, `exp_avg_sq` (scaling the gradients
    /// by the device scalar `clip` first when given) and zeroes `grads`. `Ok(false)` when the buffers are not
    /// contiguous, 16-byte aligned, of one supported dtype and of `step.n` elements (the caller then uses
    /// libtorch ops).
    pub fn adamw(
        &self,
        params: &Tensor,
        grads: &Tensor,
        exp_avg: &Tensor,
        exp_avg_sq: &Tensor,
        clip: Option<&Tensor>,
        step: &AdamWStep,
    ) -> Result<bool, tch::TchError> {
        let name = match params.kind() {
            Kind::BFloat16 => "stasc_adamw_bf16",
            Kind::Float => "stasc_adamw_f32",
            _ => return Ok(false),
        };
        let buffers = [params, grads, exp_avg, exp_avg_sq];
        let fits = |t: &Tensor| {
            t.kind() == params.kind()
                && t.device() == params.device()
                && t.is_contiguous()
                && t.numel() as i64 == step.n
                && (t.data_ptr() as usize).is_multiple_of(16)
        };
        let clip_fits =
            clip.is_none_or(|c| c.kind() == params.kind() && c.device() == params.device() && c.numel() == 1);
        if !buffers.iter().all(|t| fits(t)) || !clip_fits {
            return Ok(false);
        }
        if step.n == 0 {
            return Ok(true);
        }
        let function = self.function(name)?;
        let ptrs = buffers.map(|t| t.data_ptr());
        let clip_ptr = clip.map_or(std::ptr::null_mut(), |c| c.data_ptr());
        let mut args = [arg(&ptrs[0]), arg(&ptrs[1]), arg(&ptrs[2]), arg(&ptrs[3]), arg(&clip_ptr), arg(step)];
        let blocks = (step.n as u64).div_ceil(4 * u64::from(BLOCK)).clamp(1, MAX_BLOCKS) as u32;
        // SAFETY: arguments follow stasc_adamw_*; the four buffers hold step.n contiguous, aligned elements of the
        // kernel's dtype and clip (when given) one, all on this device.
        unsafe { function.launch(self.stream()?, (blocks, 1, 1), BLOCK, 0, &mut args) }.map_err(launch_error)?;
        Ok(true)
    }
}
