#include "normkit_ops.hpp"

#include <algorithm>

#include "bench_error.hpp"
#include "channel_fused_ops.hpp"

namespace nkb {
namespace {

constexpr double kEps = 1e-5;

// Raw pointers of a case's buffers, copied into the launches.
struct Pointers {
  const void* x;
  void* y;
  const void* dy;
  void* dx;
  void* weight;
  void* bias;
  void* dweight;
  void* dbias;
  float* running_mean;
  float* running_var;
  float* save_mean;
  float* save_invstd;
  // Fused row norms (case_buffers.hpp); null where the case has none.
  const void* residual;
  const void* bias_in;
  void* h;
  const void* dh_extra;
  void* dresidual;
  void* dbias_in;
  const float* y_scale;
  float* y_amax;
};

Pointers pointers(CaseBuffers& b) {
  return Pointers{b.x.get(),
                  b.y.get(),
                  b.dy.get(),
                  b.dx.get(),
                  b.weight.get(),
                  b.bias.get(),
                  b.dweight.get(),
                  b.dbias.get(),
                  b.running_mean.as<float>(),
                  b.running_var.as<float>(),
                  b.save_mean.as<float>(),
                  b.save_invstd.as<float>(),
                  b.residual.get(),
                  b.bias_in.get(),
                  b.h.get(),
                  b.dh_extra.get(),
                  b.dresidual.get(),
                  b.dbias_in.get(),
                  b.y_scale.as<float>(),
                  b.y_amax.as<float>()};
}

nk_norm_params norm_params(nk_phase phase) {
  nk_norm_params params = nk_norm_params_default();
  params.phase = phase;
  params.eps = kEps;
  return params;
}

// The fused forward of `c` with `fusion` (the case's, or a part of it), writing `y`. Every buffer
// the fusion uses is passed; RMS norm has no bias and no mean.
nk_status fused_forward(nk_context ctx, const Case& c, const nk_row_fusion& fusion,
                        const Pointers& p, void* y) {
  const nk_row_desc d = c.row_desc();
  const bool layer = fusion.norm == NK_LAYER_NORM;
  const bool residual = fusion.residual == NK_RESIDUAL_ADD;
  const bool fp8 = fusion.output != NK_OUTPUT_DTYPE;
  nk_row_fused_forward_buffers b{};
  b.x = p.x;
  b.residual = residual ? p.residual : nullptr;
  b.bias_in = residual ? p.bias_in : nullptr;
  b.weight = p.weight;
  b.bias = layer ? p.bias : nullptr;
  b.h = residual ? p.h : nullptr;
  b.y = y;
  b.y_scale = fp8 ? p.y_scale : nullptr;
  b.y_amax = fp8 ? p.y_amax : nullptr;
  b.save_mean = layer ? p.save_mean : nullptr;
  b.save_rstd = p.save_invstd;
  return nk_row_norm_fused_forward(ctx, &d, &fusion, kEps, &b);
}

// The fused backward of `c`: every gradient its fusion has (dx, dweight, layer norm's dbias; with
// the residual add also dresidual and dbias_in, from dh_extra). The case's x stands for h.
nk_status fused_backward(nk_context ctx, const Case& c, const Pointers& p) {
  const nk_row_desc d = c.row_desc();
  const nk_row_fusion fusion = c.row_fusion();
  const bool layer = fusion.norm == NK_LAYER_NORM;
  const bool residual = fusion.residual == NK_RESIDUAL_ADD;
  nk_row_fused_backward_buffers b{};
  b.x = p.x;
  b.dy = p.dy;
  b.dh_extra = residual ? p.dh_extra : nullptr;
  b.weight = p.weight;
  b.save_mean = layer ? p.save_mean : nullptr;
  b.save_rstd = p.save_invstd;
  b.dx = p.dx;
  b.dresidual = residual ? p.dresidual : nullptr;
  b.dbias_in = residual ? p.dbias_in : nullptr;
  b.dweight = p.dweight;
  b.dbias = layer ? p.dbias : nullptr;
  return nk_row_norm_fused_backward(ctx, &d, &fusion, &b);
}

// The fused forward a backward case's statistics come from: the case's norm and weight form over
// x itself (no residual add, the output in x's dtype), so that they are the statistics of the h
// the backward reads.
nk_row_fusion statistics_fusion(const Case& c) {
  nk_row_fusion f = c.row_fusion();
  f.residual = NK_RESIDUAL_NONE;
  f.output = NK_OUTPUT_DTYPE;
  return f;
}

// The forward of `c` in `phase`, writing `y`.
nk_status forward(nk_context ctx, const Case& c, nk_phase phase, const Pointers& p, void* y) {
  const auto* w = static_cast<const float*>(p.weight);
  const auto* b = static_cast<const float*>(p.bias);
  const nk_norm_params params = norm_params(phase);
  const bool training = phase == NK_TRAINING;
  if (c.row_fused()) return fused_forward(ctx, c, c.row_fusion(), p, y);
  float* save_mean = training ? p.save_mean : nullptr;
  float* save_invstd = training ? p.save_invstd : nullptr;
  switch (c.op) {
    case Op::batch_norm: {
      const nk_act_desc d = c.act_desc();
      return nk_batch_norm_forward(ctx, &d, &params, p.x, w, b, p.running_mean, p.running_var,
                                   nullptr, y, save_mean, save_invstd);
    }
    case Op::instance_norm: {
      const nk_act_desc d = c.act_desc();
      // Training without running statistics, inference with them (see the header).
      return nk_instance_norm_forward(
          ctx, &d, &params, p.x, w, b, training ? nullptr : p.running_mean,
          training ? nullptr : p.running_var, nullptr, y, save_mean, save_invstd);
    }
    case Op::group_norm: {
      const nk_act_desc d = c.act_desc();
      return nk_group_norm_forward(ctx, &d, c.groups, kEps, p.x, w, b, y, p.save_mean,
                                   p.save_invstd);
    }
    case Op::layer_norm: {
      const nk_row_desc d = c.row_desc();
      return nk_layer_norm_forward(ctx, &d, kEps, p.x, p.weight, p.bias, y, p.save_mean,
                                   p.save_invstd);
    }
    case Op::rms_norm: {
      const nk_row_desc d = c.row_desc();
      return nk_rms_norm_forward(ctx, &d, kEps, p.x, p.weight, y, p.save_invstd);
    }
  }
  return NK_ERROR_INVALID_VALUE;
}

// The training-phase backward of `c`.
nk_status backward(nk_context ctx, const Case& c, const Pointers& p) {
  const auto* w = static_cast<const float*>(p.weight);
  const nk_norm_params params = norm_params(NK_TRAINING);
  if (c.row_fused()) return fused_backward(ctx, c, p);
  switch (c.op) {
    case Op::batch_norm: {
      const nk_act_desc d = c.act_desc();
      return nk_batch_norm_backward(ctx, &d, &params, p.x, p.dy, w, nullptr, nullptr, p.save_mean,
                                    p.save_invstd, p.dx, static_cast<float*>(p.dweight),
                                    static_cast<float*>(p.dbias));
    }
    case Op::instance_norm: {
      const nk_act_desc d = c.act_desc();
      return nk_instance_norm_backward(
          ctx, &d, &params, p.x, p.dy, w, nullptr, nullptr, p.save_mean, p.save_invstd, p.dx,
          static_cast<float*>(p.dweight), static_cast<float*>(p.dbias));
    }
    case Op::group_norm: {
      const nk_act_desc d = c.act_desc();
      return nk_group_norm_backward(ctx, &d, c.groups, p.x, p.dy, w, p.save_mean, p.save_invstd,
                                    p.dx, static_cast<float*>(p.dweight),
                                    static_cast<float*>(p.dbias));
    }
    case Op::layer_norm: {
      const nk_row_desc d = c.row_desc();
      return nk_layer_norm_backward(ctx, &d, p.x, p.dy, p.weight, p.save_mean, p.save_invstd, p.dx,
                                    p.dweight, p.dbias);
    }
    case Op::rms_norm: {
      const nk_row_desc d = c.row_desc();
      return nk_rms_norm_backward(ctx, &d, p.x, p.dy, p.weight, p.save_invstd, p.dx, p.dweight);
    }
  }
  return NK_ERROR_INVALID_VALUE;
}

size_t forward_workspace(nk_context ctx, const Case& c, nk_phase phase) {
  size_t bytes = 0;
  if (c.row_fused()) {
    const nk_row_desc r = c.row_desc();
    // The backward's statistics forward has its own fusion; the larger of the two is set.
    const nk_row_fusion fusions[] = {c.row_fusion(), statistics_fusion(c)};
    for (const nk_row_fusion& f : fusions) {
      size_t size = 0;
      check_nk(nk_row_norm_fused_forward_workspace_size(ctx, &r, &f, &size), "workspace query");
      bytes = std::max(bytes, size);
    }
    return bytes;
  }
  const nk_norm_params params = norm_params(phase);
  const nk_act_desc a = c.act_desc();
  const nk_row_desc r = c.row_desc();
  switch (c.op) {
    case Op::batch_norm:
      check_nk(nk_batch_norm_forward_workspace_size(ctx, &a, &params, &bytes), "workspace query");
      break;
    case Op::instance_norm:
      check_nk(nk_instance_norm_forward_workspace_size(ctx, &a, &params, &bytes),
               "workspace query");
      break;
    case Op::group_norm:
      check_nk(nk_group_norm_forward_workspace_size(ctx, &a, c.groups, &bytes), "workspace query");
      break;
    case Op::layer_norm:
      check_nk(nk_layer_norm_forward_workspace_size(ctx, &r, &bytes), "workspace query");
      break;
    case Op::rms_norm:
      check_nk(nk_rms_norm_forward_workspace_size(ctx, &r, &bytes), "workspace query");
      break;
  }
  return bytes;
}

size_t backward_workspace(nk_context ctx, const Case& c) {
  size_t bytes = 0;
  if (c.row_fused()) {
    const nk_row_desc r = c.row_desc();
    const nk_row_fusion f = c.row_fusion();
    check_nk(nk_row_norm_fused_backward_workspace_size(ctx, &r, &f, &bytes), "workspace query");
    return bytes;
  }
  const nk_norm_params params = norm_params(NK_TRAINING);
  const nk_act_desc a = c.act_desc();
  const nk_row_desc r = c.row_desc();
  switch (c.op) {
    case Op::batch_norm:
      check_nk(nk_batch_norm_backward_workspace_size(ctx, &a, &params, &bytes), "workspace query");
      break;
    case Op::instance_norm:
      check_nk(nk_instance_norm_backward_workspace_size(ctx, &a, &params, &bytes),
               "workspace query");
      break;
    case Op::group_norm:
      check_nk(nk_group_norm_backward_workspace_size(ctx, &a, c.groups, &bytes), "workspace query");
      break;
    case Op::layer_norm:
      check_nk(nk_layer_norm_backward_workspace_size(ctx, &r, &bytes), "workspace query");
      break;
    case Op::rms_norm:
      check_nk(nk_rms_norm_backward_workspace_size(ctx, &r, &bytes), "workspace query");
      break;
  }
  return bytes;
}

}  // namespace

ContextWorkspace::ContextWorkspace(nk_context ctx, const Case& c) : ctx_(ctx) {
  size_t bytes = 0;
  if (c.channel_fused()) {
    bytes = channel_fused_workspace(ctx, c);
  } else if (c.phase == Phase::backward) {
    bytes = std::max(forward_workspace(ctx, c, NK_TRAINING), backward_workspace(ctx, c));
  } else {
    bytes =
        forward_workspace(ctx, c, c.phase == Phase::forward_inference ? NK_INFERENCE : NK_TRAINING);
  }
  // Never empty: a set workspace is what guarantees that no call allocates. cudaMalloc aligns
  // to 256 bytes, as nk_context_set_workspace requires.
  memory_ = DeviceMemory(std::max(bytes, size_t{256}));
  check_nk(nk_context_set_workspace(ctx, memory_.get(), memory_.bytes()),
           "nk_context_set_workspace");
}

ContextWorkspace::~ContextWorkspace() { nk_context_set_workspace(ctx_, nullptr, 0); }

void normkit_prepare(nk_context ctx, const Case& c, CaseBuffers& b, cudaStream_t stream) {
  if (c.channel_fused()) return channel_fused_prepare(ctx, c, b, stream);
  if (c.phase != Phase::backward) return;
  const Pointers p = pointers(b);
  if (c.row_fused()) {
    check_nk(fused_forward(ctx, c, statistics_fusion(c), p, p.dx),
             "normkit fused forward (statistics)");
  } else {
    check_nk(forward(ctx, c, NK_TRAINING, p, p.dx), "normkit training forward (statistics)");
  }
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize after the statistics");
}

Launch normkit_launch(nk_context ctx, const Case& c, CaseBuffers& b) {
  if (c.channel_fused()) return channel_fused_launch(ctx, c, b);
  Pointers p = pointers(b);
  if (c.in_place) {
    p.y = b.x.get();
    p.dx = b.dy.get();
  }
  switch (c.phase) {
    case Phase::forward_training:
      return [ctx, c, p] { check_nk(forward(ctx, c, NK_TRAINING, p, p.y), "normkit forward"); };
    case Phase::forward_inference:
      return [ctx, c, p] { check_nk(forward(ctx, c, NK_INFERENCE, p, p.y), "normkit forward"); };
    case Phase::backward:
      return [ctx, c, p] { check_nk(backward(ctx, c, p), "normkit backward"); };
  }
  throw BenchError("unknown phase");
}

}  // namespace nkb
