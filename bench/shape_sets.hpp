// The named shape sets of the GPU benchmark suite. Every benchmark name starts with its set
// ("bn_resnet50/...", "bn_in_place/...", its NCHW layers in place, "bn_features/...", batch norm
// of N x C features (S = 1), "bn_mobilenet_v2/...", narrow layers, "rows/...", "fused_rows/...",
// the fused layer / RMS norm forms, "fused_channels/...", batch norm + (add +) ReLU and group norm
// + SiLU, "instance_norm/...", "group_norm/...", "small/...", and "check/...", the GPU check's
// 40-case subset of every op class), so --benchmark_filter=^<set>/ selects one. The tables are in
// shape_sets.cpp.
#pragma once

#include <vector>

#include "bench_case.hpp"

namespace nkb {

// Every case of every set, in registration order.
std::vector<Case> all_cases();

}  // namespace nkb
