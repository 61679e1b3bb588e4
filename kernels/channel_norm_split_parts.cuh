// The host side of the split forms (channel_norm_split_step.cuh): a part's staged head, and the
// launches, one of clusters where the device holds them, else two through the workspace.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "channel_norm_plan.hpp"
#include "channel_norm_resident.cuh"
#include "channel_norm_split_step.cuh"
#include "common/check.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"
#include "shared_memory_limit.hpp"

namespace nk::cuda {

// A part's staged head a block, of each of `staged_tensors` tensors after `scratch_bytes` of
// scratch: as much of the part (part_bytes of each tensor) as the device lets a block stage, at
// least the plan's (head_bytes: what every GPU grants); the rest is reread in each pass with the
// same bits. Then the test knob NORMKIT_TEST_RESIDENT_HEAD (resident_head_packs).
inline int part_head_packs(int64_t part_bytes, int64_t head_bytes, int64_t scratch_bytes,
                           int staged_tensors, int elem_bytes) {
  const int64_t granted = (device_shared_optin() - scratch_bytes) / staged_tensors;
  int64_t head = head_bytes;
  if (granted > head) {
    const int64_t most = granted / 16 * 16;
    head = part_bytes < most ? part_bytes : most;
  }
  return resident_head_packs(head / elem_bytes, elem_bytes);
}

// A split tile's staged head a block (its part: part_positions * pos_packs packs).
inline int split_head_packs(const GroupTilePlan& g, int elem_bytes, int staged_tensors = 1) {
  return part_head_packs(g.part_positions * g.pos_packs * 16, g.head_len * elem_bytes,
                         kGroupTileScratchBytes, staged_tensors, elem_bytes);
}

// A split row's staged head a block (its part: part_len elements, whole packs or not: the packs
// that lie wholly in it are at most part_len * elem_bytes / 16).
inline int resident_split_head_packs(const ResidentPlan& r, int elem_bytes, int64_t scratch_bytes,
                                     int staged_tensors = 1) {
  return part_head_packs(r.part_len * elem_bytes / 16 * 16, r.head_len * elem_bytes, scratch_bytes,
                         staged_tensors, elem_bytes);
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
