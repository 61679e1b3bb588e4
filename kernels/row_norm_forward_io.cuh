// The row-norm forward's launch parameters and the loads and stores its kernels share
// (row_norm_forward.cu: rows in registers, staged and generic; row_norm_split_forward.cu: few long
// rows split across blocks). The fused forms are runtime fields of ForwardParams, uniform across a
// grid; kernels instantiated with kFused false clear them (without_fusion) so that the compiler
// drops their paths.
#pragma once

#include <cstdint>

#include "common/device_types.cuh"
#include "common/fp8_encode.hpp"
#include "common/vec.cuh"

namespace nk::cuda {

struct ForwardParams {
  const void* x;
  const void* residual;  // nullptr: no residual add
  const void* bias_in;   // nullptr: none (residual add only)
  const void* weight;
  const void* bias;
  void* h;  // nullptr: h not stored
  void* y;  // T, or one byte an element with an fp8 output
  float* save_mean;
  float* save_rstd;
  const float* y_scale;  // fp8 output only
  unsigned* amax_bits;   // y_amax as bits, zeroed before the launch; fp8 output with y_amax only
  int64_t rows;
  int64_t cols;
  float eps;
  bool rms;
  bool zero_centered;
  int fp8;  // 0: y in T; 1: E4M3; 2: E5M2
  int threads_per_row;
};

// E elements of x from column col of a row starting at `base`; with a residual add, x + residual
// + bias_in rounded once to T as h is stored, and h written when asked for.
template <class T, class W, int E>
__device__ __forceinline__ void load_input(const ForwardParams& p, int64_t base, int64_t col,
                                           float (&v)[E]) {
  dev::load_floats<T, E>(static_cast<const T*>(p.x) + base + col, v);
  if (p.residual == nullptr) return;
  float r[E], b[E];
  dev::load_floats<T, E>(static_cast<const T*>(p.residual) + base + col, r);
  const W* bias_in = static_cast<const W*>(p.bias_in);
  dev::load_param<W, E>(bias_in ? bias_in + col : nullptr, b, 0.0f);
#pragma unroll
  for (int i = 0; i < E; ++i) v[i] = dev::to_float(dev::from_float<T>(v[i] + r[i] + b[i]));
  if (p.h != nullptr) dev::store_floats<T, E>(static_cast<T*>(p.h) + base + col, v);
}

// gamma = weight, 1 + weight (zero-centred) or 1, and beta = bias or 0, for E columns.
template <class W, int E>
__device__ __forceinline__ void load_affine(const ForwardParams& p, int64_t col, float (&w)[E],
                                            float (&b)[E]) {
  const W* weight = static_cast<const W*>(p.weight);
  const W* bias = static_cast<const W*>(p.bias);
  dev::load_param<W, E>(weight ? weight + col : nullptr, w, 1.0f);
  dev::load_param<W, E>(bias ? bias + col : nullptr, b, 0.0f);
  if (p.zero_centered) {
#pragma unroll
    for (int i = 0; i < E; ++i) w[i] += 1.0f;
  }
}

// Stores E outputs: rounded to T, or y * scale as fp8 with the running maximum of |y| (as bits).
// kExplicitStore: a 16-byte pack as one explicit st.global.v4 (dev::store_pack_global), for the
// staged kernel, whose y stores the compiler otherwise splits into elements; the other kernels
// keep the plain store (their 16-byte stores are intact, and their code as it was).
template <class T, int E, bool kExplicitStore = false>
__device__ __forceinline__ void store_output(const ForwardParams& p, int64_t offset,
                                             const float (&out)[E], unsigned& amax_bits) {
  if (p.fp8 == 0) {
    if constexpr (kExplicitStore) {
      dev::store_floats_global<T, E>(static_cast<T*>(p.y) + offset, out);
    } else {
      dev::store_floats<T, E>(static_cast<T*>(p.y) + offset, out);
    }
    return;
  }
  const float scale = *p.y_scale;
  dev::Pack<uint8_t, E> bytes;
#pragma unroll
  for (int i = 0; i < E; ++i) {
    bytes.v[i] = encode_fp8_bits(out[i] * scale, p.fp8 == 2);
    amax_bits = max(amax_bits, __float_as_uint(fabsf(out[i])));
  }
  *reinterpret_cast<dev::Pack<uint8_t, E>*>(static_cast<uint8_t*>(p.y) + offset) = bytes;
}

// Folds the thread's maximum of |y| bits into y_amax: a warp maximum, then one integer atomicMax
// per warp (max is exact and commutative, so the result does not depend on the order). Every
// thread of the block calls it, once, after its last row.
__device__ __forceinline__ void fold_amax(const ForwardParams& p, unsigned amax_bits) {
  if (p.amax_bits == nullptr) return;  // uniform across the grid
  for (int offset = 16; offset > 0; offset /= 2) {
    amax_bits = max(amax_bits, __shfl_xor_sync(0xffffffffu, amax_bits, offset));
  }
  if (threadIdx.x % 32 == 0) atomicMax(p.amax_bits, amax_bits);
}

// The unfused calls take instantiations with kFused false: the fusion fields are then constants,
// so the compiler drops their paths and the registers they hold (a runtime switch alone cost the
// plain layer norm up to 23 registers per thread).
template <bool kFused>
__device__ __forceinline__ void without_fusion(ForwardParams& p) {
  if constexpr (!kFused) {
    p.residual = nullptr;
    p.bias_in = nullptr;
    p.h = nullptr;
    p.y_scale = nullptr;
    p.amax_bits = nullptr;
    p.zero_centered = false;
    p.fp8 = 0;
  }
}

// h of one fetched pack as floats: x, or x + residual + bias_in rounded once to T (load_input's h,
// bit for bit), with h stored when asked for.
template <class T, class W, int E>
__device__ __forceinline__ void finish_input(const ForwardParams& p, int64_t offset, int64_t col,
                                             const dev::Pack<T, E>& x,
                                             const dev::Pack<T, E>& residual, float (&v)[E]) {
#pragma unroll
  for (int i = 0; i < E; ++i) v[i] = dev::to_float(x.v[i]);
  if (p.residual == nullptr) return;
  float b[E];
  const W* bias_in = static_cast<const W*>(p.bias_in);
  dev::load_param<W, E>(bias_in ? bias_in + col : nullptr, b, 0.0f);
#pragma unroll
  for (int i = 0; i < E; ++i) {
    v[i] = dev::to_float(dev::from_float<T>(v[i] + dev::to_float(residual.v[i]) + b[i]));
  }
  if (p.h != nullptr) dev::store_floats<T, E>(static_cast<T*>(p.h) + offset, v);
}

// E elements of h from column col of a row starting at `base`, as stored: x, or x + residual +
// bias_in rounded once to T (load_input's h, bit for bit), with h written when asked for.
template <class T, class W, int E>
__device__ __forceinline__ dev::Pack<T, E> load_input_pack(const ForwardParams& p, int64_t base,
                                                           int64_t col) {
  dev::Pack<T, E> h = *reinterpret_cast<const dev::Pack<T, E>*>(static_cast<const T*>(p.x) + base +
                                                               col);
  if (p.residual == nullptr) return h;
  float r[E], b[E];
  dev::load_floats<T, E>(static_cast<const T*>(p.residual) + base + col, r);
  const W* bias_in = static_cast<const W*>(p.bias_in);
  dev::load_param<W, E>(bias_in ? bias_in + col : nullptr, b, 0.0f);
#pragma unroll
  for (int i = 0; i < E; ++i) h.v[i] = dev::from_float<T>(dev::to_float(h.v[i]) + r[i] + b[i]);
  if (p.h != nullptr) {
    dev::store_pack_global<T, E>(static_cast<T*>(p.h) + base + col, h);
  }
  return h;
}

}  // namespace nk::cuda
