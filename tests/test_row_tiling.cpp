// The row-norm kernels' thread mapping and the backward's split of its column sums
// (kernels/row_norm_tiling.cpp), checked on the CPU: every width up to 20000 and beyond is covered,
// lane groups are powers of two within a warp, blocks are whole warps within the register budget,
// only rows that cannot sit in registers go further: staged in shared memory where the row (x and
// dy in the backward) fits the opt-in limit, else the generic path; the partial-row plan covers
// every row once with at most kMaxPartialRows chunks; the finalize tiling covers every column.
#include <algorithm>
#include <initializer_list>

#include "row_norm_tiling.hpp"
#include "test_support.hpp"

namespace {

using namespace nk::cuda;

// The checks every tiling, forward or backward, must pass.
void expect_valid(const RowTiling& t, int64_t cols, int max_elems, int max_threads) {
  const int elems = t.packs_per_thread * t.pack_elems;
  ASSERT_LE(elems, max_elems);
  ASSERT_GE(int64_t{t.threads_per_row} * elems, cols) << "row not covered";
  ASSERT_EQ(t.block_threads % 32, 0);
  ASSERT_EQ(t.block_threads % t.threads_per_row, 0);
  if (t.threads_per_row <= 32) {
    ASSERT_EQ(t.threads_per_row & (t.threads_per_row - 1), 0) << "lane group not 2^k";
  } else {
    ASSERT_EQ(t.threads_per_row % 32, 0);
    ASSERT_LE(t.threads_per_row, max_threads);
  }
  ASSERT_LE(t.block_threads, 1024);
  // No thread without work: one warp fewer (or half the lanes) would not cover the row.
  const int64_t smaller = t.threads_per_row <= 32 ? t.threads_per_row / 2 : t.threads_per_row - 32;
  ASSERT_LT(smaller * elems, cols) << "more threads than needed";
}

// Warps an SM holds of blocks of `block` threads (whole warps, at most 1024) at 64 registers a
// thread: 32 of its 64.
int resident_warps(int block) { return 32 / (block / 32) * (block / 32); }

// Calls check(tiling, cols, vector) for every width up to 20000, both element sizes and both access
// widths (the vector path only with whole 16-byte packs), with the case in the trace; stops at the
// first fatal failure.
template <class Choose, class Check>
void for_each_width(Choose choose, Check check) {
  for (int elem : {2, 4}) {
    for (bool vector : {true, false}) {
      for (int64_t cols = 1; cols <= 20000; ++cols) {
        if (vector && cols % (16 / elem) != 0) continue;
        const RowTiling t = choose(cols, elem, vector);
        SCOPED_TRACE(testing::Message()
                     << "cols=" << cols << " elem=" << elem << " vector=" << vector);
        ASSERT_EQ(t.pack_elems, vector ? 16 / elem : 1);
        check(t, cols, vector);
        if (testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

TEST(RowTiling, ForwardCoversEveryWidthWithinBudget) {
  auto choose = [](int64_t cols, int elem, bool vector) {
    return choose_row_tiling(cols, elem, vector);  // no shared memory: registers or generic
  };
  for_each_width(choose, [](const RowTiling& t, int64_t cols, bool vector) {
    // One 16-byte pack a thread, or eight single elements.
    const int elems = vector ? t.pack_elems : kForwardScalarElems;
    const int most = vector ? kForwardRowBlock : kForwardScalarRowBlock;
    ASSERT_EQ(forward_block_bound(t.pack_elems), most);
    if (!t.in_registers) {
      // Only rows beyond what one block of `most` threads holds go further.
      ASSERT_GT(cols, int64_t{most} * elems);
      return;
    }
    ASSERT_EQ(t.packs_per_thread * t.pack_elems, elems);
    expect_valid(t, cols, elems, most);
    if (t.threads_per_row > 32) {
      ASSERT_EQ(t.block_threads, t.threads_per_row);
    } else {
      ASSERT_EQ(t.block_threads, kForwardSubWarpBlock);
    }
  });
}

TEST(RowTiling, BackwardCoversEveryWidthWithinBudget) {
  auto choose = [](int64_t cols, int elem, bool vector) {
    return choose_backward_tiling(cols, elem, vector);  // no shared memory: registers or generic
  };
  for_each_width(choose, [](const RowTiling& t, int64_t cols, bool vector) {
    if (!t.in_registers) {
      ASSERT_GT(cols, vector ? 8192 : 4096);
      return;
    }
    expect_valid(t, cols, vector ? kBackwardMaxElems : kBackwardScalarElems, kBackwardRowBlock);
    // Several rows per block up to kBackwardRowsBlock threads, or up to kBackwardRowBlock where
    // one such block keeps more of the 32 warps an SM holds at 64 registers resident (longer
    // rows: one, up to kBackwardRowBlock threads); their staged accumulators (rows_per_block x
    // cols floats, only with more than one row a block) stay within 32 KB of shared memory.
    ASSERT_LE(t.block_threads, kBackwardRowBlock);
    if (t.threads_per_row < kBackwardRowsBlock) {
      ASSERT_GT(t.block_threads + t.threads_per_row, kBackwardRowsBlock) << "block too small";
      const int fewer = kBackwardRowsBlock / t.threads_per_row * t.threads_per_row;
      if (t.block_threads > kBackwardRowsBlock) {
        ASSERT_GT(t.block_threads + t.threads_per_row, kBackwardRowBlock) << "block too small";
        ASSERT_GT(resident_warps(t.block_threads), resident_warps(fewer)) << "no warp gained";
      } else {
        ASSERT_EQ(t.block_threads, fewer);
        const int more = kBackwardRowBlock / t.threads_per_row * t.threads_per_row;
        ASSERT_LE(resident_warps(more), resident_warps(fewer)) << "warps left idle";
      }
    } else {
      ASSERT_EQ(t.block_threads, t.threads_per_row);
    }
    if (t.rows_per_block() > 1) {
      ASSERT_LE(int64_t{t.rows_per_block()} * cols * 4, 32 * 1024);
    }
    // Rows of whole warps below kBackwardRowsBlock threads: no other pack count a thread may
    // hold would keep more warps resident with its best block, and on a tie none fewer.
    if (vector && t.threads_per_row > 32 && t.threads_per_row < kBackwardRowsBlock) {
      const int64_t packs = cols / t.pack_elems;
      for (int p = 1; p * t.pack_elems <= kBackwardMaxElems; p *= 2) {
        const int tpr = static_cast<int>((packs + p - 1) / p + 31) / 32 * 32;
        if (p == t.packs_per_thread || tpr <= 32 || tpr >= kBackwardRowsBlock) continue;
        const int best = std::max(resident_warps(kBackwardRowsBlock / tpr * tpr),
                                  resident_warps(kBackwardRowBlock / tpr * tpr));
        ASSERT_GE(resident_warps(t.block_threads), best) << p << " packs a thread keep more";
        if (resident_warps(t.block_threads) == best) {
          ASSERT_LT(t.packs_per_thread, p) << "as many warps with fewer packs";
        }
      }
    }
    // Dynamic shared memory: the scratch, every thread's dweight and dbias sums (8 bytes an
    // element) and the partial rows, within what an sm_86 SM holds (100 KB, 1 KB a block kept
    // by the runtime): two blocks of up to kBackwardRowsBlock threads, else one.
    const int64_t bytes = register_backward_shared_bytes(t, cols);
    const int64_t elems = int64_t{t.packs_per_thread} * t.pack_elems;
    const int64_t partials = t.rows_per_block() > 1 ? t.rows_per_block() * cols * 4 : 0;
    ASSERT_GE(bytes, kStagedScratchBytes + t.block_threads * elems * 8 + partials);
    const int blocks = t.block_threads <= kBackwardRowsBlock ? 2 : 1;
    ASSERT_LE(blocks * (bytes + 1024), 100 * 1024) << t.block_threads << " threads";
  });
}

// Opt-in shared memory limits of real devices (bytes a block may use): H100/H200 (227 KB), A100
// (163 KB), sm_86/sm_89 (99 KB); and none (0: the register and generic paths only).
constexpr int64_t kH100Shared = 232448, kA100Shared = 166912, kSm86Shared = 101376;

TEST(RowTiling, TypicalWidths) {
  // bf16 (2-byte) rows with 16-byte packs of 8.
  RowTiling t = choose_row_tiling(128, 2, true);
  EXPECT_TRUE(t.in_registers);
  EXPECT_EQ(t.threads_per_row, 16);  // 16 packs: two rows per warp
  t = choose_row_tiling(1024, 2, true);
  EXPECT_EQ(t.threads_per_row, 128);  // four warps per row, one pack per thread
  EXPECT_EQ(t.packs_per_thread, 1);
  EXPECT_EQ(t.block_threads, 128);
  t = choose_row_tiling(4096, 2, true);
  EXPECT_TRUE(t.in_registers);
  EXPECT_EQ(t.threads_per_row, 512);  // a block per row, one pack per thread
  EXPECT_FALSE(choose_row_tiling(4104, 2, true).in_registers);
  EXPECT_TRUE(choose_row_tiling(2048, 4, true).in_registers);  // fp32: 512 packs of 4
  EXPECT_FALSE(choose_row_tiling(2052, 4, true).in_registers);
  EXPECT_TRUE(choose_row_tiling(4104, 2, true, kSm86Shared).staged);
  EXPECT_TRUE(choose_row_tiling(8192, 2, true, kSm86Shared).staged);
  EXPECT_TRUE(choose_row_tiling(2052, 4, true, kSm86Shared).staged);
  // Single elements (misaligned or odd widths): 1024 threads of 8, up to 8192.
  EXPECT_EQ(choose_row_tiling(8191, 2, false).threads_per_row, 1024);
  EXPECT_FALSE(choose_row_tiling(8193, 2, false).in_registers);
  t = choose_row_tiling(65536, 2, true);
  EXPECT_FALSE(t.in_registers);
  // Backward: one 16-bit pack a thread up to 8192 (four warps per row at 1024, four rows per
  // block; 1024 threads at 8192), generic beyond; fp32 two packs past 4096.
  t = choose_backward_tiling(1024, 2, true);
  EXPECT_EQ(t.threads_per_row, 128);
  EXPECT_EQ(t.packs_per_thread, 1);
  EXPECT_EQ(t.rows_per_block(), 4);
  t = choose_backward_tiling(8192, 2, true);
  EXPECT_EQ(t.threads_per_row, 1024);
  EXPECT_EQ(t.packs_per_thread, 1);
  EXPECT_EQ(t.block_threads, 1024);
  EXPECT_FALSE(choose_backward_tiling(8200, 2, true).in_registers);
  t = choose_backward_tiling(8192, 4, true);
  EXPECT_EQ(t.threads_per_row, 1024);
  EXPECT_EQ(t.packs_per_thread, 2);
  // Rows of 6 warps, five a block (30 warps resident against 24 in blocks of two); rows of 3
  // warps stay at five a block (30 either way).
  t = choose_backward_tiling(768, 4, true);
  EXPECT_EQ(t.threads_per_row, 192);
  EXPECT_EQ(t.rows_per_block(), 5);
  EXPECT_EQ(t.block_threads, 960);
  EXPECT_EQ(choose_backward_tiling(1536, 2, true).block_threads, 960);
  EXPECT_EQ(choose_backward_tiling(768, 2, true).block_threads, 480);
  EXPECT_EQ(choose_backward_tiling(3072, 2, true).block_threads, 384);
  // fp32 rows of 3 and 12 warps take two packs a thread: 64 threads, eight rows a block (32
  // warps against 30); 192, five a block (30 against 24).
  t = choose_backward_tiling(384, 4, true);
  EXPECT_EQ(t.packs_per_thread, 2);
  EXPECT_EQ(t.threads_per_row, 64);
  EXPECT_EQ(t.block_threads, 512);
  t = choose_backward_tiling(1536, 4, true);
  EXPECT_EQ(t.packs_per_thread, 2);
  EXPECT_EQ(t.block_threads, 960);
  EXPECT_EQ(choose_backward_tiling(1000, 4, true).packs_per_thread, 1);  // 8 warps: 32 either way
  // Odd widths take single-element packs, four a thread.
  t = choose_backward_tiling(17, 4, false);
  EXPECT_TRUE(t.in_registers);
  EXPECT_EQ(t.pack_elems, 1);
  EXPECT_EQ(t.threads_per_row, 8);
  EXPECT_EQ(t.rows_per_block(), kBackwardRowsBlock / 8);
  EXPECT_TRUE(choose_backward_tiling(4096, 2, false).in_registers);
  EXPECT_FALSE(choose_backward_tiling(4097, 2, false).in_registers);
}

// Beyond the register path, a row in 16-byte packs is staged exactly when it fits the limit with
// the reserve, as one block of kStagedForwardBlock threads; everything else is generic.
TEST(RowTiling, ForwardStagesLongRowsThatFitSharedMemory) {
  for (int elem : {2, 4}) {
    for (int64_t limit : {int64_t{0}, kSm86Shared, kA100Shared, kH100Shared}) {
      for (bool vector : {true, false}) {
        for (int64_t cols = 2000; cols <= 140000; cols += cols < 17000 ? 1 : 61) {
          if (vector && cols % (16 / elem) != 0) continue;
          SCOPED_TRACE(testing::Message() << "cols=" << cols << " elem=" << elem
                                          << " limit=" << limit << " vector=" << vector);
          const RowTiling plain = choose_row_tiling(cols, elem, vector);
          const RowTiling t = choose_row_tiling(cols, elem, vector, limit);
          if (plain.in_registers) {  // the register path wins whatever the limit
            ASSERT_TRUE(t.in_registers);
            ASSERT_FALSE(t.staged);
            ASSERT_EQ(t.block_threads, plain.block_threads);
            continue;
          }
          ASSERT_FALSE(plain.staged) << "no limit given: nothing is staged";
          const bool fits = vector && kStagedScratchBytes + cols * elem + kStagingReserve <= limit;
          ASSERT_EQ(t.staged, fits);
          ASSERT_FALSE(t.in_registers);
          ASSERT_EQ(t.pack_elems, vector ? 16 / elem : 1);
          ASSERT_EQ(t.rows_per_block(), 1);
          if (fits) {
            ASSERT_EQ(t.shared_bytes, kStagedScratchBytes + cols * elem);
            ASSERT_EQ(t.block_threads, kStagedForwardBlock);
          } else {
            ASSERT_EQ(t.shared_bytes, 0);
          }
        }
      }
    }
  }
  // The widths of the issue on an H100: bf16 rows up to 115584 elements, fp32 up to 57792.
  EXPECT_TRUE(choose_row_tiling(16392, 2, true, kH100Shared).staged);
  EXPECT_TRUE(choose_row_tiling(65536, 2, true, kH100Shared).staged);
  EXPECT_TRUE(choose_row_tiling(114688, 2, true, kH100Shared).staged);
  EXPECT_FALSE(choose_row_tiling(131072, 2, true, kH100Shared).staged);
  EXPECT_TRUE(choose_row_tiling(57344, 4, true, kH100Shared).staged);
  EXPECT_FALSE(choose_row_tiling(65536, 4, true, kH100Shared).staged);
  EXPECT_FALSE(choose_row_tiling(65536, 4, true, kSm86Shared).staged);
  EXPECT_FALSE(choose_row_tiling(20001, 2, false, kH100Shared).staged);  // single-element packs
}

// Backward: rows past the register path up to kBackwardStagedMaxCols in 16-byte packs, and register
// rows of 513 to 1023 threads (one block an SM), are staged when x and dy fit, in blocks of
// kBackwardStagedBlock threads up to kBackwardStagedBlock * kBackwardStagedElems columns, else
// kBackwardStagedWideBlock, that own up to kBackwardStagedElems elements each, every thread at
// least one pack.
TEST(RowTiling, BackwardStagesRowsUpTo16384ThatFitSharedMemory) {
  for (int elem : {2, 4}) {
    for (int64_t limit : {int64_t{0}, int64_t{65536}, kSm86Shared, kA100Shared, kH100Shared}) {
      for (bool vector : {true, false}) {
        for (int64_t cols = 1500; cols <= 20000; ++cols) {
          if (vector && cols % (16 / elem) != 0) continue;
          SCOPED_TRACE(testing::Message() << "cols=" << cols << " elem=" << elem
                                          << " limit=" << limit << " vector=" << vector);
          const RowTiling plain = choose_backward_tiling(cols, elem, vector);
          const RowTiling t = choose_backward_tiling(cols, elem, vector, limit);
          const bool fits = vector && cols <= kBackwardStagedMaxCols &&
                            kStagedScratchBytes + 2 * cols * elem + kStagingReserve <= limit;
          if (plain.in_registers) {
            const bool one_block_an_sm = plain.threads_per_row > kBackwardRowsBlock &&
                                         plain.threads_per_row < kBackwardRowBlock;
            if (!one_block_an_sm || !fits) {
              ASSERT_TRUE(t.in_registers);
              ASSERT_FALSE(t.staged);
              ASSERT_EQ(t.packs_per_thread, plain.packs_per_thread);
              ASSERT_EQ(t.block_threads, plain.block_threads);
              continue;
            }
          } else {
            ASSERT_FALSE(plain.staged);
          }
          ASSERT_EQ(t.staged, fits);
          ASSERT_FALSE(t.in_registers);
          ASSERT_EQ(t.rows_per_block(), 1);
          if (!fits) continue;
          ASSERT_EQ(t.shared_bytes, kStagedScratchBytes + 2 * cols * elem);
          ASSERT_EQ(t.packs_per_thread * t.pack_elems, kBackwardStagedElems);
          // The kernel's compile-time stride: one of its two instantiations.
          const int block = cols <= kBackwardStagedBlock * kBackwardStagedElems
                                ? kBackwardStagedBlock
                                : kBackwardStagedWideBlock;
          ASSERT_EQ(t.block_threads, block);
          ASSERT_EQ(t.threads_per_row, block);
          const int64_t packs = cols / t.pack_elems;
          ASSERT_GE(int64_t{t.block_threads} * t.packs_per_thread, packs) << "row not covered";
          ASSERT_GT(packs, t.block_threads) << "threads without a pack";
        }
      }
    }
  }
  // bf16 4104..7936 (544 to 992 threads of one pack) and fp32 2052..3968 (one pack) and
  // 4100..7936 (two) are staged in blocks of 512 where they fit; 7944..8192 stay in registers (1024
  // threads: two blocks' worth). bf16 8200..16384 fit every device here (64 KB at 16384) in blocks
  // of 1024; fp32 16384 (128 KB) needs more than sm_86's 99 KB and stays generic there; past 16384
  // every row is generic.
  RowTiling t = choose_backward_tiling(4104, 2, true, kSm86Shared);
  EXPECT_TRUE(t.staged);
  EXPECT_EQ(t.block_threads, kBackwardStagedBlock);
  EXPECT_EQ(t.packs_per_thread, 2);
  t = choose_backward_tiling(4104, 2, true);
  EXPECT_TRUE(t.in_registers);  // without the shared memory, as it was: 544 threads
  EXPECT_EQ(t.threads_per_row, 544);
  EXPECT_TRUE(choose_backward_tiling(2052, 4, true, kSm86Shared).staged);
  EXPECT_EQ(choose_backward_tiling(2048, 4, true, kSm86Shared).threads_per_row, 512);
  EXPECT_TRUE(choose_backward_tiling(3968, 4, true, kSm86Shared).staged);
  EXPECT_TRUE(choose_backward_tiling(3972, 4, true, kSm86Shared).in_registers);
  EXPECT_TRUE(choose_backward_tiling(7936, 4, true, kSm86Shared).staged);
  EXPECT_TRUE(choose_backward_tiling(7936, 2, true, kSm86Shared).staged);
  EXPECT_TRUE(choose_backward_tiling(7944, 2, true, kSm86Shared).in_registers);
  EXPECT_TRUE(choose_backward_tiling(8192, 2, true, kSm86Shared).in_registers);
  EXPECT_TRUE(choose_backward_tiling(8192, 4, true, kSm86Shared).in_registers);
  t = choose_backward_tiling(8200, 2, true, kSm86Shared);
  EXPECT_TRUE(t.staged);
  EXPECT_EQ(t.packs_per_thread, 2);
  EXPECT_EQ(t.block_threads, kBackwardStagedWideBlock);
  EXPECT_TRUE(choose_backward_tiling(16384, 2, true, kSm86Shared).staged);
  EXPECT_EQ(choose_backward_tiling(16384, 4, true, kH100Shared).packs_per_thread, 4);
  EXPECT_TRUE(choose_backward_tiling(16384, 4, true, kH100Shared).staged);
  EXPECT_FALSE(choose_backward_tiling(16384, 4, true, kSm86Shared).staged);
  EXPECT_FALSE(choose_backward_tiling(16392, 2, true, kH100Shared).staged);
  EXPECT_FALSE(choose_backward_tiling(8201, 4, false, kH100Shared).staged);
  EXPECT_FALSE(choose_backward_tiling(3000, 2, false, kH100Shared).staged);  // single elements
}

// Few long rows are split into slices that cover the row, none empty, each within one block of
// kSplitBlock threads and kSplitPacks packs; any other shape (many rows, short rows, single
// elements) is not. The split is a function of the shape alone: no device limit enters it.
TEST(RowSplit, FewLongRowsAreSplitIntoSlicesThatCoverTheRow) {
  for (int elem : {2, 4}) {
    for (int64_t rows : {int64_t{1}, int64_t{2}, int64_t{127}, int64_t{128}, int64_t{5000}}) {
      for (int64_t cols : {int64_t{8}, int64_t{4096}, int64_t{16384}, int64_t{16392},
                           int64_t{20000}, int64_t{65536}, int64_t{131072}, int64_t{1} << 22}) {
        SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols << " elem=" << elem);
        const bool expected = rows < 128 && cols > 16384;
        for (bool vector : {true, false}) {
          const RowSplit s = plan_row_split(rows, cols, elem, vector);
          if (!expected || !vector) {
            EXPECT_EQ(s.slices, 0);
            EXPECT_EQ(s.workspace_bytes(rows), 0);
            continue;
          }
          ASSERT_EQ(s.slice_elems, int64_t{kSplitBlock} * kSplitPacks * (16 / elem));
          ASSERT_GE(s.slices * s.slice_elems, cols) << "columns left over";
          ASSERT_LT((s.slices - 1) * s.slice_elems, cols) << "an empty slice";
          EXPECT_EQ(s.workspace_bytes(rows), rows * s.slices * 16 + rows * 4);
        }
      }
    }
  }
  // The widths engines use: bf16 rows of 32768 take 8 slices of 4096, fp32 ones 16 of 2048.
  EXPECT_EQ(plan_row_split(64, 32768, 2, true).slices, 8);
  EXPECT_EQ(plan_row_split(64, 32768, 4, true).slices, 16);
  EXPECT_EQ(plan_row_split(1, 16392, 2, true).slices, 5);
}

// Every row in exactly one chunk, chunks contiguous and non-empty, at most max_chunks of them, and
// the plan a function of its arguments only (there is no other input).
TEST(PartialPlan, CoversEveryRowOnceWithinTheCap) {
  for (int64_t rows : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{255}, int64_t{256}, int64_t{257},
                       int64_t{1000}, int64_t{4099}, int64_t{1} << 20}) {
    for (int64_t per_group : {int64_t{1}, int64_t{2}, int64_t{32}, int64_t{128}}) {
      for (int64_t min_rows : {int64_t{1}, kMinGenericChunkRows}) {
        SCOPED_TRACE(testing::Message()
                     << "rows=" << rows << " per_group=" << per_group << " min_rows=" << min_rows);
        const PartialPlan p = plan_partials(rows, per_group, min_rows);
        ASSERT_GE(p.chunks, 1);
        ASSERT_LE(p.chunks, kMaxPartialRows);
        ASSERT_EQ(p.rows_per_group, per_group);
        ASSERT_GE(p.rows_per_chunk(), min_rows);
        ASSERT_GE(p.chunks * p.rows_per_chunk(), rows) << "rows left over";
        ASSERT_LT((p.chunks - 1) * p.rows_per_chunk(), rows) << "an empty chunk";
        const PartialPlan again = plan_partials(rows, per_group, min_rows);
        ASSERT_EQ(again.chunks, p.chunks);
        ASSERT_EQ(again.groups_per_chunk, p.groups_per_chunk);
      }
    }
  }
  // Many rows: the cap is reached exactly when there are enough groups.
  EXPECT_EQ(plan_partials(int64_t{1} << 20, 4, 1).chunks, kMaxPartialRows);
  EXPECT_EQ(plan_partials(100, 4, 1).chunks, 25);
  EXPECT_EQ(plan_partials(100, 1, kMinGenericChunkRows).chunks, 7);
}

TEST(FinalizeTiling, CoversEveryColumnWithEnoughBlocks) {
  for (int64_t cols = 1; cols <= 70000; cols += cols < 300 ? 1 : 997) {
    for (int64_t chunks : {1, 2, 3, 5, 8, 31, 33, 255, 256}) {
      SCOPED_TRACE(testing::Message() << "cols=" << cols << " chunks=" << chunks);
      const FinalizeTiling f = choose_finalize_tiling(cols, chunks);
      ASSERT_EQ(f.vec, cols % 4 == 0 ? 4 : 1);
      ASSERT_TRUE(f.col_threads == 1 || f.col_threads == 2 || f.col_threads == 4 ||
                  f.col_threads == 8);
      ASSERT_GE(f.blocks(cols) * f.col_threads * f.vec, cols);
      ASSERT_LT((f.blocks(cols) - 1) * f.col_threads * f.vec, cols);
      // A wider tile is taken only while at least 256 blocks remain.
      if (f.col_threads > 1) {
        ASSERT_GE(f.blocks(cols), 256);
      }
      // Row lanes: a power of two (the tree halves them), within the 256-thread block, one per
      // partial row up to that limit and never one more than the next power of two needs.
      ASSERT_EQ(f.row_lanes & (f.row_lanes - 1), 0);
      ASSERT_LE(f.row_lanes * f.col_threads, 256);
      if (f.row_lanes * f.col_threads < 256) {
        ASSERT_GE(f.row_lanes, chunks);
      }
      ASSERT_LT(f.row_lanes / 2, chunks) << "a lane with no partial row";
    }
  }
  EXPECT_EQ(choose_finalize_tiling(8192, 1).row_lanes, 1);
  EXPECT_EQ(choose_finalize_tiling(8192, 5).row_lanes, 8);
  EXPECT_EQ(choose_finalize_tiling(8192, 256).row_lanes, 32);  // 8 column threads
  EXPECT_EQ(choose_finalize_tiling(1000, 256).row_lanes, 256);
  EXPECT_EQ(partial_stride(1), 8);
  EXPECT_EQ(partial_stride(8), 8);
  EXPECT_EQ(partial_stride(1001), 1008);
}

}  // namespace
