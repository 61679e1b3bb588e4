// Shapes on which instance and group norm training read x (and dy) once with a group of lanes a row
// (kernels/channel_norm_plan.hpp, plan_row_groups: a statistic's row above a 16-byte pack, below
// 4 KiB), for the GPU tests of the plain and fused forwards and training backwards: rows of 12, of
// S = 49, 196 and 784 (not whole packs in 16 bits but 784), group norm's 8 x 8 positions with
// C/G = 10, channels shorter than a sub-group, several blocks, and a last block with fewer rows.
// Between the two widths the lanes a row (G) take every value from 1 to 32: bf16 / fp32 G = 1 / 2
// (S = 12), 4 / 8 (49), 16 / 32 (196), 32 / 32 (784 and group norm's 10 x 64), 4 / 8 (12 x 3 and
// 8 x 7), and 16 with sub-groups of 2 lanes (32 x 2, whose 12 rows stage 384 coefficient pairs,
// more than a block's threads). Tests assert takes_row_groups, so a change of the plan cannot move
// them off the path unnoticed.
#pragma once

#include <normkit/normkit.h>

#include <cstdint>
#include <vector>

#include "channel_norm_plan.hpp"
#include "test_support.hpp"

namespace nkt {

inline bool takes_row_groups(const ChannelCase& k, nk_dtype dtype) {
  const nk::ChannelNorm kind =
      k.family == Family::kInstance ? nk::ChannelNorm::kInstance : nk::ChannelNorm::kGroup;
  const nk::ChannelShape shape{kind, k.n, k.c, k.s, k.layout, dtype, k.groups};
  return k.family != Family::kBatch &&
         nk::cuda::plan_row_groups(shape, static_cast<int>(elem_size(dtype))).use;
}

// NCHW shapes of family f (instance or group norm) that take the path in every dtype.
inline std::vector<ChannelCase> row_group_shapes(Family f) {
  if (f == Family::kInstance) {
    // Blocks (bf16 / fp32): 65 rows of 12 (one block of 256 / 128), 33 of 49 (one of 64 / two of
    // 32), 82 of 196 (six of 16 / eleven of 8), 19 of 784 (three of 8): every last block holds
    // fewer rows than it could.
    return {{f, 5, 13, 12, NK_NCHW, 1},
            {f, 3, 11, 49, NK_NCHW, 1},
            {f, 2, 41, 196, NK_NCHW, 1},
            {f, 1, 19, 784, NK_NCHW, 1}};
  }
  // Rows of C/G * S: 10 channels of 8 x 8, 12 channels of 3, 8 channels of 7, 32 channels of 2
  // (16 lanes a row, 8 channels at a time).
  return {{f, 2, 40, 64, NK_NCHW, 4},
          {f, 3, 24, 3, NK_NCHW, 2},
          {f, 2, 32, 7, NK_NCHW, 4},
          {f, 6, 64, 2, NK_NCHW, 2}};
}

}  // namespace nkt
