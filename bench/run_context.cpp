#include "run_context.hpp"

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <cstdlib>

#include "cluster_occupancy.hpp"
#include "nvml_clocks.hpp"

#ifndef NORMKIT_BENCH_COMMIT
#define NORMKIT_BENCH_COMMIT "unknown"
#endif

namespace nkb {
namespace {

std::string cuda_version(int v) {  // 13000 -> "13.0"
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

// An integer device attribute as text, or why it could not be read.
std::string attribute(cudaDeviceAttr attr, int device, int scale = 1) {
  int value = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&value, attr, device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("n/a (") + cudaGetErrorString(err) + ")";
  }
  return std::to_string(value / scale);
}

}  // namespace

ContextEntries describe_device(int device) {
  ContextEntries e;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
    e.emplace_back("gpu_name", prop.name);
    e.emplace_back("gpu_compute_capability",
                   std::to_string(prop.major) + "." + std::to_string(prop.minor));
    e.emplace_back("gpu_memory_gib", std::to_string(prop.totalGlobalMem >> 30));
  } else {
    cudaGetLastError();
    e.emplace_back("gpu_name", "n/a (cudaGetDeviceProperties failed)");
  }
  e.emplace_back("gpu_sm_count", attribute(cudaDevAttrMultiProcessorCount, device));
  e.emplace_back("gpu_l2_bytes", attribute(cudaDevAttrL2CacheSize, device));
  e.emplace_back("gpu_memory_bus_bits", attribute(cudaDevAttrGlobalMemoryBusWidth, device));
  // The runtime knows only the peak clocks (kHz); NVML knows the current ones too.
  e.emplace_back("gpu_sm_clock_max_mhz", attribute(cudaDevAttrClockRate, device, 1000));
  e.emplace_back("gpu_mem_clock_max_mhz", attribute(cudaDevAttrMemoryClockRate, device, 1000));
  char bus_id[32] = {0};
  const bool have_bus = cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device) == cudaSuccess;
  const NvmlClocks nvml = have_bus ? read_nvml_clocks(bus_id) : NvmlClocks{};
  if (nvml.ok) {
    e.emplace_back("gpu_sm_clock_current_mhz", std::to_string(nvml.sm_mhz));
    e.emplace_back("gpu_mem_clock_current_mhz", std::to_string(nvml.mem_mhz));
    e.emplace_back("gpu_sm_clock_max_mhz_nvml", std::to_string(nvml.sm_max_mhz));
    e.emplace_back("gpu_mem_clock_max_mhz_nvml", std::to_string(nvml.mem_max_mhz));
    e.emplace_back("nvidia_driver", nvml.driver);
  } else {
    if (!have_bus) cudaGetLastError();
    const std::string why = "n/a (" + (have_bus ? nvml.why : std::string("no PCI bus id")) + ")";
    e.emplace_back("gpu_sm_clock_current_mhz", why);
    e.emplace_back("gpu_mem_clock_current_mhz", why);
  }
  // The split tiles' clusters: blocks of 512 threads staging 196 KiB of a part and 8 KiB of
  // scratch, 8 (portable) or 16 (non-portable) a cluster.
  const size_t split_part_bytes = 204 * 1024;
  e.emplace_back("gpu_clusters_of_8_at_204kib", resident_clusters(8, 512, split_part_bytes));
  e.emplace_back("gpu_clusters_of_16_at_204kib", resident_clusters(16, 512, split_part_bytes));
  int driver = 0, runtime = 0;
  e.emplace_back("cuda_driver_version",
                 cudaDriverGetVersion(&driver) == cudaSuccess ? cuda_version(driver) : "n/a");
  e.emplace_back("cuda_runtime_version",
                 cudaRuntimeGetVersion(&runtime) == cudaSuccess ? cuda_version(runtime) : "n/a");
  return e;
}

std::string normkit_commit() {
  const char* env = std::getenv("NORMKIT_COMMIT");
  if (env != nullptr && env[0] != '\0') return env;
  return NORMKIT_BENCH_COMMIT;
}

void add_to_benchmark_context(const ContextEntries& entries) {
  for (const auto& entry : entries) benchmark::AddCustomContext(entry.first, entry.second);
}

}  // namespace nkb
