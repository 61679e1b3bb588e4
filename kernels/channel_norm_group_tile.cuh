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

// The tensors (save_mean and save_invstd: [N * G]), the tiles, then eps and 1 / (S * C/G).
struct GroupTileParams : OneReadForwardIo, TileGeometry {
  float eps;
  float inv_count;
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
__device__ __forceinline__ TileThread tile_thread(const TileGeometry& p) {
  const int threads = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  const int pp = p.pos_packs;
  TileThread w;
  // 32-bit: blocks and tiles are < 2^31 (the plan caps the tiles), a 64-bit division is a call.
  w.tile = blockIdx.x % static_cast<unsigned>(p.tiles_per_sample);
  w.n = blockIdx.x / static_cast<unsigned>(p.tiles_per_sample);
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
// 2 * 512 + 2 * 256 + 8 floats (the plan keeps P <= 256 and k <= 8).
static_assert(kGroupTileScratchBytes >= (2 * 512 + 2 * 256 + 8) * 4, "tile scratch too small");

// kAccess: elements per global access (E, or 1 for misaligned pointers). The minimum of two
// blocks of 512 threads an SM holds ptxas to 64 registers, as in forward_resident.
template <class T, int kAccess, int kAct, bool kResidual>
__global__ void __launch_bounds__(kResidentMaxThreads, 2) forward_group_tile(GroupTileParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  Raw* staged = reinterpret_cast<Raw*>(shared_bytes + kGroupTileScratchBytes);
  const int t = static_cast<int>(threadIdx.x);
  const int pp = p.pos_packs, packs = p.s * pp, head = p.head_packs;
  const TileThread w = tile_thread<E>(p);
  const int64_t n = w.n, c0 = w.c0, first = w.first, at0 = w.at0, step = w.step;
  const unsigned tile = w.tile;
  const int j = w.j, lo = w.lo, split = w.split;
  const T* x = static_cast<const T*>(p.x) + first;
  // Each element keeps its own sums and its group's centre and coefficients in registers, so the
  // passes cost what the rows' kernel's do, and only their totals are split by group.
  // The statistics are of x - x0, x0 its group's first element (so |mean| >> std keeps its
  // accuracy in every group of the tile): chosen per element, as an array of shifts spilled.
  const float shift_lo = dev::to_float(x[int64_t{lo} * p.cpg]);
  const float shift_hi = split < E ? dev::to_float(x[int64_t{lo + 1} * p.cpg]) : 0.0f;
  auto shift = [&](int e) { return e < split ? shift_lo : shift_hi; };
  auto load = [&](int64_t at) { return row_pack<T, E, kAccess>(x + at, 0); };
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

  // Pass 1: the head from memory into shared memory, kBatch packs in flight a thread, and the tail
  // after it; the sums of x - x0 as the packs arrive, in the order of every later pass.
  float acc[E] = {};
  // Misaligned pointers take 2 packs at a time: 4 of single elements spilled (fp16).
  constexpr int kBatch = kAccess == E ? 4 : 2;
  stage_tile<kBatch>(staged, head, packs, at0, step, load, [&](const Raw& v) {
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] += dev::element(v, e) - shift(e);
  });
  auto visit = [&](auto&& f) { visit_tile(staged, head, packs, at0, step, load, f); };
  const float2 sums = group_totals(acc);
  const float centre_lo = sums.x * p.inv_count, centre_hi = sums.y * p.inv_count;

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
  const float invstd_lo = rsqrtf(m2.x * p.inv_count + p.eps);
  const float invstd_hi = rsqrtf(m2.y * p.inv_count + p.eps);
  // The threads of position 0 save the statistics of the groups that start in their packs: at
  // element 0 (lo), and at element `split` (lo + 1).
  if (t < pp) {
    const int64_t stat = (n * p.tiles_per_sample + tile) * p.groups_per_tile + lo;
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
  const T* z = kResidual ? static_cast<const T*>(p.z) + first : nullptr;
  T* y = static_cast<T*>(p.y) + first;
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
      if (p.mask != nullptr) dev::store_mask<E>(p.mask, first + o, u);  // C and c0: E | it
    }
  });
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

template <class T>
void launch_group_tiles(const GroupTileParams& p, const GroupTilePlan& plan, int activation,
                        cudaStream_t stream) {
  launch_forward_tiles<T>(p, plan, activation, stream, [](auto access, auto act, auto residual) {
    return forward_group_tile<T, decltype(access)::value, decltype(act)::value,
                              decltype(residual)::value>;
  });
}

}  // namespace nk::cuda
