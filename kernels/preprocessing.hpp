// Launchers of the preprocessing kernels (preprocessing.cu), callable from host code compiled
// without nvcc, and how quantile columns are batched for the GPU's sorts (plain C++, unit-tested on
// the CPU). Arguments are validated before these run.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "launch.hpp"
#include "op_args.hpp"

namespace nk::cuda {

// The segmented sorts take int offsets, so every sort holds fewer than 2^31 keys and a column may
// have at most kMaxQuantileRows rows. Columns are sorted in batches of whole columns, about
// kQuantileBatchKeys keys (at least one column): enough to fill the GPU, and it bounds the scratch.
constexpr int64_t kMaxQuantileRows = (int64_t{1} << 31) - 1;
constexpr int64_t kQuantileBatchKeys = int64_t{1} << 26;

// Columns per batch (the last batch may hold fewer); rows <= kMaxQuantileRows.
inline int64_t quantile_batch_columns(int64_t rows, int64_t cols) {
  return std::clamp<int64_t>(kQuantileBatchKeys / rows, 1, cols);
}

// Bytes of device scratch. Quantiles: for one batch, the gathered keys and CUB's second key buffer
// (2 x 4 bytes per key), the batch's NaN flags and segment offsets, CUB's temporary storage, and
// the positions. Scaling: the per-column parameters (16 bytes per column). L2 normalization needs
// none. The quantile query asks CUB, so the context's device must be current.
size_t quantiles_columns_scratch_size(const QuantileArgs& a);
size_t scale_columns_scratch_size(const ScaleArgs& a);

// Enqueue on launch.stream with launch.workspace as scratch; throw nk::Error(NK_ERROR_CUDA) if a
// CUDA call fails. Quantiles and scaling first copy their host arrays (positions, column
// parameters) into the scratch with cudaMemcpyAsync.
void quantiles_columns(const QuantileArgs& a, const Launch& launch);
void scale_columns(const ScaleArgs& a, const Launch& launch);
void l2_normalize_rows(const L2NormalizeArgs& a, const Launch& launch);

}  // namespace nk::cuda
