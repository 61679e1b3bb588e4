// The row-norm kernels' thread mapping and the backward's split of its column sums
// (kernels/row_norm_tiling.cpp), checked on the CPU: every width up to 20000 and beyond is covered,
// lane groups are powers of two within a warp, blocks are whole warps within the register budget,
// only rows that cannot sit in registers take the generic path; the partial-row plan covers every
// row once with at most kMaxPartialRows chunks; the finalize tiling covers every column.
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
  for_each_width(choose_row_tiling, [](const RowTiling& t, int64_t cols, bool vector) {
    if (!t.in_registers) {
      // Only rows beyond what one block holds go generic: 16384 elements (8192 in
      // single-element packs).
      ASSERT_GT(cols, vector ? 16384 : 8192);
      return;
    }
    expect_valid(t, cols, 64, max_forward_block_threads(t.packs_per_thread * t.pack_elems));
    // The kernel's __launch_bounds__ (forward_block_bound) must admit the block it is launched with.
    ASSERT_LE(t.block_threads, forward_block_bound(t.pack_elems, t.packs_per_thread)) << cols;
    if (t.threads_per_row > 32) {
      ASSERT_EQ(t.block_threads, t.threads_per_row);
    }
  });
}

TEST(RowTiling, BackwardCoversEveryWidthWithinBudget) {
  for_each_width(choose_backward_tiling, [](const RowTiling& t, int64_t cols, bool vector) {
    if (!t.in_registers) {
      ASSERT_GT(cols, vector ? 8192 : 4096);
      return;
    }
    expect_valid(t, cols, vector ? kBackwardMaxElems : kBackwardScalarElems,
                 max_backward_block_threads(vector));
    // Several rows per block up to kBackwardRowsBlock threads; their staged accumulators
    // (rows_per_block x cols floats, only with more than one row a block) stay within 32 KB
    // of shared memory.
    ASSERT_LE(t.block_threads, kBackwardRowsBlock);
    if (t.threads_per_row < kBackwardRowsBlock) {
      ASSERT_GT(t.block_threads + t.threads_per_row, kBackwardRowsBlock) << "block too small";
    }
    if (t.rows_per_block() > 1) {
      ASSERT_LE(int64_t{t.rows_per_block()} * cols * 4, 32 * 1024);
    }
  });
}

TEST(RowTiling, TypicalWidths) {
  // bf16 (2-byte) rows with 16-byte packs of 8.
  RowTiling t = choose_row_tiling(128, 2, true);
  EXPECT_TRUE(t.in_registers);
  EXPECT_EQ(t.threads_per_row, 16);  // 16 packs: two rows per warp
  t = choose_row_tiling(1024, 2, true);
  EXPECT_EQ(t.threads_per_row, 32);  // a warp per row, 4 packs per lane
  EXPECT_EQ(t.packs_per_thread, 4);
  t = choose_row_tiling(8192, 2, true);
  EXPECT_TRUE(t.in_registers);
  EXPECT_EQ(t.threads_per_row, 256);  // a block per row, 4 packs per thread
  t = choose_row_tiling(65536, 2, true);
  EXPECT_FALSE(t.in_registers);
  // Backward: one pack a thread up to 4096 (four warps per row at 1024, four rows per block),
  // two packs up to 8192, generic beyond.
  t = choose_backward_tiling(1024, 2, true);
  EXPECT_EQ(t.threads_per_row, 128);
  EXPECT_EQ(t.packs_per_thread, 1);
  EXPECT_EQ(t.rows_per_block(), 4);
  t = choose_backward_tiling(8192, 2, true);
  EXPECT_EQ(t.threads_per_row, 512);
  EXPECT_EQ(t.packs_per_thread, 2);
  EXPECT_FALSE(choose_backward_tiling(8200, 2, true).in_registers);
  // Odd widths take single-element packs.
  t = choose_backward_tiling(17, 4, false);
  EXPECT_TRUE(t.in_registers);
  EXPECT_EQ(t.pack_elems, 1);
  EXPECT_EQ(t.threads_per_row, 4);
  EXPECT_EQ(t.rows_per_block(), kBackwardRowsBlock / 4);
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
