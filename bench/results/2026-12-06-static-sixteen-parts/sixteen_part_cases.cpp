// The benchmark cases whose batch, instance or group norm takes 16 parts a tile (the plans with
// kSplitMaxParts 16; before, these shapes took the walk): op, positions a tile, tiles, parts,
// blocks, a part's KiB of each staged tensor, threads. Host code only:
// (from this folder, with normkit built in build/)
//   g++ -std=c++17 -I../../../kernels -I../../../src -I../../../include -I../.. \
//     sixteen_part_cases.cpp ../../../kernels/channel_norm_plan.cpp ../../shape_sets.cpp \
//     ../../bench_case.cpp -L../../../build -lnormkit -Wl,-rpath,$PWD/../../../build \
//     -o /tmp/sixteen_part_cases
//   /tmp/sixteen_part_cases > sixteen_part_cases.md
#include <cstdio>

#include "channel_norm_plan.hpp"
#include "shape_sets.hpp"

int main() {
  using namespace nk::cuda;
  std::printf("| case | positions | tiles | parts | blocks | part KiB | threads |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  int count = 0;
  for (const nkb::Case& c : nkb::all_cases()) {
    if (c.fused() || c.layout != NK_NHWC || c.phase == nkb::Phase::forward_inference) continue;
    const int staged = c.phase == nkb::Phase::backward ? 2 : 1;
    const int elem = static_cast<int>(nkb::dtype_size(c.dtype));
    GroupTilePlan g{};
    int64_t positions = 0;
    if (c.op == nkb::Op::group_norm) {
      const nk::ChannelShape s{nk::ChannelNorm::kGroup, c.n, c.c, c.spatial(), c.layout, c.dtype,
                               c.groups};
      g = plan_group_tiles(s, elem, staged);
      positions = s.s;
    } else if (c.op == nkb::Op::batch_norm || c.op == nkb::Op::instance_norm) {
      const nk::ChannelShape s{c.op == nkb::Op::batch_norm ? nk::ChannelNorm::kBatch
                                                           : nk::ChannelNorm::kInstance,
                               c.n, c.c, c.spatial(), c.layout, c.dtype, 1};
      const nk::ChannelShape one = instance_tile_shape(s);
      g = plan_instance_tiles(one, elem, staged);
      positions = one.s;
    } else {
      continue;
    }
    if (!g.use || g.parts <= kSplitPortableParts) continue;
    ++count;
    std::printf("| `%s` | %lld | %lld | %d | %lld | %.1f | %d |\n", c.name().c_str(),
                static_cast<long long>(positions), static_cast<long long>(g.tiles), g.parts,
                static_cast<long long>(g.tiles * g.parts),
                g.part_positions * g.pos_packs * 16 / 1024.0, g.threads);
  }
  std::printf("\n%d cases.\n", count);
}
