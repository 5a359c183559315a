// Per-device CUDA state that tch does not expose, compiled by build.rs against the same libtorch the binary links:
// - the caching allocator's emptyCache: the STaSC loop returns memory to the driver between phases
//   (generation -> fine-tuning -> generation) so a process never keeps GPU memory it no longer uses;
// - the calling thread's current stream of a device: NCCL collectives are queued on it, after the kernels that
//   produced their input;
// - making a device the calling thread's current one: libtorch's CUDA graph capture records on the current
//   device's current stream, so a worker thread on cuda:1 must have cuda:1 current;
// - seeding one device's default generator: with one worker thread per GPU, torch.manual_seed (which reseeds every
//   device) from one worker would change another worker's dropout masks mid-pass;
// - the caching allocator's per-process memory fraction of a device: generation stays inside the share of the card
//   that gpu_memory_utilization grants (the allocator frees its cached blocks and retries before going past it);
// - whether scaled-dot-product attention may pick cuDNN's kernel (torch.backends.cuda.enable_cudnn_sdp).
// Every function catches all C++ exceptions itself.
#include <ATen/Context.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <mutex>

extern "C" int stasc_cuda_empty_cache() {
  try {
    c10::cuda::CUDACachingAllocator::emptyCache();
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" void* stasc_cuda_current_stream(int device) {
  try {
    return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
  } catch (...) {
    return nullptr;
  }
}

extern "C" int stasc_cuda_manual_seed(int device, uint64_t seed) {
  try {
    auto gen = at::cuda::detail::getDefaultCUDAGenerator(static_cast<c10::DeviceIndex>(device));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int stasc_cuda_set_device(int device) {
  try {
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int stasc_cuda_set_memory_fraction(double fraction, int device) {
  try {
    // The allocator exists only once CUDA is initialised (torch.cuda.set_per_process_memory_fraction does the same).
    at::globalContext().lazyInitDevice(c10::DeviceType::CUDA);
    c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int stasc_sdp_use_cudnn(int enabled) {
  try {
    at::globalContext().setSDPUseCuDNN(enabled != 0);
    return 0;
  } catch (...) {
    return 1;
  }
}
