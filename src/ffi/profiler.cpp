// libtorch's Kineto profiler (what torch.profiler drives from Python), for `stasc bench generate --trace`: every CUDA
// kernel of the process (libtorch's, cuBLAS's, and ours launched through the driver API), CUDA-graph replays
// included, with their device times, saved as a Chrome trace. Every function catches all C++ exceptions itself.
#include <torch/csrc/autograd/profiler_kineto.h>

#include <set>
#include <string>

namespace {
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::set<ActivityType> activities() { return {ActivityType::CPU, ActivityType::CUDA}; }
}  // namespace

extern "C" int stasc_profiler_start() {
  try {
    const ProfilerConfig config(ProfilerState::KINETO);
    torch::autograd::profiler::prepareProfiler(config, activities());
    torch::autograd::profiler::enableProfiler(config, activities());
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int stasc_profiler_stop(const char* path) {
  try {
    auto result = torch::autograd::profiler::disableProfiler();
    if (!result) return 2;
    result->save(std::string(path));
    return 0;
  } catch (...) {
    return 1;
  }
}
