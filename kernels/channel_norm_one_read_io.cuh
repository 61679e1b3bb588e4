// The tensors of the channel-norm kernels that read x (and dy) once: the rows' kernels
// (channel_norm_resident*.cuh) and the group tiles' (channel_norm_group_tile*.cuh), forward and
// backward. Each kernel's parameters derive from these and add their geometry after them
// (set_forward_io, set_backward_io fill them on the host).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace nk::cuda {

struct OneReadForwardIo {
  const void* x;
  const void* z;  // the fused residual, nullptr without one
  void* y;
  uint32_t* mask;       // ReLU mask, nullable
  const float* weight;  // [C], nullable
  const float* bias;    // [C], nullable
  float* save_mean;     // one a statistic, nullable
  float* save_invstd;   // one a statistic, nullable
};

struct OneReadBackwardIo {
  const void* x;
  const void* dy;
  const void* aux;           // y (ReLU without a mask) or z (SiLU with a residual), else nullptr
  const uint32_t* mask;      // the ReLU mask (kFromMask)
  void* dx;                  // nullable when dz is given
  void* dz;                  // du; nullable
  const float* weight;       // [C], nullable
  const float* bias;         // [C], nullable: SiLU's u
  const float* save_mean;    // one a statistic
  const float* save_invstd;  // one a statistic
  float2* channel_sums;      // [N, C]: (sum du, sum du * x-hat) of each (n, c); nullable
};

}  // namespace nk::cuda
