// The fused channel-norm backward's du = dy * act'(u), shared by the split passes
// (channel_norm_backward.cu) and the one-read kernels (resident rows, group tiles, short rows), so
// all take act' from the same place with the same arithmetic.
#pragma once

#include <cuda_runtime.h>

#include "common/activation.cuh"

namespace nk::cuda {

// Where the fused backward takes act'(u) from (normkit.h): nowhere (identity), the ReLU mask, the
// forward's y (ReLU), or u recomputed from x, the statistics, weight, bias and z (SiLU).
enum ActSource { kNoAct, kFromMask, kFromY, kSiluOfU };

// du = dy * act'(u) for one value, where u = (x - mean) * scale + bias (+ aux), scale = invstd *
// weight. aux holds the mask bit as 0 or 1 (kFromMask), y (kFromY) or z (kSiluOfU with a
// residual).
template <int kSource, bool kZ>
__device__ __forceinline__ float du_of(float dy, float x, float aux, float mean, float scale,
                                       float bias) {
  if constexpr (kSource == kFromMask || kSource == kFromY) {
    return aux > 0.0f ? dy : 0.0f;  // a NaN gradient where ReLU was off is cut too
  } else if constexpr (kSource == kSiluOfU) {
    float u = fmaf(x - mean, scale, bias);
    if constexpr (kZ) u += aux;
    return dy * dev::silu_derivative(u);
  } else {
    return dy;
  }
}

}  // namespace nk::cuda
