// The element types of every kernel source (kernels::compile prepends this file): bf16 kept as its 16 bits, read as
// f32, and rounded back to nearest even exactly as c10::BFloat16 rounds, so a kernel stores the bits a libtorch op
// would. The pointer argument of round_to / from_f32 / store only picks the overload.
typedef unsigned short stasc_bf16;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(stasc_bf16 x) { return __uint_as_float(((unsigned)x) << 16); }
// Round to nearest even, as c10::BFloat16 does: from sm_80 on with the conversion instruction, which
// __float2bfloat16 (what libtorch's CUDA kernels call) compiles to, one instruction instead of ~8 integer ones
// (the fused AdamW kernel, ~10 roundings an element, was bound by them); before sm_80 in integers (NaN kept quiet).
__device__ __forceinline__ stasc_bf16 to_bf16(float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned short r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v));
  return r;
#endif
  unsigned u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (stasc_bf16)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (stasc_bf16)(u >> 16);
}
__device__ __forceinline__ float from_f32(float v, const float*) { return v; }
__device__ __forceinline__ stasc_bf16 from_f32(float v, const stasc_bf16*) { return to_bf16(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(stasc_bf16* p, float v) { *p = to_bf16(v); }
__device__ __forceinline__ float round_to(float v, const float*) { return v; }
__device__ __forceinline__ float round_to(float v, const stasc_bf16*) { return to_f32(to_bf16(v)); }
// Eight consecutive elements from one 16-byte aligned load, as f32.
__device__ __forceinline__ void load8(const stasc_bf16* p, float out[8]) {
  const uint4 raw = *(const uint4*)p;
  const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(w[i] << 16);
    out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void load8(const float* p, float out[8]) {
  const float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
  out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
  out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
}
