// Sort-free sampling: one block per row of logits. The row's tokens are ordered by (logit descending, id
// ascending) -- the sort path's stable order -- through a 64-bit "composite" key per token, and the tokens the sort
// path would pick (the k-th candidate, the nucleus's last member, the inverse-CDF position) are found by radix
// selection over that key: 8 bits per pass, each pass a histogram of counts and masses of the tokens sharing the
// prefix chosen so far. Masses are integers (exp((logit - max) / T) * 2^32, truncated), so their sums do not depend
// on the order they are added in and the result is exactly the sort path's (src/generate/sampling.rs; the CPU
// mirror is src/generate/sort_free.rs).
typedef unsigned long long u64;
typedef long long i64;
#define NEG_INF __int_as_float(0xff800000)

#define BLOCK 512
#define WARPS (BLOCK / 32)
#define NONE 0xFFFFFFFFu

struct Params {
  float max_logit;
  float inv_t;
  int key_bits;  // 0: id order only (plain temperature); 16 for bf16, 32 for f32 logits
  int id_bits;
  unsigned id_mask;
};

// Larger composite = earlier in the order. -0.0 is canonicalised to +0.0 (the sort compares them equal).
__device__ __forceinline__ u64 composite(float f, unsigned id, const Params& p) {
  unsigned key = 0;
  if (p.key_bits > 0) {
    unsigned b = __float_as_uint(f + 0.0f);
    key = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    key >>= (32 - p.key_bits);
  }
  return ((u64)key << p.id_bits) | (u64)(p.id_mask - id);
}

__device__ __forceinline__ u64 mass(float f, const Params& p) {
  float w = expf((f - p.max_logit) * p.inv_t);
  return (u64)(i64)(w * 4294967296.0f);
}

struct Shared {
  unsigned count[256];
  u64 mass[256];
  u64 reduce_u[WARPS];
  float reduce_f[WARPS];
  u64 prefix;
  u64 above;
};

template <typename T>
__device__ float block_max(const T* row, int vocab, Shared& s) {
  float m = NEG_INF;
  for (int i = threadIdx.x; i < vocab; i += BLOCK) m = fmaxf(m, to_f32(row[i]));
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) s.reduce_f[threadIdx.x >> 5] = m;
  __syncthreads();
  m = s.reduce_f[0];
  for (int w = 1; w < WARPS; ++w) m = fmaxf(m, s.reduce_f[w]);
  __syncthreads();
  return m;
}

template <typename T>
__device__ u64 block_mass(const T* row, int vocab, const Params& p, Shared& s) {
  u64 total = 0;
  for (int i = threadIdx.x; i < vocab; i += BLOCK) total += mass(to_f32(row[i]), p);
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
  if ((threadIdx.x & 31) == 0) s.reduce_u[threadIdx.x >> 5] = total;
  __syncthreads();
  total = 0;
  for (int w = 0; w < WARPS; ++w) total += s.reduce_u[w];
  __syncthreads();
  return total;
}

// The smallest composite c present in the row with (count or mass of tokens whose composite is > c) < limit; also
// the mass strictly above it. Requires limit > 0 (the first token always qualifies).
template <typename T>
__device__ u64 radix_select(const T* row, int vocab, const Params& p, bool by_count, u64 limit, u64* mass_above,
                            Shared& s) {
  const int total_bits = p.key_bits + p.id_bits;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 prefix = 0, above_mass = 0, above_count = 0;
  for (int done = 0; done < total_bits;) {
    const int width = min(8, total_bits - done);
    const int shift = total_bits - done - width;
    for (int d = threadIdx.x; d < 256; d += BLOCK) {
      s.count[d] = 0;
      s.mass[d] = 0;
    }
    __syncthreads();
    for (int base = warp * 32; base < vocab; base += BLOCK) {
      const int i = base + lane;
      unsigned digit = NONE;
      u64 q = 0;
      if (i < vocab) {
        const float f = to_f32(row[i]);
        const u64 c = composite(f, (unsigned)i, p);
        if (done == 0 || (c >> (shift + width)) == prefix) {
          digit = (unsigned)((c >> shift) & ((1u << width) - 1));
          q = mass(f, p);
        }
      }
      if (__ballot_sync(0xffffffffu, digit != NONE) == 0) continue;
      // Lanes with the same digit add up their masses so that one of them updates the bin (a bin is hit by most
      // of a warp in the first passes; shared-memory atomics to one address would serialise).
      const unsigned peers = __match_any_sync(0xffffffffu, digit);
      u64 sum = 0;
      for (int src = 0; src < 32; ++src) {
        const u64 v = __shfl_sync(0xffffffffu, q, src);
        if ((peers >> src) & 1u) sum += v;
      }
      if (digit != NONE && lane == __ffs(peers) - 1) {
        atomicAdd(&s.count[digit], (unsigned)__popc(peers));
        atomicAdd(&s.mass[digit], sum);
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // The lowest non-empty bin whose tokens have less than `limit` before them; bins are walked from the top,
      // and once a non-empty bin fails every lower one fails too.
      u64 run_mass = above_mass, run_count = above_count, chosen = 0, chosen_mass = 0, chosen_count = 0;
      for (int d = (1 << width) - 1; d >= 0; --d) {
        if (s.count[d] == 0) continue;
        if ((by_count ? run_count : run_mass) >= limit) break;
        chosen = (u64)d;
        chosen_mass = run_mass;
        chosen_count = run_count;
        run_mass += s.mass[d];
        run_count += s.count[d];
      }
      s.prefix = (prefix << width) | chosen;
      s.above = chosen_mass;
      s.reduce_u[0] = chosen_count;
    }
    __syncthreads();
    prefix = s.prefix;
    above_mass = s.above;
    above_count = s.reduce_u[0];
    __syncthreads();
    done += width;
  }
  *mass_above = above_mass;
  return prefix;
}

template <typename T>
__device__ void sample_row(const T* logits, const float* uniforms, i64* out, int vocab, long row_stride,
                           float inv_t, int top_k, double top_p, int key_bits, int id_bits) {
  __shared__ Shared s;
  const int r = blockIdx.x;
  const T* row = logits + (long)r * row_stride;
  Params p;
  p.inv_t = inv_t;
  p.key_bits = key_bits;
  p.id_bits = id_bits;
  p.id_mask = (unsigned)((1ull << id_bits) - 1);
  p.max_logit = block_max(row, vocab, s);
  const auto id_of = [&](u64 c) { return (int)(p.id_mask - (unsigned)(c & p.id_mask)); };
  u64 total, above;
  if (top_k > 0 && top_k < vocab) {
    const u64 kth = radix_select(row, vocab, p, true, (u64)top_k, &above, s);
    total = above + mass(to_f32(row[id_of(kth)]), p);
  } else {
    total = block_mass(row, vocab, p, s);
  }
  if (top_p < 1.0) {
    // A token is kept while the mass before it is below top_p * total: for integer masses, below its ceiling.
    const u64 limit = (u64)ceil(top_p * (double)total);
    const u64 last = radix_select(row, vocab, p, false, limit, &above, s);
    total = above + mass(to_f32(row[id_of(last)]), p);
  }
  // threshold = floor(u * total) exactly, u = a / 2^24; the pick is the last token with at most that before it.
  const u64 a = (u64)(uniforms[r] * 16777216.0f);
  const u64 threshold = a * (total >> 24) + ((a * (total & 0xFFFFFFull)) >> 24);
  const u64 pick = radix_select(row, vocab, p, false, threshold + 1, &above, s);
  if (threadIdx.x == 0) out[r] = id_of(pick);
}

extern "C" __global__ void __launch_bounds__(BLOCK) stasc_sample_bf16(const stasc_bf16* logits, const float* uniforms,
    i64* out, int vocab, long row_stride, float inv_t, int top_k, double top_p, int key_bits, int id_bits) {
  sample_row(logits, uniforms, out, vocab, row_stride, inv_t, top_k, top_p, key_bits, id_bits);
}

extern "C" __global__ void __launch_bounds__(BLOCK) stasc_sample_f32(const float* logits, const float* uniforms,
    i64* out, int vocab, long row_stride, float inv_t, int top_k, double top_p, int key_bits, int id_bits) {
  sample_row(logits, uniforms, out, vocab, row_stride, inv_t, top_k, top_p, key_bits, id_bits);
}
