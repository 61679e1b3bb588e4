// The fp8 encoder (src/fp8.hpp) against the OCP 8-bit floating point definition. The table of the
// 256 codes of each format is decoded from the definition alone (tests/fp8_reference.hpp: sign,
// biased exponent, mantissa; E4M3: bias 7, no infinities, S.1111.111 NaN; E5M2: bias 15,
// exponent 31 infinities and NaNs), never from the encoder. Then every finite code must encode
// back to itself, every midpoint between neighbours must round to the neighbour with an even
// mantissa, the values just off a midpoint to the nearer neighbour, and the saturation and NaN
// rules must hold.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "fp8.hpp"
#include "fp8_reference.hpp"
#include "gtest/gtest.h"

namespace {

struct Format {
  bool e5m2;  // E5M2, else E4M3
};

constexpr Format kE4M3{false};
constexpr Format kE5M2{true};

// The value of `code` by the format's definition (tests/fp8_reference.hpp).
double decode(const Format& f, uint8_t code) { return nkt::fp8_reference_value(code, f.e5m2); }

// The non-negative finite codes in increasing order of value.
std::vector<uint8_t> finite_positive_codes(const Format& f) {
  std::vector<uint8_t> out;
  for (int c = 0; c < 0x80; ++c) {
    if (std::isfinite(decode(f, static_cast<uint8_t>(c)))) out.push_back(static_cast<uint8_t>(c));
  }
  return out;
}

class Fp8Encode : public testing::TestWithParam<Format> {};

// A few values spelled out by the format definition, so that the decoder itself is checked.
TEST(Fp8Decode, KnownValues) {
  EXPECT_EQ(decode(kE4M3, 0x7E), 448.0);
  EXPECT_EQ(decode(kE4M3, 0x08), std::ldexp(1.0, -6));  // smallest normal
  EXPECT_EQ(decode(kE4M3, 0x01), std::ldexp(1.0, -9));  // smallest subnormal
  EXPECT_EQ(decode(kE4M3, 0x38), 1.0);
  EXPECT_EQ(decode(kE4M3, 0xC0), -2.0);
  EXPECT_TRUE(std::isnan(decode(kE4M3, 0x7F)));
  EXPECT_EQ(decode(kE4M3, 0x78), 256.0);  // E4M3 has no infinity: exponent 15 is finite
  EXPECT_EQ(decode(kE5M2, 0x7B), 57344.0);
  EXPECT_EQ(decode(kE5M2, 0x04), std::ldexp(1.0, -14));
  EXPECT_EQ(decode(kE5M2, 0x01), std::ldexp(1.0, -16));
  EXPECT_EQ(decode(kE5M2, 0x3C), 1.0);
  EXPECT_TRUE(std::isinf(decode(kE5M2, 0x7C)));
  EXPECT_TRUE(std::isnan(decode(kE5M2, 0x7F)));
  EXPECT_EQ(finite_positive_codes(kE4M3).size(), 127u);  // 0x00..0x7E
  EXPECT_EQ(finite_positive_codes(kE5M2).size(), 124u);  // 0x00..0x7B
}

TEST_P(Fp8Encode, EveryFiniteCodeEncodesToItself) {
  const Format f = GetParam();
  for (int c = 0; c < 256; ++c) {
    const double v = decode(f, static_cast<uint8_t>(c));
    if (!std::isfinite(v)) continue;
    SCOPED_TRACE(testing::Message() << "code 0x" << std::hex << c << " value " << v);
    EXPECT_EQ(nk::encode_fp8(v, f.e5m2), c);
    EXPECT_EQ(nk::encode_fp8(static_cast<float>(v), f.e5m2), c);
  }
}

TEST_P(Fp8Encode, MidpointsRoundToEvenAndNeighboursToTheNearer) {
  const Format f = GetParam();
  const std::vector<uint8_t> codes = finite_positive_codes(f);
  for (size_t i = 0; i + 1 < codes.size(); ++i) {
    const double lo = decode(f, codes[i]), hi = decode(f, codes[i + 1]);
    const double mid = (lo + hi) / 2;  // exact in fp64 and fp32
    const uint8_t even = (codes[i] & 1) == 0 ? codes[i] : codes[i + 1];
    const double below = std::nextafter(mid, lo), above = std::nextafter(mid, hi);
    const float below_f = std::nextafter(static_cast<float>(mid), static_cast<float>(lo));
    const float above_f = std::nextafter(static_cast<float>(mid), static_cast<float>(hi));
    for (int sign : {1, -1}) {
      SCOPED_TRACE(testing::Message() << "between " << sign * lo << " and " << sign * hi);
      const uint8_t s = sign < 0 ? 0x80 : 0x00;
      EXPECT_EQ(nk::encode_fp8(sign * mid, f.e5m2), s | even);
      EXPECT_EQ(nk::encode_fp8(static_cast<float>(sign * mid), f.e5m2), s | even);
      EXPECT_EQ(nk::encode_fp8(sign * below, f.e5m2), s | codes[i]);
      EXPECT_EQ(nk::encode_fp8(sign * above, f.e5m2), s | codes[i + 1]);
      EXPECT_EQ(nk::encode_fp8(sign * below_f, f.e5m2), s | codes[i]);
      EXPECT_EQ(nk::encode_fp8(sign * above_f, f.e5m2), s | codes[i + 1]);
    }
  }
}

TEST_P(Fp8Encode, SaturatesAndKeepsNaN) {
  const Format f = GetParam();
  const uint8_t max_code = finite_positive_codes(f).back();
  const double max = decode(f, max_code);
  const double inf = std::numeric_limits<double>::infinity();
  for (double v : {max, std::nextafter(max, inf), max * 1.0625, max * 2, 1e300, inf}) {
    SCOPED_TRACE(testing::Message() << "value " << v);
    EXPECT_EQ(nk::encode_fp8(v, f.e5m2), max_code);
    EXPECT_EQ(nk::encode_fp8(-v, f.e5m2), 0x80 | max_code);
  }
  EXPECT_EQ(nk::encode_fp8(std::numeric_limits<float>::infinity(), f.e5m2), max_code);
  const uint8_t nan = nk::encode_fp8(std::numeric_limits<double>::quiet_NaN(), f.e5m2);
  EXPECT_TRUE(std::isnan(decode(f, nan)));
  EXPECT_TRUE(std::isnan(decode(f, nk::encode_fp8(std::nanf(""), f.e5m2))));
  // Zero keeps its sign; below half the smallest subnormal rounds to zero, at half to even (0).
  const double tiny = decode(f, 0x01);
  EXPECT_EQ(nk::encode_fp8(0.0, f.e5m2), 0x00);
  EXPECT_EQ(nk::encode_fp8(-0.0, f.e5m2), 0x80);
  EXPECT_EQ(nk::encode_fp8(tiny / 2, f.e5m2), 0x00);
  EXPECT_EQ(nk::encode_fp8(-tiny / 2, f.e5m2), 0x80);
  EXPECT_EQ(nk::encode_fp8(std::nextafter(tiny / 2, 1.0), f.e5m2), 0x01);
  EXPECT_EQ(nk::encode_fp8(1e-300, f.e5m2), 0x00);
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp8Encode, testing::Values(kE4M3, kE5M2),
                         [](const testing::TestParamInfo<Format>& param_info) {
                           return std::string(param_info.param.e5m2 ? "e5m2" : "e4m3");
                         });

}  // namespace
