// How the row-norm kernels map one row of D elements onto threads, and how the backward splits its
// dweight/dbias column sums. Plain C++ so the choices are unit tested on machines without a GPU.
//
// A row that fits in registers is spread over `threads_per_row` threads holding `packs_per_thread`
// packs of `pack_elems` elements each (pack k of thread t is pack t + k * threads_per_row of the
// row, so a warp's accesses are consecutive). Small rows take a lane group (a power of two up to
// 32 lanes) and a block holds several rows; larger rows take whole warps (forward: one row per
// block; backward: as many rows as fit 512 threads, or one of up to 1024). Elements per thread are
// capped (forward: one 16-byte pack or 8 single elements; backward: 8, or 4 single, where the
// dweight/dbias accumulators live in registers too) and so is the block size, so that every
// instantiation fits 64 registers. Longer rows with 16-byte packs are staged in dynamic shared
// memory when they fit the device's opt-in limit (passed in as `shared_limit`, bytes): one block
// per row reads the row from memory once into shared memory and works from there (forward: the row,
// any length that fits; backward: x and dy, up to kBackwardStagedMaxCols). Rows that fit neither
// take the generic path: one block per row, statistics over memory, a second read of the row.
//
// Backward partials: the rows are cut into `chunks` consecutive ranges, a number that depends on
// the shape only (never on the SM count or the grid launched), and each chunk yields one partial
// row of dweight and dbias, its rows added in a fixed order. A finalize kernel adds the partial
// rows in a fixed tree. So dweight and dbias have the same bits on every GPU and every grid.
#pragma once

#include <cstdint>

namespace nk::cuda {

struct RowTiling {
  bool in_registers;     // false: staged in shared memory, or the generic block-per-row path
  int pack_elems;        // 16 / sizeof(T) when every pointer and D allow 16-byte access, else 1
  int packs_per_thread;  // in registers; staged backward (packs a thread owns)
  int threads_per_row;   // in registers: a power of two <= 32, or a multiple of 32; staged: block
  int block_threads;
  bool staged = false;       // one block per row, the row in dynamic shared memory
  int64_t shared_bytes = 0;  // staged only: dynamic shared memory a block needs, scratch included
  int rows_per_block() const { return in_registers ? block_threads / threads_per_row : 1; }
};

// Staged rows: the block reductions' scratch comes first in the dynamic shared memory, then the
// row. The staged kernels have no static shared memory: GPGPU-Sim places dynamic shared memory
// over a kernel's static variables (real GPUs place it after them), and one layout serves both.
// kStagingReserve bytes of the opt-in limit are left free, a margin for the runtime.
constexpr int64_t kStagedScratchBytes = 256;
constexpr int64_t kStagingReserve = 1024;

// Forward threads per block of a staged row, each keeping kStagedInFlight 16-byte loads in flight
// while it copies its packs into shared memory; two blocks an SM at least (within 64 registers).
constexpr int kStagedForwardBlock = 512;
constexpr int kStagedForwardMinBlocks = 2;
constexpr int kStagedInFlight = 2;

// Staged backward: rows up to 16384 elements (the hidden sizes; 1024 register threads of
// 16 elements spill), each thread owning up to kBackwardStagedElems elements in 16-byte packs,
// whose fp32 dweight/dbias accumulators (32 registers) stay in registers within the 64 that keep
// 1024 threads resident on an SM (half of it); x and dy live in shared memory. Blocks of
// kBackwardStagedBlock threads (two an SM) for rows up to 8192 elements, else
// kBackwardStagedWideBlock (one an SM); the block is the kernel's template parameter, so that a
// thread's pack offsets are immediates. (Blocks of 512 threads owning 32 elements took 128
// registers: a quarter of the SM.)
constexpr int64_t kBackwardStagedMaxCols = 16384;
constexpr int kBackwardStagedElems = 16;
constexpr int kBackwardStagedBlock = 512;
constexpr int kBackwardStagedWideBlock = 1024;

// Forward threads in registers hold one 16-byte pack of a row (8 elements of 16 bits, 4 of fp32) or
// 8 single elements, so that every instantiation, with the next row's pack in flight and its
// parameters held, stays within the 64 registers that keep 1024 threads (half of an sm_80/sm_90
// SM) resident. Rows take a lane group (a power of two up to 32 lanes, several rows in a block of
// kForwardSubWarpBlock threads), else whole warps up to kForwardRowBlock threads (4096 elements of
// 16 bits, 2048 of fp32), two blocks an SM at least. Longer rows in 16-byte packs are staged in
// shared memory, two blocks of 512 an SM: a register row of 513-1024 threads would hold one block
// an SM, 38-50 % of its threads, all waiting at the same barriers. Single elements, which cannot
// be staged, take up to kForwardScalarRowBlock threads (8192 elements) in registers.
constexpr int kForwardVectorPacks = 1;
constexpr int kForwardScalarElems = 8;
constexpr int kForwardSubWarpBlock = 128;
constexpr int kForwardRowBlock = 512;
constexpr int kForwardScalarRowBlock = 1024;

// Few long rows: a forward or backward of fewer than kSplitRowsBelow rows (the 132 SMs of an
// H100/H200 would otherwise run one block a row, some of them none) of more than kSplitMinCols
// elements in 16-byte packs splits each row into slices of kSplitBlock threads holding kSplitPacks
// packs each (4096 elements of 16 bits, 2048 of fp32), one block a slice. Forward: a first kernel
// reads each slice once and writes its Welford partial (count, mean and centred sum of squares of
// h - h0) to the workspace, and each row's h0; a second merges a row's partials in a fixed order
// (Chan), reads the slice again (from L2: the few rows were just read) and writes y. Backward: the
// same two steps for dx, with the slice sums of g and g * xhat. The slices and the order of the
// merge depend on the shape only, so the outputs have the same bits on every GPU.
constexpr int kSplitRowsBelow = 128;
constexpr int64_t kSplitMinCols = 16385;
constexpr int kSplitBlock = 256;
constexpr int kSplitPacks = 2;
constexpr int kSplitMinBlocks = 4;          // 1024 threads an SM: within 64 registers
constexpr int64_t kSplitPartialBytes = 16;  // one Welford state: int64 count, fp32 mean and m2

struct RowSplit {
  int64_t slices = 0;       // slices a row; 0: the row is not split
  int64_t slice_elems = 0;  // elements a slice (the last one may have fewer)
  // The partials, then each row's shift h0 (fp32): the apply kernel reads it there, not from x,
  // which an in-place call (y == x) overwrites meanwhile.
  int64_t workspace_bytes(int64_t rows) const {
    return slices > 0 ? rows * slices * kSplitPartialBytes + rows * 4 : 0;
  }
};

// The split of a forward's rows, or none (slices 0) when rows >= kSplitRowsBelow,
// cols < kSplitMinCols or the pointers do not allow 16-byte access.
RowSplit plan_row_split(int64_t rows, int64_t cols, int elem_bytes, bool vector_access);

// The most threads a forward register instantiation is launched with (E elements a pack), and the
// blocks of that size an SM must hold (__launch_bounds__): 1024 threads, within 64 registers.
constexpr int forward_block_bound(int e) {
  return e > 1 ? kForwardRowBlock : kForwardScalarRowBlock;
}
constexpr int forward_min_blocks(int e) { return 1024 / forward_block_bound(e); }

// The backward keeps x and dy in registers as they are stored (in 16-byte packs, the next row's
// too) and two fp32 accumulators per element in shared memory: 8 elements a thread in 16-byte
// packs (one 16-bit pack, two fp32 ones), or 4 single-element packs, and at most
// kBackwardRowBlock threads a row, so rows of up to 8192 elements (4096 in single-element packs)
// stay in registers, and every instantiation within the 64 registers that keep 1024 threads
// resident on an SM. (Sixteen elements a thread took 112 to 128 registers, a quarter of the SM's
// threads; eight single elements, 104 to 122.)
constexpr int kBackwardMaxElems = 8;     // elements a backward thread holds in 16-byte packs
constexpr int kBackwardScalarElems = 4;  // ... in single-element packs
constexpr int kBackwardRowBlock = 1024;

// Dynamic shared memory of a register backward block (`in_registers`): the scratch of the row sums
// (kStagedScratchBytes), each thread's fp32 dweight and dbias accumulators (8 bytes an element it
// holds), and, when the block holds several rows, their partial rows ([rows][cols] floats) to add
// in group order. At most 64.25 KiB for one row a block (1024 threads of 8 elements) and 94.25
// KiB for several (five 16-bit rows of 1536 columns, 960 threads), within the 99 KB every
// supported GPU grants a block.
int64_t register_backward_shared_bytes(const RowTiling& tiling, int64_t cols);

// Threads of a backward block that holds several rows: up to 512 (16 warps), so that two blocks
// per SM, which the capped partial count provides, keep half the SM's warps busy; up to 1024
// (kBackwardRowBlock) for rows of 6 warps, whose blocks of 512 would fill only 24 of the 32.
constexpr int kBackwardRowsBlock = 512;

// Forward: rows in registers (lane groups, or a block per row), a row staged in shared memory
// (16-byte packs, kStagedScratchBytes + cols * elem_bytes + kStagingReserve <= shared_limit), or
// the generic path.
RowTiling choose_row_tiling(int64_t cols, int elem_bytes, bool vector_access,
                            int64_t shared_limit = 0);

// Backward: lane groups or whole warps per row, several rows per block up to kBackwardRowsBlock
// threads (kBackwardRowBlock for rows of 6 warps), and for rows of whole warps below
// kBackwardRowsBlock threads twice the packs a thread where that keeps more warps resident (fp32:
// one or two 16-byte packs); beyond the register budget, and for register rows of 513 to 1023
// threads (one block an SM), x and dy of a row staged in shared memory (16-byte packs, cols <=
// kBackwardStagedMaxCols, 2 * cols * elem_bytes + kStagingReserve <= shared_limit); else the
// generic path (or, for those 513 to 1023 threads, the register row).
RowTiling choose_backward_tiling(int64_t cols, int elem_bytes, bool vector_access,
                                 int64_t shared_limit = 0);

// The most partial rows a backward writes: about two per SM of the largest GPUs, so that the
// partials stay small next to x and dy and the finalize reads few rows per column.
constexpr int64_t kMaxPartialRows = 256;

// The generic path's column pass takes at least this many rows per chunk: its partial rows are as
// long as the (long) rows, so fewer of them keep their bytes well below those of x and dy.
constexpr int64_t kMinGenericChunkRows = 16;

struct PartialPlan {
  int64_t chunks;            // partial rows, one per chunk
  int64_t groups_per_chunk;  // consecutive groups of `rows_per_group` rows in a chunk
  int64_t rows_per_group;    // rows a block handles at once
  int64_t rows_per_chunk() const { return groups_per_chunk * rows_per_group; }
};

// Chunk c covers rows [c * rows_per_chunk, min(rows, (c + 1) * rows_per_chunk)); every chunk but
// the last is full and none is empty.
PartialPlan plan_partials(int64_t rows, int64_t rows_per_group, int64_t min_rows_per_chunk,
                          int64_t max_chunks = kMaxPartialRows);

// Floats between two partial rows: cols rounded up to 8, so that 32-byte packs of 8 floats stay
// aligned in every row.
constexpr int64_t partial_stride(int64_t cols) { return (cols + 7) / 8 * 8; }

// How the finalize splits its work: a block covers `col_threads * vec` columns (vec = 4 when
// cols % 4 == 0, else 1), and its `row_lanes` lanes take the partial rows in turn, then add up in a
// fixed tree. Narrow tiles for small D give the finalize enough blocks. The lanes are as many as
// the partial rows (a power of two), at most 256 / col_threads: lanes without a partial row would
// only add zeros (a 256-thread block over one partial row ran 255 idle threads per column).
// Both numbers depend on the shape only, so the order of the additions does too.
struct FinalizeTiling {
  int vec;
  int col_threads;
  int row_lanes;
  int64_t blocks(int64_t cols) const {
    const int64_t tile = static_cast<int64_t>(col_threads) * vec;
    return (cols + tile - 1) / tile;
  }
};
FinalizeTiling choose_finalize_tiling(int64_t cols, int64_t chunks);

}  // namespace nk::cuda
