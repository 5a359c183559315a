#line 1 "window_sampler.cu"
// Compiled after sampler.cu, in the same program (kernels::SOURCES): it uses its Params, mass and radix path.
//
// Windowed sampling: bf16 logits with top-k and/or top-p, one block per row, three reads of the row instead of
// eleven radix passes. Tokens of one bf16 value share a mass, so a histogram of token counts per value (a "bin")
// answers every selection arithmetically: walking the bins from the largest value, a selection stops in the last
// bin with less than its limit before it, and inside that bin the position follows from the count or mass before
// it and the bin's per-token mass. Only the pick needs ids: the n-th smallest id among the tokens of its bin, found
// in a last read. Bins are kept for the WINDOW values just below the row's largest, in a compressed order where
// every magnitude below 2^-16 (either sign) shares one "tiny" bin; a selection that would stop in the tiny bin or
// below the window (underflow) is answered by the radix path above instead, so the token is always the sort path's.
// The CPU mirror is src/generate/window_sampler.rs.

#define WINDOW 8192
#define BINS_PER_THREAD (WINDOW / BLOCK)
#define TINY_MAGNITUDE (111 << 7)  // bf16 magnitude bits of 2^-16
#define TINY_RANK (0x7FFF - TINY_MAGNITUDE + 1)

// The compressed order of a logit (larger = earlier): one rank per bf16 value of magnitude >= 2^-16, TINY_RANK for
// every smaller magnitude. -0.0 and 0.0 are both tiny.
__device__ __forceinline__ int window_rank(float f) {
  const unsigned b = __float_as_uint(f) >> 16;
  const int magnitude = (int)(b & 0x7FFFu);
  if (magnitude < TINY_MAGNITUDE) return TINY_RANK;
  const int above_tiny = magnitude - TINY_MAGNITUDE + 1;
  return (b & 0x8000u) ? TINY_RANK - above_tiny : TINY_RANK + above_tiny;
}

// The logit of a rank other than TINY_RANK.
__device__ __forceinline__ float window_value(int rank) {
  const unsigned magnitude = (unsigned)(abs(rank - TINY_RANK) - 1 + TINY_MAGNITUDE);
  return __uint_as_float(((rank < TINY_RANK ? 0x8000u : 0u) | magnitude) << 16);
}

// A token's mass, skipping expf where the mass truncates to 0 (exp(-23) * 2^32 < 1).
__device__ __forceinline__ u64 mass_or_zero(float f, const Params& p) {
  return (f - p.max_logit) * p.inv_t < -23.0f ? 0 : mass(f, p);
}

struct Window {
  unsigned count[WINDOW];  // tokens per bin; bin d holds rank top - d
  u64 pre_count[BLOCK];    // per thread: tokens and mass of the bins before its BINS_PER_THREAD bins
  u64 pre_mass[BLOCK];
  u64 warp_u[WARPS];
  u64 warp_v[WARPS];
  u64 under_count, tiny_mass;
  int fallback;
  // The last selection's answer: its bin, the position in it, and the mass of the bins before it.
  int bin;
  unsigned position;
  u64 before_mass;
  int warp;
  unsigned rank_in_warp;
};

// Sums `v` and `u` over the block (every thread gets both).
__device__ void block_sum2(u64& v, u64& u, Window& w) {
  for (int o = 16; o > 0; o >>= 1) {
    v += __shfl_xor_sync(0xffffffffu, v, o);
    u += __shfl_xor_sync(0xffffffffu, u, o);
  }
  if ((threadIdx.x & 31) == 0) {
    w.warp_v[threadIdx.x >> 5] = v;
    w.warp_u[threadIdx.x >> 5] = u;
  }
  __syncthreads();
  v = 0;
  u = 0;
  for (int k = 0; k < WARPS; ++k) {
    v += w.warp_v[k];
    u += w.warp_u[k];
  }
  __syncthreads();
}

// Exclusive prefix sums of `v` and `u` over the threads in order.
__device__ void block_exclusive_scan2(u64& v, u64& u, Window& w) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 iv = v, iu = u;
  for (int o = 1; o < 32; o <<= 1) {
    const u64 sv = __shfl_up_sync(0xffffffffu, iv, o), su = __shfl_up_sync(0xffffffffu, iu, o);
    if (lane >= o) {
      iv += sv;
      iu += su;
    }
  }
  if (lane == 31) {
    w.warp_v[warp] = iv;
    w.warp_u[warp] = iu;
  }
  __syncthreads();
  u64 bv = 0, bu = 0;
  for (int k = 0; k < warp; ++k) {
    bv += w.warp_v[k];
    bu += w.warp_u[k];
  }
  v = bv + iv - v;
  u = bu + iu - u;
  __syncthreads();
}

// The per-token mass of bin d (not the tiny bin).
__device__ __forceinline__ u64 bin_token_mass(int top, int d, const Params& p) {
  return mass_or_zero(window_value(top - d), p);
}

// One selection over the candidates: bins [0, end_bin) whole and the first end_count tokens of end_bin, or every
// token (underflow included) when end_bin == WINDOW. The answer -- the last candidate with less than `limit` before
// it, by count or by mass -- goes to w.bin / w.position / w.before_*; w.fallback is set when it lies in the tiny
// bin or below the window. The thread whose bins hold the answer is the last one starting at or before end_bin
// with less than the limit before its bins.
__device__ void window_select(Window& w, int top, int tiny_bin, const Params& p, int end_bin, unsigned end_count,
                              bool by_count, u64 limit) {
  const int t = threadIdx.x, first = t * BINS_PER_THREAD;
  const auto qualifies = [&](int k) {
    return k < BLOCK && k * BINS_PER_THREAD <= end_bin && (by_count ? w.pre_count[k] : w.pre_mass[k]) < limit;
  };
  if (qualifies(t) && !qualifies(t + 1)) {
    u64 run_count = w.pre_count[t], run_mass = w.pre_mass[t];
    int chosen = -1;
    unsigned chosen_tokens = 0;
    u64 chosen_count = 0, chosen_mass = 0;
    bool stopped = false;
    const int last = min(first + BINS_PER_THREAD - 1, end_bin == WINDOW ? WINDOW - 1 : end_bin);
    for (int d = first; d <= last; ++d) {
      const unsigned c = d == end_bin ? end_count : w.count[d];
      if (c == 0) continue;
      if ((by_count ? run_count : run_mass) >= limit) {
        stopped = true;
        break;
      }
      chosen = d;
      chosen_tokens = c;
      chosen_count = run_count;
      chosen_mass = run_mass;
      run_count += c;
      run_mass += d == tiny_bin ? w.tiny_mass : (u64)c * bin_token_mass(top, d, p);
    }
    // Below the window there are more candidates; the answer is among them unless the limit was reached.
    const bool into_underflow = end_bin == WINDOW && last == WINDOW - 1 && !stopped && w.under_count > 0 &&
                                (by_count ? run_count : run_mass) < limit;
    if (chosen < 0 || chosen == tiny_bin || into_underflow) {
      w.fallback = 1;
    } else {
      const u64 per = by_count ? 1 : bin_token_mass(top, chosen, p);
      const u64 before = by_count ? chosen_count : chosen_mass;
      const u64 taken = per == 0 ? chosen_tokens : min((u64)chosen_tokens, (limit - before + per - 1) / per);
      w.bin = chosen;
      w.position = (unsigned)(taken - 1);
      w.before_mass = chosen_mass;
    }
  }
  __syncthreads();
}

// Calls f(id, logit) for every logit of the row; 8 logits per 16-byte load when the row is `aligned`.
template <typename F>
__device__ __forceinline__ void for_each_logit(const stasc_bf16* row, int vocab, bool aligned, F f) {
  int start = 0;
  if (aligned) {
    const int groups = vocab >> 3;
    const uint4* v = reinterpret_cast<const uint4*>(row);
    for (int j = threadIdx.x; j < groups; j += BLOCK) {
      const uint4 q = v[j];
      const unsigned words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        f(j * 8 + 2 * k, __uint_as_float(words[k] << 16));
        f(j * 8 + 2 * k + 1, __uint_as_float(words[k] & 0xFFFF0000u));
      }
    }
    start = groups << 3;
  }
  for (int i = start + threadIdx.x; i < vocab; i += BLOCK) f(i, to_f32(row[i]));
}

// Which of the 8 ids first .. first + 7 (first a multiple of 8) below `end` have compressed rank `rank`, as bits.
__device__ __forceinline__ unsigned rank_bits(const stasc_bf16* row, int first, int end, bool aligned, int rank) {
  unsigned bits = 0;
  if (aligned && first + 8 <= end) {
    const uint4 q = reinterpret_cast<const uint4*>(row)[first >> 3];
    const unsigned words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      bits |= (unsigned)(window_rank(__uint_as_float(words[k] << 16)) == rank) << (2 * k);
      bits |= (unsigned)(window_rank(__uint_as_float(words[k] & 0xFFFF0000u)) == rank) << (2 * k + 1);
    }
  } else {
    for (int k = 0; k < 8; ++k) {
      if (first + k < end && window_rank(to_f32(row[first + k])) == rank) bits |= 1u << k;
    }
  }
  return bits;
}

__device__ void window_sample_row(const stasc_bf16* logits, const float* uniforms, i64* out, int vocab,
                                  long row_stride, float inv_t, int top_k, double top_p, int id_bits, bool aligned) {
  __shared__ Shared s;
  __shared__ Window w;
  const int r = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const stasc_bf16* row = logits + (long)r * row_stride;
  // Read 1: the largest logit.
  float largest = NEG_INF;
  for_each_logit(row, vocab, aligned, [&](int, float f) { largest = fmaxf(largest, f); });
  const Params p = make_params(block_reduce_max(largest, s), inv_t, 16, id_bits);
  const int top = window_rank(p.max_logit);
  const int tiny_bin = top - TINY_RANK < WINDOW ? top - TINY_RANK : -1;
  for (int d = threadIdx.x; d < WINDOW; d += BLOCK) w.count[d] = 0;
  if (threadIdx.x == 0) w.fallback = 0;
  __syncthreads();

  // Read 2: the histogram; tokens below the window and in the tiny bin also add up their masses.
  u64 under_count = 0, under_mass = 0, tiny_mass = 0, odd = 0;
  for_each_logit(row, vocab, aligned, [&](int, float f) {
    const int d = top - window_rank(f);
    if (f != f || d < 0) {
      odd = 1;  // NaN: left to the radix path
    } else if (d < WINDOW) {
      atomicAdd(&w.count[d], 1u);
      if (d == tiny_bin) tiny_mass += mass_or_zero(f, p);
    } else {
      under_count += 1;
      under_mass += mass_or_zero(f, p);
    }
  });
  block_sum2(under_count, under_mass, w);
  block_sum2(tiny_mass, odd, w);
  if (threadIdx.x == 0) {
    w.under_count = under_count;
    w.tiny_mass = tiny_mass;
    if (odd) w.fallback = 1;
  }
  // Each thread's bins: their tokens and mass, then the prefix sums over threads.
  u64 my_count = 0, my_mass = 0;
  for (int d = threadIdx.x * BINS_PER_THREAD; d < (threadIdx.x + 1) * BINS_PER_THREAD; ++d) {
    const unsigned c = w.count[d];
    if (c == 0) continue;
    my_count += c;
    my_mass += d == tiny_bin ? tiny_mass : (u64)c * bin_token_mass(top, d, p);
  }
  u64 window_mass = my_mass, window_count = my_count;  // the count only pairs the sum
  block_sum2(window_mass, window_count, w);
  block_exclusive_scan2(my_count, my_mass, w);
  w.pre_count[threadIdx.x] = my_count;
  w.pre_mass[threadIdx.x] = my_mass;
  __syncthreads();

  // The selections, each cutting the candidates of the next.
  int end_bin = WINDOW;
  unsigned end_count = 0;
  u64 total = window_mass + under_mass;
  for (int stage = 0; stage < 3 && !w.fallback; ++stage) {
    if (stage == 0 && !(top_k > 0 && top_k < vocab)) continue;
    if (stage == 1 && !(top_p < 1.0)) continue;
    window_select(w, top, tiny_bin, p, end_bin, end_count, stage == 0,
                  selection_limit(stage, total, top_k, top_p, uniforms[r]));
    if (w.fallback) break;
    end_bin = w.bin;
    end_count = w.position + 1;
    total = w.before_mass + (u64)end_count * bin_token_mass(top, end_bin, p);
  }
  if (w.fallback) {
    const u64 pick = radix_pick(row, vocab, p, top_k, top_p, uniforms[r], s);
    if (threadIdx.x == 0) out[r] = (int)(p.id_mask - (unsigned)(pick & p.id_mask));
    return;
  }

  // Read 3: the position-th smallest id among the tokens of the pick's bin. Each warp counts them in its own run of
  // ids, 256 at a time (8 consecutive ids a lane); the warp holding the answer walks its run again.
  const int rank = top - end_bin;
  const int per_warp = (((vocab + WARPS - 1) / WARPS) + 255) & ~255;
  const int begin = warp * per_warp, end = min(vocab, begin + per_warp);
  unsigned hits = 0;
  for (int base = begin; base < end; base += 256) hits += __popc(rank_bits(row, base + 8 * lane, end, aligned, rank));
  for (int o = 16; o > 0; o >>= 1) hits += __shfl_xor_sync(0xffffffffu, hits, o);
  if (lane == 0) s.reduce_u[warp] = hits;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned seen = 0;
    for (int k = 0; k < WARPS; ++k) {
      const unsigned h = (unsigned)s.reduce_u[k];
      if (w.position < seen + h) {
        w.warp = k;
        w.rank_in_warp = w.position - seen;
        break;
      }
      seen += h;
    }
  }
  __syncthreads();
  if (warp == w.warp) {
    unsigned left = w.rank_in_warp;
    for (int base = begin; base < end; base += 256) {
      const unsigned bits = rank_bits(row, base + 8 * lane, end, aligned, rank);
      const unsigned n = __popc(bits);
      unsigned upto = n;  // matches in lanes 0 .. lane
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned v = __shfl_up_sync(0xffffffffu, upto, o);
        if (lane >= o) upto += v;
      }
      const unsigned all = __shfl_sync(0xffffffffu, upto, 31);
      if (left < all) {
        if (left >= upto - n && left < upto) {
          out[r] = base + 8 * lane + (int)__fns(bits, 0, (int)(left - (upto - n)) + 1);
        }
        break;
      }
      left -= all;
    }
  }
}

extern "C" __global__ void __launch_bounds__(BLOCK) stasc_window_sample_bf16(const stasc_bf16* logits,
    const float* uniforms, i64* out, int vocab, long row_stride, float inv_t, int top_k, double top_p, int id_bits,
    int aligned) {
  window_sample_row(logits, uniforms, out, vocab, row_stride, inv_t, top_k, top_p, id_bits, aligned != 0);
}
