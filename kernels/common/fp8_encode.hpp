// fp32 -> OCP fp8 (E4M3, E5M2) on the bits of the float, for the CUDA kernels. src/fp8.hpp is the
// reference (the CPU backend's encoder); this one computes the same byte from a float with a few
// integer operations and no frexp/ldexp, whose out-parameter and branches cost the register-bound
// row kernels their spill-free budget. The rules are fp8.hpp's: round to nearest even at every
// magnitude, saturate at the largest finite value (infinities included), NaN -> 0x7F, signed zero.
//  - |v| below the smallest normal: v * 2^(mantissa_bits - min_exponent) is exact and rint rounds
//    it to nearest even; the integer is the code (2^mantissa_bits, the smallest normal, included).
//  - normal: the fp32 bits are rounded to nearest even at the fp8 mantissa width by adding half an
//    ulp minus one plus the lowest kept bit; a carry moves into the exponent as it should; the
//    exponent bias is then changed from fp32's to the fp8 one.
// Host-callable too, so tests/test_fp8_encode.cpp checks it against fp8.hpp on the CPU for every
// fp16 and bf16 value and a dense sample of fp32 (the GPU tests then compare the kernels' bytes).
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define NK_FP8_ENCODE_FN __host__ __device__ __forceinline__
#else
#define NK_FP8_ENCODE_FN inline
#endif

namespace nk {

NK_FP8_ENCODE_FN uint32_t fp8_float_bits(float v) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(v);
#else
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
#endif
}

// The fp8 byte of v (E5M2 when e5m2, else E4M3).
NK_FP8_ENCODE_FN uint8_t encode_fp8_bits(float v, bool e5m2) {
  const int mantissa = e5m2 ? 2 : 3;
  const int min_exponent = e5m2 ? -14 : -6;
  const int bias = e5m2 ? 15 : 7;
  const uint32_t max_code = e5m2 ? 0x7Bu : 0x7Eu;
  const float max_value = e5m2 ? 57344.0f : 448.0f;
  const uint32_t u = fp8_float_bits(v);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t mag = u & 0x7FFFFFFFu;
  if (mag > 0x7F800000u) return 0x7F;  // NaN
  const float a = fabsf(v);
  if (a >= max_value) return static_cast<uint8_t>(sign | max_code);
  if (mag < static_cast<uint32_t>(127 + min_exponent) << 23) {  // below the smallest normal
    // a * 2^(mantissa - min_exponent) < 2^mantissa: exact, then rounded to nearest even.
    const float scaled = a * (e5m2 ? 65536.0f : 512.0f);
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(rintf(scaled)));
  }
  const int drop = 23 - mantissa;
  const uint32_t rounded = (mag + ((1u << (drop - 1)) - 1u) + ((mag >> drop) & 1u)) >> drop;
  return static_cast<uint8_t>(sign | (rounded - (static_cast<uint32_t>(127 - bias) << mantissa)));
}

}  // namespace nk
