// How the row-norm kernels map one row of D elements onto threads. Plain C++ so the choice is unit
// tested on machines without a GPU.
//
// A row that fits in registers is spread over `threads_per_row` threads holding `packs_per_thread`
// packs of `pack_elems` elements each (pack k of thread t is pack t + k * threads_per_row of the
// row, so a warp's accesses are consecutive). Small rows take a lane group (a power of two up to
// 32 lanes) and a block holds several rows; larger rows take a whole block. Elements per thread are
// capped (64 forward, 16 backward, where dweight/dbias accumulators live in registers too) and so
// is the block size (max_block_threads), so nothing spills. Rows longer than that take the generic
// path: one block per row, statistics over memory.
#pragma once

#include <cstdint>

namespace nk::cuda {

struct RowTiling {
  bool in_registers;     // false: the generic block-per-row path
  int pack_elems;        // 16 / sizeof(T) when every pointer and D allow 16-byte access, else 1
  int packs_per_thread;  // in registers only
  int threads_per_row;   // in registers only: a power of two <= 32, or a multiple of 32
  int block_threads;
  int rows_per_block() const { return in_registers ? block_threads / threads_per_row : 1; }
};

// The largest block for a kernel whose threads hold `elems` row elements, from the register file
// (65536 per SM): forward, 16384 elements per block keep a 64-element thread within 255 registers
// at 256 threads; backward threads also hold x-hat, g and two accumulators per element, so 8192.
constexpr int max_block_threads(int elems, bool backward) {
  const int limit = (backward ? 8192 : 16384) / elems;
  return limit > 1024 ? 1024 : limit;
}

RowTiling choose_row_tiling(int64_t cols, int elem_bytes, bool vector_access, bool backward);

}  // namespace nk::cuda
