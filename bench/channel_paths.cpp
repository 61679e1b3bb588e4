// Which path each batch, instance and group norm case of the benchmark sets takes on the CUDA
// backend, from the plans alone (kernels/channel_norm_plan.cpp; no GPU needed): one line a case,
// then a markdown count per set, op, layout and phase.
//
//   normkit_channel_paths [SET...]      (default: bn_resnet50 bn_features bn_mobilenet_v2
//                                        instance_norm group_norm check)
//
// Paths, tried in the order of the dispatch in channel_norm_forward.cu's forward() and
// channel_norm_backward.cu's backward() (training, 16-byte aligned pointers, as the benchmark
// allocates them):
//   forward:  resident_rows (split_rows: a row in parts, a cluster a row on sm_90: x read once;
//             two launches elsewhere), short_rows, row_groups, group_tiles, instance_tiles (batch
//             norm in NHWC or with S = 1 as one sample, instance_tile_shape), split_tiles (group or
//             instance tiles in parts, a cluster a tile on sm_90: x read once; two launches
//             elsewhere),
//             batch_tiles (batch norm in NCHW, a block a channel), else walk (x read twice);
//   backward: resident_rows (split_rows), group_tiles, short_rows, row_groups, instance_tiles,
//             split_tiles,
//             batch_tiles (x and dy staged), else walk;
//   inference forward and fused cases: apply (one elementwise pass), or not counted.
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "channel_norm_plan.hpp"
#include "shape_sets.hpp"

namespace {

nk::ChannelShape shape_of(const nkb::Case& c) {
  const nk::ChannelNorm kind = c.op == nkb::Op::batch_norm      ? nk::ChannelNorm::kBatch
                               : c.op == nkb::Op::instance_norm ? nk::ChannelNorm::kInstance
                                                                : nk::ChannelNorm::kGroup;
  const int64_t groups = c.op == nkb::Op::group_norm ? c.groups : 1;
  return nk::ChannelShape{kind, c.n, c.c, c.spatial(), c.layout, c.dtype, groups};
}

const char* path_of(const nkb::Case& c) {
  using namespace nk::cuda;
  const nk::ChannelShape s = shape_of(c);
  const int elem = static_cast<int>(nkb::dtype_size(c.dtype));
  if (c.phase == nkb::Phase::forward_inference) return "apply";
  if (c.phase == nkb::Phase::backward) {
    const ResidentPlan r = plan_resident_rows(s, elem, 2);
    if (r.use) return r.parts > 1 ? "split_rows" : "resident_rows";
    const GroupTilePlan g = plan_group_tiles(s, elem, 2);
    if (g.use) return g.parts > 1 ? "split_tiles" : "group_tiles";
    if (plan_short_rows(s, elem).use) return "short_rows";
    if (plan_row_groups(s, elem).use) return "row_groups";
    const GroupTilePlan it = plan_instance_tiles(instance_tile_shape(s), elem, 2);
    if (it.use) return it.parts > 1 ? "split_tiles" : "instance_tiles";
    if (plan_batch_tiles(s, elem, 2).use) return "batch_tiles";
    return "walk";
  }
  const ResidentPlan r = plan_resident_rows(s, elem);
  if (r.use) return r.parts > 1 ? "split_rows" : "resident_rows";
  if (plan_short_rows(s, elem).use) return "short_rows";
  if (plan_row_groups(s, elem).use) return "row_groups";
  const GroupTilePlan g = plan_group_tiles(s, elem);
  if (g.use) return g.parts > 1 ? "split_tiles" : "group_tiles";
  const GroupTilePlan it = plan_instance_tiles(instance_tile_shape(s), elem);
  if (it.use) return it.parts > 1 ? "split_tiles" : "instance_tiles";
  if (plan_batch_tiles(s, elem).use) return "batch_tiles";
  return "walk";
}

}  // namespace

int main(int argc, char** argv) {
  std::set<std::string> sets = {"bn_resnet50",   "bn_features", "bn_mobilenet_v2",
                                "instance_norm", "group_norm",  "check"};
  if (argc > 1) sets = std::set<std::string>(argv + 1, argv + argc);
  // (set, op, layout, phase) -> path -> cases
  std::map<std::tuple<std::string, std::string, std::string, std::string>,
           std::map<std::string, int>>
      counts;
  for (const nkb::Case& c : nkb::all_cases()) {
    if (c.is_row_op() || c.fused() || sets.count(c.set) == 0) continue;
    const char* path = path_of(c);
    std::printf("%s %s\n", c.name().c_str(), path);
    ++counts[{c.set, nkb::op_name(c.op), c.layout == NK_NHWC ? "NHWC" : "NCHW", nkb::phase_name(c)}]
            [path];
  }
  std::printf("\n| set | op | layout | phase | cases by path |\n|---|---|---|---|---|\n");
  for (const auto& [key, paths] : counts) {
    std::string cell;
    for (const auto& [path, n] : paths) {
      cell += (cell.empty() ? "" : ", ") + path + " " + std::to_string(n);
    }
    std::printf("| %s | %s | %s | %s | %s |\n", std::get<0>(key).c_str(), std::get<1>(key).c_str(),
                std::get<2>(key).c_str(), std::get<3>(key).c_str(), cell.c_str());
  }
  return 0;
}
