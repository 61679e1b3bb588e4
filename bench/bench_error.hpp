// Errors inside the benchmark suite. Every CUDA and normkit call is checked; a failure throws
// BenchError, which the benchmark body turns into state.SkipWithError (one case fails, the run
// goes on) and main() into a message and an exit status. Nothing aborts.
#pragma once

#include <cuda_runtime_api.h>
#include <normkit/normkit.h>

#include <stdexcept>
#include <string>

namespace nkb {

struct BenchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws "<what>: <CUDA's message>" unless err is cudaSuccess. A non-sticky error (an allocation
// that failed, say) is cleared so that later calls start clean.
inline void check_cuda(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  throw BenchError(what + ": " + cudaGetErrorString(err));
}

// Throws "<what>: <status> (<normkit's message>)" unless status is NK_SUCCESS.
inline void check_nk(nk_status status, const std::string& what) {
  if (status == NK_SUCCESS) return;
  throw BenchError(what + ": " + nk_status_name(status) + " (" + nk_last_error() + ")");
}

}  // namespace nkb
