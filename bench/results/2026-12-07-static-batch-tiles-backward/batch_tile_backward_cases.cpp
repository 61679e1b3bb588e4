// The benchmark cases whose batch norm NCHW training backward reads x and dy once in batch tiles
// (plan_batch_tiles with both staged): packs a run (Q), parts, blocks (C * parts), threads a
// block, packs of each tensor staged a block (head). Host code only:
// (from this folder, with normkit built in build/)
//   g++ -std=c++17 -I../../../kernels -I../../../src -I../../../include -I../.. \
//     batch_tile_backward_cases.cpp ../../../kernels/channel_norm_plan.cpp ../../shape_sets.cpp \
//     ../../bench_case.cpp -L../../../build -lnormkit -Wl,-rpath,$PWD/../../../build \
//     -o /tmp/batch_tile_backward_cases
//   /tmp/batch_tile_backward_cases > batch_tile_backward_cases.tsv
#include <cstdio>

#include "channel_norm_plan.hpp"
#include "shape_sets.hpp"

int main() {
  using namespace nk::cuda;
  std::printf("case\tdtype_bytes\tQ\tparts\tpart_runs\tblocks\tthreads\thead_packs\n");
  for (const nkb::Case& c : nkb::all_cases()) {
    if (c.fused() || c.op != nkb::Op::batch_norm || c.layout != NK_NCHW ||
        c.phase != nkb::Phase::backward) {
      continue;
    }
    const nk::ChannelShape s{nk::ChannelNorm::kBatch, c.n, c.c, c.spatial(), c.layout, c.dtype, 1};
    const int elem = static_cast<int>(nkb::dtype_size(c.dtype));
    const BatchTilePlan b = plan_batch_tiles(s, elem, 2);
    if (!b.use) continue;
    std::printf("%s\t%d\t%d\t%d\t%d\t%lld\t%d\t%lld\n", c.name().c_str(), elem, b.seg_packs,
                b.parts, b.part_runs, static_cast<long long>(c.c * b.parts), b.threads,
                static_cast<long long>(b.head_packs));
  }
}
