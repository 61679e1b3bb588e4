// The activations of the fused channel norms (normkit.h: y = act(u)), their derivatives, and the
// ReLU bit mask: bit (i mod 32) of word i / 32 is u_i > 0, i the element's memory index.
// The mask is written per pack of E elements starting at an index that is a multiple of E: eight
// elements own a whole byte, stored plainly; fewer share a byte with another thread's pack, so they
// are ORed into their word (atomicOr on a mask zeroed first: an OR's result does not depend on the
// order, so the bits repeat exactly). Reads take any index, a pack possibly straddling two words.
#pragma once

#include <normkit/normkit.h>

#include <cstdint>

namespace nk::dev {

// y = act(u). ReLU keeps a NaN (as PyTorch's clamp_min does); SiLU is u / (1 + exp(-u)) with the
// full-precision exp and the fast division (2 ulps, and no slow-path call, whose stack frame
// would cost the reductions their registers): fp32 outputs stay within a few ulps of fp64.
template <int kAct>
__device__ __forceinline__ float activate(float u) {
  if constexpr (kAct == NK_ACTIVATION_RELU) {
    return u > 0.0f || u != u ? u : 0.0f;
  } else if constexpr (kAct == NK_ACTIVATION_SILU) {
    return __fdividef(u, 1.0f + expf(-u));  // a divisor above 2^126 (u < -87) gives 0
  } else {
    return u;
  }
}

// 1 / d for d >= 1, +inf or NaN: the hardware's approximate reciprocal (MUFU.RCP, 1 ulp) alone.
// __fdividef(1, d) is the same MUFU.RCP times 1, after a test that scales a d below 2^-126 by
// 2^24 (and the quotient with it); for d >= 1 that test changes nothing, so the bits are the
// same, and the 4 instructions it costs (of about 24 per element in SiLU's backward) are saved.
__device__ __forceinline__ float reciprocal_at_least_one(float d) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(d));
  return r;
}

// SiLU's derivative at u: s * (1 + u * (1 - s)), s = sigmoid(u).
__device__ __forceinline__ float silu_derivative(float u) {
  const float s = reciprocal_at_least_one(1.0f + expf(-u));
  return s * fmaf(u, 1.0f - s, 1.0f);
}

// Stores the signs (> 0) of E values of a pack at element index i (a multiple of E); of its first
// `count` only for the tensor's last elements after its whole packs, all in one byte from i on.
// Eight-element packs store that byte whole (bits past the tensor are padding, 0), so no atomic
// meets another pack's store in a word; narrower packs OR their bits in.
// store_mask_bits takes the signs as bits already (bit e for element i + e).
template <int E>
__device__ __forceinline__ void store_mask_bits(uint32_t* mask, int64_t i, uint32_t bits) {
  static_assert(E == 1 || E == 2 || E == 4 || E == 8, "packs of 1, 2, 4 or 8 elements");
  if constexpr (E == 8) {
    reinterpret_cast<uint8_t*>(mask)[i / 8] = static_cast<uint8_t>(bits);
  } else if (bits != 0) {
    atomicOr(mask + i / 32, bits << (i % 32));
  }
}

template <int E>
__device__ __forceinline__ void store_mask(uint32_t* mask, int64_t i, const float (&y)[E],
                                           int count = E) {
  uint32_t bits = 0;
#pragma unroll
  for (int e = 0; e < E; ++e) bits |= (e < count && y[e] > 0.0f ? 1u : 0u) << e;
  store_mask_bits<E>(mask, i, bits);
}

// store_mask for a pack (at i, a multiple of E) that may share a byte of the mask with another
// block's single elements (rows that are not whole packs): its bits are ORed in at any E, into a
// mask zeroed first.
template <int E>
__device__ __forceinline__ void or_mask(uint32_t* mask, int64_t i, const float (&y)[E]) {
  uint32_t bits = 0;
#pragma unroll
  for (int e = 0; e < E; ++e) bits |= (y[e] > 0.0f ? 1u : 0u) << e;
  if (bits != 0) atomicOr(mask + i / 32, bits << (i % 32));
}

// The E mask bits of elements i .. i + E - 1 (any i), bit e for element i + e.
template <int E>
__device__ __forceinline__ uint32_t load_mask(const uint32_t* mask, int64_t i) {
  const int shift = static_cast<int>(i % 32);
  uint32_t bits = mask[i / 32] >> shift;
  if (shift + E > 32) bits |= mask[i / 32 + 1] << (32 - shift);
  return E == 32 ? bits : bits & ((1u << E) - 1u);
}

}  // namespace nk::dev
