// What every split form shares (the split tiles, batch norm's NCHW parts, the split resident
// rows): a statistic's values are cut into K parts, a block each, whose exact two-pass statistics
// (or gradient sums) are combined in rank order, so that the bits depend on the shape only. Two
// forms give the same bits: one launch of clusters of K blocks that exchange the parts in
// distributed shared memory (x read once), or two launches that exchange them through the
// workspace (kParts writes them, kApply combines them and reads x again).
#pragma once

#include <cuda_runtime.h>

namespace nk::cuda {

// kWhole: a block a tile, no parts (the group tiles' unsplit form); kCluster: a cluster a tile;
// kParts then kApply: the two-launch form.
enum class SplitStep { kWhole, kCluster, kParts, kApply };

// The tile's (centre, m2) of one statistic from its parts' (part(r) for r = 0..K-1, in rank
// order), each of part_count values but the last (count less the others'), with Chan's merge: the
// same operations, explicitly fused, wherever the parts come from.
template <class Part>
__device__ __forceinline__ float2 merge_parts(int parts, int part_count, int count, Part&& part) {
  float2 m = part(0);
  float merged = static_cast<float>(part_count);
  for (int r = 1; r < parts; ++r) {
    const float2 b = part(r);
    const int last = count - (parts - 1) * part_count;
    const float nb = static_cast<float>(r + 1 < parts ? part_count : last);
    const float total = merged + nb, w = nb / total;
    const float d = b.x - m.x;
    m.x = fmaf(d, w, m.x);
    m.y = fmaf(d * d, merged * w, m.y + b.y);
    merged = total;
  }
  return m;
}

// The sum of part(r) over the parts in rank order (float or float2): the same additions wherever
// the parts come from.
template <class Part>
__device__ __forceinline__ auto add_parts(int parts, Part&& part) {
  auto total = part(0);
  for (int r = 1; r < parts; ++r) {
    const auto v = part(r);
    if constexpr (sizeof(v) == sizeof(float2)) {
      total.x += v.x;
      total.y += v.y;
    } else {
      total += v;
    }
  }
  return total;
}

// The scratch of a split forward's block, before its staged packs: block_sum's 32 floats, this
// part's (centre, m2), which the cluster reads, and the statistic's, for every thread.
struct SplitStatScratch {
  float sums[32];
  float2 part;
  float2 tile;
};
static_assert(sizeof(SplitStatScratch) % 16 == 0, "staged packs start 16-byte aligned");

// The scratch of a split training backward's block whose statistic has two gradient sums, before
// its staged packs: block_sum<2>'s 2 * 32 floats, this part's two sums (which the cluster reads)
// and the statistic's.
struct SplitSumsScratch {
  float sums[2 * 32];
  float part[2];
  float tile[2];
};
static_assert(sizeof(SplitSumsScratch) % 16 == 0, "staged packs start 16-byte aligned");

}  // namespace nk::cuda
