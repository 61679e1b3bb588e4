// The opt-in shared memory limit, cached per device: cudaGetDeviceProperties is slow (it queries
// every attribute), so it runs once per device and process; the value never changes. The
// properties' sharedMemPerBlockOptin is the attribute cudaDevAttrMaxSharedMemoryPerBlockOptin;
// it is read through the properties because GPGPU-Sim's runtime aborts the process on that
// attribute (it fills the properties with 0 instead). The test knob is read on every call (a
// getenv next to a kernel launch) so that a test can change it between calls.
#include "shared_memory_limit.hpp"

#include <atomic>
#include <cstdlib>

#include "common/check.cuh"

namespace nk::cuda {
namespace {

constexpr int kCachedDevices = 64;
std::atomic<int> cached_limit[kCachedDevices];  // the limit + 1 once known; 0: not yet queried

int device_limit(int device) {
  if (device >= 0 && device < kCachedDevices) {
    const int known = cached_limit[device].load(std::memory_order_relaxed);
    if (known > 0) return known - 1;
  }
  cudaDeviceProp prop{};
  dev::check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  const int limit = static_cast<int>(prop.sharedMemPerBlockOptin);
  // Racing first calls store the same value.
  if (device >= 0 && device < kCachedDevices) {
    cached_limit[device].store(limit + 1, std::memory_order_relaxed);
  }
  return limit;
}

}  // namespace

int device_shared_optin() {
  int device = 0;
  dev::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  int limit = device_limit(device);
  if (const char* knob = std::getenv("NORMKIT_TEST_SHARED_LIMIT")) {
    const int v = std::atoi(knob);
    if (v > 0 && (limit == 0 || v < limit)) limit = v;
  }
  return limit;
}

int dynamic_shared_limit() {
  const int limit = device_shared_optin();
  return limit < kPortableSharedLimit ? limit : kPortableSharedLimit;
}

}  // namespace nk::cuda
