//! Autograd ops of training passes whose forward and backward are each one kernel (train_ops.cu): the rotary
//! embedding (one kernel each way where libtorch's ops take three and five; of a fused q/k/v output's queries and
//! keys at once) and SiLU-and-multiply over the gate and up outputs, separate or one fused output (one each way for
//! two and three, recomputing silu(gate) in backward instead of keeping it); the LM head's loss (super::loss) goes
//! through the same callback. The ops
//! themselves are the C++ shim's (src/ffi/train_ops.cpp, torch::autograd::Function), which calls back into
//! [`launch_callback`] to launch the kernels on libtorch's current stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use tch::{Kind, Tensor};

use super::{aligned16, launch_error, variant, Kernels};
use crate::ffi::driver::arg;

/// The kernels train_ops.cu defines.
pub(super) const FUNCTIONS: [&str; 9] = [
    "stasc_rotary_bf16",
    "stasc_rotary8_bf16",
    "stasc_rotary_f32",
    "stasc_silu_mul_train_bf16",
    "stasc_silu_mul_train8_bf16",
    "stasc_silu_mul_train_f32",
    "stasc_silu_mul_train_backward_bf16",
    "stasc_silu_mul_train_backward8_bf16",
    "stasc_silu_mul_train_backward_f32",
];

/// Threads per block.
const BLOCK: u32 = 256;
/// Blocks of the grid-stride loops at most.
const MAX_BLOCKS: i64 = 8192;

/// The kernels the callback runs, numbered as `StascTrainOp` in src/ffi/train_ops.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// x, cos, sin -> rotated x.
    Rotary = 0,
    /// gradient, cos, sin -> the gradient rotated back.
    RotaryBack = 1,
    /// a, b -> silu(a) * b.
    SiluMul = 2,
    /// gradient, a, b -> the gradients of a and b.
    SiluMulBack = 3,
    /// fused gate/up output -> silu(gate) * up.
    SiluMulRows = 4,
    /// gradient, fused gate/up output -> its gradient.
    SiluMulRowsBack = 5,
    /// logits, targets -> per-row loss, per-row log-sum-exp.
    CrossEntropy = 6,
    /// gradient of the per-row loss, logits, targets, log-sum-exp -> the logits' gradient.
    CrossEntropyBack = 7,
}

impl Op {
    /// The op numbered `n`.
    fn numbered(n: i32) -> Option<Op> {
        [
            Op::Rotary,
            Op::RotaryBack,
            Op::SiluMul,
            Op::SiluMulBack,
            Op::SiluMulRows,
            Op::SiluMulRowsBack,
            Op::CrossEntropy,
            Op::CrossEntropyBack,
        ]
        .into_iter()
        .find(|op| *op as i32 == n)
    }
}

fn blocks(work: i64) -> u32 {
    (work + i64::from(BLOCK) - 1).div_euclid(i64::from(BLOCK)).clamp(1, MAX_BLOCKS) as u32
}

impl Kernels {
    /// `x` [.., heads, d], its first `rot_heads` heads rotated by the tables `cos`, `sin` ([tokens, d], sin
    /// sign-folded as model/rope.rs keeps it; tokens = the product of x's leading dimensions), or with `backward` by
    /// the transposed rotation (a gradient's way back), the other heads copied. `None` when the tensors are not
    /// contiguous, of one supported dtype, or of fitting shapes.
    pub fn rotary(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        rot_heads: i64,
        backward: bool,
    ) -> Result<Option<Tensor>, tch::TchError> {
        if !matches!(x.kind(), Kind::BFloat16 | Kind::Float) || !rotary_fits(x, cos, sin) {
            return Ok(None);
        }
        let shape = x.size();
        let (heads, d) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let tokens = shape[..shape.len() - 2].iter().product::<i64>();
        let out = Tensor::f_empty(shape.as_slice(), (x.kind(), x.device()))?;
        let pairs = tokens * heads * (d / 2);
        if pairs == 0 {
            return Ok(Some(out));
        }
        // Eight pairs a thread where each half of a row is whole 16-byte packs.
        let ptrs = [x.data_ptr(), cos.data_ptr(), sin.data_ptr(), out.data_ptr()];
        let packed = x.kind() == Kind::BFloat16 && (d / 2) % 8 == 0 && ptrs.iter().all(|p| aligned16(*p));
        let work = if packed { pairs / 8 } else { pairs };
        let function = self.function(&variant("stasc_rotary", x.kind(), packed))?;
        let (heads, d, backward, rot_heads) = (heads as i32, d as i32, i32::from(backward), rot_heads as i32);
        let mut args = [
            arg(&ptrs[0]),
            arg(&ptrs[1]),
            arg(&ptrs[2]),
            arg(&ptrs[3]),
            arg(&tokens),
            arg(&heads),
            arg(&d),
            arg(&backward),
            arg(&rot_heads),
        ];
        // SAFETY: arguments follow stasc_rotary*; the four tensors are contiguous with the checked shapes and dtype
        // (16-byte aligned with whole packs for the packed kernel).
        unsafe { function.launch(self.stream()?, (blocks(work), 1, 1), BLOCK, 0, &mut args) }.map_err(launch_error)?;
        Ok(Some(out))
    }

    /// `silu(a) * b` (training: a and b the gate and up outputs, contiguous, of one shape and dtype); `None` when
    /// they are not.
    pub fn silu_mul_train(&self, a: &Tensor, b: &Tensor) -> Result<Option<Tensor>, tch::TchError> {
        if !silu_fits(a, &[b]) {
            return Ok(None);
        }
        let h = Tensor::f_empty_like(a)?;
        let n = a.numel() as i64;
        self.silu_launch("stasc_silu_mul_train", &[a.data_ptr(), b.data_ptr(), h.data_ptr()], n, n, n, a.kind())?;
        Ok(Some(h))
    }

    /// The gradients of `a` and `b` in `silu(a) * b` given the output's gradient `g`; `None` as
    /// [`Kernels::silu_mul_train`].
    pub fn silu_mul_train_backward(
        &self,
        g: &Tensor,
        a: &Tensor,
        b: &Tensor,
    ) -> Result<Option<(Tensor, Tensor)>, tch::TchError> {
        if !silu_fits(a, &[b, g]) {
            return Ok(None);
        }
        let (da, db) = (Tensor::f_empty_like(a)?, Tensor::f_empty_like(a)?);
        let ptrs = [g.data_ptr(), a.data_ptr(), b.data_ptr(), da.data_ptr(), db.data_ptr()];
        let n = a.numel() as i64;
        self.silu_launch("stasc_silu_mul_train_backward", &ptrs, n, n, n, a.kind())?;
        Ok(Some((da, db)))
    }

    /// `silu(gate) * up` of a fused gate/up output `both` [.., 2 width] (contiguous, gate first) as [.., width];
    /// `None` when it is not of a supported dtype or shape.
    pub fn silu_mul_rows_train(&self, both: &Tensor) -> Result<Option<Tensor>, tch::TchError> {
        let Some(width) = rows_width(both) else { return Ok(None) };
        let mut shape = both.size();
        *shape.last_mut().expect("rows_width checked the rank") = width;
        let h = Tensor::f_empty(shape.as_slice(), (both.kind(), both.device()))?;
        let (a, n) = (both.data_ptr(), h.numel() as i64);
        let b = half_way(a, width, both.kind());
        self.silu_launch("stasc_silu_mul_train", &[a, b, h.data_ptr()], n, width, 2 * width, both.kind())?;
        Ok(Some(h))
    }

    /// The gradient of the fused output `both` in [`Kernels::silu_mul_rows_train`] given the result's gradient `g`
    /// ([.., width], contiguous); `None` as there.
    pub fn silu_mul_rows_train_backward(&self, g: &Tensor, both: &Tensor) -> Result<Option<Tensor>, tch::TchError> {
        let Some(width) = rows_width(both) else { return Ok(None) };
        let fits = g.kind() == both.kind() && g.device() == both.device() && g.is_contiguous();
        if !fits || g.numel() * 2 != both.numel() {
            return Ok(None);
        }
        let d = Tensor::f_empty_like(both)?;
        let (a, da) = (both.data_ptr(), d.data_ptr());
        let (b, db) = (half_way(a, width, both.kind()), half_way(da, width, both.kind()));
        let n = g.numel() as i64;
        self.silu_launch(
            "stasc_silu_mul_train_backward",
            &[g.data_ptr(), a, b, da, db],
            n,
            width,
            2 * width,
            both.kind(),
        )?;
        Ok(Some(d))
    }

    /// Launches the SiLU kernel `stem` (train_ops.cu) on `ptrs` (inputs then outputs; the result and `g` are n
    /// contiguous elements, the gate/up operands rows of `width` elements `stride` apart) in `kind`: the bf16
    /// kernel that takes eight elements a thread (`stem` + `8_bf16`) where rows are whole 16-byte packs and every
    /// pointer 16-byte aligned.
    fn silu_launch(
        &self,
        stem: &str,
        ptrs: &[*mut std::ffi::c_void],
        n: i64,
        width: i64,
        stride: i64,
        kind: Kind,
    ) -> Result<(), tch::TchError> {
        if n == 0 {
            return Ok(());
        }
        let packed = kind == Kind::BFloat16 && width % 8 == 0 && stride % 8 == 0 && ptrs.iter().all(|p| aligned16(*p));
        let function = self.function(&variant(stem, kind, packed))?;
        let mut args: Vec<_> = ptrs.iter().map(arg).collect();
        args.extend([arg(&n), arg(&width), arg(&stride)]);
        let work = if packed { n / 8 } else { n };
        // SAFETY: arguments follow the stem's kernels (train_ops.cu); every pointer addresses the elements the
        // kernel reads or writes for n, width and stride, of the kernel's dtype (whole aligned packs for the packed
        // kernel).
        unsafe { function.launch(self.stream()?, (blocks(work), 1, 1), BLOCK, 0, &mut args) }.map_err(launch_error)
    }
}

/// The width of each half of a fused gate/up output the SiLU kernels take (contiguous bf16 or f32, last dimension
/// even), or `None`.
fn rows_width(both: &Tensor) -> Option<i64> {
    let last = *both.size().last()?;
    let fits = matches!(both.kind(), Kind::BFloat16 | Kind::Float) && both.is_contiguous() && last % 2 == 0;
    fits.then_some(last / 2)
}

/// `ptr` advanced by `elements` of `kind`.
fn half_way(ptr: *mut std::ffi::c_void, elements: i64, kind: Kind) -> *mut std::ffi::c_void {
    ptr.wrapping_byte_add(elements as usize * kind.elt_size_in_bytes())
}

/// Whether `x` [.., heads, d] (d even) and the tables [tokens, d] are contiguous tensors of x's dtype and device.
fn rotary_fits(x: &Tensor, cos: &Tensor, sin: &Tensor) -> bool {
    let shape = x.size();
    if shape.len() < 2 || shape[shape.len() - 1] % 2 != 0 || !x.is_contiguous() {
        return false;
    }
    let table = [shape[..shape.len() - 2].iter().product::<i64>(), shape[shape.len() - 1]];
    let fits = |t: &Tensor| t.kind() == x.kind() && t.device() == x.device() && t.is_contiguous() && t.size() == table;
    fits(cos) && fits(sin)
}

/// Whether `a` and `others` are contiguous bf16 or f32 tensors of one shape, dtype and device.
fn silu_fits(a: &Tensor, others: &[&Tensor]) -> bool {
    let fits =
        |t: &Tensor| t.kind() == a.kind() && t.device() == a.device() && t.is_contiguous() && t.size() == a.size();
    matches!(a.kind(), Kind::BFloat16 | Kind::Float) && a.is_contiguous() && others.iter().all(|t| fits(t))
}

/// Kernel launches through the ops so far, forward and backward (tests check the ops ran).
static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// How many times the training ops launched a kernel in this process, forward and backward.
pub fn train_op_launches() -> u64 {
    LAUNCHES.load(Ordering::Relaxed)
}

pub(super) fn register() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| crate::ffi::set_train_op_callback(launch_callback));
}

pub(super) fn torch_error(e: crate::ffi::FfiError) -> tch::TchError {
    tch::TchError::Torch(e.to_string())
}

/// `x` [.., heads, d], its first `rot_heads` heads rotated by `cos`, `sin` ([tokens, d]) through the kernel and the
/// others copied, recorded for autograd (its backward is the kernel's transposed rotation); `None` where the
/// kernels do not apply (CPU, no shim, switched off, shapes), and the caller uses libtorch ops.
pub fn rotary_autograd(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    rot_heads: i64,
) -> Result<Option<Tensor>, tch::TchError> {
    // The kernel's own checks, made here so that the op never fails on a shape the kernel refuses.
    if super::for_tensor(x).is_none() || !rotary_fits(x, cos, sin) {
        return Ok(None);
    }
    register();
    crate::ffi::rotary(x, cos, sin, rot_heads).map(Some).map_err(torch_error)
}

/// `silu(a) * b` through the kernel, recorded for autograd (its backward one kernel too); `None` where the kernels
/// do not apply, and the caller uses libtorch ops.
pub fn silu_mul_autograd(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>, tch::TchError> {
    if super::for_tensor(a).is_none() || !silu_fits(a, &[b]) {
        return Ok(None);
    }
    register();
    crate::ffi::silu_mul(a, b).map(Some).map_err(torch_error)
}

/// `silu(gate) * up` of a fused gate/up output `both` [.., 2 width] through the kernel, recorded for autograd (its
/// backward one kernel too, writing the fused output's gradient); `None` where the kernels do not apply.
pub fn silu_mul_rows_autograd(both: &Tensor) -> Result<Option<Tensor>, tch::TchError> {
    if super::for_tensor(both).is_none() || rows_width(both).is_none() {
        return Ok(None);
    }
    register();
    crate::ffi::silu_mul_rows(both).map(Some).map_err(torch_error)
}

/// What src/ffi/train_ops.cpp calls to run kernel `op` on `n_in` borrowed input handles, writing `n_out` new
/// handles (which the shim then owns); 0 on success. Never unwinds into C++.
extern "C" fn launch_callback(
    op: i32,
    inputs: *const *mut std::ffi::c_void,
    n_in: i32,
    outputs: *mut *mut std::ffi::c_void,
    n_out: i32,
) -> i32 {
    let run = || -> Option<Vec<Tensor>> {
        // SAFETY: the shim passes n_in live at::Tensor handles that it keeps owning: ManuallyDrop never frees them.
        let handles = unsafe { std::slice::from_raw_parts(inputs, usize::try_from(n_in).ok()?) };
        let ins: Vec<_> =
            handles.iter().map(|p| std::mem::ManuallyDrop::new(unsafe { Tensor::from_ptr(p.cast()) })).collect();
        let kernels = super::for_tensor(ins.first()?)?;
        let outs = match (Op::numbered(op)?, ins.as_slice()) {
            (Op::Rotary, [x, cos, sin, rot]) => {
                vec![kernels.rotary(x, cos, sin, rot.int64_value(&[]), false).ok()??]
            }
            (Op::RotaryBack, [g, cos, sin, rot]) => {
                vec![kernels.rotary(g, cos, sin, rot.int64_value(&[]), true).ok()??]
            }
            (Op::SiluMul, [a, b]) => vec![kernels.silu_mul_train(a, b).ok()??],
            (Op::SiluMulBack, [g, a, b]) => {
                let (da, db) = kernels.silu_mul_train_backward(g, a, b).ok()??;
                vec![da, db]
            }
            (Op::SiluMulRows, [both]) => vec![kernels.silu_mul_rows_train(both).ok()??],
            (Op::SiluMulRowsBack, [g, both]) => vec![kernels.silu_mul_rows_train_backward(g, both).ok()??],
            (Op::CrossEntropy, [logits, targets]) => {
                let (loss, lse) = kernels.cross_entropy(logits, targets).ok()??;
                vec![loss, lse]
            }
            (Op::CrossEntropyBack, [g, logits, targets, lse]) => {
                vec![kernels.cross_entropy_backward(g, logits, targets, lse).ok()??]
            }
            _ => return None,
        };
        Some(outs)
    };
    match std::panic::catch_unwind(run) {
        Ok(Some(outs)) if outs.len() == usize::try_from(n_out).unwrap_or(0) => {
            LAUNCHES.fetch_add(1, Ordering::Relaxed);
            for (k, mut t) in outs.into_iter().enumerate() {
                // SAFETY: the shim passes n_out slots; it takes each handle over (and deletes it).
                unsafe { *outputs.add(k) = t.as_mut_ptr().cast() };
                std::mem::forget(t);
            }
            0
        }
        _ => 1,
    }
}
