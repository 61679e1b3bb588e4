#include "row_norm_tiling.hpp"

#include <initializer_list>

namespace nk::cuda {
namespace {

constexpr int kGenericBlock = 512;

int next_pow2(int64_t v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Warps an SM holds of blocks of `block` threads (whole warps, at most 1024) at 64 registers.
int resident_warps(int block) {
  const int warps = block / 32;
  return 32 / warps * warps;
}

// Rows of tpr threads (whole warps, fewer than kBackwardRowsBlock) in a register backward block:
// as many as fit kBackwardRowsBlock threads (two blocks an SM), unless as many as fit
// kBackwardRowBlock keep more warps resident. At 64 registers an SM holds 32 warps: rows of 6
// warps fill 24 of them in blocks of 2 rows, 30 in blocks of 5; every other width ties.
int backward_rows_per_block(int tpr) {
  const int fewer = kBackwardRowsBlock / tpr, more = kBackwardRowBlock / tpr;
  return resident_warps(more * tpr) > resident_warps(fewer * tpr) ? more : fewer;
}

// Whole warps of `p` packs a thread over a row of `packs` packs.
int64_t whole_warps(int64_t packs, int p) { return ceil_div(ceil_div(packs, p), 32) * 32; }

// A register backward tiling of rows of tpr threads (whole warps), several rows a block below
// kBackwardRowsBlock threads.
RowTiling register_rows(int e, int p, int tpr) {
  const int rows = tpr >= kBackwardRowsBlock ? 1 : backward_rows_per_block(tpr);
  return RowTiling{true, e, p, tpr, rows * tpr};
}

}  // namespace

RowTiling choose_row_tiling(int64_t cols, int elem_bytes, bool vector_access,
                            int64_t shared_limit) {
  const int e = vector_access ? 16 / elem_bytes : 1;
  const int64_t packs = ceil_div(cols, e);
  const int p = vector_access ? kForwardVectorPacks : kForwardScalarElems;
  const int64_t threads = ceil_div(packs, p);
  // A lane group per row, several rows a block.
  if (threads <= 32) return RowTiling{true, e, p, next_pow2(threads), kForwardSubWarpBlock};
  // A block per row of whole warps.
  const int64_t warps = ceil_div(threads, 32) * 32;
  if (warps <= forward_block_bound(e)) {
    return RowTiling{true, e, p, static_cast<int>(warps), static_cast<int>(warps)};
  }
  // The row staged in shared memory, as stored (h when fused: rounded to T, so nothing is lost).
  const int64_t bytes = kStagedScratchBytes + cols * elem_bytes;
  if (vector_access && bytes + kStagingReserve <= shared_limit) {
    return RowTiling{false, e, 0, kStagedForwardBlock, kStagedForwardBlock, true, bytes};
  }
  return RowTiling{false, e, 0, 0, kGenericBlock};
}

RowSplit plan_row_split(int64_t rows, int64_t cols, int elem_bytes, bool vector_access) {
  if (!vector_access || rows >= kSplitRowsBelow || cols < kSplitMinCols) return RowSplit{};
  const int64_t slice = static_cast<int64_t>(kSplitBlock) * kSplitPacks * (16 / elem_bytes);
  return RowSplit{ceil_div(cols, slice), slice};
}

RowTiling choose_backward_tiling(int64_t cols, int elem_bytes, bool vector_access,
                                 int64_t shared_limit) {
  const int e = vector_access ? 16 / elem_bytes : 1;
  const int64_t packs = ceil_div(cols, e);
  // Packs per thread: powers of two within kBackwardMaxElems elements; single-element packs always
  // take kBackwardScalarElems (a lane group of them still loads only the elements its row has).
  const int most = vector_access ? kBackwardMaxElems / e : kBackwardScalarElems;
  const int least = vector_access ? 1 : kBackwardScalarElems;

  // A lane group per row, several rows per block: the fewest packs per thread that fit 32 lanes.
  for (int p = least; p <= most; p *= 2) {
    const int64_t threads = ceil_div(packs, p);
    if (threads <= 32) return RowTiling{true, e, p, next_pow2(threads), kBackwardRowsBlock};
  }
  // x and dy of one row staged in shared memory, each thread owning up to kBackwardStagedElems
  // columns, in blocks of kBackwardStagedBlock threads where they cover the row, else
  // kBackwardStagedWideBlock.
  const int64_t bytes = kStagedScratchBytes + 2 * cols * elem_bytes;
  const bool stageable =
      vector_access && cols <= kBackwardStagedMaxCols && bytes + kStagingReserve <= shared_limit;
  const int64_t staged_block =
      cols <= int64_t{kBackwardStagedBlock} * kBackwardStagedElems ? kBackwardStagedBlock
                                                                   : kBackwardStagedWideBlock;
  const RowTiling staged{false, e, kBackwardStagedElems / e, static_cast<int>(staged_block),
                         static_cast<int>(staged_block), true, bytes};
  // Whole warps per row at the fewest packs per thread that fit kBackwardRowBlock threads, several
  // rows a block (backward_rows_per_block). A row of 513 to 1023 threads holds one block an SM (64
  // registers), 25 to 50 % of its threads: staged instead where it can be (two blocks of
  // kBackwardStagedBlock an SM), else in registers as it is. A shorter row takes twice the packs a
  // thread where that keeps more warps resident (fp32 rows of 3, 7, 9, 11 to 13 and 15 warps; the
  // two-pack kernel also spends fewer instructions a pack).
  for (int p = least; p <= most; p *= 2) {
    const int64_t threads = whole_warps(packs, p);
    if (threads <= kBackwardRowBlock) {
      const int tpr = static_cast<int>(threads);
      if (tpr > kBackwardRowsBlock && tpr < kBackwardRowBlock && stageable) return staged;
      const RowTiling fewer = register_rows(e, p, tpr);
      if (tpr < kBackwardRowsBlock && 2 * p <= most) {
        const RowTiling more = register_rows(e, 2 * p, static_cast<int>(whole_warps(packs, 2 * p)));
        if (resident_warps(more.block_threads) > resident_warps(fewer.block_threads)) return more;
      }
      return fewer;
    }
  }
  if (stageable) return staged;
  return RowTiling{false, e, 0, 0, kGenericBlock};
}

int64_t register_backward_shared_bytes(const RowTiling& tiling, int64_t cols) {
  const int64_t elems = static_cast<int64_t>(tiling.packs_per_thread) * tiling.pack_elems;
  const int rows = tiling.rows_per_block();
  // The accumulators of kBackwardRowsBlock threads at a time (a 1024-thread block holds two).
  const int64_t acc_threads =
      ceil_div(tiling.block_threads, kBackwardRowsBlock) * kBackwardRowsBlock;
  return kStagedScratchBytes + acc_threads * elems * 2 * 4 +
         (rows > 1 ? rows * cols * 4 : 0);
}

PartialPlan plan_partials(int64_t rows, int64_t rows_per_group, int64_t min_rows_per_chunk,
                          int64_t max_chunks) {
  const int64_t groups = ceil_div(rows, rows_per_group);
  int64_t per_chunk = ceil_div(groups, max_chunks);
  const int64_t min_groups = ceil_div(min_rows_per_chunk, rows_per_group);
  if (per_chunk < min_groups) per_chunk = min_groups;
  return PartialPlan{ceil_div(groups, per_chunk), per_chunk, rows_per_group};
}

FinalizeTiling choose_finalize_tiling(int64_t cols, int64_t chunks) {
  const int vec = cols % 4 == 0 ? 4 : 1;
  int col_threads = 1;
  // Widen the tile (whole 32-byte sectors, fewer and fuller blocks) while the finalize keeps at
  // least 256 blocks: about two per SM.
  while (col_threads < 8 && cols / (2 * col_threads * vec) >= 256) col_threads *= 2;
  int row_lanes = 1;
  while (row_lanes < chunks && row_lanes < 256 / col_threads) row_lanes *= 2;
  return FinalizeTiling{vec, col_threads, row_lanes};
}

}  // namespace nk::cuda
