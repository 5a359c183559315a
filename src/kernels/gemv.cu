// y = x W^T (+ bias) for a few rows of bf16 (decode at batch 1 to 4, where a step reads every weight once and the
// products are matrix-vector products): W [n, k] as HF stores it, x [M, k] with row stride x_stride, y [M, n] with
// row stride y_stride. One warp takes F consecutive output features: lane l reads 16-byte packs l, l + 32, ... of
// their weight rows (512-byte warp loads, streamed past L1: each weight is read once a step) and of x's rows
// (cached: every warp reads the same x), sums in f32, and the warp's partial sums meet by shuffles. cuBLAS runs
// these shapes as GEMMs with 8- or 16-row tiles at 1-3 TB/s; the small projections (q/k/v, o) stay far from the
// bandwidth limit there.
#define GEMV_WARPS 4

// A 16-byte load that is not kept in L1 (the weights are read once a step; x and the outputs keep the cache).
__device__ __forceinline__ uint4 load_streaming(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Adds the dot product of two packs of eight bf16 to acc.
__device__ __forceinline__ float dot8(uint4 a, uint4 b, float acc) {
  const unsigned x[4] = {a.x, a.y, a.z, a.w}, y[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(__uint_as_float(x[i] << 16), __uint_as_float(y[i] << 16), acc);
    acc = fmaf(__uint_as_float(x[i] & 0xffff0000u), __uint_as_float(y[i] & 0xffff0000u), acc);
  }
  return acc;
}

// SPLIT warps share each group of F features, warp j of them taking packs j * 32 + lane, j * 32 + lane + SPLIT * 32,
// ...: weights with long rows (the MLP's down projection) then still spread over enough warps to keep many loads in
// flight. Their partial sums meet in shared memory.
template <int M, int F, int SPLIT>
__device__ void gemv(const stasc_bf16* x, long x_stride, const stasc_bf16* w, const stasc_bf16* bias, stasc_bf16* y,
                     long y_stride, int n, int k) {
  __shared__ float partial[GEMV_WARPS][M][F];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % SPLIT;
  const long f0 = ((long)blockIdx.x * (GEMV_WARPS / SPLIT) + warp / SPLIT) * F;
  float acc[M][F];
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int f = 0; f < F; ++f) acc[m][f] = 0.f;
  }
  const int packs = k / 8;
  const stasc_bf16* rows[F];
#pragma unroll
  for (int f = 0; f < F; ++f) rows[f] = w + min(f0 + f, (long)n - 1) * k;
  if (f0 < n) {
#pragma unroll 4
    for (int p = part * 32 + lane; p < packs; p += SPLIT * 32) {
      uint4 wv[F];
#pragma unroll
      for (int f = 0; f < F; ++f) wv[f] = load_streaming(rows[f] + p * 8);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4 xv = *(const uint4*)(x + m * x_stride + p * 8);
#pragma unroll
        for (int f = 0; f < F; ++f) acc[m][f] = dot8(wv[f], xv, acc[m][f]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int f = 0; f < F; ++f) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[m][f] += __shfl_xor_sync(0xffffffffu, acc[m][f], o);
    }
  }
  if (SPLIT > 1) {
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int f = 0; f < F; ++f) partial[warp][m][f] = acc[m][f];
      }
    }
    __syncthreads();
    if (part != 0) return;
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
      for (int f = 0; f < F; ++f) {
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < SPLIT; ++j) sum += partial[warp + j][m][f];
        acc[m][f] = sum;
      }
    }
  }
  // Every lane holds every sum now: lane m * F + f writes output (m, f).
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int f = 0; f < F; ++f) {
      if (lane == m * F + f && f0 + f < n) {
        const float b = bias ? to_f32(bias[f0 + f]) : 0.f;
        y[m * y_stride + f0 + f] = to_bf16(acc[m][f] + b);
      }
    }
  }
}

#define GEMV(M, F, SPLIT)                                                                                         \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) stasc_gemv##M##x##F##s##SPLIT##_bf16(           \
      const stasc_bf16* x, long x_stride, const stasc_bf16* w, const stasc_bf16* bias, stasc_bf16* y,           \
      long y_stride, int n, int k) {                                                                              \
    gemv<M, F, SPLIT>(x, x_stride, w, bias, y, y_stride, n, k);                                                   \
  }
#define GEMV_ROWS(F, SPLIT) GEMV(1, F, SPLIT) GEMV(2, F, SPLIT) GEMV(3, F, SPLIT) GEMV(4, F, SPLIT)

GEMV_ROWS(1, 1)
GEMV_ROWS(2, 1)
GEMV_ROWS(1, 4)
