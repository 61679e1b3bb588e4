// How much dynamic shared memory one block of a kernel may opt in to on the current device: the
// row norms stage whole rows there (row_norm_tiling.hpp) when they fit, and fall back to the
// generic path where they do not. Plain C++: included by host code compiled without nvcc.
#pragma once

namespace nk::cuda {

// Bytes of dynamic plus static shared memory one block may use after
// cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize): the device's
// cudaDevAttrMaxSharedMemoryPerBlockOptin (queried once per device), or 0 when it reports none.
// Test-only knob NORMKIT_TEST_SHARED_LIMIT=<bytes>: the limit is at most that, and exactly that on
// a device that reports none (GPGPU-Sim, whose runtime does not implement the attribute and whose
// functional mode has no limit), so the simulated lane reaches the staged paths and tests can
// force their fallbacks. Throws nk::Error(NK_ERROR_CUDA) when the device cannot be queried.
int dynamic_shared_limit();

// Blocks that need more dynamic shared memory than this must opt in (CUDA's default limit).
constexpr int kDefaultDynamicShared = 48 * 1024;

}  // namespace nk::cuda
