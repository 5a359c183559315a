// RMSNorm with the residual add, one block per row: sum = x + residual (rounded to the model dtype, as the separate
// add would), normed = weight * (sum * rsqrt(mean(sum^2) + eps)) rounded as transformers' Qwen2RMSNorm rounds it
// (the normalised value to the dtype, then the product with the weight). Without a residual, sum is x and is not
// written. Replaces three kernels of the eager path (add, norm's reduction, scale) by one.

#define BLOCK 256

template <typename T>
__device__ void add_rms_norm(const T* x, const T* residual, const T* weight, T* sum_out, T* normed, int hidden,
                             float eps) {
  __shared__ float partial[BLOCK / 32];
  const long row = blockIdx.x;
  const T* xr = x + row * hidden;
  float squares = 0.f;
  for (int i = threadIdx.x; i < hidden; i += BLOCK) {
    float v = to_f32(xr[i]);
    if (residual) {
      v = round_to(v + to_f32(residual[row * hidden + i]), (T*)0);
      store(sum_out + row * hidden + i, v);
    }
    squares += v * v;
  }
  for (int o = 16; o > 0; o >>= 1) squares += __shfl_xor_sync(0xffffffffu, squares, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = squares;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < BLOCK / 32; ++w) total += partial[w];
  const float inv = 1.0f / sqrtf(total / (float)hidden + eps);
  for (int i = threadIdx.x; i < hidden; i += BLOCK) {
    // Read back what was stored (the rounded sum), as the eager norm reads the add's output.
    const float v = residual ? to_f32(sum_out[row * hidden + i]) : to_f32(xr[i]);
    store(normed + row * hidden + i, to_f32(weight[i]) * round_to(v * inv, (T*)0));
  }
}

extern "C" __global__ void __launch_bounds__(BLOCK) stasc_add_rms_norm_bf16(const stasc_bf16* x,
    const stasc_bf16* residual, const stasc_bf16* weight, stasc_bf16* sum_out, stasc_bf16* normed, int hidden,
    float eps) {
  add_rms_norm(x, residual, weight, sum_out, normed, hidden, eps);
}

extern "C" __global__ void __launch_bounds__(BLOCK) stasc_add_rms_norm_f32(const float* x, const float* residual,
    const float* weight, float* sum_out, float* normed, int hidden, float eps) {
  add_rms_norm(x, residual, weight, sum_out, normed, hidden, eps);
}

// SiLU-and-multiply over [rows, 2 * width] (gate then up, as the fused gate_up projection writes them):
// out = silu(gate) * up, with silu's result rounded to the dtype first as the eager silu kernel stores it. The grid's
// y walks rows and x columns, so no thread divides by the width (a 64-bit division per element cost more than the
// memory traffic).
template <typename T>
__device__ void silu_mul(const T* gate_up, T* out, long rows, int width) {
  for (long r = blockIdx.y; r < rows; r += gridDim.y) {
    const T* gate = gate_up + r * 2 * width;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < width; c += gridDim.x * blockDim.x) {
      const float g = to_f32(gate[c]);
      const float u = to_f32(gate[width + c]);
      const float s = round_to(g / (1.0f + expf(-g)), (T*)0);
      store(out + r * width + c, s * u);
    }
  }
}

extern "C" __global__ void stasc_silu_mul_bf16(const stasc_bf16* gate_up, stasc_bf16* out, long rows, int width) {
  silu_mul(gate_up, out, rows, width);
}

extern "C" __global__ void stasc_silu_mul_f32(const float* gate_up, float* out, long rows, int width) {
  silu_mul(gate_up, out, rows, width);
}

// ---------------------------------------------------------------------------------------------------------------
// The same two kernels for bf16 rows whose width is a multiple of 8 with 16-byte aligned rows, eight consecutive
// elements a thread through 16-byte loads and stores (same roundings; the norm keeps the rounded sums in registers
// instead of reading them back). A decode step's rows are few and short, so the scalar kernels' threads each waited
// on 2-byte loads, wave after wave.

// Rounds eight values to bf16 and stores them with one 16-byte store.
__device__ __forceinline__ void store8_bf16(stasc_bf16* p, const float v[8]) {
  unsigned w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = (unsigned)to_bf16(v[2 * i]) | ((unsigned)to_bf16(v[2 * i + 1]) << 16);
  *(uint4*)p = make_uint4(w[0], w[1], w[2], w[3]);
}

// One block of ceil(hidden / 8) threads (rounded up to a warp) per row; hidden <= 8 * 1024.
extern "C" __global__ void __launch_bounds__(1024) stasc_add_rms_norm8_bf16(const stasc_bf16* x,
    const stasc_bf16* residual, const stasc_bf16* weight, stasc_bf16* sum_out, stasc_bf16* normed, int hidden,
    float eps) {
  __shared__ float partial[32];
  const long base = (long)blockIdx.x * hidden;
  const int i = threadIdx.x * 8;
  float v[8];
  float squares = 0.f;
  if (i < hidden) {
    load8(x + base + i, v);
    if (residual) {
      float r[8];
      load8(residual + base + i, r);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = round_to(v[e] + r[e], (stasc_bf16*)0);
      store8_bf16(sum_out + base + i, v);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) squares += v[e] * v[e];
  }
  for (int o = 16; o > 0; o >>= 1) squares += __shfl_xor_sync(0xffffffffu, squares, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = squares;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += partial[w];
  const float inv = 1.0f / sqrtf(total / (float)hidden + eps);
  if (i < hidden) {
    float w[8];
    load8(weight + i, w);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = w[e] * round_to(v[e] * inv, (stasc_bf16*)0);
    store8_bf16(normed + base + i, v);
  }
}

// Grid (ceil(width / 8 / 256), rows): eight columns a thread.
extern "C" __global__ void __launch_bounds__(256) stasc_silu_mul8_bf16(const stasc_bf16* gate_up, stasc_bf16* out,
    long rows, int width) {
  for (long r = blockIdx.y; r < rows; r += gridDim.y) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (c >= width) continue;
    float g[8], u[8];
    load8(gate_up + r * 2 * width + c, g);
    load8(gate_up + r * 2 * width + width + c, u);
#pragma unroll
    for (int e = 0; e < 8; ++e) g[e] = round_to(g[e] / (1.0f + expf(-g[e])), (stasc_bf16*)0) * u[e];
    store8_bf16(out + r * width + c, g);
  }
}
