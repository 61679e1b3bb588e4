// NCCL, found at run time: libnormkit does not link against NCCL, so it loads wherever NCCL is
// absent, and the NCCL path uses the very library (and communicators) the engine already loaded
// ("libnccl.so.2", resolved by the dynamic loader's usual search). Built only when NCCL's header
// was found (NORMKIT_WITH_NCCL=1).
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

namespace nk {

struct NcclLibrary {
  decltype(&ncclAllGather) all_gather;
  decltype(&ncclCommCount) comm_count;
  decltype(&ncclCommCuDevice) comm_cu_device;
  decltype(&ncclGetErrorString) error_string;
};

// Loaded once; NK_ERROR_NOT_SUPPORTED naming the loader's message when NCCL cannot be loaded.
const NcclLibrary& nccl_library();

// Throws NK_ERROR_CUDA naming `what` and NCCL's message when result is not ncclSuccess.
void check_nccl(ncclResult_t result, const char* what);

}  // namespace nk
