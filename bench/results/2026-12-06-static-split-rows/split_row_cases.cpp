// The benchmark cases whose instance or group norm NCHW training forward or backward takes its rows
// in parts (plan_resident_rows with parts > 1, the backward with x and dy staged; before, these
// took the walk): rows, a row's KiB, parts, a part's elements and KiB of each staged tensor,
// blocks (rows * parts), threads. Host code only:
// (from this folder, with normkit built in build/)
//   g++ -std=c++17 -I../../../kernels -I../../../src -I../../../include -I../.. \
//     split_row_cases.cpp ../../../kernels/channel_norm_plan.cpp ../../shape_sets.cpp \
//     ../../bench_case.cpp -L../../../build -lnormkit -Wl,-rpath,$PWD/../../../build \
//     -o /tmp/split_row_cases
//   /tmp/split_row_cases > split_row_cases.md
#include <cstdio>

#include "channel_norm_plan.hpp"
#include "shape_sets.hpp"

int main() {
  using namespace nk::cuda;
  std::printf("| case | rows | row KiB | parts | part elements | part KiB | blocks | threads |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  int count = 0;
  for (const nkb::Case& c : nkb::all_cases()) {
    if (c.fused() || c.layout != NK_NCHW || c.phase == nkb::Phase::forward_inference ||
        (c.op != nkb::Op::instance_norm && c.op != nkb::Op::group_norm)) {
      continue;
    }
    const int staged = c.phase == nkb::Phase::backward ? 2 : 1;
    const bool group = c.op == nkb::Op::group_norm;
    const nk::ChannelShape s{group ? nk::ChannelNorm::kGroup : nk::ChannelNorm::kInstance,
                             c.n,
                             c.c,
                             c.spatial(),
                             c.layout,
                             c.dtype,
                             group ? c.groups : 1};
    const int elem = static_cast<int>(nkb::dtype_size(c.dtype));
    const ResidentPlan r = plan_resident_rows(s, elem, staged);
    if (!r.use || r.parts == 1) continue;
    ++count;
    std::printf("| `%s` | %lld | %.1f | %d | %lld | %.1f | %lld | %d |\n", c.name().c_str(),
                static_cast<long long>(r.rows), r.len * elem / 1024.0, r.parts,
                static_cast<long long>(r.part_len), r.part_len * elem / 1024.0,
                static_cast<long long>(r.rows * r.parts), r.threads);
  }
  std::printf("\n%d cases.\n", count);
}
