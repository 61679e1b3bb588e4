// Shapes on which instance and group norm training read x once with rows held in registers
// (kernels/channel_norm_plan.hpp, plan_short_rows: a statistic's row of at most a 16-byte pack),
// for the GPU tests of the plain and fused forwards and training backwards: every row length a
// dtype has (2 to 8 in 16 bits, 2 to 4 in fp32), group norm with one, two and three channels a
// row, more than one block, and a last thread with fewer rows. Tests assert takes_short_rows, so a
// change of the plan cannot move them off the path unnoticed.
#pragma once

#include <normkit/normkit.h>

#include <cstdint>
#include <vector>

#include "channel_norm_plan.hpp"
#include "test_support.hpp"

namespace nkt {

inline bool takes_short_rows(const ChannelCase& k, nk_dtype dtype) {
  const nk::ChannelNorm kind =
      k.family == Family::kInstance ? nk::ChannelNorm::kInstance : nk::ChannelNorm::kGroup;
  const nk::ChannelShape shape{kind, k.n, k.c, k.s, k.layout, dtype, k.groups};
  return k.family != Family::kBatch &&
         nk::cuda::plan_short_rows(shape, static_cast<int>(elem_size(dtype))).use;
}

// NCHW shapes of family f (instance or group norm) that take the path in dtype.
inline std::vector<ChannelCase> short_row_shapes(Family f, nk_dtype dtype) {
  const bool fp32 = elem_size(dtype) == 4;
  if (f == Family::kInstance) {
    // Rows of S; 5 x 13 rows (not whole threads' rows), 70 x 40 x 3 (2800 rows: several blocks).
    if (fp32) {
      return {{f, 5, 13, 2, NK_NCHW, 1},
              {f, 5, 13, 3, NK_NCHW, 1},
              {f, 5, 13, 4, NK_NCHW, 1},
              {f, 70, 40, 3, NK_NCHW, 1}};
    }
    std::vector<ChannelCase> out;
    for (int64_t s = 2; s <= 8; ++s) out.push_back({f, 5, 13, s, NK_NCHW, 1});
    out.push_back({f, 70, 40, 3, NK_NCHW, 1});
    return out;
  }
  // Rows of C/G * S: a channel a row (S = 3; 2 in fp32), two of 3 and three of 2 (16 bits), two
  // of 4 (a pack in 16 bits) and of 2 (a pack in fp32).
  if (fp32) {
    return {{f, 7, 9, 3, NK_NCHW, 9},
            {f, 7, 6, 2, NK_NCHW, 6},
            {f, 7, 6, 2, NK_NCHW, 3},
            {f, 70, 40, 3, NK_NCHW, 40}};
  }
  return {{f, 7, 9, 3, NK_NCHW, 9},
          {f, 7, 6, 3, NK_NCHW, 3},
          {f, 7, 6, 2, NK_NCHW, 2},
          {f, 7, 6, 4, NK_NCHW, 3},
          {f, 70, 40, 3, NK_NCHW, 20}};
}

}  // namespace nkt
