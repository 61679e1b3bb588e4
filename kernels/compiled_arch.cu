// The PTX version of the library's code on each device, cached: cudaFuncGetAttributes is asked
// before every dependent launch otherwise. The probe is never launched.
#include "compiled_arch.hpp"

#include <cuda_runtime.h>

#include <atomic>

namespace nk::cuda {
namespace {

__global__ void compiled_arch_probe() {}

constexpr int kCachedDevices = 64;
std::atomic<int> cached_arch[kCachedDevices];  // the version + 1 once known; 0: not yet queried

}  // namespace

int compiled_arch() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  const bool cacheable = device >= 0 && device < kCachedDevices;
  if (cacheable) {
    const int known = cached_arch[device].load(std::memory_order_relaxed);
    if (known > 0) return known - 1;
  }
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, compiled_arch_probe) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  // Racing first calls store the same value.
  if (cacheable) cached_arch[device].store(attr.ptxVersion + 1, std::memory_order_relaxed);
  return attr.ptxVersion;
}

}  // namespace nk::cuda
