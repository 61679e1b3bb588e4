// Traversal of an N x C x S tensor in memory order, shared by the CPU reference ops and the
// statistics accumulator.
#pragma once

#include <cstdint>

#include "../op_args.hpp"

namespace nk::cpu {

// Visits every element in memory order as visit(index, channel, stat).
template <class Visit>
inline void for_each_element(const ChannelShape& s, Visit&& visit) {
  const int64_t channels_per_group = s.c / s.groups;
  auto stat_of = [&](int64_t n, int64_t c) {
    switch (s.kind) {
      case ChannelNorm::kBatch:
        return c;
      case ChannelNorm::kInstance:
        return n * s.c + c;
      case ChannelNorm::kGroup:
        break;
    }
    return n * s.groups + c / channels_per_group;
  };
  for (int64_t n = 0; n < s.n; ++n) {
    if (s.layout == NK_NCHW) {
      for (int64_t c = 0; c < s.c; ++c) {
        const int64_t base = (n * s.c + c) * s.s, stat = stat_of(n, c);
        for (int64_t i = base; i < base + s.s; ++i) visit(i, c, stat);
      }
    } else {
      for (int64_t i = n * s.s * s.c; i < (n + 1) * s.s * s.c; i += s.c) {
        for (int64_t c = 0; c < s.c; ++c) visit(i + c, c, stat_of(n, c));
      }
    }
  }
}

}  // namespace nk::cpu
