// Instance norm training forward in NHWC with one read of x (plan_instance_tiles): a block per tile
// of E consecutive channels of one sample (one 16-byte pack a position, its S positions C apart),
// staged in shared memory position by position, its E exact two-pass statistics taken from there,
// then y written from there (with the fused residual, activation and ReLU mask). x is read once and
// y written once, with no partials or finalize; the running update takes the tile's statistics
// from 8 bytes of workspace a (n, c), as the rows' one-read kernels leave them. Batch norm in NHWC
// (or with S = 1) comes here as one sample of N * S positions (instance_tile_shape): its channel's
// statistic, saved statistics and running update are that sample's. With one sample a block holds
// its channels' only statistics, so it blends them into the running buffers itself (RunningBlend):
// no workspace, and no launch after it but the counter's advance.
//
// The walk is group norm's tile walk (channel_norm_group_tile.cuh) with each channel a group:
// thread t takes the positions t, t + R, ... (R the block's threads), always the same pack of
// channels, and keeps a sum per element of it; the block adds them per element in a fixed order
// (dev::block_sum over E values). The statistics are of x - x0, x0 the channel's value at the
// sample's first position (so |mean| >> std keeps its accuracy), and every pass visits a thread's
// packs in the same order, from shared memory (the head) or from memory (the tail of tiles longer
// than the staged part), whatever the pointers allow (one 16-byte access or single elements): no
// bit depends on the pointers or the head, and the block (the reduction tree) on the shape only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_group_tile.cuh"
#include "channel_norm_one_read_io.cuh"
#include "channel_norm_plan.hpp"
#include "channel_norm_resident.cuh"
#include "channel_norm_running.cuh"
#include "common/activation.cuh"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"

namespace nk::cuda {

// The tensors (save_mean and save_invstd: [N * C]), the tiles (C/G = 1, k = E, P = 1), the rows'
// statistics for the running update or, one sample, the running buffers, then eps, 1 / S and
// 1 / (S - 1).
struct InstanceTileParams : OneReadForwardIo, TileGeometry {
  float2* row_stats;  // [N * C]: (mean, variance for the running average); nullable
  float eps;
  float inv_count, inv_count_minus_1;
  bool unbiased;  // row_stats' (and running's) variance: m2 / (S - 1), else m2 / S
  RunningBlend running;  // N = 1 only (running.mean nullable), where row_stats is null
};

// kAccess: elements per global access (E, or 1 for misaligned pointers). The minimum of two
// blocks of 512 threads an SM holds ptxas to 64 registers, as in forward_group_tile.
template <class T, int kAccess, int kAct, bool kResidual>
__global__ void __launch_bounds__(kResidentMaxThreads, 2)
    forward_instance_tile(InstanceTileParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  Raw* staged = reinterpret_cast<Raw*>(shared_bytes + kGroupTileScratchBytes);
  const int t = static_cast<int>(threadIdx.x);
  const int packs = p.s, head = p.head_packs;  // a pack a position
  const TileThread w = tile_thread<E>(p);
  const int64_t first = w.first, at0 = w.at0, step = w.step;
  const int64_t c0 = w.c0, stat0 = w.n * p.c + c0;
  const T* x = static_cast<const T*>(p.x) + first;
  // Thread e < E writes channel c0 + e's statistics, so it loads what it writes them with before
  // pass 1: its weight and bias (every thread's coefficients, through `affine`: E weights, then E
  // biases, in the scratch after block_sum's 32 * E floats) and, blending, the batch's weight and
  // the running buffers' old values. Loaded after the statistics, they were a chain of waits on
  // memory in thread 0's warp, three a channel (a running buffer's load behind the store before
  // it), E channels a block.
  static_assert((32 + 2) * E * sizeof(float) <= kGroupTileScratchBytes, "affine in the scratch");
  float* affine = scratch + 32 * E;
  float my_weight = 1.0f, my_bias = 0.0f;
  float2 my_running{};
  int64_t tracked = 0;  // the counter, used after the statistics: no wait on it here
  if (t < E) {
    if (p.weight) my_weight = p.weight[c0 + t];
    if (p.bias) my_bias = p.bias[c0 + t];
    if (p.running.mean) my_running = p.running.load(c0 + t), tracked = p.running.tracked();
  }
  auto load = [&](int64_t at) { return row_pack<T, E, kAccess>(x + at, 0); };
  // Each channel's shift: its value at the first position.
  float shift[E];
  {
    float v[E];
    load_elems<T, E, kAccess>(x, v);
#pragma unroll
    for (int e = 0; e < E; ++e) shift[e] = v[e];
  }

  // Pass 1: the head from memory into shared memory, kBatch packs in flight a thread, and the tail
  // after it; the sums of x - x0 as the packs arrive, in the order of every later pass.
  dev::Floats<E> acc{};
  // Misaligned pointers take 2 packs at a time, as forward_group_tile's.
  constexpr int kBatch = kAccess == E ? 4 : 2;
  stage_tile<kBatch>(staged, head, packs, at0, step, load, [&](const Raw& v) {
#pragma unroll
    for (int e = 0; e < E; ++e) acc.v[e] += dev::element(v, e) - shift[e];
  });
  auto visit = [&](auto&& f) { visit_tile(staged, head, packs, at0, step, load, f); };
  if (t < E) affine[t] = my_weight, affine[E + t] = my_bias;
  // block_sum's barrier also orders pass 1's stores to the head (and `affine`) before pass 2 reads
  // it.
  const dev::Floats<E> sums = dev::block_sum<E>(acc, scratch);
  float centre[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    centre[e] = sums.v[e] * p.inv_count;
    acc.v[e] = 0.0f;
  }

  // Pass 2: the centred squares.
  visit([&](const Raw& v, int64_t) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float d = (dev::element(v, e) - shift[e]) - centre[e];
      acc.v[e] = fmaf(d, d, acc.v[e]);
    }
  });
  const dev::Floats<E> m2 = dev::block_sum<E>(acc, scratch);

  // Pass 3 coefficients: y = (x - x0) * scale + offset (+ z), scale = invstd * w_c, offset = b_c -
  // centre * scale; thread e < E saves channel c0 + e's statistics.
  float scale[E], offset[E];
  float my_mean = 0.0f, my_var = 0.0f, my_invstd = 0.0f, my_m2 = 0.0f;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const float var = m2.v[e] * p.inv_count, invstd = rsqrtf(var + p.eps);
    scale[e] = invstd * affine[e];
    offset[e] = affine[E + e] - centre[e] * scale[e];
    if (t == e) my_mean = shift[e] + centre[e], my_var = var, my_invstd = invstd, my_m2 = m2.v[e];
  }
  if (t < E) {
    const float mean = my_mean, invstd = my_invstd;
    if (p.save_mean) p.save_mean[stat0 + t] = mean;
    if (p.save_invstd) p.save_invstd[stat0 + t] = invstd;
    const float run_var = p.unbiased ? my_m2 * p.inv_count_minus_1 : my_var;
    if (p.row_stats) p.row_stats[stat0 + t] = make_float2(mean, run_var);
    const float blend = p.running.weight(tracked);  // < 0: no running buffers, or a stuck counter
    if (blend >= 0.0f) p.running.blend(c0 + t, blend, my_running, mean, run_var);
  }
  const T* z = kResidual ? static_cast<const T*>(p.z) + first : nullptr;
  T* y = static_cast<T*>(p.y) + first;
  visit([&](const Raw& v, int64_t o) {
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
}

// The tiles of plan_instance_tiles as TileGeometry: group norm's tile geometry (set_tile_geometry:
// the staged head of each staged tensor, 1 / S) with each channel a group, for the forward's and
// the backward's parameters.
template <class Params>
void set_instance_tile_geometry(Params& p, ChannelShape s, const GroupTilePlan& g, int elem_bytes) {
  s.groups = s.c;
  set_tile_geometry(p, s, g, elem_bytes);
}

// Enqueues the kernel of the fusion and pointers (launch_forward_tiles); the caller checks
// cudaGetLastError.
template <class T>
void launch_instance_tiles(const InstanceTileParams& p, const GroupTilePlan& plan, int activation,
                           cudaStream_t stream) {
  launch_forward_tiles<T>(p, plan, activation, stream, [](auto access, auto act, auto residual) {
    return forward_instance_tile<T, decltype(access)::value, decltype(act)::value,
                                 decltype(residual)::value>;
  });
}

}  // namespace nk::cuda
