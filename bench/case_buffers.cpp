#include "case_buffers.hpp"

#include "bench_error.hpp"
#include "fill.hpp"

namespace nkb {
namespace {

DeviceMemory filled(nk_dtype dtype, int64_t count, float lo, float hi, uint32_t seed,
                    cudaStream_t stream) {
  DeviceMemory m(static_cast<size_t>(count) * dtype_size(dtype));
  fill_uniform(m.get(), dtype, count, lo, hi, seed, stream);
  return m;
}

}  // namespace

CaseBuffers make_case_buffers(const Case& c, cudaStream_t stream) {
  CaseBuffers b;
  const int64_t elements = c.elements();
  const size_t tensor_bytes = static_cast<size_t>(elements) * dtype_size(c.dtype);
  const nk_dtype param_dtype = c.is_row_op() ? c.weight_dtype : NK_F32;
  const int64_t params = c.param_count();
  const bool backward = c.phase == Phase::backward;

  b.x = filled(c.dtype, elements, -1.0f, 1.0f, 1u, stream);
  if (backward) {
    b.dy = filled(c.dtype, elements, -1.0f, 1.0f, 2u, stream);
    b.dx = DeviceMemory(tensor_bytes);
    b.dweight = DeviceMemory(static_cast<size_t>(params) * dtype_size(param_dtype));
    b.dbias = DeviceMemory(static_cast<size_t>(params) * dtype_size(param_dtype));
    if (c.fusion.residual) {
      b.dh_extra = filled(c.dtype, elements, -1.0f, 1.0f, 9u, stream);
      b.dresidual = DeviceMemory(tensor_bytes);
      b.dbias_in = DeviceMemory(static_cast<size_t>(params) * dtype_size(param_dtype));
    }
  } else {
    // An fp8 output is one byte an element; in place y is x.
    if (!c.in_place) {
      b.y = DeviceMemory(c.fusion.fp8_output ? static_cast<size_t>(elements) : tensor_bytes);
    }
    if (c.fusion.residual) {
      b.residual = filled(c.dtype, elements, -1.0f, 1.0f, 10u, stream);
      b.h = DeviceMemory(tensor_bytes);
      b.bias_in = filled(param_dtype, params, -0.5f, 0.5f, 11u, stream);
    }
    if (c.fusion.fp8_output) {
      b.y_scale = DeviceMemory(sizeof(float));
      check_cuda(cudaMemcpy(b.y_scale.get(), &kFp8Scale, sizeof(float), cudaMemcpyHostToDevice),
                 "cudaMemcpy of y_scale");
      b.y_amax = DeviceMemory(sizeof(float));
    }
  }
  if (c.channel_fusion.residual) {
    b.z = filled(c.dtype, elements, -1.0f, 1.0f, 12u, stream);
    if (backward) b.dz = DeviceMemory(tensor_bytes);
  }
  if (c.channel_fusion.relu() && c.phase != Phase::forward_inference) {
    b.relu_mask = DeviceMemory(static_cast<size_t>(c.relu_mask_bytes()));
  }
  // A zero-centred weight stores gamma - 1: the same gamma as the direct form. In place the
  // weights are smaller (see the header).
  const float weight_shift = c.fusion.zero_centered ? -1.0f : 0.0f;
  const float weight_lo = c.in_place ? 0.25f : 0.5f, weight_hi = c.in_place ? 0.5f : 1.5f;
  b.weight =
      filled(param_dtype, params, weight_lo + weight_shift, weight_hi + weight_shift, 3u, stream);
  b.bias = filled(param_dtype, params, -0.5f, 0.5f, 4u, stream);
  if (c.op == Op::batch_norm || c.op == Op::instance_norm) {
    b.running_mean = filled(NK_F32, c.c, -0.5f, 0.5f, 5u, stream);
    b.running_var = filled(NK_F32, c.c, 0.5f, 1.5f, 6u, stream);
  }
  // Real statistics for a backward come from a training forward (normkit_ops.hpp); until then
  // they hold plausible values, never garbage.
  b.save_mean = filled(NK_F32, c.stat_count(), -0.5f, 0.5f, 7u, stream);
  b.save_invstd = filled(NK_F32, c.stat_count(), 0.5f, 1.5f, 8u, stream);
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize after the fills");
  return b;
}

}  // namespace nkb
