// The C entry points of the ops: each gathers its arguments into the family's struct, validates
// them, and runs them on the context's backend, all inside guard() so that no exception crosses
// the C API. Workspace queries validate the same shape and options, without pointers.
#include <normkit/normkit.h>

#include "backend.hpp"
#include "error.hpp"
#include "validate.hpp"

namespace nk {
namespace {

// Row norms have no options beyond their shape to check in a query.
void validate_config(const RowForwardArgs&) {}
void validate_config(const RowBackwardArgs&) {}

template <class Args>
void execute(nk_context ctx, const Args& a) {
  validate(a, *ctx);
  run(*ctx, a);
}

template <class Args>
void query(nk_context ctx, const Args& a, size_t* bytes) {
  require_pointer(bytes, "bytes");
  validate_config(a);
  *bytes = workspace_size(*ctx, a);
}

nk_norm_params copy_params(const nk_norm_params* params) {
  require_pointer(params, "params");
  return *params;
}

// Group norm has no phase and no running statistics: always the batch's own statistics.
nk_norm_params group_params(double eps) {
  nk_norm_params p = nk_norm_params_default();
  p.eps = eps;
  return p;
}

ChannelForwardArgs channel_forward(nk_context ctx, ChannelNorm kind, const nk_act_desc* desc,
                                   int64_t groups, nk_norm_params params) {
  require_pointer(ctx, "ctx");
  ChannelForwardArgs a{};
  a.shape = channel_shape(kind, desc, groups);
  a.params = params;
  return a;
}

ChannelBackwardArgs channel_backward(nk_context ctx, ChannelNorm kind, const nk_act_desc* desc,
                                     int64_t groups, nk_phase phase, double eps) {
  require_pointer(ctx, "ctx");
  ChannelBackwardArgs a{};
  a.shape = channel_shape(kind, desc, groups);
  a.phase = phase;
  a.eps = eps;
  return a;
}

template <class Args>
Args row_args(nk_context ctx, bool rms, const nk_row_desc* desc) {
  require_pointer(ctx, "ctx");
  Args a{};
  a.shape = row_shape(rms, desc);
  return a;
}

// Batch and instance norm share signatures; these two bodies serve both.
nk_status running_norm_forward(const char* fn, ChannelNorm kind, nk_context ctx,
                               const nk_act_desc* desc, const nk_norm_params* params, const void* x,
                               const float* weight, const float* bias, float* running_mean,
                               float* running_var, int64_t* num_batches_tracked, void* y,
                               float* save_mean, float* save_invstd) {
  return guard(fn, [&] {
    require_pointer(ctx, "ctx");  // before params, so a NULL ctx is reported as such
    const ChannelForwardArgs shape_only = channel_forward(ctx, kind, desc, 1, copy_params(params));
    execute(ctx,
            ChannelForwardArgs{shape_only.shape, shape_only.params, x, weight, bias, running_mean,
                               running_var, num_batches_tracked, y, save_mean, save_invstd,
                               ChannelFusion{}, nullptr, nullptr});
  });
}

nk_status running_norm_backward(const char* fn, ChannelNorm kind, nk_context ctx,
                                const nk_act_desc* desc, const nk_norm_params* params,
                                const void* x, const void* dy, const float* weight,
                                const float* running_mean, const float* running_var,
                                const float* save_mean, const float* save_invstd, void* dx,
                                float* dweight, float* dbias) {
  return guard(fn, [&] {
    require_pointer(ctx, "ctx");  // before params, so a NULL ctx is reported as such
    const nk_norm_params p = copy_params(params);
    ChannelBackwardArgs a = channel_backward(ctx, kind, desc, 1, p.phase, p.eps);
    // The whole block, as the forward checks it, though only phase and eps are read here.
    validate_params(&p, kind);
    a.x = x;
    a.dy = dy;
    a.weight = weight;
    a.running_mean = running_mean;
    a.running_var = running_var;
    a.save_mean = save_mean;
    a.save_invstd = save_invstd;
    a.dx = dx;
    a.dweight = dweight;
    a.dbias = dbias;
    execute(ctx, a);
  });
}

nk_status running_norm_forward_query(const char* fn, ChannelNorm kind, nk_context ctx,
                                     const nk_act_desc* desc, const nk_norm_params* params,
                                     size_t* bytes) {
  return guard(fn, [&] {
    require_pointer(ctx, "ctx");  // before params, so a NULL ctx is reported as such
    query(ctx, channel_forward(ctx, kind, desc, 1, copy_params(params)), bytes);
  });
}

nk_status running_norm_backward_query(const char* fn, ChannelNorm kind, nk_context ctx,
                                      const nk_act_desc* desc, const nk_norm_params* params,
                                      size_t* bytes) {
  return guard(fn, [&] {
    require_pointer(ctx, "ctx");  // before params, so a NULL ctx is reported as such
    const nk_norm_params p = copy_params(params);
    const ChannelBackwardArgs a = channel_backward(ctx, kind, desc, 1, p.phase, p.eps);
    validate_params(&p, kind);
    query(ctx, a, bytes);
  });
}

}  // namespace
}  // namespace nk

using nk::ChannelNorm;

extern "C" {

// ---- batch norm ----------------------------------------------------------------------------

nk_status nk_batch_norm_forward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                               const nk_norm_params* params, size_t* bytes) {
  return nk::running_norm_forward_query("nk_batch_norm_forward_workspace_size", ChannelNorm::kBatch,
                                        ctx, desc, params, bytes);
}

nk_status nk_batch_norm_forward(nk_context ctx, const nk_act_desc* desc,
                                const nk_norm_params* params, const void* x, const float* weight,
                                const float* bias, float* running_mean, float* running_var,
                                int64_t* num_batches_tracked, void* y, float* save_mean,
                                float* save_invstd) {
  return nk::running_norm_forward("nk_batch_norm_forward", ChannelNorm::kBatch, ctx, desc, params,
                                  x, weight, bias, running_mean, running_var, num_batches_tracked,
                                  y, save_mean, save_invstd);
}

nk_status nk_batch_norm_backward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                const nk_norm_params* params, size_t* bytes) {
  return nk::running_norm_backward_query("nk_batch_norm_backward_workspace_size",
                                         ChannelNorm::kBatch, ctx, desc, params, bytes);
}

nk_status nk_batch_norm_backward(nk_context ctx, const nk_act_desc* desc,
                                 const nk_norm_params* params, const void* x, const void* dy,
                                 const float* weight, const float* running_mean,
                                 const float* running_var, const float* save_mean,
                                 const float* save_invstd, void* dx, float* dweight, float* dbias) {
  return nk::running_norm_backward("nk_batch_norm_backward", ChannelNorm::kBatch, ctx, desc, params,
                                   x, dy, weight, running_mean, running_var, save_mean, save_invstd,
                                   dx, dweight, dbias);
}

// ---- instance norm -------------------------------------------------------------------------

nk_status nk_instance_norm_forward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                  const nk_norm_params* params, size_t* bytes) {
  return nk::running_norm_forward_query("nk_instance_norm_forward_workspace_size",
                                        ChannelNorm::kInstance, ctx, desc, params, bytes);
}

nk_status nk_instance_norm_forward(nk_context ctx, const nk_act_desc* desc,
                                   const nk_norm_params* params, const void* x, const float* weight,
                                   const float* bias, float* running_mean, float* running_var,
                                   int64_t* num_batches_tracked, void* y, float* save_mean,
                                   float* save_invstd) {
  return nk::running_norm_forward("nk_instance_norm_forward", ChannelNorm::kInstance, ctx, desc,
                                  params, x, weight, bias, running_mean, running_var,
                                  num_batches_tracked, y, save_mean, save_invstd);
}

nk_status nk_instance_norm_backward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                   const nk_norm_params* params, size_t* bytes) {
  return nk::running_norm_backward_query("nk_instance_norm_backward_workspace_size",
                                         ChannelNorm::kInstance, ctx, desc, params, bytes);
}

nk_status nk_instance_norm_backward(nk_context ctx, const nk_act_desc* desc,
                                    const nk_norm_params* params, const void* x, const void* dy,
                                    const float* weight, const float* running_mean,
                                    const float* running_var, const float* save_mean,
                                    const float* save_invstd, void* dx, float* dweight,
                                    float* dbias) {
  return nk::running_norm_backward("nk_instance_norm_backward", ChannelNorm::kInstance, ctx, desc,
                                   params, x, dy, weight, running_mean, running_var, save_mean,
                                   save_invstd, dx, dweight, dbias);
}

// ---- group norm ----------------------------------------------------------------------------

nk_status nk_group_norm_forward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                               int64_t groups, size_t* bytes) {
  return nk::guard("nk_group_norm_forward_workspace_size", [&] {
    // eps does not change the size; 0 keeps the query's validation to the shape.
    nk::query(ctx, nk::channel_forward(ctx, ChannelNorm::kGroup, desc, groups, nk::group_params(0)),
              bytes);
  });
}

nk_status nk_group_norm_forward(nk_context ctx, const nk_act_desc* desc, int64_t groups, double eps,
                                const void* x, const float* weight, const float* bias, void* y,
                                float* save_mean, float* save_invstd) {
  return nk::guard("nk_group_norm_forward", [&] {
    nk::ChannelForwardArgs a =
        nk::channel_forward(ctx, ChannelNorm::kGroup, desc, groups, nk::group_params(eps));
    a.x = x;
    a.weight = weight;
    a.bias = bias;
    a.y = y;
    a.save_mean = save_mean;
    a.save_invstd = save_invstd;
    nk::execute(ctx, a);
  });
}

nk_status nk_group_norm_backward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                int64_t groups, size_t* bytes) {
  return nk::guard("nk_group_norm_backward_workspace_size", [&] {
    nk::query(ctx, nk::channel_backward(ctx, ChannelNorm::kGroup, desc, groups, NK_TRAINING, 0),
              bytes);
  });
}

nk_status nk_group_norm_backward(nk_context ctx, const nk_act_desc* desc, int64_t groups,
                                 const void* x, const void* dy, const float* weight,
                                 const float* save_mean, const float* save_invstd, void* dx,
                                 float* dweight, float* dbias) {
  return nk::guard("nk_group_norm_backward", [&] {
    nk::ChannelBackwardArgs a =
        nk::channel_backward(ctx, ChannelNorm::kGroup, desc, groups, NK_TRAINING, 0);
    a.x = x;
    a.dy = dy;
    a.weight = weight;
    a.save_mean = save_mean;
    a.save_invstd = save_invstd;
    a.dx = dx;
    a.dweight = dweight;
    a.dbias = dbias;
    nk::execute(ctx, a);
  });
}

// ---- layer norm ----------------------------------------------------------------------------

nk_status nk_layer_norm_forward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                               size_t* bytes) {
  return nk::guard("nk_layer_norm_forward_workspace_size", [&] {
    nk::query(ctx, nk::row_args<nk::RowForwardArgs>(ctx, false, desc), bytes);
  });
}

nk_status nk_layer_norm_forward(nk_context ctx, const nk_row_desc* desc, double eps, const void* x,
                                const void* weight, const void* bias, void* y, float* save_mean,
                                float* save_rstd) {
  return nk::guard("nk_layer_norm_forward", [&] {
    auto a = nk::row_args<nk::RowForwardArgs>(ctx, false, desc);
    a.eps = eps;
    a.x = x;
    a.weight = weight;
    a.bias = bias;
    a.y = y;
    a.save_mean = save_mean;
    a.save_rstd = save_rstd;
    nk::execute(ctx, a);
  });
}

nk_status nk_layer_norm_backward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                                size_t* bytes) {
  return nk::guard("nk_layer_norm_backward_workspace_size", [&] {
    nk::query(ctx, nk::row_args<nk::RowBackwardArgs>(ctx, false, desc), bytes);
  });
}

nk_status nk_layer_norm_backward(nk_context ctx, const nk_row_desc* desc, const void* x,
                                 const void* dy, const void* weight, const float* save_mean,
                                 const float* save_rstd, void* dx, void* dweight, void* dbias) {
  return nk::guard("nk_layer_norm_backward", [&] {
    auto a = nk::row_args<nk::RowBackwardArgs>(ctx, false, desc);
    a.x = x;
    a.dy = dy;
    a.weight = weight;
    a.save_mean = save_mean;
    a.save_rstd = save_rstd;
    a.dx = dx;
    a.dweight = dweight;
    a.dbias = dbias;
    nk::execute(ctx, a);
  });
}

// ---- RMS norm ------------------------------------------------------------------------------

nk_status nk_rms_norm_forward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                             size_t* bytes) {
  return nk::guard("nk_rms_norm_forward_workspace_size", [&] {
    nk::query(ctx, nk::row_args<nk::RowForwardArgs>(ctx, true, desc), bytes);
  });
}

nk_status nk_rms_norm_forward(nk_context ctx, const nk_row_desc* desc, double eps, const void* x,
                              const void* weight, void* y, float* save_rstd) {
  return nk::guard("nk_rms_norm_forward", [&] {
    auto a = nk::row_args<nk::RowForwardArgs>(ctx, true, desc);
    a.eps = eps;
    a.x = x;
    a.weight = weight;
    a.y = y;
    a.save_rstd = save_rstd;
    nk::execute(ctx, a);
  });
}

nk_status nk_rms_norm_backward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                              size_t* bytes) {
  return nk::guard("nk_rms_norm_backward_workspace_size", [&] {
    nk::query(ctx, nk::row_args<nk::RowBackwardArgs>(ctx, true, desc), bytes);
  });
}

nk_status nk_rms_norm_backward(nk_context ctx, const nk_row_desc* desc, const void* x,
                               const void* dy, const void* weight, const float* save_rstd, void* dx,
                               void* dweight) {
  return nk::guard("nk_rms_norm_backward", [&] {
    auto a = nk::row_args<nk::RowBackwardArgs>(ctx, true, desc);
    a.x = x;
    a.dy = dy;
    a.weight = weight;
    a.save_rstd = save_rstd;
    a.dx = dx;
    a.dweight = dweight;
    nk::execute(ctx, a);
  });
}

}  // extern "C"

// ---- fused layer and RMS norm --------------------------------------------------------------

namespace nk {
namespace {

template <class Args>
Args fused_args(nk_context ctx, const nk_row_desc* desc, const nk_row_fusion* fusion) {
  require_pointer(ctx, "ctx");
  bool rms = false;
  const RowFusion f = row_fusion(fusion, &rms);
  Args a{};
  a.shape = row_shape(rms, desc);
  a.fusion = f;
  return a;
}

}  // namespace
}  // namespace nk

extern "C" {

nk_row_fusion nk_row_fusion_default(void) {
  return nk_row_fusion{NK_LAYER_NORM, NK_RESIDUAL_NONE, NK_WEIGHT_DIRECT, NK_OUTPUT_DTYPE};
}

nk_status nk_row_norm_fused_forward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                                   const nk_row_fusion* fusion, size_t* bytes) {
  return nk::guard("nk_row_norm_fused_forward_workspace_size", [&] {
    nk::query(ctx, nk::fused_args<nk::RowForwardArgs>(ctx, desc, fusion), bytes);
  });
}

nk_status nk_row_norm_fused_forward(nk_context ctx, const nk_row_desc* desc,
                                    const nk_row_fusion* fusion, double eps,
                                    const nk_row_fused_forward_buffers* buffers) {
  return nk::guard("nk_row_norm_fused_forward", [&] {
    auto a = nk::fused_args<nk::RowForwardArgs>(ctx, desc, fusion);
    nk::require_pointer(buffers, "buffers");
    a.eps = eps;
    a.x = buffers->x;
    a.residual = buffers->residual;
    a.bias_in = buffers->bias_in;
    a.weight = buffers->weight;
    a.bias = buffers->bias;
    a.h = buffers->h;
    a.y = buffers->y;
    a.y_scale = buffers->y_scale;
    a.y_amax = buffers->y_amax;
    a.save_mean = buffers->save_mean;
    a.save_rstd = buffers->save_rstd;
    nk::execute(ctx, a);
  });
}

nk_status nk_row_norm_fused_backward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                                    const nk_row_fusion* fusion, size_t* bytes) {
  return nk::guard("nk_row_norm_fused_backward_workspace_size", [&] {
    nk::query(ctx, nk::fused_args<nk::RowBackwardArgs>(ctx, desc, fusion), bytes);
  });
}

nk_status nk_row_norm_fused_backward(nk_context ctx, const nk_row_desc* desc,
                                     const nk_row_fusion* fusion,
                                     const nk_row_fused_backward_buffers* buffers) {
  return nk::guard("nk_row_norm_fused_backward", [&] {
    auto a = nk::fused_args<nk::RowBackwardArgs>(ctx, desc, fusion);
    nk::require_pointer(buffers, "buffers");
    a.x = buffers->x;
    a.dy = buffers->dy;
    a.dh_extra = buffers->dh_extra;
    a.weight = buffers->weight;
    a.save_mean = buffers->save_mean;
    a.save_rstd = buffers->save_rstd;
    a.dx = buffers->dx;
    a.dresidual = buffers->dresidual;
    a.dbias_in = buffers->dbias_in;
    a.dweight = buffers->dweight;
    a.dbias = buffers->dbias;
    nk::execute(ctx, a);
  });
}

}  // extern "C"

// ---- fused batch, instance and group norm --------------------------------------------------

namespace nk {
namespace {

// The fused call's norm, groups, shape and fusion; the parameter block and buffers come after.
template <class Args>
Args channel_fused_args(nk_context ctx, const nk_act_desc* desc, const nk_channel_fusion* fusion) {
  require_pointer(ctx, "ctx");
  ChannelNorm kind = ChannelNorm::kBatch;
  int64_t groups = 1;
  const ChannelFusion f = channel_fusion(fusion, &kind, &groups);
  Args a{};
  a.shape = channel_shape(kind, desc, groups);
  a.fusion = f;
  return a;
}

}  // namespace
}  // namespace nk

extern "C" {

nk_channel_fusion nk_channel_fusion_default(void) {
  return nk_channel_fusion{NK_BATCH_NORM, 0, NK_RESIDUAL_NONE, NK_ACTIVATION_IDENTITY};
}

nk_status nk_channel_norm_relu_mask_size(const nk_act_desc* desc, size_t* bytes) {
  return nk::guard("nk_channel_norm_relu_mask_size", [&] {
    // Batch norm's shape checks are those of every channel norm without groups.
    const nk::ChannelShape s = nk::channel_shape(ChannelNorm::kBatch, desc, 1);
    nk::require_pointer(bytes, "bytes");
    *bytes = static_cast<size_t>(nk::relu_mask_bytes(s));
  });
}

nk_status nk_channel_norm_fused_forward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                       const nk_channel_fusion* fusion,
                                                       const nk_norm_params* params,
                                                       size_t* bytes) {
  return nk::guard("nk_channel_norm_fused_forward_workspace_size", [&] {
    auto a = nk::channel_fused_args<nk::ChannelForwardArgs>(ctx, desc, fusion);
    a.params = nk::copy_params(params);
    nk::validate_fused_config(a);
    nk::query(ctx, a, bytes);
  });
}

nk_status nk_channel_norm_fused_forward(nk_context ctx, const nk_act_desc* desc,
                                        const nk_channel_fusion* fusion,
                                        const nk_norm_params* params,
                                        const nk_channel_fused_forward_buffers* buffers) {
  return nk::guard("nk_channel_norm_fused_forward", [&] {
    auto a = nk::channel_fused_args<nk::ChannelForwardArgs>(ctx, desc, fusion);
    a.params = nk::copy_params(params);
    nk::require_pointer(buffers, "buffers");
    a.x = buffers->x;
    a.z = buffers->z;
    a.weight = buffers->weight;
    a.bias = buffers->bias;
    a.running_mean = buffers->running_mean;
    a.running_var = buffers->running_var;
    a.num_batches_tracked = buffers->num_batches_tracked;
    a.y = buffers->y;
    a.save_mean = buffers->save_mean;
    a.save_invstd = buffers->save_invstd;
    a.relu_mask = static_cast<uint32_t*>(buffers->relu_mask);
    nk::validate_fused(a, *ctx);
    nk::run(*ctx, a);
  });
}

nk_status nk_channel_norm_fused_backward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                        const nk_channel_fusion* fusion,
                                                        const nk_norm_params* params,
                                                        size_t* bytes) {
  return nk::guard("nk_channel_norm_fused_backward_workspace_size", [&] {
    auto a = nk::channel_fused_args<nk::ChannelBackwardArgs>(ctx, desc, fusion);
    const nk_norm_params p = nk::copy_params(params);
    a.phase = p.phase;
    a.eps = p.eps;
    nk::validate_fused_config(a, p);
    nk::query(ctx, a, bytes);
  });
}

nk_status nk_channel_norm_fused_backward(nk_context ctx, const nk_act_desc* desc,
                                         const nk_channel_fusion* fusion,
                                         const nk_norm_params* params,
                                         const nk_channel_fused_backward_buffers* buffers) {
  return nk::guard("nk_channel_norm_fused_backward", [&] {
    auto a = nk::channel_fused_args<nk::ChannelBackwardArgs>(ctx, desc, fusion);
    const nk_norm_params p = nk::copy_params(params);
    a.phase = p.phase;
    a.eps = p.eps;
    nk::validate_fused_config(a, p);
    nk::require_pointer(buffers, "buffers");
    a.x = buffers->x;
    a.dy = buffers->dy;
    a.y = buffers->y;
    a.relu_mask = static_cast<const uint32_t*>(buffers->relu_mask);
    a.z = buffers->z;
    a.weight = buffers->weight;
    a.bias = buffers->bias;
    a.running_mean = buffers->running_mean;
    a.running_var = buffers->running_var;
    a.save_mean = buffers->save_mean;
    a.save_invstd = buffers->save_invstd;
    a.dx = buffers->dx;
    a.dz = buffers->dz;
    a.dweight = buffers->dweight;
    a.dbias = buffers->dbias;
    nk::validate_fused(a, *ctx);
    nk::run(*ctx, a);
  });
}

}  // extern "C"
