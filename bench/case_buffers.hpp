// The device buffers of one case, allocated and filled before anything is timed, and shared by
// normkit and cuDNN (both read the same x and dy and write the same outputs in turn). Only what
// the case's phase uses is allocated: forwards get x and y (in place x only), backwards x, dy and
// dx, so the largest case (ResNet-50's first layer at N = 256, fp32, backward) needs 2.5 GB.
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
  // Fused row norms only (Case::fusion). Forward with the residual add: residual (read) and h
  // (written), case dtype; bias_in [cols] weight dtype. Backward with it: dh_extra (read) and
  // dresidual (written), case dtype; dbias_in [cols] weight dtype. fp8 output: y holds one byte
  // an element, y_scale and y_amax one fp32 each.
  DeviceMemory residual, h, bias_in;
  DeviceMemory dh_extra, dresidual, dbias_in;
  DeviceMemory y_scale, y_amax;
  // Fused channel norms only (Case::channel_fusion). With the residual add: z (read, case dtype;
  // a backward case has it too, for the untimed forward that makes its mask and statistics) and,
  // backward, dz (written). With ReLU in training: relu_mask, Case::relu_mask_bytes() bytes,
  // written by the forward and read by the backward.
  DeviceMemory z, dz, relu_mask;
};

// The per-tensor scale of the fp8 cases. With the fills below |hhat| stays below about 3 (uniform
// data; with the residual add, a sum of two uniforms and bias_in), gamma below 1.5 and |bias|
// below 0.5, so |y| < 5 and y * 64 stays inside e4m3's range (+-448): the cases time the
// conversion, not saturation.
constexpr float kFp8Scale = 64.0f;

// Allocates and fills the buffers of `c` on `stream` and waits for the fills. x, dy, residual,
// dh_extra and z are uniform in [-1, 1) (so that about half of the ReLU inputs are positive),
// weights in [0.5, 1.5) (zero-centred: [-0.5, 0.5), the same gamma), biases, bias_in and running
// means in [-0.5, 0.5), running variances in [0.5, 1.5), y_scale is kFp8Scale. In place the
// weights are in [0.25, 0.5) instead, so that the values a call writes over its input stay in
// range however many calls a run makes: an inference forward scales x by weight / sqrt(running
// variance) each call, a backward dy by about weight * invstd (invstd of uniform x about 1.73),
// both then below 1, where [0.5, 1.5) would grow them by up to 2.1 and 2.6 a call. A training
// forward renormalizes each call and stays bounded either way. Throws BenchError when an
// allocation or launch fails.
CaseBuffers make_case_buffers(const Case& c, cudaStream_t stream);

}  // namespace nkb
