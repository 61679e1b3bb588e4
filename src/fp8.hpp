// OCP 8-bit floating point (E4M3 and E5M2) encoding, one function for the CPU backend (from fp64)
// and the CUDA kernels (from fp32), so that both follow the same rules:
//  - round to nearest, ties to even, at every magnitude (subnormals included);
//  - saturate: |v| at or above the largest finite value (E4M3 448, E5M2 57344), infinities
//    included, gives that value with v's sign (E4M3 has no infinity; E5M2's are never produced);
//  - NaN gives 0x7F (a NaN in both formats); -0 and values that round to zero keep their sign.
// The scaling by a power of two (ldexp) and rint are exact, so the result is the correctly
// rounded one for any input of the floating type F.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define NK_FP8_FN __host__ __device__ __forceinline__
#else
#define NK_FP8_FN inline
#endif

namespace nk {

// E5M2 (true) or E4M3 (false) parameters.
struct Fp8Format {
  int mantissa_bits;
  int min_exponent;  // of the smallest normal value
  int bias;
  uint8_t max_code;  // the largest finite magnitude
  float max_value;
};

NK_FP8_FN Fp8Format fp8_format(bool e5m2) {
  return e5m2 ? Fp8Format{2, -14, 15, 0x7B, 57344.0f} : Fp8Format{3, -6, 7, 0x7E, 448.0f};
}

template <class F>
NK_FP8_FN uint8_t encode_fp8(F v, bool e5m2) {
  const Fp8Format f = fp8_format(e5m2);
  if (v != v) return 0x7F;
  const uint8_t sign = std::signbit(v) ? 0x80 : 0x00;
  const F a = std::fabs(v);
  if (a >= static_cast<F>(f.max_value)) return static_cast<uint8_t>(sign | f.max_code);
  int e = 0;
  std::frexp(a, &e);  // a = m * 2^e with m in [0.5, 1): the unbiased exponent is e - 1
  int exponent = e - 1;
  if (a == 0 || exponent < f.min_exponent) exponent = f.min_exponent;  // subnormal range
  // The mantissa in units of the last place, rounded to nearest even.
  int q = static_cast<int>(std::rint(std::ldexp(a, f.mantissa_bits - exponent)));
  const int implicit = 1 << f.mantissa_bits;
  if (q == 2 * implicit) {  // rounded up to the next binade
    q = implicit;
    exponent += 1;
  }
  if (q < implicit) return static_cast<uint8_t>(sign | q);  // subnormal or zero
  return static_cast<uint8_t>(sign | ((exponent + f.bias) << f.mantissa_bits) | (q - implicit));
}

}  // namespace nk
