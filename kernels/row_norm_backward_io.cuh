// The row-norm backward's launch parameters and the loads and stores its kernels share
// (row_norm_backward.cu; row_norm_split_backward.cu: dx of few long rows split across blocks).
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/device_types.cuh"
#include "common/vec.cuh"

namespace nk::cuda {

struct BackwardParams {
  const void* x;
  const void* dy;
  const void* weight;
  const float* save_mean;  // nullptr for RMS norm
  const float* save_rstd;
  void* dx;              // nullptr: not computed
  const void* dh_extra;  // nullptr: none (residual add only)
  void* dresidual;       // nullptr: not computed (residual add only)
  float* partial_dw;     // [chunks][stride], nullptr when neither dweight nor dbias is wanted
  float* partial_db;     // [chunks][stride], nullptr unless dbias is wanted
  int64_t rows;
  int64_t cols;
  int64_t stride;
  int64_t chunks;
  int64_t groups_per_chunk;  // iterations of the block (rows_per_block rows each) per chunk
  bool rms;
  float gamma_offset;  // gamma = weight + gamma_offset: 1 zero-centred, else 0
  int threads_per_row;
  float inv_cols;  // 1 / cols, correctly rounded as on the device: read from the parameters, it
                   // keeps a register free in backward_in_registers
};

// E elements at p as stored (aligned to sizeof(T) * E): kept packed in registers.
template <class T, int E>
__device__ __forceinline__ dev::Pack<T, E> load_pack(const T* p) {
  return *reinterpret_cast<const dev::Pack<T, E>*>(p);
}

// 32 bytes of 1.0 in each weight dtype, aligned for 16-byte loads, read by load_gamma in place of
// an absent weight: the load and its conversion then need no default per element (about 9
// instructions a pass of a 16-bit pack).
#define NK_ONES8(bits) {bits, bits, bits, bits, bits, bits, bits, bits}
__device__ const __align__(16) uint32_t kOnesFloat[8] = NK_ONES8(0x3f800000u);
__device__ const __align__(16) uint32_t kOnesHalf[8] = NK_ONES8(0x3c003c00u);
__device__ const __align__(16) uint32_t kOnesBfloat16[8] = NK_ONES8(0x3f803f80u);
#undef NK_ONES8

template <class W>
__device__ __forceinline__ const W* ones() {
  static_assert(std::is_same_v<W, float> || std::is_same_v<W, __half> ||
                std::is_same_v<W, __nv_bfloat16>);
  if constexpr (std::is_same_v<W, float>) return reinterpret_cast<const W*>(kOnesFloat);
  if constexpr (std::is_same_v<W, __half>) return reinterpret_cast<const W*>(kOnesHalf);
  if constexpr (std::is_same_v<W, __nv_bfloat16>) return reinterpret_cast<const W*>(kOnesBfloat16);
}

// gamma of E columns from `col`: weight, 1 + weight (zero-centred) or 1.
template <class W, int E>
__device__ __forceinline__ void load_gamma(const BackwardParams& p, int64_t col, float (&w)[E]) {
  static_assert(E * sizeof(W) <= 32, "ones() holds 32 bytes");
  const W* weight = static_cast<const W*>(p.weight);
  const W* src = weight ? weight + col : ones<W>();
  constexpr int kPerAccess = (16 / sizeof(W)) < E ? (16 / sizeof(W)) : E;
#pragma unroll
  for (int i = 0; i < E; i += kPerAccess) {
    const auto part = load_pack<W, kPerAccess>(src + i);
#pragma unroll
    for (int j = 0; j < kPerAccess; ++j) w[i + j] = dev::element(part, j);
  }
  // Branch-free (fewer live registers than two code paths): + 0 leaves any weight but -0 as it
  // is, and the CPU backend turns -0 into +0 the same way.
#pragma unroll
  for (int i = 0; i < E; ++i) w[i] += p.gamma_offset;
}

// dx = rstd * (g - mean_g - xhat * mean_gx), xhat = (x - mean) * rstd, as
// b * (x - mean) + (a * g + c): after the subtraction, g and two FMAs an element where the plain
// form took four instructions (sm_90 SASS). x - mean stays first, so a large mean cancels exactly
// as in the forward.
// (The other FMA order, a * g + (b * (x - mean) + c), spilled in backward_staged<half, float>.)
// b = -(rstd * mean_gx) * rstd: mean_gx first, so that a row whose mean_gx is 0 (constant x) gives
// b = 0 even where rstd * rstd would overflow.
struct DxCoefficients {
  float a, b, c;
};

__device__ __forceinline__ DxCoefficients dx_coefficients(float rstd, float mean_g,
                                                          float mean_gx) {
  return {rstd, -(rstd * mean_gx) * rstd, -rstd * mean_g};
}

// dx of one element from g = dy * gamma and x - mean.
__device__ __forceinline__ float dx_of(const DxCoefficients& k, float g, float centred) {
  return fmaf(k.b, centred, fmaf(k.a, g, k.c));
}

// Stores E values of dh at `offset` (dx and/or dresidual), dh_extra added first when given.
// kExplicitStore: 16-byte packs as one explicit st.global.v4 (dev::store_pack_global), for the
// staged kernel, whose stores the compiler otherwise splits into elements.
// The path with dh_extra ends in its own copy of the stores: as a short branch that rejoined the
// stores, ptxas predicated its load and adds, which then issued on every call (15 to 16
// instructions a 16-byte pack in the register and generic kernels, sm_90).
template <class T, int E, bool kExplicitStore = false>
__device__ __forceinline__ void store_dh(const BackwardParams& p, int64_t offset, float (&dh)[E]) {
  auto store = [&](void* out) {
    if constexpr (kExplicitStore) {
      dev::store_floats_global<T, E>(static_cast<T*>(out) + offset, dh);
    } else {
      dev::store_floats<T, E>(static_cast<T*>(out) + offset, dh);
    }
  };
  if (p.dh_extra != nullptr) {
    // Kept packed as stored until added (half the registers for 16-bit types).
    const dev::Pack<T, E> extra = load_pack<T, E>(static_cast<const T*>(p.dh_extra) + offset);
#pragma unroll
    for (int i = 0; i < E; ++i) dh[i] += dev::element(extra, i);
    if (p.dx != nullptr) store(p.dx);
    if (p.dresidual != nullptr) store(p.dresidual);
    return;
  }
  if (p.dx != nullptr) store(p.dx);
  if (p.dresidual != nullptr) store(p.dresidual);
}

}  // namespace nk::cuda
