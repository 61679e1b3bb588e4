// What every split form shares (the split tiles, batch norm's NCHW parts, the split resident
// rows): a statistic's values are cut into K parts, a block each, whose exact two-pass statistics
// (or gradient sums) are combined in rank order, so that the bits depend on the shape only. Two
// forms give the same bits: one launch of clusters of K blocks that exchange the parts in
// distributed shared memory (x read once), or two launches that exchange them through the
// workspace (kParts writes them, kApply combines them and reads x again).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/cluster.cuh"

namespace nk::cuda {

// kWhole: a block a tile (or row, or channel), no parts: the unsplit kernel; kCluster: a cluster
// a tile; kParts then kApply: the two-launch form.
enum class SplitStep { kWhole, kCluster, kParts, kApply };

// A statistic's (centre, m2) from its parts' (part(r) for r = 0..K-1, in rank
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

// Publishes this part's (centre, m2) of value j of a statistic's `width` (1, or a tile's channels
// or groups) for the merge: kParts to the workspace (stats: [parts + 1][width], the parts' rows
// then x0's, which rank 0 writes: kApply shifts by it, since y == x may overwrite x), kCluster to
// the block's shared `slot`, which the cluster reads.
template <SplitStep kStep>
__device__ __forceinline__ void publish_part(float2 part, float x0, unsigned rank, unsigned parts,
                                             unsigned width, unsigned j, float2* stats,
                                             float2& slot) {
  if constexpr (kStep == SplitStep::kParts) {
    stats[rank * width + j] = part;
    if (rank == 0) stats[parts * width + j] = make_float2(x0, 0.0f);
  } else {
    slot = part;
  }
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

// The statistic's (centre, m2) for every thread of a split forward's block, once each part has
// published its own (kCluster: sh.part; kApply: the workspace, stats[r] for part r): thread 0
// merges them in rank order (merge_parts, parts of part_count values but the last, count in
// all). kCluster ends arrived at the cluster barrier a second time: the block waits on it before
// it exits, since the others read its part.
template <SplitStep kStep>
__device__ __forceinline__ float2 merged_parts(SplitStatScratch& sh, int parts, int part_count,
                                               int count, const float2* stats) {
  if constexpr (kStep == SplitStep::kCluster) {
    dev::cluster_arrive();  // every part published (release), then
    dev::cluster_wait();    // visible here (acquire)
  }
  if (threadIdx.x == 0) {
    sh.tile = merge_parts(parts, part_count, count, [&](int r) {
      if constexpr (kStep == SplitStep::kCluster) {
        return dev::load_cluster_float2(dev::cluster_address(&sh.part, r));
      } else {
        return stats[r];
      }
    });
  }
  if constexpr (kStep == SplitStep::kCluster) {
    dev::cluster_arrive();  // done reading the others' parts: they may exit after the wait
  }
  __syncthreads();
  return sh.tile;
}

// The same for a split backward's two gradient sums (sh.part; kApply: sums[r * 2 + i] for sum i
// of part r), added in rank order by threads 0 and 1 (add_parts).
template <SplitStep kStep>
__device__ __forceinline__ void summed_parts(SplitSumsScratch& sh, int parts, const float* sums) {
  if constexpr (kStep == SplitStep::kCluster) {
    dev::cluster_arrive();  // every part published (release), then
    dev::cluster_wait();    // visible here (acquire)
  }
  if (threadIdx.x < 2) {
    const unsigned i = threadIdx.x;
    sh.tile[i] = add_parts(parts, [&](int r) {
      if constexpr (kStep == SplitStep::kCluster) {
        return dev::load_cluster_float(dev::cluster_address(&sh.part[i], r));
      } else {
        return sums[int64_t{r} * 2 + i];
      }
    });
  }
  if constexpr (kStep == SplitStep::kCluster) {
    dev::cluster_arrive();  // done reading the others' parts: they may exit after the wait
  }
  __syncthreads();
}

}  // namespace nk::cuda
