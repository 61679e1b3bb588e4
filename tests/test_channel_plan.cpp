// How the batch/instance/group norm kernels split their reductions (kernels/channel_norm_plan.cpp),
// checked on the CPU: the layout path, 16-byte packs only where sizes allow, lanes that match the
// channels, chunks that cover S without an empty one, partial indices that are a bijection, and
// enough blocks for the GPU.
#include <set>
#include <tuple>

#include "channel_norm_plan.hpp"
#include "test_support.hpp"

namespace {

using nk::ChannelNorm;
using nk::ChannelShape;
using nk::cuda::ChannelPlan;
using nk::cuda::plan_channel_norm;

TEST(ChannelPlan, CoversEveryShape) {
  for (nk_layout layout : {NK_NCHW, NK_NHWC}) {
    for (auto [n, c, s] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 2},
                           {2, 3, 5},
                           {5, 1, 1},
                           {3, 40, 1},
                           {4, 16, 49},
                           {2, 3, 100003},
                           {1, 64, 70000},
                           {32, 64, 3136},
                           {2, 320, 4096},
                           {256, 2048, 49},
                           {1, 8, 1 << 20}}) {
      for (int elem : {2, 4}) {
        for (bool vector : {true, false}) {
          const ChannelShape shape{ChannelNorm::kBatch,          n, c, s, layout,
                                   elem == 2 ? NK_BF16 : NK_F32, 1};
          const ChannelPlan p = plan_channel_norm(shape, elem, vector, 132);
          SCOPED_TRACE(testing::Message()
                       << "layout " << layout << " n=" << n << " c=" << c << " s=" << s << " elem "
                       << elem << " vector " << vector);
          EXPECT_EQ(p.rows_layout, s > 1 && (layout == NK_NCHW || c == 1));
          if (!p.rows_layout) {
            const int64_t packs = (c + p.pack_elems - 1) / p.pack_elems;
            EXPECT_EQ(p.lanes & (p.lanes - 1), 0) << "lanes not a power of two";
            EXPECT_LE(p.lanes, 32);
            EXPECT_TRUE(p.lanes == 32 || p.lanes >= packs) << "idle lanes while packs remain";
            EXPECT_EQ(p.block_rows() * p.lanes, nk::cuda::kPartialBlock);
          }
          if (p.pack_elems > 1) {
            EXPECT_TRUE(vector);
            EXPECT_EQ(p.pack_elems, 16 / elem);
            EXPECT_EQ((p.rows_layout ? s : c) % p.pack_elems, 0) << "a pack would straddle";
          }
          if (p.rows_layout) {
            EXPECT_EQ(p.chunk_len % p.pack_elems, 0);
          }
          if (p.warp_per_row) {
            EXPECT_EQ(p.chunks, 1);
          }
          EXPECT_GE(p.chunks * p.chunk_len, s) << "chunks miss the end of S";
          EXPECT_LT((p.chunks - 1) * p.chunk_len, s) << "an empty chunk";
          EXPECT_EQ(p.partials(), n * c * p.chunks);
          if (p.partials() <= 200000) {
            std::set<int64_t> seen;
            for (int64_t i = 0; i < n; ++i)
              for (int64_t j = 0; j < c; ++j)
                for (int64_t k = 0; k < p.chunks; ++k) {
                  const int64_t at = p.partial_index(i, j, k);
                  ASSERT_GE(at, 0);
                  ASSERT_LT(at, p.partials());
                  ASSERT_TRUE(seen.insert(at).second) << "two partials share an index";
                }
          }
        }
      }
    }
  }
}

// Few (n, c) with long S are split so that the reduction still fills the GPU.
TEST(ChannelPlan, SplitsLongRowsAcrossBlocks) {
  const ChannelShape nchw{ChannelNorm::kBatch, 2, 3, 100000, NK_NCHW, NK_F32, 1};
  const ChannelPlan rows = plan_channel_norm(nchw, 4, true, 132);
  EXPECT_FALSE(rows.warp_per_row);
  EXPECT_GE(rows.n * rows.c * rows.chunks, 132) << "fewer blocks than SMs";
  const ChannelShape nhwc{ChannelNorm::kBatch, 1, 64, 200000, NK_NHWC, NK_BF16, 1};
  const ChannelPlan channels = plan_channel_norm(nhwc, 2, true, 132);
  EXPECT_EQ(channels.lanes, 8) << "64 bf16 channels are 8 packs";
  EXPECT_GE(channels.chunks, 132) << "one tile of channels: S split across the GPU";
  // Short rows take a warp each, whole.
  const ChannelShape small{ChannelNorm::kBatch, 256, 2048, 49, NK_NCHW, NK_F32, 1};
  const ChannelPlan warp = plan_channel_norm(small, 4, true, 132);
  EXPECT_TRUE(warp.warp_per_row);
  EXPECT_EQ(warp.pack_elems, 1) << "49 is not a multiple of 4";
}

}  // namespace
