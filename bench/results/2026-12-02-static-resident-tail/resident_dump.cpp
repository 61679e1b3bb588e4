// Which NCHW shapes of the benchmark sets instance_norm and group_norm (bench/shape_sets.cpp) take
// the one-read training forward and backward (plan_resident_rows), with the row and head sizes.
// Built against a tree's plan (README.md); HEAD(r) is r.len for a tree without
// ResidentPlan::head_len.
#include <cstdio>
#include <initializer_list>
#ifndef HEAD
#define HEAD(r) (r).head_len
#endif
#include "channel_norm_plan.hpp"
int main() {
  using namespace nk::cuda;
  auto show = [](const char* set, nk::ChannelNorm kind, long n, long c, long hw, long g, int elem) {
    const nk::ChannelShape s{kind, n, c, hw * hw, NK_NCHW, elem == 2 ? NK_BF16 : NK_F32, g};
    const ResidentPlan r = plan_resident_rows(s, elem), b = plan_resident_rows(s, elem, 2);
    std::printf(
        "%s %s n=%ld c=%ld hw=%ld row=%ld KiB rows=%ld forward=%d head=%ld KiB "
        "backward=%d head=%ld KiB\n",
        set, elem == 2 ? "bf16" : "fp32", n, c, hw, (long)(s.count_per_stat() * elem / 1024),
        (long)s.num_stats(), r.use, r.use ? (long)(HEAD(r) * elem / 1024) : 0L, b.use,
        b.use ? (long)(HEAD(b) * elem / 1024) : 0L);
  };
  for (int elem : {2, 4}) {
    for (long c : {64, 128, 256})
      for (long hw : {256, 128, 75})
        show("instance_norm", nk::ChannelNorm::kInstance, 8, c, hw, 1, elem);
    for (long n : {2, 8})
      for (long c : {320, 640, 1280})
        for (long hw : {64, 32, 16, 8})
          show("group_norm", nk::ChannelNorm::kGroup, n, c, hw, 32, elem);
  }
}
