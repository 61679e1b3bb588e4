// The context behind the opaque nk_context handle: which backend runs the ops and with what
// stream and caller-owned workspace.
#pragma once

#include <normkit/normkit.h>

#include <cstddef>

struct nk_context_s {
  nk_backend backend = NK_BACKEND_CPU;
  int device = 0;             // CUDA device ordinal; unused on the CPU backend
  int sm_count = 0;           // multiprocessors of that device: sizes persistent grids
  void* stream = nullptr;     // cudaStream_t; recorded but unused on the CPU backend
  void* workspace = nullptr;  // caller-owned scratch; nullptr: ops allocate their own
  size_t workspace_bytes = 0;
};

namespace nk::cuda {
// Checks that a CUDA device `device` exists and makes it current; throws NK_ERROR_CUDA when no
// device is present, NK_ERROR_NOT_SUPPORTED in a build without CUDA.
void init_context(nk_context_s& ctx, int device);
}  // namespace nk::cuda
