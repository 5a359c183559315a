// Decode attention over the KV cache, split-K ("flash-decoding"), for one new token per row. Compiled once per
// model shape with -DHEAD_DIM=<d> -DGROUP=<query heads per K/V head>.
//
// Phase 1 (stasc_decode_attention_*): one block per (chunk of chunk_len <= CHUNK cache positions, K/V head, row),
// for the GROUP query heads that share the K/V head, up to the row's own length (position + 1); the chunk's
// unnormalised output, max and sum go to scratch. Chunks past a row's length do nothing, so a row costs what its
// own length costs, whatever the batch's longest row, and its result depends on no other row. The launcher picks
// short chunks for small batches, so that a batch of one still spreads over many blocks (from the cache's size, not
// the step's longest row: a row's chunk boundaries never depend on the other rows).
// Phase 2 (stasc_decode_attention_combine_*): one block per (query head, row) merges the row's chunks.
//
// Shared prefix ("cascade" attention): when every row's first `skip` positions hold the same K/V (a prompt prefix
// common to the whole call), phase 1 starts at position skip and the prefix is attended to once for all rows by
// two batched products (libtorch, tensor cores) around stasc_prefix_softmax_*, whose unnormalised output, max and
// sum enter the combine as one more chunk. The rows' own copies of the prefix are then not read.
//
// Also here: the rotary embedding of the new token's queries and keys, fused with writing its keys and values
// into the cache (stasc_rope_kv_write_*), rounded as the eager path rounds (x * cos to the dtype, then + the
// rotated half * sin).
typedef long long i64;
#define NEG_INF __int_as_float(0xff800000)

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef GROUP
#define GROUP 1
#endif
#define CHUNK 128
#define BLOCK_THREADS 128
// Phase 1's value step: 16-byte packs of a head, and the positions taken at once by the block's threads.
#define DIM_PACKS (HEAD_DIM / 8)
#define POSITION_GROUPS (BLOCK_THREADS / DIM_PACKS)

// q: [kv_heads, rows, GROUP, HEAD_DIM] (as stasc_rope_kv_write lays it out: a K/V head's queries of all rows are one
// matrix for the shared prefix's batched products); caches [rows, kv_heads, max_len, HEAD_DIM];
// scratch_o [rows, heads, chunks, HEAD_DIM] and scratch_ml [rows, heads, chunks, 2] (f32). A block takes
// chunk_len (<= CHUNK) positions in three steps, each thread-parallel with no per-position reduction: every thread
// scores one position against the GROUP queries (its key read with 16-byte loads), each warp turns one head's
// scores into exp(score - max) and their sum, then every thread sums weight * value for eight dimensions over a
// share of the positions (16-byte loads) and the shares are added in shared memory.
template <typename T>
__device__ void attention_chunk(const T* q, const T* k_cache, const T* v_cache, const i64* positions,
                                float* scratch_o, float* scratch_ml, int kv_heads, long max_len, int chunks,
                                int chunk_len, int skip, float scale) {
  __shared__ __align__(16) float q_s[GROUP][HEAD_DIM];
  __shared__ float p_s[GROUP][CHUNK];
  __shared__ float stat_m[GROUP], stat_l[GROUP];
  __shared__ float partial_s[POSITION_GROUPS][GROUP][HEAD_DIM];
  const int chunk = blockIdx.x, kv = blockIdx.y, row = blockIdx.z;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const long len = positions[row] + 1;
  const long start = skip + (long)chunk * chunk_len;
  if (start >= len) return;
  const int n = (int)min((long)chunk_len, len - start);
  const int heads = kv_heads * GROUP;
  for (int i = t; i < GROUP * HEAD_DIM; i += BLOCK_THREADS) {
    const int g = i / HEAD_DIM, d = i % HEAD_DIM;
    q_s[g][d] = to_f32(q[(((long)kv * gridDim.z + row) * GROUP + g) * HEAD_DIM + d]) * scale;
  }
  __syncthreads();
  const long head_base = ((long)row * kv_heads + kv) * max_len + start;
  if (t < n) {
    const T* kp = k_cache + (head_base + t) * HEAD_DIM;
    float s[GROUP];
#pragma unroll
    for (int g = 0; g < GROUP; ++g) s[g] = 0.f;
#pragma unroll 4
    for (int d0 = 0; d0 < HEAD_DIM; d0 += 8) {
      float k[8];
      load8(kp + d0, k);
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
#pragma unroll
        for (int e = 0; e < 8; ++e) s[g] += q_s[g][d0 + e] * k[e];
      }
    }
#pragma unroll
    for (int g = 0; g < GROUP; ++g) p_s[g][t] = s[g];
  }
  __syncthreads();
  for (int g = warp; g < GROUP; g += BLOCK_THREADS / 32) {
    float m = NEG_INF;
    for (int i = lane; i < n; i += 32) m = fmaxf(m, p_s[g][i]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float l = 0.f;
    for (int i = lane; i < n; i += 32) {
      const float w = expf(p_s[g][i] - m);
      p_s[g][i] = w;
      l += w;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    if (lane == 0) {
      stat_m[g] = m;
      stat_l[g] = l;
    }
  }
  __syncthreads();
  // Weighted values: thread t takes eight consecutive dimensions (one 16-byte load a position) of every
  // POSITION_GROUPS-th position; the groups' sums then meet in shared memory.
  {
    const int pack = t % DIM_PACKS, group = t / DIM_PACKS;
    float acc[GROUP][8];
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] = 0.f;
    }
    const T* vp = v_cache + head_base * HEAD_DIM + pack * 8;
#pragma unroll 4
    for (int i = group; i < n; i += POSITION_GROUPS) {
      float v[8];
      load8(vp + (long)i * HEAD_DIM, v);
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        const float w = p_s[g][i];
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] += w * v[e];
      }
    }
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
#pragma unroll
      for (int e = 0; e < 8; ++e) partial_s[group][g][pack * 8 + e] = acc[g][e];
    }
  }
  __syncthreads();
  for (int i = t; i < GROUP * HEAD_DIM; i += BLOCK_THREADS) {
    const int g = i / HEAD_DIM, d = i % HEAD_DIM;
    float sum = 0.f;
#pragma unroll
    for (int group = 0; group < POSITION_GROUPS; ++group) sum += partial_s[group][g][d];
    const long slot = ((long)row * heads + kv * GROUP + g) * chunks + chunk;
    scratch_o[slot * HEAD_DIM + d] = sum;
  }
  if (t < GROUP) {
    const long slot = ((long)row * heads + kv * GROUP + t) * chunks + chunk;
    scratch_ml[slot * 2] = stat_m[t];
    scratch_ml[slot * 2 + 1] = stat_l[t];
  }
}

template <typename T>
__device__ void attention_combine(const float* scratch_o, const float* scratch_ml, const i64* positions, T* out,
                                  int heads, int chunks, int chunk_len, int skip, const float* prefix_o,
                                  const float* prefix_ml) {
  const int head = blockIdx.x, row = blockIdx.y, d = threadIdx.x;
  const long len = positions[row] + 1;
  const int used = (int)max(0L, min((long)chunks, (len - skip + chunk_len - 1) / chunk_len));
  const long base = ((long)row * heads + head) * chunks;
  // The prefix's partial: [kv_heads, rows, GROUP] slots, as the batched products lay it out.
  const long pslot = ((long)(head / GROUP) * gridDim.y + row) * GROUP + head % GROUP;
  float mm = prefix_o ? prefix_ml[pslot * 2] : NEG_INF;
  for (int c = 0; c < used; ++c) mm = fmaxf(mm, scratch_ml[(base + c) * 2]);
  float ll = 0.f, oo = 0.f;
  if (prefix_o) {
    const float f = expf(prefix_ml[pslot * 2] - mm);
    ll = prefix_ml[pslot * 2 + 1] * f;
    oo = prefix_o[pslot * HEAD_DIM + d] * f;
  }
  for (int c = 0; c < used; ++c) {
    const float f = expf(scratch_ml[(base + c) * 2] - mm);
    ll += scratch_ml[(base + c) * 2 + 1] * f;
    oo += scratch_o[(base + c) * HEAD_DIM + d] * f;
  }
  store(out + ((long)row * heads + head) * HEAD_DIM + d, oo / ll);
}

// The prefix's softmax numerators: row i of s ([n, len] f32 dot products of a query with the prefix keys) becomes
// p = exp(scale * s - m) in the model's dtype (the operand of the product with the values, rounded as flash
// attention rounds it), with m = max(scale * s) and l = the sum of the rounded p in ml[i] = (m, l). One block of
// BLOCK_THREADS threads a row.
template <typename T>
__device__ void prefix_softmax(const float* s, T* p, float* ml, int len, float scale) {
  __shared__ float red[BLOCK_THREADS / 32];
  const long i = blockIdx.x;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const float* si = s + i * len;
  float m = NEG_INF;
  for (int j = t; j < len; j += BLOCK_THREADS) m = fmaxf(m, scale * si[j]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = red[0];
#pragma unroll
  for (int w = 1; w < BLOCK_THREADS / 32; ++w) m = fmaxf(m, red[w]);
  __syncthreads();
  float l = 0.f;
  for (int j = t; j < len; j += BLOCK_THREADS) {
    const float w = round_to(expf(scale * si[j] - m), (T*)0);
    store(p + i * len + j, w);
    l += w;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
  if (lane == 0) red[warp] = l;
  __syncthreads();
  if (t == 0) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < BLOCK_THREADS / 32; ++w) sum += red[w];
    ml[i * 2] = m;
    ml[i * 2 + 1] = sum;
  }
}

// qkv: row r at qkv[r * qkv_stride], heads [q (heads) | k (kv_heads) | v (kv_heads)] of HEAD_DIM each; cos and
// sin_signed: [max positions, HEAD_DIM]; row r writes cache row r at positions[r] and its rotated queries to q_out
// [kv_heads, rows, GROUP, HEAD_DIM]. Grid (heads + 2 kv_heads, rows), HEAD_DIM threads.
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
      store(q_out + (((long)(head / GROUP) * gridDim.y + row) * GROUP + head % GROUP) * HEAD_DIM + i, out);
    } else {
      store(k_cache + (((long)row * kv_heads + head - heads) * max_len + pos) * HEAD_DIM + i, out);
    }
  } else {
    store(v_cache + (((long)row * kv_heads + head - heads - kv_heads) * max_len + pos) * HEAD_DIM + i, xi);
  }
}

#define INSTANTIATE(T, SUFFIX)                                                                                    \
  extern "C" __global__ void __launch_bounds__(BLOCK_THREADS) stasc_decode_attention_##SUFFIX(                  \
      const T* q, const T* k_cache, const T* v_cache, const i64* positions, float* scratch_o,                     \
      float* scratch_ml, int kv_heads, long max_len, int chunks, int chunk_len, int skip, float scale) {          \
    attention_chunk(q, k_cache, v_cache, positions, scratch_o, scratch_ml, kv_heads, max_len, chunks,             \
                    chunk_len, skip, scale);                                                                      \
  }                                                                                                               \
  extern "C" __global__ void stasc_decode_attention_combine_##SUFFIX(const float* scratch_o,                      \
      const float* scratch_ml, const i64* positions, T* out, int heads, int chunks, int chunk_len, int skip,      \
      const float* prefix_o, const float* prefix_ml) {                                                            \
    attention_combine(scratch_o, scratch_ml, positions, out, heads, chunks, chunk_len, skip, prefix_o, prefix_ml); \
  }                                                                                                               \
  extern "C" __global__ void __launch_bounds__(BLOCK_THREADS) stasc_prefix_softmax_##SUFFIX(const float* s, T* p, \
      float* ml, int len, float scale) {                                                                          \
    prefix_softmax(s, p, ml, len, scale);                                                                         \
  }                                                                                                               \
  extern "C" __global__ void stasc_rope_kv_write_##SUFFIX(const T* qkv, long qkv_stride, const T* cos,            \
      const T* sin_signed, const i64* positions, T* q_out, T* k_cache, T* v_cache, int heads, int kv_heads,       \
      long max_len) {                                                                                             \
    rope_kv_write(qkv, qkv_stride, cos, sin_signed, positions, q_out, k_cache, v_cache, heads, kv_heads, max_len); \
  }

INSTANTIATE(stasc_bf16, bf16)
INSTANTIATE(float, f32)
