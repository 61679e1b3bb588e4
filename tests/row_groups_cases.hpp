// Shapes on which instance and group norm training read x (and dy) once with a group of lanes a row
// (kernels/channel_norm_plan.hpp, plan_row_groups: a statistic's row from a 16-byte pack to 4 KiB),
// for the GPU tests of the plain and fused forwards and training backwards: rows of one pack, of
// S = 49, 196 and 784 (not whole packs in 16 bits but 784), group norm's 8 x 8 positions with
// C/G = 10, channels shorter than a sub-group (S = 3: two channels of 3 in a group of 4 lanes),
// several blocks, and a last block with fewer rows. Tests assert takes_row_groups, so a change of
// the plan cannot move them off the path unnoticed.
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
    // Rows of S = 8 (a pack in 16 bits; G = 1), 49 (G = 4), 196 (G = 16, 40 rows: three blocks of
    // 16) and 784 (G = 32, 19 rows: three blocks of 8).
    return {{f, 5, 13, 8, NK_NCHW, 1},
            {f, 3, 11, 49, NK_NCHW, 1},
            {f, 2, 20, 196, NK_NCHW, 1},
            {f, 1, 19, 784, NK_NCHW, 1}};
  }
  // Rows of C/G * S: 10 channels of 8 x 8 (G = 32, 10 channels of 2 steps), 12 channels of 3
  // (G = 4 lanes, two channels at a time), 8 channels of 7 (a channel a group of 4).
  return {{f, 2, 40, 64, NK_NCHW, 4}, {f, 3, 24, 3, NK_NCHW, 2}, {f, 2, 32, 7, NK_NCHW, 4}};
}

}  // namespace nkt
