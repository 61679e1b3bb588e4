// CUDA context setup: find the device, make it current. Compiled in every build; without CUDA
// (NORMKIT_WITH_CUDA=0) a CUDA context is refused with NK_ERROR_NOT_SUPPORTED.
#include "../context.hpp"
#include "../error.hpp"

#include <cstdlib>

#if NORMKIT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace nk::cuda {

#if NORMKIT_WITH_CUDA

void init_context(nk_context_s& ctx, int device) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
      (err == cudaSuccess && count == 0)) {
    cudaGetLastError();  // clear the sticky-free error so later runtime calls start clean
    fail(NK_ERROR_CUDA, "no CUDA device is present (cudaGetDeviceCount: ",
         err == cudaSuccess ? "0 devices" : cudaGetErrorString(err),
         "); use NK_BACKEND_CPU on machines without a GPU");
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail(NK_ERROR_CUDA, "cudaGetDeviceCount failed: ", cudaGetErrorString(err));
  }
  if (device < 0 || device >= count) {
    fail(NK_ERROR_INVALID_VALUE, "device = ", device, ": expected a CUDA device ordinal in [0, ",
         count, ")");
  }
  err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail(NK_ERROR_CUDA, "cudaSetDevice(", device, ") failed: ", cudaGetErrorString(err));
  }
  err = cudaDeviceGetAttribute(&ctx.sm_count, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail(NK_ERROR_CUDA,
         "cudaDeviceGetAttribute(multiprocessor count) failed: ", cudaGetErrorString(err));
  }
  // Test-only knob: size persistent grids as if the device had at most this many SMs. Results
  // must not depend on it (the determinism tests compare bytes across limits), and it lets the
  // simulated-GPU lane reach the grid-stride loops with small shapes.
  if (const char* limit = std::getenv("NORMKIT_TEST_SM_LIMIT")) {
    const int v = std::atoi(limit);
    if (v > 0 && v < ctx.sm_count) ctx.sm_count = v;
  }
  ctx.device = device;
}

#else

void init_context(nk_context_s&, int) {
  fail(NK_ERROR_NOT_SUPPORTED,
       "this build of normkit has no CUDA backend (configured with NORMKIT_ENABLE_CUDA=OFF)");
}

#endif

}  // namespace nk::cuda
