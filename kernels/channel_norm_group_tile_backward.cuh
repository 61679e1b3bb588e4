// Group norm training backward in NHWC with one read of x and dy (plan_group_tiles with both
// staged): a block per tile of k consecutive groups of one sample, as the forward's
// (channel_norm_group_tile.cuh), copies the tile of x and of dy into shared memory, sums du and
// du * (x - mean) per element over the thread's positions (with the saved statistics), and writes
// dx (and dz) from there:
//   dx = w_c * invstd * du - c1 - (x - mean) * c2,
//   c1 = invstd * sum_g / count,  c2 = invstd^2 * sum_gx / count,
//   sum_g = sum over the group's channels c of w_c * sum du,  sum_gx likewise with du * x-hat,
// the formulas of the split passes (channel_norm_backward.cu). x and dy are read once and dx
// written once, where the split passes read both twice in three launches.
// Thread t keeps pack t % P of its positions, so its channels, weights and two groups are fixed:
// the group sums add each thread's weighted per-element sums per group (tile_group_sums, a fixed
// order), and dweight and dbias take the tile's per-channel sums (sum du, sum du * x-hat) into a
// [N, C] array that the finalize adds over n in a fixed order: each channel adds its threads' sums
// in ascending position order, through the reduction scratch, a few elements of the pack a round.
// Tiles above the staged head read the rest from memory in both passes, and misaligned pointers
// load single elements into the same packs: no bit depends on the pointers or the head. y (ReLU
// without a mask) or z (SiLU with a residual) is read from memory in both passes.
// Tiles above a block are split into parts as the forward's (SplitStep): each part's group sums
// (sum_g, sum_gx) are added in rank order by thread g of every block, from the cluster's shared
// memories (kCluster) or from the workspace (kParts writes them, kApply adds them and reads x and
// dy again), and each part's channel sums go to their own row, channel_sums[n * K + rank, c],
// which the finalize adds over n and the parts in that order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_act_grad.cuh"
#include "channel_norm_group_tile.cuh"
#include "channel_norm_one_read_io.cuh"
#include "channel_norm_split_parts.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"

namespace nk::cuda {

// The tensors (save_mean and save_invstd: [N * G]; channel_sums [N * K, C]), the tiles (of x
// and of dy: head_packs of each staged), then 1 / (S * C/G); for split tiles the parts and the
// two-launch form's workspace.
struct GroupTileBackwardParams : OneReadBackwardIo, TileGeometry {
  float inv_count;
  int parts;           // K (1: a block a tile)
  int part_positions;  // L: positions of a part (the last may have fewer)
  float2* part_sums;   // [tiles][K][k]: each part's (sum_g, sum_gx) a group; kParts and kApply
};

// One block per tile (blockIdx.x: n * G/k + the tile); kAccess: elements per global access (E, or
// 1 for misaligned pointers); kSource: where act' comes from (kZ: SiLU's u adds z). Two blocks of
// 512 an SM (64 registers), as the forward, except SiLU in 16-bit types and with a residual in
// fp32: within 64 registers their per-element sums beside the exponentials spilled (16-bit: 76 to
// 176 bytes; fp32 with z: 24), so one block of 512 an SM.
template <class T, int kAccess, int kSource, bool kZ>
__host__ __device__ constexpr int group_tile_backward_min_blocks() {
  return kSource == kSiluOfU && (sizeof(T) == 2 || kZ) ? 1 : 2;
}

// The split steps' parts stage up to 219 KiB, a block an SM: one of 512 (128 registers).
template <class T, int kAccess, int kSource, bool kZ, SplitStep kStep>
__host__ __device__ constexpr int group_tile_backward_min_blocks() {
  return kStep == SplitStep::kWhole ? group_tile_backward_min_blocks<T, kAccess, kSource, kZ>() : 1;
}

template <class T, int kAccess, int kSource, bool kZ, SplitStep kStep = SplitStep::kWhole>
__global__ void __launch_bounds__(kResidentMaxThreads,
                                  group_tile_backward_min_blocks<T, kAccess, kSource, kZ, kStep>())
    backward_group_tile(GroupTileBackwardParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  constexpr bool kAux = kSource == kFromY || (kSource == kSiluOfU && kZ);
  constexpr bool kSplit = kStep != SplitStep::kWhole;
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  // After the channel sums' rounds (which use all of the scratch): the part's and the tile's
  // (sum_g, sum_gx) of each group.
  float2* part_sh = reinterpret_cast<float2*>(scratch + kTileSumsFloats);
  float2* tile_sh = part_sh + kMaxTileGroups;
  const int threads = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  const int pp = p.pos_packs, k_groups = p.groups_per_tile;
  // 32-bit: the plan keeps the blocks below 2^31.
  const unsigned parts = kSplit ? static_cast<unsigned>(p.parts) : 1u;
  const unsigned block = kSplit ? blockIdx.x / parts : blockIdx.x;
  const unsigned rank = kSplit ? blockIdx.x - block * parts : 0u;
  const TileThread w = tile_thread<E>(p, block);
  const int64_t n = w.n, c0 = w.c0, at0 = w.at0, step = w.step;
  const unsigned tile = w.tile;
  const int j = w.j, lo = w.lo, split = w.split;
  const int begin = kSplit ? static_cast<int>(rank) * p.part_positions : 0;
  const int positions = kSplit ? min(p.part_positions, p.s - begin) : p.s;  // the last: fewer
  const int packs = positions * pp;
  // The last part may be shorter than the head (sized for the others).
  const int head = kStep == SplitStep::kApply ? 0 : (p.head_packs < packs ? p.head_packs : packs);
  Raw* xs = reinterpret_cast<Raw*>(shared_bytes + kGroupTileScratchBytes);
  Raw* dys = xs + p.head_packs;
  const int64_t first = w.first + int64_t{begin} * p.c;  // the part's first position
  const T* x = static_cast<const T*>(p.x) + first;
  const T* dy = static_cast<const T*>(p.dy) + first;
  const T* aux = kAux ? static_cast<const T*>(p.aux) + first : nullptr;
  float2* part_sums = kSplit ? p.part_sums + int64_t{block} * parts * k_groups : nullptr;

  // Each element's statistics and coefficients are selected per element (its group: lo or
  // lo + 1), as the forward's shifts.
  const int64_t stat = (n * p.tiles_per_sample + tile) * p.groups_per_tile + lo;
  const float mean_lo = p.save_mean[stat], invstd_lo = p.save_invstd[stat];
  const float mean_hi = split < E ? p.save_mean[stat + 1] : 0.0f;
  const float invstd_hi = split < E ? p.save_invstd[stat + 1] : 0.0f;
  auto mean = [&](int e) { return e < split ? mean_lo : mean_hi; };
  auto invstd = [&](int e) { return e < split ? invstd_lo : invstd_hi; };
  const float* weight = p.weight ? p.weight + c0 + j * E : nullptr;
  const float* bias = kSource == kSiluOfU && p.bias ? p.bias + c0 + j * E : nullptr;
  // SiLU's (scale, b) of element e, u = (x - mean) * scale + b, scale = invstd * w: in registers
  // where the kernel has 128 of them (one block an SM), else loaded at each use (from L1), as 16
  // more registers beside the 16 sums spilled within 64.
  constexpr bool kCoefsInRegisters =
      kSource == kSiluOfU && group_tile_backward_min_blocks<T, kAccess, kSource, kZ>() == 1;
  float silu_scale[kCoefsInRegisters ? E : 1], silu_bias[kCoefsInRegisters ? E : 1];
  if constexpr (kCoefsInRegisters) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      silu_scale[e] = invstd(e) * (weight ? weight[e] : 1.0f);
      silu_bias[e] = bias ? bias[e] : 0.0f;
    }
  }
  auto silu_coef = [&](int e) {
    if constexpr (kCoefsInRegisters) {
      return make_float2(silu_scale[e], silu_bias[e]);
    } else if constexpr (kSource == kSiluOfU) {
      const float w = weight ? dev::load_float_each_time(weight + e) : 1.0f;
      return make_float2(invstd(e) * w, bias ? dev::load_float_each_time(bias + e) : 0.0f);
    } else {
      return make_float2(0.0f, 0.0f);
    }
  };

  auto load = [](const T* g, int64_t at) { return row_pack<T, E, kAccess>(g + at, 0); };
  // The E aux values of the pack at element offset o (a multiple of E: C and c0 are).
  auto load_aux = [&](int64_t o, float (&a)[E]) {
    load_act_inputs<T, E, kAccess, kSource, kAux>(p.mask, first + o, aux, o, a);
  };
  // du of the pack's element e (k: SiLU's coefficients, unused by the other sources).
  auto du_at = [&](const Raw& xv, const Raw& dv, const float (&a)[E], float2 k, int e) {
    return du_of<kSource, kZ>(dev::element(dv, e), dev::element(xv, e), a[e], mean(e), k.x, k.y);
  };

  // The tile's group sums, of its lo and lo + 1 groups.
  float2 sum_g, sum_gx;
  if constexpr (kStep != SplitStep::kApply) {
    // Pass 1: the head of x and of dy into shared memory, kBatch packs of each in flight a thread,
    // and the tail after it; per element the sums of du and du * (x - mean) as the packs arrive.
    float sum_du[E] = {}, sum_dux[E] = {};
    // Two packs of each in flight where the registers allow; one with SiLU's 8 exponentials a pack
    // (two spilled in 16-bit types) and with the mask's bits (12 bytes spilled on sm_80).
    constexpr int kBatch = kAccess == E && (kSource == kNoAct || kSource == kFromY) ? 2 : 1;
    int64_t at = at0;
    for (int q0 = t; q0 < packs; q0 += kBatch * threads) {
      Raw xv[kBatch], dv[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        if (q0 + k * threads < packs) {
          xv[k] = load(x, at + k * step);
          dv[k] = load(dy, at + k * step);
        }
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int q = q0 + k * threads;
        if (q < packs) {
          if (q < head) {
            xs[q] = xv[k];
            dys[q] = dv[k];
          }
          float a[E];
          load_aux(at + k * step, a);
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const float du = du_at(xv[k], dv[k], a, silu_coef(e), e);
            sum_du[e] += du;
            sum_dux[e] = fmaf(du, dev::element(xv[k], e) - mean(e), sum_dux[e]);
          }
        }
      }
      at += kBatch * step;
    }

    // dweight and dbias: each channel's sums over the part's positions, (sum du, sum du * x-hat),
    // to channel_sums[n * K + rank, c]. A round stores `per_round` elements of every thread's pack
    // in the scratch; then a thread per (element, sum, pack) column adds its rows in ascending
    // position.
    if (p.channel_sums != nullptr) {  // uniform over the block
      constexpr int kScratchFloats = static_cast<int>(kGroupTileScratchBytes / sizeof(float));
      const int per_round = kScratchFloats / (2 * threads) < E ? kScratchFloats / (2 * threads) : E;
      const int rows = threads / pp;
      float* sums = reinterpret_cast<float*>(p.channel_sums) + 2 * ((n * parts + rank) * p.c + c0);
      for (int e0 = 0; e0 < E; e0 += per_round) {  // uniform: the rounds
        const int count = E - e0 < per_round ? E - e0 : per_round;
#pragma unroll
        for (int e = 0; e < E; ++e) {
          if (e >= e0 && e < e0 + count) {
            scratch[2 * (e - e0) * threads + t] = sum_du[e];
            scratch[(2 * (e - e0) + 1) * threads + t] = sum_dux[e] * invstd(e);
          }
        }
        __syncthreads();
        for (int col = t; col < 2 * count * pp; col += threads) {
          const int pair = col / pp, jj = col - pair * pp;  // pair: 2 * element + which sum
          const float* part = scratch + pair * threads + jj;
          float v = 0.0f;
          for (int r = 0; r < rows; ++r) v += part[r * pp];
          sums[2 * (jj * E + e0 + pair / 2) + pair % 2] = v;
        }
        __syncthreads();  // the scratch is free for the next round
      }
    }

    // The group sums: each thread's weighted per-element sums per group, then the block's.
    float g_lo = 0.0f, g_hi = 0.0f, gx_lo = 0.0f, gx_hi = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float w = weight ? weight[e] : 1.0f;
      if (e < split) {
        g_lo = fmaf(w, sum_du[e], g_lo);
        gx_lo = fmaf(w, sum_dux[e], gx_lo);
      } else {
        g_hi = fmaf(w, sum_du[e], g_hi);
        gx_hi = fmaf(w, sum_dux[e], gx_hi);
      }
    }
    sum_g = tile_group_sums(g_lo, g_hi, p, lo, E, scratch);
    sum_gx = tile_group_sums(gx_lo, gx_hi, p, lo, E, scratch);
    if constexpr (kSplit) {
      // The threads of position 0 publish the part's sums of the groups that start in their packs
      // (at element 0: lo; at element `split`: lo + 1).
      if (t < pp) {
        auto publish = [&](int g, float2 v) {
          if constexpr (kStep == SplitStep::kParts) {
            part_sums[rank * k_groups + g] = v;
          } else {
            part_sh[g] = v;
          }
        };
        if (j * E % p.cpg == 0) publish(lo, make_float2(sum_g.x, sum_gx.x));
        if (split < E) publish(lo + 1, make_float2(sum_g.y, sum_gx.y));
      }
      if constexpr (kStep == SplitStep::kParts) return;
    }
  }

  if constexpr (kSplit) {
    // The tile's group sums: thread g adds group g's parts in rank order, from the cluster's
    // shared memories or from the workspace.
    if constexpr (kStep == SplitStep::kCluster) {
      dev::cluster_arrive();  // every part published (release), then
      dev::cluster_wait();    // visible here (acquire)
    }
    if (t < k_groups) {
      auto part = [&](int r) {
        if constexpr (kStep == SplitStep::kCluster) {
          return dev::load_cluster_float2(dev::cluster_address(&part_sh[t], r));
        } else {
          return part_sums[r * k_groups + t];
        }
      };
      tile_sh[t] = add_parts(p.parts, part);
    }
    if constexpr (kStep == SplitStep::kCluster) {
      dev::cluster_arrive();  // done reading the others' parts: they may exit after the wait below
    }
    __syncthreads();
    const float2 s_lo = tile_sh[lo], s_hi = split < E ? tile_sh[lo + 1] : make_float2(0.0f, 0.0f);
    sum_g = make_float2(s_lo.x, s_hi.x);
    sum_gx = make_float2(s_lo.y, s_hi.y);
  }
  // sum_gx holds sum w * du * (x - mean): x-hat's invstd multiplies the total once.
  const float c1_lo = invstd_lo * sum_g.x * p.inv_count;
  const float c2_lo = invstd_lo * invstd_lo * (sum_gx.x * invstd_lo) * p.inv_count;
  const float c1_hi = invstd_hi * sum_g.y * p.inv_count;
  const float c2_hi = invstd_hi * invstd_hi * (sum_gx.y * invstd_hi) * p.inv_count;

  // Pass 2: dx = scale_c * du - c1 - (x - mean) * c2, and dz = du, over the thread's packs in the
  // order of pass 1: the head's from shared memory, then the tail's from memory (a loop each, as
  // the forward's).
  T* dx = static_cast<T*>(p.dx);
  T* dz = static_cast<T*>(p.dz);
  float scale[E];  // invstd * w_c (SiLU: silu_coef's)
#pragma unroll
  for (int e = 0; e < E; ++e) scale[e] = invstd(e) * (weight ? weight[e] : 1.0f);
  auto dx_pack = [&](const Raw& xv, const Raw& dv, int64_t o) {
    float a[E];
    load_aux(o, a);
    float r[E], du[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const bool in_lo = e < split;
      const float2 k = silu_coef(e);
      du[e] = du_at(xv, dv, a, k, e);
      const float xm = dev::element(xv, e) - mean(e);
      const float sc = kSource == kSiluOfU ? k.x : scale[e];
      r[e] = fmaf(sc, du[e], fmaf(xm, in_lo ? -c2_lo : -c2_hi, in_lo ? -c1_lo : -c1_hi));
    }
    if (dx != nullptr) store_elems<T, E, kAccess>(dx + first + o, r);
    if (dz != nullptr) store_elems<T, E, kAccess>(dz + first + o, du);
  };
  int q = t;
  int64_t o = at0;
  for (; q < head; q += threads, o += step) {
    const Raw xv = xs[q], dv = dys[q];
    dx_pack(xv, dv, o);
  }
  for (; q < packs; q += threads, o += step) dx_pack(load(x, o), load(dy, o), o);
  if constexpr (kStep == SplitStep::kCluster) dev::cluster_wait();
}

// Shared memory of a launch: the scratch, the staged heads of x and dy.
inline size_t group_tile_backward_smem(int head_packs) {
  return kGroupTileScratchBytes + size_t{32} * head_packs;
}

// The scratch's rounds hold at least one element of every thread's pack (2 floats a thread).
static_assert(kGroupTileScratchBytes >= 2 * kResidentMaxThreads * sizeof(float),
              "tile scratch too small for a round of channel sums");

}  // namespace nk::cuda
