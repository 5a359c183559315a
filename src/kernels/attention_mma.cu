#line 1 "attention_mma.cu"
// Compiled after attention.cu, in the same program (kernels::ATTENTION_SOURCE): phase 1 of the split-K decode
// attention for bf16 on tensor cores (sm_80 and later, HEAD_DIM 64 or 128, GROUP <= 8). Same grid, chunks,
// scratch layout and combine as stasc_decode_attention_bf16; only how a block computes its chunk differs.
//
// Why: the CUDA-core kernel scores a position against the GROUP queries with one shared-memory read per
// multiply-add, and at batch 256 read keys and values at ~2.2 TB/s on an H200 (53 us a layer), its serial steps
// setting the pace; this kernel took 42 us (scripts/kernels/h200_mma_2026-12-01.txt, calls 2 and 5). Here each
// warp takes 32 positions of the chunk and computes both products with mma.sync m16n8k16 (f32 sums): the GROUP
// queries (padded to 8) are the 8 columns, 16 positions the rows.
// - Scores: A = 16 keys x 16 dimensions, B = the queries' same 16 dimensions. A dot product may take its
//   dimensions in any order, so a thread's A and B registers hold the dimensions of its own 16-byte loads (keys
//   and queries read in the same order), not the layout's nominal columns.
// - Values: A = 16 dimensions x 16 positions of V (transposed), B = the 16 positions' weights. Positions are the
//   layout's rows of B and columns of A as they come; the 16 dimensions of a tile are the thread's (two of its own
//   HEAD_DIM / 8, the other threads' the others), so each thread reads its dimensions of four positions with
//   16-byte loads and pairs the positions' halves with byte permutes. The values travel to shared memory
//   (cp.async) while the scores are computed, so a block waits for memory once, not twice: with the values read
//   from global memory after the softmax, phase 1 ran at ~2.6 TB/s at batch 256 on an H200.
// The weights exp(score - max) are rounded to bf16 before the values' product, as flash attention rounds them
// (and as the shared-prefix path does); their sum l is the sum of the rounded weights.

#define MMA_COLS 8
#define WARP_POSITIONS 32
#define MMA_WARPS (BLOCK_THREADS / 32)

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && (HEAD_DIM == 64 || HEAD_DIM == 128) && GROUP <= MMA_COLS
#define MMA_ATTENTION 1
// Dimensions a thread owns in the values' product, and the tiles of 16 dimensions.
#define THREAD_DIMS (HEAD_DIM / 8)
#define DIM_TILES (HEAD_DIM / 16)
// 16-byte pieces of a cache position, and of a thread's dimensions.
#define PIECES (HEAD_DIM / 8)
#define THREAD_PIECES (THREAD_DIMS / 8)

// The values are copied into shared memory (cp.async) while the scores are computed. Piece j of position p is
// stored at piece j ^ swizzle(p): the eight lanes of a 16-byte shared load (groupIDs 2q, 2q + 1; threadIDs c =
// (p >> 1) & 3 of their positions) then hit eight different 16-byte bank groups. c's two bits go to the bits of
// the piece index (mod 8) that the groupID does not set: bit 0 for 64 dimensions, bit 1 for 128.
__device__ __forceinline__ int swizzle(int p) {
  const int c = (p >> 1) & 3;
#if HEAD_DIM == 64
  return c << 1;
#else
  return (c & 1) | ((c >> 1) << 2);
#endif
}

__device__ __forceinline__ void copy16_async(void* shared, const void* global, bool in) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(shared);
  // src-size 0 fills the 16 bytes with zeros (positions past the row's length: uninitialised cache).
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global), "r"(in ? 16 : 0));
}

__device__ __forceinline__ void mma_bf16(float c[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                         unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint4 load16_or_zero(const stasc_bf16* p, bool in) {
  return in ? *(const uint4*)p : make_uint4(0u, 0u, 0u, 0u);
}

__device__ __forceinline__ unsigned word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// q, caches, positions and scratch as for attention_chunk (attention.cu).
__device__ void attention_chunk_mma(const stasc_bf16* q, const stasc_bf16* k_cache, const stasc_bf16* v_cache,
                                    const i64* positions, float* scratch_o, float* scratch_ml, int kv_heads,
                                    long max_len, int chunks, int chunk_len, int skip, float scale) {
  // Weights of a warp's positions per column (+8 against bank conflicts); each warp's values (swizzled), where its
  // partial sums then go ([GROUP][HEAD_DIM] f32 fits in the warp's 32 x HEAD_DIM bf16 for GROUP <= 8).
  __shared__ __align__(16) stasc_bf16 p_s[MMA_WARPS][MMA_COLS][WARP_POSITIONS + 8];
  __shared__ float red_m[MMA_WARPS][MMA_COLS], red_l[MMA_WARPS][MMA_COLS];
  __shared__ __align__(16) stasc_bf16 v_s[MMA_WARPS][WARP_POSITIONS][HEAD_DIM];
  const int chunk = blockIdx.x, kv = blockIdx.y, row = blockIdx.z;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int g = lane >> 2, c = lane & 3;  // the layout's groupID and threadID_in_group
  const long len = positions[row] + 1;
  const long start = skip + (long)chunk * chunk_len;
  if (start >= len) return;
  const int n = (int)min((long)chunk_len, len - start);
  const int first = warp * WARP_POSITIONS;  // the warp's first position in the chunk
  const long head_base = ((long)row * kv_heads + kv) * max_len + start;

  // The warp's values into shared memory, in flight while the scores are computed: lane l copies piece l % PIECES
  // of every (32 / PIECES)-th position (whole 256-byte positions a load instruction for 128 dimensions).
  if (first < n) {
    const stasc_bf16* vg = v_cache + (head_base + first) * HEAD_DIM;
#pragma unroll
    for (int i = lane; i < WARP_POSITIONS * PIECES; i += 32) {
      const int p = i / PIECES, j = i % PIECES;
      const bool in = first + p < n;
      copy16_async(&v_s[warp][p][8 * (j ^ swizzle(p))], vg + (long)(in ? p : 0) * HEAD_DIM + 8 * j, in);
    }
    asm volatile("cp.async.commit_group;\n" ::);
  }

  // The queries as B: column g is query g of the group (zero past GROUP), 8 dimensions per 16-byte load.
  uint4 qf[HEAD_DIM / 32];
  const stasc_bf16* qp = q + (((long)kv * gridDim.z + row) * GROUP + g) * HEAD_DIM + 8 * c;
#pragma unroll
  for (int j = 0; j < HEAD_DIM / 32; ++j) qf[j] = load16_or_zero(qp + 32 * j, g < GROUP);

  // Scores of positions first + 16 mt + (g, g + 8) for queries (2c, 2c + 1).
  const stasc_bf16* kp = k_cache + head_base * HEAD_DIM + 8 * c;
  float s[2][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[mt][e] = 0.f;
    const int p0 = first + 16 * mt + g, p1 = p0 + 8;
    if (first + 16 * mt < n) {
      uint4 a[HEAD_DIM / 32], b[HEAD_DIM / 32];
#pragma unroll
      for (int j = 0; j < HEAD_DIM / 32; ++j) {
        a[j] = load16_or_zero(kp + (long)p0 * HEAD_DIM + 32 * j, p0 < n);
        b[j] = load16_or_zero(kp + (long)p1 * HEAD_DIM + 32 * j, p1 < n);
      }
#pragma unroll
      for (int j = 0; j < HEAD_DIM / 32; ++j) {
        mma_bf16(s[mt], a[j].x, b[j].x, a[j].y, b[j].y, qf[j].x, qf[j].y);
        mma_bf16(s[mt], a[j].z, b[j].z, a[j].w, b[j].w, qf[j].z, qf[j].w);
      }
    }
  }
  // Scale, mask and the chunk's max per query: over the thread's positions, the warp's (lanes of one c) and the
  // block's warps.
  float m[2] = {NEG_INF, NEG_INF};
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int p = first + 16 * mt + g + (e >= 2 ? 8 : 0);
      s[mt][e] = p < n ? s[mt][e] * scale : NEG_INF;
      m[e & 1] = fmaxf(m[e & 1], s[mt][e]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) m[h] = fmaxf(m[h], __shfl_xor_sync(0xffffffffu, m[h], o));
  }
  if (g == 0) {
    red_m[warp][2 * c] = m[0];
    red_m[warp][2 * c + 1] = m[1];
  }
  __syncthreads();
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    m[h] = red_m[0][2 * c + h];
#pragma unroll
    for (int w = 1; w < MMA_WARPS; ++w) m[h] = fmaxf(m[h], red_m[w][2 * c + h]);
  }
  // Weights, rounded to bf16, into the warp's rows of p_s (column-major for B); their sums.
  float l[2] = {0.f, 0.f};
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int local = 16 * mt + g + (e >= 2 ? 8 : 0);
      const stasc_bf16 w = to_bf16(first + local < n ? expf(s[mt][e] - m[e & 1]) : 0.f);
      l[e & 1] += to_f32(w);
      p_s[warp][2 * c + (e & 1)][local] = w;
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) l[h] += __shfl_xor_sync(0xffffffffu, l[h], o);
  }
  if (g == 0) {
    red_l[warp][2 * c] = l[0];
    red_l[warp][2 * c + 1] = l[1];
  }
  __syncwarp();

  // Values: tile i of the output holds dimensions THREAD_DIMS * g + 2i (row g) and + 2i + 1 (row g + 8) of
  // queries (2c, 2c + 1); positions first + 16 kt + (2c, 2c + 1, 2c + 8, 2c + 9) are the thread's A columns.
  float acc[DIM_TILES][4];
#pragma unroll
  for (int i = 0; i < DIM_TILES; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;
  }
  asm volatile("cp.async.wait_all;\n" ::);
  __syncwarp();
#pragma unroll
  for (int kt = 0; kt < 2; ++kt) {
    if (first + 16 * kt >= n) break;
    const int col[4] = {16 * kt + 2 * c, 16 * kt + 2 * c + 1, 16 * kt + 2 * c + 8, 16 * kt + 2 * c + 9};
    uint4 v[4][THREAD_PIECES];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
#pragma unroll
      for (int h = 0; h < THREAD_PIECES; ++h)
        v[k][h] = *(const uint4*)&v_s[warp][col[k]][8 * ((THREAD_PIECES * g + h) ^ swizzle(col[k]))];
    }
    const unsigned b0 = *(const unsigned*)&p_s[warp][g][16 * kt + 2 * c];
    const unsigned b1 = *(const unsigned*)&p_s[warp][g][16 * kt + 2 * c + 8];
#pragma unroll
    for (int i = 0; i < DIM_TILES; ++i) {
      const unsigned w0 = word(v[0][i / 4], i % 4), w1 = word(v[1][i / 4], i % 4);
      const unsigned w2 = word(v[2][i / 4], i % 4), w3 = word(v[3][i / 4], i % 4);
      mma_bf16(acc[i], __byte_perm(w0, w1, 0x5410), __byte_perm(w0, w1, 0x7632), __byte_perm(w2, w3, 0x5410),
               __byte_perm(w2, w3, 0x7632), b0, b1);
    }
  }
  // Every lane has read its values: the warp's shared values become its partial sums.
  __syncwarp();
  float(*o_w)[HEAD_DIM] = (float(*)[HEAD_DIM])&v_s[warp][0][0];
#pragma unroll
  for (int i = 0; i < DIM_TILES; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int query = 2 * c + (e & 1);
      if (query < GROUP) o_w[query][THREAD_DIMS * g + 2 * i + (e >> 1)] = acc[i][e];
    }
  }
  __syncthreads();
  // The warps that had positions add up their sums.
  const int warps = min(MMA_WARPS, (n + WARP_POSITIONS - 1) / WARP_POSITIONS);
  for (int i = t; i < GROUP * HEAD_DIM; i += BLOCK_THREADS) {
    const int query = i / HEAD_DIM, d = i % HEAD_DIM;
    float sum = 0.f;
    for (int w = 0; w < warps; ++w) sum += ((const float(*)[HEAD_DIM]) & v_s[w][0][0])[query][d];
    const long slot = ((long)row * kv_heads * GROUP + kv * GROUP + query) * chunks + chunk;
    scratch_o[slot * HEAD_DIM + d] = sum;
  }
  if (t < GROUP) {
    float mm = red_m[0][t], ll = red_l[0][t];
    for (int w = 1; w < warps; ++w) {
      mm = fmaxf(mm, red_m[w][t]);
      ll += red_l[w][t];
    }
    const long slot = ((long)row * kv_heads * GROUP + kv * GROUP + t) * chunks + chunk;
    scratch_ml[slot * 2] = mm;
    scratch_ml[slot * 2 + 1] = ll;
  }
}
#endif

extern "C" __global__ void __launch_bounds__(BLOCK_THREADS) stasc_decode_attention_mma_bf16(
    const stasc_bf16* q, const stasc_bf16* k_cache, const stasc_bf16* v_cache, const i64* positions,
    float* scratch_o, float* scratch_ml, int kv_heads, long max_len, int chunks, int chunk_len, int skip,
    float scale) {
#ifdef MMA_ATTENTION
  attention_chunk_mma(q, k_cache, v_cache, positions, scratch_o, scratch_ml, kv_heads, max_len, chunks, chunk_len,
                      skip, scale);
#else
  // Launched only where attention::mma_applies holds (the arch, head size and group above).
  __trap();
#endif
}
