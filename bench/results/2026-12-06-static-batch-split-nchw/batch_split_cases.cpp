// The benchmark cases whose batch norm NCHW training forward or backward takes a channel's tile in
// parts (plan_batch_tiles with parts > 1, the backward with x and dy staged; before, these took the
// walk): packs a run (Q), parts, runs a part, blocks (C * parts), a part's KiB of each staged
// tensor, threads. Host code only:
// (from this folder, with normkit built in build/)
//   g++ -std=c++17 -I../../../kernels -I../../../src -I../../../include -I../.. \
//     batch_split_cases.cpp ../../../kernels/channel_norm_plan.cpp ../../shape_sets.cpp \
//     ../../bench_case.cpp -L../../../build -lnormkit -Wl,-rpath,$PWD/../../../build \
//     -o /tmp/batch_split_cases
//   /tmp/batch_split_cases > batch_split_cases.md
#include <cstdio>

#include "channel_norm_plan.hpp"
#include "shape_sets.hpp"

int main() {
  using namespace nk::cuda;
  std::printf("| case | Q | parts | runs a part | blocks | part KiB | threads |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  int count = 0;
  for (const nkb::Case& c : nkb::all_cases()) {
    if (c.fused() || c.op != nkb::Op::batch_norm || c.layout != NK_NCHW ||
        c.phase == nkb::Phase::forward_inference) {
      continue;
    }
    const int staged = c.phase == nkb::Phase::backward ? 2 : 1;
    const nk::ChannelShape s{nk::ChannelNorm::kBatch, c.n, c.c, c.spatial(), c.layout, c.dtype, 1};
    const BatchTilePlan b =
        plan_batch_tiles(s, static_cast<int>(nkb::dtype_size(c.dtype)), staged);
    if (!b.use || b.parts == 1) continue;
    ++count;
    std::printf("| `%s` | %d | %d | %d | %lld | %.1f | %d |\n", c.name().c_str(), b.seg_packs,
                b.parts, b.part_runs, static_cast<long long>(c.c * b.parts),
                int64_t{b.part_runs} * b.seg_packs * 16 / 1024.0, b.threads);
  }
  std::printf("\n%d cases.\n", count);
}
