// Launchers of the layer-norm and RMS-norm kernels (row_norm_forward.cu, row_norm_backward.cu),
// callable from host code compiled without nvcc. Arguments are validated before these run.
#pragma once

#include <cstddef>

#include "launch.hpp"
#include "op_args.hpp"

namespace nk::cuda {

// Bytes of device scratch: the forward's split rows hold one Welford partial a slice (none on the
// other paths); backward holds per-block dweight/dbias partials. Both are sized for the larger of
// the two access paths, since pointers are not known to the query.
size_t row_norm_forward_workspace_size(const RowForwardArgs& a);
size_t row_norm_backward_workspace_size(const RowBackwardArgs& a);

// Enqueue on launch.stream; throw nk::Error(NK_ERROR_CUDA) if a launch fails.
void row_norm_forward(const RowForwardArgs& a, const Launch& launch);
void row_norm_backward(const RowBackwardArgs& a, const Launch& launch);

}  // namespace nk::cuda
