// The row-norm backward's launch parameters and the loads and stores its kernels share
// (row_norm_backward.cu; row_norm_split_backward.cu: dx of few long rows split across blocks).
#pragma once

#include <cstdint>

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
};

// gamma of E columns from `col`: weight, 1 + weight (zero-centred) or 1.
template <class W, int E>
__device__ __forceinline__ void load_gamma(const BackwardParams& p, int64_t col, float (&w)[E]) {
  const W* weight = static_cast<const W*>(p.weight);
  dev::load_param<W, E>(weight ? weight + col : nullptr, w, 1.0f);
  // Branch-free (fewer live registers than two code paths): + 0 leaves any weight but -0 as it
  // is, and the CPU backend turns -0 into +0 the same way.
#pragma unroll
  for (int i = 0; i < E; ++i) w[i] += p.gamma_offset;
}

// E elements at p as stored (aligned to sizeof(T) * E): kept packed in registers.
template <class T, int E>
__device__ __forceinline__ dev::Pack<T, E> load_pack(const T* p) {
  return *reinterpret_cast<const dev::Pack<T, E>*>(p);
}

// Stores E values of dh at `offset` (dx and/or dresidual), dh_extra added first when given.
// kExplicitStore: 16-byte packs as one explicit st.global.v4 (dev::store_pack_global), for the
// staged kernel, whose stores the compiler otherwise splits into elements.
template <class T, int E, bool kExplicitStore = false>
__device__ __forceinline__ void store_dh(const BackwardParams& p, int64_t offset, float (&dh)[E]) {
  if (p.dh_extra != nullptr) {
    // Kept packed as stored until added (half the registers for 16-bit types).
    const dev::Pack<T, E> extra = load_pack<T, E>(static_cast<const T*>(p.dh_extra) + offset);
#pragma unroll
    for (int i = 0; i < E; ++i) dh[i] += dev::to_float(extra.v[i]);
  }
  auto store = [&](void* out) {
    if constexpr (kExplicitStore) {
      dev::store_floats_global<T, E>(static_cast<T*>(out) + offset, dh);
    } else {
      dev::store_floats<T, E>(static_cast<T*>(out) + offset, dh);
    }
  };
  if (p.dx != nullptr) store(p.dx);
  if (p.dresidual != nullptr) store(p.dresidual);
}

}  // namespace nk::cuda
