// CUDA graphs and pool streams for the decode step (src/generate/cuda_graph.rs), compiled by build.rs against the
// libtorch the binary links, so the compiler checks every signature and no object layout is copied by hand:
// - at::cuda::CUDAGraph, created and destroyed here (its size is libtorch's business), capture through libtorch so
//   that the captured allocations go to a private pool of the caching allocator;
// - libtorch's pool streams: taking one, making it the thread's current stream, and its raw cudaStream_t (the
//   driver API synchronises and queries it; this file calls no CUDA runtime function, so nothing links libcudart).
// A stream crosses into Rust as its packed (id, device) pair. Every function catches all C++ exceptions itself and
// returns nonzero (or null) instead.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <type_traits>

// Mirrored by `StascStream` in src/ffi/mod.rs.
struct StascStream {
  int64_t id;
  int32_t device;
};
static_assert(sizeof(StascStream) == 16 && std::is_standard_layout<StascStream>::value, "StascStream layout");
static_assert(sizeof(at::cuda::MempoolId_t) == 16, "MempoolId_t is a pair of 64-bit ids");

static StascStream pack(const c10::cuda::CUDAStream& s) {
  auto p = s.pack3();
  return StascStream{static_cast<int64_t>(p.stream_id), static_cast<int32_t>(p.device_index)};
}

static c10::cuda::CUDAStream unpack(const StascStream* s) {
  return c10::cuda::CUDAStream::unpack3(s->id, static_cast<c10::DeviceIndex>(s->device), c10::DeviceType::CUDA);
}

extern "C" int stasc_stream_from_pool(int device, StascStream* out) {
  try {
    *out = pack(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device)));
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int stasc_stream_current(int device, StascStream* out) {
  try {
    *out = pack(c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)));
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int stasc_stream_set_current(const StascStream* s) {
  try {
    c10::cuda::setCurrentCUDAStream(unpack(s));
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" void* stasc_stream_raw(const StascStream* s) {
  try {
    return unpack(s).stream();
  } catch (...) {
    return nullptr;
  }
}

extern "C" void* stasc_graph_new() {
  try {
    return new at::cuda::CUDAGraph(false);
  } catch (...) {
    return nullptr;
  }
}

// thread_local_mode: cudaStreamCaptureModeThreadLocal (other threads' unsafe CUDA calls do not break the capture)
// rather than the global mode.
extern "C" int stasc_graph_capture_begin(void* graph, uint64_t pool_a, uint64_t pool_b, int thread_local_mode) {
  try {
    auto mode = thread_local_mode ? cudaStreamCaptureModeThreadLocal : cudaStreamCaptureModeGlobal;
    static_cast<at::cuda::CUDAGraph*>(graph)->capture_begin(at::cuda::MempoolId_t{pool_a, pool_b}, mode);
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int stasc_graph_capture_end(void* graph) {
  try {
    static_cast<at::cuda::CUDAGraph*>(graph)->capture_end();
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int stasc_graph_replay(void* graph) {
  try {
    static_cast<at::cuda::CUDAGraph*>(graph)->replay();
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int stasc_graph_pool(void* graph, uint64_t* pool_a, uint64_t* pool_b) {
  try {
    auto id = static_cast<at::cuda::CUDAGraph*>(graph)->pool();
    *pool_a = id.first;
    *pool_b = id.second;
    return 0;
  } catch (...) {
    return 1;
  }
}

// Only for graphs whose capture ended: the destructor of a half-captured graph may throw, which a destructor
// cannot pass on (std::terminate), so those are leaked by the caller.
extern "C" void stasc_graph_delete(void* graph) {
  delete static_cast<at::cuda::CUDAGraph*>(graph);
}
