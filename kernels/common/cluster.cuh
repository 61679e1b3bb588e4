// Thread block clusters (compute capability 9.0 and later): the CTAs of a cluster are scheduled
// together, on one GPC, and read each other's shared memory (distributed shared memory). A kernel
// whose blocks must exchange values before they go on uses them where a grid-wide wait would need
// every block resident at once: the hardware guarantees a cluster's CTAs are, whatever else runs.
//
// The exchange: each CTA writes its values to its own shared memory, then every thread calls
// cluster_arrive() and cluster_wait() (release, acquire: the writes before the arrive are visible
// to loads after the wait), then loads the other CTAs' values through cluster_address(). A CTA
// must not exit while another may still read its shared memory, so a second arrive after the
// loads and a wait before the kernel ends close the exchange.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "compiled_arch.hpp"

namespace nk::dev {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define NK_CLUSTER_DEVICE 1
#else
#define NK_CLUSTER_DEVICE 0
#endif

// Every thread of every CTA of the cluster arrives (all threads of a warp together).
__device__ __forceinline__ void cluster_arrive() {
#if NK_CLUSTER_DEVICE
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
#else
  __trap();  // launched with a cluster only where the code is sm_90's (clusters_available)
#endif
}

// Waits until every thread of the cluster has arrived since this thread's last wait.
__device__ __forceinline__ void cluster_wait() {
#if NK_CLUSTER_DEVICE
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
  __trap();
#endif
}

// The shared::cluster address of `p` (this CTA's shared memory) in the CTA of rank `rank`.
__device__ __forceinline__ uint32_t cluster_address(const void* p, unsigned rank) {
#if NK_CLUSTER_DEVICE
  const uint32_t local = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  return remote;
#else
  __trap();
  return 0;
#endif
}

// A float at a shared::cluster address.
__device__ __forceinline__ float load_cluster_float(uint32_t address) {
  float v = 0.0f;
#if NK_CLUSTER_DEVICE
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(address) : "memory");
#else
  __trap();
#endif
  return v;
}

// Two floats at a shared::cluster address (8-byte aligned).
__device__ __forceinline__ float2 load_cluster_float2(uint32_t address) {
  float2 v{};
#if NK_CLUSTER_DEVICE
  asm volatile("ld.shared::cluster.v2.f32 {%0, %1}, [%2];"
               : "=f"(v.x), "=f"(v.y)
               : "r"(address)
               : "memory");
#else
  __trap();
#endif
  return v;
}

// Whether the current device launches clusters and the code it runs has their instructions
// (compiled_arch.hpp). The test-only knob NORMKIT_TEST_NO_CLUSTERS=1, read at every call, answers
// no: the kernels that would take a cluster take their two-launch form, which gives the same bits.
inline bool clusters_available() {
  if (const char* knob = std::getenv("NORMKIT_TEST_NO_CLUSTERS")) {
    if (std::strcmp(knob, "1") == 0) return false;
  }
  if (!cuda::compiled_for_sm90()) return false;
  int device = 0, value = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&value, cudaDevAttrClusterLaunch, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return value != 0;
}

// The most blocks a cluster has on every GPU with clusters; sm_90 takes up to 16 in a kernel that
// allows it (cudaFuncAttributeNonPortableClusterSizeAllowed).
constexpr unsigned kPortableClusterCtas = 8;

// Enqueues kernel<<<grid, block, shared_bytes, stream>>>(args...) in clusters of `cluster_ctas`
// consecutive blocks (grid a multiple of it), as a dependent launch (dependent_launch.cuh) where
// those are allowed; above kPortableClusterCtas, after allowing the kernel that size. Returns
// false, enqueuing nothing, where the device cannot hold one such cluster (the size refused,
// cudaOccupancyMaxActiveClusters 0, or the launch answering cudaErrorInvalidClusterSize), so that
// the caller takes another path; else the caller checks cudaGetLastError as after <<<>>>.
template <class... Params, class... Args>
bool launch_clusters(void (*kernel)(Params...), unsigned grid, unsigned block, size_t shared_bytes,
                     cudaStream_t stream, unsigned cluster_ctas, bool dependent, Args&&... args) {
  if (cluster_ctas > kPortableClusterCtas &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
          cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  cudaLaunchAttribute attrs[2] = {};
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = cluster_ctas;
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = 1;
  attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[1].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(grid);
  config.blockDim = dim3(block);
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = attrs;
  config.numAttrs = dependent ? 2 : 1;
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess || clusters < 1) {
    cudaGetLastError();
    return false;
  }
  const cudaError_t launched = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (launched == cudaErrorInvalidClusterSize) {
    cudaGetLastError();
    return false;
  }
  return true;
}

}  // namespace nk::dev
