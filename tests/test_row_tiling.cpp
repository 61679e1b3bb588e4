// The row-norm kernels' thread mapping (kernels/row_norm_tiling.cpp), checked on the CPU for every
// width up to 20000 and beyond: the row is covered, lane groups are powers of two within a warp,
// blocks are whole warps within the register budget, and only rows that cannot sit in registers
// take the generic path.
#include <initializer_list>

#include "row_norm_tiling.hpp"
#include "test_support.hpp"

namespace {

using nk::cuda::choose_row_tiling;
using nk::cuda::max_block_threads;
using nk::cuda::RowTiling;

TEST(RowTiling, EveryWidthIsCoveredWithinBudget) {
  for (bool backward : {false, true}) {
    for (int elem : {2, 4}) {
      for (bool vector : {true, false}) {
        for (int64_t cols = 1; cols <= 20000; ++cols) {
          if (vector && cols % (16 / elem) != 0) continue;  // the vector path needs whole packs
          const RowTiling t = choose_row_tiling(cols, elem, vector, backward);
          SCOPED_TRACE(testing::Message() << "cols=" << cols << " elem=" << elem
                                          << " vector=" << vector << " backward=" << backward);
          ASSERT_EQ(t.pack_elems, vector ? 16 / elem : 1);
          const int max_elems = backward ? 16 : 64;
          if (!t.in_registers) {
            // Only rows beyond what one block holds in registers go generic: forward 16384
            // elements (8192 with single-element packs), backward 8192.
            ASSERT_GT(cols, !backward && vector ? 16384 : 8192);
            ASSERT_EQ(t.block_threads % 32, 0);
            continue;
          }
          const int elems = t.packs_per_thread * t.pack_elems;
          ASSERT_LE(elems, max_elems);
          ASSERT_GE(int64_t{t.threads_per_row} * elems, cols) << "row not covered";
          if (t.threads_per_row <= 32) {
            ASSERT_EQ(t.threads_per_row & (t.threads_per_row - 1), 0) << "lane group not 2^k";
            ASSERT_EQ(t.block_threads % 32, 0);
            ASSERT_EQ(t.block_threads % t.threads_per_row, 0);
          } else {
            ASSERT_EQ(t.threads_per_row % 32, 0);
            ASSERT_EQ(t.block_threads, t.threads_per_row);
          }
          ASSERT_LE(t.block_threads, max_block_threads(elems, backward));
          // No thread without work: one warp fewer (or half the lanes) would not cover the row.
          const int64_t smaller =
              t.threads_per_row <= 32 ? t.threads_per_row / 2 : t.threads_per_row - 32;
          ASSERT_LT(smaller * elems, cols) << "more threads than needed";
        }
      }
    }
  }
}

TEST(RowTiling, TypicalWidths) {
  // bf16 (2-byte) rows with 16-byte packs of 8.
  RowTiling t = choose_row_tiling(128, 2, true, false);
  EXPECT_TRUE(t.in_registers);
  EXPECT_EQ(t.threads_per_row, 16);  // 16 packs: two rows per warp
  t = choose_row_tiling(1024, 2, true, false);
  EXPECT_EQ(t.threads_per_row, 32);  // a warp per row, 4 packs per lane
  EXPECT_EQ(t.packs_per_thread, 4);
  t = choose_row_tiling(8192, 2, true, false);
  EXPECT_TRUE(t.in_registers);
  EXPECT_EQ(t.threads_per_row, 256);  // a block per row, 4 packs per thread
  t = choose_row_tiling(65536, 2, true, false);
  EXPECT_FALSE(t.in_registers);
  // Odd widths take single-element packs.
  t = choose_row_tiling(17, 4, false, true);
  EXPECT_TRUE(t.in_registers);
  EXPECT_EQ(t.pack_elems, 1);
  EXPECT_EQ(t.threads_per_row, 4);
}

}  // namespace
