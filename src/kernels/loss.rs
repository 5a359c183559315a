//! The LM head's loss in training passes as one kernel each way (loss.cu): each row's cross-entropy in f32 from
//! the logits in their dtype, and the logits' gradient, where libtorch's loss copies the logits to f32 and runs
//! log_softmax and nll_loss forward and backward over the copies. An autograd op of the C++ shim
//! (src/ffi/train_ops.cpp), launched through super::train_ops' callback.

use tch::{Kind, Tensor};

use super::train_ops::{register, torch_error};
use super::{aligned16, launch_error, variant, Kernels};
use crate::ffi::driver::arg;

/// The kernels loss.cu defines.
pub(super) const FUNCTIONS: [&str; 6] = [
    "stasc_cross_entropy_bf16",
    "stasc_cross_entropy8_bf16",
    "stasc_cross_entropy_f32",
    "stasc_cross_entropy_backward_bf16",
    "stasc_cross_entropy_backward8_bf16",
    "stasc_cross_entropy_backward_f32",
];

/// Threads per block (CE_THREADS in loss.cu).
const CE_THREADS: u32 = 1024;

impl Kernels {
    /// Cross-entropy of `logits` [rows, vocab] (contiguous bf16 or f32) against `targets` ([rows] int64; outside
    /// [0, vocab), as -100: ignored), in f32: each row's loss and log-sum-exp ([rows] f32 each); `None` when the
    /// tensors do not fit.
    pub fn cross_entropy(&self, logits: &Tensor, targets: &Tensor) -> Result<Option<(Tensor, Tensor)>, tch::TchError> {
        let Some((rows, vocab)) = cross_entropy_fits(logits, targets) else { return Ok(None) };
        let f32s = || Tensor::f_empty([rows], (Kind::Float, logits.device()));
        let (loss, lse) = (f32s()?, f32s()?);
        if rows > 0 {
            let ptrs = [logits.data_ptr(), targets.data_ptr(), lse.data_ptr(), loss.data_ptr()];
            self.cross_entropy_launch("stasc_cross_entropy", &ptrs, rows, vocab, logits.kind())?;
        }
        Ok(Some((loss, lse)))
    }

    /// The gradient of `logits` given the per-row loss's gradient `g` ([rows] f32) and the forward's `lse`; `None`
    /// as [`Kernels::cross_entropy`].
    pub fn cross_entropy_backward(
        &self,
        g: &Tensor,
        logits: &Tensor,
        targets: &Tensor,
        lse: &Tensor,
    ) -> Result<Option<Tensor>, tch::TchError> {
        let Some((rows, vocab)) = cross_entropy_fits(logits, targets) else { return Ok(None) };
        let row_floats = |t: &Tensor| {
            t.kind() == Kind::Float && t.device() == logits.device() && t.is_contiguous() && t.size() == [rows]
        };
        if !row_floats(g) || !row_floats(lse) {
            return Ok(None);
        }
        let grad = Tensor::f_empty_like(logits)?;
        if rows > 0 {
            let ptrs = [g.data_ptr(), logits.data_ptr(), targets.data_ptr(), lse.data_ptr(), grad.data_ptr()];
            self.cross_entropy_launch("stasc_cross_entropy_backward", &ptrs, rows, vocab, logits.kind())?;
        }
        Ok(Some(grad))
    }

    /// Launches the cross-entropy kernel `stem` on `ptrs` (its pointer arguments), a block per row: the bf16 kernel
    /// that reads eight logits a load where rows are whole 16-byte packs.
    fn cross_entropy_launch(
        &self,
        stem: &str,
        ptrs: &[*mut std::ffi::c_void],
        rows: i64,
        vocab: i64,
        kind: Kind,
    ) -> Result<(), tch::TchError> {
        let packed = kind == Kind::BFloat16 && vocab % 8 == 0 && ptrs.iter().all(|p| aligned16(*p));
        let function = self.function(&variant(stem, kind, packed))?;
        let mut args: Vec<_> = ptrs.iter().map(arg).collect();
        args.push(arg(&vocab));
        // SAFETY: arguments follow the stem's kernels (loss.cu): logits [rows, vocab] contiguous of the
        // kernel's dtype (rows of whole aligned packs for the packed kernel), int64 targets and f32 [rows] vectors;
        // a block per row.
        unsafe { function.launch(self.stream()?, (rows as u32, 1, 1), CE_THREADS, 0, &mut args) }.map_err(launch_error)
    }
}

/// (rows, vocab) of contiguous bf16 or f32 `logits` [rows, vocab] and int64 `targets` [rows] on one device, with
/// rows a grid can hold; `None` otherwise.
fn cross_entropy_fits(logits: &Tensor, targets: &Tensor) -> Option<(i64, i64)> {
    let &[rows, vocab] = logits.size().as_slice() else { return None };
    let fits = matches!(logits.kind(), Kind::BFloat16 | Kind::Float)
        && logits.is_contiguous()
        && targets.kind() == Kind::Int64
        && targets.device() == logits.device()
        && targets.is_contiguous()
        && targets.size() == [rows]
        && rows <= i64::from(i32::MAX);
    fits.then_some((rows, vocab))
}

/// The per-row cross-entropy ([rows] f32) of `logits` [rows, vocab] against `targets` through the kernels,
/// recorded for autograd (backward one kernel writing the logits' gradient); `None` where the kernels do not apply,
/// and the caller uses libtorch's loss.
pub fn cross_entropy_autograd(logits: &Tensor, targets: &Tensor) -> Result<Option<Tensor>, tch::TchError> {
    if super::for_tensor(logits).is_none() || cross_entropy_fits(logits, targets).is_none() {
        return Ok(None);
    }
    register();
    crate::ffi::cross_entropy_rows(logits, targets).map(Some).map_err(torch_error)
}
