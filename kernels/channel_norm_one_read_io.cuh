// The tensors of the channel-norm kernels that read x (and dy) once: the rows' kernels
// (channel_norm_resident*.cuh) and the group tiles' (channel_norm_group_tile*.cuh), forward and
// backward. Each kernel's parameters derive from these and add their geometry after them
// (set_forward_io, set_backward_io fill them on the host).
//
// nvcc keeps a kernel argument above 128 bytes in parameter memory and reads it through its
// address. Where ptxas then reloads its fields inside a loop and recomputes addresses from them,
// a kernel keeps its argument within kMaxKernelArgBytes (the resident rows': at 136 bytes their
// backward's staging loop took 141 instructions a turn instead of 88; sm_90, CUDA 13.0), or takes
// the tensors and the rest (a Config) as two arguments and joins them (`const XParams p{io,
// config};`), which the compiler keeps in registers and constant operands: the row groups'
// backward (its staging loop 130 -> 74 instructions a turn). For the tiles' kernels above 128
// bytes two arguments made no consistent difference (their first load loops within a few per
// cent either way, and the batch tiles' forward spilled), so they take one. launch_blocks passes
// a struct's two bases to a kernel of two arguments.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace nk::cuda {

constexpr size_t kMaxKernelArgBytes = 128;

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

static_assert(sizeof(OneReadForwardIo) <= kMaxKernelArgBytes &&
                  sizeof(OneReadBackwardIo) <= kMaxKernelArgBytes,
              "the tensors within a kernel argument");

}  // namespace nk::cuda
