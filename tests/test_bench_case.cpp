// The benchmark's byte counts (bench/bench_case.hpp): minimal_bytes, one read of every input, and
// section5_bytes, DESIGN.md section 5's count with the inputs of batch, instance and group norm
// read twice where they fit neither the L2 nor, a statistic's share, one block's shared memory.
// The expected values are worked out by hand from the shapes.
#include <gtest/gtest.h>

#include "bench_case.hpp"

namespace {

using nkb::Case;
using nkb::Op;
using nkb::Phase;

// An H200's: a 60 MiB L2, 227 KiB of shared memory a block.
constexpr nkb::OnChip kH200{62914560, 232448};

Case channel_case(Op op, Phase phase, int64_t n, int64_t c, int64_t hw, nk_dtype dtype,
                  int64_t groups = 0) {
  Case k;
  k.set = "test";
  k.op = op;
  k.phase = phase;
  k.dtype = dtype;
  k.n = n;
  k.c = c;
  k.h = hw;
  k.w = hw;
  k.groups = groups;
  k.layout = NK_NHWC;
  return k;
}

TEST(BenchCaseBytes, BatchNormLargerThanTheL2CountsXTwice) {
  // x: 256 * 64 * 56 * 56 * 2 bytes = 102760448 > 62914560; a channel's share 1605632 > 232448.
  const Case k = channel_case(Op::batch_norm, Phase::forward_training, 256, 64, 56, NK_BF16);
  EXPECT_EQ(k.minimal_bytes(), 2 * 102760448LL);
  EXPECT_EQ(k.section5_bytes(kH200), 3 * 102760448LL);
}

TEST(BenchCaseBytes, BatchNormWithinTheL2CountsXOnce) {
  // x: 32 * 64 * 56 * 56 * 2 bytes = 12845056.
  const Case k = channel_case(Op::batch_norm, Phase::forward_training, 32, 64, 56, NK_BF16);
  EXPECT_EQ(k.section5_bytes(kH200), 2 * 12845056LL);
  // Exactly the L2's size still fits; a byte less does not, where a channel's share (32 * 56 *
  // 56 * 2 = 200704 bytes) does not fit a block either.
  const nkb::OnChip exact{12845056, 200703}, short_by_one{12845055, 200703},
      channel_fits{12845055, 200704};
  EXPECT_EQ(k.section5_bytes(exact), 2 * 12845056LL);
  EXPECT_EQ(k.section5_bytes(short_by_one), 3 * 12845056LL);
  EXPECT_EQ(k.section5_bytes(channel_fits), 2 * 12845056LL);
}

TEST(BenchCaseBytes, InstanceNormRowsThatFitABlockCountXOnce) {
  // x: 8 * 128 * 256 * 256 * 2 bytes = 134217728 > the L2, but a row is 131072 bytes.
  const Case k = channel_case(Op::instance_norm, Phase::forward_training, 8, 128, 256, NK_BF16);
  EXPECT_EQ(k.section5_bytes(kH200), 2 * 134217728LL);
  // fp32 rows of 256 * 256 * 4 = 262144 bytes exceed a block: x (268435456 bytes) twice.
  const Case wide = channel_case(Op::instance_norm, Phase::forward_training, 8, 128, 256, NK_F32);
  EXPECT_EQ(wide.section5_bytes(kH200), 3 * 268435456LL);
}

TEST(BenchCaseBytes, GroupNormBackwardCountsXAndDyTwice) {
  // x: 8 * 1280 * 64 * 64 * 2 bytes = 83886080; x and dy 167772160 > the L2; a group's share of
  // both: 40 channels * 4096 positions * 2 bytes * 2 tensors = 655360 > 232448.
  const Case k = channel_case(Op::group_norm, Phase::backward, 8, 1280, 64, NK_BF16, 32);
  EXPECT_EQ(k.minimal_bytes(), 3 * 83886080LL);
  EXPECT_EQ(k.section5_bytes(kH200), 5 * 83886080LL);
  // x and dy of N2 C320 64x64: 2 * 2 * 320 * 4096 * 2 = 10485760 bytes fit the L2.
  const Case small = channel_case(Op::group_norm, Phase::backward, 2, 320, 64, NK_BF16, 32);
  EXPECT_EQ(small.section5_bytes(kH200), 3 * 5242880LL);
}

TEST(BenchCaseBytes, InferenceAndRowNormsCountOneRead) {
  const Case infer = channel_case(Op::batch_norm, Phase::forward_inference, 256, 64, 112, NK_BF16);
  EXPECT_EQ(infer.section5_bytes(kH200), infer.minimal_bytes());
  EXPECT_EQ(infer.minimal_bytes(), 2 * 411041792LL);
  Case rows;
  rows.set = "test";
  rows.op = Op::layer_norm;
  rows.dtype = NK_BF16;
  rows.rows = 1 << 20;
  rows.cols = 4096;
  rows.phase = Phase::backward;
  EXPECT_EQ(rows.section5_bytes(kH200), 3LL * (1 << 20) * 4096 * 2);
}

TEST(BenchCaseBytes, FusedResidualReadsZOnceAndXTwice) {
  // x = z = 102760448 bytes: minimal x + z + y; section 5 adds x's second read only.
  Case k = channel_case(Op::batch_norm, Phase::forward_training, 256, 64, 56, NK_BF16);
  k.channel_fusion.residual = true;
  EXPECT_EQ(k.minimal_bytes(), 3 * 102760448LL);
  EXPECT_EQ(k.section5_bytes(kH200), 4 * 102760448LL);
}

}  // namespace
