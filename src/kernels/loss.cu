// The LM head's loss in training passes (kernels/loss.rs; an autograd op of src/ffi/train_ops.cpp): cross-entropy
// of logit rows (the head's output, in its dtype) against target ids, computed in f32 as libtorch's log_softmax and
// nll_loss of the upcast logits are, without the f32 copies of the logits they read and write. For row r with target t (t outside [0, vocab), as -100: ignored, loss 0, gradient 0):
//   lse_r = max_r + log(sum_j exp(x_rj - max_r)),   loss_r = lse_r - x_rt
//   backward: dx_rj = g_r (exp(x_rj - lse_r) - [j == t]), rounded to the logits' dtype.
// A block per row. Forward: each thread keeps a running max and sum over its share of the row (the sum rescaled
// when the max grows), and the block combines the pairs; backward: one pass writing the row's gradient.

#define CE_THREADS 1024
// -infinity (NVRTC has no math.h).
#define CE_NEG_INF __int_as_float(0xff800000)

// Adds v to the running (max m, sum s of exp(. - m)).
__device__ __forceinline__ void ce_add(float& m, float& s, float v) {
  if (v > m) {
    s = s * expf(m - v) + 1.0f;
    m = v;
  } else {
    s += expf(v - m);
  }
}

// Combines two running pairs into (m, s).
__device__ __forceinline__ void ce_merge(float& m, float& s, float m2, float s2) {
  if (m2 > m) {
    s = s * expf(m - m2) + s2;
    m = m2;
  } else if (s2 > 0.0f) {
    s += s2 * expf(m2 - m);
  }
}

// The block's combined pair, in every thread.
__device__ void ce_block_merge(float& m, float& s) {
  __shared__ float ms[CE_THREADS / 32], ss[CE_THREADS / 32];
  for (int o = 16; o > 0; o >>= 1) ce_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) {
    ms[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  m = lane < warps ? ms[lane] : CE_NEG_INF;
  s = lane < warps ? ss[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) ce_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
}

template <typename T>
__device__ void ce_finish(const T* x, const long* targets, float* lse, float* loss, long vocab, float m, float s) {
  if (threadIdx.x == 0) {
    const long r = blockIdx.x, t = targets[r];
    const float l = m + logf(s);
    lse[r] = l;
    loss[r] = (t >= 0 && t < vocab) ? l - to_f32(x[t]) : 0.0f;
  }
}

template <typename T>
__device__ void cross_entropy(const T* logits, const long* targets, float* lse, float* loss, long vocab) {
  const T* x = logits + (long)blockIdx.x * vocab;
  float m = CE_NEG_INF, s = 0.0f;
  for (long j = threadIdx.x; j < vocab; j += blockDim.x) ce_add(m, s, to_f32(x[j]));
  ce_block_merge(m, s);
  ce_finish(x, targets, lse, loss, vocab, m, s);
}

// Eight logits a thread per 16-byte load (vocab a multiple of 8, rows 16-byte aligned).
extern "C" __global__ void stasc_cross_entropy8_bf16(const stasc_bf16* logits, const long* targets, float* lse,
                                                     float* loss, long vocab) {
  const stasc_bf16* x = logits + (long)blockIdx.x * vocab;
  float m = CE_NEG_INF, s = 0.0f;
  for (long p = threadIdx.x; p < vocab / 8; p += blockDim.x) {
    const uint4 v = ((const uint4*)x)[p];
    const stasc_bf16* e = (const stasc_bf16*)&v;
    float local = to_f32(e[0]);
#pragma unroll
    for (int j = 1; j < 8; ++j) local = fmaxf(local, to_f32(e[j]));
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) sum += expf(to_f32(e[j]) - local);
    ce_merge(m, s, local, sum);
  }
  ce_block_merge(m, s);
  ce_finish(x, targets, lse, loss, vocab, m, s);
}

extern "C" __global__ void stasc_cross_entropy_bf16(const stasc_bf16* logits, const long* targets, float* lse,
                                                    float* loss, long vocab) {
  cross_entropy(logits, targets, lse, loss, vocab);
}

extern "C" __global__ void stasc_cross_entropy_f32(const float* logits, const long* targets, float* lse, float* loss,
                                                   long vocab) {
  cross_entropy(logits, targets, lse, loss, vocab);
}

template <typename T>
__device__ void cross_entropy_backward(const float* g, const T* logits, const long* targets, const float* lse,
                                       T* grad, long vocab) {
  const T* tag = (const T*)0;
  const long r = blockIdx.x, t = targets[r];
  const bool kept = t >= 0 && t < vocab;
  const float gr = kept ? g[r] : 0.0f, l = lse[r];
  const T* x = logits + r * vocab;
  T* d = grad + r * vocab;
  for (long j = threadIdx.x; j < vocab; j += blockDim.x) {
    d[j] = from_f32(gr * (expf(to_f32(x[j]) - l) - (j == t ? 1.0f : 0.0f)), tag);
  }
}

extern "C" __global__ void stasc_cross_entropy_backward8_bf16(const float* g, const stasc_bf16* logits,
                                                              const long* targets, const float* lse,
                                                              stasc_bf16* grad, long vocab) {
  const long r = blockIdx.x, t = targets[r];
  const bool kept = t >= 0 && t < vocab;
  const float gr = kept ? g[r] : 0.0f, l = lse[r];
  const uint4* x = (const uint4*)(logits + r * vocab);
  uint4* d = (uint4*)(grad + r * vocab);
  for (long p = threadIdx.x; p < vocab / 8; p += blockDim.x) {
    const uint4 v = x[p];
    const stasc_bf16* e = (const stasc_bf16*)&v;
    uint4 out;
    stasc_bf16* o = (stasc_bf16*)&out;
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = to_bf16(gr * (expf(to_f32(e[j]) - l) - (p * 8 + j == t ? 1.0f : 0.0f)));
    d[p] = out;
  }
}

extern "C" __global__ void stasc_cross_entropy_backward_bf16(const float* g, const stasc_bf16* logits,
                                                             const long* targets, const float* lse,
                                                             stasc_bf16* grad, long vocab) {
  cross_entropy_backward(g, logits, targets, lse, grad, vocab);
}

extern "C" __global__ void stasc_cross_entropy_backward_f32(const float* g, const float* logits, const long* targets,
                                                            const float* lse, float* grad, long vocab) {
  cross_entropy_backward(g, logits, targets, lse, grad, vocab);
}
