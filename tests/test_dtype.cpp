// The host fp16/bf16 conversions that the CPU backend stores with: known bit patterns, exact
// decoding of every pattern, and round-to-nearest-even checked against the two neighbouring
// representable values for random doubles (an independent characterization of correct rounding).
#include <cmath>
#include <cstdint>
#include <limits>

#include "dtype.hpp"
#include "test_support.hpp"

namespace {

TEST(Dtype, HalfKnownPatterns) {
  EXPECT_EQ(nk::half_from_double(1.0), 0x3C00);
  EXPECT_EQ(nk::half_from_double(-2.0), 0xC000);
  EXPECT_EQ(nk::half_from_double(65504.0), 0x7BFF);               // largest finite
  EXPECT_EQ(nk::half_from_double(65519.99), 0x7BFF);              // below the midpoint to inf
  EXPECT_EQ(nk::half_from_double(65520.0), 0x7C00);               // the midpoint rounds to inf
  EXPECT_EQ(nk::half_from_double(std::ldexp(1.0, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(nk::half_from_double(std::ldexp(1.0, -25)), 0x0000);  // tie to even: zero
  EXPECT_EQ(nk::half_from_double(std::ldexp(3.0, -25)), 0x0002);  // tie to even: 2
  EXPECT_EQ(nk::half_from_double(std::ldexp(1.0, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(nk::half_from_double(1.0 + std::ldexp(1.0, -11)), 0x3C00);  // tie to even (down)
  EXPECT_EQ(nk::half_from_double(1.0 + std::ldexp(3.0, -11)), 0x3C02);  // tie to even (up)
  EXPECT_EQ(nk::half_from_double(-0.0), 0x8000);
  EXPECT_EQ(nk::half_from_double(std::numeric_limits<double>::infinity()), 0x7C00);
  EXPECT_EQ(nk::half_from_double(-1e300), 0xFC00);
  EXPECT_TRUE(std::isnan(nk::half_to_float(nk::half_from_double(std::nan("")))));
  EXPECT_EQ(nk::half_to_float(0x3555), 0.333251953125f);  // 1365/4096
}

TEST(Dtype, Bf16KnownPatterns) {
  EXPECT_EQ(nk::bf16_from_double(1.0), 0x3F80);
  EXPECT_EQ(nk::bf16_from_double(-3.0), 0xC040);
  EXPECT_EQ(nk::bf16_from_double(1.0 + std::ldexp(1.0, -8)), 0x3F80);  // tie to even (down)
  EXPECT_EQ(nk::bf16_from_double(1.0 + std::ldexp(3.0, -8)), 0x3F82);  // tie to even (up)
  EXPECT_EQ(nk::bf16_from_double(std::ldexp(255.0, 120)), 0x7F7F);     // largest finite
  EXPECT_EQ(nk::bf16_from_double(std::ldexp(511.0, 119)), 0x7F80);     // midpoint to inf
  EXPECT_EQ(nk::bf16_from_double(std::ldexp(1.0, -133)), 0x0001);      // smallest subnormal
  EXPECT_EQ(nk::bf16_from_double(1e300), 0x7F80);
  EXPECT_TRUE(std::isnan(nk::bf16_to_float(nk::bf16_from_double(-std::nan("")))));
}

// Decoding then encoding every finite pattern gives the pattern back.
TEST(Dtype, EveryFinitePatternRoundTrips) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const auto bits = static_cast<uint16_t>(b);
    const float h = nk::half_to_float(bits);
    if (std::isfinite(h)) {
      ASSERT_EQ(nk::half_from_double(h), bits) << std::hex << b;
    }
    const float f = nk::bf16_to_float(bits);
    if (std::isfinite(f)) {
      ASSERT_EQ(nk::bf16_from_double(f), bits) << std::hex << b;
    }
  }
}

// `got` encodes v correctly rounded: no neighbouring pattern is closer, ties go to even.
template <class Decode>
void expect_nearest(double v, uint16_t got, Decode decode, const char* what) {
  const double r = decode(got);
  const uint16_t magnitude = got & 0x7FFF;
  const double up = decode(static_cast<uint16_t>(got + 1));  // next away from zero
  const double down = magnitude == 0 ? -up : decode(static_cast<uint16_t>(got - 1));
  const double err = std::abs(v - r);
  // No representable neighbour is closer; on a tie the even pattern wins.
  if (std::isfinite(up)) {
    ASSERT_LE(err, std::abs(v - up)) << what << " " << v;
  }
  ASSERT_LE(err, std::abs(v - down)) << what << " " << v;
  if (err == std::abs(v - up) || err == std::abs(v - down)) {
    ASSERT_EQ(got & 1, 0) << what << " " << v;
  }
}

TEST(Dtype, RandomDoublesRoundToNearest) {
  nkt::Random rng;
  auto half = [](uint16_t b) { return static_cast<double>(nk::half_to_float(b)); };
  auto bf16 = [](uint16_t b) { return static_cast<double>(nk::bf16_to_float(b)); };
  for (double scale : {1e-7, 1e-3, 1.0, 100.0, 3e4}) {
    for (double v : rng.uniform(20000, 0.0, scale)) {
      expect_nearest(v, nk::half_from_double(v), half, "f16");
      expect_nearest(v, nk::bf16_from_double(v), bf16, "bf16");
    }
  }
}

}  // namespace
