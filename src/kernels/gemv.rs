//! Launching gemv.cu's matrix-vector products for decode steps of at most [`GEMV_ROWS`] rows in bf16, for every
//! projection of the step (`STASC_GEMV=0`: cuBLAS). Measured on an H200 at batch 1 (Qwen2.5-1.5B shapes), a step's
//! products took 966 us against cuBLAS's 1,227 us: the MLP's at ~3.5 TB/s, the output layer at ~4.4 TB/s, and the
//! small q/k/v and o projections in ~3.7 us each (cuBLAS: 5.4 and 6.2 us).

use tch::{Kind, Tensor};

use super::{aligned16, launch_error, Kernels};
use crate::ffi::driver::arg;
use crate::switch::Switch;

/// Most rows gemv.cu takes (`M` of its kernels).
pub const GEMV_ROWS: i64 = 4;
/// Warps per block, as `GEMV_WARPS`.
const WARPS: i64 = 4;
static SWITCH: Switch = Switch::new("STASC_GEMV", true);

/// Switches gemv.cu for decode steps of a few rows on or off for the whole process (off: cuBLAS); the default comes
/// from `STASC_GEMV` (on unless `0`).
pub fn set_gemv(on: bool) {
    SWITCH.set(on);
}

/// The kernel names gemv.cu defines: for each variant (one feature a warp, two features a warp, one feature for
/// four warps) the kernels for 1 to [`GEMV_ROWS`] rows.
pub const FUNCTIONS: [&str; 12] = [
    "stasc_gemv1x1s1_bf16",
    "stasc_gemv2x1s1_bf16",
    "stasc_gemv3x1s1_bf16",
    "stasc_gemv4x1s1_bf16",
    "stasc_gemv1x2s1_bf16",
    "stasc_gemv2x2s1_bf16",
    "stasc_gemv3x2s1_bf16",
    "stasc_gemv4x2s1_bf16",
    "stasc_gemv1x1s4_bf16",
    "stasc_gemv2x1s4_bf16",
    "stasc_gemv3x1s4_bf16",
    "stasc_gemv4x1s4_bf16",
];

impl Kernels {
    /// `x W^T + bias` over the last dimension of `x` ([.., k], at most [`GEMV_ROWS`] rows) for `weight` [n, k] and
    /// `bias` [n], all bf16; `None` when switched off ([`set_gemv`]) or the shapes do not fit (rows, dtype,
    /// contiguity, 16-byte packs).
    pub fn gemv(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>, tch::TchError> {
        let (wsize, xsize) = (weight.size(), x.size());
        let (&[n, k], Some(&xk)) = (wsize.as_slice(), xsize.last()) else { return Ok(None) };
        let rows = x.numel() as i64 / k.max(1);
        let bf16 = |t: &Tensor| t.kind() == Kind::BFloat16 && t.is_contiguous();
        let fits = SWITCH.get()
            && xk == k
            && (1..=GEMV_ROWS).contains(&rows)
            && k % 8 == 0
            && n > 0
            && bf16(x)
            && bf16(weight)
            && bias.is_none_or(|b| bf16(b) && b.size() == [n])
            && aligned16(x.data_ptr())
            && aligned16(weight.data_ptr());
        if !fits {
            return Ok(None);
        }
        let mut shape = xsize;
        *shape.last_mut().expect("checked above") = n;
        let y = Tensor::f_empty(shape.as_slice(), (Kind::BFloat16, x.device()))?;
        // (variant, features a block): long rows split over four warps (more loads in flight), two features a
        // warp once there are enough warps to fill the GPU anyway, otherwise one.
        let (variant, per_block) = match (k >= 4096, n > 4096) {
            (true, _) => (2, WARPS / 4),
            (false, true) => (1, 2 * WARPS),
            (false, false) => (0, WARPS),
        };
        let function = self.function(FUNCTIONS[variant * GEMV_ROWS as usize + rows as usize - 1])?;
        let null = std::ptr::null_mut::<std::ffi::c_void>();
        let (x_ptr, w_ptr, y_ptr) = (x.data_ptr(), weight.data_ptr(), y.data_ptr());
        let b_ptr = bias.map_or(null, |b| b.data_ptr());
        let (n_i, k_i) = (n as i32, k as i32);
        let mut args = [arg(&x_ptr), arg(&k), arg(&w_ptr), arg(&b_ptr), arg(&y_ptr), arg(&n), arg(&n_i), arg(&k_i)];
        let blocks = (n + per_block - 1) / per_block;
        // SAFETY: arguments follow stasc_gemv*_bf16 (x_stride = k, y_stride = n: both contiguous); shapes, dtype,
        // contiguity and 16-byte alignment were checked above.
        unsafe { function.launch(self.stream()?, (blocks as u32, 1, 1), (WARPS * 32) as u32, 0, &mut args) }
            .map_err(launch_error)?;
        Ok(Some(y))
    }
}
