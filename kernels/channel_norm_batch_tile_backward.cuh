// Batch norm training backward in NCHW (S > 1) with one read of x and dy (plan_batch_tiles with
// both staged): a block per channel stages the channel's runs of x and of dy in shared memory as
// the forward does (channel_norm_batch_tile.cuh: Q packs a run, the elements outside it masked
// out), sums du and du * (x - mean) over them (with the saved statistics), writes dbias and
// dweight, and writes dx (and dz) from there:
//   dx = w_c * invstd * du - c1 - (x - mean) * c2,
//   c1 = invstd * w_c * sum du / (N * S),  c2 = invstd^2 * w_c * sum du * x-hat / (N * S),
// the same formulas as the instance tiles' backward with one statistic a channel. x and dy are
// read once and dx written once, in one launch, where the split passes read both twice in three.
// Thread t takes the slots t, t + R, ... in every pass and keeps E pairs of sums, which the block
// adds in a fixed order (dev::block_sum); misaligned pointers load single elements into the same
// packs, and tiles above the staged head read the rest of x and dy from memory in both passes, so
// no bit depends on the pointers or the head. y (ReLU without a mask) or z (SiLU with a residual)
// is read from memory in both passes. A channel above a block is split into parts of consecutive
// runs as the forward's (SplitStep, below).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_act_grad.cuh"
#include "channel_norm_batch_tile.cuh"
#include "channel_norm_one_read_io.cuh"
#include "channel_norm_split_parts.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"

namespace nk::cuda {

// The tensors (save_mean and save_invstd: [C]; channel_sums unused), the runs, 1 / (N * S), and
// dweight and dbias, which each block writes for its channel.
struct BatchTileBackwardParams : OneReadBackwardIo, BatchTileGeometry {
  float inv_count;
  float* dweight;    // [C], nullable
  float* dbias;      // [C], nullable
  int parts;         // blocks a channel (split tiles; else 1)
  int part_runs;     // runs a part (the last may have fewer)
  float* part_sums;  // [C][parts][2]: each part's sum du and sum du * (x - mean); kParts, kApply
};

// The shared memory before the staged tiles: block_sum's 2 * 32 floats; a split tile's
// SplitSumsScratch.
template <SplitStep kStep>
constexpr size_t kBatchTileBackwardScratchBytes = kStep == SplitStep::kWhole
                                                      ? 2 * 32 * sizeof(float)
                                                      : sizeof(SplitSumsScratch);

// The E aux values (y, z or the mask's bits) of the pack at r: the pack's access where it is whole
// and the pointers allow it, else the run's elements alone (the rest 0).
template <class T, int E, int kAccess, int kSource, bool kAux>
__device__ __forceinline__ void load_run_act_inputs(const OneReadBackwardIo& p, const T* aux,
                                                    const RunPack<E>& r, float (&a)[E]) {
  if constexpr (kSource == kFromMask || !kAux) {
    load_act_inputs<T, E, kAccess, kSource, kAux>(p.mask, r.at, aux, r.at, a);  // bits of words
  } else if (r.range.whole()) {
    load_act_inputs<T, E, kAccess, kSource, kAux>(p.mask, r.at, aux, r.at, a);
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) a[e] = r.range.has(e) ? dev::to_float(aux[r.at + e]) : 0.0f;
  }
}

// Two blocks of 512 an SM (64 registers): a whole tile stages at most kResidentMaxBytes of x and
// dy, so two fit, and so do the parts of up to half the device's opt-in (larger parts hold their
// SM alone). The split steps of SiLU in 16 bits spilled within 64 registers: one (128).
template <class T, int kSource, SplitStep kStep>
__host__ __device__ constexpr int batch_tile_backward_min_blocks() {
  return kStep != SplitStep::kWhole && kSource == kSiluOfU && sizeof(T) == 2 ? 1 : 2;
}

// One block per channel (blockIdx.x); kAccess: elements per global access (E, or 1 for misaligned
// pointers); kSource: where act' comes from (kZ: SiLU's u adds z). Two blocks of up to 512 an SM
// where the staged packs allow it (batch_tile_backward_min_blocks).
// kStep: kWhole, a block a channel. Else the channel's runs are split into parts as the
// forward's (channel_norm_batch_tile.cuh), a block a part (blockIdx.x = channel * parts + rank):
// each part's two sums, added in rank order by every block alike, from the cluster's shared
// memories (kCluster: x and dy read once) or from the workspace (kParts writes them, kApply adds
// them and reads x and dy again). Rank 0 writes dweight and dbias.
template <class T, int kAccess, int kSource, bool kZ, SplitStep kStep = SplitStep::kWhole>
__global__ void __launch_bounds__(kResidentMaxThreads,
                                  batch_tile_backward_min_blocks<T, kSource, kStep>())
    backward_batch_tile(BatchTileBackwardParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  constexpr bool kAux = kSource == kFromY || (kSource == kSiluOfU && kZ);
  constexpr bool kSplit = kStep != SplitStep::kWhole;
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  auto& split_sh = *reinterpret_cast<SplitSumsScratch*>(shared_bytes);  // split forms
  // 32-bit: the plan keeps the blocks below 2^31.
  const unsigned parts = kSplit ? static_cast<unsigned>(p.parts) : 1u;
  const unsigned channel = kSplit ? blockIdx.x / parts : blockIdx.x;
  const unsigned rank = kSplit ? blockIdx.x - channel * parts : 0u;
  const int run0 = static_cast<int>(rank) * p.part_runs;  // kSplit: this part's first run
  const int runs = kSplit ? min(p.n - run0, p.part_runs) : p.n;
  const int packs = runs * p.seg_packs;
  const int head = kStep == SplitStep::kApply ? 0 : min(p.head_packs, packs);
  const int threads = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  Raw* xs = reinterpret_cast<Raw*>(shared_bytes + kBatchTileBackwardScratchBytes<kStep>);
  Raw* dys = xs + head;
  const int64_t c = channel;
  const int64_t start = c * p.s + (kSplit ? int64_t{run0} * p.sample_len : 0);  // the block's run 0
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  const T* aux = kAux ? static_cast<const T*>(p.aux) : nullptr;
  const float mean = p.save_mean[c], invstd = p.save_invstd[c];
  const float wt = p.weight ? p.weight[c] : 1.0f, scale = invstd * wt;
  const float bias = kSource == kSiluOfU && p.bias ? p.bias[c] : 0.0f;
  auto du_at = [&](const Raw& xv, const Raw& dv, const float(&a)[E], int e) {
    return du_of<kSource, kZ>(dev::element(dv, e), dev::element(xv, e), a[e], mean, scale, bias);
  };

  // Pass 1: the runs of x and dy into shared memory, two packs of each in flight a thread (as the
  // instance and group tiles' backwards; one of each kept 16 KiB in flight an SM where a part
  // holds its SM), the sums of du and du * (x - mean) over the run's elements as the packs
  // arrive, in the order of pass 2.
  dev::Floats<2> sums{};
  if constexpr (kStep != SplitStep::kApply) {
    constexpr int kBatch = 2;
    float sum_du[E] = {}, sum_dux[E] = {};
    for (int slot0 = t; slot0 < packs; slot0 += kBatch * threads) {
      // The 16-byte loads first, all in flight, held as 32-bit words (as the forward: merged
      // with the single elements' packs, 16-bit halves were split apart and joined again).
      uint4 xw[kBatch], dw[kBatch];
      bool loaded[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int slot = slot0 + k * threads;
        const RunPack<E> r = run_pack<E>(p, start, slot);
        loaded[k] = slot < packs && whole_access<E, kAccess>(p, r);
        if (loaded[k]) {
          xw[k] = *reinterpret_cast<const uint4*>(x + r.at);
          dw[k] = *reinterpret_cast<const uint4*>(dy + r.at);
        }
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int slot = slot0 + k * threads;
        if (slot >= packs) continue;
        const RunPack<E> r = run_pack<E>(p, start, slot);
        if (!loaded[k]) {
          const Raw xe = load_run_elements<T, E>(x, r.at, r.range);
          const Raw de = load_run_elements<T, E>(dy, r.at, r.range);
          memcpy(&xw[k], &xe, sizeof(xw[k]));
          memcpy(&dw[k], &de, sizeof(dw[k]));
        }
        Raw xv, dv;
        memcpy(&xv, &xw[k], sizeof(xv));
        memcpy(&dv, &dw[k], sizeof(dv));
        if (slot < head) {
          xs[slot] = xv;
          dys[slot] = dv;
        }
        float a[E];
        load_run_act_inputs<T, E, kAccess, kSource, kAux>(p, aux, r, a);
        const bool whole = r.range.whole();
#pragma unroll
        for (int e = 0; e < E; ++e) {
          // Outside the run x and du are garbage (another channel's, maybe inf): selected away.
          const bool in = whole || r.range.has(e);
          const float du = du_at(xv, dv, a, e);
          sum_du[e] += in ? du : 0.0f;
          sum_dux[e] = in ? fmaf(du, dev::element(xv, e) - mean, sum_dux[e]) : sum_dux[e];
        }
      }
    }
    // The block's sums; its barrier also orders pass 1's stores before pass 2.
#pragma unroll
    for (int e = 0; e < E; ++e) {
      sums.v[0] += sum_du[e];
      sums.v[1] += sum_dux[e];
    }
    sums = dev::block_sum<2>(sums, scratch);
    if constexpr (kSplit) {
      if (t < 2) {
        // Selected, not indexed by t: an index kept the sums in local memory.
        const float mine = t == 0 ? sums.v[0] : sums.v[1];
        if constexpr (kStep == SplitStep::kParts) {
          p.part_sums[(int64_t{channel} * parts + rank) * 2 + t] = mine;
        } else {
          split_sh.part[t] = mine;
        }
      }
      if constexpr (kStep == SplitStep::kParts) return;
    }
  }
  if constexpr (kSplit) {
    // The channel's sums, the parts' added in rank order.
    summed_parts<kStep>(split_sh, p.parts, p.part_sums + int64_t{channel} * parts * 2);
    sums.v[0] = split_sh.tile[0];
    sums.v[1] = split_sh.tile[1];
  }
  const float c1 = invstd * (wt * sums.v[0]) * p.inv_count;
  const float c2 = invstd * invstd * (wt * sums.v[1] * invstd) * p.inv_count;
  if (threadIdx.x == 0 && rank == 0) {
    if (p.dbias != nullptr) p.dbias[c] = sums.v[0];
    if (p.dweight != nullptr) p.dweight[c] = sums.v[1] * invstd;
  }

  // Pass 2: dx = scale * du - c1 - (x - mean) * c2, and dz = du, from shared memory.
  T* dx = static_cast<T*>(p.dx);
  T* dz = static_cast<T*>(p.dz);
  if (dx == nullptr && dz == nullptr) {
    if constexpr (kStep == SplitStep::kCluster) dev::cluster_wait();
    return;
  }
  auto dx_pack = [&](const Raw& xv, const Raw& dv, const RunPack<E>& r) {
    float a[E];
    load_run_act_inputs<T, E, kAccess, kSource, kAux>(p, aux, r, a);
    float out[E], du[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      du[e] = du_at(xv, dv, a, e);
      out[e] = fmaf(scale, du[e], fmaf(dev::element(xv, e) - mean, -c2, -c1));
    }
    if (dx != nullptr) store_run_pack<T, E, kAccess>(dx, r, out);
    if (dz != nullptr) store_run_pack<T, E, kAccess>(dz, r, du);
  };
  // The head's packs from shared memory, then the tail's from memory, a loop each.
  int q = static_cast<int>(threadIdx.x);
  for (; q < head; q += threads) dx_pack(xs[q], dys[q], run_pack<E>(p, start, q));
  for (; q < packs; q += threads) {
    const RunPack<E> r = run_pack<E>(p, start, q);
    dx_pack(load_run_pack<T, E, kAccess>(p, x, r), load_run_pack<T, E, kAccess>(p, dy, r), r);
  }
  if constexpr (kStep == SplitStep::kCluster) dev::cluster_wait();
}

}  // namespace nk::cuda
