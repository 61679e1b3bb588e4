// The activations of the fused channel norms (nk_activation) and their derivatives, in fp64 for
// the CPU reference. ReLU keeps a NaN input NaN (as PyTorch's relu) and counts it as not positive
// (mask bit 0, gradient 0), so a NaN never passes for an active unit. SiLU uses the sigmoid in the
// form 1 / (1 + exp(-u)): for large |u| exp overflows to inf or underflows to 0 and the results
// stay finite (silu -> -0 or u, the slope -> -0 or 1).
#pragma once

#include <cmath>
#include <cstdint>

#include <normkit/normkit.h>

namespace nk::cpu {

inline double sigmoid(double u) { return 1.0 / (1.0 + std::exp(-u)); }

// y = act(u).
inline double activate(nk_activation act, double u) {
  switch (act) {
    case NK_ACTIVATION_RELU:
      return u > 0 || std::isnan(u) ? u : 0.0;
    case NK_ACTIVATION_SILU:
      return u / (1.0 + std::exp(-u));
    case NK_ACTIVATION_IDENTITY:
      break;
  }
  return u;
}

// d silu(u) / du = s * (1 + u * (1 - s)), s = sigmoid(u).
inline double silu_slope(double u) {
  const double s = sigmoid(u);
  return s * (1.0 + u * (1.0 - s));
}

// Bit (i mod 32) of word i / 32 of a ReLU mask (normkit.h's layout).
inline bool mask_bit(const uint32_t* mask, int64_t i) { return (mask[i >> 5] >> (i & 31)) & 1u; }
inline void set_mask_bit(uint32_t* mask, int64_t i) { mask[i >> 5] |= 1u << (i & 31); }

}  // namespace nk::cpu
