// Prints the channel plan (kernels/channel_norm_plan.cpp) of NHWC shapes whose period is wider
// than a block, with aligned and misaligned pointers. Built against the tree's plan:
//   g++ -std=c++17 -I ../../../include -I ../../../src -I ../../../kernels plan_dump.cpp \
//       ../../../kernels/channel_norm_plan.cpp -o /tmp/plan_dump && /tmp/plan_dump
#include <cstdio>
#include <initializer_list>

#include "channel_norm_plan.hpp"

int main() {
  using nk::ChannelNorm;
  struct Shape {
    const char* name;
    ChannelNorm kind;
    long n, c, s, groups;
    int elem;
  };
  const Shape shapes[] = {
      {"batch", ChannelNorm::kBatch, 32, 1001, 49, 1, 2},
      {"batch", ChannelNorm::kBatch, 256, 1001, 1, 1, 2},
      {"batch", ChannelNorm::kBatch, 32, 514, 196, 1, 2},
      {"instance", ChannelNorm::kInstance, 8, 257, 4096, 1, 2},
      {"group", ChannelNorm::kGroup, 8, 1001, 1024, 7, 2},
      {"batch", ChannelNorm::kBatch, 32, 1001, 49, 1, 4},
  };
  for (const Shape& s : shapes) {
    for (bool aligned : {true, false}) {
      const nk::ChannelShape shape{s.kind, s.n, s.c, s.s, NK_NHWC,
                                   s.elem == 2 ? NK_BF16 : NK_F32, s.groups};
      const nk::cuda::ChannelPlan p = nk::cuda::plan_channel_norm(shape, s.elem, aligned);
      const long width = p.period_split ? p.period : p.c;
      const long tiles = (width / p.pack_elems + p.lanes - 1) / p.lanes;
      std::printf("%-8s %s n=%ld c=%ld s=%ld %s: period=%ld split=%d pack=%d lanes=%d "
                  "tiles=%ld walk_chunks=%ld chunk_len=%ld blocks=%ld partials=%ld\n",
                  s.name, s.elem == 2 ? "bf16" : "fp32", s.n, s.c, s.s,
                  aligned ? "aligned   " : "misaligned", static_cast<long>(p.period),
                  p.period_split ? 1 : 0, p.pack_elems, p.lanes, tiles,
                  static_cast<long>(p.walk_chunks), static_cast<long>(p.chunk_len),
                  tiles * static_cast<long>(p.slots * p.walk_chunks),
                  static_cast<long>(p.partials()));
    }
  }
  return 0;
}
