// Group norm training forward in NHWC with one read of x (plan_group_tiles): a block per tile of k
// consecutive groups of one sample, S positions of k * C/G contiguous channels each (C apart),
// staged in shared memory in the order of the tile's packs (position by position), its k exact
// two-pass statistics taken from there, then y written from there (with the fused residual,
// activation and ReLU mask). x is read once and y written once, with no partials or finalize.
//
// Thread t takes pack j = t % P of the positions t / P, t / P + R, ... (P packs a position, R = the
// block's threads / P): its channels never change, so its weights are loaded once, and its pack's
// elements belong to one group or two (lo, then hi from element `split` on). It sums each element
// of its pack apart over its positions and adds those sums per group at the end of a pass; the
// block adds the threads' per group in a fixed order (tile_group_sums). Like the rows' kernel, the
// statistics are of x - x0, x0 the group's first element (so |mean| >> std keeps its accuracy), and
// every pass visits a thread's packs in the same order, whether they come from shared memory (the
// head) or from memory (the tail of tiles longer than the staged part), and whatever the pointers
// allow (one 16-byte access or single elements): no bit depends on the pointers or the head, and
// the block (the reduction tree) depends on the shape only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "channel_norm_one_read_io.cuh"
#include "channel_norm_plan.hpp"
#include "channel_norm_resident.cuh"
#include "channel_norm_split_parts.cuh"
#include "common/activation.cuh"
#include "common/check.cuh"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"

namespace nk::cuda {

// The tiles of both tile kernels (set_tile_geometry).
struct TileGeometry {
  int64_t c;             // C: elements from a position to the next
  int64_t sample_len;    // S * C
  int s;                 // S: positions
  int cpg;               // C / G: channels of a group
  int tiles_per_sample;  // G / k
  int groups_per_tile;   // k
  int pos_packs;         // P
  int head_packs;        // packs of the tile staged (of each staged tensor); the rest read per pass
};

// Where a thread of a tile's block works. The block's tile (blockIdx.x = n * G/k + tile) starts at
// channel c0 of sample n, element `first`; thread t takes pack j = t % P of the positions t / P,
// t / P + R, ... (R = the block's threads / P): at0 and step are the element offsets (from
// `first`) of its first pack and from one of its packs to the next. The pack's elements belong to
// group lo of the tile (elements [0, split)) and lo + 1 (from there).
struct TileThread {
  unsigned tile;
  int64_t n, c0, first;
  int j;
  int64_t at0, step;
  int lo, split;
};

template <int E>
__device__ __forceinline__ TileThread tile_thread(const TileGeometry& p, unsigned block) {
  const int threads = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  const int pp = p.pos_packs;
  TileThread w;
  // 32-bit: blocks and tiles are < 2^31 (the plan caps the tiles), a 64-bit division is a call.
  w.tile = block % static_cast<unsigned>(p.tiles_per_sample);
  w.n = block / static_cast<unsigned>(p.tiles_per_sample);
  w.c0 = int64_t{w.tile} * p.groups_per_tile * p.cpg;
  w.first = w.n * p.sample_len + w.c0;
  w.j = t % pp;
  w.at0 = int64_t{t / pp} * p.c + w.j * E;
  w.step = int64_t{threads / pp} * p.c;
  w.lo = w.j * E / p.cpg;
  const int to_hi = (w.lo + 1) * p.cpg - w.j * E;
  w.split = to_hi < E ? to_hi : E;
  return w;
}
template <int E>
__device__ __forceinline__ TileThread tile_thread(const TileGeometry& p) {
  return tile_thread<E>(p, blockIdx.x);  // a block a tile
}

// Pass 1 of a tile kernel: thread t's packs q = t, t + R, ... (R the block's threads) of the tile's
// `packs`, at element offsets at0, at0 + step, ..., loaded by load(offset) kBatch at a time
// before any is used; those of the head (q < head) are stored to `staged`, and each is handed to
// add(pack) in ascending order, the order of every later pass.
template <int kBatch, class Raw, class Load, class Add>
__device__ __forceinline__ void stage_tile(Raw* staged, int head, int packs, int64_t at0,
                                           int64_t step, Load&& load, Add&& add) {
  const int threads = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  int64_t at = at0;
  for (int q0 = t; q0 < packs; q0 += kBatch * threads) {
    Raw v[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (q0 + k * threads < packs) v[k] = load(at + k * step);
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int q = q0 + k * threads;
      if (q < packs) {
        if (q < head) staged[q] = v[k];
        add(v[k]);
      }
    }
    at += kBatch * step;
  }
}

// The later passes: f(pack, element offset) for thread t's packs in ascending order, the head's
// from shared memory, then the tail's from memory (load), a loop each (one loop choosing its
// source per pack merged the two into the same registers, 12 PRMTs a pack in fp16).
template <class Raw, class Load, class F>
__device__ __forceinline__ void visit_tile(const Raw* staged, int head, int packs, int64_t at0,
                                           int64_t step, Load&& load, F&& f) {
  const int threads = static_cast<int>(blockDim.x);
  int q = static_cast<int>(threadIdx.x);
  int64_t o = at0;
  for (; q < head; q += threads, o += step) {
    const Raw v = staged[q];
    f(v, o);
  }
  for (; q < packs; q += threads, o += step) f(load(o), o);
}

// Adds per-thread values of the tile's groups over the block: lo_val belongs to group `lo` of the
// tile and hi_val (0 where the pack meets one group) to lo + 1; returns the totals of lo and
// lo + 1 (the latter meaningless where there is no such group). The order is fixed by the block
// and P alone: the threads of each (pack j, half) column in lane order and a butterfly, then a
// group's columns in ascending j. `scratch` holds 2 * blockDim.x + 2 * P + k floats. Every thread
// of the block calls it.
__device__ __forceinline__ float2 tile_group_sums(float lo_val, float hi_val, const TileGeometry& p,
                                                  int lo, int e_per_pack, float* scratch) {
  const int threads = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  const int pp = p.pos_packs, rows = threads / pp;
  float* part = scratch;                  // [2][threads]
  float* column = scratch + 2 * threads;  // [2][P]
  float* total = column + 2 * pp;         // [k]
  part[t] = lo_val;
  part[threads + t] = hi_val;
  __syncthreads();
  const int lane = t % 32, warps = threads / 32;
  for (int col = t / 32; col < 2 * pp; col += warps) {  // uniform across each warp
    const int half = col / pp, j = col - half * pp;
    dev::Floats<1> a{};
    for (int r = lane; r < rows; r += 32) a.v[0] += part[half * threads + j + r * pp];
    a = dev::group_sum<1>(a, 32);
    if (lane == 0) column[col] = a.v[0];
  }
  __syncthreads();
  if (t < p.groups_per_tile) {
    // Group t's elements are channels [t * cpg, (t + 1) * cpg) of the tile: packs j_first..j_last,
    // the lower half of a pack whose first element is in the group, else its upper half.
    const int g_first = t * p.cpg;
    const int j_first = g_first / e_per_pack, j_last = (g_first + p.cpg - 1) / e_per_pack;
    float sum = 0.0f;
    for (int j = j_first; j <= j_last; ++j) sum += column[(j * e_per_pack >= g_first ? 0 : pp) + j];
    total[t] = sum;
  }
  __syncthreads();
  const float2 result = make_float2(total[lo], lo + 1 < p.groups_per_tile ? total[lo + 1] : 0.0f);
  __syncthreads();  // scratch is free again
  return result;
}

// The shared memory before the staged tile holds tile_group_sums' scratch: at most
// 2 * 512 + 2 * 256 + 8 floats (the plan keeps P <= 256 and k <= 8); then, for split tiles, a
// part's and the tile's (centre, m2) of each group.
constexpr int kTileSumsFloats = 2 * 512 + 2 * 256 + 8;
constexpr int kMaxTileGroups = 8;
static_assert(kTileSumsFloats * 4 + 2 * kMaxTileGroups * 8 <= kGroupTileScratchBytes,
              "tile scratch too small");

// The tensors (save_mean and save_invstd: [N * G]), the tiles, eps and 1 / (S * C/G); for split
// tiles (plan_group_tiles with parts > 1) the parts and the two-launch form's workspace.
struct GroupTileParams : OneReadForwardIo, TileGeometry {
  float eps;
  float inv_count;
  int parts;           // K (1: a block a tile)
  int part_positions;  // L: positions of a part (the last may have fewer)
  float2* part_stats;  // [tiles][K + 1][k]: each part's (centre, m2) a group, then (x0, 0);
                       // kParts and kApply
};

// kAccess: elements per global access (E, or 1 for misaligned pointers). The minimum of two
// blocks of 512 threads an SM holds ptxas to 64 registers, as in forward_resident; the parts of
// split tiles stage up to 219 KiB, a block an SM, and take one (64 spilled 4 bytes in fp32 with
// single-element loads).
//
// kStep: kWhole, a block a tile. Else the tile's S positions are split into K parts of L (the
// last may have fewer), a block a part (blockIdx.x = tile * K + rank), as the instance tiles'
// (channel_norm_split_tile.cuh): each part's exact two-pass statistics of each group, about the
// same x0 (the group's first element of the tile), merged in rank order (merge_parts) by thread g
// of every block for group g, from the cluster's shared memories (kCluster) or from the workspace
// (kParts writes them and each tile's x0, kApply merges them and reads x again, its x0 from the
// workspace: with y == x, x may be overwritten already). The same bits either way.
template <class T, int kAccess, int kAct, bool kResidual, SplitStep kStep = SplitStep::kWhole>
__global__ void __launch_bounds__(kResidentMaxThreads, kStep == SplitStep::kWhole ? 2 : 1)
    forward_group_tile(GroupTileParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  constexpr bool kSplit = kStep != SplitStep::kWhole;
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  float2* part_sh = reinterpret_cast<float2*>(scratch + kTileSumsFloats);  // this part's, [k]
  float2* tile_sh = part_sh + kMaxTileGroups;                              // the tile's, [k]
  Raw* staged = reinterpret_cast<Raw*>(shared_bytes + kGroupTileScratchBytes);
  const int t = static_cast<int>(threadIdx.x);
  const int pp = p.pos_packs, k = p.groups_per_tile;
  // 32-bit: the plan keeps the blocks below 2^31.
  const unsigned parts = kSplit ? static_cast<unsigned>(p.parts) : 1u;
  const unsigned block = kSplit ? blockIdx.x / parts : blockIdx.x;
  const unsigned rank = kSplit ? blockIdx.x - block * parts : 0u;
  const TileThread w = tile_thread<E>(p, block);
  const int64_t n = w.n, c0 = w.c0, first = w.first, at0 = w.at0, step = w.step;
  const unsigned tile = w.tile;
  const int j = w.j, lo = w.lo, split = w.split;
  const int begin = kSplit ? static_cast<int>(rank) * p.part_positions : 0;
  const int positions = kSplit ? min(p.part_positions, p.s - begin) : p.s;  // the last: fewer
  const int packs = positions * pp;
  // The last part may be shorter than the head (sized for the others).
  const int head = kStep == SplitStep::kApply ? 0 : (p.head_packs < packs ? p.head_packs : packs);
  const T* x = static_cast<const T*>(p.x) + first;  // the tile's first position
  const int64_t part_first = first + int64_t{begin} * p.c;
  const T* xp = static_cast<const T*>(p.x) + part_first;
  float2* stats = kSplit ? p.part_stats + int64_t{block} * (parts + 1) * k : nullptr;
  // Each element keeps its own sums and its group's centre and coefficients in registers, so the
  // passes cost what the rows' kernel's do, and only their totals are split by group.
  // The statistics are of x - x0, x0 its group's first element (so |mean| >> std keeps its
  // accuracy in every group of the tile): chosen per element, as an array of shifts spilled.
  float shift_lo, shift_hi;
  if constexpr (kStep == SplitStep::kApply) {
    shift_lo = stats[parts * k + lo].x;
    shift_hi = split < E ? stats[parts * k + lo + 1].x : 0.0f;
  } else {
    shift_lo = dev::to_float(x[int64_t{lo} * p.cpg]);
    shift_hi = split < E ? dev::to_float(x[int64_t{lo + 1} * p.cpg]) : 0.0f;
  }
  auto shift = [&](int e) { return e < split ? shift_lo : shift_hi; };
  auto load = [&](int64_t at) { return row_pack<T, E, kAccess>(xp + at, 0); };
  auto visit = [&](auto&& f) { visit_tile(staged, head, packs, at0, step, load, f); };
  float centre_lo, centre_hi, invstd_lo, invstd_hi;

  if constexpr (kStep != SplitStep::kApply) {
    // The sums of a pass per element, then of the thread's two groups, in element order.
    auto group_totals = [&](const float (&acc)[E]) {
      float a_lo = 0.0f, a_hi = 0.0f;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        if (e < split) {
          a_lo += acc[e];
        } else {
          a_hi += acc[e];
        }
      }
      return tile_group_sums(a_lo, a_hi, p, lo, E, scratch);
    };

    // Pass 1: the head from memory into shared memory, kBatch packs in flight a thread, and the
    // tail after it; the sums of x - x0 as the packs arrive, in the order of every later pass.
    float acc[E] = {};
    // Misaligned pointers take 2 packs at a time: 4 of single elements spilled (fp16).
    constexpr int kBatch = kAccess == E ? 4 : 2;
    stage_tile<kBatch>(staged, head, packs, at0, step, load, [&](const Raw& v) {
#pragma unroll
      for (int e = 0; e < E; ++e) acc[e] += dev::element(v, e) - shift(e);
    });
    const float2 sums = group_totals(acc);
    // The part's count: a division a block.
    const float inv = kSplit ? 1.0f / static_cast<float>(positions * p.cpg) : p.inv_count;
    centre_lo = sums.x * inv;
    centre_hi = sums.y * inv;

    // Pass 2: the centred squares.
    float centre[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      centre[e] = e < split ? centre_lo : centre_hi;
      acc[e] = 0.0f;
    }
    visit([&](const Raw& v, int64_t) {
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float d = (dev::element(v, e) - shift(e)) - centre[e];
        acc[e] = fmaf(d, d, acc[e]);
      }
    });
    const float2 m2 = group_totals(acc);
    if constexpr (kSplit) {
      // The threads of position 0 publish the part's statistics of the groups that start in
      // their packs (at element 0: lo; at element `split`: lo + 1), and rank 0 their x0.
      if (t < pp) {
        auto publish = [&](int g, float centre_g, float m2_g, float shift_g) {
          publish_part<kStep>(make_float2(centre_g, m2_g), shift_g, rank, parts, k, g, stats,
                              part_sh[g]);
        };
        if (j * E % p.cpg == 0) publish(lo, centre_lo, m2.x, shift_lo);
        if (split < E) publish(lo + 1, centre_hi, m2.y, shift_hi);
      }
      if constexpr (kStep == SplitStep::kParts) return;
    } else {
      invstd_lo = rsqrtf(m2.x * p.inv_count + p.eps);
      invstd_hi = rsqrtf(m2.y * p.inv_count + p.eps);
    }
  }

  if constexpr (kSplit) {
    // The tile's statistics: thread g merges group g's parts, from the cluster's shared memories
    // or from the workspace.
    if constexpr (kStep == SplitStep::kCluster) {
      dev::cluster_arrive();  // every part published (release), then
      dev::cluster_wait();    // visible here (acquire)
    }
    if (t < k) {
      tile_sh[t] = merge_parts(p.parts, p.part_positions * p.cpg, p.s * p.cpg, [&](int r) {
        if constexpr (kStep == SplitStep::kCluster) {
          return dev::load_cluster_float2(dev::cluster_address(&part_sh[t], r));
        } else {
          return stats[r * k + t];
        }
      });
    }
    if constexpr (kStep == SplitStep::kCluster) {
      dev::cluster_arrive();  // done reading the others' parts: they may exit after the wait below
    }
    __syncthreads();
    const float2 m_lo = tile_sh[lo], m_hi = split < E ? tile_sh[lo + 1] : make_float2(0.0f, 0.0f);
    centre_lo = m_lo.x;
    centre_hi = m_hi.x;
    invstd_lo = rsqrtf(m_lo.y * p.inv_count + p.eps);
    invstd_hi = rsqrtf(m_hi.y * p.inv_count + p.eps);
  }

  // The threads of position 0 (of rank 0) save the statistics of the groups that start in their
  // packs: at element 0 (lo), and at element `split` (lo + 1).
  if (t < pp && rank == 0) {
    const int64_t stat = (n * p.tiles_per_sample + tile) * k + lo;
    if (j * E % p.cpg == 0) {
      if (p.save_mean) p.save_mean[stat] = shift_lo + centre_lo;
      if (p.save_invstd) p.save_invstd[stat] = invstd_lo;
    }
    if (split < E) {
      if (p.save_mean) p.save_mean[stat + 1] = shift_hi + centre_hi;
      if (p.save_invstd) p.save_invstd[stat + 1] = invstd_hi;
    }
  }

  // Pass 3: y = (x - x0) * scale + offset (+ z), per element of the thread's fixed channels:
  // scale = invstd * w_c, offset = b_c - centre * scale.
  float scale[E], offset[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int64_t ch = c0 + j * E + e;
    const bool in_lo = e < split;
    scale[e] = (in_lo ? invstd_lo : invstd_hi) * (p.weight ? p.weight[ch] : 1.0f);
    offset[e] = (p.bias ? p.bias[ch] : 0.0f) - (in_lo ? centre_lo : centre_hi) * scale[e];
  }
  const T* z = kResidual ? static_cast<const T*>(p.z) + part_first : nullptr;
  T* y = static_cast<T*>(p.y) + part_first;
  visit([&](const Raw& v, int64_t o) {
    float u[E];
    if constexpr (kResidual) load_elems<T, E, kAccess>(z + o, u);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      float r = fmaf(dev::element(v, e) - shift(e), scale[e], offset[e]);
      if constexpr (kResidual) r += u[e];
      u[e] = dev::activate<kAct>(r);
    }
    store_elems<T, E, kAccess>(y + o, u);
    if constexpr (kAct == NK_ACTIVATION_RELU) {
      if (p.mask != nullptr) dev::store_mask<E>(p.mask, part_first + o, u);  // C and c0: E | it
    }
  });
  if constexpr (kStep == SplitStep::kCluster) dev::cluster_wait();
}

// The tile geometry of both tile kernels' parameters (GroupTileParams, GroupTileBackwardParams):
// C, a sample's elements, S, C/G, the tiles of a sample, k, P, the staged head (of each staged
// tensor: resident_head_packs, with its test knob) and 1 / (S * C/G).
template <class Params>
void set_tile_geometry(Params& p, const ChannelShape& s, const GroupTilePlan& g, int elem_bytes) {
  p.c = s.c;
  p.sample_len = s.s * s.c;
  p.s = static_cast<int>(s.s);
  p.cpg = static_cast<int>(s.c / s.groups);
  p.tiles_per_sample = static_cast<int>(s.groups / g.groups_per_tile);
  p.groups_per_tile = g.groups_per_tile;
  p.pos_packs = g.pos_packs;
  p.head_packs = resident_head_packs(g.head_len, elem_bytes);
  p.inv_count = 1.0f / static_cast<float>(s.s * p.cpg);
}

// Enqueues a forward tile kernel (group or instance norm) for the fusion and pointers, a block per
// tile with the scratch and the staged head in dynamic shared memory: kernel(access, act,
// residual) names the instance, each argument a std::integral_constant (access: E, or 1 for
// misaligned pointers). The caller checks cudaGetLastError.
template <class T, class Params, class Kernel>
void launch_forward_tiles(const Params& p, const GroupTilePlan& plan, int activation,
                          cudaStream_t stream, Kernel&& kernel) {
  constexpr int E = 16 / sizeof(T);
  const bool vector_access = dev::aligned16(p.x) && dev::aligned16(p.z) && dev::aligned16(p.y);
  const size_t bytes = kGroupTileScratchBytes + static_cast<size_t>(p.head_packs) * 16;
  with_forward_fusion(activation, p.z != nullptr, [&](auto act, auto residual) {
    auto k = vector_access ? kernel(std::integral_constant<int, E>{}, act, residual)
                           : kernel(std::integral_constant<int, 1>{}, act, residual);
    launch_blocks(k, plan.tiles, plan.threads, bytes, stream, p);
  });
}

// Enqueues the group tiles for the fusion and pointers: a block a tile, or (parts > 1) a tile's
// parts (launch_forward_split). The caller checks cudaGetLastError.
template <class T>
void launch_group_tiles(const GroupTileParams& p, const GroupTilePlan& plan, int activation,
                        cudaStream_t stream) {
  if (plan.parts == 1) {
    launch_forward_tiles<T>(p, plan, activation, stream, [](auto access, auto act, auto residual) {
      return forward_group_tile<T, decltype(access)::value, decltype(act)::value,
                                decltype(residual)::value>;
    });
    return;
  }
  launch_forward_split<T>(
      p, SplitLaunch{plan.tiles * plan.parts, plan.threads, plan.parts, kGroupTileScratchBytes},
      activation, stream, [](auto access, auto act, auto residual, auto step) {
        return forward_group_tile<T, decltype(access)::value, decltype(act)::value,
                                  decltype(residual)::value, decltype(step)::value>;
      });
}

}  // namespace nk::cuda
