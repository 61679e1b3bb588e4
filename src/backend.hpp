// The two backends behind the C API and the dispatch between them. Each backend implements, per op
// family and direction, a workspace size and a run; validation has already happened. The CPU
// backend's sizes do not depend on the context; the CUDA backend's depend on the device.
#pragma once

#include <cstddef>
#include <cstdint>

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

// Inference with running statistics in host memory (frozen statistics): copies them to device
// scratch on the context's stream first.
void run_with_host_running_stats(const nk_context_s& ctx, const ChannelForwardArgs& a);

// The statistics accumulator's device state (fp64 per feature) and its updates; the sample counts
// come from the host (src/cuda/statistics.cpp).
void* stats_allocate(const nk_context_s& ctx, int64_t features);
void stats_release(int device, void* state);
void stats_reset(const nk_context_s& ctx, void* state, int64_t features);
void stats_add(const nk_context_s& ctx, void* state, int64_t features, int64_t count,
               const ChannelShape& shape, const void* x);
void stats_merge(const nk_context_s& ctx, void* into, int64_t into_count, const void* from,
                 int64_t from_count, int64_t features);
void stats_finalize(const nk_context_s& ctx, const void* state, int64_t features, int64_t count,
                    float* mean, float* var, float* var_unbiased);
void stats_min_max(const nk_context_s& ctx, const void* state, int64_t features, float* min,
                   float* max);

// Synchronized batch norm: the two-phase API's device halves (counts in device memory) and the
// NCCL path (src/cuda/sync_batch_norm.cpp). `comm` is an ncclComm_t.
void sync_local_stats(const nk_context_s& ctx, const ChannelShape& s, const void* x, int64_t* count,
                      float* mean, float* m2);
// Zeros two [channels] fp32 arrays: an empty shard's statistics or sums.
void sync_zero_sums(const nk_context_s& ctx, int64_t channels, float* first, float* second);
void sync_merge_stats(const nk_context_s& ctx, int64_t ranks, int64_t channels,
                      const int64_t* counts, const float* means, const float* m2s,
                      int64_t* total_count, float* mean, float* m2);
void sync_forward_global(const nk_context_s& ctx, const ChannelForwardArgs& a, const int64_t* count,
                         const float* mean, const float* m2);
void sync_backward_global(const nk_context_s& ctx, const ChannelBackwardArgs& a,
                          const int64_t* count, const float* sum_dy, const float* sum_dy_xhat);
size_t nccl_forward_workspace_size(const nk_context_s& ctx, void* comm, const ChannelShape& s);
void nccl_forward(const nk_context_s& ctx, void* comm, const ChannelForwardArgs& a);
size_t nccl_backward_workspace_size(const nk_context_s& ctx, void* comm,
                                    const ChannelBackwardArgs& a);
void nccl_backward(const nk_context_s& ctx, void* comm, const ChannelBackwardArgs& a);
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
