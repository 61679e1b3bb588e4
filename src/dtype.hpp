// Storage dtypes on the host: fp16 and bf16 as 16-bit patterns with exact decoding and
// round-to-nearest-even encoding straight from double (no double rounding through float), and the
// one runtime dtype -> template dispatch of the host code.
#pragma once

#include <normkit/normkit.h>

#include <cstddef>
#include <cstdint>

#include "error.hpp"

namespace nk {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

float half_to_float(uint16_t bits);
float bf16_to_float(uint16_t bits);
uint16_t half_from_double(double v);  // nearest fp16, ties to even; overflow gives inf
uint16_t bf16_from_double(double v);  // nearest bf16, ties to even; overflow gives inf

inline double to_double(float v) { return v; }
inline double to_double(Half v) { return half_to_float(v.bits); }
inline double to_double(BFloat16 v) { return bf16_to_float(v.bits); }

template <class T>
T from_double(double v);
template <>
inline float from_double<float>(double v) {
  return static_cast<float>(v);
}
template <>
inline Half from_double<Half>(double v) {
  return Half{half_from_double(v)};
}
template <>
inline BFloat16 from_double<BFloat16>(double v) {
  return BFloat16{bf16_from_double(v)};
}

bool is_valid(nk_dtype dtype);
size_t dtype_size(nk_dtype dtype);
const char* dtype_name(nk_dtype dtype);  // "f32", "f16", "bf16"

// Calls body(T{}) with T the storage type of dtype (float, Half or BFloat16).
template <class Body>
decltype(auto) dispatch_dtype(nk_dtype dtype, Body&& body) {
  switch (dtype) {
    case NK_F32:
      return body(float{});
    case NK_F16:
      return body(Half{});
    case NK_BF16:
      return body(BFloat16{});
  }
  fail(NK_ERROR_INTERNAL, "dispatch of unvalidated dtype ", static_cast<int>(dtype));
}

}  // namespace nk
