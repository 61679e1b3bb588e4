// The CUDA backend's preprocessing normalizers: select the context's device, find device scratch
// and enqueue the kernels on the context's stream. These ops have no workspace query: they take
// their scratch from the context's workspace when it is large enough and allocate it on the stream
// otherwise. Quantiles and scaling copy host arrays to the device (cudaMemcpyAsync from pageable
// memory, which waits for the stream), so they cannot be captured in a CUDA graph. In a build
// without CUDA they refuse with NK_ERROR_NOT_SUPPORTED (unreachable: no CUDA context exists there).
#include "../backend.hpp"
#include "../error.hpp"

#if NORMKIT_WITH_CUDA
#include "preprocessing.hpp"
#include "scratch.hpp"
#endif

namespace nk::cuda {

#if NORMKIT_WITH_CUDA

void run(const nk_context_s& ctx, const QuantileArgs& a) {
  DeviceGuard device(ctx.device);
  DeviceScratch scratch(ctx, quantiles_columns_scratch_size(a), WorkspaceUse::kIfLargeEnough);
  quantiles_columns(a, Launch{ctx.stream, ctx.sm_count, scratch.data()});
}

void run(const nk_context_s& ctx, const ScaleArgs& a) {
  DeviceGuard device(ctx.device);
  DeviceScratch scratch(ctx, scale_columns_scratch_size(a), WorkspaceUse::kIfLargeEnough);
  scale_columns(a, Launch{ctx.stream, ctx.sm_count, scratch.data()});
}

void run(const nk_context_s& ctx, const L2NormalizeArgs& a) {
  DeviceGuard device(ctx.device);
  l2_normalize_rows(a, Launch{ctx.stream, ctx.sm_count, nullptr});
}

#else

[[noreturn]] static void no_kernels(const char* op) {
  fail(NK_ERROR_NOT_SUPPORTED, "this build of normkit has no CUDA kernels for ", op);
}

void run(const nk_context_s&, const QuantileArgs&) { no_kernels("quantiles"); }
void run(const nk_context_s&, const ScaleArgs&) { no_kernels("column scaling"); }
void run(const nk_context_s&, const L2NormalizeArgs&) { no_kernels("L2 normalization"); }

#endif

}  // namespace nk::cuda
