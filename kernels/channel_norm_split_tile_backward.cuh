// Instance norm training backward in NHWC, and batch norm's as one sample (instance_tile_shape),
// where a tile of x and dy exceeds one block (plan_instance_tiles with both staged and parts > 1):
// the forward's split (channel_norm_split_tile.cuh) of the tile's S positions into K parts of L =
// ceil(S / K), a block a part (blockIdx.x = tile * K + rank). Each block stages its part of x and
// of dy and sums du and du * (x - mean) per channel over it (backward_instance_tile's pass 1, with
// the saved statistics); the tile's sums are the parts' added in rank order, in every block alike,
// then each block writes dx (and dz) for its part:
//   dx = w_c * invstd * du - c1 - (x - mean) * c2,
//   c1 = invstd * w_c * sum du / S,  c2 = invstd^2 * w_c * sum du * x-hat / S.
// Rank 0 leaves the channels' (sum du, sum du * x-hat) in channel_sums[n, c] for dweight and dbias,
// or with one sample writes them itself. The forms are the forward's: kCluster adds the parts
// from the cluster's shared memories (x and dy read once); kParts then kApply add them from the
// workspace (both read twice); the same arithmetic, so the same bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_act_grad.cuh"
#include "channel_norm_group_tile.cuh"
#include "channel_norm_instance_tile_backward.cuh"
#include "channel_norm_split_tile.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"

namespace nk::cuda {

// The instance tiles' backward parameters (head_packs: a part's staged head of each tensor), the
// parts, and the workspace of the two-launch form.
struct SplitTileBackwardParams : InstanceTileBackwardParams {
  int parts;           // K
  int part_positions;  // L
  float* part_sums;  // [tiles][K][2E]: each part's sums (du, then du * (x - mean)); kParts, kApply
};

// The scratch before the staged heads: block_sum's 32 * 2E floats, this part's 2E sums (read by
// the cluster) and the tile's (for every thread).
template <int E>
struct SplitBackwardScratch {
  float sums[32 * 2 * E];
  float part[2 * E];
  float tile[2 * E];
};

// kAccess: elements per global access (E, or 1 for misaligned pointers); kSource, kZ: the fusion
// (channel_norm_act_grad.cuh). One block of 512 an SM (128 registers), as backward_instance_tile.
template <class T, int kAccess, int kSource, bool kZ, SplitStep kStep>
__global__ void __launch_bounds__(kResidentMaxThreads, 1)
    backward_split_tile(SplitTileBackwardParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  constexpr bool kAux = kSource == kFromY || (kSource == kSiluOfU && kZ);
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  static_assert(sizeof(SplitBackwardScratch<E>) <= kGroupTileScratchBytes, "split scratch");
  auto& sh = *reinterpret_cast<SplitBackwardScratch<E>*>(shared_bytes);
  Raw* xs = reinterpret_cast<Raw*>(shared_bytes + kGroupTileScratchBytes);
  Raw* dys = xs + p.head_packs;
  const int threads = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  // 32-bit: the plan keeps the blocks below 2^31.
  const unsigned parts = static_cast<unsigned>(p.parts);
  const unsigned tile = blockIdx.x / parts, rank = blockIdx.x - tile * parts;
  const unsigned tiles_per_sample = static_cast<unsigned>(p.tiles_per_sample);
  const unsigned n = tile / tiles_per_sample;
  const int64_t c0 = int64_t{tile - n * tiles_per_sample} * E;
  const int64_t stat0 = int64_t{n} * p.c + c0;
  const int begin = static_cast<int>(rank) * p.part_positions;
  const int packs = p.s - begin < p.part_positions ? p.s - begin : p.part_positions;
  const int64_t first = int64_t{n} * p.sample_len + c0 + int64_t{begin} * p.c;
  const int64_t at0 = int64_t{t} * p.c, step = int64_t{threads} * p.c;
  // The last part may be shorter than the head (sized for the others).
  const int head = kStep == SplitStep::kApply ? 0 : (p.head_packs < packs ? p.head_packs : packs);
  const T* x = static_cast<const T*>(p.x) + first;
  const T* dy = static_cast<const T*>(p.dy) + first;
  const T* aux = kAux ? static_cast<const T*>(p.aux) + first : nullptr;
  const float* weight = p.weight ? p.weight + c0 : nullptr;
  const float* bias = kSource == kSiluOfU && p.bias ? p.bias + c0 : nullptr;

  // Per channel: the statistics, scale = invstd * w_c (SiLU's u = (x - mean) * scale + b).
  float mean[E], invstd[E], scale[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    mean[e] = p.save_mean[stat0 + e];
    invstd[e] = p.save_invstd[stat0 + e];
    scale[e] = invstd[e] * (weight ? weight[e] : 1.0f);
  }
  auto load = [](const T* g, int64_t at) { return row_pack<T, E, kAccess>(g + at, 0); };
  auto load_aux = [&](int64_t o, float(&a)[E]) {
    load_act_inputs<T, E, kAccess, kSource, kAux>(p.mask, first + o, aux, o, a);
  };
  auto du_at = [&](const Raw& xv, const Raw& dv, const float(&a)[E], int e) {
    const float b = kSource == kSiluOfU && bias ? bias[e] : 0.0f;
    return du_of<kSource, kZ>(dev::element(dv, e), dev::element(xv, e), a[e], mean[e], scale[e], b);
  };

  if constexpr (kStep != SplitStep::kApply) {
    // Pass 1: the part's heads into shared memory, the sums as the packs arrive.
    dev::Floats<2 * E> sums{};  // [e]: sum du, [E + e]: sum du * (x - mean)
    int64_t at = at0;
    for (int q = t; q < packs; q += threads, at += step) {
      const Raw xv = load(x, at), dv = load(dy, at);
      if (q < head) {
        xs[q] = xv;
        dys[q] = dv;
      }
      float a[E];
      load_aux(at, a);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float du = du_at(xv, dv, a, e);
        sums.v[e] += du;
        sums.v[E + e] = fmaf(du, dev::element(xv, e) - mean[e], sums.v[E + e]);
      }
    }
    // The block's sums; its barrier also orders the heads' stores before pass 2.
    sums = dev::block_sum<2 * E>(sums, sh.sums);
#pragma unroll
    for (int i = 0; i < 2 * E; ++i) {
      if (t == i) {
        if constexpr (kStep == SplitStep::kParts) {
          p.part_sums[(int64_t{tile} * parts + rank) * (2 * E) + i] = sums.v[i];
        } else {
          sh.part[i] = sums.v[i];
        }
      }
    }
    if constexpr (kStep == SplitStep::kParts) return;
  }

  // The tile's sums: thread i adds sum i of the parts in rank order.
  if constexpr (kStep == SplitStep::kCluster) {
    dev::cluster_arrive();  // every part published (release), then
    dev::cluster_wait();    // visible here (acquire)
  }
  if (t < 2 * E) {
    auto part = [&](int r) {
      if constexpr (kStep == SplitStep::kCluster) {
        return dev::load_cluster_float(dev::cluster_address(&sh.part[t], r));
      } else {
        return p.part_sums[(int64_t{tile} * parts + r) * (2 * E) + t];
      }
    };
    sh.tile[t] = add_parts(p.parts, part);
  }
  if constexpr (kStep == SplitStep::kCluster) {
    dev::cluster_arrive();  // done reading the others' parts: they may exit after the wait below
  }
  __syncthreads();

  float c1[E], c2[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const float wt = weight ? weight[e] : 1.0f;
    c1[e] = invstd[e] * (wt * sh.tile[e]) * p.inv_count;
    c2[e] = invstd[e] * invstd[e] * (wt * sh.tile[E + e] * invstd[e]) * p.inv_count;
  }
  if (rank == 0 && t == 0) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float dbias = sh.tile[e], dweight = sh.tile[E + e] * invstd[e];
      if (p.channel_sums != nullptr) p.channel_sums[stat0 + e] = make_float2(dbias, dweight);
      if (p.dbias != nullptr) p.dbias[c0 + e] = dbias;
      if (p.dweight != nullptr) p.dweight[c0 + e] = dweight;
    }
  }

  // Pass 2: dx = scale * du - c1 - (x - mean) * c2, and dz = du, over the thread's packs in the
  // order of pass 1: the head's from shared memory, then the rest from memory.
  T* dx = p.dx ? static_cast<T*>(p.dx) + first : nullptr;
  T* dz = p.dz ? static_cast<T*>(p.dz) + first : nullptr;
  auto dx_pack = [&](const Raw& xv, const Raw& dv, int64_t o) {
    float a[E];
    load_aux(o, a);
    float r[E], du[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      du[e] = du_at(xv, dv, a, e);
      r[e] = fmaf(scale[e], du[e], fmaf(dev::element(xv, e) - mean[e], -c2[e], -c1[e]));
    }
    if (dx != nullptr) store_elems<T, E, kAccess>(dx + o, r);
    if (dz != nullptr) store_elems<T, E, kAccess>(dz + o, du);
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

}  // namespace nk::cuda
