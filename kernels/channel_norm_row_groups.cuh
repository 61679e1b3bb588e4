// Instance and group norm training forward with one read of x where a statistic's row is above a
// 16-byte pack and below 4 KiB (plan_row_groups), whole packs or not: a block takes R = 256 / G
// consecutive rows, which start on a pack boundary and are whole packs together, copies them into
// shared memory (16-byte loads where every pointer allows, else single elements), and gives each
// row a group of G lanes. The group takes the exact two-pass statistics of x - x0 (x0 the row's
// first value, as the other paths shift, so |mean| >> std keeps its accuracy) with shuffles, then
// writes y (with the fused residual and activation) over the staged x and the ReLU signs as bytes
// beside it, and the block stores the rows in 16-byte packs and the signs as mask bits. x is read
// once and y written once, with no partials or finalize. The block stages its rows' (weight,
// bias) pairs with x, so no global load waits after the staging. The group walks its row channel
// by channel for y (a sub-group of W lanes a channel), with no division per element. Each row's
// sums are a lane's elements in order and then a fixed butterfly over G lanes, and the staged copy
// is the same whatever the pointers, so no bit depends on the pointers or the grid.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_one_read_io.cuh"
#include "channel_norm_plan.hpp"
#include "channel_norm_resident.cuh"
#include "common/activation.cuh"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"

namespace nk::cuda {

// The geometry of a row group's walk (RowGroupsPlan's, with the powers of two as shifts).
struct RowGroupsGeometry {
  int rows;                // statistics: N * C (instance norm) or N * G
  int len;                 // L
  int s;                   // a channel's elements in the row: S (L for instance norm)
  int channels_per_row;    // 1 (instance norm) or C / G
  int rows_per_sample;     // C (instance norm) or G
  int lanes_log2;          // G = 1 << lanes_log2 lanes a row
  int channel_lanes_log2;  // W = 1 << channel_lanes_log2 lanes a channel
  int channel_batches;     // ceil(channels_per_row / (G / W))
  int channel_steps;       // ceil(s / W)
  int chunk;               // R * L: elements of a block's rows (whole packs)
};

struct RowGroupsParams : OneReadForwardIo {
  float2* row_stats;  // [rows]: (mean, variance for the running average); nullable
  RowGroupsGeometry g;
  float eps;
  float inv_len, inv_len_minus_1;  // 1 / L and 1 / (L - 1), from the host
  bool unbiased;                   // row_stats' variance: m2 / (L - 1), else m2 / L
  bool vector_access;              // every pointer allows 16-byte accesses
};

// Where a thread stands: the block's rows (from row0; fewer in the last block), their `count`
// elements from element `first` (a multiple of the pack), and the thread's row r of them and lane.
struct RowGroupThread {
  int row0, rows, count, r, lane;
  int64_t first;
  bool active;  // r < rows: the last block's groups past its rows walk nothing but take part in
                // the shuffles and barriers
};

__device__ __forceinline__ RowGroupThread locate_row_group(const RowGroupsGeometry& g) {
  RowGroupThread t;
  const int per_block = kRowGroupsBlock >> g.lanes_log2;
  t.row0 = static_cast<int>(blockIdx.x) * per_block;  // 32-bit: the plan caps the rows
  t.rows = min(per_block, g.rows - t.row0);
  t.count = t.rows * g.len;
  t.first = int64_t{t.row0} * g.len;
  t.r = static_cast<int>(threadIdx.x) >> g.lanes_log2;
  t.lane = static_cast<int>(threadIdx.x) & ((1 << g.lanes_log2) - 1);
  t.active = t.r < t.rows;
  return t;
}

// Calls visit(i) for i = first + at, first + at + W, ... below first + s (W = 1 << w_log2): a
// lane's elements of a run of s, whole steps with no bound check, then at most one more.
template <class Visit>
__device__ __forceinline__ void for_lane_elements(int first, int s, int w_log2, int at,
                                                  Visit&& visit) {
  const int full = s >> w_log2;
  int i = first + at;
  for (int k = 0; k < full; ++k, i += 1 << w_log2) visit(i);
  if (at < (s & ((1 << w_log2) - 1))) visit(i);
}

// Copies `count` elements at src (global memory) to dst (shared memory, 16-byte aligned) for each
// of kTensors tensors: 16-byte packs where `vector`, the rest as single elements.
template <class T, int kTensors>
__device__ __forceinline__ void stage_row_groups(const T* const (&src)[kTensors],
                                                 T* const (&dst)[kTensors], int count,
                                                 bool vector) {
  constexpr int E = 16 / sizeof(T);
  using Raw = dev::Pack<T, E>;
  const int packs = vector ? count / E : 0;
  const Raw* src_packs[kTensors];
  Raw* dst_packs[kTensors];
#pragma unroll
  for (int k = 0; k < kTensors; ++k) {
    src_packs[k] = reinterpret_cast<const Raw*>(src[k]);
    dst_packs[k] = reinterpret_cast<Raw*>(dst[k]);
  }
  stage_units<kTensors>(src_packs, dst_packs, packs, [](const Raw&) {});
  const T* src_tail[kTensors];
  T* dst_tail[kTensors];
#pragma unroll
  for (int k = 0; k < kTensors; ++k) {
    src_tail[k] = src[k] + packs * E;
    dst_tail[k] = dst[k] + packs * E;
  }
  stage_units<kTensors>(src_tail, dst_tail, count - packs * E, [](const T&) {});
}

// The (weight or 1, bias or 0) pair of slot k of the block's coefficients: channel j of the
// block's row r at k = r * channels_per_row + j. weight and bias nullable.
__device__ __forceinline__ float2 row_group_coef(const RowGroupsGeometry& g,
                                                 const RowGroupThread& t, const float* weight,
                                                 const float* bias, int k) {
  const int r = k / g.channels_per_row, j = k - r * g.channels_per_row;
  const int64_t c = int64_t{(t.row0 + r) % g.rows_per_sample} * g.channels_per_row + j;
  return make_float2(weight ? weight[c] : 1.0f, bias ? bias[c] : 0.0f);
}

// The block's rows' coefficient pairs in shared memory (coefs[k], slot k as row_group_coef's):
// `first` is this thread's first, slot threadIdx.x, which the caller loaded before staging x so
// that both loads wait together; the rest (only where a block has more pairs than threads: group
// norm with many channels a row, such as 32 channels of 2 at 16 rows a block) are loaded here.
__device__ __forceinline__ void stage_row_group_coefs(const RowGroupsGeometry& g,
                                                      const RowGroupThread& t, const float* weight,
                                                      const float* bias, float2 first,
                                                      float2* coefs) {
  const int count = t.rows * g.channels_per_row;
  if (static_cast<int>(threadIdx.x) < count) coefs[threadIdx.x] = first;
  for (int k = threadIdx.x + blockDim.x; k < count; k += blockDim.x) {
    coefs[k] = row_group_coef(g, t, weight, bias, k);
  }
}

// This thread's first coefficient pair (slot threadIdx.x), or zeros past the block's.
__device__ __forceinline__ float2 first_row_group_coef(const RowGroupsGeometry& g,
                                                       const RowGroupThread& t,
                                                       const float* weight, const float* bias) {
  const int k = threadIdx.x;
  return k < t.rows * g.channels_per_row ? row_group_coef(g, t, weight, bias, k)
                                         : make_float2(0.0f, 0.0f);
}

// Stores `count` staged elements (shared memory, 16-byte aligned) to dst: 16-byte packs where
// `vector`, the rest as single elements.
template <class T>
__device__ __forceinline__ void store_row_groups(const T* src, T* dst, int count, bool vector) {
  constexpr int E = 16 / sizeof(T);
  using Raw = dev::Pack<T, E>;
  const int packs = vector ? count / E : 0;
  for (int q = threadIdx.x; q < packs; q += blockDim.x) {
    dev::store_pack_global<T, E>(dst + q * E, reinterpret_cast<const Raw*>(src)[q]);
  }
  for (int i = packs * E + static_cast<int>(threadIdx.x); i < count; i += blockDim.x) {
    dst[i] = src[i];
  }
}

// The ReLU mask bits of the E staged signs (bytes of 0 or 1) at `signs`, of which the first n
// are elements (the rest, past the block's, unwritten).
template <int E>
__device__ __forceinline__ uint32_t sign_bits(const uint8_t* signs, int n) {
  uint32_t bits = 0;
#pragma unroll
  for (int e = 0; e < E; ++e) bits |= (e < n ? static_cast<uint32_t>(signs[e]) : 0u) << e;
  return bits;
}

template <class T, int kAct, bool kResidual>
__global__ void __launch_bounds__(kRowGroupsBlock) forward_row_groups(RowGroupsParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  const RowGroupsGeometry& g = p.g;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* xs = reinterpret_cast<T*>(shared_bytes);  // x, then y over it
  T* zs = xs + g.chunk;
  uint8_t* signs = reinterpret_cast<uint8_t*>(xs + (kResidual ? 2 : 1) * g.chunk);
  const bool want_mask = kAct == NK_ACTIVATION_RELU && p.mask != nullptr;
  // After the signs: chunk is a multiple of 8, so the pairs are 8-byte aligned.
  float2* coefs = reinterpret_cast<float2*>(signs + (want_mask ? g.chunk : 0));
  const RowGroupThread t = locate_row_group(g);
  const float2 first_coef = first_row_group_coef(g, t, p.weight, p.bias);
  const T* x = static_cast<const T*>(p.x) + t.first;
  if constexpr (kResidual) {
    stage_row_groups<T, 2>({x, static_cast<const T*>(p.z) + t.first}, {xs, zs}, t.count,
                           p.vector_access);
  } else {
    stage_row_groups<T, 1>({x}, {xs}, t.count, p.vector_access);
  }
  stage_row_group_coefs(g, t, p.weight, p.bias, first_coef, coefs);
  __syncthreads();

  // The statistics: the row's elements strided over its G lanes, then a butterfly.
  const int row_at = t.r * g.len;
  T* row = xs + row_at;
  const int lanes = 1 << g.lanes_log2;
  const float shift = t.active ? dev::to_float(row[0]) : 0.0f;
  dev::Floats<1> sum{}, squares{};
  if (t.active) {
    for_lane_elements(0, g.len, g.lanes_log2, t.lane,
                      [&](int i) { sum.v[0] += dev::to_float(row[i]) - shift; });
  }
  const float centre = dev::group_sum<1>(sum, lanes).v[0] * p.inv_len;
  if (t.active) {
    for_lane_elements(0, g.len, g.lanes_log2, t.lane, [&](int i) {
      const float d = (dev::to_float(row[i]) - shift) - centre;
      squares.v[0] = fmaf(d, d, squares.v[0]);
    });
  }
  const float m2 = dev::group_sum<1>(squares, lanes).v[0];
  const float var = m2 * p.inv_len, invstd = rsqrtf(var + p.eps);
  const int row_index = t.row0 + t.r;
  if (t.active && t.lane == 0) {
    if (p.save_mean) p.save_mean[row_index] = shift + centre;
    if (p.save_invstd) p.save_invstd[row_index] = invstd;
    if (p.row_stats) {
      const float run_var = p.unbiased ? m2 * p.inv_len_minus_1 : var;
      p.row_stats[row_index] = make_float2(shift + centre, run_var);
    }
  }

  // y = (x - shift) * scale + offset (+ z), scale = invstd * w_c, offset = b_c - centre * scale,
  // written over x, channel by channel (channels sub, sub + G / W, ... of the row, a sub-group of
  // W lanes each); the ReLU signs as bytes beside it. A plain loop over the lane's channels: the
  // backward's uniform walk (walk_row_channels) here made ptxas spill 8 bytes on sm_80 with SiLU
  // and a residual.
  // The y walk maps lanes to elements unlike the statistics' walk (a lane writes elements that
  // another lane of its warp read): the loads feed the shuffles above, but only a warp barrier
  // orders the two walks in the memory model (and for racecheck).
  __syncwarp();
  const T* z = zs + row_at;
  const float2* row_coefs = coefs + t.r * g.channels_per_row;
  uint8_t* row_signs = signs + row_at;
  float2 k = make_float2(0.0f, 0.0f);
  auto write = [&](int i) {
    float u = fmaf(dev::to_float(row[i]) - shift, k.x, k.y);
    if constexpr (kResidual) u += dev::to_float(z[i]);
    u = dev::activate<kAct>(u);
    row[i] = dev::from_float<T>(u);
    if (want_mask) row_signs[i] = u > 0.0f ? 1 : 0;
  };
  const int w_log2 = g.channel_lanes_log2;
  const int at = t.lane & ((1 << w_log2) - 1);
  for (int j = t.active ? t.lane >> w_log2 : g.channels_per_row; j < g.channels_per_row;
       j += 1 << (g.lanes_log2 - w_log2)) {
    const float2 wb = row_coefs[j];
    const float scale = invstd * wb.x;
    k = make_float2(scale, wb.y - centre * scale);
    for_lane_elements(j * g.s, g.s, w_log2, at, write);
  }
  __syncthreads();

  store_row_groups<T>(xs, static_cast<T*>(p.y) + t.first, t.count, p.vector_access);
  if (want_mask) {
    for (int q = threadIdx.x; q * E < t.count; q += blockDim.x) {
      // first + q * E is a multiple of E; past the block's elements the bits are 0
      dev::store_mask_bits<E>(p.mask, t.first + q * E,
                              sign_bits<E>(signs + q * E, t.count - q * E));
    }
  }
}

// The geometry of both kernels' parameters (RowGroupsParams, RowGroupsBackwardParams).
inline RowGroupsGeometry row_groups_geometry(const ChannelShape& s, const RowGroupsPlan& r) {
  const bool instance = s.kind == ChannelNorm::kInstance;
  auto log2 = [](int v) {
    int l = 0;
    while ((1 << l) < v) ++l;
    return l;
  };
  RowGroupsGeometry g{};
  g.rows = static_cast<int>(r.rows);
  g.len = r.len;
  g.s = instance ? r.len : static_cast<int>(s.s);
  g.channels_per_row = instance ? 1 : static_cast<int>(s.c / s.groups);
  g.rows_per_sample = static_cast<int>(instance ? s.c : s.groups);
  g.lanes_log2 = log2(r.lanes);
  g.channel_lanes_log2 = log2(r.channel_lanes);
  g.channel_batches = r.channel_batches;
  g.channel_steps = r.channel_steps;
  g.chunk = r.rows_per_block * r.len;
  return g;
}

// Enqueues the kernel of the fusion; the caller checks cudaGetLastError.
template <class T>
void launch_row_groups(const RowGroupsParams& p, const RowGroupsPlan& plan, int activation,
                       cudaStream_t stream) {
  const bool residual = p.z != nullptr;
  // The staged rows of x (and z), a byte a sign where the ReLU mask is written, then the
  // coefficients.
  const bool signs = activation == NK_ACTIVATION_RELU && p.mask != nullptr;
  const size_t bytes =
      static_cast<size_t>(p.g.chunk) * (sizeof(T) * (residual ? 2 : 1) + (signs ? 1 : 0)) +
      static_cast<size_t>(plan.coefs) * sizeof(float2);
  with_forward_fusion(activation, residual, [&](auto act, auto res) {
    launch_blocks(forward_row_groups<T, decltype(act)::value, decltype(res)::value>, plan.blocks,
                  kRowGroupsBlock, bytes, stream, p);
  });
}

}  // namespace nk::cuda
