// What every CUDA entry point does around its kernels: make the context's device current for the
// call, and find device scratch memory (the caller's workspace, or a stream-ordered allocation that
// is freed on the same stream once the call's work is queued). Only compiled with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "../context.hpp"
#include "../error.hpp"
#include "../workspace.hpp"

namespace nk::cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(NK_ERROR_CUDA, what, " failed: ", cudaGetErrorString(err));
}

// Makes the context's device current for the call and restores the caller's afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device_) check(cudaSetDevice(device_), "cudaSetDevice");
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = 0;
};

// How an op may use the context's workspace.
enum class WorkspaceUse {
  // The ops with a *_workspace_size query: a set workspace must hold the scratch
  // (NK_ERROR_WORKSPACE otherwise), so that nothing is allocated while one is set.
  kRequired,
  // The ops without a query (the preprocessing normalizers): the workspace when it is large
  // enough, an allocation otherwise.
  kIfLargeEnough,
  // Ops that allocate by design (the statistics accumulator, frozen batch norm): never the
  // workspace, so a workspace sized for the other ops is neither used nor an error.
  kNever,
};

// Device scratch of `bytes` for one call: the context's workspace, else cudaMallocAsync on the
// context's stream, freed on it when the call's work is queued.
class DeviceScratch {
 public:
  DeviceScratch(const nk_context_s& ctx, size_t bytes, WorkspaceUse use = WorkspaceUse::kRequired)
      : stream_(static_cast<cudaStream_t>(ctx.stream)) {
    if (use == WorkspaceUse::kRequired) {
      data_ = context_workspace(ctx, bytes);
    } else if (use == WorkspaceUse::kIfLargeEnough && ctx.workspace_bytes >= bytes) {
      data_ = ctx.workspace;
    }
    if (data_ == nullptr && bytes > 0) {
      const cudaError_t err = cudaMallocAsync(&data_, bytes, stream_);
      if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        fail(NK_ERROR_OUT_OF_MEMORY, "could not allocate ", bytes,
             " bytes of device scratch memory (set a workspace on the context)");
      }
      check(err, "cudaMallocAsync");
      owned_ = true;
    }
  }
  ~DeviceScratch() {
    if (owned_) cudaFreeAsync(data_, stream_);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  void* data() const { return data_; }

 private:
  cudaStream_t stream_;
  void* data_ = nullptr;
  bool owned_ = false;
};

}  // namespace nk::cuda
