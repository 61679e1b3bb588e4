// fp16/bf16 <-> fp32/fp64 conversions by bit manipulation, independent of the CUDA headers so the
// CPU-only build has them too.
#include "dtype.hpp"

#include <cmath>
#include <cstring>
#include <limits>

namespace nk {
namespace {

float float_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint32_t bits_from_float(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// Rounds finite v to the nearest number with `mantissa` fraction bits whose exponent is at least
// `min_exponent` (the smallest normal exponent: below it the spacing stays fixed, which gives the
// subnormals), ties to even. Scaling by a power of two is exact, so the only rounding is
// nearbyint's, in the default round-to-nearest-even mode.
double round_to_format(double v, int mantissa, int min_exponent) {
  if (v == 0.0) return v;
  int e;
  std::frexp(v, &e);  // |v| = f * 2^e with f in [0.5, 1)
  int exponent = e - 1 < min_exponent ? min_exponent : e - 1;
  double quantum = std::ldexp(1.0, exponent - mantissa);
  return std::nearbyint(v / quantum) * quantum;
}

}  // namespace

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return float_from_bits(sign | 0x7F800000u | (mantissa << 13));
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

float bf16_to_float(uint16_t b) { return float_from_bits(static_cast<uint32_t>(b) << 16); }

uint16_t half_from_double(double v) {
  uint16_t sign = std::signbit(v) ? 0x8000u : 0u;
  if (std::isnan(v)) return sign | 0x7E00u;
  double r = std::fabs(round_to_format(v, 10, -14));
  if (r > 65504.0) return sign | 0x7C00u;  // inf, and every finite value that rounds past max
  if (r < std::ldexp(1.0, -14)) {          // subnormal or zero: r = m * 2^-24
    return sign | static_cast<uint16_t>(std::ldexp(r, 24));
  }
  int e;
  double f = std::frexp(r, &e);  // r = f * 2^e, f in [0.5, 1)
  auto mantissa = static_cast<uint16_t>(std::ldexp(f, 11) - 1024.0);
  return sign | static_cast<uint16_t>((e - 1 + 15) << 10) | mantissa;
}

uint16_t bf16_from_double(double v) {
  uint16_t sign = std::signbit(v) ? 0x8000u : 0u;
  if (std::isnan(v)) return sign | 0x7FC0u;
  double r = std::fabs(round_to_format(v, 7, -126));
  // Largest bf16: (2 - 2^-7) * 2^127. Beyond it (inf included) the result is inf.
  if (r > std::ldexp(255.0, 120)) return sign | 0x7F80u;
  // r is now exactly representable in bf16, hence in float: keep the top 16 bits.
  return sign | static_cast<uint16_t>(bits_from_float(static_cast<float>(r)) >> 16);
}

bool is_valid(nk_dtype dtype) { return dtype == NK_F32 || dtype == NK_F16 || dtype == NK_BF16; }

size_t dtype_size(nk_dtype dtype) { return dtype == NK_F32 ? 4 : 2; }

const char* dtype_name(nk_dtype dtype) {
  switch (dtype) {
    case NK_F32:
      return "f32";
    case NK_F16:
      return "f16";
    case NK_BF16:
      return "bf16";
  }
  return "unknown";
}

}  // namespace nk
