// The benchmark cases whose group norm takes the split tiles (plan_group_tiles with parts > 1; the
// training backward with x and dy staged): positions, tiles, groups a tile, packs a position,
// parts, blocks, a part's KiB of each tensor, threads. Host code only:
// (from this folder, with normkit built in build/)
//   g++ -std=c++17 -I../../../kernels -I../../../src -I../../../include -I../.. \
//     group_split_cases.cpp ../../../kernels/channel_norm_plan.cpp ../../shape_sets.cpp \
//     ../../bench_case.cpp -L../../../build -lnormkit -Wl,-rpath,$PWD/../../../build \
//     -o /tmp/group_split_cases
//   /tmp/group_split_cases > group_split_cases.md
#include <cstdio>

#include "channel_norm_plan.hpp"
#include "shape_sets.hpp"

int main() {
  using namespace nk::cuda;
  std::printf("| case | positions | tiles | k | P | parts | blocks | part KiB | threads |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const nkb::Case& c : nkb::all_cases()) {
    if (c.op != nkb::Op::group_norm || c.fused()) continue;
    const int staged = c.phase == nkb::Phase::backward ? 2 : 1;
    const nk::ChannelShape s{nk::ChannelNorm::kGroup, c.n, c.c, c.spatial(), c.layout, c.dtype,
                             c.groups};
    const GroupTilePlan g =
        plan_group_tiles(s, static_cast<int>(nkb::dtype_size(c.dtype)), staged);
    if (!g.use || g.parts == 1) continue;
    std::printf("| `%s` | %lld | %lld | %d | %d | %d | %lld | %.1f | %d |\n", c.name().c_str(),
                static_cast<long long>(s.s), static_cast<long long>(g.tiles), g.groups_per_tile,
                g.pos_packs, g.parts, static_cast<long long>(g.tiles * g.parts),
                g.part_positions * g.pos_packs * 16 / 1024.0, g.threads);
  }
}
