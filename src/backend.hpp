// The two backends behind the C API and the dispatch between them. Each backend implements, per op
// family and direction, a workspace size and a run; validation has already happened. The CPU
// backend's sizes do not depend on the context; the CUDA backend's depend on the device.
#pragma once

#include <cstddef>

#include "context.hpp"
#include "op_args.hpp"

namespace nk {

namespace cpu {
size_t workspace_size(const nk_context_s& ctx, const ChannelForwardArgs& a);
size_t workspace_size(const nk_context_s& ctx, const ChannelBackwardArgs& a);
size_t workspace_size(const nk_context_s& ctx, const RowForwardArgs& a);
size_t workspace_size(const nk_context_s& ctx, const RowBackwardArgs& a);
void run(const nk_context_s& ctx, const ChannelForwardArgs& a);
void run(const nk_context_s& ctx, const ChannelBackwardArgs& a);
void run(const nk_context_s& ctx, const RowForwardArgs& a);
void run(const nk_context_s& ctx, const RowBackwardArgs& a);
// Batch norm training forward with given (global) statistics per channel: synchronized batch norm.
void forward_global(const nk_context_s& ctx, const ChannelForwardArgs& a, int64_t count,
                    const float* mean, const float* m2);
// The preprocessing normalizers (they allocate host scratch memory; no workspace query).
void run(const nk_context_s& ctx, const QuantileArgs& a);
void run(const nk_context_s& ctx, const ScaleArgs& a);
void run(const nk_context_s& ctx, const L2NormalizeArgs& a);
}  // namespace cpu

namespace cuda {
size_t workspace_size(const nk_context_s& ctx, const ChannelForwardArgs& a);
size_t workspace_size(const nk_context_s& ctx, const ChannelBackwardArgs& a);
size_t workspace_size(const nk_context_s& ctx, const RowForwardArgs& a);
size_t workspace_size(const nk_context_s& ctx, const RowBackwardArgs& a);
void run(const nk_context_s& ctx, const ChannelForwardArgs& a);
void run(const nk_context_s& ctx, const ChannelBackwardArgs& a);
void run(const nk_context_s& ctx, const RowForwardArgs& a);
void run(const nk_context_s& ctx, const RowBackwardArgs& a);
// The preprocessing normalizers: scratch from the workspace when it is large enough, else
// allocated; the host arrays of the arguments are copied to the device.
void run(const nk_context_s& ctx, const QuantileArgs& a);
void run(const nk_context_s& ctx, const ScaleArgs& a);
void run(const nk_context_s& ctx, const L2NormalizeArgs& a);
}  // namespace cuda

template <class Args>
size_t workspace_size(const nk_context_s& ctx, const Args& a) {
  return ctx.backend == NK_BACKEND_CUDA ? cuda::workspace_size(ctx, a)
                                        : cpu::workspace_size(ctx, a);
}

template <class Args>
void run(const nk_context_s& ctx, const Args& a) {
  if (ctx.backend == NK_BACKEND_CUDA) {
    cuda::run(ctx, a);
  } else {
    cpu::run(ctx, a);
  }
}

}  // namespace nk
