// dx of few long rows, each split across blocks (row_norm_tiling.hpp, plan_row_split): called by
// row_norm_backward in place of its generic dx kernel once the split is chosen. dweight and dbias
// keep the generic column pass.
#pragma once

#include <cuda_runtime.h>

#include "op_args.hpp"
#include "row_norm_tiling.hpp"

namespace nk::cuda {

struct BackwardParams;

// Bytes of the row sums a split backward keeps in the workspace: two floats a slice of each row.
constexpr int64_t split_backward_bytes(int64_t rows, const RowSplit& split) {
  return rows * split.slices * 2 * static_cast<int64_t>(sizeof(float));
}

// Enqueues the two kernels on `stream`. `sums`: split_backward_bytes(s.rows, split) bytes of
// device memory, 8-byte aligned.
void row_norm_split_backward(const BackwardParams& p, const RowShape& s, const RowSplit& split,
                             void* sums, cudaStream_t stream);

}  // namespace nk::cuda
