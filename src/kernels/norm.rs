//! Launching norm.cu's kernels: RMSNorm with the residual add, and SiLU-and-multiply.

use tch::{Kind, Tensor};

use super::{aligned16, launch_error, Kernels};
use crate::ffi::driver::arg;

/// Threads per block of the norm kernel, as `BLOCK` in norm.cu.
const NORM_BLOCK: u32 = 256;

fn suffix(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::BFloat16 => Some("bf16"),
        Kind::Float => Some("f32"),
        _ => None,
    }
}

impl Kernels {
    /// `(x + residual, rms_norm(x + residual) * weight)` over the last dimension (or `(x, rms_norm(x) * weight)`
    /// without a residual); `None` when the inputs are not contiguous tensors of one supported dtype.
    pub fn add_rms_norm(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        weight: &Tensor,
        eps: f64,
    ) -> Result<Option<(Tensor, Tensor)>, tch::TchError> {
        let Some(suffix) = suffix(x.kind()) else { return Ok(None) };
        let hidden = *x.size().last().unwrap_or(&0);
        let same = |t: &Tensor| t.kind() == x.kind() && t.is_contiguous();
        if !same(x)
            || !same(weight)
            || weight.size() != [hidden]
            || residual.is_some_and(|r| !same(r) || r.size() != x.size())
        {
            return Ok(None);
        }
        let rows = x.numel() as i64 / hidden.max(1);
        let normed = x.f_empty_like()?;
        let sum = match residual {
            Some(_) => x.f_empty_like()?,
            None => x.shallow_clone(),
        };
        let null = std::ptr::null_mut::<std::ffi::c_void>();
        let (x_ptr, w_ptr, n_ptr) = (x.data_ptr(), weight.data_ptr(), normed.data_ptr());
        let (r_ptr, s_ptr) = match residual {
            Some(r) => (r.data_ptr(), sum.data_ptr()),
            None => (null, null),
        };
        // Eight elements a thread where rows are whole 16-byte packs.
        let packed = suffix == "bf16"
            && hidden % 8 == 0
            && hidden <= 8 * 1024
            && [x_ptr, w_ptr, n_ptr, r_ptr, s_ptr].iter().all(|&p| aligned16(p));
        let (name, threads) = match (packed, suffix) {
            (true, _) => ("stasc_add_rms_norm8_bf16", ((hidden / 8 + 31) / 32 * 32) as u32),
            (false, "bf16") => ("stasc_add_rms_norm_bf16", NORM_BLOCK),
            _ => ("stasc_add_rms_norm_f32", NORM_BLOCK),
        };
        let function = self.function(name)?;
        let (hidden_i, eps_f) = (hidden as i32, eps as f32);
        let mut args = [arg(&x_ptr), arg(&r_ptr), arg(&w_ptr), arg(&s_ptr), arg(&n_ptr), arg(&hidden_i), arg(&eps_f)];
        if rows > 0 {
            // SAFETY: arguments follow stasc_add_rms_norm*; every tensor is contiguous with the checked shapes (and,
            // for the packed kernel, 16-byte aligned with whole packs per row).
            unsafe { function.launch(self.stream()?, (rows as u32, 1, 1), threads, 0, &mut args) }
                .map_err(launch_error)?;
        }
        Ok(Some((sum, normed)))
    }

    /// `silu(gate) * up` for `gate_up` = [.., 2 * width] (gate first); `None` when not contiguous bf16/f32.
    pub fn silu_mul(&self, gate_up: &Tensor, width: i64) -> Result<Option<Tensor>, tch::TchError> {
        let Some(suffix) = suffix(gate_up.kind()) else { return Ok(None) };
        let mut shape = gate_up.size();
        if !gate_up.is_contiguous() || shape.last() != Some(&(2 * width)) {
            return Ok(None);
        }
        let rows = gate_up.numel() as i64 / (2 * width).max(1);
        *shape.last_mut().expect("checked above") = width;
        let out = Tensor::f_empty(shape.as_slice(), (gate_up.kind(), gate_up.device()))?;
        let (in_ptr, out_ptr, width_i) = (gate_up.data_ptr(), out.data_ptr(), width as i32);
        // Eight columns a thread where rows are whole 16-byte packs.
        let packed = suffix == "bf16" && width % 8 == 0 && aligned16(in_ptr) && aligned16(out_ptr);
        let (name, columns) = match (packed, suffix) {
            (true, _) => ("stasc_silu_mul8_bf16", width / 8),
            (false, "bf16") => ("stasc_silu_mul_bf16", width),
            _ => ("stasc_silu_mul_f32", width),
        };
        let function = self.function(name)?;
        let mut args = [arg(&in_ptr), arg(&out_ptr), arg(&rows), arg(&width_i)];
        // x covers a row's columns, y the rows (the kernel loops past 65,535 of them).
        let grid = (((columns + 255) / 256).clamp(1, 65_535) as u32, rows.clamp(1, 65_535) as u32, 1);
        if rows * width > 0 {
            // SAFETY: arguments follow stasc_silu_mul_*; both tensors are contiguous with the checked shapes.
            unsafe { function.launch(self.stream()?, grid, 256, 0, &mut args) }.map_err(launch_error)?;
        }
        Ok(Some(out))
    }
}
