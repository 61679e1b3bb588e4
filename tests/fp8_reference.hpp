// The value of an OCP 8-bit floating point code by the format's definition alone (sign, biased
// exponent, mantissa), never from the encoder: E4M3 (bias 7, 3 mantissa bits, no infinities,
// S.1111.111 a NaN) and E5M2 (bias 15, 2 mantissa bits, exponent 31 infinities and NaNs);
// exponent 0 holds the subnormals. NaN for NaN codes, +-inf for E5M2's infinities.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace nkt {

inline double fp8_reference_value(uint8_t code, bool e5m2) {
  const int exponent_bits = e5m2 ? 5 : 4, mantissa_bits = e5m2 ? 2 : 3, bias = e5m2 ? 15 : 7;
  const bool negative = code & 0x80;
  const int exponent = (code >> mantissa_bits) & ((1 << exponent_bits) - 1);
  const int mantissa = code & ((1 << mantissa_bits) - 1);
  const int top = (1 << exponent_bits) - 1;
  double v;
  if (e5m2 && exponent == top) {
    v = mantissa == 0 ? std::numeric_limits<double>::infinity()
                      : std::numeric_limits<double>::quiet_NaN();
  } else if (!e5m2 && exponent == top && mantissa == (1 << mantissa_bits) - 1) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {  // subnormal: 0.m * 2^(1 - bias)
    v = std::ldexp(static_cast<double>(mantissa), 1 - bias - mantissa_bits);
  } else {  // normal: 1.m * 2^(e - bias)
    v = std::ldexp(static_cast<double>((1 << mantissa_bits) + mantissa),
                   exponent - bias - mantissa_bits);
  }
  return negative ? -v : v;
}

}  // namespace nkt
