// The device buffers of one case, allocated and filled before anything is timed, and shared by
// normkit and cuDNN (both read the same x and dy and write the same outputs in turn). Only what
// the case's phase uses is allocated: forwards get x and y, backwards x, dy and dx, so the
// largest case (ResNet-50's first layer at N = 256, fp32, backward) needs 2.5 GB.
#pragma once

#include <cuda_runtime_api.h>

#include "bench_case.hpp"
#include "device_memory.hpp"

namespace nkb {

struct CaseBuffers {
  DeviceMemory x, y, dy, dx;               // activations, case dtype
  DeviceMemory weight, bias;               // [C] fp32 (channel ops) or [cols] weight dtype (rows)
  DeviceMemory dweight, dbias;             // backward outputs, same shape and dtype as weight
  DeviceMemory running_mean, running_var;  // [C] fp32: batch and instance norm
  DeviceMemory save_mean, save_invstd;     // [stat_count] fp32: written by a training forward
};

// Allocates and fills the buffers of `c` on `stream` and waits for the fills. x and dy are
// uniform in [-1, 1), weights in [0.5, 1.5), biases and running means in [-0.5, 0.5), running
// variances in [0.5, 1.5). Throws BenchError when an allocation or launch fails.
CaseBuffers make_case_buffers(const Case& c, cudaStream_t stream);

}  // namespace nkb
