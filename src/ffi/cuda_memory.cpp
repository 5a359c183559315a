// Returns the CUDA caching allocator's unused blocks to the driver. tch exposes no such call, and the STaSC loop
// needs it between phases (generation -> fine-tuning -> generation) so that a process never keeps GPU memory it no
// longer uses. Compiled by build.rs against the same libtorch the binary links.
#include <c10/cuda/CUDACachingAllocator.h>

extern "C" int stasc_cuda_empty_cache() {
  try {
    c10::cuda::CUDACachingAllocator::emptyCache();
    return 0;
  } catch (...) {
    return 1;
  }
}
