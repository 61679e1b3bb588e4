// The CUDA backend's ops: select the context's device, find device scratch (the caller's
// workspace, or a stream-ordered allocation freed on the same stream), and enqueue the kernels on
// the context's stream. Nothing here synchronizes or reads device memory, so calls can be captured
// in a CUDA graph once a workspace is set. In a build without CUDA every op refuses with
// NK_ERROR_NOT_SUPPORTED (unreachable: no CUDA context can be created there).
#include "../backend.hpp"
#include "../error.hpp"

#if NORMKIT_WITH_CUDA
#include "channel_norm.hpp"
#include "row_norm.hpp"
#include "scratch.hpp"
#endif

namespace nk::cuda {
namespace {

#if NORMKIT_WITH_CUDA

template <class Args, class Size, class Kernel>
void run_with_scratch(const nk_context_s& ctx, const Args& a, Size size, Kernel kernel) {
  DeviceGuard device(ctx.device);
  DeviceScratch scratch(ctx, size(a));
  kernel(a, Launch{ctx.stream, ctx.sm_count, scratch.data()});
}

#endif

}  // namespace

#if NORMKIT_WITH_CUDA

size_t workspace_size(const nk_context_s& ctx, const ChannelForwardArgs& a) {
  DeviceGuard device(ctx.device);
  return channel_norm_forward_workspace_size(a);
}
size_t workspace_size(const nk_context_s& ctx, const ChannelBackwardArgs& a) {
  DeviceGuard device(ctx.device);
  return channel_norm_backward_workspace_size(a);
}
void run(const nk_context_s& ctx, const ChannelForwardArgs& a) {
  run_with_scratch(ctx, a, channel_norm_forward_workspace_size, channel_norm_forward);
}
void run(const nk_context_s& ctx, const ChannelBackwardArgs& a) {
  run_with_scratch(ctx, a, channel_norm_backward_scratch_size, channel_norm_backward);
}
void run_with_host_running_stats(const nk_context_s& ctx, const ChannelForwardArgs& a) {
  DeviceGuard device(ctx.device);
  const size_t bytes = static_cast<size_t>(a.shape.c) * sizeof(float);
  DeviceScratch scratch(ctx, 2 * align_up(bytes), WorkspaceUse::kNever);
  auto* mean = static_cast<float*>(scratch.data());
  auto* var =
      reinterpret_cast<float*>(static_cast<unsigned char*>(scratch.data()) + align_up(bytes));
  auto stream = static_cast<cudaStream_t>(ctx.stream);
  // Pageable host memory: each copy is staged before it returns, so the caller may free the arrays.
  check(cudaMemcpyAsync(mean, a.running_mean, bytes, cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync");
  check(cudaMemcpyAsync(var, a.running_var, bytes, cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync");
  ChannelForwardArgs on_device = a;
  on_device.running_mean = mean;
  on_device.running_var = var;
  channel_norm_forward(on_device, Launch{ctx.stream, ctx.sm_count, nullptr});  // inference: none
}

size_t workspace_size(const nk_context_s& ctx, const RowForwardArgs& a) {
  DeviceGuard device(ctx.device);
  return row_norm_forward_workspace_size(a);
}
size_t workspace_size(const nk_context_s& ctx, const RowBackwardArgs& a) {
  DeviceGuard device(ctx.device);
  return row_norm_backward_workspace_size(a);
}
void run(const nk_context_s& ctx, const RowForwardArgs& a) {
  run_with_scratch(ctx, a, row_norm_forward_workspace_size, row_norm_forward);
}
void run(const nk_context_s& ctx, const RowBackwardArgs& a) {
  run_with_scratch(ctx, a, row_norm_backward_workspace_size, row_norm_backward);
}

#else

[[noreturn]] void no_kernels(const char* family, const char* direction) {
  fail(NK_ERROR_NOT_SUPPORTED, "this build of normkit has no CUDA kernels for ", family, " ",
       direction);
}

size_t workspace_size(const nk_context_s&, const ChannelForwardArgs& a) {
  no_kernels(family_name(a.shape.kind), "forward");
}
size_t workspace_size(const nk_context_s&, const ChannelBackwardArgs& a) {
  no_kernels(family_name(a.shape.kind), "backward");
}
void run(const nk_context_s&, const ChannelForwardArgs& a) {
  no_kernels(family_name(a.shape.kind), "forward");
}
void run(const nk_context_s&, const ChannelBackwardArgs& a) {
  no_kernels(family_name(a.shape.kind), "backward");
}
size_t workspace_size(const nk_context_s&, const RowForwardArgs& a) {
  no_kernels(family_name(a.shape), "forward");
}
size_t workspace_size(const nk_context_s&, const RowBackwardArgs& a) {
  no_kernels(family_name(a.shape), "backward");
}
void run(const nk_context_s&, const RowForwardArgs& a) {
  no_kernels(family_name(a.shape), "forward");
}
void run(const nk_context_s&, const RowBackwardArgs& a) {
  no_kernels(family_name(a.shape), "backward");
}
void run_with_host_running_stats(const nk_context_s&, const ChannelForwardArgs& a) {
  no_kernels(family_name(a.shape.kind), "inference");
}

#endif

}  // namespace nk::cuda
