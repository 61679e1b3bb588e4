// The reference every op is compared with: device-to-device copy bandwidth, measured once at
// start-up, in the same run, with the same timer as the ops. Two copies of 1 GiB each, with bytes
// counted as read + written (2 GiB per copy): a grid-stride kernel with 16-byte loads and stores,
// and cudaMemcpyAsync. The higher of the two is the reference of frac_of_copy.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "timing.hpp"

namespace nkb {

struct CopyBandwidth {
  int64_t bytes = 0;          // counted per copy: read + written
  double kernel_seconds = 0;  // median
  double memcpy_seconds = 0;  // median
  double kernel_gb_per_s() const { return 1e-9 * static_cast<double>(bytes) / kernel_seconds; }
  double memcpy_gb_per_s() const { return 1e-9 * static_cast<double>(bytes) / memcpy_seconds; }
  double reference_gb_per_s() const {
    return kernel_gb_per_s() > memcpy_gb_per_s() ? kernel_gb_per_s() : memcpy_gb_per_s();
  }
};

// Allocates 2 GiB for the duration of the call. Throws BenchError when a CUDA call fails.
CopyBandwidth measure_copy_bandwidth(Timer& timer, cudaStream_t stream, int samples);

}  // namespace nkb
