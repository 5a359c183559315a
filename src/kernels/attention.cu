// Decode attention over the KV cache, split-K ("flash-decoding"), for one new token per row. Compiled once per
// model shape with -DHEAD_DIM=<d> -DGROUP=<query heads per K/V head>.
//
// Phase 1 (stasc_decode_attention_*): one block per (chunk of CHUNK cache positions, K/V head, row). Each of its
// warps walks every WARPS-th position of the chunk, up to the row's own length (position + 1), and keeps an online
// softmax for the GROUP query heads that share the K/V head; the warps are merged and the chunk's unnormalised
// output, max and sum go to scratch. Chunks past a row's length do nothing, so a row costs what its own length
// costs, whatever the batch's longest row, and its result depends on no other row.
// Phase 2 (stasc_decode_attention_combine_*): one block per (query head, row) merges the row's chunks.
//
// Also here: the rotary embedding of the new token's queries and keys, fused with writing its keys and values
// into the cache (stasc_rope_kv_write_*), rounded as the eager path rounds (x * cos to the dtype, then + the
// rotated half * sin).
typedef unsigned short stasc_bf16;
typedef long long i64;
#define NEG_INF __int_as_float(0xff800000)

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef GROUP
#define GROUP 1
#endif
#define CHUNK 128
#define WARPS 4
#define PER_LANE (HEAD_DIM / 32)

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(stasc_bf16 x) { return __uint_as_float(((unsigned)x) << 16); }
__device__ __forceinline__ stasc_bf16 to_bf16(float v) {
  unsigned u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (stasc_bf16)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (stasc_bf16)(u >> 16);
}
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(stasc_bf16* p, float v) { *p = to_bf16(v); }
__device__ __forceinline__ float round_to(float v, float*) { return v; }
__device__ __forceinline__ float round_to(float v, stasc_bf16*) { return to_f32(to_bf16(v)); }

// q: row r, head j at q[r * q_stride + j * HEAD_DIM]; caches [rows, kv_heads, max_len, HEAD_DIM];
// scratch_o [rows, heads, chunks, HEAD_DIM] and scratch_ml [rows, heads, chunks, 2] (f32).
template <typename T>
__device__ void attention_chunk(const T* q, long q_stride, const T* k_cache, const T* v_cache, const i64* positions,
                                float* scratch_o, float* scratch_ml, int kv_heads, long max_len, int chunks,
                                float scale) {
  __shared__ float merge_m[WARPS][GROUP];
  __shared__ float merge_l[WARPS][GROUP];
  __shared__ float merge_o[WARPS][GROUP][HEAD_DIM];
  const int chunk = blockIdx.x, kv = blockIdx.y, row = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long len = positions[row] + 1;
  const long start = (long)chunk * CHUNK;
  if (start >= len) return;
  const long end = min(start + CHUNK, len);
  const int heads = kv_heads * GROUP;
  float qv[GROUP][PER_LANE], acc[GROUP][PER_LANE], m[GROUP], l[GROUP];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    const T* qh = q + row * q_stride + (long)(kv * GROUP + g) * HEAD_DIM + lane * PER_LANE;
#pragma unroll
    for (int e = 0; e < PER_LANE; ++e) {
      qv[g][e] = to_f32(qh[e]) * scale;
      acc[g][e] = 0.f;
    }
    m[g] = NEG_INF;
    l[g] = 0.f;
  }
  const long head_base = ((long)row * kv_heads + kv) * max_len;
  for (long p = start + warp; p < end; p += WARPS) {
    const T* kp = k_cache + (head_base + p) * HEAD_DIM + lane * PER_LANE;
    const T* vp = v_cache + (head_base + p) * HEAD_DIM + lane * PER_LANE;
    float k[PER_LANE], v[PER_LANE];
#pragma unroll
    for (int e = 0; e < PER_LANE; ++e) {
      k[e] = to_f32(kp[e]);
      v[e] = to_f32(vp[e]);
    }
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      float s = 0.f;
#pragma unroll
      for (int e = 0; e < PER_LANE; ++e) s += qv[g][e] * k[e];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      const float m_new = fmaxf(m[g], s);
      const float correction = expf(m[g] - m_new);
      const float weight = expf(s - m_new);
      l[g] = l[g] * correction + weight;
#pragma unroll
      for (int e = 0; e < PER_LANE; ++e) acc[g][e] = acc[g][e] * correction + weight * v[e];
      m[g] = m_new;
    }
  }
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    if (lane == 0) {
      merge_m[warp][g] = m[g];
      merge_l[warp][g] = l[g];
    }
#pragma unroll
    for (int e = 0; e < PER_LANE; ++e) merge_o[warp][g][lane * PER_LANE + e] = acc[g][e];
  }
  __syncthreads();
  // A warp with no position (a short last chunk) has m = -inf and l = 0: its factor is 0.
  for (int t = threadIdx.x; t < GROUP * HEAD_DIM; t += WARPS * 32) {
    const int g = t / HEAD_DIM, d = t % HEAD_DIM;
    float mm = NEG_INF;
    for (int w = 0; w < WARPS; ++w) mm = fmaxf(mm, merge_m[w][g]);
    float ll = 0.f, oo = 0.f;
    for (int w = 0; w < WARPS; ++w) {
      const float f = merge_m[w][g] == NEG_INF ? 0.f : expf(merge_m[w][g] - mm);
      ll += merge_l[w][g] * f;
      oo += merge_o[w][g][d] * f;
    }
    const long slot = ((long)row * heads + kv * GROUP + g) * chunks + chunk;
    scratch_o[slot * HEAD_DIM + d] = oo;
    if (d == 0) {
      scratch_ml[slot * 2] = mm;
      scratch_ml[slot * 2 + 1] = ll;
    }
  }
}

template <typename T>
__device__ void attention_combine(const float* scratch_o, const float* scratch_ml, const i64* positions, T* out,
                                  int heads, int chunks) {
  const int head = blockIdx.x, row = blockIdx.y, d = threadIdx.x;
  const long len = positions[row] + 1;
  const int used = (int)min((long)chunks, (len + CHUNK - 1) / CHUNK);
  const long base = ((long)row * heads + head) * chunks;
  float mm = NEG_INF;
  for (int c = 0; c < used; ++c) mm = fmaxf(mm, scratch_ml[(base + c) * 2]);
  float ll = 0.f, oo = 0.f;
  for (int c = 0; c < used; ++c) {
    const float f = expf(scratch_ml[(base + c) * 2] - mm);
    ll += scratch_ml[(base + c) * 2 + 1] * f;
    oo += scratch_o[(base + c) * HEAD_DIM + d] * f;
  }
  store(out + ((long)row * heads + head) * HEAD_DIM + d, oo / ll);
}

// qkv: row r at qkv[r * qkv_stride], heads [q (heads) | k (kv_heads) | v (kv_heads)] of HEAD_DIM each; cos and
// sin_signed: [max positions, HEAD_DIM]; row r writes cache row r at positions[r]. Grid (heads + 2 kv_heads, rows),
// HEAD_DIM threads.
template <typename T>
__device__ void rope_kv_write(const T* qkv, long qkv_stride, const T* cos, const T* sin_signed, const i64* positions,
                              T* q_out, T* k_cache, T* v_cache, int heads, int kv_heads, long max_len) {
  const int head = blockIdx.x, row = blockIdx.y, i = threadIdx.x;
  const long pos = positions[row];
  const T* x = qkv + row * qkv_stride + (long)head * HEAD_DIM;
  const float xi = to_f32(x[i]);
  if (head < heads + kv_heads) {
    const float rolled = to_f32(x[(i + HEAD_DIM / 2) % HEAD_DIM]);
    const float c = to_f32(cos[pos * HEAD_DIM + i]), s = to_f32(sin_signed[pos * HEAD_DIM + i]);
    const float out = round_to(xi * c, (T*)0) + rolled * s;
    if (head < heads) {
      store(q_out + ((long)row * heads + head) * HEAD_DIM + i, out);
    } else {
      store(k_cache + (((long)row * kv_heads + head - heads) * max_len + pos) * HEAD_DIM + i, out);
    }
  } else {
    store(v_cache + (((long)row * kv_heads + head - heads - kv_heads) * max_len + pos) * HEAD_DIM + i, xi);
  }
}

#define INSTANTIATE(T, SUFFIX)                                                                                    \
  extern "C" __global__ void __launch_bounds__(WARPS * 32) stasc_decode_attention_##SUFFIX(                       \
      const T* q, long q_stride, const T* k_cache, const T* v_cache, const i64* positions, float* scratch_o,      \
      float* scratch_ml, int kv_heads, long max_len, int chunks, float scale) {                                   \
    attention_chunk(q, q_stride, k_cache, v_cache, positions, scratch_o, scratch_ml, kv_heads, max_len, chunks,   \
                    scale);                                                                                       \
  }                                                                                                               \
  extern "C" __global__ void stasc_decode_attention_combine_##SUFFIX(const float* scratch_o,                      \
      const float* scratch_ml, const i64* positions, T* out, int heads, int chunks) {                             \
    attention_combine(scratch_o, scratch_ml, positions, out, heads, chunks);                                      \
  }                                                                                                               \
  extern "C" __global__ void stasc_rope_kv_write_##SUFFIX(const T* qkv, long qkv_stride, const T* cos,            \
      const T* sin_signed, const i64* positions, T* q_out, T* k_cache, T* v_cache, int heads, int kv_heads,       \
      long max_len) {                                                                                             \
    rope_kv_write(qkv, qkv_stride, cos, sin_signed, positions, q_out, k_cache, v_cache, heads, kv_heads, max_len); \
  }

INSTANTIATE(stasc_bf16, bf16)
INSTANTIATE(float, f32)
