#include "cluster_occupancy.hpp"

#include <cuda_runtime_api.h>

namespace nkb {
namespace {

// Never launched: the occupancy API asks about a kernel's resources, and this one needs only
// those given at the query.
__global__ void cluster_shape() {}

std::string why(cudaError_t err) {
  cudaGetLastError();
  return std::string("n/a (") + cudaGetErrorString(err) + ")";
}

}  // namespace

std::string resident_clusters(unsigned cluster_ctas, int threads, size_t shared_bytes) {
  int device = 0, clusters = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, device);
  if (err != cudaSuccess) return why(err);
  if (clusters == 0) return "n/a (no thread block clusters)";
  err = cudaFuncSetAttribute(cluster_shape, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(shared_bytes));
  if (err == cudaSuccess && cluster_ctas > 8) {
    err = cudaFuncSetAttribute(cluster_shape, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  }
  if (err != cudaSuccess) return why(err);
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = cluster_ctas;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(cluster_ctas);
  config.blockDim = dim3(static_cast<unsigned>(threads));
  config.dynamicSmemBytes = shared_bytes;
  config.attrs = &attr;
  config.numAttrs = 1;
  int resident = 0;
  err = cudaOccupancyMaxActiveClusters(&resident, cluster_shape, &config);
  return err == cudaSuccess ? std::to_string(resident) : why(err);
}

}  // namespace nkb
