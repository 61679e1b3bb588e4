// Launchers of the batch, instance and group norm kernels (channel_norm_forward.cu,
// channel_norm_backward.cu), callable from host code compiled without nvcc. Arguments are
// validated before these run.
#pragma once

#include <cstddef>

#include "launch.hpp"
#include "op_args.hpp"

namespace nk::cuda {

// Bytes of device scratch (the larger of the vector and single-element plans, since the size
// query sees no pointers).
size_t channel_norm_forward_workspace_size(const ChannelForwardArgs& a, int sm_count);
size_t channel_norm_backward_workspace_size(const ChannelBackwardArgs& a, int sm_count);
// What one call needs, knowing its pointers (at most the size above): nothing for inference with
// dx alone.
size_t channel_norm_backward_scratch_size(const ChannelBackwardArgs& a, int sm_count);

// Enqueue on launch.stream; throw nk::Error(NK_ERROR_CUDA) if a launch fails.
void channel_norm_forward(const ChannelForwardArgs& a, const Launch& launch);
void channel_norm_backward(const ChannelBackwardArgs& a, const Launch& launch);

}  // namespace nk::cuda
