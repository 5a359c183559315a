//! Launching the sort-free sampler (sampler.cu). bf16 logits under top-k/top-p take the windowed kernel (one block
//! per row, per-value histograms); the rest take radix selection: one block per row of logits when the batch fills
//! the GPU, else every row spread over several blocks (the split kernels). All pick the same tokens.

use tch::{Kind, Tensor};

use super::{aligned16, launch_error, Kernels};
use crate::ffi::driver::arg;
use crate::switch::Switch;

/// `STASC_WINDOW_SAMPLER=0` sends bf16 logits to the radix kernels too (to compare them).
static WINDOWED: Switch = Switch::new("STASC_WINDOW_SAMPLER", true);

/// Turns the windowed kernel on or off for the whole process (the GPU tests check both paths).
pub fn set_windowed_sampler(on: bool) {
    WINDOWED.set(on);
}

/// Threads per block, as `BLOCK` in sampler.cu.
const BLOCK: u32 = 512;
/// Blocks that keep every SM of a large GPU busy (an H200 has 132); batches with fewer rows than this use the split
/// kernels, with about this many blocks in all.
const TARGET_BLOCKS: i64 = 264;
/// Bytes of `SplitRow` and `SplitHist` in sampler.cu.
const SPLIT_ROW_BYTES: i64 = 56;
const SPLIT_HIST_BYTES: i64 = 256 * 4 + 256 * 8;

/// Blocks per row for a batch of `rows`: 1 (the one-block kernel) once the rows alone fill the GPU.
pub fn blocks_per_row(rows: i64) -> i64 {
    if rows >= TARGET_BLOCKS {
        1
    } else {
        ((TARGET_BLOCKS + rows - 1) / rows).min(128)
    }
}

impl Kernels {
    /// Picks one token per row of `logits` ([rows, vocab], bf16 or f32) for `uniforms` ([rows] f32), with the
    /// temperature and optional top-k / top-p: exactly the tokens of `Sampling::sample_sorted`. `None` when the
    /// shapes are not ones the kernel takes.
    pub fn sample(
        &self,
        logits: &Tensor,
        uniforms: &Tensor,
        temperature: f64,
        top_k: Option<i64>,
        top_p: Option<f64>,
    ) -> Result<Option<Tensor>, tch::TchError> {
        let (size, stride) = (logits.size(), logits.stride());
        let (&[rows, vocab], &[row_stride, 1]) = (size.as_slice(), stride.as_slice()) else { return Ok(None) };
        if rows == 0 || !(1..1 << 31).contains(&vocab) || rows >= 1 << 31 {
            return Ok(None);
        }
        let suffix = match logits.kind() {
            Kind::BFloat16 => "bf16",
            Kind::Float => "f32",
            _ => return Ok(None),
        };
        let uniforms = uniforms.f_to_kind(Kind::Float)?.f_contiguous()?;
        let out = Tensor::f_empty([rows], (Kind::Int64, logits.device()))?;
        // Plain temperature walks the ids in order; top-k/top-p order by logit (16 key bits suffice for bf16).
        let key_bits: i32 = match (top_k, top_p, logits.kind()) {
            (None, None, _) => 0,
            (_, _, Kind::BFloat16) => 16,
            _ => 32,
        };
        let id_bits = super::id_bits(vocab as usize) as i32;
        let (vocab, inv_t) = (vocab as i32, (1.0 / temperature) as f32);
        let (top_k, top_p) = (top_k.map_or(0, |k| k.min(i32::MAX as i64) as i32), top_p.unwrap_or(2.0));
        let (logits_ptr, uniforms_ptr, out_ptr) = (logits.data_ptr(), uniforms.data_ptr(), out.data_ptr());
        let windowed = key_bits == 16 && WINDOWED.get();
        let splits = blocks_per_row(rows);
        if !windowed && splits > 1 {
            let stages = [(top_k > 0 && (top_k as i64) < vocab as i64, 0), (top_p < 1.0, 1), (true, 2)];
            let plan = SplitPlan { rows, splits, vocab, row_stride, inv_t, key_bits, id_bits, top_k, top_p };
            self.sample_split(suffix, &plan, &stages, logits_ptr, uniforms_ptr, out_ptr, logits.device())?;
            return Ok(Some(out));
        }
        // One block per row: the windowed kernel, or radix selection. Rows read 8 logits per 16-byte load when
        // every row starts on a 16-byte boundary (windowed).
        let aligned = i32::from(aligned16(logits_ptr) && row_stride % 8 == 0);
        let mut args = vec![
            arg(&logits_ptr),
            arg(&uniforms_ptr),
            arg(&out_ptr),
            arg(&vocab),
            arg(&row_stride),
            arg(&inv_t),
            arg(&top_k),
            arg(&top_p),
        ];
        let name = match (windowed, suffix) {
            (true, _) => "stasc_window_sample_bf16",
            (false, "bf16") => "stasc_sample_bf16",
            _ => "stasc_sample_f32",
        };
        args.extend(if windowed { [arg(&id_bits), arg(&aligned)] } else { [arg(&key_bits), arg(&id_bits)] });
        let function = self.function(name)?;
        // SAFETY: the arguments follow the kernel's parameter list (stasc_window_sample_bf16 or stasc_sample_*); the
        // tensors live in the caching allocator, which reuses their memory only for work queued later on the same
        // stream.
        unsafe { function.launch(self.stream()?, (rows as u32, 1, 1), BLOCK, 0, &mut args) }.map_err(launch_error)?;
        Ok(Some(out))
    }

    /// The split kernels' launches for one batch: begin, max, then a histogram and a select per radix pass of every
    /// selection that `stages` switches on (top-k 0, nucleus 1, pick 2).
    #[allow(clippy::too_many_arguments)]
    fn sample_split(
        &self,
        suffix: &str,
        plan: &SplitPlan,
        stages: &[(bool, i32)],
        logits_ptr: *mut std::ffi::c_void,
        uniforms_ptr: *mut std::ffi::c_void,
        out_ptr: *mut std::ffi::c_void,
        device: tch::Device,
    ) -> Result<(), tch::TchError> {
        let stream = self.stream()?;
        let state = Tensor::f_empty([plan.rows * SPLIT_ROW_BYTES], (Kind::Uint8, device))?;
        let hist = Tensor::f_empty([plan.rows * SPLIT_HIST_BYTES], (Kind::Uint8, device))?;
        let (state_ptr, hist_ptr) = (state.data_ptr(), hist.data_ptr());
        let begin = self.function("stasc_split_begin")?;
        let max = self.function(&format!("stasc_split_max_{suffix}"))?;
        let histogram = self.function(&format!("stasc_split_hist_{suffix}"))?;
        let select = self.function(&format!("stasc_split_select_{suffix}"))?;
        let grid = (plan.splits as u32, plan.rows as u32, 1);
        let rows = (plan.rows as u32, 1, 1);
        let passes = (plan.key_bits + plan.id_bits + 7) / 8;
        // SAFETY: every argument list follows its stasc_split_* kernel; state and hist hold `rows` SplitRow and
        // SplitHist records (sizes as in sampler.cu), and all tensors live in the caching allocator, reused only
        // by work queued later on this stream.
        unsafe {
            begin.launch(stream, rows, 256, 0, &mut [arg(&state_ptr), arg(&hist_ptr)]).map_err(launch_error)?;
            let mut max_args = [arg(&logits_ptr), arg(&state_ptr), arg(&plan.vocab), arg(&plan.row_stride)];
            max.launch(stream, grid, BLOCK, 0, &mut max_args).map_err(launch_error)?;
            for &(_, stage) in stages.iter().filter(|(on, _)| *on) {
                for _ in 0..passes {
                    let mut hist_args = [
                        arg(&logits_ptr),
                        arg(&state_ptr),
                        arg(&hist_ptr),
                        arg(&plan.vocab),
                        arg(&plan.row_stride),
                        arg(&plan.inv_t),
                        arg(&plan.key_bits),
                        arg(&plan.id_bits),
                    ];
                    histogram.launch(stream, grid, BLOCK, 0, &mut hist_args).map_err(launch_error)?;
                    let mut select_args = [
                        arg(&logits_ptr),
                        arg(&state_ptr),
                        arg(&hist_ptr),
                        arg(&uniforms_ptr),
                        arg(&out_ptr),
                        arg(&plan.row_stride),
                        arg(&plan.inv_t),
                        arg(&plan.key_bits),
                        arg(&plan.id_bits),
                        arg(&stage),
                        arg(&plan.top_k),
                        arg(&plan.top_p),
                    ];
                    select.launch(stream, rows, 32, 0, &mut select_args).map_err(launch_error)?;
                }
            }
        }
        Ok(())
    }
}

/// The scalars of one split-kernel sampling call.
struct SplitPlan {
    rows: i64,
    splits: i64,
    vocab: i32,
    row_stride: i64,
    inv_t: f32,
    key_bits: i32,
    id_bits: i32,
    top_k: i32,
    top_p: f64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_batches_spread_each_row_over_several_blocks() {
        use super::blocks_per_row;
        assert_eq!(blocks_per_row(1), 128);
        assert_eq!(blocks_per_row(4), 66);
        assert_eq!(blocks_per_row(64), 5);
        assert_eq!(blocks_per_row(263), 2);
        assert_eq!(blocks_per_row(264), 1);
        assert_eq!(blocks_per_row(512), 1);
    }
}
