// Instance and group norm training forward with one read of x where a statistic's row is at most a
// 16-byte pack (plan_short_rows: L = S, or C/G * S, up to E = 16 / sizeof(T)). A thread holds
// R = E / gcd(L, E) consecutive rows, which are P = L / gcd(L, E) whole packs of the tensor (twice
// that where L divides the pack), in registers: 16-byte loads where every pointer allows (else single
// elements into the same packs), each row's exact two-pass statistics of x - x0 (x0 its first
// value, as the other paths shift, so |mean| >> std keeps its accuracy), its saved statistics (and
// instance norm's row statistics for the running update), then y = (x - x0) * scale + offset (+ z),
// the activation and the ReLU mask, stored in 16-byte packs. The last thread may hold fewer rows,
// in single elements. A row's arithmetic sees its L values only, in a fixed order, so no bit
// depends on the pointers or the grid.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_one_read_io.cuh"
#include "channel_norm_plan.hpp"
#include "channel_norm_resident.cuh"
#include "common/activation.cuh"
#include "common/dependent_launch.cuh"
#include "common/vec.cuh"

namespace nk::cuda {

// The tensors (save_mean and save_invstd: [rows]), then the rows' geometry.
struct ShortRowsParams : OneReadForwardIo {
  float2* row_stats;        // [rows]: (mean, variance for the running average); nullable
  int rows;                 // statistics: N * C (instance norm) or N * G
  int rows_per_sample;      // C (instance norm) or G
  int channels_per_row;     // 1 (instance norm) or C / G
  uint32_t channel_starts;  // bit j: element j > 0 of a row starts its next channel (S | j)
  float eps;
  bool unbiased;       // row_stats' variance: m2 / (L - 1), else m2 / L
  bool vector_access;  // every pointer allows 16-byte accesses
};

__host__ __device__ constexpr int constexpr_gcd(int a, int b) {
  return b == 0 ? a : constexpr_gcd(b, a % b);
}

// The rows' geometry of both kernels' parameters (ShortRowsParams, ShortRowsBackwardParams):
// the rows, the rows of a sample and channels of a row (instance norm: C and 1; group norm: G and
// C / G), and the elements of a row that start its next channel.
template <class Params>
void set_short_row_geometry(Params& p, const ChannelShape& s, const ShortRowsPlan& r) {
  const bool instance = s.kind == ChannelNorm::kInstance;
  p.rows = static_cast<int>(r.rows);
  p.rows_per_sample = static_cast<int>(instance ? s.c : s.groups);
  p.channels_per_row = static_cast<int>(instance ? 1 : s.c / s.groups);
  p.channel_starts = 0;
  for (int j = 1; j < r.len; ++j) p.channel_starts |= (j % s.s == 0 ? 1u : 0u) << j;
}

// Bit j for the elements 0 < j < L of a row where group norm's channel may change: S | L and
// S >= 2, so only where gcd(j, L) >= 2 (nowhere for L = 2, 3, 5, 7). A constant of the kernel, so
// that the check of the other elements folds away (a gcd of the loop's j was computed per element).
__host__ __device__ constexpr uint32_t channel_start_candidates(int L) {
  uint32_t bits = 0;
  for (int j = 1; j < L; ++j) bits |= (constexpr_gcd(j, L) >= 2 ? 1u : 0u) << j;
  return bits;
}

// The rows a thread holds: R = E / gcd(L, E) of them, P = L / gcd(L, E) whole packs; twice that
// where L divides E, so that the per-thread work (index, channel) spreads over more rows.
template <class T, int L>
struct ShortRowsShape {
  static constexpr int E = 16 / sizeof(T);
  static constexpr int kGroups = L / constexpr_gcd(L, E) == 1 ? 2 : 1;
  static constexpr int P = kGroups * L / constexpr_gcd(L, E);
  static constexpr int R = kGroups * E / constexpr_gcd(L, E);
  static constexpr uint32_t kStarts = channel_start_candidates(L);
  static_assert(L >= 2 && L <= E, "rows up to a pack");
};

// This thread's rows: the first (row0), how many (R; fewer in the last thread), their `count`
// elements from element `first` (a multiple of E), and whether they are whole 16-byte packs to
// access as such.
struct ShortRowsThread {
  int row0, rows, count;
  int64_t first;
  bool whole;
};

// False for a thread past the rows.
template <int L, int R>
__device__ __forceinline__ bool locate_short_rows(int total_rows, bool vector_access,
                                                  ShortRowsThread& t) {
  const int64_t thread = int64_t{blockIdx.x} * kShortRowsBlock + threadIdx.x;
  if (thread * R >= total_rows) return false;
  t.row0 = static_cast<int>(thread * R);  // 32-bit: the plan caps the rows
  t.rows = min(R, total_rows - t.row0);
  t.count = t.rows * L;
  t.first = int64_t{t.row0} * L;
  t.whole = vector_access && t.rows == R;
  return true;
}

// The P packs of `count` elements at p: 16-byte loads (whole), else single elements (0 past count).
template <class T, int E, int P>
__device__ __forceinline__ void load_short_rows(const T* p, bool whole, int count,
                                                dev::Pack<T, E> (&v)[P]) {
  if (whole) {
#pragma unroll
    for (int k = 0; k < P; ++k) v[k] = reinterpret_cast<const dev::Pack<T, E>*>(p)[k];
  } else {
#pragma unroll
    for (int i = 0; i < P * E; ++i) v[i / E].v[i % E] = i < count ? p[i] : dev::from_float<T>(0);
  }
}

template <class T, int E, int P>
__device__ __forceinline__ void store_short_rows(T* p, bool whole, int count,
                                                 const dev::Pack<T, E> (&v)[P]) {
  if (whole) {
#pragma unroll
    for (int k = 0; k < P; ++k) dev::store_pack_global<T, E>(p + k * E, v[k]);
  } else {
#pragma unroll
    for (int i = 0; i < P * E; ++i) {
      if (i < count) p[i] = v[i / E].v[i % E];
    }
  }
}

template <class T, int L, int kAct, bool kResidual>
__global__ void __launch_bounds__(kShortRowsBlock, 1) forward_short_rows(ShortRowsParams p) {
  dev::enter_chain();
  using Shape = ShortRowsShape<T, L>;
  constexpr int E = Shape::E, P = Shape::P, R = Shape::R;
  constexpr uint32_t kStarts = Shape::kStarts;
  using Raw = dev::Pack<T, E>;
  ShortRowsThread t;
  if (!locate_short_rows<L, R>(p.rows, p.vector_access, t)) return;
  const int row0 = t.row0, rows = t.rows, count = t.count;
  const int64_t first = t.first;
  const bool whole = t.whole;
  Raw v[P];
  load_short_rows<T, E, P>(static_cast<const T*>(p.x) + first, whole, count, v);
  Raw z[kResidual ? P : 1];
  if constexpr (kResidual) {
    load_short_rows<T, E, P>(static_cast<const T*>(p.z) + first, whole, count, z);
  }
  // y apart from x: x's words stay as loaded, both halves defined (dev::element reads a 16-bit
  // value through its word; over half-written words the simulator met undefined registers).
  Raw y[P];
  uint32_t signs[P] = {};  // the ReLU mask's bits of each pack
  // 32-bit remainder once: the row's channel steps from here.
  int row_in_sample = row0 % p.rows_per_sample;
  // Every row is computed (a tail thread's missing rows hold zeros: finite, never stored), so the
  // loop holds no branch around a row; only the stores of its statistics are predicated.
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float x0 = dev::element(v[r * L / E], r * L % E);
    float sum = 0.0f;
#pragma unroll
    for (int j = 1; j < L; ++j) {
      const int i = r * L + j;
      sum += dev::element(v[i / E], i % E) - x0;
    }
    const float centre = sum * (1.0f / L);
    float m2 = centre * centre;  // the first value's (x0 - x0 - centre)^2
#pragma unroll
    for (int j = 1; j < L; ++j) {
      const int i = r * L + j;
      const float d = (dev::element(v[i / E], i % E) - x0) - centre;
      m2 = fmaf(d, d, m2);
    }
    const float var = m2 * (1.0f / L), invstd = rsqrtf(var + p.eps);
    if (r < rows) {
      const int row = row0 + r;
      if (p.save_mean) p.save_mean[row] = x0 + centre;
      if (p.save_invstd) p.save_invstd[row] = invstd;
      if (p.row_stats) {
        p.row_stats[row] = make_float2(x0 + centre, p.unbiased ? m2 * (1.0f / (L - 1)) : var);
      }
    }
    // y = (x - x0) * scale + offset (+ z), scale = invstd * w_c, offset = b_c - centre * scale;
    // group norm's channel moves on every S elements of the row.
    int c = row_in_sample * p.channels_per_row;
    auto coef = [&]() {
      const float scale = invstd * (p.weight ? p.weight[c] : 1.0f);
      return make_float2(scale, (p.bias ? p.bias[c] : 0.0f) - centre * scale);
    };
    float2 k = coef();
#pragma unroll
    for (int j = 0; j < L; ++j) {
      const int i = r * L + j;
      if ((kStarts >> j & 1u) && (p.channel_starts >> j & 1u)) {
        ++c;
        k = coef();
      }
      float u = fmaf(dev::element(v[i / E], i % E) - x0, k.x, k.y);
      if constexpr (kResidual) u += dev::element(z[i / E], i % E);
      u = dev::activate<kAct>(u);
      if constexpr (kAct == NK_ACTIVATION_RELU) signs[i / E] |= (u > 0.0f ? 1u : 0u) << (i % E);
      y[i / E].v[i % E] = dev::from_float<T>(u);
    }
    if (++row_in_sample == p.rows_per_sample) row_in_sample = 0;
  }
  store_short_rows<T, E, P>(static_cast<T*>(p.y) + first, whole, count, y);
  if constexpr (kAct == NK_ACTIVATION_RELU) {
    if (p.mask != nullptr) {
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const int n = count - k * E;  // the pack's elements in the tensor; past them bits stay 0
        if (n > 0) {
          dev::store_mask_bits<E>(p.mask, first + k * E,
                                  n >= E ? signs[k] : signs[k] & ((1u << n) - 1u));
        }
      }
    }
  }
}

// Enqueues the kernel of the row length, fusion and pointers; the caller checks cudaGetLastError.
template <class T, int L = 2>
void launch_short_rows(const ShortRowsParams& p, const ShortRowsPlan& plan, int activation,
                       cudaStream_t stream) {
  if constexpr (L <= 16 / static_cast<int>(sizeof(T))) {
    if (plan.len != L) return launch_short_rows<T, L + 1>(p, plan, activation, stream);
    with_forward_fusion(activation, p.z != nullptr, [&](auto act, auto residual) {
      dev::launch_dependent(
          forward_short_rows<T, L, decltype(act)::value, decltype(residual)::value>,
          static_cast<unsigned>(plan.blocks), kShortRowsBlock, 0, stream, p);
    });
  }
}

}  // namespace nk::cuda
