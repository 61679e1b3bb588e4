// Which NHWC group norm shapes of the benchmark sets group_norm and fused_channels
// (bench/shape_sets.cpp) take the one-read training backward (plan_group_tiles with x and dy
// staged), with the tile, its groups and packs a position, the staged head of each tensor, the
// block, the tiles, and the bytes of x against the L2.
#include <cstdio>
#include <initializer_list>
#include "channel_norm_plan.hpp"
int main() {
  using namespace nk::cuda;
  auto show = [](const char* set, long n, long c, long hw, int elem) {
    const nk::ChannelShape s{nk::ChannelNorm::kGroup, n, c, hw * hw, NK_NHWC,
                             elem == 2 ? NK_BF16 : NK_F32, 32};
    const GroupTilePlan f = plan_group_tiles(s, elem);
    const GroupTilePlan t = plan_group_tiles(s, elem, 2);
    std::printf("%s %s n=%ld c=%ld hw=%ld x=%.1f MiB c/g=%ld forward=%d backward=%d", set,
                elem == 2 ? "bf16" : "fp32", n, c, hw, s.numel() * elem / 1048576.0, c / 32,
                f.use, t.use);
    if (t.use) {
      std::printf(" k=%d P=%d tile=%ld KiB staged=%ld KiB each blocks=%ld threads=%d",
                  t.groups_per_tile, t.pos_packs, (long)(t.len * elem / 1024),
                  (long)(t.head_len * elem / 1024), (long)t.tiles, t.threads);
    }
    std::printf("\n");
  };
  for (int elem : {2, 4})
    for (long n : {2, 8})
      for (long c : {320, 640, 1280})
        for (long hw : {64, 32, 16, 8}) show("group_norm", n, c, hw, elem);
  show("fused_channels", 2, 320, 64, 2);
  show("fused_channels", 8, 640, 32, 2);
  show("fused_channels", 8, 1280, 16, 2);
}
