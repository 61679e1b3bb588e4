// The forward of few long rows, each split across blocks (row_norm_tiling.hpp, plan_row_split):
// called by row_norm_forward once the split is chosen and ForwardParams filled in.
#pragma once

#include <cuda_runtime.h>

#include "op_args.hpp"
#include "row_norm_tiling.hpp"

namespace nk::cuda {

struct ForwardParams;

// Enqueues the two kernels on `stream`. `partials`: split.workspace_bytes(s.rows) bytes of device
// memory, 16-byte aligned. `fused`: any fusion field of p is set (it picks the instantiation).
void row_norm_split_forward(const ForwardParams& p, const RowShape& s, bool fused,
                            const RowSplit& split, void* partials, cudaStream_t stream);

}  // namespace nk::cuda
