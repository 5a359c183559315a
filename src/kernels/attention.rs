//! Launching attention.cu's kernels (compiled per head size and group on first use): split-K decode attention
//! over the cache (with a prefix shared by every row attended to once for all of them; phase 1 in bf16 on tensor
//! cores from attention_mma.cu where the shape allows), and the rotary embedding fused with the cache write.

use tch::{Kind, Tensor};

use super::{launch_error, Kernels};
use crate::ffi::driver::{arg, Function};
use crate::switch::Switch;

/// Most cache positions per block of phase 1, as `CHUNK` in attention.cu.
const CHUNK: i64 = 128;
/// Threads per block of phase 1, as `BLOCK_THREADS`.
const BLOCK: u32 = 128;
/// Phase-1 blocks a small batch spreads over: chunks shrink until there are this many. More and shorter chunks do
/// not pay at batch 1, where every block's serial steps set the pace and the combine loops over the chunks: on an
/// H200 (132 SMs) a target of 64 ran a 1,024-token prompt at 521-533 tok/s against 494-506 with 264, and the same
/// within noise at 256 tokens and at batches 4 to 256 (scripts/kernels/h200_b1_2026-12-01.txt, calls 7 and 8).
const TARGET_BLOCKS: i64 = 64;

/// Positions per phase-1 block for `rows` x `kv_heads` rows of caches of `positions` positions: the longest chunk
/// (at most [`CHUNK`], at least 16) that still gives [`TARGET_BLOCKS`] blocks.
pub fn chunk_len(rows: i64, kv_heads: i64, positions: i64) -> i64 {
    let mut len = CHUNK;
    while len > 16 && rows * kv_heads * ((positions + len - 1) / len) < TARGET_BLOCKS {
        len /= 2;
    }
    len
}

const NAMES: [&str; 9] = [
    "stasc_decode_attention_bf16",
    "stasc_decode_attention_combine_bf16",
    "stasc_rope_kv_write_bf16",
    "stasc_prefix_softmax_bf16",
    "stasc_decode_attention_f32",
    "stasc_decode_attention_combine_f32",
    "stasc_rope_kv_write_f32",
    "stasc_prefix_softmax_f32",
    "stasc_decode_attention_mma_bf16",
];

/// The kernels of one dtype.
struct ForKind<'a> {
    phase1: &'a Function,
    /// Phase 1 on tensor cores (attention_mma.cu), where [`mma_applies`].
    mma: Option<&'a Function>,
    combine: &'a Function,
    rope: &'a Function,
    prefix_softmax: &'a Function,
}

static MMA: Switch = Switch::new("STASC_MMA_ATTENTION", true);

/// Switches phase 1 of bf16 decode attention on tensor cores (attention_mma.cu) on or off for the whole process
/// (off: the CUDA-core kernel); the default comes from `STASC_MMA_ATTENTION` (on unless `0`).
pub fn set_mma_attention(on: bool) {
    MMA.set(on);
}

/// Whether attention_mma.cu takes a shape on a device: mma.sync needs sm_80, the kernel heads of 64 or 128
/// dimensions (a block's values in 48 KB of shared memory) and groups of at most 8 queries.
fn mma_applies(arch: u32, head_dim: i64, group: i64) -> bool {
    arch >= 80 && matches!(head_dim, 64 | 128) && group <= 8
}

/// attention.cu compiled for one (head_dim, group).
#[derive(Debug, Clone)]
pub struct AttentionKernels {
    functions: Vec<Function>,
    /// Whether [`mma_applies`] to this shape on this device.
    mma: bool,
}

impl AttentionKernels {
    /// The kernels for `kind`.
    fn for_kind(&self, kind: Kind) -> Option<ForKind<'_>> {
        let (f, mma) = match kind {
            Kind::BFloat16 => (&self.functions[..4], self.mma.then(|| &self.functions[8])),
            Kind::Float => (&self.functions[4..8], None),
            _ => return None,
        };
        Some(ForKind { phase1: &f[0], mma, combine: &f[1], rope: &f[2], prefix_softmax: &f[3] })
    }
}

/// The compile options of one shape.
pub fn defines(head_dim: i64, group: i64) -> Vec<String> {
    vec![format!("-DHEAD_DIM={head_dim}"), format!("-DGROUP={group}")]
}

/// Whether attention.cu takes this shape: whole warps over the head (head_dim a multiple of 32, at most 256) and
/// the group's registers and shared memory in bounds.
pub fn supported(head_dim: i64, group: i64) -> bool {
    head_dim % 32 == 0 && (32..=256).contains(&head_dim) && (1..=8).contains(&group) && group * head_dim <= 2048
}

fn as_i64(t: &Tensor) -> bool {
    t.kind() == Kind::Int64 && t.is_contiguous()
}

impl Kernels {
    fn attention_kernels(&self, head_dim: i64, group: i64) -> Option<AttentionKernels> {
        if !supported(head_dim, group) {
            return None;
        }
        let mut compiled = self.attention.lock().ok()?;
        compiled
            .entry((head_dim, group))
            .or_insert_with(|| {
                let loaded = super::compile("attention.cu", super::ATTENTION_SOURCE, self.arch, &defines(head_dim, group))
                    .and_then(|cubin| self.context.load(&cubin, &NAMES));
                match loaded {
                    Ok(functions) => {
                        Some(AttentionKernels { functions, mma: mma_applies(self.arch, head_dim, group) })
                    }
                    Err(why) => {
                        eprintln!("fused decode attention unavailable for head_dim {head_dim}, group {group} ({why}); using libtorch ops");
                        None
                    }
                }
            })
            .clone()
    }

    /// Attention of one new token per row over its cache row: `q` [kv_heads, rows, group, head_dim] (contiguous, as
    /// [`Kernels::rope_kv_write`] returns it), caches [rows, kv_heads, max_len, head_dim] (contiguous, row r = batch row r), and each
    /// row attending to its positions 0..=`positions[r]` ([rows] int64). `prefix`, when given, is K and V
    /// [1, kv_heads, len, head_dim] of positions 0..len that every row's cache holds a copy of: they are attended to
    /// once for all rows and the copies are not read. Returns [rows, 1, heads * head_dim], or `None` for shapes the
    /// kernel does not take.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_attention(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        positions: &Tensor,
        attend_len: i64,
        scale: f64,
        prefix: Option<(&Tensor, &Tensor)>,
    ) -> Result<Option<Tensor>, tch::TchError> {
        let (size, cache) = (q.size(), k_cache.size());
        let (&[q_kv_heads, rows, group, head_dim], &[cache_rows, kv_heads, max_len, cache_dim]) =
            (size.as_slice(), cache.as_slice())
        else {
            return Ok(None);
        };
        let heads = kv_heads * group;
        let fits = q.is_contiguous()
            && q_kv_heads == kv_heads
            && cache_rows == rows
            && cache_dim == head_dim
            && kv_heads > 0
            && k_cache.is_contiguous()
            && v_cache.is_contiguous()
            && v_cache.size() == cache
            && k_cache.kind() == q.kind()
            && v_cache.kind() == q.kind()
            && as_i64(positions)
            && positions.numel() as i64 == rows
            && attend_len <= max_len;
        if !fits {
            return Ok(None);
        }
        let Some(kernels) = self.attention_kernels(head_dim, group) else { return Ok(None) };
        let Some(f) = kernels.for_kind(q.kind()) else { return Ok(None) };
        let shared = match prefix {
            Some((k, v)) => super::prefix::partials(f.prefix_softmax, q, k, v, attend_len, scale, self.stream()?),
            None => None,
        };
        let skip = shared.as_ref().map_or(0, |s| s.len);
        let own = attend_len - skip;
        // Chunks follow from the cache's size, not from this step's attended length: a row's sums are then the
        // same whichever rows share its step (and whichever graph bucket runs it).
        let chunk = chunk_len(rows, kv_heads, (max_len - skip).max(1));
        let chunks = (own + chunk - 1) / chunk;
        let device = q.device();
        let scratch_o = Tensor::f_empty([rows * heads * chunks * head_dim], (Kind::Float, device))?;
        let scratch_ml = Tensor::f_empty([rows * heads * chunks * 2], (Kind::Float, device))?;
        let out = Tensor::f_empty([rows, 1, heads * head_dim], (q.kind(), device))?;
        let stream = self.stream()?;
        let (q_ptr, k_ptr, v_ptr, p_ptr) = (q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), positions.data_ptr());
        let (o_ptr, ml_ptr, out_ptr) = (scratch_o.data_ptr(), scratch_ml.data_ptr(), out.data_ptr());
        let (prefix_o, prefix_ml) = match &shared {
            Some(s) => (s.o.data_ptr(), s.ml.data_ptr()),
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        let (kv_i, chunks_i, heads_i, scale_f) = (kv_heads as i32, chunks as i32, heads as i32, scale as f32);
        let (chunk_i, skip_i) = (chunk as i32, skip as i32);
        let mut args1 = [
            arg(&q_ptr),
            arg(&k_ptr),
            arg(&v_ptr),
            arg(&p_ptr),
            arg(&o_ptr),
            arg(&ml_ptr),
            arg(&kv_i),
            arg(&max_len),
            arg(&chunks_i),
            arg(&chunk_i),
            arg(&skip_i),
            arg(&scale_f),
        ];
        let mut args2 = [
            arg(&o_ptr),
            arg(&ml_ptr),
            arg(&p_ptr),
            arg(&out_ptr),
            arg(&heads_i),
            arg(&chunks_i),
            arg(&chunk_i),
            arg(&skip_i),
            arg(&prefix_o),
            arg(&prefix_ml),
        ];
        // SAFETY: arguments follow the kernels' parameter lists, shapes and strides were checked above, and the
        // scratch tensors live in the caching allocator (reused only by work queued later on this stream).
        unsafe {
            f.mma
                .filter(|_| MMA.get())
                .unwrap_or(f.phase1)
                .launch(stream, (chunks as u32, kv_heads as u32, rows as u32), BLOCK, 0, &mut args1)
                .map_err(launch_error)?;
            f.combine
                .launch(stream, (heads as u32, rows as u32, 1), head_dim as u32, 0, &mut args2)
                .map_err(launch_error)?;
        }
        Ok(Some(out))
    }

    /// Rotates the new token's queries and keys and writes its keys and values into the caches at `positions`:
    /// `qkv` [rows, 1, (heads + 2 kv_heads) * head_dim] (the fused projection's output, rows may be strided), `cos`
    /// and `sin_signed` [max positions, head_dim] (the full rotary tables), caches as for `decode_attention`.
    /// Returns the rotated queries [kv_heads, rows, heads / kv_heads, head_dim] (the layout
    /// [`Kernels::decode_attention`] takes), or `None` for shapes the kernel does not take.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv_write(
        &self,
        qkv: &Tensor,
        cos: &Tensor,
        sin_signed: &Tensor,
        positions: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        heads: i64,
    ) -> Result<Option<Tensor>, tch::TchError> {
        let (size, stride, cache) = (qkv.size(), qkv.stride(), k_cache.size());
        let (&[rows, 1, width], &[qkv_stride, _, 1], &[cache_rows, kv_heads, max_len, head_dim]) =
            (size.as_slice(), stride.as_slice(), cache.as_slice())
        else {
            return Ok(None);
        };
        let same = |t: &Tensor| t.kind() == qkv.kind() && t.is_contiguous();
        let fits = width == (heads + 2 * kv_heads) * head_dim
            && cache_rows == rows
            && kv_heads > 0
            && heads % kv_heads == 0
            && same(k_cache)
            && same(v_cache)
            && v_cache.size() == cache
            && same(cos)
            && same(sin_signed)
            && cos.size().get(1) == Some(&head_dim)
            && sin_signed.size() == cos.size()
            && as_i64(positions)
            && positions.numel() as i64 == rows;
        if !fits {
            return Ok(None);
        }
        let Some(kernels) = self.attention_kernels(head_dim, heads / kv_heads) else { return Ok(None) };
        let Some(f) = kernels.for_kind(qkv.kind()) else { return Ok(None) };
        let q = Tensor::f_empty([kv_heads, rows, heads / kv_heads, head_dim], (qkv.kind(), qkv.device()))?;
        let ptrs = [qkv, cos, sin_signed, positions, &q, k_cache, v_cache].map(|t| t.data_ptr());
        let (heads_i, kv_i) = (heads as i32, kv_heads as i32);
        let mut args = [
            arg(&ptrs[0]),
            arg(&qkv_stride),
            arg(&ptrs[1]),
            arg(&ptrs[2]),
            arg(&ptrs[3]),
            arg(&ptrs[4]),
            arg(&ptrs[5]),
            arg(&ptrs[6]),
            arg(&heads_i),
            arg(&kv_i),
            arg(&max_len),
        ];
        let grid = ((heads + 2 * kv_heads) as u32, rows as u32, 1);
        // SAFETY: arguments follow stasc_rope_kv_write_*; shapes, dtypes and contiguity were checked above. The
        // positions must lie inside the tables and caches, as for the eager path's index_put_.
        unsafe { f.rope.launch(self.stream()?, grid, head_dim as u32, 0, &mut args) }.map_err(launch_error)?;
        Ok(Some(q))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_batches_get_short_chunks_large_ones_full_chunks() {
        use super::chunk_len;
        assert_eq!(chunk_len(256, 2, 512), 128);
        assert_eq!(chunk_len(16, 2, 512), 128);
        assert_eq!(chunk_len(4, 2, 512), 64);
        assert_eq!(chunk_len(1, 2, 1280), 32);
        assert_eq!(chunk_len(1, 2, 384), 16);
        assert_eq!(chunk_len(1, 2, 5000), 128);
        assert_eq!(chunk_len(1, 1, 1), 16);
    }
}
