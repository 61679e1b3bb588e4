// What the split tiles share (plan_instance_tiles and plan_group_tiles with parts > 1): a tile's
// positions are split into K parts, a block a part, whose exact two-pass statistics (or sums) are
// combined in rank order. Two forms give the same bits: one launch of clusters of K blocks that
// exchange the parts in distributed shared memory (x read once), or two launches that exchange
// them through the workspace (kParts writes them, kApply combines them and reads x again).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "channel_norm_plan.hpp"
#include "channel_norm_resident.cuh"
#include "common/check.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"
#include "shared_memory_limit.hpp"

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

// A split tile's staged head a block, of each of `staged_tensors` tensors: as much of its part
// (part_positions * pos_packs packs) as the device lets a block stage, at least the plan's (what
// every GPU grants); the rest is reread in each pass with the same bits. Then the test knob
// NORMKIT_TEST_RESIDENT_HEAD (resident_head_packs).
inline int split_head_packs(const GroupTilePlan& g, int elem_bytes, int staged_tensors = 1) {
  const int64_t part = g.part_positions * g.pos_packs * 16;
  const int64_t granted = (device_shared_optin() - kGroupTileScratchBytes) / staged_tensors;
  int64_t head = g.head_len * elem_bytes;
  if (granted > head) {
    const int64_t most = granted / 16 * 16;
    head = part < most ? part : most;
  }
  return resident_head_packs(head / elem_bytes, elem_bytes);
}

// The plan doubles parts for the blocks' sake only within a portable cluster.
static_assert(static_cast<unsigned>(kSplitPortableParts) == dev::kPortableClusterCtas,
              "portable cluster size");

// Enqueues split tiles on `blocks` blocks (tiles * parts) of `threads`: `cluster` in one launch of
// clusters of `parts` blocks where the device has clusters (dev::clusters_available(), with its
// test knob) and can hold one (of 16 blocks: where it allows that size, dev::launch_clusters),
// with `bytes` of dynamic shared memory; else `parts_kernel` with `bytes`, then `apply` with
// `apply_bytes` (it stages nothing). The caller checks cudaGetLastError.
template <class Params>
void launch_split_steps(void (*cluster)(Params), void (*parts_kernel)(Params),
                        void (*apply)(Params), int64_t blocks, int threads, size_t bytes,
                        size_t apply_bytes, int parts, cudaStream_t stream, const Params& p) {
  if (dev::clusters_available()) {
    if (bytes > 48 * 1024) {
      dev::check_cuda(cudaFuncSetAttribute(cluster, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(bytes)),
                      "cudaFuncSetAttribute (split tiles)");
    }
    if (dev::launch_clusters(cluster, static_cast<unsigned>(blocks), static_cast<unsigned>(threads),
                             bytes, stream, static_cast<unsigned>(parts),
                             dev::dependent_launch_allowed(), p)) {
      return;
    }
  }
  launch_blocks(parts_kernel, blocks, threads, bytes, stream, p);
  launch_blocks(apply, blocks, threads, apply_bytes, stream, p);
}

// A split launch: `blocks` (tiles or channels, times parts) of `threads`, `parts` a tile, the
// staged packs after `scratch_bytes` of dynamic shared memory.
struct SplitLaunch {
  int64_t blocks;
  int threads;
  int parts;
  size_t scratch_bytes;
};

// Enqueues a forward's split tiles (group, instance or batch norm; `p`'s head and parts set by
// the caller) for the fusion and pointers: kernel(access, act, residual, step) names each step's
// instance, each argument a std::integral_constant, kParts's without the fusion or z, which the
// parts' statistics do not need; one launch of clusters where the device can hold one, else
// kParts then kApply (launch_split_steps). The caller checks cudaGetLastError.
template <class T, class Params, class Kernel>
void launch_forward_split(const Params& p, const SplitLaunch& l, int activation,
                          cudaStream_t stream, Kernel&& kernel) {
  constexpr int E = 16 / sizeof(T);
  const size_t bytes = l.scratch_bytes + static_cast<size_t>(p.head_packs) * 16;
  auto with_access = [&](auto access) {
    using Step = std::integral_constant<SplitStep, SplitStep::kParts>;
    auto parts = kernel(access, std::integral_constant<int, NK_ACTIVATION_IDENTITY>{},
                        std::false_type{}, Step{});
    with_forward_fusion(activation, p.z != nullptr, [&](auto act, auto residual) {
      launch_split_steps(
          kernel(access, act, residual, std::integral_constant<SplitStep, SplitStep::kCluster>{}),
          parts,
          kernel(access, act, residual, std::integral_constant<SplitStep, SplitStep::kApply>{}),
          l.blocks, l.threads, bytes, l.scratch_bytes, l.parts, stream, p);
    });
  };
  if (dev::aligned16(p.x) && dev::aligned16(p.z) && dev::aligned16(p.y)) {
    with_access(std::integral_constant<int, E>{});
  } else {
    with_access(std::integral_constant<int, 1>{});
  }
}

}  // namespace nk::cuda
