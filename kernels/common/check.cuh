// Turns a failed CUDA runtime call into nk::Error(NK_ERROR_CUDA) naming the call and CUDA's text.
#pragma once

#include <cuda_runtime.h>

#include "error.hpp"

namespace nk::dev {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(NK_ERROR_CUDA, what, " failed: ", cudaGetErrorString(err));
}

}  // namespace nk::dev
