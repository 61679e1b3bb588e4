// The statistics accumulator's CUDA half: its fp64 state in device memory (allocated when the
// accumulator is created), and every update enqueued on the context's stream. Nothing waits for
// the GPU: the sample count is kept on the host. Without CUDA these are unreachable (no CUDA
// context can exist) and refuse.
#include "../backend.hpp"
#include "../error.hpp"

#if NORMKIT_WITH_CUDA
#include "scratch.hpp"
#include "statistics.hpp"
#endif

namespace nk::cuda {

#if NORMKIT_WITH_CUDA

void* stats_allocate(const nk_context_s& ctx, int64_t features) {
  DeviceGuard device(ctx.device);
  void* state = nullptr;
  const size_t bytes = stats_state_bytes(features);
  const cudaError_t err = cudaMalloc(&state, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    fail(NK_ERROR_OUT_OF_MEMORY, "could not allocate ", bytes,
         " bytes of device memory for the accumulator's state");
  }
  check(err, "cudaMalloc");
  try {
    stats_clear(stats_state(state, features), ctx.stream);
  } catch (...) {
    cudaFree(state);
    throw;
  }
  return state;
}

void stats_release(int device, void* state) {
  if (state == nullptr) return;
  int previous = 0;
  if (cudaGetDevice(&previous) == cudaSuccess && previous != device) cudaSetDevice(device);
  cudaFree(state);  // waits for the work that uses it: the accumulator is gone afterwards
  if (previous != device) cudaSetDevice(previous);
}

void stats_reset(const nk_context_s& ctx, void* state, int64_t features) {
  DeviceGuard device(ctx.device);
  stats_clear(stats_state(state, features), ctx.stream);
}

void stats_add(const nk_context_s& ctx, void* state, int64_t features, int64_t count,
               const ChannelShape& shape, const void* x) {
  DeviceGuard device(ctx.device);
  DeviceScratch scratch(ctx, stats_add_workspace_size(shape), WorkspaceUse::kNever);
  stats_add(stats_state(state, features), count, shape, x,
            Launch{ctx.stream, ctx.sm_count, scratch.data()});
}

void stats_merge(const nk_context_s& ctx, void* into, int64_t into_count, const void* from,
                 int64_t from_count, int64_t features) {
  DeviceGuard device(ctx.device);
  stats_merge(stats_state(into, features), into_count,
              stats_state(const_cast<void*>(from), features), from_count, ctx.stream);
}

void stats_finalize(const nk_context_s& ctx, const void* state, int64_t features, int64_t count,
                    float* mean, float* var, float* var_unbiased) {
  DeviceGuard device(ctx.device);
  stats_finalize(stats_state(const_cast<void*>(state), features), count, mean, var, var_unbiased,
                 ctx.stream);
}

void stats_min_max(const nk_context_s& ctx, const void* state, int64_t features, float* min,
                   float* max) {
  DeviceGuard device(ctx.device);
  stats_min_max(stats_state(const_cast<void*>(state), features), min, max, ctx.stream);
}

#else

[[noreturn]] void no_statistics() {
  fail(NK_ERROR_NOT_SUPPORTED, "this build of normkit has no CUDA statistics kernels");
}
void* stats_allocate(const nk_context_s&, int64_t) { no_statistics(); }
void stats_release(int, void*) {}
void stats_reset(const nk_context_s&, void*, int64_t) { no_statistics(); }
void stats_add(const nk_context_s&, void*, int64_t, int64_t, const ChannelShape&, const void*) {
  no_statistics();
}
void stats_merge(const nk_context_s&, void*, int64_t, const void*, int64_t, int64_t) {
  no_statistics();
}
void stats_finalize(const nk_context_s&, const void*, int64_t, int64_t, float*, float*, float*) {
  no_statistics();
}
void stats_min_max(const nk_context_s&, const void*, int64_t, float*, float*) { no_statistics(); }

#endif

}  // namespace nk::cuda
