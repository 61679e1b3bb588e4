// The benchmark cases that take the split tiles (plan_instance_tiles with parts > 1; the training
// backward with x and dy staged): positions, tiles, parts, blocks, a part's bytes of each tensor,
// threads. Host code only:
// (from this folder, with normkit built in build/)
//   g++ -std=c++17 -I../../../kernels -I../../../src -I../../../include -I../.. split_cases.cpp \
//     ../../../kernels/channel_norm_plan.cpp ../../shape_sets.cpp ../../bench_case.cpp \
//     -L../../../build -lnormkit -Wl,-rpath,$PWD/../../../build -o /tmp/split_cases
//   /tmp/split_cases > split_cases.md
#include <cstdio>

#include "channel_norm_plan.hpp"
#include "shape_sets.hpp"

int main() {
  using namespace nk::cuda;
  std::printf("| case | positions | tiles | parts | blocks | part KiB | threads |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const nkb::Case& c : nkb::all_cases()) {
    if (c.is_row_op() || c.fused() || c.phase == nkb::Phase::forward_inference) continue;
    const int staged = c.phase == nkb::Phase::backward ? 2 : 1;
    if (c.op == nkb::Op::group_norm) continue;
    const nk::ChannelNorm kind =
        c.op == nkb::Op::batch_norm ? nk::ChannelNorm::kBatch : nk::ChannelNorm::kInstance;
    const nk::ChannelShape s{kind, c.n, c.c, c.spatial(), c.layout, c.dtype, 1};
    const nk::ChannelShape one = instance_tile_shape(s);
    const GroupTilePlan g =
        plan_instance_tiles(one, static_cast<int>(nkb::dtype_size(c.dtype)), staged);
    if (!g.use || g.parts == 1) continue;
    std::printf("| `%s` | %lld | %lld | %d | %lld | %.1f | %d |\n", c.name().c_str(),
                static_cast<long long>(one.s), static_cast<long long>(g.tiles), g.parts,
                static_cast<long long>(g.tiles * g.parts), g.part_positions * 16 / 1024.0,
                g.threads);
  }
}
