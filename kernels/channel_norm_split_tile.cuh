// Instance norm training forward in NHWC, and batch norm's as one sample (instance_tile_shape),
// where a tile of a pack of channels exceeds one block (plan_instance_tiles with parts > 1): the
// tile's S positions are split into K parts of L = ceil(S / K) consecutive positions (the last may
// have fewer), a block a part (blockIdx.x = tile * K + rank). Each block stages its part as the
// instance tiles do (channel_norm_instance_tile.cuh: the head in shared memory, the tail reread)
// and takes its part's exact two-pass statistics, (centre_r, m2_r) per channel, about the shift x0
// (the channel's value at the sample's first position, the same in every part). The tile's come
// from merging the parts in rank order with Chan's formula (merge_parts), in every block alike,
// then each block writes y for its part from where it staged it.
//
// Two forms, the same arithmetic in the same order, so the same bits:
//  - kCluster (thread block clusters, compute capability 9.0): the K blocks of a tile are one
//    cluster; each publishes its part's statistics in its shared memory and reads the others'
//    through distributed shared memory (common/cluster.cuh). x is read once.
//  - kParts then kApply (any GPU, or a device that cannot hold the cluster): the first launch
//    writes each part's statistics and the tile's x0 to the workspace (part_stats), the second
//    merges them and writes y, reading x again (x0 from the workspace: with y == x, x may
//    already be overwritten).
// Rank 0 of a tile saves its statistics and, one sample, blends them into the running buffers;
// with N > 1 (instance norm) it writes the rows' statistics for the running update, as the
// instance tiles do.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "channel_norm_group_tile.cuh"
#include "channel_norm_instance_tile.cuh"
#include "channel_norm_one_read_io.cuh"
#include "channel_norm_plan.hpp"
#include "channel_norm_resident.cuh"
#include "channel_norm_split_parts.cuh"
#include "common/activation.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "shared_memory_limit.hpp"

namespace nk::cuda {

// The instance tiles' parameters (a tile's geometry: s = S; head_packs, a part's staged head),
// the parts, and the workspace of the two-launch form.
struct SplitTileParams : InstanceTileParams {
  int parts;           // K
  int part_positions;  // L
  float2* part_stats;  // [tiles][K + 1][E]: each part's (centre, m2) a channel, then (x0, 0);
                       // kParts and kApply
};

// The scratch before the staged head: block_sum's 32 * E floats, E weights and E biases, this
// part's E (centre, m2) (read by the cluster) and the tile's E (centre, m2) (for every thread).
template <int E>
struct SplitScratch {
  float sums[32 * E];
  float affine[2 * E];
  float2 part[E];
  float2 tile[E];
};

// kAccess: elements per global access (E, or 1 for misaligned pointers). The minimum of two
// blocks of 512 threads an SM holds ptxas to 64 registers, as in forward_instance_tile.
template <class T, int kAccess, int kAct, bool kResidual, SplitStep kStep>
__global__ void __launch_bounds__(kResidentMaxThreads, 2) forward_split_tile(SplitTileParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  static_assert(sizeof(SplitScratch<E>) <= kGroupTileScratchBytes, "split tile scratch");
  auto& sh = *reinterpret_cast<SplitScratch<E>*>(shared_bytes);
  Raw* staged = reinterpret_cast<Raw*>(shared_bytes + kGroupTileScratchBytes);
  const int t = static_cast<int>(threadIdx.x);
  // 32-bit: the plan keeps the blocks below 2^31.
  const unsigned parts = static_cast<unsigned>(p.parts);
  const unsigned tile = blockIdx.x / parts, rank = blockIdx.x - tile * parts;
  const unsigned tiles_per_sample = static_cast<unsigned>(p.tiles_per_sample);
  const unsigned n = tile / tiles_per_sample;
  const int64_t c0 = int64_t{tile - n * tiles_per_sample} * E;
  const int64_t stat0 = int64_t{n} * p.c + c0, sample = int64_t{n} * p.sample_len + c0;
  const int begin = static_cast<int>(rank) * p.part_positions;
  const int packs = p.s - begin < p.part_positions ? p.s - begin : p.part_positions;
  const int64_t first = sample + int64_t{begin} * p.c;  // the part's first position
  const int64_t at0 = int64_t{t} * p.c, step = int64_t{blockDim.x} * p.c;
  const T* x = static_cast<const T*>(p.x);
  auto load = [&](int64_t at) { return row_pack<T, E, kAccess>(x + first + at, 0); };
  const bool saves = rank == 0 && t < E;  // thread e of rank 0 writes channel c0 + e's statistics
  float my_weight = 1.0f, my_bias = 0.0f;
  float2 my_running{};
  int64_t tracked = 0;
  if constexpr (kStep != SplitStep::kParts) {
    // Loaded before the statistics, as forward_instance_tile does (no waits behind them later).
    if (t < E) {
      if (p.weight) my_weight = p.weight[c0 + t];
      if (p.bias) my_bias = p.bias[c0 + t];
    }
    if (saves && p.running.mean) my_running = p.running.load(c0 + t), tracked = p.running.tracked();
  }
  // x0 of each channel. kApply takes the value kParts read: with y == x, rank 0 of kApply may
  // have overwritten it before the other ranks start (in the cluster, every block reads it before
  // the exchange, and writes y after it).
  float2* stats = p.part_stats + int64_t{tile} * (parts + 1) * E;  // kParts, kApply
  float shift[E];
  if constexpr (kStep == SplitStep::kApply) {
#pragma unroll
    for (int e = 0; e < E; ++e) shift[e] = stats[parts * E + e].x;
  } else {
    float v[E];
    load_elems<T, E, kAccess>(x + sample, v);
#pragma unroll
    for (int e = 0; e < E; ++e) shift[e] = v[e];
  }
  // The last part may be shorter than the head (sized for the others): visit_tile takes the
  // first `head` packs from shared memory.
  const int head = kStep == SplitStep::kApply ? 0 : (p.head_packs < packs ? p.head_packs : packs);

  if constexpr (kStep != SplitStep::kApply) {
    // Pass 1: the head into shared memory, the sums of x - x0 as the packs arrive.
    dev::Floats<E> acc{};
    constexpr int kBatch = kAccess == E ? 4 : 2;  // as forward_instance_tile
    stage_tile<kBatch>(staged, head, packs, at0, step, load, [&](const Raw& v) {
#pragma unroll
      for (int e = 0; e < E; ++e) acc.v[e] += dev::element(v, e) - shift[e];
    });
    // block_sum's barrier orders the staged head before pass 2 reads it.
    const dev::Floats<E> sums = dev::block_sum<E>(acc, sh.sums);
    const float inv_packs = 1.0f / static_cast<float>(packs);
    float centre[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      centre[e] = sums.v[e] * inv_packs;
      acc.v[e] = 0.0f;
    }
    // Pass 2: the squares about the part's centre.
    visit_tile(staged, head, packs, at0, step, load, [&](const Raw& v, int64_t) {
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float d = (dev::element(v, e) - shift[e]) - centre[e];
        acc.v[e] = fmaf(d, d, acc.v[e]);
      }
    });
    const dev::Floats<E> m2 = dev::block_sum<E>(acc, sh.sums);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (t == e) {
        publish_part<kStep>(make_float2(centre[e], m2.v[e]), shift[e], rank, parts, E, e, stats,
                            sh.part[e]);
      }
    }
    if constexpr (kStep == SplitStep::kParts) return;
  }

  // The tile's statistics: thread e merges channel e's parts, from the cluster's shared memories
  // or from the workspace.
  if constexpr (kStep == SplitStep::kCluster) {
    dev::cluster_arrive();  // every part published (release), then
    dev::cluster_wait();    // visible here (acquire)
  }
  if (t < E) {
    const float2 m = merge_parts(p.parts, p.part_positions, p.s, [&](int r) {
      if constexpr (kStep == SplitStep::kCluster) {
        return dev::load_cluster_float2(dev::cluster_address(&sh.part[t], r));
      } else {
        return stats[r * E + t];
      }
    });
    sh.tile[t] = m;
    sh.affine[t] = my_weight;
    sh.affine[E + t] = my_bias;
  }
  if constexpr (kStep == SplitStep::kCluster) {
    dev::cluster_arrive();  // done reading the others' parts: they may exit after the wait below
  }
  __syncthreads();

  // Pass 3 coefficients: y = (x - x0) * scale + offset (+ z), as forward_instance_tile's.
  float scale[E], offset[E];
  float my_mean = 0.0f, my_var = 0.0f, my_invstd = 0.0f, my_m2 = 0.0f;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const float2 m = sh.tile[e];
    const float var = m.y * p.inv_count, invstd = rsqrtf(var + p.eps);
    scale[e] = invstd * sh.affine[e];
    offset[e] = sh.affine[E + e] - m.x * scale[e];
    if (t == e) my_mean = shift[e] + m.x, my_var = var, my_invstd = invstd, my_m2 = m.y;
  }
  if (saves) {
    if (p.save_mean) p.save_mean[stat0 + t] = my_mean;
    if (p.save_invstd) p.save_invstd[stat0 + t] = my_invstd;
    const float run_var = p.unbiased ? my_m2 * p.inv_count_minus_1 : my_var;
    if (p.row_stats) p.row_stats[stat0 + t] = make_float2(my_mean, run_var);
    const float blend = p.running.weight(tracked);  // < 0: no running buffers, or a stuck counter
    if (blend >= 0.0f) p.running.blend(c0 + t, blend, my_running, my_mean, run_var);
  }
  const T* z = kResidual ? static_cast<const T*>(p.z) + first : nullptr;
  T* y = static_cast<T*>(p.y) + first;
  visit_tile(staged, head, packs, at0, step, load, [&](const Raw& v, int64_t o) {
    float u[E];
    if constexpr (kResidual) load_elems<T, E, kAccess>(z + o, u);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      float r = fmaf(dev::element(v, e) - shift[e], scale[e], offset[e]);
      if constexpr (kResidual) r += u[e];
      u[e] = dev::activate<kAct>(r);
    }
    store_elems<T, E, kAccess>(y + o, u);
    if constexpr (kAct == NK_ACTIVATION_RELU) {
      if (p.mask != nullptr) dev::store_mask<E>(p.mask, first + o, u);  // C and c0: E | it
    }
  });
  if constexpr (kStep == SplitStep::kCluster) dev::cluster_wait();
}

// Enqueues the split tiles of the fusion and pointers (launch_forward_split). The caller checks
// cudaGetLastError.
template <class T>
void launch_split_tiles(const SplitTileParams& p, const GroupTilePlan& plan, int activation,
                        cudaStream_t stream) {
  launch_forward_split<T>(
      p, SplitLaunch{plan.tiles * plan.parts, plan.threads, plan.parts, kGroupTileScratchBytes},
      activation, stream, [](auto access, auto act, auto residual, auto step) {
        return forward_split_tile<T, decltype(access)::value, decltype(act)::value,
                                  decltype(residual)::value, decltype(step)::value>;
      });
}

}  // namespace nk::cuda
