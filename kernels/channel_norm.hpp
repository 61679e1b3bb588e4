// Launchers of the batch, instance and group norm kernels (channel_norm_forward.cu,
// channel_norm_backward.cu), callable from host code compiled without nvcc. Arguments are
// validated before these run.
#pragma once

#include <cstddef>
#include <cstdint>

#include "launch.hpp"
#include "op_args.hpp"

namespace nk::cuda {

// Bytes of device scratch (the larger of the vector and single-element plans, since the size
// query sees no pointers). The sizes depend on the shape only (channel_norm_plan.hpp); the SM
// count, which only sizes the grids, is not used.
size_t channel_norm_forward_workspace_size(const ChannelForwardArgs& a);
size_t channel_norm_backward_workspace_size(const ChannelBackwardArgs& a);
// What one call needs, knowing its pointers (at most the size above): nothing for inference with
// dx alone.
size_t channel_norm_backward_scratch_size(const ChannelBackwardArgs& a);

// Enqueue on launch.stream; throw nk::Error(NK_ERROR_CUDA) if a launch fails.
void channel_norm_forward(const ChannelForwardArgs& a, const Launch& launch);
void channel_norm_backward(const ChannelBackwardArgs& a, const Launch& launch);

// Synchronized batch norm (the two-phase API and the NCCL path). Every pointer is device memory.
// Statistics of the global batch, merged over the ranks: the count stays on the device, so nothing
// waits for the host and the calls can be captured in a CUDA graph.
struct GlobalStats {
  const int64_t* count;  // [1]
  const float* mean;     // [C]
  const float* m2;       // [C]
};

// This shard's count (N*S), mean and m2 per channel; shape N >= 1.
size_t batch_norm_local_stats_workspace_size(const ChannelShape& s);
void batch_norm_local_stats(const ChannelShape& s, const void* x, int64_t* count, float* mean,
                            float* m2, const Launch& launch);

// Training forward of a shard (N >= 0) with global statistics: saves them, updates the running
// statistics when the global count is >= 2, and normalizes x into y.
size_t batch_norm_forward_global_workspace_size(const ChannelShape& s);
void batch_norm_forward_global(const ChannelForwardArgs& a, const GlobalStats& g,
                               const Launch& launch);

// dx of a shard (N >= 0) from the sums of dy and dy * x-hat over every rank and the global count,
// as the training backward computes it from its own sums.
size_t batch_norm_backward_global_workspace_size(const ChannelShape& s);
void batch_norm_backward_global(const ChannelBackwardArgs& a, const int64_t* count,
                                const float* sum_dy, const float* sum_dy_xhat,
                                const Launch& launch);

}  // namespace nk::cuda
