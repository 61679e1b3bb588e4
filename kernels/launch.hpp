// What a CUDA launcher needs from the context: the stream, the device's multiprocessor count for
// sizing persistent grids, and the scratch memory (the caller's workspace or one allocated for this
// call). Plain C++: included by host code compiled without nvcc.
#pragma once

#include <cstddef>

namespace nk::cuda {

struct Launch {
  void* stream;  // cudaStream_t
  int sm_count;
  void*
      workspace;  // device memory of at least the op's workspace size, or nullptr if it needs none
};

}  // namespace nk::cuda
