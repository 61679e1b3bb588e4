// The CUDA kernels' fp8 encoder (kernels/common/fp8_encode.hpp, bit operations on the float) gives
// the bytes of the CPU backend's (src/fp8.hpp, frexp/ldexp/rint): checked here on the host, where
// both compile, for every fp16 and every bf16 value (as floats), the boundaries of each format, and
// a dense random sample of fp32 bit patterns (fresh each run). The GPU tests then compare the bytes
// the kernels store with the CPU backend's.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>

#include "common/fp8_encode.hpp"
#include "dtype.hpp"
#include "fp8.hpp"
#include "gtest/gtest.h"
#include "test_support.hpp"

namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Counts mismatches of the two encoders at v (both formats), reporting the first few.
int compare(float v, int& reported) {
  int bad = 0;
  for (bool e5m2 : {false, true}) {
    const uint8_t want = nk::encode_fp8(v, e5m2), got = nk::encode_fp8_bits(v, e5m2);
    if (want == got) continue;
    ++bad;
    if (reported++ < 5) {
      ADD_FAILURE() << (e5m2 ? "E5M2" : "E4M3") << " of " << v << " (bits 0x" << std::hex
                    << nk::fp8_float_bits(v) << "): fp8.hpp 0x" << int{want}
                    << ", fp8_encode.hpp 0x" << int{got};
    }
  }
  return bad;
}

TEST(Fp8Encode, EveryHalfAndBfloat16ValueMatchesTheReference) {
  int reported = 0, bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    bad += compare(from_bits(h << 16), reported);  // bf16: the upper half of a float
    bad += compare(nk::half_to_float(static_cast<uint16_t>(h)), reported);
  }
  EXPECT_EQ(bad, 0);
}

TEST(Fp8Encode, BoundariesMatchTheReference) {
  int reported = 0, bad = 0;
  // Around every fp8 value and midpoint of both formats: the values next to 2^k * m / 16 for every
  // exponent an fp8 format reaches, plus saturation, infinities and NaNs.
  for (int k = -30; k <= 20; ++k) {
    for (int m = 0; m < 32; ++m) {
      const float base = std::ldexp(static_cast<float>(m) / 16.0f, k);
      for (float v : {base, std::nextafter(base, 0.0f), std::nextafter(base, 1e30f)}) {
        bad += compare(v, reported);
        bad += compare(-v, reported);
      }
    }
  }
  for (float v : {448.0f, 464.0f, 465.0f, 57344.0f, 61440.0f, 1e30f, from_bits(0x7F800000u),
                  from_bits(0xFF800000u), from_bits(0x7FC00000u), from_bits(0xFFFFFFFFu),
                  from_bits(0x7F800001u), 0.0f, -0.0f, from_bits(1u)}) {
    bad += compare(v, reported);
  }
  EXPECT_EQ(bad, 0);
}

TEST(Fp8Encode, RandomFloatBitPatternsMatchTheReference) {
  const uint64_t seed = nkt::fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  int reported = 0, bad = 0;
  for (int i = 0; i < (1 << 21); ++i) {
    const auto u = static_cast<uint32_t>(rng());
    bad += compare(from_bits(u), reported);
    // Magnitudes an fp8 format holds: exponents 2^-25 .. 2^17 with random mantissas.
    const uint32_t exponent = 102u + static_cast<uint32_t>(rng() % 43);
    bad += compare(from_bits((u & 0x807FFFFFu) | (exponent << 23)), reported);
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace
