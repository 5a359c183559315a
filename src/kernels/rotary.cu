// The rotary embedding of training passes (model/rope.rs's rotate-half layout), forward and backward, a thread
// taking the pair (i, i + h) of one token's head, h = d / 2, sin the sign-folded table (first half negated):
//   forward:  out_i = x_i cos_i + x_{i+h} sin_i,   out_{i+h} = x_{i+h} cos_{i+h} + x_i sin_{i+h}
//   backward: gx_i  = g_i cos_i + g_{i+h} sin_{i+h}, gx_{i+h} = g_{i+h} cos_{i+h} + g_i sin_i
// (the backward is the transpose of the forward's rotation). libtorch's ops take three kernels forward (roll, mul,
// addcmul, broadcasting the tables over heads without vector loads) and five backward. The forward rounds as those
// ops store: the product x_i cos_i to the dtype, then the multiply-add; the backward rounds once.
template <typename T>
__device__ void rotary(const T* x, const T* cos, const T* sin, T* out, long tokens, int heads, int d, int backward) {
  const T* tag = (const T*)0;
  const int h = d / 2;
  const long pairs = tokens * heads * h;
  const long stride = (long)gridDim.x * blockDim.x;
  for (long k = (long)blockIdx.x * blockDim.x + threadIdx.x; k < pairs; k += stride) {
    const long row = k / h;
    const int i = (int)(k - row * h);
    const long token = row / heads;
    const T* xr = x + row * d;
    const T* c = cos + token * d;
    const T* s = sin + token * d;
    const float a = to_f32(xr[i]), b = to_f32(xr[i + h]);
    const float ci = to_f32(c[i]), ch = to_f32(c[i + h]), si = to_f32(s[i]), sh = to_f32(s[i + h]);
    float lo, hi;
    if (backward) {
      lo = fmaf(b, sh, __fmul_rn(a, ci));
      hi = fmaf(a, si, __fmul_rn(b, ch));
    } else {
      lo = fmaf(b, si, round_to(__fmul_rn(a, ci), tag));
      hi = fmaf(a, sh, round_to(__fmul_rn(b, ch), tag));
    }
    out[row * d + i] = from_f32(lo, tag);
    out[row * d + i + h] = from_f32(hi, tag);
  }
}

extern "C" __global__ void stasc_rotary_bf16(const stasc_bf16* x, const stasc_bf16* cos, const stasc_bf16* sin,
                                             stasc_bf16* out, long tokens, int heads, int d, int backward) {
  rotary(x, cos, sin, out, tokens, heads, d, backward);
}

extern "C" __global__ void stasc_rotary_f32(const float* x, const float* cos, const float* sin, float* out,
                                            long tokens, int heads, int d, int backward) {
  rotary(x, cos, sin, out, tokens, heads, d, backward);
}
