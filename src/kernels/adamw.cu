// AdamW over flat buffers in one pass: gradient clipping's scale, decoupled weight decay, both moments, the update
// and zeroing the gradient, for every element. The eager path (train/optim.rs) runs these as ~10 libtorch kernels
// over the whole buffer, each reading and writing it: about 70 GB of memory traffic a step for a 1.5B model against
// 24 GB here. Every intermediate is rounded to the parameter dtype exactly where a libtorch op would store it
// (the eager path's op order, each op computing in f32 as libtorch's opmath does), so both paths give the same
// bits (tests/it/kernels.rs checks it on the GPU).

// ATen's lerp (ATen/native/Lerp.h) for a scalar weight, with the multiply-add nvcc makes of it.
__device__ __forceinline__ float lerp(float self, float end, float weight) {
  return fabsf(weight) < 0.5f ? fmaf(weight, end - self, self) : fmaf(-(end - self), 1.0f - weight, end);
}

struct Step {
  long n;               // elements
  long decayed;         // the first `decayed` elements get weight decay
  float decay_factor;   // 1 - lr * weight_decay
  float one_minus_beta1;
  float one_minus_beta2;
  float scale;          // -1 / (sqrt(bias_correction2) * step_size)
  float shift;          // -eps / step_size
  int update_params;    // 0 when lr is 0: only the moments move
};

// One element, in the eager path's order: g *= clip; p *= decay; m = lerp(m, g); v = lerp(v, g*g);
// d = sqrt(v) * scale + shift (three ops); p = p + m / d; g = 0. Products and sums that are separate libtorch ops
// use the _rn intrinsics, which the compiler never contracts into a multiply-add across what were two kernels;
// lerp is one op, contracted as nvcc contracts libtorch's.
template <typename T>
__device__ __forceinline__ void element(T* p, T* g, T* m, T* v, float clip, bool has_clip, bool decay,
                                        const Step& s) {
  const T* tag = (const T*)0;
  float grad = to_f32(*g);
  if (has_clip) grad = round_to(__fmul_rn(grad, clip), tag);
  float param = to_f32(*p);
  if (decay) param = round_to(__fmul_rn(param, s.decay_factor), tag);
  const float mean = round_to(lerp(to_f32(*m), grad, s.one_minus_beta1), tag);
  const float square = round_to(__fmul_rn(grad, grad), tag);
  const float var = round_to(lerp(to_f32(*v), square, s.one_minus_beta2), tag);
  *m = from_f32(mean, tag);
  *v = from_f32(var, tag);
  if (s.update_params) {
    float d = round_to(__fsqrt_rn(var), tag);
    d = round_to(__fmul_rn(d, s.scale), tag);
    d = round_to(__fadd_rn(d, s.shift), tag);
    param = round_to(__fadd_rn(param, __fdiv_rn(mean, d)), tag);
  }
  *p = from_f32(param, tag);
  *g = from_f32(0.0f, tag);
}

// Elements of one 16-byte vector access.
template <typename T> struct Pack;
template <> struct Pack<stasc_bf16> { typedef uint4 type; enum { N = 8 }; };
template <> struct Pack<float> { typedef float4 type; enum { N = 4 }; };

// Grid-stride over the buffer, one 16-byte load and store per buffer a thread at a time (the launcher checks the
// buffers are 16-byte aligned), then the last elements one by one. `clip` (a device scalar in the dtype: the
// clipping coefficient) may be null.
template <typename T>
__device__ void adamw(T* p, T* g, T* m, T* v, const T* clip, Step s) {
  typedef typename Pack<T>::type V;
  const int N = Pack<T>::N;
  const bool has_clip = clip != 0;
  const float c = has_clip ? to_f32(*clip) : 1.0f;
  const long stride = (long)gridDim.x * blockDim.x;
  const long first = (long)blockIdx.x * blockDim.x + threadIdx.x;
  const long packs = s.n / N;
  for (long k = first; k < packs; k += stride) {
    V pv = ((V*)p)[k], gv = ((V*)g)[k], mv = ((V*)m)[k], vv = ((V*)v)[k];
    T *pe = (T*)&pv, *ge = (T*)&gv, *me = (T*)&mv, *ve = (T*)&vv;
#pragma unroll
    for (int j = 0; j < N; ++j) element(pe + j, ge + j, me + j, ve + j, c, has_clip, N * k + j < s.decayed, s);
    ((V*)p)[k] = pv;
    ((V*)g)[k] = gv;
    ((V*)m)[k] = mv;
    ((V*)v)[k] = vv;
  }
  for (long i = N * packs + first; i < s.n; i += stride) {
    element(p + i, g + i, m + i, v + i, c, has_clip, i < s.decayed, s);
  }
}

extern "C" __global__ void stasc_adamw_bf16(stasc_bf16* p, stasc_bf16* g, stasc_bf16* m, stasc_bf16* v,
                                            const stasc_bf16* clip, Step s) {
  adamw(p, g, m, v, clip, s);
}

extern "C" __global__ void stasc_adamw_f32(float* p, float* g, float* m, float* v, const float* clip, Step s) {
  adamw(p, g, m, v, clip, s);
}
