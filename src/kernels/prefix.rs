//! Attention to a prompt prefix that every row of a decode step shares (a phase's instruction and few-shot
//! messages): read once for all rows with two batched products (tensor cores) around attention.cu's
//! stasc_prefix_softmax, instead of once per row. Its result enters the split-K combine as one more chunk
//! ([`super::Kernels::decode_attention`]); the rows keep their own copies of the prefix, which prefill, the libtorch
//! path and `STASC_SHARED_PREFIX_ATTENTION=0` read.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Kind, Tensor};

use super::launch_error;
use crate::ffi::driver::{arg, Function};

/// Threads per block of stasc_prefix_softmax, as `BLOCK_THREADS` in attention.cu.
const BLOCK: u32 = 128;

/// `STASC_SHARED_PREFIX_ATTENTION=0` makes every row read its own copy of a shared prefix (to compare the paths).
static SHARED_PREFIX: crate::switch::Switch = crate::switch::Switch::new("STASC_SHARED_PREFIX_ATTENTION", true);

/// Set when libtorch could not run the prefix's batched products on this build (then rows read their copies).
static PREFIX_FAILED: AtomicBool = AtomicBool::new(false);

/// Turns attending to a shared prefix once for all rows on or off for the whole process (rows always hold copies
/// of it, so both give the same attention up to rounding).
pub fn set_shared_prefix_attention(on: bool) {
    SHARED_PREFIX.set(on);
}

/// The prefix's partials for queries `q` [kv_heads, rows, group, head_dim] and the prefix's K and V
/// [1, kv_heads, len, head_dim], or `None` when the switch is off, the shapes or dtypes do not fit, the prefix is
/// not shorter than `attend_len`, or libtorch cannot run the products (said once; rows then read their copies).
pub(super) fn partials(
    prefix_softmax: &Function,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    attend_len: i64,
    scale: f64,
    stream: *mut std::ffi::c_void,
) -> Option<PrefixPartials> {
    let (shape, q_shape) = (k.size(), q.size());
    let fits = SHARED_PREFIX.get()
        && !PREFIX_FAILED.load(Ordering::Relaxed)
        && shape.len() == 4
        && q_shape.len() == 4
        && shape[..2] == [1, q_shape[0]]
        && shape[3] == q_shape[3]
        && shape[2] < attend_len
        && v.size() == shape
        && k.kind() == q.kind()
        && v.kind() == q.kind();
    if !fits {
        return None;
    }
    match products(prefix_softmax, q, k, v, scale, stream) {
        Ok(partials) => Some(partials),
        Err(why) => {
            // Rows hold copies of the prefix: reading them instead gives the same attention.
            if !PREFIX_FAILED.swap(true, Ordering::Relaxed) {
                eprintln!("note: shared-prefix attention unavailable ({why}); rows read their own copies");
            }
            None
        }
    }
}

/// The shared prefix's share of every row's attention, as one more chunk for the combine.
pub(super) struct PrefixPartials {
    /// The unnormalised output, [kv_heads, rows * group, head_dim] f32.
    pub(super) o: Tensor,
    /// [kv_heads, rows * group, 2] f32: max and sum.
    pub(super) ml: Tensor,
    /// The prefix's positions.
    pub(super) len: i64,
}

/// Attends every row's queries to the prefix K/V ([1, kv_heads, len, head_dim]) at once: the dot products as one
/// batched product per K/V head (f32 results), the softmax numerators by stasc_prefix_softmax, and their product
/// with the values (f32 results). The prefix is read once per step instead of once per row.
fn products(
    prefix_softmax: &Function,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    stream: *mut std::ffi::c_void,
) -> Result<PrefixPartials, tch::TchError> {
    let (kv_heads, rows, group, head_dim) = (q.size()[0], q.size()[1], q.size()[2], q.size()[3]);
    let len = k.size()[2];
    let n = rows * group;
    let grouped = q.f_view([kv_heads, n, head_dim])?;
    let keys = k.f_view([kv_heads, len, head_dim])?;
    let values = v.f_view([kv_heads, len, head_dim])?;
    // bf16 operands with f32 results: the dot products keep the precision the per-row kernel gives them.
    let product = |a: &Tensor, b: &Tensor| match a.kind() {
        Kind::Float => a.f_bmm(b),
        _ => a.f_bmm_dtype(b, Kind::Float),
    };
    let s = product(&grouped, &keys.f_transpose(1, 2)?)?;
    let p = Tensor::f_empty([kv_heads, n, len], (q.kind(), q.device()))?;
    let ml = Tensor::f_empty([kv_heads, n, 2], (Kind::Float, q.device()))?;
    let (s_ptr, p_ptr, ml_ptr) = (s.data_ptr(), p.data_ptr(), ml.data_ptr());
    let (len_i, scale_f) = (len as i32, scale as f32);
    let mut args = [arg(&s_ptr), arg(&p_ptr), arg(&ml_ptr), arg(&len_i), arg(&scale_f)];
    // SAFETY: s is a fresh contiguous [kv_heads * n, len] f32 tensor, p and ml are allocated to the kernel's
    // layout, and all three live in the caching allocator on this stream.
    unsafe { prefix_softmax.launch(stream, ((kv_heads * n) as u32, 1, 1), BLOCK, 0, &mut args) }
        .map_err(launch_error)?;
    let o = product(&p, &values)?;
    Ok(PrefixPartials { o, ml, len })
}
