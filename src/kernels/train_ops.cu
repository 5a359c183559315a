// Kernels of the training passes' autograd ops (kernels/train_ops.rs, src/ffi/train_ops.cpp).
//
// The rotary embedding (model/rope.rs's rotate-half layout), forward and backward, a thread
// taking the pair (i, i + h) of one token's head, h = d / 2, sin the sign-folded table (first half negated):
//   forward:  out_i = x_i cos_i + x_{i+h} sin_i,   out_{i+h} = x_{i+h} cos_{i+h} + x_i sin_{i+h}
//   backward: gx_i  = g_i cos_i + g_{i+h} sin_{i+h}, gx_{i+h} = g_{i+h} cos_{i+h} + g_i sin_i
// (the backward is the transpose of the forward's rotation). Only the first rot_heads heads of each token are rotated;
// the others are copied (a fused q/k/v projection's values ride along with its queries and keys). libtorch's ops
// take three kernels forward (roll, mul,
// addcmul, broadcasting the tables over heads without vector loads) and five backward. The forward rounds as those
// ops store: the product x_i cos_i to the dtype, then the multiply-add; the backward rounds once.
template <typename T>
__device__ void rotary(const T* x, const T* cos, const T* sin, T* out, long tokens, int heads, int d, int backward,
                       int rot_heads) {
  const T* tag = (const T*)0;
  const int h = d / 2;
  const long pairs = tokens * heads * h;
  const long stride = (long)gridDim.x * blockDim.x;
  for (long k = (long)blockIdx.x * blockDim.x + threadIdx.x; k < pairs; k += stride) {
    const long row = k / h;
    const int i = (int)(k - row * h);
    const long token = row / heads;
    const T* xr = x + row * d;
    if (row - token * heads >= rot_heads) {
      out[row * d + i] = xr[i];
      out[row * d + i + h] = xr[i + h];
      continue;
    }
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

// The same for bf16 with h a multiple of 8 and 16-byte aligned tensors: eight pairs a thread, each half of them one
// 16-byte load of x, cos and sin and one store (the scalar kernel's 2-byte accesses ran at ~1 TB/s).
extern "C" __global__ void stasc_rotary8_bf16(const stasc_bf16* x, const stasc_bf16* cos, const stasc_bf16* sin,
                                              stasc_bf16* out, long tokens, int heads, int d, int backward,
                                              int rot_heads) {
  const stasc_bf16* tag = (const stasc_bf16*)0;
  const int h = d / 2, packs = h / 8;
  const long n = tokens * heads * packs;
  const long stride = (long)gridDim.x * blockDim.x;
  for (long k = (long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
    const long row = k / packs;
    const int i = (int)(k - row * packs) * 8;
    const long token = row / heads;
    const uint4 xl = *(const uint4*)(x + row * d + i), xh = *(const uint4*)(x + row * d + i + h);
    if (row - token * heads >= rot_heads) {
      *(uint4*)(out + row * d + i) = xl;
      *(uint4*)(out + row * d + i + h) = xh;
      continue;
    }
    const uint4 cl = *(const uint4*)(cos + token * d + i), chv = *(const uint4*)(cos + token * d + i + h);
    const uint4 sl = *(const uint4*)(sin + token * d + i), shv = *(const uint4*)(sin + token * d + i + h);
    const stasc_bf16 *a = (const stasc_bf16*)&xl, *b = (const stasc_bf16*)&xh;
    const stasc_bf16 *ci = (const stasc_bf16*)&cl, *ch = (const stasc_bf16*)&chv;
    const stasc_bf16 *si = (const stasc_bf16*)&sl, *sh = (const stasc_bf16*)&shv;
    uint4 lo_v, hi_v;
    stasc_bf16 *lo = (stasc_bf16*)&lo_v, *hi = (stasc_bf16*)&hi_v;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float av = to_f32(a[j]), bv = to_f32(b[j]);
      float l, u;
      if (backward) {
        l = fmaf(bv, to_f32(sh[j]), __fmul_rn(av, to_f32(ci[j])));
        u = fmaf(av, to_f32(si[j]), __fmul_rn(bv, to_f32(ch[j])));
      } else {
        l = fmaf(bv, to_f32(si[j]), round_to(__fmul_rn(av, to_f32(ci[j])), tag));
        u = fmaf(av, to_f32(sh[j]), round_to(__fmul_rn(bv, to_f32(ch[j])), tag));
      }
      lo[j] = to_bf16(l);
      hi[j] = to_bf16(u);
    }
    *(uint4*)(out + row * d + i) = lo_v;
    *(uint4*)(out + row * d + i + h) = hi_v;
  }
}

extern "C" __global__ void stasc_rotary_bf16(const stasc_bf16* x, const stasc_bf16* cos, const stasc_bf16* sin,
                                             stasc_bf16* out, long tokens, int heads, int d, int backward,
                                             int rot_heads) {
  rotary(x, cos, sin, out, tokens, heads, d, backward, rot_heads);
}

extern "C" __global__ void stasc_rotary_f32(const float* x, const float* cos, const float* sin, float* out,
                                            long tokens, int heads, int d, int backward, int rot_heads) {
  rotary(x, cos, sin, out, tokens, heads, d, backward, rot_heads);
}

// ---------------------------------------------------------------------------------------------------------------
// SiLU-and-multiply of training passes, h = silu(a) * b over the gate and up outputs, forward and backward,
// rounding where libtorch's silu, mul and their backward kernels store (and computing as they do), so the op's
// values are theirs; where libtorch runs two kernels forward and three backward and keeps silu(a) for backward,
// the op runs one each way and recomputes it:
//   forward:  s = silu(a) rounded; h = s * b
//   backward: da = (g * b rounded) * sigmoid(a) * (1 + a * (1 - sigmoid(a))); db = g * s
// h and g are [rows, width] (n = rows x width elements); a and b (and da, db) have rows `stride` elements apart:
// separate tensors (one row, stride = width = n) or the halves of a fused gate/up output ([rows, 2 width], b =
// a + width, stride = 2 width).

__device__ __forceinline__ float silu_of(float a) { return __fdiv_rn(a, 1.0f + expf(-a)); }

// Where element k of a [rows, width] result sits in inputs whose rows are `stride` apart.
__device__ __forceinline__ long strided(long k, long width, long stride) {
  const long r = k / width;
  return r * stride + (k - r * width);
}

template <typename T>
__device__ __forceinline__ void silu_mul_fwd1(const T* a, const T* b, T* h, long in, long k) {
  const T* tag = (const T*)0;
  const float s = round_to(silu_of(to_f32(a[in])), tag);
  h[k] = from_f32(s * to_f32(b[in]), tag);
}

template <typename T>
__device__ __forceinline__ void silu_mul_bwd1(const T* g, const T* a, const T* b, T* da, T* db, long in, long k) {
  const T* tag = (const T*)0;
  const float x = to_f32(a[in]), dy = to_f32(g[k]);
  const float s = round_to(silu_of(x), tag);
  const float gs = round_to(dy * to_f32(b[in]), tag);
  const float sigmoid = __fdiv_rn(1.0f, 1.0f + expf(-x));
  da[in] = from_f32(gs * sigmoid * (1.0f + x * (1.0f - sigmoid)), tag);
  db[in] = from_f32(dy * s, tag);
}

// Grid-stride over n elements, one a thread at a time (any count or alignment; f32, and bf16 that the packed
// kernels below do not take).
template <typename T>
__device__ void silu_mul_train(const T* a, const T* b, T* h, long n, long width, long stride) {
  const long step = (long)gridDim.x * blockDim.x;
  for (long k = (long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += step) {
    silu_mul_fwd1(a, b, h, strided(k, width, stride), k);
  }
}

template <typename T>
__device__ void silu_mul_train_backward(const T* g, const T* a, const T* b, T* da, T* db, long n, long width,
                                        long stride) {
  const long step = (long)gridDim.x * blockDim.x;
  for (long k = (long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += step) {
    silu_mul_bwd1(g, a, b, da, db, strided(k, width, stride), k);
  }
}

// Eight elements a thread through 16-byte loads (width and stride multiples of 8, pointers 16-byte aligned).
__device__ void silu_mul_train8(const stasc_bf16* a, const stasc_bf16* b, stasc_bf16* h, long n, long width,
                                long stride) {
  const long step = (long)gridDim.x * blockDim.x;
  for (long p = (long)blockIdx.x * blockDim.x + threadIdx.x; p < n / 8; p += step) {
    const long in = strided(p * 8, width, stride);
    uint4 av = *(const uint4*)(a + in), bv = *(const uint4*)(b + in), hv;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      silu_mul_fwd1((const stasc_bf16*)&av, (const stasc_bf16*)&bv, (stasc_bf16*)&hv, j, j);
    }
    ((uint4*)h)[p] = hv;
  }
}

__device__ void silu_mul_train_backward8(const stasc_bf16* g, const stasc_bf16* a, const stasc_bf16* b,
                                         stasc_bf16* da, stasc_bf16* db, long n, long width, long stride) {
  const long step = (long)gridDim.x * blockDim.x;
  for (long p = (long)blockIdx.x * blockDim.x + threadIdx.x; p < n / 8; p += step) {
    const long in = strided(p * 8, width, stride);
    uint4 gv = ((const uint4*)g)[p], av = *(const uint4*)(a + in), bv = *(const uint4*)(b + in), dav, dbv;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      silu_mul_bwd1((const stasc_bf16*)&gv, (const stasc_bf16*)&av, (const stasc_bf16*)&bv, (stasc_bf16*)&dav,
                    (stasc_bf16*)&dbv, j, j);
    }
    *(uint4*)(da + in) = dav;
    *(uint4*)(db + in) = dbv;
  }
}

extern "C" __global__ void stasc_silu_mul_train_bf16(const stasc_bf16* a, const stasc_bf16* b, stasc_bf16* h,
                                                     long n, long width, long stride) {
  silu_mul_train(a, b, h, n, width, stride);
}

extern "C" __global__ void stasc_silu_mul_train8_bf16(const stasc_bf16* a, const stasc_bf16* b, stasc_bf16* h,
                                                      long n, long width, long stride) {
  silu_mul_train8(a, b, h, n, width, stride);
}

extern "C" __global__ void stasc_silu_mul_train_f32(const float* a, const float* b, float* h, long n, long width,
                                                    long stride) {
  silu_mul_train(a, b, h, n, width, stride);
}

extern "C" __global__ void stasc_silu_mul_train_backward_bf16(const stasc_bf16* g, const stasc_bf16* a,
                                                              const stasc_bf16* b, stasc_bf16* da, stasc_bf16* db,
                                                              long n, long width, long stride) {
  silu_mul_train_backward(g, a, b, da, db, n, width, stride);
}

extern "C" __global__ void stasc_silu_mul_train_backward8_bf16(const stasc_bf16* g, const stasc_bf16* a,
                                                               const stasc_bf16* b, stasc_bf16* da, stasc_bf16* db,
                                                               long n, long width, long stride) {
  silu_mul_train_backward8(g, a, b, da, db, n, width, stride);
}

extern "C" __global__ void stasc_silu_mul_train_backward_f32(const float* g, const float* a, const float* b,
                                                             float* da, float* db, long n, long width,
                                                             long stride) {
  silu_mul_train_backward(g, a, b, da, db, n, width, stride);
}
