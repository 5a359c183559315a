//! Launching the sort-free sampler (sampler.cu): one block per row of logits.

use tch::{Kind, Tensor};

use super::{launch_error, Kernels};
use crate::ffi::driver::arg;

/// Threads per block, as `BLOCK` in sampler.cu.
const BLOCK: u32 = 512;

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
        let name = match logits.kind() {
            Kind::BFloat16 => "stasc_sample_bf16",
            Kind::Float => "stasc_sample_f32",
            _ => return Ok(None),
        };
        let function = self.function(name)?;
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
        let mut args = [
            arg(&logits_ptr),
            arg(&uniforms_ptr),
            arg(&out_ptr),
            arg(&vocab),
            arg(&row_stride),
            arg(&inv_t),
            arg(&top_k),
            arg(&top_p),
            arg(&key_bits),
            arg(&id_bits),
        ];
        // SAFETY: the arguments follow stasc_sample_*'s parameter list; the tensors live in the caching allocator,
        // which reuses their memory only for work queued later on the same stream.
        unsafe { function.launch(self.stream()?, (rows as u32, 1, 1), BLOCK, 0, &mut args) }.map_err(launch_error)?;
        Ok(Some(out))
    }
}
