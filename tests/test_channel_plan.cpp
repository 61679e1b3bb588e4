// How the batch/instance/group norm kernels split their reductions (kernels/channel_norm_plan.cpp),
// checked on the CPU: the layout path, 16-byte packs only where sizes allow, lanes that match the
// channels, chunks that cover each (slot, c) without an empty one, partial indices that are a
// bijection, chunks that do not depend on the pointers, and batch norm's partials bounded by C
// (more chunks, within a constant, where few channels would leave a GPU's SMs short of work); and
// which instance and group norm shapes read x once (a row per block in shared memory).
#include <algorithm>
#include <set>
#include <tuple>

#include "channel_norm_plan.hpp"
#include "test_support.hpp"

namespace {

using nk::ChannelNorm;
using nk::ChannelShape;
using nk::cuda::ChannelPlan;
using nk::cuda::chunk_cap;
using nk::cuda::column_view;
using nk::cuda::kFewPartials;
using nk::cuda::kMaxChunks;
using nk::cuda::plan_channel_norm;

ChannelShape shape_of(ChannelNorm kind, int64_t n, int64_t c, int64_t s, nk_layout layout,
                      int elem) {
  const int64_t groups = kind == ChannelNorm::kGroup && c % 2 == 0 ? 2 : 1;
  return ChannelShape{kind, n, c, s, layout, elem == 2 ? NK_BF16 : NK_F32, groups};
}

TEST(ChannelPlan, CoversEveryShape) {
  for (ChannelNorm kind : {ChannelNorm::kBatch, ChannelNorm::kInstance, ChannelNorm::kGroup}) {
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
                             {1, 8, 1 << 20},
                             {4096, 3, 1},
                             {8, 20, 196},
                             {2, 255, 64},
                             {2, 1001, 64},
                             {3, 257, 49},
                             {64, 2047, 8},
                             {300, 64, 3},
                             {40, 3, 5},
                             {3, 5, 3},
                             {8, 37, 7},
                             {3, 37, 7},
                             {1000, 2048, 6}}) {
        for (int elem : {2, 4}) {
          for (bool vector : {true, false}) {
            const ChannelShape shape = shape_of(kind, n, c, s, layout, elem);
            const ChannelPlan p = plan_channel_norm(shape, elem, vector);
            SCOPED_TRACE(testing::Message()
                         << "kind " << static_cast<int>(kind) << " layout " << layout << " n=" << n
                         << " c=" << c << " s=" << s << " elem " << elem << " vector " << vector);
            const bool batch = kind == ChannelNorm::kBatch;
            const int64_t e = 16 / elem;
            EXPECT_EQ(p.rows_layout, s > 1 && (layout == NK_NCHW || c == 1));
            EXPECT_EQ(p.slots, batch ? 1 : n);
            EXPECT_EQ(p.seg_count, batch ? n : 1);
            EXPECT_EQ(p.span(), batch ? n * s : s);
            // Batch norm's rows shorter than a pack (not half of one) reduce as C * S columns of
            // the channels layout, S times fewer chunks at most; w is the walk the partials take.
            const bool columns = batch && p.rows_layout && s < e && s % (e / 2) != 0;
            EXPECT_EQ(p.columns, columns ? s : 1);
            const ChannelPlan w = columns ? column_view(p) : p;
            if (columns) {
              EXPECT_FALSE(w.rows_layout);
              EXPECT_EQ(w.c, c * s);
              EXPECT_EQ(w.s, 1);
              EXPECT_EQ(w.chunks * s, p.chunks);
              EXPECT_EQ(w.span(), n);
              EXPECT_LE(p.chunks, chunk_cap(c)) << "more partials than batch norm's bound";
              EXPECT_EQ(p.pack_elems, 1) << "the elementwise passes keep the rows plan";
              EXPECT_EQ(p.packs_cross_rows, vector);
            }
            const int64_t wc = w.c;
            if (w.period == 0) {
              EXPECT_EQ(w.period_tail(), 0);
            }
            if (!w.rows_layout && w.period > 0) {
              EXPECT_NE(wc % e, 0);
              EXPECT_EQ(w.period % wc, 0);
              EXPECT_EQ(w.period % e, 0);
              if (w.period_split) {  // L / C partials per walked chunk, whatever the pointers
                EXPECT_GT(w.period / e, nk::cuda::kPartialBlock) << "a split period fits a block";
                EXPECT_EQ(w.lanes, 32);
                EXPECT_EQ(w.pack_elems, vector ? e : 1);
                EXPECT_EQ(w.chunks, w.walk_chunks * (w.period / wc));
              } else {
                EXPECT_TRUE(vector);
                EXPECT_EQ(w.lanes * w.pack_elems, w.period) << "a period is one block wide";
                EXPECT_LE(w.lanes, nk::cuda::kPartialBlock);
              }
              // Whole periods, but for one slot's partial last row (not split).
              EXPECT_EQ(w.span() % (w.period / wc), w.period_tail());
              if (w.period_tail() > 0) {
                EXPECT_FALSE(w.period_split);
                EXPECT_EQ(w.slots, 1) << "a partial row inside the tensor";
              }
              EXPECT_EQ(w.chunk_len % (w.period / wc), 0) << "a chunk that is not whole periods";
              EXPECT_LE(w.block_rows() * w.lanes, nk::cuda::kPartialBlock);
              EXPECT_GT(w.block_rows() * w.lanes, nk::cuda::kPartialBlock - w.lanes);
            } else if (!w.rows_layout) {
              // As many tiles as 32 lanes would take, the packs shared evenly: only the last
              // tile has lanes without a pack, fewer than the tiles.
              const int64_t packs = (wc + w.pack_elems - 1) / w.pack_elems;
              const int64_t tiles = (packs + 31) / 32, lanes = w.lanes;
              EXPECT_LE(lanes, 32);
              EXPECT_EQ((packs + lanes - 1) / lanes, tiles) << "a tile more than 32 lanes take";
              EXPECT_LT(tiles * lanes - packs, tiles) << "tiles of unequal widths";
              if (packs <= 32) {
                EXPECT_EQ(lanes, packs) << "a lane without a pack";
              }
              EXPECT_LE(w.block_rows() * w.lanes, nk::cuda::kPartialBlock);
              EXPECT_GT(w.block_rows() * w.lanes, nk::cuda::kPartialBlock - w.lanes)
                  << "a whole row of threads idle";
              EXPECT_FALSE(w.warp_per_chunk);
            } else if (w.short_rows) {
              EXPECT_EQ(w.chunk_len % s, 0) << "short rows: a chunk boundary inside a row";
              EXPECT_LE(s, nk::cuda::kShortRow);
              EXPECT_EQ(w.warp_per_chunk, w.seg_count > 1);
            } else {
              EXPECT_EQ(w.chunk_len % 8, 0) << "a chunk boundary inside a pack";
              const bool many =
                  w.chunk_len <= nk::cuda::kWarpChunkMany && w.partials() >= nk::cuda::kWarpItems;
              EXPECT_EQ(w.warp_per_chunk,
                        (w.chunk_len <= nk::cuda::kWarpChunk || many) && !w.unaligned_rows);
            }
            if (w.pack_elems > 1) {
              EXPECT_TRUE(vector);
              EXPECT_EQ(w.pack_elems, e);
              EXPECT_EQ((w.rows_layout  ? s
                         : w.period > 0 ? w.period
                                        : wc) %
                            w.pack_elems,
                        0)
                  << "a pack would straddle";
            }
            EXPECT_GE(w.chunks, 1);
            EXPECT_LE(p.chunks, chunk_cap(p.slots * c));
            if (!w.period_split) {
              EXPECT_EQ(w.walk_chunks, w.chunks);
            }
            EXPECT_GE(w.walk_chunks * w.chunk_len, w.span()) << "chunks miss the span's end";
            EXPECT_LT((w.walk_chunks - 1) * w.chunk_len, w.span()) << "an empty chunk";
            EXPECT_EQ(p.partials(), p.slots * c * p.chunks);
            if (p.partials() <= 200000) {
              std::set<int64_t> seen;
              for (int64_t i = 0; i < p.slots; ++i)
                for (int64_t j = 0; j < c; ++j)
                  for (int64_t k = 0; k < p.chunks; ++k) {
                    const int64_t at = p.partial_index(i, j, k);
                    ASSERT_GE(at, 0);
                    ASSERT_LT(at, p.partials());
                    ASSERT_TRUE(seen.insert(at).second) << "two partials share an index";
                    if (columns) {  // where the column walk files column (j, k % S) of chunk k / S
                      ASSERT_EQ(at, w.partial_index(0, j * s + k % s, k / s));
                    }
                  }
            }
          }
        }
      }
    }
  }
}

// The reduction tree is a function of the shape: the pointers' alignment changes the pack width
// (how threads load), never the chunks, so the workspace query, which sees no pointers, is exact.
TEST(ChannelPlan, ChunksDependOnTheShapeOnly) {
  for (auto [n, c, s, layout] :
       {std::tuple<int64_t, int64_t, int64_t, nk_layout>{2, 3, 100000, NK_NCHW},
        {1, 64, 200000, NK_NHWC},
        {32, 3, 50176, NK_NHWC},
        {8, 20, 196, NK_NHWC},
        {32, 64, 3136, NK_NHWC},
        {8, 2048, 1, NK_NCHW},
        {300, 64, 3, NK_NCHW},
        {40, 3, 5, NK_NCHW}}) {
    const ChannelShape shape = shape_of(ChannelNorm::kBatch, n, c, s, layout, 2);
    const ChannelPlan a = plan_channel_norm(shape, 2, true), b = plan_channel_norm(shape, 2, false);
    EXPECT_EQ(a.chunks, b.chunks);
    EXPECT_EQ(a.chunk_len, b.chunk_len);
    EXPECT_EQ(a.partials(), b.partials());
  }
}

// Batch norm's partials: at most max(C * kMaxChunks, kFewPartials), however large N grows (the
// workspace is bounded by C, as cuDNN sizes it, plus a constant).
TEST(ChannelPlan, BatchNormPartialsBoundedByChannels) {
  for (nk_layout layout : {NK_NCHW, NK_NHWC}) {
    for (int64_t c : {int64_t{1}, int64_t{3}, int64_t{64}, int64_t{2048}}) {
      for (int64_t s : {int64_t{1}, int64_t{49}, int64_t{3136}}) {
        int64_t largest = 0;
        for (int64_t n : {int64_t{1}, int64_t{256}, int64_t{1} << 16, int64_t{1} << 22}) {
          const ChannelPlan p =
              plan_channel_norm(shape_of(ChannelNorm::kBatch, n, c, s, layout, 2), 2, true);
          EXPECT_LE(p.partials(), std::max(c * kMaxChunks, kFewPartials))
              << "c=" << c << " s=" << s << " n=" << n;
          if (p.partials() > largest) largest = p.partials();
        }
        EXPECT_GT(largest, 0);
      }
    }
  }
}

// Few channels with many values are split so that the reduction fills a GPU (of any size: the
// count of work items does not depend on the SM count), and short chunks take a warp.
TEST(ChannelPlan, SplitsFewChannelsAcrossBlocks) {
  const ChannelShape nchw{ChannelNorm::kBatch, 2, 3, 100000, NK_NCHW, NK_F32, 1};
  const ChannelPlan rows = plan_channel_norm(nchw, 4, true);
  EXPECT_FALSE(rows.warp_per_chunk);
  EXPECT_GE(rows.partials(), 40) << "2 * 100000 values of 3 channels: at least 40 blocks";
  const ChannelShape nhwc{ChannelNorm::kBatch, 1, 64, 100000, NK_NHWC, NK_BF16, 1};
  const ChannelPlan channels = plan_channel_norm(nhwc, 2, true);
  EXPECT_EQ(channels.lanes, 8) << "64 bf16 channels are 8 packs";
  EXPECT_GT(channels.chunks, kMaxChunks) << "one tile of channels: more chunks than 128 blocks";
  EXPECT_EQ(channels.chunks, (100000 + 255) / 256)
      << "chunks of 256 positions, 8 for each of the block's 32 rows of threads";
  // ResNet's last stage in NCHW: short rows, but batch norm's chunks span the samples.
  const ChannelShape small{ChannelNorm::kBatch, 256, 2048, 49, NK_NCHW, NK_BF16, 1};
  const ChannelPlan bn = plan_channel_norm(small, 2, true);
  EXPECT_EQ(bn.chunks, 1);
  EXPECT_EQ(bn.chunk_len, 256 * 49) << "one chunk of every sample's 49 values";
  EXPECT_TRUE(bn.short_rows) << "rows of 49: a lane per row";
  EXPECT_TRUE(bn.warp_per_chunk) << "batch norm's chunk of rows: a warp";
  EXPECT_EQ(bn.pack_elems, 1) << "49 is not a multiple of 8";
  EXPECT_EQ(bn.row_load_elems, 8) << "a lane's row: 16-byte loads between its ends";
  const ChannelShape in{ChannelNorm::kInstance, 256, 2048, 49, NK_NCHW, NK_BF16, 1};
  const ChannelPlan inst = plan_channel_norm(in, 2, true);
  EXPECT_TRUE(inst.short_rows);
  EXPECT_FALSE(inst.warp_per_chunk) << "an instance norm row of 49 takes a lane";
  EXPECT_EQ(inst.partials(), 256 * 2048);
  // Group norm rows of 4096 too long for a block (40 channels a group): a warp a row where there
  // are many, a block where few.
  const ChannelShape gn{ChannelNorm::kGroup, 8, 1280, 4096, NK_NCHW, NK_BF16, 32};
  const ChannelPlan many = plan_channel_norm(gn, 2, true);
  EXPECT_EQ(many.chunk_len, 4096);
  EXPECT_EQ(many.partials(), 8 * 1280);
  EXPECT_TRUE(many.warp_per_chunk);
  ChannelShape gn2 = gn;
  gn2.n = 2;
  EXPECT_FALSE(plan_channel_norm(gn2, 2, true).warp_per_chunk) << "2560 rows: a block each";
}

// Few (slot, c) with many values: the chunks are not held to kMaxChunks per (slot, c), so the
// reduction still runs hundreds of blocks (about 4 per SM of a 132-SM GPU at 512), while the
// partials stay within kFewPartials. ResNet-50's NHWC shapes (C = 64 to 256 in bf16, one tile of
// channel packs) ran 128 blocks before.
TEST(ChannelPlan, FewChannelsStillFillTheGpu) {
  struct Case {
    ChannelNorm kind;
    int64_t n, c, s;
    nk_layout layout;
    int elem;
    int64_t items;  // blocks (work items) the reduction runs, at least
  };
  for (const Case& k : {Case{ChannelNorm::kBatch, 256, 64, 3136, NK_NHWC, 2, 1024},
                        Case{ChannelNorm::kBatch, 256, 128, 784, NK_NHWC, 2, 784},
                        Case{ChannelNorm::kBatch, 256, 256, 3136, NK_NHWC, 2, 512},
                        Case{ChannelNorm::kBatch, 256, 256, 784, NK_NHWC, 4, 1024},
                        Case{ChannelNorm::kBatch, 256, 512, 784, NK_NHWC, 2, 512},
                        Case{ChannelNorm::kBatch, 256, 3, 224 * 224, NK_NHWC, 2, 1024},
                        Case{ChannelNorm::kBatch, 256, 100, 3136, NK_NHWC, 2, 1024},
                        Case{ChannelNorm::kBatch, 256, 3, 224 * 224, NK_NCHW, 2, 1024},
                        Case{ChannelNorm::kBatch, 65536, 64, 1, NK_NCHW, 2, 256},
                        Case{ChannelNorm::kInstance, 1, 64, 1 << 20, NK_NHWC, 2, 1024},
                        Case{ChannelNorm::kGroup, 2, 64, 1 << 18, NK_NHWC, 2, 1024}}) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s << " layout "
                                    << k.layout << " elem " << k.elem);
    const ChannelPlan p =
        plan_channel_norm(shape_of(k.kind, k.n, k.c, k.s, k.layout, k.elem), k.elem, true);
    const int64_t tiles = p.rows_layout ? k.c : (k.c * k.elem + 16 * 32 - 1) / (16 * 32);
    EXPECT_GE(p.slots * tiles * p.chunks, k.items);
    EXPECT_LE(p.partials(), std::max(p.slots * k.c * kMaxChunks, kFewPartials));
  }
}

// The channels walk's lanes: as many tiles of channel packs as 32 lanes take, the packs shared
// evenly over them, so that the last tile does not leave most of its threads idle (C = 320 in
// 16 bits: 40 packs were a tile of 32 and one of 8, 24 of whose 32 lanes had no pack in each of
// its 8 rows); the rows are 256 / lanes. Misaligned pointers count single elements as packs.
TEST(ChannelPlan, ChannelsWalkSharesPacksEvenlyOverTiles) {
  struct Case {
    int64_t c;
    int elem;
    bool vector;
    int lanes, rows;
  };
  for (const Case& k :
       {Case{320, 2, true, 20, 12}, Case{320, 4, true, 27, 9}, Case{640, 2, true, 27, 9},
        Case{1280, 2, true, 32, 8}, Case{256, 2, true, 32, 8}, Case{96, 2, true, 12, 21},
        Case{384, 2, true, 24, 10}, Case{40, 2, false, 20, 12}, Case{33, 4, false, 17, 15},
        Case{2048, 4, false, 32, 8}}) {
    for (ChannelNorm kind : {ChannelNorm::kBatch, ChannelNorm::kInstance, ChannelNorm::kGroup}) {
      SCOPED_TRACE(testing::Message() << "c=" << k.c << " elem " << k.elem << " aligned "
                                      << k.vector << " kind " << static_cast<int>(kind));
      const ChannelPlan p =
          plan_channel_norm(shape_of(kind, 4, k.c, 1024, NK_NHWC, k.elem), k.elem, k.vector);
      EXPECT_FALSE(p.rows_layout);
      EXPECT_EQ(p.period, 0);
      EXPECT_EQ(p.lanes, k.lanes);
      EXPECT_EQ(p.block_rows(), k.rows);
    }
  }
}

// Short spans in the channels layout: a chunk gives each row of the block's threads (256 / lanes
// rows, the lanes counted in 16-byte packs, or a period's packs) 8 positions or periods, two tiles
// of its walk, however the pointers are aligned, so small batches still run several blocks
// (C = 256 over 32 * 14 * 14 positions: 98 chunks of 64) and narrow channels do not leave a
// block's threads one load each (C = 8: chunks of 2048 positions).
TEST(ChannelPlan, ChunksGiveEachRowOfThreadsSeveralPositions) {
  struct Case {
    int64_t n, c, s;
    int elem;
    int64_t min_chunk;  // positions: 256 / lanes rows * 8 (* positions per period)
    int64_t chunks;     // of n * s positions
  };
  for (const Case& k : {Case{32, 256, 196, 2, 64, 98}, Case{32, 512, 49, 2, 64, 25},
                        Case{32, 128, 784, 2, 128, 196}, Case{32, 64, 3136, 2, 256, 392},
                        Case{32, 64, 784, 4, 128, 196}, Case{32, 8, 3136, 2, 2048, 49},
                        Case{32, 3, 3136, 2, 85 * 8 * 8, 19}, Case{32, 3, 3136, 4, 85 * 8 * 4, 37},
                        Case{2, 255, 4096, 2, 8 * 8, 128}, Case{32, 320, 196, 2, 12 * 8, 66},
                        Case{32, 320, 196, 4, 9 * 8, 88}}) {
    for (bool vector : {true, false}) {
      SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s << " elem "
                                      << k.elem << " aligned " << vector);
      const ChannelPlan p = plan_channel_norm(
          shape_of(ChannelNorm::kBatch, k.n, k.c, k.s, NK_NHWC, k.elem), k.elem, vector);
      EXPECT_EQ(p.chunks, k.chunks);
      EXPECT_EQ(p.chunks, (k.n * k.s + k.min_chunk - 1) / k.min_chunk);
    }
  }
}

// The statistics pass of the rows layout loads half a 16-byte pack where S is a multiple of that
// only; every other kernel keeps pack_elems (whole packs or single elements).
TEST(ChannelPlan, RowLoadsUseHalfPacksWhereTheRowsAllow) {
  struct Want {
    int64_t s;
    int elem;
    bool aligned;
    int pack, row_load;
  };
  for (const Want w :
       {Want{196, 2, true, 1, 4}, Want{3136, 2, true, 8, 8}, Want{2001, 2, false, 1, 1},
        Want{98, 4, true, 1, 2}, Want{196, 4, true, 4, 4}, Want{2001, 4, false, 1, 1},
        Want{196, 2, false, 1, 1}, Want{98, 4, false, 1, 1}}) {
    SCOPED_TRACE(testing::Message()
                 << "S=" << w.s << " elem=" << w.elem << " aligned=" << w.aligned);
    const ChannelShape shape{
        ChannelNorm::kBatch, 4, 8, w.s, NK_NCHW, w.elem == 2 ? NK_BF16 : NK_F32, 1};
    const ChannelPlan p = plan_channel_norm(shape, w.elem, w.aligned);
    EXPECT_TRUE(p.rows_layout);
    EXPECT_EQ(p.pack_elems, w.pack);
    EXPECT_EQ(p.row_load_elems, w.row_load);
    EXPECT_FALSE(p.short_rows) << "S > kShortRow, or a multiple of half a pack";
    EXPECT_FALSE(p.unaligned_rows) << "a multiple of half a pack, or misaligned pointers";
    EXPECT_EQ(w.s % p.row_load_elems, 0) << "a load would straddle two rows";
    EXPECT_EQ(p.chunk_len % p.row_load_elems, 0) << "a load would straddle two chunks";
  }
  for (int64_t c : {12, 16}) {  // channels layout: no half packs
    const ChannelShape nhwc{ChannelNorm::kBatch, 4, c, 196, NK_NHWC, NK_BF16, 1};
    const ChannelPlan p = plan_channel_norm(nhwc, 2, true);
    EXPECT_FALSE(p.rows_layout);
    EXPECT_EQ(p.row_load_elems, p.pack_elems) << "C=" << c;
  }
}

// Long rows that are not a multiple of half a pack (S > kShortRow, odd): with 16-byte aligned
// pointers the partials load whole packs between each row's ends (partials_unaligned_rows); the
// chunks are those of any long row, whatever the pointers.
TEST(ChannelPlan, LongUnalignedRowsLoadPacksBetweenTheirEnds) {
  for (ChannelNorm kind : {ChannelNorm::kBatch, ChannelNorm::kInstance, ChannelNorm::kGroup}) {
    for (int64_t s : {1025, 1031, 2001, 3025, 22201}) {
      for (int elem : {2, 4}) {
        SCOPED_TRACE(testing::Message()
                     << "kind " << static_cast<int>(kind) << " S=" << s << " elem " << elem);
        const ChannelShape shape{kind,
                                 64,
                                 8,
                                 s,
                                 NK_NCHW,
                                 elem == 2 ? NK_BF16 : NK_F32,
                                 kind == ChannelNorm::kGroup ? 2 : 1};
        const ChannelPlan a = plan_channel_norm(shape, elem, true);
        const ChannelPlan u = plan_channel_norm(shape, elem, false);
        EXPECT_TRUE(a.unaligned_rows);
        EXPECT_FALSE(u.unaligned_rows) << "misaligned pointers: single elements";
        EXPECT_FALSE(a.short_rows);
        EXPECT_EQ(a.row_load_elems, 16 / elem);
        EXPECT_EQ(u.row_load_elems, 1);
        EXPECT_EQ(a.chunks, u.chunks);
        EXPECT_EQ(a.chunk_len, u.chunk_len);
        EXPECT_FALSE(a.warp_per_chunk) << "a block walks the chunk's pieces";
        EXPECT_GE(a.chunks * a.chunk_len, a.span());
        EXPECT_LT((a.chunks - 1) * a.chunk_len, a.span()) << "an empty chunk";
      }
    }
  }
  const ChannelShape even{ChannelNorm::kBatch, 4, 8, 2004, NK_NCHW, NK_BF16, 1};
  EXPECT_FALSE(plan_channel_norm(even, 2, true).unaligned_rows) << "half packs fit 2004";
  const ChannelShape nhwc{ChannelNorm::kBatch, 4, 8, 2001, NK_NHWC, NK_BF16, 1};
  EXPECT_FALSE(plan_channel_norm(nhwc, 2, true).unaligned_rows) << "channels layout";
}

// The elementwise passes of rows that are not whole 16-byte packs take packs of the flat tensor
// anyway when every pointer allows, whether a pack meets one row boundary (S > pack) or several
// (S < pack), and whether or not the tensor is whole packs (its tail is taken element by element).
// Never in the channels layout, never for rows of whole packs (those keep a pack per row); rows
// of exactly half a pack take half packs.
TEST(ChannelPlan, ElementwisePacksCrossRowsWhereRowsAreNotWholePacks) {
  struct Want {
    int64_t n, c, s;
    int elem;
    bool aligned, cross;
  };
  for (const Want w : {Want{4, 16, 49, 2, true, true},  Want{8, 3, 196, 2, true, true},
                       Want{2, 24, 333, 2, true, true}, Want{2, 4, 3025, 4, true, true},
                       Want{2, 3, 98, 4, true, true},   Want{4, 16, 49, 2, false, false},
                       Want{3, 1, 77, 2, true, true},   Want{2, 3, 5, 4, true, true},
                       Want{3, 5, 49, 2, true, true},   Want{3, 3, 196, 2, true, true},
                       Want{4, 16, 5, 2, true, true},   Want{4, 16, 64, 2, true, false},
                       Want{4, 16, 64, 4, true, false}, Want{2, 3, 98, 2, true, true},
                       Want{3, 3, 4, 2, true, false},   Want{3, 3, 2, 4, true, false},
                       Want{3, 1, 77, 2, false, false}, Want{3, 5, 3, 2, true, true},
                       Want{3, 5, 3, 4, true, true},    Want{5, 3, 2, 2, true, true},
                       Want{3, 6, 7, 2, true, true},    Want{3, 6, 6, 2, true, true},
                       Want{3, 5, 3, 2, false, false},  Want{5, 3, 2, 4, true, false}}) {
    SCOPED_TRACE(testing::Message() << "N=" << w.n << " C=" << w.c << " S=" << w.s
                                    << " elem=" << w.elem << " aligned=" << w.aligned);
    for (ChannelNorm kind : {ChannelNorm::kBatch, ChannelNorm::kInstance}) {
      const ChannelShape shape{kind, w.n, w.c, w.s, NK_NCHW, w.elem == 2 ? NK_BF16 : NK_F32, 1};
      const ChannelPlan p = plan_channel_norm(shape, w.elem, w.aligned);
      EXPECT_EQ(p.packs_cross_rows, w.cross);
      const int e = 16 / w.elem;
      if (p.packs_cross_rows) {
        EXPECT_NE(w.s % e, 0);
        EXPECT_NE(w.s, e / 2) << "rows of half a pack keep half packs";
      }
      if (w.aligned && w.s == e / 2) {
        EXPECT_EQ(p.row_load_elems, e / 2) << "rows of half packs";
      }
    }
  }
  const ChannelShape nhwc{ChannelNorm::kBatch, 4, 12, 49, NK_NHWC, NK_BF16, 1};
  EXPECT_FALSE(plan_channel_norm(nhwc, 2, true).packs_cross_rows);
}

// The elementwise passes of a plan with flat packs: per-sample coefficients take the flat packs;
// per-channel ones walk the whole tensor as one slot of periods (with a partial last one) where the
// period is at most a block of packs, else single elements. Any other plan is walked as it is.
TEST(ChannelPlan, ElementwisePlanOfFlatPacks) {
  const ChannelShape in{ChannelNorm::kInstance, 2, 3, 13, NK_NHWC, NK_BF16, 1};
  const ChannelPlan p = plan_channel_norm(in, 2, true);
  ASSERT_TRUE(p.flat_packs);
  const ChannelPlan per_sample = elementwise_plan(p, 2, true);
  EXPECT_TRUE(per_sample.flat_packs);
  EXPECT_EQ(per_sample.period, 0);
  const ChannelPlan per_channel = elementwise_plan(p, 2, false);
  EXPECT_FALSE(per_channel.flat_packs);
  EXPECT_EQ(per_channel.period, 24);
  EXPECT_FALSE(per_channel.period_split);
  EXPECT_EQ(per_channel.pack_elems, 8);
  EXPECT_EQ(per_channel.slots, 1);
  EXPECT_EQ(per_channel.period_tail(), 26 % 8) << "26 positions, 8 a period";
  const ChannelPlan f32 = elementwise_plan(plan_channel_norm(in, 4, true), 4, false);
  EXPECT_EQ(f32.period, 12);
  EXPECT_EQ(f32.period_tail(), 26 % 4);
  // A period of 1001 packs: per-channel coefficients in single elements.
  const ChannelShape wide{ChannelNorm::kBatch, 1, 1001, 3, NK_NHWC, NK_BF16, 1};
  const ChannelPlan w = plan_channel_norm(wide, 2, true);
  ASSERT_TRUE(w.flat_packs);
  const ChannelPlan w_channel = elementwise_plan(w, 2, false);
  EXPECT_FALSE(w_channel.flat_packs);
  EXPECT_EQ(w_channel.period, 0);
  EXPECT_EQ(w_channel.pack_elems, 1);
  // Plans without flat packs are their own elementwise plans.
  for (const ChannelShape& s :
       {ChannelShape{ChannelNorm::kInstance, 2, 3, 16, NK_NHWC, NK_BF16, 1},
        ChannelShape{ChannelNorm::kBatch, 3, 3, 7, NK_NHWC, NK_BF16, 1},
        ChannelShape{ChannelNorm::kInstance, 2, 3, 13, NK_NCHW, NK_BF16, 1}}) {
    for (bool per : {false, true}) {
      const ChannelPlan q = plan_channel_norm(s, 2, true);
      const ChannelPlan v = elementwise_plan(q, 2, per);
      EXPECT_FALSE(q.flat_packs);
      EXPECT_EQ(v.period, q.period);
      EXPECT_EQ(v.pack_elems, q.pack_elems);
      EXPECT_EQ(v.slots, q.slots);
    }
  }
  EXPECT_FALSE(plan_channel_norm(in, 2, false).flat_packs) << "misaligned pointers";
}

// NHWC (and S == 1) with C not a multiple of the 16-byte pack: with aligned pointers, rows of the
// period L = lcm(C, pack) elements, whose packs keep their channels from row to row, where every
// slot (N * S positions for batch norm, S otherwise) is whole periods, or where there is one slot
// (batch norm, or N = 1) and a period of at most a block: its last chunk then ends in a partial
// row of period_tail positions. A period of at most a block of packs is one block wide, a wider
// one is split (tiles of 32 lanes, a partial per occurrence of a channel, whatever the pointers).
// The chunks are whole periods whatever the pointers. Where no period walk applies (two slots that
// are not whole periods; a period wider than a block that is not whole), the elementwise passes
// take packs of the flat tensor (aligned pointers only).
TEST(ChannelPlan, ChannelsThatAreNotWholePacksReadPeriodsOfPacks) {
  struct Want {
    ChannelNorm kind;
    int64_t n, c, s;
    int elem;
    int64_t period;  // with aligned pointers; 0: single elements
    int lanes;
    bool split;
    int64_t tail = 0;  // period_tail
  };
  const Want list[] = {
      {ChannelNorm::kBatch, 8, 3, 196, 2, 24, 3, false},       // 8 positions a period
      {ChannelNorm::kBatch, 8, 3, 196, 4, 12, 3, false},       // fp32: 4 positions
      {ChannelNorm::kInstance, 8, 3, 196, 2, 0, 3, false},     // 196 positions: not whole periods
      {ChannelNorm::kInstance, 8, 3, 196, 4, 12, 3, false},    // 196 % 4 == 0
      {ChannelNorm::kGroup, 2, 20, 40, 2, 40, 5, false},       // gcd(20, 8) = 4: 2 positions
      {ChannelNorm::kBatch, 2, 20, 40, 4, 0, 5, false},        // 20 fp32 channels are whole packs
      {ChannelNorm::kBatch, 4096, 6, 1, 2, 24, 3, false},      // S == 1: positions are samples
      {ChannelNorm::kBatch, 3, 6, 1, 2, 24, 3, false, 3},      // 3 samples: a partial period
      {ChannelNorm::kBatch, 3, 3, 7, 2, 24, 3, false, 5},      // 21 positions: 2 periods and 5
      {ChannelNorm::kBatch, 3, 3, 7, 4, 12, 3, false, 1},      // fp32: 5 periods and 1
      {ChannelNorm::kInstance, 1, 3, 13, 2, 24, 3, false, 5},  // one sample: one slot
      {ChannelNorm::kGroup, 1, 9, 5, 2, 72, 9, false, 5},      // no whole period at all
      {ChannelNorm::kInstance, 2, 3, 13, 2, 0, 3, false},      // two slots: single elements
      {ChannelNorm::kBatch, 1, 1001, 3, 2, 0, 32, false},      // 1001 packs, 3 positions of 8
      {ChannelNorm::kInstance, 2, 255, 64, 2, 2040, 255, false},  // a block of packs, one row
      {ChannelNorm::kBatch, 2, 1020, 64, 2, 2040, 255, false},
      {ChannelNorm::kInstance, 2, 257, 64, 2, 2056, 32, true},  // 257 packs: split in 9 tiles
      {ChannelNorm::kBatch, 32, 1001, 49, 2, 8008, 32, true},   // 1568 positions, 8 a period
      {ChannelNorm::kGroup, 4, 1001, 16, 4, 4004, 32, true},    // fp32: 4 positions a period
      {ChannelNorm::kBatch, 2, 514, 64, 2, 2056, 32, true},     // gcd(514, 8) = 2: 4 positions
      {ChannelNorm::kInstance, 2, 257, 49, 2, 0, 29, false},    // 49 positions: single elements
                                                                // in 9 tiles of 29 lanes
  };
  for (const Want& w : list) {
    SCOPED_TRACE(testing::Message() << "kind " << static_cast<int>(w.kind) << " n=" << w.n
                                    << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const int64_t groups = w.kind == ChannelNorm::kGroup ? 7 : 1;
    const nk_dtype dtype = w.elem == 2 ? NK_BF16 : NK_F32;
    const ChannelShape shape{w.kind, w.n, w.c, w.s, NK_NHWC, dtype, groups};
    const ChannelPlan a = plan_channel_norm(shape, w.elem, true);
    const ChannelPlan u = plan_channel_norm(shape, w.elem, false);
    EXPECT_FALSE(a.rows_layout);
    EXPECT_EQ(a.period, w.period);
    EXPECT_EQ(a.period_split, w.split);
    EXPECT_EQ(a.period_tail(), w.tail);
    EXPECT_EQ(a.lanes, w.lanes);
    EXPECT_EQ(a.flat_packs, w.period == 0 && w.c % (16 / w.elem) != 0);
    EXPECT_FALSE(u.flat_packs) << "misaligned pointers: single elements";
    EXPECT_EQ(a.pack_elems, w.period > 0 || w.c % (16 / w.elem) == 0 ? 16 / w.elem : 1);
    EXPECT_EQ(u.pack_elems, 1) << "misaligned pointers: single elements";
    if (w.split) {  // the same rows and partials, single elements
      EXPECT_EQ(u.period, w.period);
      EXPECT_TRUE(u.period_split);
      EXPECT_EQ(u.lanes, 32);
      EXPECT_EQ(a.chunks % (w.period / w.c), 0);
    } else {
      EXPECT_EQ(u.period, 0);
      EXPECT_EQ(u.period_tail(), 0);
    }
    EXPECT_EQ(a.chunks, u.chunks);
    EXPECT_EQ(a.chunk_len, u.chunk_len);
    if (w.period > 0) {
      const int64_t per = w.period / w.c;
      EXPECT_EQ(a.chunk_len % per, 0);
      EXPECT_EQ(a.span() % per, w.tail);
      if (!w.split) {
        EXPECT_GE(a.chunks * a.chunk_len, a.span()) << "the partial row in no chunk";
        EXPECT_LT((a.chunks - 1) * a.chunk_len, a.span()) << "an empty chunk";
        EXPECT_EQ(a.walk_chunks, a.chunks);
      }
    }
  }
}

// Short unaligned rows (49, 77): a lane per row, chunks of whole rows; 16-byte loads between a
// row's ends when the pointers allow. The chunks do not depend on the pointers.
TEST(ChannelPlan, ShortUnalignedRowsTakeALaneEach) {
  for (ChannelNorm kind : {ChannelNorm::kBatch, ChannelNorm::kInstance, ChannelNorm::kGroup}) {
    for (int64_t s : {3, 49, 77, 333, 1023}) {
      for (int elem : {2, 4}) {
        SCOPED_TRACE(testing::Message()
                     << "kind " << static_cast<int>(kind) << " S=" << s << " elem " << elem);
        const ChannelShape shape{kind,
                                 300,
                                 8,
                                 s,
                                 NK_NCHW,
                                 elem == 2 ? NK_BF16 : NK_F32,
                                 kind == ChannelNorm::kGroup ? 2 : 1};
        const ChannelPlan a = plan_channel_norm(shape, elem, true);
        const ChannelPlan u = plan_channel_norm(shape, elem, false);
        if (kind == ChannelNorm::kBatch && s < 16 / elem) {  // columns (the test below)
          EXPECT_FALSE(a.short_rows);
          EXPECT_EQ(a.columns, s);
          continue;
        }
        EXPECT_TRUE(a.short_rows);
        EXPECT_EQ(a.row_load_elems, 16 / elem);
        EXPECT_EQ(u.row_load_elems, 1);
        EXPECT_EQ(a.chunks, u.chunks);
        EXPECT_EQ(a.chunk_len, u.chunk_len);
        EXPECT_EQ(a.chunk_len % s, 0);
        EXPECT_GE(a.chunks * (a.chunk_len / s), a.seg_count) << "rows left out";
        EXPECT_LT((a.chunks - 1) * (a.chunk_len / s), a.seg_count) << "an empty chunk";
        EXPECT_LE(a.chunks, chunk_cap(a.slots * a.c));
      }
    }
  }
}

// Batch norm's rows shorter than a pack reduce as the C * S columns of each sample in the channels
// layout: 16-byte packs where the pointers allow (periods of packs where C * S is not whole
// packs), the same chunks either way, and partials within the bound by C. Instance and group
// norm, rows of half a pack and S >= pack keep their rows walks.
TEST(ChannelPlan, BatchNormRowsShorterThanAPackReduceAsColumns) {
  const ChannelShape bn = shape_of(ChannelNorm::kBatch, 300, 64, 3, NK_NCHW, 2);
  const ChannelPlan a = plan_channel_norm(bn, 2, true), u = plan_channel_norm(bn, 2, false);
  ASSERT_EQ(a.columns, 3);
  const ChannelPlan wa = column_view(a), wu = column_view(u);
  EXPECT_EQ(wa.c, 192);
  EXPECT_EQ(wa.pack_elems, 8) << "192 columns: 24 whole packs";
  EXPECT_EQ(wa.lanes, 24);
  EXPECT_EQ(wa.period, 0);
  EXPECT_EQ(wu.pack_elems, 1) << "misaligned pointers: single elements of the same columns";
  EXPECT_EQ(wu.lanes, 32);
  EXPECT_EQ(a.chunks, u.chunks);
  EXPECT_EQ(wa.chunk_len, wu.chunk_len);
  EXPECT_EQ(wa.span(), 300) << "positions: the samples";
  // The elementwise passes keep the rows plan: packs across rows of 3.
  EXPECT_TRUE(a.rows_layout);
  EXPECT_TRUE(a.packs_cross_rows);
  EXPECT_EQ(a.s, 3);
  EXPECT_EQ(a.c, 64);

  // 3 x 5 columns: a period of 120 elements (15 packs, 8 samples); 3 samples are its partial row.
  const ChannelPlan t =
      plan_channel_norm(shape_of(ChannelNorm::kBatch, 3, 3, 5, NK_NCHW, 2), 2, true);
  ASSERT_EQ(t.columns, 5);
  const ChannelPlan wt = column_view(t);
  EXPECT_EQ(wt.period, 120);
  EXPECT_EQ(wt.lanes, 15);
  EXPECT_EQ(wt.period_tail(), 3);
  // fp32: S = 3 of 4-element packs; S = 2 is half a pack and keeps its half packs.
  EXPECT_EQ(plan_channel_norm(shape_of(ChannelNorm::kBatch, 8, 4, 3, NK_NCHW, 4), 4, true).columns,
            3);
  const ChannelPlan half =
      plan_channel_norm(shape_of(ChannelNorm::kBatch, 8, 4, 2, NK_NCHW, 4), 4, true);
  EXPECT_EQ(half.columns, 1);
  EXPECT_EQ(half.row_load_elems, 2);
  for (int64_t s : {2, 3, 5, 6, 7}) {
    for (ChannelNorm kind : {ChannelNorm::kInstance, ChannelNorm::kGroup}) {
      const ChannelPlan p = plan_channel_norm(shape_of(kind, 8, 4, s, NK_NCHW, 2), 2, true);
      EXPECT_EQ(p.columns, 1) << "s=" << s;
      EXPECT_TRUE(p.short_rows) << "s=" << s;
    }
    // Many channels and samples: the partials stay within max(C * kMaxChunks, kFewPartials).
    for (int64_t c : {1, 3, 2048, 100000}) {
      const ChannelPlan p =
          plan_channel_norm(shape_of(ChannelNorm::kBatch, 1 << 20, c, s, NK_NCHW, 2), 2, true);
      EXPECT_EQ(p.columns, s);
      EXPECT_LE(p.partials(), std::max(c * kMaxChunks, kFewPartials)) << "c=" << c << " s=" << s;
      // Tiles of 32 packs of columns times the chunks of samples: work for every SM.
      const int64_t tiles = ((c * s * 2 + 15) / 16 + 31) / 32;
      EXPECT_GE(tiles * p.walk_chunks, 128) << "c=" << c << " s=" << s;
    }
  }
  EXPECT_EQ(plan_channel_norm(shape_of(ChannelNorm::kBatch, 8, 4, 4, NK_NCHW, 2), 2, true).columns,
            1);
  EXPECT_EQ(plan_channel_norm(shape_of(ChannelNorm::kBatch, 8, 4, 9, NK_NCHW, 2), 2, true).columns,
            1);
  // 2^31 columns or more: the kernels index columns in 32 bits, so the rows walk stays.
  const int64_t wide = (int64_t{1} << 31) / 3 + 1;
  const ChannelPlan big =
      plan_channel_norm(shape_of(ChannelNorm::kBatch, 2, wide, 3, NK_NCHW, 2), 2, true);
  EXPECT_EQ(big.columns, 1);
  EXPECT_TRUE(big.short_rows);
  EXPECT_EQ(
      plan_channel_norm(shape_of(ChannelNorm::kBatch, 2, wide - 1, 3, NK_NCHW, 2), 2, true).columns,
      3);
}

// One read of x: instance and group norm training in the rows layout, where a statistic's row is
// 4 to 192 KiB, whole 16-byte packs or not, however few the rows (longer rows in parts, below);
// never batch norm or NHWC with several channels. Rows up to 96 KiB are staged whole, longer ones
// their first 96 KiB. The block size depends on the row length only.
TEST(ChannelPlan, ResidentRowsWhereARowFitsABlock) {
  using nk::cuda::plan_resident_rows;
  struct Want {
    ChannelNorm kind;
    int64_t n, c, s, groups;
    nk_layout layout;
    int elem;
    bool use;
    int threads;
    int parts = 1;
  };
  const Want list[] = {
      {ChannelNorm::kInstance, 2, 64, 2048, 1, NK_NCHW, 2, true, 64},      // 4 KiB: the smallest
      {ChannelNorm::kInstance, 2, 64, 2040, 1, NK_NCHW, 2, false, 0},      // 4080 bytes: too short
      {ChannelNorm::kInstance, 2, 64, 1024, 1, NK_NCHW, 4, true, 64},      // fp32 4 KiB
      {ChannelNorm::kInstance, 2, 64, 1026, 1, NK_NCHW, 4, true, 64},      // 4104: not whole packs
      {ChannelNorm::kInstance, 2, 64, 2051, 1, NK_NCHW, 2, true, 64},      // 4102: not whole packs
      {ChannelNorm::kInstance, 2, 64, 2047, 1, NK_NCHW, 2, false, 0},      // 4094: too short
      {ChannelNorm::kInstance, 8, 64, 75 * 75, 1, NK_NCHW, 2, true, 128},  // 11250 B, 703 packs
      {ChannelNorm::kInstance, 8, 64, 75 * 75, 1, NK_NCHW, 4, true, 256},  // 22500 B, 1406 packs
      {ChannelNorm::kInstance, 2, 63, 2051, 1, NK_NCHW, 2, true, 64},      // 126 rows
      {ChannelNorm::kInstance, 1, 128, 98305, 1, NK_NCHW, 2, true, 512, 2},   // above 192 KiB
      {ChannelNorm::kInstance, 8, 64, 128 * 128, 1, NK_NCHW, 2, true, 256},   // 32 KiB
      {ChannelNorm::kInstance, 1, 128, 49152, 1, NK_NCHW, 2, true, 512},      // 96 KiB: all staged
      {ChannelNorm::kInstance, 1, 128, 49160, 1, NK_NCHW, 2, true, 512},      // a pack of tail
      {ChannelNorm::kInstance, 8, 256, 256 * 256, 1, NK_NCHW, 2, true, 512},  // 128 KiB
      {ChannelNorm::kInstance, 1, 128, 98304, 1, NK_NCHW, 2, true, 512},     // 192 KiB: the largest
      {ChannelNorm::kInstance, 1, 128, 98312, 1, NK_NCHW, 2, true, 512, 2},  // above 192 KiB
      {ChannelNorm::kInstance, 1, 128, 49152, 1, NK_NCHW, 4, true, 512},     // fp32 192 KiB
      {ChannelNorm::kInstance, 1, 127, 4096, 1, NK_NCHW, 2, true, 64},       // 127 rows
      {ChannelNorm::kInstance, 1, 1, 4096, 1, NK_NCHW, 2, true, 64},         // one row
      {ChannelNorm::kInstance, 128, 1, 4096, 1, NK_NHWC, 2, true, 64},       // C = 1: rows in NHWC
      {ChannelNorm::kInstance, 2, 64, 4096, 1, NK_NHWC, 2, false, 0},        // channels layout
      {ChannelNorm::kBatch, 2, 200, 4096, 1, NK_NCHW, 2, false, 0},          // batch norm: split
      {ChannelNorm::kGroup, 8, 64, 512, 16, NK_NCHW, 2, true, 64},           // 4 channels a row
      {ChannelNorm::kGroup, 8, 64, 514, 16, NK_NCHW, 2, true, 64},           // S % 8 != 0
      {ChannelNorm::kGroup, 8, 48, 683, 16, NK_NCHW, 2, true, 64},           // 3 x 683: 4098 B
      {ChannelNorm::kGroup, 2, 320, 64 * 64, 32, NK_NCHW, 2, true, 512},     // 80 KiB, 64 rows
      {ChannelNorm::kGroup, 8, 640, 32 * 32, 32, NK_NCHW, 2, true, 512},     // 40 KiB, 256 rows
      {ChannelNorm::kGroup, 8, 640, 32 * 32, 32, NK_NCHW, 4, true, 512},     // 80 KiB
      {ChannelNorm::kGroup, 8, 1280, 32 * 32, 32, NK_NCHW, 4, true, 512},    // 160 KiB
      {ChannelNorm::kGroup, 8, 1280, 64 * 64, 32, NK_NCHW, 2, true, 512, 2},  // 320 KiB
      {ChannelNorm::kGroup, 0, 64, 4096, 16, NK_NCHW, 2, false, 0},           // an empty batch
  };
  for (const Want& w : list) {
    const ChannelShape shape{w.kind,  w.n, w.c, w.s, w.layout, w.elem == 2 ? NK_BF16 : NK_F32,
                             w.groups};
    SCOPED_TRACE(testing::Message() << "kind " << static_cast<int>(w.kind) << " n=" << w.n
                                    << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const nk::cuda::ResidentPlan r = plan_resident_rows(shape, w.elem);
    EXPECT_EQ(r.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(r.rows, shape.num_stats());
    EXPECT_EQ(r.len, shape.count_per_stat());
    EXPECT_EQ(r.threads, w.threads);
    EXPECT_EQ(r.parts, w.parts);
    if (w.parts == 1) {
      EXPECT_EQ(r.part_len, r.len);
    }
    const int64_t staged = r.part_len * w.elem <= 96 * 1024 ? r.part_len : 96 * 1024 / w.elem;
    EXPECT_EQ(r.head_len, staged);
    // The same row length in another batch: the same block, so the same reduction tree.
    ChannelShape twice = shape;
    twice.n *= 2;
    EXPECT_EQ(plan_resident_rows(twice, w.elem).threads, r.threads);
  }
}

// One read of x for instance and group norm rows of at most a pack: a thread holds E / gcd(L, E)
// rows, L / gcd(L, E) whole packs (twice that where L divides E); rows above a pack, batch norm,
// the channels layout and empty tensors do not take it, and no shape takes both one-read row
// paths.
TEST(ChannelPlan, RowsUpToAPackInRegisters) {
  using nk::cuda::plan_short_rows;
  struct Want {
    ChannelNorm kind;
    int64_t n, c, s, groups;
    nk_layout layout;
    int elem;
    bool use;
    int len, rows_per_thread;
  };
  const Want list[] = {
      {ChannelNorm::kInstance, 40, 16, 3, 1, NK_NCHW, 2, true, 3, 8},  // 3 packs a thread
      {ChannelNorm::kInstance, 40, 16, 2, 1, NK_NCHW, 2, true, 2, 8},  // two packs of 4 rows
      {ChannelNorm::kInstance, 40, 16, 4, 1, NK_NCHW, 2, true, 4, 4},  // half packs: two packs
      {ChannelNorm::kInstance, 40, 16, 6, 1, NK_NCHW, 2, true, 6, 4},  // 3 packs, 4 rows
      {ChannelNorm::kInstance, 8, 37, 7, 1, NK_NCHW, 2, true, 7, 8},   // 7 packs, 8 rows
      {ChannelNorm::kInstance, 8, 37, 8, 1, NK_NCHW, 2, true, 8, 2},   // a pack: two rows
      {ChannelNorm::kInstance, 8, 37, 9, 1, NK_NCHW, 2, false, 0, 0},  // above a pack
      {ChannelNorm::kInstance, 8, 37, 4, 1, NK_NCHW, 4, true, 4, 2},   // fp32 pack: two rows
      {ChannelNorm::kInstance, 8, 37, 3, 1, NK_NCHW, 4, true, 3, 4},   // fp32: 3 packs, 4 rows
      {ChannelNorm::kInstance, 8, 37, 2, 1, NK_NCHW, 4, true, 2, 4},   // fp32 half packs
      {ChannelNorm::kInstance, 8, 37, 5, 1, NK_NCHW, 4, false, 0, 0},  // fp32: above a pack
      {ChannelNorm::kGroup, 7, 6, 4, 3, NK_NCHW, 2, true, 8, 2},       // 2 channels of 4: a pack
      {ChannelNorm::kInstance, 8, 1, 5, 1, NK_NHWC, 2, true, 5, 8},    // C = 1: rows in NHWC
      {ChannelNorm::kInstance, 8, 16, 5, 1, NK_NHWC, 2, false, 0, 0},  // channels layout
      {ChannelNorm::kInstance, 8, 16, 1, 1, NK_NCHW, 2, false, 0, 0},  // S = 1: channels
      {ChannelNorm::kBatch, 8, 16, 3, 1, NK_NCHW, 2, false, 0, 0},     // batch norm: columns
      {ChannelNorm::kGroup, 7, 6, 2, 2, NK_NCHW, 2, true, 6, 4},       // 3 channels of 2
      {ChannelNorm::kGroup, 7, 6, 3, 3, NK_NCHW, 2, true, 6, 4},       // 2 channels of 3
      {ChannelNorm::kGroup, 7, 6, 3, 2, NK_NCHW, 2, false, 0, 0},      // 9 elements a row
      {ChannelNorm::kGroup, 7, 6, 3, 6, NK_NCHW, 4, true, 3, 4},       // fp32, a channel a row
      {ChannelNorm::kGroup, 0, 6, 3, 6, NK_NCHW, 2, false, 0, 0},      // an empty batch
  };
  for (const Want& w : list) {
    const ChannelShape shape{w.kind,  w.n, w.c, w.s, w.layout, w.elem == 2 ? NK_BF16 : NK_F32,
                             w.groups};
    SCOPED_TRACE(testing::Message() << "kind " << static_cast<int>(w.kind) << " n=" << w.n
                                    << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const nk::cuda::ShortRowsPlan r = plan_short_rows(shape, w.elem);
    EXPECT_EQ(r.use, w.use);
    EXPECT_FALSE(r.use && nk::cuda::plan_resident_rows(shape, w.elem).use);
    if (!w.use) continue;
    EXPECT_EQ(r.rows, shape.num_stats());
    EXPECT_EQ(r.len, w.len);
    EXPECT_EQ(r.rows_per_thread, w.rows_per_thread);
    // A thread's rows are whole packs: its first element is a multiple of the pack.
    EXPECT_EQ(r.rows_per_thread * r.len % (16 / w.elem), 0);
    const int64_t threads = (r.rows + r.rows_per_thread - 1) / r.rows_per_thread;
    EXPECT_EQ(r.blocks, (threads + 255) / 256);
  }
  // Rows up to INT32_MAX (the kernel's row index is 32-bit).
  const ChannelShape many{ChannelNorm::kInstance, 1 << 16, 1 << 15, 3, NK_NCHW, NK_BF16, 1};
  EXPECT_FALSE(plan_short_rows(many, 2).use);
  ChannelShape fewer = many;
  fewer.c -= 1;
  EXPECT_TRUE(plan_short_rows(fewer, 2).use);
}

// Rows above a pack and below 4 KiB, whole packs or not, take a group of G lanes a row (the fewest
// powers of two that leave at most 32 bytes a lane, 32 above 1 KiB, and meet at most 2-way bank
// conflicts), 256 / G rows a block (whole packs together) with their R * C/G coefficient pairs,
// channels walked by sub-groups of W = min(G, largest power of two <= S) lanes; never with the
// resident rows or the rows in registers, and rows of 4 KiB or more, or group norm with more than
// 256 channels a group, not at all. The conflict count itself against hand-counted walks.
TEST(ChannelPlan, RowsOfAPackTo4KiBInRowGroups) {
  using nk::cuda::plan_row_groups;
  using nk::cuda::row_groups_bank_conflicts;
  struct Want {
    ChannelNorm kind;
    int64_t n, c, s, groups;
    nk_layout layout;
    int elem;
    bool use;
    int len, lanes, channel_lanes, channel_batches, channel_steps;
  };
  const Want list[] = {
      {ChannelNorm::kInstance, 4, 16, 8, 1, NK_NCHW, 2, false, 0, 0, 0, 0, 0},  // a pack
      {ChannelNorm::kInstance, 4, 16, 4, 1, NK_NCHW, 4, false, 0, 0, 0, 0, 0},  // fp32 pack
      {ChannelNorm::kInstance, 4, 16, 9, 1, NK_NCHW, 2, true, 9, 1, 1, 1, 9},   // above
      {ChannelNorm::kInstance, 4, 16, 5, 1, NK_NCHW, 4, true, 5, 1, 1, 1, 5},   // fp32
      // fp32 rows of 8: one or two lanes a row would be 8-way and 4-way, four lanes 2-way
      {ChannelNorm::kInstance, 4, 16, 8, 1, NK_NCHW, 4, true, 8, 4, 4, 1, 2},
      {ChannelNorm::kInstance, 4, 16, 49, 1, NK_NCHW, 2, true, 49, 4, 4, 1, 13},      // 7 x 7
      {ChannelNorm::kInstance, 4, 16, 49, 1, NK_NCHW, 4, true, 49, 8, 8, 1, 7},       // 196 B
      {ChannelNorm::kInstance, 4, 16, 196, 1, NK_NCHW, 2, true, 196, 16, 16, 1, 13},  // 14 x 14
      {ChannelNorm::kInstance, 4, 16, 784, 1, NK_NCHW, 2, true, 784, 32, 32, 1, 25},  // 28 x 28
      {ChannelNorm::kInstance, 4, 16, 784, 1, NK_NCHW, 4, true, 784, 32, 32, 1, 25},  // 3136 B
      {ChannelNorm::kInstance, 4, 16, 64, 1, NK_NCHW, 2, true, 64, 16, 16, 1, 4},     // 8 x 8
      {ChannelNorm::kInstance, 4, 16, 1024, 1, NK_NCHW, 4, false, 0, 0, 0, 0, 0},     // 4 KiB
      {ChannelNorm::kInstance, 4, 16, 2047, 1, NK_NCHW, 2, true, 2047, 32, 32, 1, 64},
      {ChannelNorm::kInstance, 4, 16, 2048, 1, NK_NCHW, 2, false, 0, 0, 0, 0, 0},  // 4 KiB
      {ChannelNorm::kInstance, 4, 16, 3000, 1, NK_NCHW, 2, false, 0, 0, 0, 0, 0},  // not packs
      {ChannelNorm::kInstance, 4, 1, 49, 1, NK_NHWC, 2, true, 49, 4, 4, 1, 13},    // C = 1
      {ChannelNorm::kInstance, 4, 16, 49, 1, NK_NHWC, 2, false, 0, 0, 0, 0, 0},    // channels
      {ChannelNorm::kBatch, 4, 16, 49, 1, NK_NCHW, 2, false, 0, 0, 0, 0, 0},       // batch norm
      {ChannelNorm::kGroup, 2, 40, 64, 4, NK_NCHW, 2, true, 640, 32, 32, 10, 2},   // 8 x 8, 10
      {ChannelNorm::kGroup, 2, 40, 64, 4, NK_NCHW, 4, true, 640, 32, 32, 10, 2},
      {ChannelNorm::kGroup, 3, 24, 3, 2, NK_NCHW, 2, true, 36, 4, 2, 6, 2},   // 12 of 3
      {ChannelNorm::kGroup, 2, 32, 7, 4, NK_NCHW, 2, true, 56, 4, 4, 8, 2},   // 8 of 7
      {ChannelNorm::kGroup, 6, 64, 2, 2, NK_NCHW, 4, true, 64, 16, 2, 4, 1},  // 32 of 2
      // 256 channels of 2 a group: 32 lanes, 8 rows a block, 2048 coefficient pairs; 257 too many
      {ChannelNorm::kGroup, 2, 512, 2, 2, NK_NCHW, 2, true, 512, 32, 2, 16, 1},
      {ChannelNorm::kGroup, 2, 514, 2, 2, NK_NCHW, 2, false, 0, 0, 0, 0, 0},
      {ChannelNorm::kGroup, 2, 600, 3, 2, NK_NCHW, 4, false, 0, 0, 0, 0, 0},  // 300 of 3
      {ChannelNorm::kGroup, 0, 32, 7, 4, NK_NCHW, 2, false, 0, 0, 0, 0, 0},   // empty
  };
  for (const Want& w : list) {
    const ChannelShape shape{w.kind,  w.n, w.c, w.s, w.layout, w.elem == 2 ? NK_BF16 : NK_F32,
                             w.groups};
    SCOPED_TRACE(testing::Message() << "kind " << static_cast<int>(w.kind) << " n=" << w.n
                                    << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const nk::cuda::RowGroupsPlan r = plan_row_groups(shape, w.elem);
    EXPECT_EQ(r.use, w.use);
    EXPECT_EQ(plan_row_groups(shape, w.elem).lanes, r.lanes);  // the remembered count
    EXPECT_FALSE(r.use && nk::cuda::plan_resident_rows(shape, w.elem).use);
    EXPECT_FALSE(r.use && nk::cuda::plan_resident_rows(shape, w.elem, 2).use);
    EXPECT_FALSE(r.use && nk::cuda::plan_short_rows(shape, w.elem).use);
    if (!w.use) continue;
    EXPECT_EQ(r.rows, shape.num_stats());
    EXPECT_EQ(r.len, w.len);
    EXPECT_EQ(r.lanes, w.lanes);
    EXPECT_EQ(r.channel_lanes, w.channel_lanes);
    EXPECT_EQ(r.channel_batches, w.channel_batches);
    EXPECT_EQ(r.channel_steps, w.channel_steps);
    EXPECT_EQ(r.rows_per_block, 256 / w.lanes);
    EXPECT_TRUE(int64_t{r.len} * w.elem <= 32 * r.lanes || r.lanes == 32);  // 32 bytes a lane
    EXPECT_LE(row_groups_bank_conflicts(r.len, w.elem, r.lanes), 2);
    // A block's rows are whole packs: every block starts on a pack boundary.
    EXPECT_EQ(int64_t{r.rows_per_block} * r.len % (16 / w.elem), 0);
    EXPECT_EQ(r.blocks, (r.rows + r.rows_per_block - 1) / r.rows_per_block);
    // The walk covers every element of the row once: batches of G / W channels, W lanes a channel.
    const int64_t channels = w.kind == ChannelNorm::kInstance ? 1 : w.c / w.groups;
    const int64_t s = w.kind == ChannelNorm::kInstance ? w.len : w.s;
    EXPECT_GE(int64_t{r.channel_batches} * (r.lanes / r.channel_lanes), channels);
    EXPECT_GE(int64_t{r.channel_steps} * r.channel_lanes, s);
    // The block's coefficient pairs, within their bound.
    EXPECT_EQ(r.coefs, r.rows_per_block * channels);
    EXPECT_LE(r.coefs, 2048);
  }
  // Bank conflicts, counted by hand: rows of 64 bf16 elements (32 words) at one lane a row put all
  // 32 lanes' words on one bank (32), at 16 lanes a row the 2 rows' words share banks (2); rows of
  // 49 bf16 at one lane: the even rows' words fall on 16 distinct banks, the odd rows' on 16
  // others, 8 banks in both (2); fp32 rows of 49 words: lane r on bank 17 r mod 32, all distinct
  // (1); a bf16 pack a lane: rows 4 words apart, 8 banks of 4 words each (4).
  EXPECT_EQ(row_groups_bank_conflicts(64, 2, 1), 32);
  EXPECT_EQ(row_groups_bank_conflicts(64, 2, 16), 2);
  EXPECT_EQ(row_groups_bank_conflicts(49, 2, 1), 2);
  EXPECT_EQ(row_groups_bank_conflicts(49, 4, 1), 1);
  EXPECT_EQ(row_groups_bank_conflicts(8, 2, 1), 4);
  EXPECT_EQ(row_groups_bank_conflicts(2047, 2, 32), 1);
  // Rows up to INT32_MAX (the kernel's row index is 32-bit).
  const ChannelShape many{ChannelNorm::kInstance, 1 << 16, 1 << 15, 49, NK_NCHW, NK_BF16, 1};
  EXPECT_FALSE(plan_row_groups(many, 2).use);
  ChannelShape fewer = many;
  fewer.c -= 1;
  EXPECT_TRUE(plan_row_groups(fewer, 2).use);
}

// One read of x for group norm in NHWC: tiles of the fewest groups whose positions' runs are whole
// 16-byte packs, each pack meeting at most two groups, of 4 to 176 KiB (staged whole up to 88 KiB,
// the rest read per pass), however few the tiles; blocks a multiple of 32 and of the packs a
// position (P), about 8 packs a thread. `use` here: a block a tile (larger tiles are split:
// GroupTilesSplitIntoParts).
TEST(ChannelPlan, GroupTilesInNhwc) {
  using nk::cuda::plan_group_tiles;
  struct Want {
    ChannelNorm kind;
    int64_t n, c, s, groups;
    nk_layout layout;
    int elem;
    bool use;
    int k, pos_packs, threads;
  };
  const Want list[] = {
      {ChannelNorm::kGroup, 4, 256, 256, 32, NK_NHWC, 2, true, 1, 1, 64},    // C/G = 8: 4 KiB
      {ChannelNorm::kGroup, 4, 256, 255, 32, NK_NHWC, 2, false, 0, 0, 0},    // 4080 bytes
      {ChannelNorm::kGroup, 8, 128, 256, 32, NK_NHWC, 2, true, 2, 1, 64},    // C/G = 4
      {ChannelNorm::kGroup, 8, 64, 512, 32, NK_NHWC, 2, false, 0, 0, 0},     // a pack, 4 groups
      {ChannelNorm::kGroup, 16, 320, 52, 32, NK_NHWC, 2, true, 4, 5, 160},   // C/G = 10
      {ChannelNorm::kGroup, 8, 640, 1024, 32, NK_NHWC, 2, true, 2, 5, 480},  // 80 KiB
      {ChannelNorm::kGroup, 8, 1280, 256, 32, NK_NHWC, 2, true, 1, 5, 160},  // 20 KiB
      {ChannelNorm::kGroup, 8, 640, 2048, 32, NK_NHWC, 2, true, 2, 5, 480},  // 160 KiB: a tail
      {ChannelNorm::kGroup, 8, 640, 2304, 32, NK_NHWC, 2, false, 0, 0, 0},   // 180 KiB
      {ChannelNorm::kGroup, 8, 640, 4096, 32, NK_NHWC, 2, false, 0, 0, 0},   // 320 KiB
      {ChannelNorm::kGroup, 2, 320, 1024, 32, NK_NHWC, 2, true, 4, 5, 480},  // 16 tiles, 80 KiB
      {ChannelNorm::kGroup, 1, 64, 256, 8, NK_NHWC, 2, true, 1, 1, 64},      // 8 tiles
      {ChannelNorm::kGroup, 4, 128, 256, 32, NK_NHWC, 4, true, 1, 1, 64},    // fp32 C/G = 4
      {ChannelNorm::kGroup, 8, 320, 52, 32, NK_NHWC, 4, true, 2, 5, 160},    // fp32 C/G = 10
      {ChannelNorm::kGroup, 512, 20, 256, 2, NK_NHWC, 2, false, 0, 0, 0},    // G % k != 0
      {ChannelNorm::kGroup, 128, 2056, 1, 1, NK_NHWC, 2, false, 0, 0, 0},    // P = 257
      {ChannelNorm::kGroup, 128, 136, 16, 1, NK_NHWC, 2, false, 0, 0, 0},    // lcm(32, 17)
      {ChannelNorm::kGroup, 8, 640, 1024, 32, NK_NCHW, 2, false, 0, 0, 0},   // NCHW: rows
      {ChannelNorm::kGroup, 128, 1, 4096, 1, NK_NHWC, 2, false, 0, 0, 0},    // C = 1: rows
      {ChannelNorm::kInstance, 8, 256, 256, 1, NK_NHWC, 2, false, 0, 0, 0},  // instance norm
      {ChannelNorm::kBatch, 8, 256, 256, 1, NK_NHWC, 2, false, 0, 0, 0},     // batch norm
      {ChannelNorm::kGroup, 0, 256, 256, 32, NK_NHWC, 2, false, 0, 0, 0},    // an empty batch
  };
  for (const Want& w : list) {
    const ChannelShape shape{w.kind,  w.n, w.c, w.s, w.layout, w.elem == 2 ? NK_BF16 : NK_F32,
                             w.groups};
    SCOPED_TRACE(testing::Message() << "kind " << static_cast<int>(w.kind) << " n=" << w.n
                                    << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const nk::cuda::GroupTilePlan t = plan_group_tiles(shape, w.elem);
    EXPECT_EQ(t.use && t.parts == 1, w.use);
    if (!w.use) continue;
    EXPECT_EQ(t.part_positions, w.s);
    EXPECT_EQ(t.groups_per_tile, w.k);
    EXPECT_EQ(t.pos_packs, w.pos_packs);
    EXPECT_EQ(t.threads, w.threads);
    EXPECT_EQ(t.tiles, w.n * w.groups / w.k);
    EXPECT_EQ(t.len, w.s * w.k * (w.c / w.groups));
    EXPECT_EQ(t.len * w.elem % 16, 0);
    EXPECT_EQ(t.threads % 32, 0);
    EXPECT_EQ(t.threads % t.pos_packs, 0);
    const int64_t staged = t.len * w.elem <= 88 * 1024 ? t.len : 88 * 1024 / w.elem;
    EXPECT_EQ(t.head_len, staged);
    // Another batch: the same block, so the same reduction tree.
    ChannelShape twice = shape;
    twice.n *= 2;
    EXPECT_EQ(plan_group_tiles(twice, w.elem).threads, t.threads);
  }
}

// Group norm's forward tiles above 176 KiB are split into 2, 4, 8 or 16 parts of ceil(S / parts)
// positions (the fewest of at most 219 KiB, doubled to 8 while tiles * parts < 128 and the last
// part keeps a position); the plan's head 88 KiB at most, the block from the part's packs (in
// multiples of lcm(32, P), about 8 packs a thread, to 512). Above 16 parts of 219 KiB, or where
// the last part would have no position: no tiles.
TEST(ChannelPlan, GroupTilesSplitIntoParts) {
  using nk::cuda::plan_group_tiles;
  struct Want {
    int64_t n, c, s, groups;
    int elem;
    bool use;
    int parts;
    int64_t part_positions, head_len;
    int threads;
  };
  const Want list[] = {
      // C/G = 20 bf16: 2 groups a tile, 80 bytes a position; 180160 bytes: a block
      {8, 640, 2252, 32, 2, true, 1, 2252, 45056, 480},
      {8, 640, 2253, 32, 2, true, 2, 1127, 45056, 480},  // 180240 bytes: 2 parts
      // 64x64 positions (320 KiB tiles): 8 samples, 2 parts; 2 samples, to 128 blocks
      {8, 640, 4096, 32, 2, true, 2, 2048, 45056, 480},
      {8, 320, 4096, 32, 2, true, 2, 2048, 45056, 480},   // 64 tiles of 4 groups
      {2, 320, 4096, 32, 2, true, 8, 512, 20480, 320},    // 16 tiles: 8 parts of 40 KiB
      {2, 640, 4096, 32, 2, true, 4, 1024, 40960, 480},   // 32 tiles
      {2, 1280, 4096, 32, 2, true, 2, 2048, 45056, 480},  // 64 tiles of 1 group (C/G = 40)
      {8, 320, 4096, 32, 4, true, 2, 2048, 22528, 480},   // fp32: 2 groups a tile
      // 256 packs a position, 49 positions, 1 tile: 4 parts of 13 (8 would leave the last none)
      {1, 2048, 49, 1, 2, true, 4, 13, 26624, 512},
      {8, 640, 8 * 2803, 32, 2, true, 8, 2803, 45056, 480},       // 8 parts of 224240 bytes
      {8, 640, 8 * 2803 + 1, 32, 2, true, 16, 1402, 45056, 480},  // above: 16 parts
      {8, 640, 16 * 2803, 32, 2, true, 16, 2803, 45056, 480},
      {8, 640, 16 * 2803 + 1, 32, 2, false, 0, 0, 0, 0},  // above 16 parts of 219 KiB
      // 4 KiB a position, 1 tile: 54 positions a part; 8 parts, not doubled to 16 for the
      // blocks (a portable cluster), then 16 where 8 do not fit
      {1, 2048, 432, 1, 2, true, 8, 54, 45056, 512},
      {1, 2048, 433, 1, 2, true, 16, 28, 45056, 512},
  };
  for (const Want& w : list) {
    const ChannelShape shape{
        ChannelNorm::kGroup, w.n, w.c, w.s, NK_NHWC, w.elem == 2 ? NK_BF16 : NK_F32, w.groups};
    SCOPED_TRACE(testing::Message() << "n=" << w.n << " c=" << w.c << " s=" << w.s
                                    << " g=" << w.groups << " elem " << w.elem);
    const nk::cuda::GroupTilePlan t = plan_group_tiles(shape, w.elem);
    EXPECT_EQ(t.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(t.parts, w.parts);
    EXPECT_EQ(t.part_positions, w.part_positions);
    EXPECT_EQ(t.part_positions, (w.s + t.parts - 1) / t.parts);
    EXPECT_GT(w.s, (t.parts - 1) * t.part_positions);  // the last part is not empty
    EXPECT_LE(t.part_positions * t.pos_packs * 16, nk::cuda::kSplitPartMaxBytes);
    EXPECT_EQ(t.head_len, w.head_len);
    EXPECT_EQ(t.threads, w.threads);
    EXPECT_EQ(t.threads % t.pos_packs, 0);
    EXPECT_EQ(t.len, w.s * (w.c / w.groups) * t.groups_per_tile);
  }
  // The training backward stages x and dy: parts of at most 219 KiB over both tensors, and its
  // bounds below that (88 KiB a tile, 44 KiB with fewer than 128 tiles).
  const Want backward[] = {
      {8, 320, 4096, 32, 2, true, 4, 1024, 22528, 480},  // 64 tiles: 4 parts of 80 KiB each
      {8, 640, 4096, 32, 2, true, 4, 1024, 22528, 480},  // 128 tiles
      {2, 320, 1024, 32, 2, true, 8, 128, 5120, 160},    // 32x32, 16 tiles of 80 KiB: to 128
      {8, 320, 1024, 32, 2, true, 2, 512, 20480, 320},   // 64 tiles of 80 KiB: 2 parts
      {8, 640, 1024, 32, 2, true, 1, 1024, 22528, 480},  // 128 tiles of 80 KiB: a block each
      // 4 KiB a position, 27 a part: 225 positions need 16 parts of 15, the last with none
      {1, 2048, 225, 1, 2, false, 0, 0, 0, 0},
      {1, 2048, 226, 1, 2, true, 16, 15, 22528, 512},  // the last part 1 position
  };
  for (const Want& w : backward) {
    const ChannelShape shape{
        ChannelNorm::kGroup, w.n, w.c, w.s, NK_NHWC, w.elem == 2 ? NK_BF16 : NK_F32, w.groups};
    SCOPED_TRACE(testing::Message()
                 << "backward: n=" << w.n << " c=" << w.c << " s=" << w.s << " g=" << w.groups);
    const nk::cuda::GroupTilePlan t = plan_group_tiles(shape, w.elem, 2);
    EXPECT_EQ(t.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(t.parts, w.parts);
    EXPECT_EQ(t.part_positions, w.part_positions);
    EXPECT_GT(w.s, (t.parts - 1) * t.part_positions);
    EXPECT_LE(t.part_positions * t.pos_packs * 16 * 2, nk::cuda::kSplitPartMaxBytes);
    EXPECT_EQ(t.head_len, w.head_len);
    EXPECT_EQ(t.threads, w.threads);
  }
}

// Instance norm in NHWC reads x once in tiles of a pack of channels of a sample (E channels, S
// positions of 16 bytes: 4 KiB to twice 88 KiB, the first 88 KiB staged), where C is whole packs.
// `use` here: a block a tile (larger tiles are split: InstanceTilesSplitIntoParts).
TEST(ChannelPlan, InstanceTilesInNhwc) {
  using nk::cuda::plan_instance_tiles;
  struct Want {
    ChannelNorm kind;
    int64_t n, c, s;
    nk_layout layout;
    int elem;
    bool use;
    int threads;
    int64_t head_len;
  };
  const Want list[] = {
      {ChannelNorm::kInstance, 8, 128, 256, NK_NHWC, 2, true, 64, 2048},       // 4 KiB
      {ChannelNorm::kInstance, 8, 128, 255, NK_NHWC, 2, false, 0, 0},          // 4080 bytes
      {ChannelNorm::kInstance, 1, 16, 300, NK_NHWC, 2, true, 64, 2400},        // 38 -> 64
      {ChannelNorm::kInstance, 3, 24, 1000, NK_NHWC, 2, true, 128, 8000},      // 125 -> 128
      {ChannelNorm::kInstance, 8, 64, 75 * 75, NK_NHWC, 2, true, 512, 45000},  // 90000 bytes
      {ChannelNorm::kInstance, 8, 64, 5632, NK_NHWC, 2, true, 512, 45056},     // 88 KiB
      {ChannelNorm::kInstance, 8, 64, 5633, NK_NHWC, 2, true, 512, 45056},     // a tail
      {ChannelNorm::kInstance, 8, 64, 11264, NK_NHWC, 2, true, 512, 45056},    // 176 KiB
      {ChannelNorm::kInstance, 8, 64, 11265, NK_NHWC, 2, false, 0, 0},         // above
      {ChannelNorm::kInstance, 8, 64, 128 * 128, NK_NHWC, 2, false, 0, 0},     // 256 KiB
      {ChannelNorm::kInstance, 8, 64, 75 * 75, NK_NHWC, 4, true, 512, 22500},  // fp32: 4 channels
      {ChannelNorm::kInstance, 8, 12, 1000, NK_NHWC, 4, true, 128, 4000},      // fp32 C = 12
      {ChannelNorm::kInstance, 8, 12, 1000, NK_NHWC, 2, false, 0, 0},          // C % 8 != 0
      {ChannelNorm::kInstance, 8, 6, 1000, NK_NHWC, 4, false, 0, 0},           // C % 4 != 0
      {ChannelNorm::kInstance, 8, 64, 1000, NK_NCHW, 2, false, 0, 0},          // NCHW: rows
      {ChannelNorm::kInstance, 128, 1, 4096, NK_NHWC, 2, false, 0, 0},         // C = 1: rows
      {ChannelNorm::kGroup, 8, 64, 1000, NK_NHWC, 2, false, 0, 0},             // group norm
      {ChannelNorm::kBatch, 8, 64, 1000, NK_NHWC, 2, false, 0, 0},             // batch norm
      {ChannelNorm::kInstance, 0, 64, 1000, NK_NHWC, 2, false, 0, 0},          // an empty batch
  };
  for (const Want& w : list) {
    const ChannelShape shape{w.kind,
                             w.n,
                             w.c,
                             w.s,
                             w.layout,
                             w.elem == 2 ? NK_BF16 : NK_F32,
                             w.kind == ChannelNorm::kGroup ? 8 : 1};
    SCOPED_TRACE(testing::Message() << "kind " << static_cast<int>(w.kind) << " n=" << w.n
                                    << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const nk::cuda::GroupTilePlan t = plan_instance_tiles(shape, w.elem);
    EXPECT_EQ(t.use && t.parts == 1, w.use);
    if (!w.use) continue;
    const int e = 16 / w.elem;
    EXPECT_EQ(t.part_positions, w.s);
    EXPECT_EQ(t.groups_per_tile, e);
    EXPECT_EQ(t.pos_packs, 1);
    EXPECT_EQ(t.threads, w.threads);
    EXPECT_EQ(t.tiles, w.n * w.c / e);
    EXPECT_EQ(t.len, w.s * e);
    EXPECT_EQ(t.head_len, w.head_len);
    // Another batch: the same block, so the same reduction tree.
    ChannelShape twice = shape;
    twice.n *= 2;
    EXPECT_EQ(plan_instance_tiles(twice, w.elem).threads, t.threads);
  }
}

// A forward tile above twice 88 KiB is split into parts of ceil(S / parts) positions, a block
// each: the fewest powers of two up to 16 whose parts are at most 219 KiB (what an sm_90 block
// stages whole), doubled to 8 while tiles * parts < 128; the plan's head 88 KiB at most (what
// every GPU grants), the block from the part's positions. Above 16 parts of 219 KiB: no tiles.
TEST(ChannelPlan, InstanceTilesSplitIntoParts) {
  using nk::cuda::instance_tile_shape;
  using nk::cuda::plan_instance_tiles;
  struct Want {
    ChannelNorm kind;
    int64_t n, c, s;
    int elem;
    bool use;
    int parts;
    int64_t part_positions, head_len;
    int threads;
  };
  const Want list[] = {
      // instance norm 128x128 bf16: 256 KiB tiles, 2 parts of 128 KiB (a tail); 16 tiles: 8 parts
      {ChannelNorm::kInstance, 8, 64, 128 * 128, 2, true, 2, 8192, 45056, 512},
      {ChannelNorm::kInstance, 8, 16, 128 * 128, 2, true, 8, 2048, 16384, 256},
      {ChannelNorm::kInstance, 1, 8, 11265, 2, true, 8, 1409, 11272, 192},  // 1 tile: 8 parts
      // 256x256 bf16: 1 MiB tiles, 8 parts of 128 KiB (4 would be 256 KiB)
      {ChannelNorm::kInstance, 8, 256, 256 * 256, 2, true, 8, 8192, 45056, 512},
      {ChannelNorm::kInstance, 8, 256, 8 * 14016, 2, true, 8, 14016, 45056, 512},  // 8 x 219 KiB
      {ChannelNorm::kInstance, 8, 256, 8 * 14016 + 1, 2, true, 16, 7009, 45056, 512},  // above
      {ChannelNorm::kInstance, 8, 256, 16 * 14016, 2, true, 16, 14016, 45056, 512},
      {ChannelNorm::kInstance, 8, 256, 16 * 14016 + 1, 2, false, 0, 0, 0, 0},  // 16 x 219 KiB
      // 1 tile needing 2 parts: doubled to 8 for the blocks, not to 16
      {ChannelNorm::kInstance, 1, 8, 2 * 14016, 2, true, 8, 3504, 28032, 448},
      {ChannelNorm::kInstance, 8, 64, 11264, 2, true, 1, 11264, 45056, 512},     // 176 KiB: a block
      {ChannelNorm::kInstance, 8, 64, 11265, 2, true, 2, 5633, 45056, 512},      // above: 2 parts
      {ChannelNorm::kInstance, 8, 64, 128 * 128, 4, true, 2, 8192, 22528, 512},  // fp32
      // batch norm as one sample (N * S positions): N256 C512 7x7 bf16, 12544 positions, 64
      // tiles: 2 parts of 6272 positions (98 KiB, a tail), 128 blocks
      {ChannelNorm::kBatch, 256, 512, 7 * 7, 2, true, 2, 6272, 45056, 512},
      // 100352 positions (1.5 MiB) in 8 tiles: 8 parts of 196 KiB
      {ChannelNorm::kBatch, 32, 64, 56 * 56, 2, true, 8, 12544, 45056, 512},
      {ChannelNorm::kBatch, 32, 64, 112 * 112, 2, false, 0, 0, 0, 0},  // 401408 positions
      // 200704 positions (3.1 MiB) in 16 tiles: 16 parts of 196 KiB; fp32 in 32 tiles
      {ChannelNorm::kBatch, 256, 128, 28 * 28, 2, true, 16, 12544, 45056, 512},
      {ChannelNorm::kBatch, 256, 128, 28 * 28, 4, true, 16, 12544, 22528, 512},
      {ChannelNorm::kBatch, 256, 64, 56 * 56, 2, false, 0, 0, 0, 0},  // 802816 positions
      // 25088 positions in 16 tiles: 4 parts fit, 8 for 128 blocks
      {ChannelNorm::kBatch, 32, 128, 28 * 28, 2, true, 8, 3136, 25088, 416},
  };
  for (const Want& w : list) {
    const ChannelShape shape{w.kind, w.n, w.c, w.s, NK_NHWC, w.elem == 2 ? NK_BF16 : NK_F32, 1};
    SCOPED_TRACE(testing::Message() << "kind " << static_cast<int>(w.kind) << " n=" << w.n
                                    << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const ChannelShape one = instance_tile_shape(shape);
    const nk::cuda::GroupTilePlan t = plan_instance_tiles(one, w.elem);
    EXPECT_EQ(t.use, w.use);
    if (!w.use) continue;
    const int64_t e = 16 / w.elem;
    EXPECT_EQ(t.parts, w.parts);
    EXPECT_EQ(t.part_positions, w.part_positions);
    EXPECT_EQ(t.part_positions, (one.s + t.parts - 1) / t.parts);
    EXPECT_GT(one.s, (t.parts - 1) * t.part_positions);  // the last part is not empty
    EXPECT_LE(t.part_positions * 16, nk::cuda::kSplitPartMaxBytes);
    EXPECT_EQ(t.head_len, w.head_len);
    EXPECT_EQ(t.threads, w.threads);
    EXPECT_EQ(t.tiles, one.n * one.c / e);
    EXPECT_EQ(t.len, one.s * e);
  }
  // The training backward stages x and dy: parts of at most 219 KiB over both tensors.
  struct Backward {
    ChannelNorm kind;
    int64_t n, c, s;
    bool use;
    int parts;
    int64_t part_positions, head_len;
    int threads;
  };
  const Backward backward[] = {
      // 45072 bytes a tensor with 64 tiles (above 44 KiB): 2 parts, 128 blocks
      {ChannelNorm::kInstance, 8, 64, 2817, true, 2, 1409, 11272, 384},
      // 128 tiles of 90128 bytes (above 88 KiB): 2 parts, the head 44 KiB of each tensor
      {ChannelNorm::kInstance, 16, 64, 5633, true, 2, 2817, 22528, 512},
      {ChannelNorm::kBatch, 256, 512, 7 * 7, true, 2, 6272, 22528, 512},   // 12544 positions
      {ChannelNorm::kBatch, 32, 128, 28 * 28, true, 8, 3136, 22528, 512},  // 16 tiles
      // 100352 positions: 8 parts would be 196 KiB of each tensor, 16 are 98 KiB
      {ChannelNorm::kBatch, 32, 64, 56 * 56, true, 16, 6272, 22528, 512},
      {ChannelNorm::kBatch, 32, 256, 56 * 56, true, 16, 6272, 22528, 512},
      {ChannelNorm::kBatch, 32, 64, 112 * 112, false, 0, 0, 0, 0},       // 401408 positions
      {ChannelNorm::kInstance, 8, 64, 2816, true, 1, 2816, 22528, 512},  // a block a tile
  };
  for (const Backward& w : backward) {
    const ChannelShape shape{w.kind, w.n, w.c, w.s, NK_NHWC, NK_BF16, 1};
    SCOPED_TRACE(testing::Message() << "backward: kind " << static_cast<int>(w.kind) << " n=" << w.n
                                    << " c=" << w.c << " s=" << w.s);
    const ChannelShape one = instance_tile_shape(shape);
    const nk::cuda::GroupTilePlan t = plan_instance_tiles(one, 2, 2);
    EXPECT_EQ(t.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(t.parts, w.parts);
    EXPECT_EQ(t.part_positions, w.part_positions);
    EXPECT_LE(t.part_positions * 16 * 2, nk::cuda::kSplitPartMaxBytes);
    EXPECT_EQ(t.head_len, w.head_len);
    EXPECT_EQ(t.threads, w.threads);
  }
}

// The training backward stages x and dy in the same tiles: to 88 KiB, each tensor's first 44 KiB
// staged, or to 44 KiB (staged whole) with fewer than 128 tiles; twice the forward's threads (8
// packs of x and dy a thread), to 512.
TEST(ChannelPlan, InstanceTilesBackwardStageXAndDy) {
  using nk::cuda::plan_instance_tiles;
  struct Want {
    int64_t n, c, s;
    int elem;
    bool use;
    int64_t head_len;
    int threads;  // a warp per 128 positions (8 packs of x and dy a thread), in [64, 512]
  };
  const Want list[] = {
      {16, 64, 256, 2, true, 2048, 64},        // 4 KiB, 128 tiles (the forward: 32 -> 64)
      {16, 64, 1000, 2, true, 8000, 256},      // 250 -> 256 (the forward: 128)
      {8, 64, 2816, 2, true, 22528, 512},      // 44 KiB staged whole, 64 tiles: 704 -> 512
      {8, 64, 2817, 2, false, 0, 0},           // above 44 KiB with 64 tiles
      {16, 64, 2817, 2, true, 22528, 512},     // 128 tiles: the rest of x and dy reread
      {16, 64, 5632, 2, true, 22528, 512},     // 88 KiB
      {16, 64, 5633, 2, false, 0, 0},          // above
      {16, 64, 75 * 75, 2, true, 22528, 512},  // 90000 bytes (75x75), 128 tiles
      {16, 32, 2816, 4, true, 11264, 512},     // fp32: 4 channels a tile, 128 tiles
  };
  for (const Want& w : list) {
    const ChannelShape shape{ChannelNorm::kInstance,         w.n, w.c, w.s, NK_NHWC,
                             w.elem == 2 ? NK_BF16 : NK_F32, 1};
    SCOPED_TRACE(testing::Message() << "n=" << w.n << " c=" << w.c << " s=" << w.s);
    const nk::cuda::GroupTilePlan t = plan_instance_tiles(shape, w.elem, 2);
    EXPECT_EQ(t.use && t.parts == 1, w.use);  // a block a tile (above: split, as the forward's)
    if (!w.use) continue;
    EXPECT_EQ(t.head_len, w.head_len);
    EXPECT_EQ(t.threads, w.threads);
    EXPECT_EQ(t.tiles, plan_instance_tiles(shape, w.elem).tiles);
  }
}

// Batch norm in NHWC, or NCHW with S = 1, is planned as instance norm of one sample of N * S
// positions (instance_tile_shape): a tile of a pack of channels over N * S positions of 16 bytes,
// 4 KiB to twice 88 KiB; NCHW rows (S > 1) and the other norms keep their shape.
TEST(ChannelPlan, BatchTilesAsOneSample) {
  using nk::cuda::instance_tile_shape;
  using nk::cuda::plan_instance_tiles;
  struct Want {
    int64_t n, c, s;
    nk_layout layout;
    int elem;
    bool use;
    int threads;
  };
  const Want list[] = {
      {32, 512, 7 * 7, NK_NHWC, 2, true, 224},     // 1568 positions: 196 packs -> 224 threads
      {32, 1024, 14 * 14, NK_NHWC, 2, true, 512},  // 6272 positions: 100352 bytes, a tail
      {32, 256, 14 * 14, NK_NHWC, 4, true, 512},   // fp32: 4 channels a tile
      {4, 64, 64, NK_NHWC, 2, true, 64},           // 256 positions: 4 KiB
      {5, 64, 51, NK_NHWC, 2, false, 0},           // 255 positions
      {256, 64, 44, NK_NHWC, 2, true, 512},        // 11264 positions: 176 KiB
      {256, 512, 7 * 7, NK_NHWC, 2, false, 0},     // 12544 positions: above
      {1000, 24, 1, NK_NCHW, 2, true, 128},        // N x C input: the same memory as NHWC
      {1000, 24, 2, NK_NCHW, 2, false, 0},         // NCHW rows
      {32, 12, 49, NK_NHWC, 2, false, 0},          // C % 8 != 0
      {32, 12, 49, NK_NHWC, 4, true, 224},         // fp32: C % 4 == 0
      {4096, 1, 1, NK_NCHW, 2, false, 0},          // C = 1
      {0, 64, 64, NK_NHWC, 2, false, 0},           // an empty batch
  };
  for (const Want& w : list) {
    const ChannelShape shape{
        ChannelNorm::kBatch, w.n, w.c, w.s, w.layout, w.elem == 2 ? NK_BF16 : NK_F32, 1};
    SCOPED_TRACE(testing::Message() << "n=" << w.n << " c=" << w.c << " s=" << w.s << " layout "
                                    << w.layout << " elem " << w.elem);
    const ChannelShape one = instance_tile_shape(shape);
    const nk::cuda::GroupTilePlan t = plan_instance_tiles(one, w.elem);
    EXPECT_EQ(t.use && t.parts == 1, w.use);  // a block a tile (12544 positions: split)
    if (w.layout == NK_NHWC || w.s == 1) {
      EXPECT_EQ(one.kind, ChannelNorm::kInstance);
      EXPECT_EQ(one.n, 1);
      EXPECT_EQ(one.c, w.c);
      EXPECT_EQ(one.s, w.n * w.s);
      EXPECT_EQ(one.layout, NK_NHWC);
      EXPECT_EQ(one.dtype, shape.dtype);
      EXPECT_EQ(one.count_per_stat(), shape.count_per_stat());
      EXPECT_EQ(one.num_stats(), shape.num_stats());
    } else {
      EXPECT_EQ(one.kind, ChannelNorm::kBatch);  // as it was: not planned as tiles
    }
    if (!w.use) continue;
    const int e = 16 / w.elem;
    EXPECT_EQ(t.tiles, w.c / e);
    EXPECT_EQ(t.len, w.n * w.s * e);
    EXPECT_EQ(t.threads, w.threads);
  }
  // Instance and group norm keep their shape.
  for (ChannelNorm kind : {ChannelNorm::kInstance, ChannelNorm::kGroup}) {
    const int64_t groups = kind == ChannelNorm::kGroup ? 8 : 1;
    const ChannelShape shape{kind, 8, 64, 300, NK_NHWC, NK_BF16, groups};
    const ChannelShape same = instance_tile_shape(shape);
    EXPECT_EQ(same.kind, kind);
    EXPECT_EQ(same.n, 8);
    EXPECT_EQ(same.s, 300);
    EXPECT_EQ(same.groups, shape.groups);
  }
}

// A batch tile above the whole bounds (twice 96 KiB; 48 KiB with fewer than 128 channels; half
// of each for the backward's x and dy) is split by samples: parts of ceil(N / parts) runs, the
// fewest powers of two up to 16 of at most 219 KiB, doubled to 8 while C * parts < 128 and the last
// part keeps a run; the head a part's packs, to 96 KiB (48 with few channels); the block from the
// part's packs. Above 16 parts of 219 KiB: no tiles.
TEST(ChannelPlan, BatchTilesSplitBySamples) {
  using nk::cuda::plan_batch_tiles;
  struct Want {
    int64_t n, c, s;
    int elem;
    bool use;
    int parts, part_runs, seg_packs;
    int64_t head_packs;
    int threads;
  };
  const Want list[] = {
      // bn_resnet50: N256 C64 56x56, 1.5 MiB a channel: 8 parts of 32 runs (196 KiB); fp32 16
      {256, 64, 56 * 56, 2, true, 8, 32, 392, 3072, 512},
      {256, 64, 56 * 56, 4, true, 16, 16, 784, 3072, 512},
      {256, 64, 112 * 112, 2, false, 0, 0, 0, 0, 0},  // 16 parts of 392 KiB
      {256, 128, 28 * 28, 2, true, 2, 128, 98, 6144, 512},
      {32, 64, 56 * 56, 2, true, 2, 16, 392, 3072, 512},    // 64 channels: 2 parts, 128 blocks
      {32, 256, 56 * 56, 2, true, 2, 16, 392, 6144, 512},   // 196 KiB: above twice 96
      {32, 64, 112 * 112, 2, true, 4, 8, 1568, 3072, 512},  // 4 parts of 196 KiB
      // 4 channels of 8 runs of 750 packs: 2 parts fit, doubled to 8 of one run for the blocks
      {8, 4, 6000, 2, true, 8, 1, 750, 750, 96},
      // 5 runs: 2 parts of 3 and 2; 4 would leave the last none
      {5, 4, 6000, 2, true, 2, 3, 750, 2250, 288},
      {16, 1, 60000, 2, true, 16, 1, 7500, 3072, 512},  // 16 parts of one run (117 KiB)
      {8, 1, 120000, 2, false, 0, 0, 0, 0, 0},          // a run of 234 KiB: no part holds it
  };
  for (const Want& w : list) {
    const ChannelShape shape{
        ChannelNorm::kBatch, w.n, w.c, w.s, NK_NCHW, w.elem == 2 ? NK_BF16 : NK_F32, 1};
    SCOPED_TRACE(testing::Message()
                 << "n=" << w.n << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const nk::cuda::BatchTilePlan t = plan_batch_tiles(shape, w.elem);
    EXPECT_EQ(t.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(t.parts, w.parts);
    EXPECT_EQ(t.part_runs, w.part_runs);
    EXPECT_EQ(t.seg_packs, w.seg_packs);
    EXPECT_EQ(t.head_packs, w.head_packs);
    EXPECT_EQ(t.threads, w.threads);
    EXPECT_GT(w.n, (t.parts - 1) * t.part_runs);  // the last part keeps a run
    EXPECT_LE(int64_t{t.part_runs} * t.seg_packs * 16, nk::cuda::kSplitPartMaxBytes);
    EXPECT_LE(int64_t{t.part_runs} * t.seg_packs, nk::cuda::kBatchTileMaxPacks);
  }
  // The training backward stages x and dy: parts of at most 219 KiB over both (109.5 KiB of each),
  // the head to 48 KiB of each (24 with few channels).
  const Want backward[] = {
      {256, 64, 56 * 56, 2, true, 16, 16, 392, 1536, 512},  // 16 parts of 98 KiB of each
      {32, 64, 56 * 56, 2, true, 2, 16, 392, 1536, 512},
      {256, 128, 28 * 28, 2, true, 4, 64, 98, 3072, 512},
      {32, 64, 112 * 112, 2, true, 8, 4, 1568, 1536, 512},
      {256, 64, 56 * 56, 4, false, 0, 0, 0, 0, 0},  // fp32: 16 parts of 196 KiB of each
      {16, 1, 60000, 2, false, 0, 0, 0, 0, 0},      // a run of 117 KiB of each
  };
  for (const Want& w : backward) {
    const ChannelShape shape{
        ChannelNorm::kBatch, w.n, w.c, w.s, NK_NCHW, w.elem == 2 ? NK_BF16 : NK_F32, 1};
    SCOPED_TRACE(testing::Message()
                 << "backward n=" << w.n << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const nk::cuda::BatchTilePlan t = plan_batch_tiles(shape, w.elem, 2);
    EXPECT_EQ(t.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(t.parts, w.parts);
    EXPECT_EQ(t.part_runs, w.part_runs);
    EXPECT_EQ(t.seg_packs, w.seg_packs);
    EXPECT_EQ(t.head_packs, w.head_packs);
    EXPECT_EQ(t.threads, w.threads);
    EXPECT_GT(w.n, (t.parts - 1) * t.part_runs);
    EXPECT_LE(int64_t{t.part_runs} * t.seg_packs * 16 * 2, nk::cuda::kSplitPartMaxBytes);
  }
}

// Batch norm in NCHW with S > 1: a block per channel stages its N runs of S elements as Q packs
// each (Q = S / E where E | S, else (S + 2E - 2) / E): tiles of N * Q packs up to twice 96 KiB,
// the first 96 KiB staged (the head); with fewer than 128 channels up to 48 KiB, staged whole;
// larger tiles in parts (BatchTilesSplitBySamples). The backward: half of those bounds for x and
// for dy each. About 8 packs a thread in whole warps, 64 to 512. Every run of every channel lies
// within its Q packs from the pack that holds its first element.
TEST(ChannelPlan, BatchTilesInNchw) {
  using nk::cuda::plan_batch_tiles;
  struct Want {
    int64_t n, c, s;
    nk_layout layout;
    int elem;
    bool use;
    int seg_packs;
    int64_t head_packs;
    int threads;
    int parts = 1;  // runs a part: N, or ceil(N / parts)
  };
  const Want list[] = {
      {32, 512, 7 * 7, NK_NCHW, 2, true, 7, 224, 64},           // 224 packs, 3.5 KiB
      {256, 512, 7 * 7, NK_NCHW, 2, true, 7, 1792, 224},        // 1792 packs, 28 KiB
      {256, 512, 7 * 7, NK_NCHW, 4, true, 13, 3328, 416},       // fp32: 3328 packs, 52 KiB
      {32, 128, 28 * 28, NK_NCHW, 2, true, 98, 3136, 416},      // whole packs: 49 KiB
      {32, 128, 28 * 28, NK_NCHW, 4, true, 196, 6144, 512},     // 98 KiB: a tail of 2 KiB
      {32, 256, 14 * 14, NK_NCHW, 2, true, 26, 832, 128},       // 832 packs
      {32, 256, 14 * 14, NK_NCHW, 4, true, 49, 1568, 224},      // fp32 whole packs: 1568 packs
      {256, 256, 14 * 14, NK_NCHW, 2, true, 26, 6144, 512},     // 104 KiB: a tail of 8 KiB
      {256, 256, 14 * 14, NK_NCHW, 4, true, 49, 6144, 512, 2},  // 196 KiB: 2 parts (below)
      {96, 64, 7 * 7, NK_NCHW, 2, true, 7, 672, 96},            // 64 channels, 10.5 KiB
      {32, 64, 28 * 28, NK_NCHW, 2, true, 98, 1568, 224, 2},    // 64 channels, 49 KiB: 2 parts
      {6144, 128, 8, NK_NCHW, 2, true, 1, 6144, 512},           // 96 KiB, staged whole
      {12288, 128, 8, NK_NCHW, 2, true, 1, 6144, 512},          // 192 KiB: half staged
      {12289, 128, 8, NK_NCHW, 2, true, 1, 6144, 512, 2},       // a pack above: 2 parts
      {4, 8, 3, NK_NCHW, 2, true, 2, 8, 64},                    // runs of 3: two packs
      {32, 512, 7 * 7, NK_NHWC, 2, false, 0, 0, 0},             // NHWC: instance tiles
      {1000, 24, 1, NK_NCHW, 2, false, 0, 0, 0},                // S = 1: instance tiles
      {0, 64, 49, NK_NCHW, 2, false, 0, 0, 0},                  // an empty batch
  };
  for (const Want& w : list) {
    const ChannelShape shape{
        ChannelNorm::kBatch, w.n, w.c, w.s, w.layout, w.elem == 2 ? NK_BF16 : NK_F32, 1};
    SCOPED_TRACE(testing::Message() << "n=" << w.n << " c=" << w.c << " s=" << w.s << " layout "
                                    << w.layout << " elem " << w.elem);
    const nk::cuda::BatchTilePlan t = plan_batch_tiles(shape, w.elem);
    EXPECT_EQ(t.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(t.seg_packs, w.seg_packs);
    EXPECT_EQ(t.packs, w.n * w.seg_packs);
    EXPECT_EQ(t.head_packs, w.head_packs);
    EXPECT_EQ(t.threads, w.threads);
    EXPECT_EQ(t.parts, w.parts);
    EXPECT_EQ(t.part_runs, (w.n + w.parts - 1) / w.parts);
  }
  // The training backward stages x and dy: half the bounds for each, twice the forward's threads
  // (8 packs of x and dy a thread), to 512.
  const Want backward[] = {
      {256, 512, 7 * 7, NK_NCHW, 2, true, 7, 1792, 448},    // 28 KiB of each
      {256, 512, 7 * 7, NK_NCHW, 4, true, 13, 3072, 512},   // 52 KiB of each: 48 staged
      {32, 128, 28 * 28, NK_NCHW, 2, true, 98, 3072, 512},  // 49 KiB of each: 48 staged
      {3072, 128, 8, NK_NCHW, 2, true, 1, 3072, 512},       // 48 KiB of each, staged whole
      {6144, 128, 8, NK_NCHW, 2, true, 1, 3072, 512},       // 96 KiB of each: half staged
      {6145, 128, 8, NK_NCHW, 2, true, 1, 3072, 512, 2},    // a pack above: 2 parts
      {96, 64, 7 * 7, NK_NCHW, 2, true, 7, 672, 192},       // 64 channels, 10.5 KiB of each
      {230, 64, 7 * 7, NK_NCHW, 2, true, 7, 805, 224, 2},   // 64 channels, 25.2 KiB: 2 parts
  };
  for (const Want& w : backward) {
    const ChannelShape shape{
        ChannelNorm::kBatch, w.n, w.c, w.s, w.layout, w.elem == 2 ? NK_BF16 : NK_F32, 1};
    SCOPED_TRACE(testing::Message()
                 << "backward n=" << w.n << " c=" << w.c << " s=" << w.s << " elem " << w.elem);
    const nk::cuda::BatchTilePlan t = plan_batch_tiles(shape, w.elem, 2);
    EXPECT_EQ(t.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(t.seg_packs, w.seg_packs);
    EXPECT_EQ(t.head_packs, w.head_packs);
    EXPECT_EQ(t.threads, w.threads);
    EXPECT_EQ(t.parts, w.parts);
    EXPECT_EQ(t.part_runs, (w.n + w.parts - 1) / w.parts);
  }
  // Instance and group norm in NCHW: their rows' paths.
  for (ChannelNorm kind : {ChannelNorm::kInstance, ChannelNorm::kGroup}) {
    const ChannelShape shape{kind, 32, 64, 49, NK_NCHW, NK_BF16, 1};
    EXPECT_FALSE(plan_batch_tiles(shape, 2).use);
  }
  // The kernel's run of a slot, a multiply-high by the plan's magic, is the quotient for every
  // slot of every tile or part the plan allows.
  const int max_packs = static_cast<int>(nk::cuda::kBatchTileMaxPacks);
  int64_t wrong = 0;
  for (int q = 1; q <= max_packs; ++q) {
    // Two runs: a block the channel to 6144 packs a run, then a block a run (2 parts).
    const ChannelShape shape{ChannelNorm::kBatch, 2, 128, 8 * q, NK_NCHW, NK_BF16, 1};
    const nk::cuda::BatchTilePlan t = plan_batch_tiles(shape, 2);  // Q = q: whole packs
    ASSERT_TRUE(t.use && t.seg_packs == q) << "Q=" << q;
    for (int slot = 0; slot < max_packs; ++slot) {
      wrong += nk::cuda::batch_tile_run(slot, t.slot_magic) != slot / q;
    }
  }
  EXPECT_EQ(wrong, 0);
  // Every run within its packs, for C * S whole packs or not (each run then starts at another
  // offset of its pack).
  for (int elem : {2, 4}) {
    for (int64_t s : {2, 3, 7, 49, 196, 197, 255}) {
      for (int64_t c : {1, 3, 8, 130}) {
        const ChannelShape shape{ChannelNorm::kBatch,          5, c, s, NK_NCHW,
                                 elem == 2 ? NK_BF16 : NK_F32, 1};
        const nk::cuda::BatchTilePlan t = plan_batch_tiles(shape, elem);
        ASSERT_TRUE(t.use) << "s=" << s << " c=" << c;
        const int64_t e = 16 / elem;
        for (int64_t ch = 0; ch < c; ++ch) {
          for (int64_t n = 0; n < 5; ++n) {
            const int64_t start = (n * c + ch) * s;
            EXPECT_LE(start % e + s, t.seg_packs * e) << "s=" << s << " c=" << c;
          }
        }
      }
    }
  }
}

// The training backward stages x and dy: rows of 4 to 96 KiB, whole up to 48 KiB (both fit the
// forward's 96), else their first 48 KiB of each; the forward's block for the same row length.
// Longer rows in parts (of 219 / 2 KiB at most), each part's first 48 KiB of each staged.
TEST(ChannelPlan, ResidentBackwardRowsHoldXAndDy) {
  using nk::cuda::plan_resident_rows;
  struct Want {
    int64_t s;
    int elem;
    bool use;
    int parts = 1;
  };
  const Want list[] = {
      {2048, 2, true},      // 4 KiB a tensor: the smallest
      {24576, 2, true},     // 48 KiB a tensor: the largest staged whole
      {24584, 2, true},     // a pack of tail
      {24579, 2, true},     // not whole packs, with a tail
      {49152, 2, true},     // 96 KiB: the largest
      {49153, 2, true, 2},  // above 96 KiB, not whole packs: 2 parts
      {49160, 2, true, 2},  // above 96 KiB
      {12288, 4, true},     // fp32 48 KiB
      {24576, 4, true},     // fp32 96 KiB
      {24580, 4, true, 2},
  };
  for (const Want& w : list) {
    const ChannelShape shape{ChannelNorm::kInstance,         1, 128, w.s, NK_NCHW,
                             w.elem == 2 ? NK_BF16 : NK_F32, 1};
    SCOPED_TRACE(testing::Message() << "s=" << w.s << " elem " << w.elem);
    const nk::cuda::ResidentPlan r = plan_resident_rows(shape, w.elem, 2);
    const nk::cuda::ResidentPlan forward = plan_resident_rows(shape, w.elem);
    EXPECT_TRUE(forward.use);
    EXPECT_EQ(r.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(r.parts, w.parts);
    if (w.parts == 1) {
      EXPECT_EQ(r.threads, forward.threads);
    }
    const int64_t staged = r.part_len * w.elem <= 48 * 1024 ? r.part_len : 48 * 1024 / w.elem;
    EXPECT_EQ(r.head_len, staged);
  }
}

// Fewer than 128 rows (or tiles): the forward takes rows of any length it stages, the backward only
// those it stages whole (48 KiB a tensor, 44 KiB in tiles), where the tail's re-reads by few blocks
// were slower than the split passes on the H200 (larger group tiles are split into parts instead).
TEST(ChannelPlan, FewRowsTakeTheBackwardOnlyWhenStagedWhole) {
  using nk::cuda::plan_group_tiles;
  using nk::cuda::plan_resident_rows;
  // Group norm N2 G32 C320 NCHW bf16: 64 rows of 10 * S elements.
  const ChannelShape rows80{ChannelNorm::kGroup, 2, 320, 64 * 64, NK_NCHW, NK_BF16, 32};
  EXPECT_TRUE(plan_resident_rows(rows80, 2).use);        // 80 KiB: head and tail
  EXPECT_EQ(plan_resident_rows(rows80, 2, 2).parts, 2);  // 2 parts of 40 KiB, staged whole
  const ChannelShape rows40{ChannelNorm::kGroup, 2, 320, 2048, NK_NCHW, NK_BF16, 32};
  EXPECT_TRUE(plan_resident_rows(rows40, 2, 2).use);  // 40 KiB: whole
  const ChannelShape rows48{ChannelNorm::kInstance, 1, 127, 24576, NK_NCHW, NK_BF16, 1};
  EXPECT_TRUE(plan_resident_rows(rows48, 2, 2).use);  // 48 KiB: the largest whole
  const ChannelShape rows48p{ChannelNorm::kInstance, 1, 127, 24584, NK_NCHW, NK_BF16, 1};
  EXPECT_EQ(plan_resident_rows(rows48p, 2, 2).parts, 2);  // a pack more: 2 parts
  ChannelShape more = rows48p;
  more.c = 128;  // 128 rows: the tail is taken
  EXPECT_EQ(plan_resident_rows(more, 2, 2).parts, 1);
  // NHWC N2 C320 G32 bf16 at 32 x 32: 16 tiles of 4 groups, 80 KiB; at 16 x 16, 20 KiB.
  const ChannelShape tiles80{ChannelNorm::kGroup, 2, 320, 1024, NK_NHWC, NK_BF16, 32};
  EXPECT_TRUE(plan_group_tiles(tiles80, 2).use);
  const nk::cuda::GroupTilePlan split80 = plan_group_tiles(tiles80, 2, 2);
  EXPECT_EQ(split80.parts, 8);  // not a block a tile: 8 parts of 10 KiB, staged whole, 128 blocks
  EXPECT_EQ(split80.head_len, split80.part_positions * 40);
  const ChannelShape tiles20{ChannelNorm::kGroup, 2, 320, 256, NK_NHWC, NK_BF16, 32};
  EXPECT_TRUE(plan_group_tiles(tiles20, 2, 2).use);
  ChannelShape many = tiles80;
  many.n = 16;  // 128 tiles
  EXPECT_TRUE(plan_group_tiles(many, 2, 2).use);
}

// Rows above a block (192 KiB forward, 96 KiB of each of x and dy backward; 48 KiB with fewer
// than 128 rows) in parts of whole packs (instance norm) or whole channels (group norm): the
// fewest powers of two of at most 219 KiB over the staged tensors, doubled while rows * parts <
// 128 to 8, the last part keeping a unit; above 16 parts, or where a part cannot keep a unit,
// none. Hand-derived: units u of b bytes, parts K of ceil(u / K) units.
TEST(ChannelPlan, ResidentRowsSplitIntoParts) {
  using nk::cuda::plan_resident_rows;
  struct Want {
    ChannelNorm kind;
    int64_t n, c, s, groups;
    int elem, staged;
    bool use;
    int parts;
    int64_t part_len, head_len;
    int threads;
  };
  const Want list[] = {
      // 12289 packs: 2 parts of 6145 (98320 bytes, above the 96 KiB head), the last 49145 elements.
      {ChannelNorm::kInstance, 1, 128, 98305, 1, 2, 1, true, 2, 49160, 49152, 512},
      {ChannelNorm::kInstance, 1, 128, 98312, 1, 2, 1, true, 2, 49160, 49152, 512},
      // 40 channels of 8 KiB: 2 parts of 20 (160 KiB); 64 rows: 2 parts make 128 blocks.
      {ChannelNorm::kGroup, 8, 1280, 4096, 32, 2, 1, true, 2, 81920, 49152, 512},
      {ChannelNorm::kGroup, 2, 1280, 4096, 32, 2, 1, true, 2, 81920, 49152, 512},
      // Backward, 64 rows of 10 channels of 8 KiB: 2 parts of 5 (40 KiB of each, staged whole).
      {ChannelNorm::kGroup, 2, 320, 4096, 32, 2, 2, true, 2, 20480, 20480, 512},
      // 32 rows: doubled to 4 parts of 3 channels (the last 1), 128 blocks.
      {ChannelNorm::kGroup, 1, 320, 4096, 32, 2, 2, true, 4, 12288, 12288, 256},
      // Backward, 127 rows of 3073 packs (49168 bytes, above 48 KiB): 2 parts of 1537 packs.
      {ChannelNorm::kInstance, 1, 127, 24584, 1, 2, 2, true, 2, 12296, 12296, 256},
      // 4 rows of 16384 packs: 2 parts fit, doubled to 8 (32 blocks) for the blocks' sake.
      {ChannelNorm::kInstance, 1, 4, 131072, 1, 2, 1, true, 8, 16384, 16384, 256},
      // fp32, 200000 packs: 16 parts of 12500 (200000 bytes), the most.
      {ChannelNorm::kInstance, 1, 128, 800000, 1, 4, 1, true, 16, 50000, 24576, 512},
      // 224258 packs: 16 parts of 14017 packs, 16 bytes above 219 KiB: none.
      {ChannelNorm::kInstance, 1, 128, 897032, 1, 4, 1, false, 0, 0, 0, 0},
      // A channel of 240000 bytes exceeds any part: none.
      {ChannelNorm::kGroup, 1, 2, 120000, 1, 2, 1, false, 0, 0, 0, 0},
      // 3 channels of 120000 bytes: 2 of them exceed a part, 4 parts would leave the last none.
      {ChannelNorm::kGroup, 1, 3, 60000, 1, 2, 1, false, 0, 0, 0, 0},
  };
  for (const Want& w : list) {
    const ChannelShape shape{w.kind,  w.n, w.c, w.s, NK_NCHW, w.elem == 2 ? NK_BF16 : NK_F32,
                             w.groups};
    SCOPED_TRACE(testing::Message()
                 << "kind " << static_cast<int>(w.kind) << " n=" << w.n << " c=" << w.c
                 << " s=" << w.s << " elem " << w.elem << " staged " << w.staged);
    const nk::cuda::ResidentPlan r = plan_resident_rows(shape, w.elem, w.staged);
    EXPECT_EQ(r.use, w.use);
    if (!w.use) continue;
    EXPECT_EQ(r.rows, shape.num_stats());
    EXPECT_EQ(r.len, shape.count_per_stat());
    EXPECT_EQ(r.parts, w.parts);
    EXPECT_EQ(r.part_len, w.part_len);
    EXPECT_EQ(r.head_len, w.head_len);
    EXPECT_EQ(r.threads, w.threads);
    EXPECT_LT((w.parts - 1) * w.part_len, r.len);  // the last part keeps elements
    EXPECT_GE(w.parts * w.part_len, r.len);
  }
}

// The training backward's tiles stage x and dy: tiles of 4 to 88 KiB a tensor, whole up to 44 KiB
// (both fit the forward's 88), else their first 44 KiB of each; the forward's block for the same
// tile. Group norm with C/G = 10: tiles of 80 bytes a position (4 groups in bf16, 2 in fp32).
TEST(ChannelPlan, GroupTileBackwardHoldsXAndDy) {
  using nk::cuda::plan_group_tiles;
  struct Want {
    int64_t s;
    int elem;
    bool use;
  };
  const Want list[] = {
      {52, 2, true},    // 4160 bytes a tensor: the smallest whole packs above 4 KiB
      {51, 2, false},   // 4080 bytes
      {563, 2, true},   // 45040 bytes: the largest staged whole (44 KiB = 45056)
      {564, 2, true},   // 45120 bytes: a tail
      {1126, 2, true},  // 90080 bytes: the largest (88 KiB = 90112)
      {1127, 2, false}, {564, 4, true},  // fp32: 2 groups a tile, 80 bytes a position too; a tail
      {1127, 4, false},
  };
  for (const Want& w : list) {
    const ChannelShape shape{
        ChannelNorm::kGroup, 16, 320, w.s, NK_NHWC, w.elem == 2 ? NK_BF16 : NK_F32, 32};
    SCOPED_TRACE(testing::Message() << "s=" << w.s << " elem " << w.elem);
    const nk::cuda::GroupTilePlan t = plan_group_tiles(shape, w.elem, 2);
    const nk::cuda::GroupTilePlan forward = plan_group_tiles(shape, w.elem);
    EXPECT_EQ(forward.use, w.s * 80 >= 4096);  // the forward's tiles go to 176 KiB
    EXPECT_EQ(t.use && t.parts == 1, w.use);   // larger ones in parts
    EXPECT_EQ(t.use, w.s * 80 >= 4096);
    if (!w.use) continue;
    EXPECT_EQ(t.threads, forward.threads);
    EXPECT_EQ(t.tiles, forward.tiles);
    EXPECT_EQ(t.len, forward.len);
    const int64_t bytes = t.len * w.elem;
    const int64_t staged = bytes <= 44 * 1024 ? t.len : 44 * 1024 / w.elem;
    EXPECT_EQ(t.head_len, staged);
  }
}

// Batch norm's finalize: the fewest threads a channel, a power of two from 32 to 256, that load at
// most `ahead` partials each.
TEST(ChannelPlan, FinalizeChannelLanesLoadEachPartialBatchOnce) {
  using nk::cuda::finalize_channel_lanes;
  EXPECT_EQ(finalize_channel_lanes(1, 8), 32);
  EXPECT_EQ(finalize_channel_lanes(256, 8), 32);  // 8 a lane
  EXPECT_EQ(finalize_channel_lanes(257, 8), 64);
  EXPECT_EQ(finalize_channel_lanes(1024, 8), 128);
  EXPECT_EQ(finalize_channel_lanes(2048, 8), 256);  // C = 64 in NHWC
  EXPECT_EQ(finalize_channel_lanes(2049, 8), 256);  // the block: 9 a lane
  EXPECT_EQ(finalize_channel_lanes(131072, 8), 256);
  for (int64_t partials = 1; partials < 5000; partials += 37) {
    const int lanes = finalize_channel_lanes(partials, 8);
    EXPECT_EQ(lanes & (lanes - 1), 0);
    EXPECT_TRUE(lanes == 256 || partials <= int64_t{lanes} * 8) << partials;
    EXPECT_TRUE(lanes == 32 || partials > int64_t{lanes} / 2 * 8) << partials;
  }
}

// The finalize's member walk: for random chunk counts, first lanes and steps, the cursor's pairs
// are j / chunks and j % chunks of every member j = first, first + step, ... below the count, and
// members_from counts exactly those; and likewise along 50 members with operands past 32 bits.
TEST(ChannelPlan, MemberCursorStepsThroughTheMembersInOrder) {
  std::mt19937_64 rng(nkt::fresh_seed());
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t chunks = 1 + static_cast<int64_t>(rng() % (trial % 2 ? 70 : 2100));
    const int64_t members = static_cast<int64_t>(rng() % (chunks * 40 + 1));
    const int64_t step = trial % 3 == 0 ? 32 : 1 + static_cast<int64_t>(rng() % 64);
    const int64_t first = static_cast<int64_t>(rng() % (step + 3));
    nk::cuda::MemberCursor cursor(first, chunks, step);
    int64_t visited = 0;
    for (int64_t j = first; j < members; j += step, ++visited) {
      ASSERT_EQ(cursor.m, j / chunks) << "chunks " << chunks << " step " << step << " j " << j;
      ASSERT_EQ(cursor.chunk, j % chunks) << "chunks " << chunks << " step " << step << " j " << j;
      cursor.advance();
    }
    EXPECT_EQ(nk::cuda::members_from(first, members, step), visited)
        << "first " << first << " members " << members << " step " << step;
  }
  // Operands past 32 bits take the 64-bit divisions.
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t chunks = (trial % 2 ? int64_t{1} << 33 : 70) + static_cast<int64_t>(rng() % 999);
    const int64_t first = (int64_t{1} << 34) + static_cast<int64_t>(rng() % (int64_t{1} << 40));
    const int64_t step = trial % 3 ? 32 : (int64_t{1} << 32) + static_cast<int64_t>(rng() % 77);
    nk::cuda::MemberCursor cursor(first, chunks, step);
    for (int64_t k = 0, j = first; k < 50; ++k, j += step) {
      ASSERT_EQ(cursor.m, j / chunks) << "chunks " << chunks << " step " << step << " j " << j;
      ASSERT_EQ(cursor.chunk, j % chunks) << "chunks " << chunks << " step " << step << " j " << j;
      cursor.advance();
    }
  }
}

}  // namespace

// Instance norm's finalize: the fewest lanes a sample (up to a warp) that load at most 8 partials
// each, and threads a channel for all samples' lanes (32 to 256): worked by hand.
TEST(ChannelPlan, FinalizeInstanceShapeOneWait) {
  using nk::cuda::finalize_instance_shape;
  auto expect = [](int64_t samples, int64_t chunks, int lanes, int threads) {
    const nk::cuda::InstanceFinalizeShape s = finalize_instance_shape(samples, chunks, 8);
    EXPECT_EQ(s.sample_lanes, lanes) << samples << " samples of " << chunks << " chunks";
    EXPECT_EQ(s.threads, threads) << samples << " samples of " << chunks << " chunks";
  };
  expect(8, 128, 16, 128);   // 8 a lane, 8 x 16 = 128 lanes: one round
  expect(8, 129, 32, 256);   // 129 > 16 x 8: 5 a lane at 32 lanes
  expect(1, 1024, 32, 32);   // a warp at most a sample: 32 a lane, one sample
  expect(256, 1, 1, 256);    // a lane a sample, the block's 256 at most: one round
  expect(300, 1, 1, 256);    // two rounds, the second of 44 samples
  expect(64, 16, 2, 128);    // 8 a lane over 2 lanes, 128 lanes
  expect(3, 8, 1, 32);       // 8 partials fit one lane; the 32 threads at least
  expect(2, 40000, 32, 64);  // the warp's cap: 1250 a lane
  // Every shape: w a power of two, the fewest with w * 8 >= chunks below the cap; threads a power
  // of two covering N * w below the block, at least w.
  for (int64_t samples : {1, 2, 7, 33, 100, 1000}) {
    for (int64_t chunks : {1, 8, 9, 64, 255, 256, 257, 5000}) {
      const nk::cuda::InstanceFinalizeShape s = finalize_instance_shape(samples, chunks, 8);
      EXPECT_EQ(s.sample_lanes & (s.sample_lanes - 1), 0);
      EXPECT_EQ(s.threads & (s.threads - 1), 0);
      EXPECT_TRUE(s.sample_lanes == 32 || int64_t{s.sample_lanes} * 8 >= chunks);
      EXPECT_TRUE(s.sample_lanes == 1 || int64_t{s.sample_lanes / 2} * 8 < chunks);
      EXPECT_GE(s.threads, 32);
      EXPECT_LE(s.threads, 256);
      EXPECT_TRUE(s.threads == 256 || samples * s.sample_lanes <= s.threads);
      EXPECT_TRUE(s.threads == 32 || samples * s.sample_lanes > s.threads / 2);
    }
  }
}
