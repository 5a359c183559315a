// libtorch's aten::_flash_attention_forward, which tch does not expose: with cumulative sequence lengths for packed
// training passes (called through the dispatcher, so autograd records its backward, FlashAttentionBackward0), and
// over padded batches for prefill after cached positions. Tensors cross the boundary as tch's handles
// (at::Tensor*).
#include <ATen/core/Tensor.h>
#include <ATen/ops/_flash_attention_forward.h>

#include <cstdint>

#include "shim.h"

// Causal attention of q [N, heads, d] over k, v [N, kv_heads, d] within each segment that cu_seqlens (int32,
// [segments + 1], starting at 0) marks out; writes a new handle to the output [N, heads, d] to *out. On failure
// returns 1 and copies the exception's message into err (err_len bytes, NUL-terminated).
extern "C" int stasc_flash_attention_varlen(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v,
                                            const at::Tensor* cu_seqlens, int64_t max_len, double scale,
                                            at::Tensor** out, char* err, size_t err_len) {
  return stasc_shim::tensor_or_error(
      [&] {
        return std::get<0>(at::_flash_attention_forward(*q, *k, *v, *cu_seqlens, *cu_seqlens, max_len, max_len, 0.0,
                                                        /*is_causal=*/true, /*return_debug_mask=*/false, scale));
      },
      out, err, err_len);
}

// Causal attention of q [B, M, heads, d] over k, v [B, N, kv_heads, d] (N >= M; strided, the last dimension
// contiguous), the causal mask aligned to the bottom right as flash attention aligns it: query i sees keys
// 0..=N - M + i. Writes a new handle to the output [B, M, heads, d] to *out. Errors as above.
extern "C" int stasc_flash_attention_causal(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v,
                                            double scale, at::Tensor** out, char* err, size_t err_len) {
  return stasc_shim::tensor_or_error(
      [&] {
        return std::get<0>(at::_flash_attention_forward(*q, *k, *v, std::nullopt, std::nullopt, q->size(1),
                                                        k->size(1), 0.0, /*is_causal=*/true,
                                                        /*return_debug_mask=*/false, scale));
      },
      out, err, err_len);
}
