// Sort-free sampling: one block per row of logits. The row's tokens are ordered by (logit descending, id
// ascending) -- the sort path's stable order -- through a 64-bit "composite" key per token, and the tokens the sort
// path would pick (the k-th candidate, the nucleus's last member, the inverse-CDF position) are found by radix
// selection over that key: 8 bits per pass, each pass a histogram of counts and masses of the tokens sharing the
// prefix chosen so far. Masses are integers (exp((logit - max) / T) * 2^32, truncated), so their sums do not depend
// on the order they are added in and the result is exactly the sort path's (src/generate/sampling.rs; the CPU
// mirror is src/generate/sort_free.rs). Each selection looks only at the candidates the previous one left (the
// tokens at or above its result, the "floor"), and takes their total mass from its own first histogram. bf16 logits
// under top-k/top-p take the windowed kernel (window_sampler.cu, compiled after this file), which falls back on the
// radix selection here; f32 logits and plain temperature take it directly.
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

__device__ __forceinline__ Params make_params(float max_logit, float inv_t, int key_bits, int id_bits) {
  Params p;
  p.max_logit = max_logit;
  p.inv_t = inv_t;
  p.key_bits = key_bits;
  p.id_bits = id_bits;
  p.id_mask = (unsigned)((1ull << id_bits) - 1);
  return p;
}

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
  u64 limit;
};

// The limit of selection `stage` (0 top-k, 1 nucleus, 2 pick) over candidates of total mass `total`: the chosen
// token is the last one with less than the limit (a count for top-k, a mass otherwise) before it. The nucleus keeps
// a token while the mass before it is below top_p * total, for integer masses below its ceiling; the pick is the
// last token with at most floor(u * total) before it, u = a / 2^24, computed exactly.
__device__ __forceinline__ u64 selection_limit(int stage, u64 total, int top_k, double top_p, float uniform) {
  if (stage == 0) return (u64)top_k;
  if (stage == 1) return (u64)ceil(top_p * (double)total);
  const u64 a = (u64)(uniform * 16777216.0f);
  return a * (total >> 24) + ((a * (total & 0xFFFFFFull)) >> 24) + 1;
}

__device__ float block_reduce_max(float m, Shared& s);

template <typename T>
__device__ float block_max(const T* row, int vocab, Shared& s) {
  float m = NEG_INF;
  for (int i = threadIdx.x; i < vocab; i += BLOCK) m = fmaxf(m, to_f32(row[i]));
  return block_reduce_max(m, s);
}

// The largest of every thread's `m`.
__device__ float block_reduce_max(float m, Shared& s) {
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) s.reduce_f[threadIdx.x >> 5] = m;
  __syncthreads();
  m = s.reduce_f[0];
  for (int w = 1; w < WARPS; ++w) m = fmaxf(m, s.reduce_f[w]);
  __syncthreads();
  return m;
}

// Adds the candidates of row[begin, end) (tokens whose composite is at least `floor`) that match `prefix` above the
// digit at `shift` (every candidate when done == 0) to that digit's bins: count[d] tokens of mass masses[d]. Each
// warp takes 32 consecutive ids at a time; lanes with the same digit add up their masses so that one of them updates
// the bin (a bin is hit by most of a warp in the first passes; shared-memory atomics to one address would serialise).
template <typename T>
__device__ void add_to_bins(const T* row, int begin, int end, const Params& p, u64 floor, int done, int shift,
                            int width, u64 prefix, unsigned* count, u64* masses) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int base = begin + warp * 32; base < end; base += BLOCK) {
    const int i = base + lane;
    unsigned digit = NONE;
    u64 q = 0;
    if (i < end) {
      const float f = to_f32(row[i]);
      const u64 c = composite(f, (unsigned)i, p);
      if (c >= floor && (done == 0 || (c >> (shift + width)) == prefix)) {
        digit = (unsigned)((c >> shift) & ((1u << width) - 1));
        q = mass(f, p);
      }
    }
    if (__ballot_sync(0xffffffffu, digit != NONE) == 0) continue;
    const unsigned peers = __match_any_sync(0xffffffffu, digit);
    // 32 shuffles: faster here than __reduce_add_sync over 16-bit halves (measured on the H200, 2026-11-30).
    u64 sum = 0;
    for (int src = 0; src < 32; ++src) {
      const u64 v = __shfl_sync(0xffffffffu, q, src);
      if ((peers >> src) & 1u) sum += v;
    }
    if (digit != NONE && lane == __ffs(peers) - 1) {
      atomicAdd(&count[digit], (unsigned)__popc(peers));
      atomicAdd(&masses[digit], sum);
    }
  }
}

// Selection `stage` over the candidates at or above `floor`: the smallest candidate composite c with (count or mass
// of the candidates whose composite is > c) < the stage's limit, which the first pass sets from the candidates'
// total mass. The limit is at least 1, so the first candidate always qualifies.
template <typename T>
__device__ u64 radix_select(const T* row, int vocab, const Params& p, u64 floor, int stage, int top_k, double top_p,
                            float uniform, Shared& s) {
  const int total_bits = p.key_bits + p.id_bits;
  const bool by_count = stage == 0;
  u64 prefix = 0, above_mass = 0, above_count = 0;
  for (int done = 0; done < total_bits;) {
    const int width = min(8, total_bits - done);
    const int shift = total_bits - done - width;
    for (int d = threadIdx.x; d < 256; d += BLOCK) {
      s.count[d] = 0;
      s.mass[d] = 0;
    }
    __syncthreads();
    add_to_bins(row, 0, vocab, p, floor, done, shift, width, prefix, s.count, s.mass);
    __syncthreads();
    if (threadIdx.x == 0) {
      if (done == 0) {
        u64 total = 0;
        for (int d = 0; d < 256; ++d) total += s.mass[d];
        s.limit = selection_limit(stage, total, top_k, top_p, uniform);
      }
      // The lowest non-empty bin whose candidates have less than the limit before them; bins are walked from the
      // top, and once a non-empty bin fails every lower one fails too.
      const u64 lim = s.limit;
      u64 run_mass = above_mass, run_count = above_count, chosen = 0, chosen_mass = 0, chosen_count = 0;
      for (int d = (1 << width) - 1; d >= 0; --d) {
        if (s.count[d] == 0) continue;
        if ((by_count ? run_count : run_mass) >= lim) break;
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
  return prefix;
}

// The token of one row (as its composite) by radix selection: each selection's result is the floor of the next (the
// k-th candidate, then the nucleus's last member).
template <typename T>
__device__ u64 radix_pick(const T* row, int vocab, const Params& p, int top_k, double top_p, float uniform,
                          Shared& s) {
  u64 floor = 0;
  if (top_k > 0 && top_k < vocab) floor = radix_select(row, vocab, p, floor, 0, top_k, top_p, 0.0f, s);
  if (top_p < 1.0) floor = radix_select(row, vocab, p, floor, 1, top_k, top_p, 0.0f, s);
  return radix_select(row, vocab, p, floor, 2, top_k, top_p, uniform, s);
}

template <typename T>
__device__ void sample_row(const T* logits, const float* uniforms, i64* out, int vocab, long row_stride,
                           float inv_t, int top_k, double top_p, int key_bits, int id_bits) {
  __shared__ Shared s;
  const int r = blockIdx.x;
  const T* row = logits + (long)r * row_stride;
  const Params p = make_params(block_max(row, vocab, s), inv_t, key_bits, id_bits);
  const u64 pick = radix_pick(row, vocab, p, top_k, top_p, uniforms[r], s);
  if (threadIdx.x == 0) out[r] = (int)(p.id_mask - (unsigned)(pick & p.id_mask));
}

extern "C" __global__ void __launch_bounds__(BLOCK) stasc_sample_bf16(const stasc_bf16* logits, const float* uniforms,
    i64* out, int vocab, long row_stride, float inv_t, int top_k, double top_p, int key_bits, int id_bits) {
  sample_row(logits, uniforms, out, vocab, row_stride, inv_t, top_k, top_p, key_bits, id_bits);
}

extern "C" __global__ void __launch_bounds__(BLOCK) stasc_sample_f32(const float* logits, const float* uniforms,
    i64* out, int vocab, long row_stride, float inv_t, int top_k, double top_p, int key_bits, int id_bits) {
  sample_row(logits, uniforms, out, vocab, row_stride, inv_t, top_k, top_p, key_bits, id_bits);
}

// ---------------------------------------------------------------------------------------------------------------
// Split rows: the same selections for a batch of a few rows, each row spread over SPLIT blocks (one block per row
// leaves a batch of one on one SM). The host launches, in order: split_begin; split_max; then for each selection
// (top-k, nucleus, pick) one split_hist + split_select per radix pass. Blocks add their slice's histogram into the
// row's global histogram with atomics; masses are integers, so the sums, and the tokens, are exactly the one-block
// kernel's. Per-row state lives in SplitRow.

struct SplitRow {
  unsigned max_key;  // the largest logit as an order-preserving unsigned key (atomicMax)
  int done;          // bits of the current selection chosen so far
  int unused[2];
  u64 prefix, above_mass, above_count, limit;
  u64 floor;  // the previous selection's result: the candidates are the tokens at or above it
};

struct SplitHist {
  unsigned count[256];
  u64 mass[256];
};

__device__ __forceinline__ unsigned order_key(float f) {
  const unsigned b = __float_as_uint(f + 0.0f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float from_order_key(unsigned k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// The slice of a row that block x of `gridDim.x` takes.
__device__ __forceinline__ void slice(int vocab, int* begin, int* end) {
  const int per = (vocab + gridDim.x - 1) / gridDim.x;
  *begin = min(vocab, (int)blockIdx.x * per);
  *end = min(vocab, *begin + per);
}

extern "C" __global__ void stasc_split_begin(SplitRow* state, SplitHist* hist) {
  const int r = blockIdx.x;
  for (int d = threadIdx.x; d < 256; d += blockDim.x) {
    hist[r].count[d] = 0;
    hist[r].mass[d] = 0;
  }
  if (threadIdx.x == 0) {
    SplitRow s;
    s.max_key = 0;
    s.done = 0;
    s.unused[0] = s.unused[1] = 0;
    s.prefix = s.above_mass = s.above_count = s.limit = s.floor = 0;
    state[r] = s;
  }
}

template <typename T>
__device__ void split_max(const T* logits, SplitRow* state, int vocab, long row_stride) {
  __shared__ float partial[WARPS];
  const T* row = logits + (long)blockIdx.y * row_stride;
  int begin, end;
  slice(vocab, &begin, &end);
  float m = NEG_INF;
  for (int i = begin + threadIdx.x; i < end; i += BLOCK) m = fmaxf(m, to_f32(row[i]));
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < WARPS; ++w) m = fmaxf(m, partial[w]);
    if (begin < end) atomicMax(&state[blockIdx.y].max_key, order_key(m));
  }
}

template <typename T>
__device__ void split_hist(const T* logits, SplitRow* state, SplitHist* hist, int vocab, long row_stride,
                           float inv_t, int key_bits, int id_bits) {
  __shared__ unsigned count[256];
  __shared__ u64 masses[256];
  const int r = blockIdx.y;
  const T* row = logits + (long)r * row_stride;
  const Params p = make_params(from_order_key(state[r].max_key), inv_t, key_bits, id_bits);
  const int total_bits = key_bits + id_bits, done = state[r].done;
  const int width = min(8, total_bits - done), shift = total_bits - done - width;
  const u64 prefix = state[r].prefix, floor = state[r].floor;
  for (int d = threadIdx.x; d < 256; d += BLOCK) {
    count[d] = 0;
    masses[d] = 0;
  }
  __syncthreads();
  int begin, end;
  slice(vocab, &begin, &end);
  add_to_bins(row, begin, end, p, floor, done, shift, width, prefix, count, masses);
  __syncthreads();
  for (int d = threadIdx.x; d < 256; d += BLOCK) {
    if (count[d] != 0) {
      atomicAdd(&hist[r].count[d], count[d]);
      atomicAdd(&hist[r].mass[d], masses[d]);
    }
  }
}

// After a histogram pass: picks the pass's bin as radix_select does; a selection's first pass sets its limit from
// the candidates' total mass (the histogram covers every candidate then), and its last writes the row's token
// (the pick) or makes its result the next selection's floor. `stage` is the selection this pass belongs to.
template <typename T>
__device__ void split_select(const T* logits, SplitRow* state, SplitHist* hist, const float* uniforms, i64* out,
                             long row_stride, float inv_t, int key_bits, int id_bits, int stage, int top_k,
                             double top_p) {
  if (threadIdx.x != 0) return;
  const int r = blockIdx.x;
  SplitRow s = state[r];
  SplitHist& h = hist[r];
  const int total_bits = key_bits + id_bits;
  const int width = min(8, total_bits - s.done);
  if (s.done == 0) {
    u64 total = 0;
    for (int d = 0; d < 256; ++d) total += h.mass[d];
    s.limit = selection_limit(stage, total, top_k, top_p, uniforms[r]);
  }
  const bool by_count = stage == 0;
  u64 run_mass = s.above_mass, run_count = s.above_count, chosen = 0, chosen_mass = 0, chosen_count = 0;
  for (int d = (1 << width) - 1; d >= 0; --d) {
    if (h.count[d] == 0) continue;
    if ((by_count ? run_count : run_mass) >= s.limit) break;
    chosen = (u64)d;
    chosen_mass = run_mass;
    chosen_count = run_count;
    run_mass += h.mass[d];
    run_count += h.count[d];
  }
  for (int d = 0; d < 256; ++d) {
    h.count[d] = 0;
    h.mass[d] = 0;
  }
  s.prefix = (s.prefix << width) | chosen;
  s.above_mass = chosen_mass;
  s.above_count = chosen_count;
  s.done += width;
  if (s.done >= total_bits) {
    if (stage == 2) {
      const unsigned id_mask = (unsigned)((1ull << id_bits) - 1);
      out[r] = (int)(id_mask - (unsigned)(s.prefix & id_mask));
    } else {
      s.floor = s.prefix;
    }
    s.done = 0;
    s.prefix = s.above_mass = s.above_count = 0;
  }
  state[r] = s;
  (void)logits;
  (void)row_stride;
  (void)inv_t;
}

#define SPLIT_INSTANTIATE(T, SUFFIX)                                                                              \
  extern "C" __global__ void __launch_bounds__(BLOCK) stasc_split_max_##SUFFIX(const T* logits, SplitRow* state, \
      int vocab, long row_stride) {                                                                               \
    split_max(logits, state, vocab, row_stride);                                                                  \
  }                                                                                                               \
  extern "C" __global__ void __launch_bounds__(BLOCK) stasc_split_hist_##SUFFIX(const T* logits, SplitRow* state, \
      SplitHist* hist, int vocab, long row_stride, float inv_t, int key_bits, int id_bits) {                     \
    split_hist(logits, state, hist, vocab, row_stride, inv_t, key_bits, id_bits);                                \
  }                                                                                                               \
  extern "C" __global__ void stasc_split_select_##SUFFIX(const T* logits, SplitRow* state, SplitHist* hist,       \
      const float* uniforms, i64* out, long row_stride, float inv_t, int key_bits, int id_bits, int stage,        \
      int top_k, double top_p) {                                                                                  \
    split_select(logits, state, hist, uniforms, out, row_stride, inv_t, key_bits, id_bits, stage, top_k, top_p);  \
  }

SPLIT_INSTANTIATE(stasc_bf16, bf16)
SPLIT_INSTANTIATE(float, f32)
