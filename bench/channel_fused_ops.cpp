// The fused channel-norm cases of normkit_bench: buffers to pointers, workspace queries, and the
// forward and backward launches the timer repeats.
//
// The mask size is not trusted to the bench alone: before any call, the library's size query
// must agree with Case::relu_mask_bytes(), which minimal_bytes counts and the buffers hold.
#include "channel_fused_ops.hpp"

#include <algorithm>
#include <string>

#include "bench_error.hpp"

namespace nkb {
namespace {

constexpr double kEps = 1e-5;

nk_norm_params params_of(nk_phase phase) {
  nk_norm_params params = nk_norm_params_default();
  params.phase = phase;
  params.eps = kEps;
  return params;
}

// Raw pointers of the case's buffers, copied into the launches.
struct Pointers {
  const void *x, *z, *dy;
  void *y, *dx, *dz, *relu_mask;
  float *weight, *bias, *dweight, *dbias;
  float *running_mean, *running_var, *save_mean, *save_invstd;
};

Pointers pointers(CaseBuffers& b) {
  return Pointers{b.x.get(),
                  b.z.get(),
                  b.dy.get(),
                  b.y.get(),
                  b.dx.get(),
                  b.dz.get(),
                  b.relu_mask.get(),
                  b.weight.as<float>(),
                  b.bias.as<float>(),
                  b.dweight.as<float>(),
                  b.dbias.as<float>(),
                  b.running_mean.as<float>(),
                  b.running_var.as<float>(),
                  b.save_mean.as<float>(),
                  b.save_invstd.as<float>()};
}

// The fused forward of `c` in `phase`, writing `y` (and the mask in training with ReLU). Every
// buffer the fusion and phase use is passed, and no other (see channel_fused_ops.hpp).
nk_status forward(nk_context ctx, const Case& c, nk_phase phase, const Pointers& p, void* y) {
  const nk_act_desc d = c.act_desc();
  const nk_channel_fusion fusion = c.channel_fusion_desc();
  const nk_norm_params params = params_of(phase);
  const bool training = phase == NK_TRAINING;
  // Batch norm keeps running statistics in both phases; instance norm only reads them in
  // inference (it trains without them, PyTorch's default); group norm has none.
  const bool running = c.op == Op::batch_norm || (c.op == Op::instance_norm && !training);
  nk_channel_fused_forward_buffers b{};
  b.x = p.x;
  b.z = c.channel_fusion.residual ? p.z : nullptr;
  b.weight = p.weight;
  b.bias = p.bias;
  b.running_mean = running ? p.running_mean : nullptr;
  b.running_var = running ? p.running_var : nullptr;
  b.num_batches_tracked = nullptr;
  b.y = y;
  b.save_mean = training ? p.save_mean : nullptr;
  b.save_invstd = training ? p.save_invstd : nullptr;
  b.relu_mask = training && c.channel_fusion.relu() ? p.relu_mask : nullptr;
  return nk_channel_norm_fused_forward(ctx, &d, &fusion, &params, &b);
}

// The training-phase fused backward of `c`: dx, dweight, dbias and, with the residual add, dz.
nk_status backward(nk_context ctx, const Case& c, const Pointers& p) {
  const nk_act_desc d = c.act_desc();
  const nk_channel_fusion fusion = c.channel_fusion_desc();
  const nk_norm_params params = params_of(NK_TRAINING);
  const bool silu = c.channel_fusion.activation == NK_ACTIVATION_SILU;
  nk_channel_fused_backward_buffers b{};
  b.x = p.x;
  b.dy = p.dy;
  b.y = nullptr;  // ReLU's derivative from the mask
  b.relu_mask = c.channel_fusion.relu() ? p.relu_mask : nullptr;
  b.z = silu && c.channel_fusion.residual ? p.z : nullptr;
  b.weight = p.weight;
  b.bias = silu ? p.bias : nullptr;
  b.running_mean = nullptr;
  b.running_var = nullptr;
  b.save_mean = p.save_mean;
  b.save_invstd = p.save_invstd;
  b.dx = p.dx;
  b.dz = c.channel_fusion.residual ? p.dz : nullptr;
  b.dweight = p.dweight;
  b.dbias = p.dbias;
  return nk_channel_norm_fused_backward(ctx, &d, &fusion, &params, &b);
}

void check_mask_size(const Case& c) {
  if (!c.channel_fusion.relu()) return;
  const nk_act_desc d = c.act_desc();
  size_t bytes = 0;
  check_nk(nk_channel_norm_relu_mask_size(&d, &bytes), "nk_channel_norm_relu_mask_size");
  if (bytes != static_cast<size_t>(c.relu_mask_bytes())) {
    throw BenchError("nk_channel_norm_relu_mask_size gives " + std::to_string(bytes) +
                     " bytes, the bench counts and allocates " +
                     std::to_string(c.relu_mask_bytes()));
  }
}

}  // namespace

size_t channel_fused_workspace(nk_context ctx, const Case& c) {
  check_mask_size(c);
  const nk_act_desc d = c.act_desc();
  const nk_channel_fusion fusion = c.channel_fusion_desc();
  const nk_norm_params forward_params =
      params_of(c.phase == Phase::forward_inference ? NK_INFERENCE : NK_TRAINING);
  size_t forward_bytes = 0, backward_bytes = 0;
  check_nk(nk_channel_norm_fused_forward_workspace_size(ctx, &d, &fusion, &forward_params,
                                                        &forward_bytes),
           "workspace query");
  if (c.phase == Phase::backward) {
    const nk_norm_params backward_params = params_of(NK_TRAINING);
    check_nk(nk_channel_norm_fused_backward_workspace_size(ctx, &d, &fusion, &backward_params,
                                                           &backward_bytes),
             "workspace query");
  }
  return std::max(forward_bytes, backward_bytes);
}

void channel_fused_prepare(nk_context ctx, const Case& c, CaseBuffers& b, cudaStream_t stream) {
  if (c.phase != Phase::backward) return;
  const Pointers p = pointers(b);
  check_nk(forward(ctx, c, NK_TRAINING, p, p.dx), "normkit fused forward (statistics, mask)");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize after the statistics");
}

Launch channel_fused_launch(nk_context ctx, const Case& c, CaseBuffers& b) {
  const Pointers p = pointers(b);
  if (c.phase == Phase::backward) {
    return [ctx, c, p] { check_nk(backward(ctx, c, p), "normkit fused backward"); };
  }
  const nk_phase phase = c.phase == Phase::forward_inference ? NK_INFERENCE : NK_TRAINING;
  return [ctx, c, p, phase] { check_nk(forward(ctx, c, phase, p, p.y), "normkit fused forward"); };
}

}  // namespace nkb
