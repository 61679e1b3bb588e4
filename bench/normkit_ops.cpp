#include "normkit_ops.hpp"

#include <algorithm>

#include "bench_error.hpp"

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
                  b.save_invstd.as<float>()};
}

nk_norm_params norm_params(nk_phase phase) {
  nk_norm_params params = nk_norm_params_default();
  params.phase = phase;
  params.eps = kEps;
  return params;
}

// The forward of `c` in `phase`, writing `y`.
nk_status forward(nk_context ctx, const Case& c, nk_phase phase, const Pointers& p, void* y) {
  const auto* w = static_cast<const float*>(p.weight);
  const auto* b = static_cast<const float*>(p.bias);
  const nk_norm_params params = norm_params(phase);
  const bool training = phase == NK_TRAINING;
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
  if (c.phase == Phase::backward) {
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
  if (c.phase != Phase::backward) return;
  const Pointers p = pointers(b);
  check_nk(forward(ctx, c, NK_TRAINING, p, p.dx), "normkit training forward (statistics)");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize after the statistics");
}

Launch normkit_launch(nk_context ctx, const Case& c, CaseBuffers& b) {
  const Pointers p = pointers(b);
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
