// Maps the host storage types of the library's one dtype switch (nk::dispatch_dtype in
// src/dtype.hpp) to CUDA's device types.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "dtype.hpp"
#include "op_args.hpp"

namespace nk::dev {

template <class Host>
struct Device;
template <>
struct Device<float> {
  using type = float;
};
template <>
struct Device<Half> {
  using type = __half;
};
template <>
struct Device<BFloat16> {
  using type = __nv_bfloat16;
};

template <class Host>
using device_t = typename Device<Host>::type;

// Calls body(T{}, W{}) with the device types of a row shape's activation and parameter dtypes;
// only the validated pairs (W is float or T) are instantiated.
template <class Body>
void dispatch_row_dtypes(const RowShape& s, Body&& body) {
  dispatch_dtype(s.dtype, [&](auto t) {
    dispatch_dtype(s.weight_dtype, [&](auto w) {
      using T = device_t<decltype(t)>;
      using W = device_t<decltype(w)>;
      if constexpr (std::is_same_v<W, float> || std::is_same_v<W, T>) body(T{}, W{});
    });
  });
}

}  // namespace nk::dev
