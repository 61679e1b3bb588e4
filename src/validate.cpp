// Argument validation for every op. Order of checks: handles and descriptors, enums and scalars,
// shapes, required pointers, consistency of the optional buffers, then aliasing.
#include "validate.hpp"

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dtype.hpp"
#include "error.hpp"

namespace nk {
namespace {

void require_dim(int64_t value, const char* name) {
  if (value < 1) fail(NK_ERROR_BAD_SHAPE, name, " = ", value, ": expected >= 1");
}

void require_dtype(nk_dtype dtype, const char* name) {
  if (!is_valid(dtype)) {
    fail(NK_ERROR_INVALID_VALUE, name, " = ", static_cast<int>(dtype),
         " is not an nk_dtype (expected NK_F32, NK_F16 or NK_BF16)");
  }
}

void require_eps(double eps, const char* name = "eps") {
  if (!std::isfinite(eps) || eps < 0) {
    fail(NK_ERROR_INVALID_VALUE, name, " = ", eps, ": expected a finite value >= 0");
  }
}

// Batch and instance norm take eps in their parameter block, plain group norm as an argument.
const char* eps_name(ChannelNorm kind) {
  return kind == ChannelNorm::kGroup ? "eps" : "params->eps";
}

void validate_phase_and_eps(nk_phase phase, double eps, const char* eps_arg) {
  if (phase != NK_TRAINING && phase != NK_INFERENCE) {
    fail(NK_ERROR_INVALID_VALUE, "params->phase = ", static_cast<int>(phase),
         " is not an nk_phase (expected NK_TRAINING or NK_INFERENCE)");
  }
  require_eps(eps, eps_arg);
}

// On a CPU context num_batches_tracked is host memory, read here before anything is written: the
// training forward increments it, and the cumulative momentum is 1 / (the incremented count). A
// negative count would give 1/0 (NaN in both running statistics) or a negative momentum, and
// INT64_MAX cannot be incremented. A CUDA context leaves the counter on the device (normkit.h).
void check_host_counter(const ChannelForwardArgs& a, const nk_context_s& ctx) {
  if (ctx.backend != NK_BACKEND_CPU || a.params.phase != NK_TRAINING ||
      a.num_batches_tracked == nullptr) {
    return;
  }
  const int64_t tracked = *a.num_batches_tracked;
  if (tracked < 0 || tracked == INT64_MAX) {
    fail(NK_ERROR_INVALID_VALUE, "*num_batches_tracked = ", tracked,
         ": expected a count in [0, INT64_MAX - 1] (this call increments it",
         tracked < 0 ? "; a negative count has no cumulative momentum)" : ")");
  }
}

}  // namespace

// Product of positive dims, at most kMaxElements.
int64_t checked_count(std::initializer_list<int64_t> dims, const char* what) {
  int64_t count = 1;
  bool overflow = false;
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(count, d, &count)) {
      overflow = true;
      break;
    }
  }
  if (overflow || count > kMaxElements) {
    std::string list;
    for (int64_t e : dims) list += (list.empty() ? "" : " x ") + std::to_string(e);
    fail(NK_ERROR_BAD_SHAPE, "element count of ", what, " = ", list,
         overflow ? std::string(" exceeds INT64_MAX") : " = " + std::to_string(count),
         ": the limit is ", kMaxElements,
         " elements (INT64_MAX / 8: byte sizes, up to 8 bytes an element, must fit in int64)");
  }
  return count;
}

namespace {

void validate_params_block(const nk_norm_params* params, const char* eps_arg) {
  require_pointer(params, "params");
  validate_phase_and_eps(params->phase, params->eps, eps_arg);
  if (params->momentum_mode != NK_MOMENTUM_EXPONENTIAL &&
      params->momentum_mode != NK_MOMENTUM_CUMULATIVE) {
    fail(
        NK_ERROR_INVALID_VALUE, "params->momentum_mode = ", static_cast<int>(params->momentum_mode),
        " is not an nk_momentum_mode (expected NK_MOMENTUM_EXPONENTIAL or NK_MOMENTUM_CUMULATIVE)");
  }
  if (params->running_var != NK_RUNNING_VAR_UNBIASED &&
      params->running_var != NK_RUNNING_VAR_BIASED) {
    fail(NK_ERROR_INVALID_VALUE, "params->running_var = ", static_cast<int>(params->running_var),
         " is not an nk_running_var (expected NK_RUNNING_VAR_UNBIASED or NK_RUNNING_VAR_BIASED)");
  }
  if (params->momentum_mode == NK_MOMENTUM_EXPONENTIAL &&
      !(params->momentum >= 0.0 && params->momentum <= 1.0)) {
    fail(NK_ERROR_INVALID_VALUE, "params->momentum = ", params->momentum,
         ": expected a value in [0, 1] (PyTorch's convention: the weight of the new batch; Keras' "
         "momentum k is 1 - k here)");
  }
}

}  // namespace

void validate_params(const nk_norm_params* params, ChannelNorm kind) {
  validate_params_block(params, eps_name(kind));
}

void validate_fused_params(const nk_norm_params* params, ChannelNorm kind) {
  validate_params_block(params, "params->eps");
  if (kind == ChannelNorm::kGroup && params->phase != NK_TRAINING) {
    fail(NK_ERROR_INVALID_VALUE,
         "params->phase = NK_INFERENCE with fusion->norm = NK_GROUP_NORM: expected NK_TRAINING "
         "(group norm has no frozen statistics: it always normalizes with the batch's own)");
  }
}

void validate_global_params(const nk_norm_params* params) {
  validate_params(params, ChannelNorm::kBatch);
  if (params->phase != NK_TRAINING) {
    fail(NK_ERROR_INVALID_VALUE,
         "params->phase = NK_INFERENCE: expected NK_TRAINING (the global statistics are a "
         "training batch's; inference uses nk_batch_norm_forward)");
  }
}

namespace {

// Statistics of a single value erase the input: training (where the batch's statistics are
// used, forward and backward) needs at least two values per statistic.
void require_several_values(const ChannelShape& s, nk_phase phase) {
  if (phase != NK_TRAINING || s.count_per_stat() > 1) return;
  const char* over = s.kind == ChannelNorm::kBatch      ? "desc->n * desc->spatial"
                     : s.kind == ChannelNorm::kInstance ? "desc->spatial"
                                                        : "(desc->c / groups) * desc->spatial";
  fail(NK_ERROR_BAD_SHAPE, family_name(s.kind),
       " in NK_TRAINING needs more than one value per statistic, but ", over,
       " = 1: the batch's own statistics would erase the input",
       s.has_running_stats()
           ? " (normalize a single value with NK_INFERENCE and running statistics)"
           : "");
}

}  // namespace

// Rejects a buffer not aligned to its own elements (a GPU cannot even load from it), and any
// overlap between a written buffer and another buffer, except a pair of `allowed` whose two
// buffers are exactly equal (same start, same size): the in-place modes each op documents. The
// context's workspace, when one is set, counts as written: it must not overlap any argument.
void check_buffers(std::initializer_list<BufferUse> args, const Span& workspace,
                   std::initializer_list<Alias> allowed) {
  for (const BufferUse& b : args) {
    if (b.ptr != nullptr && reinterpret_cast<uintptr_t>(b.ptr) % b.elem_bytes != 0) {
      fail(NK_ERROR_INVALID_VALUE, b.name, " = ", b.ptr, " is not aligned to its ", b.elem_bytes,
           "-byte elements");
    }
  }
  std::vector<BufferUse> buffers(args);
  buffers.push_back(
      {workspace.ptr, static_cast<int64_t>(workspace.bytes), "the context's workspace", true, 1});
  auto allowed_pair = [&](const std::string& a, const std::string& b) {
    for (const Alias& p : allowed) {
      if ((a == p.alias && b == p.onto) || (a == p.onto && b == p.alias)) return true;
    }
    return false;
  };
  std::string supported;
  for (const Alias& p : allowed) {
    supported += cat(supported.empty() ? "" : " or ", p.alias, " == ", p.onto);
  }
  for (auto a = buffers.begin(); a != buffers.end(); ++a) {
    for (auto b = a + 1; b != buffers.end(); ++b) {
      if (!a->ptr || !b->ptr || (!a->written && !b->written)) continue;
      auto a0 = reinterpret_cast<uintptr_t>(a->ptr), b0 = reinterpret_cast<uintptr_t>(b->ptr);
      bool overlap =
          a0 < b0 + static_cast<uintptr_t>(b->bytes) && b0 < a0 + static_cast<uintptr_t>(a->bytes);
      if (!overlap) continue;
      if (allowed_pair(a->name, b->name) && a0 == b0 && a->bytes == b->bytes) continue;
      fail(NK_ERROR_INVALID_VALUE, a->name, " (", a->ptr, ", ", a->bytes, " bytes) overlaps ",
           b->name, " (", b->ptr, ", ", b->bytes, " bytes): the only aliasing supported is ",
           supported);
    }
  }
}

void check_buffers(std::initializer_list<BufferUse> args, const Span& workspace, const char* alias,
                   const char* onto) {
  check_buffers(args, workspace, {Alias{alias, onto}});
}

void require_pointer(const void* p, const char* name) {
  if (p == nullptr) fail(NK_ERROR_INVALID_VALUE, name, " is NULL");
}

void require_cpu_context(const nk_context_s* ctx, const char* feature) {
  require_pointer(ctx, "ctx");
  if (ctx->backend != NK_BACKEND_CPU) {
    fail(NK_ERROR_NOT_SUPPORTED, feature, " runs on CPU contexts only in this version");
  }
}

void require_elements(const void* p, nk_dtype dtype, const char* name) {
  require_pointer(p, name);
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(dtype) != 0) {
    fail(NK_ERROR_INVALID_VALUE, name, " = ", p, " is not aligned to its ", dtype_size(dtype),
         "-byte elements");
  }
}

ChannelShape channel_shape(ChannelNorm kind, const nk_act_desc* desc, int64_t groups) {
  require_pointer(desc, "desc");
  if (desc->layout != NK_NCHW && desc->layout != NK_NHWC) {
    fail(NK_ERROR_INVALID_VALUE, "desc->layout = ", static_cast<int>(desc->layout),
         " is not an nk_layout (expected NK_NCHW or NK_NHWC)");
  }
  require_dtype(desc->dtype, "desc->dtype");
  require_dim(desc->n, "desc->n");
  require_dim(desc->c, "desc->c");
  require_dim(desc->spatial, "desc->spatial");
  checked_count({desc->n, desc->c, desc->spatial}, "desc (n x c x spatial)");
  if (kind == ChannelNorm::kGroup) {
    require_dim(groups, "groups");
    if (desc->c % groups != 0) {
      fail(NK_ERROR_BAD_SHAPE, "groups = ", groups, " does not divide desc->c = ", desc->c);
    }
  }
  return ChannelShape{kind,
                      desc->n,
                      desc->c,
                      desc->spatial,
                      desc->layout,
                      desc->dtype,
                      kind == ChannelNorm::kGroup ? groups : 1};
}

ChannelShape shard_shape(const nk_act_desc* desc) {
  require_pointer(desc, "desc");
  if (desc->n != 0) return channel_shape(ChannelNorm::kBatch, desc, 1);
  nk_act_desc one = *desc;
  one.n = 1;
  ChannelShape s = channel_shape(ChannelNorm::kBatch, &one, 1);
  s.n = 0;
  return s;
}

RowShape row_shape(bool rms, const nk_row_desc* desc) {
  require_pointer(desc, "desc");
  require_dtype(desc->dtype, "desc->dtype");
  require_dtype(desc->weight_dtype, "desc->weight_dtype");
  if (desc->weight_dtype != NK_F32 && desc->weight_dtype != desc->dtype) {
    fail(NK_ERROR_INVALID_VALUE, "desc->weight_dtype = ", dtype_name(desc->weight_dtype),
         " does not match desc->dtype = ", dtype_name(desc->dtype), ": expected f32 or ",
         dtype_name(desc->dtype));
  }
  require_dim(desc->rows, "desc->rows");
  require_dim(desc->cols, "desc->cols");
  checked_count({desc->rows, desc->cols}, "desc (rows x cols)");
  return RowShape{rms, desc->rows, desc->cols, desc->dtype, desc->weight_dtype};
}

RowShape columns_shape(const nk_row_desc* desc) {
  require_pointer(desc, "desc");
  require_dtype(desc->weight_dtype, "desc->weight_dtype");  // not read, but never unknown
  nk_row_desc d = *desc;
  d.weight_dtype = NK_F32;
  return row_shape(false, &d);
}

void validate_config(const ChannelForwardArgs& a) {
  validate_params(&a.params, a.shape.kind);
  require_several_values(a.shape, a.params.phase);
}

namespace {

Span workspace_of(const nk_context_s& ctx) { return Span{ctx.workspace, ctx.workspace_bytes}; }

void validate_buffers(const ChannelForwardArgs& a, const Span& workspace) {
  const ChannelShape& s = a.shape;
  const bool training = a.params.phase == NK_TRAINING;
  if (s.numel() > 0) {  // only a synchronized batch norm shard may be empty
    require_pointer(a.x, "x");
    require_pointer(a.y, "y");
  }
  if ((a.running_mean == nullptr) != (a.running_var == nullptr)) {
    fail(NK_ERROR_INVALID_VALUE, a.running_mean ? "running_var" : "running_mean", " is NULL while ",
         a.running_mean ? "running_mean" : "running_var",
         " is not: pass both running buffers or neither");
  }
  const bool has_running = a.running_mean != nullptr;
  if (!training && !has_running) {
    fail(NK_ERROR_INVALID_VALUE,
         "running_mean and running_var are NULL in NK_INFERENCE: ", family_name(s.kind),
         " inference normalizes with frozen running statistics and never with the batch's own");
  }
  if (training && has_running && a.params.momentum_mode == NK_MOMENTUM_CUMULATIVE &&
      a.num_batches_tracked == nullptr) {
    fail(NK_ERROR_INVALID_VALUE,
         "num_batches_tracked is NULL with params->momentum_mode = NK_MOMENTUM_CUMULATIVE: the "
         "cumulative average needs the count of batches seen");
  }
  const int64_t elem = static_cast<int64_t>(dtype_size(s.dtype)), act = s.numel() * elem;
  const int64_t per_channel = s.c * 4, per_stat = s.num_stats() * 4;
  // z and relu_mask are NULL in the plain calls, which keep their one in-place pair (y == x).
  const std::initializer_list<BufferUse> buffers = {
      {a.x, act, "x", false, elem},
      {a.z, act, "z", false, elem},
      {a.weight, per_channel, "weight", false, 4},
      {a.bias, per_channel, "bias", false, 4},
      {a.running_mean, per_channel, "running_mean", training, 4},
      {a.running_var, per_channel, "running_var", training, 4},
      {training ? a.num_batches_tracked : nullptr, 8, "num_batches_tracked", true, 8},
      {a.y, act, "y", true, elem},
      {training ? a.save_mean : nullptr, per_stat, "save_mean", true, 4},
      {training ? a.save_invstd : nullptr, per_stat, "save_invstd", true, 4},
      {a.relu_mask, relu_mask_bytes(s), "relu_mask", true, 4}};
  if (a.z != nullptr) {
    check_buffers(buffers, workspace, {Alias{"y", "x"}, Alias{"y", "z"}});
  } else {
    check_buffers(buffers, workspace, "y", "x");
  }
}

}  // namespace

void validate_global(const ChannelForwardArgs& a, const nk_context_s& ctx) {
  validate_global_params(&a.params);
  validate_buffers(a, workspace_of(ctx));
  check_host_counter(a, ctx);
}

void validate(const ChannelForwardArgs& a, const nk_context_s& ctx) {
  validate_config(a);
  validate_buffers(a, workspace_of(ctx));
  check_host_counter(a, ctx);
}

void validate_config(const ChannelBackwardArgs& a) {
  validate_phase_and_eps(a.phase, a.eps, eps_name(a.shape.kind));
  require_several_values(a.shape, a.phase);
}

void validate(const ChannelBackwardArgs& a, const nk_context_s& ctx) {
  validate_config(a);
  validate_buffers(a, workspace_of(ctx));
}

void validate_buffers(const ChannelBackwardArgs& a, const Span& workspace) {
  const ChannelShape& s = a.shape;
  const bool training = a.phase == NK_TRAINING;
  if (s.numel() > 0) {  // only a synchronized batch norm shard may be empty
    require_pointer(a.x, "x");
    require_pointer(a.dy, "dy");
  }
  if (training && (a.save_mean == nullptr || a.save_invstd == nullptr)) {
    fail(NK_ERROR_INVALID_VALUE, a.save_mean ? "save_invstd" : "save_mean",
         " is NULL: ", family_name(s.kind),
         " backward in NK_TRAINING needs the statistics saved by the training forward");
  }
  if (!training && (a.running_mean == nullptr || a.running_var == nullptr)) {
    fail(NK_ERROR_INVALID_VALUE, a.running_mean ? "running_var" : "running_mean",
         " is NULL in NK_INFERENCE: backward with frozen statistics needs the running statistics "
         "the forward used");
  }
  const int64_t elem = static_cast<int64_t>(dtype_size(s.dtype)), act = s.numel() * elem;
  const int64_t per_channel = s.c * 4, per_stat = s.num_stats() * 4;
  // The fused call's buffers (y, relu_mask, z, bias, dz) are NULL in the plain calls, which keep
  // their one in-place pair (dx == dy). The mask, though read only, overlaps nothing: bits that
  // share bytes with another argument cannot all be what the forward wrote.
  const std::initializer_list<BufferUse> buffers = {
      {a.x, act, "x", false, elem},
      {a.dy, act, "dy", false, elem},
      {a.y, act, "y", false, elem},
      {a.relu_mask, relu_mask_bytes(s), "relu_mask", true, 4},
      {a.z, act, "z", false, elem},
      {a.weight, per_channel, "weight", false, 4},
      {a.bias, per_channel, "bias", false, 4},
      {training ? nullptr : a.running_mean, per_channel, "running_mean", false, 4},
      {training ? nullptr : a.running_var, per_channel, "running_var", false, 4},
      {training ? a.save_mean : nullptr, per_stat, "save_mean", false, 4},
      {training ? a.save_invstd : nullptr, per_stat, "save_invstd", false, 4},
      {a.dx, act, "dx", true, elem},
      {a.dz, act, "dz", true, elem},
      {a.dweight, per_channel, "dweight", true, 4},
      {a.dbias, per_channel, "dbias", true, 4}};
  if (a.dz != nullptr) {
    check_buffers(buffers, workspace, {Alias{"dx", "dy"}, Alias{"dz", "dy"}});
  } else {
    check_buffers(buffers, workspace, "dx", "dy");
  }
}

RowFusion row_fusion(const nk_row_fusion* fusion, bool* rms) {
  require_pointer(fusion, "fusion");
  if (fusion->norm != NK_LAYER_NORM && fusion->norm != NK_RMS_NORM) {
    fail(NK_ERROR_INVALID_VALUE, "fusion->norm = ", static_cast<int>(fusion->norm),
         " is not an nk_row_norm (expected NK_LAYER_NORM or NK_RMS_NORM)");
  }
  if (fusion->residual != NK_RESIDUAL_NONE && fusion->residual != NK_RESIDUAL_ADD) {
    fail(NK_ERROR_INVALID_VALUE, "fusion->residual = ", static_cast<int>(fusion->residual),
         " is not an nk_residual (expected NK_RESIDUAL_NONE or NK_RESIDUAL_ADD)");
  }
  if (fusion->weight_form != NK_WEIGHT_DIRECT && fusion->weight_form != NK_WEIGHT_ZERO_CENTERED) {
    fail(NK_ERROR_INVALID_VALUE, "fusion->weight_form = ", static_cast<int>(fusion->weight_form),
         " is not an nk_weight_form (expected NK_WEIGHT_DIRECT or NK_WEIGHT_ZERO_CENTERED)");
  }
  if (fusion->output != NK_OUTPUT_DTYPE && fusion->output != NK_OUTPUT_FP8_E4M3 &&
      fusion->output != NK_OUTPUT_FP8_E5M2) {
    fail(NK_ERROR_INVALID_VALUE, "fusion->output = ", static_cast<int>(fusion->output),
         " is not an nk_output_format (expected NK_OUTPUT_DTYPE, NK_OUTPUT_FP8_E4M3 or "
         "NK_OUTPUT_FP8_E5M2)");
  }
  *rms = fusion->norm == NK_RMS_NORM;
  RowFusion f;
  f.residual = fusion->residual == NK_RESIDUAL_ADD;
  f.zero_centered = fusion->weight_form == NK_WEIGHT_ZERO_CENTERED;
  f.output = fusion->output;
  return f;
}

namespace {

const char* fusion_value(const RowFusion& f, const char* what) {
  const std::string w = what;
  if (w == "residual") return f.residual ? "NK_RESIDUAL_ADD" : "NK_RESIDUAL_NONE";
  return f.output == NK_OUTPUT_FP8_E4M3   ? "NK_OUTPUT_FP8_E4M3"
         : f.output == NK_OUTPUT_FP8_E5M2 ? "NK_OUTPUT_FP8_E5M2"
                                          : "NK_OUTPUT_DTYPE";
}

// A buffer that the fusion needs (`needed`) must be given, one it does not use must be NULL.
void require_use(const void* p, bool needed, const char* name, const RowFusion& f,
                 const char* field) {
  if (needed && p == nullptr) {
    fail(NK_ERROR_INVALID_VALUE, name, " is NULL with fusion->", field, " = ",
         fusion_value(f, field), ": it is required");
  }
  if (!needed && p != nullptr) {
    fail(NK_ERROR_INVALID_VALUE, name, " is not NULL with fusion->", field, " = ",
         fusion_value(f, field), ": this call would not use it");
  }
}

void require_zero_centered_weight(const void* weight, const RowFusion& f) {
  if (f.zero_centered && weight == nullptr) {
    fail(NK_ERROR_INVALID_VALUE,
         "weight is NULL with fusion->weight_form = NK_WEIGHT_ZERO_CENTERED: the zero-centred "
         "form needs the weight (gamma - 1)");
  }
}

void require_layer_norm_only(const void* p, const RowShape& s, const char* name) {
  if (s.rms && p != nullptr) {
    fail(NK_ERROR_INVALID_VALUE, name, " is not NULL for RMS norm, which has no ",
         std::string(name).find("mean") != std::string::npos ? "mean" : "bias");
  }
}

}  // namespace

void validate(const RowForwardArgs& a, const nk_context_s& ctx) {
  const Span workspace = workspace_of(ctx);
  const RowShape& s = a.shape;
  const RowFusion& f = a.fusion;
  require_eps(a.eps);
  require_pointer(a.x, "x");
  require_pointer(a.y, "y");
  require_use(a.residual, f.residual, "residual", f, "residual");
  if (!f.residual) {
    require_use(a.h, false, "h", f, "residual");
    require_use(a.bias_in, false, "bias_in", f, "residual");
  }
  require_zero_centered_weight(a.weight, f);
  require_layer_norm_only(a.bias, s, "bias");
  require_layer_norm_only(a.save_mean, s, "save_mean");
  require_use(a.y_scale, f.fp8(), "y_scale", f, "output");
  if (!f.fp8()) require_use(a.y_amax, false, "y_amax", f, "output");
  if (f.fp8() && a.y == a.x) {
    fail(NK_ERROR_INVALID_VALUE, "y == x (", a.y,
         ") with fusion->output = ", fusion_value(f, "output"),
         ": an fp8 output cannot overwrite its input");
  }
  const int64_t elem = static_cast<int64_t>(dtype_size(s.dtype)), act = s.rows * s.cols * elem;
  const int64_t y_elem = f.fp8() ? 1 : elem;
  const int64_t param_elem = static_cast<int64_t>(dtype_size(s.weight_dtype));
  const int64_t param = s.cols * param_elem;
  check_buffers({{a.x, act, "x", false, elem},
                 {a.residual, act, "residual", false, elem},
                 {a.bias_in, param, "bias_in", false, param_elem},
                 {a.weight, param, "weight", false, param_elem},
                 {a.bias, param, "bias", false, param_elem},
                 {a.y_scale, 4, "y_scale", false, 4},
                 {a.h, act, "h", true, elem},
                 {a.y, s.rows * s.cols * y_elem, "y", true, y_elem},
                 {a.y_amax, 4, "y_amax", true, 4},
                 {a.save_mean, s.rows * 4, "save_mean", true, 4},
                 {a.save_rstd, s.rows * 4, "save_rstd", true, 4}},
                workspace, "y", "x");
}

void validate(const RowBackwardArgs& a, const nk_context_s& ctx) {
  const Span workspace = workspace_of(ctx);
  const RowShape& s = a.shape;
  const RowFusion& f = a.fusion;
  require_pointer(a.x, "x");
  require_pointer(a.dy, "dy");
  const char* family = family_name(s);
  if (!s.rms && a.save_mean == nullptr) {
    fail(NK_ERROR_INVALID_VALUE, "save_mean is NULL: ", family,
         " backward needs the mean saved by the forward");
  }
  if (a.save_rstd == nullptr) {
    fail(NK_ERROR_INVALID_VALUE, "save_rstd is NULL: ", family,
         " backward needs the rstd saved by the forward");
  }
  require_layer_norm_only(a.save_mean, s, "save_mean");
  if (!f.residual) {
    require_use(a.dh_extra, false, "dh_extra", f, "residual");
    require_use(a.dresidual, false, "dresidual", f, "residual");
    require_use(a.dbias_in, false, "dbias_in", f, "residual");
  }
  if (a.dbias_in != nullptr && a.dx == nullptr && a.dresidual == nullptr) {
    fail(NK_ERROR_INVALID_VALUE,
         "dbias_in is not NULL while dx and dresidual are NULL: dbias_in is the column sum of the "
         "dh stored in them, so one of them is required");
  }
  require_zero_centered_weight(a.weight, f);
  require_layer_norm_only(a.dbias, s, "dbias");
  const int64_t elem = static_cast<int64_t>(dtype_size(s.dtype)), act = s.rows * s.cols * elem;
  const int64_t param_elem = static_cast<int64_t>(dtype_size(s.weight_dtype));
  const int64_t param = s.cols * param_elem;
  check_buffers({{a.x, act, "x", false, elem},
                 {a.dy, act, "dy", false, elem},
                 {a.dh_extra, act, "dh_extra", false, elem},
                 {a.weight, param, "weight", false, param_elem},
                 {a.save_mean, s.rows * 4, "save_mean", false, 4},
                 {a.save_rstd, s.rows * 4, "save_rstd", false, 4},
                 {a.dx, act, "dx", true, elem},
                 {a.dresidual, act, "dresidual", true, elem},
                 {a.dbias_in, param, "dbias_in", true, param_elem},
                 {a.dweight, param, "dweight", true, param_elem},
                 {a.dbias, param, "dbias", true, param_elem}},
                workspace, "dx", "dy");
}

// ---- fused batch, instance and group norm --------------------------------------------------

namespace {

const char* activation_name(nk_activation act) {
  return act == NK_ACTIVATION_RELU   ? "NK_ACTIVATION_RELU"
         : act == NK_ACTIVATION_SILU ? "NK_ACTIVATION_SILU"
                                     : "NK_ACTIVATION_IDENTITY";
}

const char* residual_name(const ChannelFusion& f) {
  return f.residual ? "NK_RESIDUAL_ADD" : "NK_RESIDUAL_NONE";
}

// A buffer the fusion needs (`needed`) must be given, one it does not use must be NULL; `why`
// names the fields that decide it ("fusion->residual = NK_RESIDUAL_NONE").
void require_use(const void* p, bool needed, const char* name, const std::string& why) {
  if (needed && p == nullptr) {
    fail(NK_ERROR_INVALID_VALUE, name, " is NULL with ", why, ": it is required");
  }
  if (!needed && p != nullptr) {
    fail(NK_ERROR_INVALID_VALUE, name, " is not NULL with ", why, ": this call would not use it");
  }
}

std::string residual_field(const ChannelFusion& f) {
  return cat("fusion->residual = ", residual_name(f));
}

std::string activation_field(const ChannelFusion& f) {
  return cat("fusion->activation = ", activation_name(f.activation));
}

// Group norm has no running statistics: its fused calls take none.
void require_no_running(const void* p, const ChannelShape& s, const char* name) {
  if (s.kind == ChannelNorm::kGroup && p != nullptr) {
    fail(NK_ERROR_INVALID_VALUE, name,
         " is not NULL with fusion->norm = NK_GROUP_NORM, which has no running statistics");
  }
}

}  // namespace

ChannelFusion channel_fusion(const nk_channel_fusion* fusion, ChannelNorm* kind, int64_t* groups) {
  require_pointer(fusion, "fusion");
  if (fusion->norm != NK_BATCH_NORM && fusion->norm != NK_INSTANCE_NORM &&
      fusion->norm != NK_GROUP_NORM) {
    fail(NK_ERROR_INVALID_VALUE, "fusion->norm = ", static_cast<int>(fusion->norm),
         " is not an nk_channel_norm (expected NK_BATCH_NORM, NK_INSTANCE_NORM or NK_GROUP_NORM)");
  }
  if (fusion->residual != NK_RESIDUAL_NONE && fusion->residual != NK_RESIDUAL_ADD) {
    fail(NK_ERROR_INVALID_VALUE, "fusion->residual = ", static_cast<int>(fusion->residual),
         " is not an nk_residual (expected NK_RESIDUAL_NONE or NK_RESIDUAL_ADD)");
  }
  if (fusion->activation != NK_ACTIVATION_IDENTITY && fusion->activation != NK_ACTIVATION_RELU &&
      fusion->activation != NK_ACTIVATION_SILU) {
    fail(NK_ERROR_INVALID_VALUE, "fusion->activation = ", static_cast<int>(fusion->activation),
         " is not an nk_activation (expected NK_ACTIVATION_IDENTITY, NK_ACTIVATION_RELU or "
         "NK_ACTIVATION_SILU)");
  }
  if (fusion->norm == NK_GROUP_NORM) {
    if (fusion->groups < 1) {
      fail(NK_ERROR_BAD_SHAPE, "fusion->groups = ", fusion->groups,
           " with fusion->norm = NK_GROUP_NORM: expected >= 1 (and dividing desc->c)");
    }
  } else if (fusion->groups != 0) {
    fail(NK_ERROR_INVALID_VALUE, "fusion->groups = ", fusion->groups, " with fusion->norm = ",
         fusion->norm == NK_BATCH_NORM ? "NK_BATCH_NORM" : "NK_INSTANCE_NORM",
         ": expected 0 (groups belong to NK_GROUP_NORM)");
  }
  *kind = fusion->norm == NK_BATCH_NORM      ? ChannelNorm::kBatch
          : fusion->norm == NK_INSTANCE_NORM ? ChannelNorm::kInstance
                                             : ChannelNorm::kGroup;
  *groups = fusion->norm == NK_GROUP_NORM ? fusion->groups : 1;
  ChannelFusion f;
  f.residual = fusion->residual == NK_RESIDUAL_ADD;
  f.activation = fusion->activation;
  return f;
}

void validate_fused_config(const ChannelForwardArgs& a) {
  validate_fused_params(&a.params, a.shape.kind);
  require_several_values(a.shape, a.params.phase);
}

void validate_fused(const ChannelForwardArgs& a, const nk_context_s& ctx) {
  const ChannelShape& s = a.shape;
  const ChannelFusion& f = a.fusion;
  validate_fused_config(a);
  require_pointer(a.x, "x");
  require_pointer(a.y, "y");
  require_use(a.z, f.residual, "z", residual_field(f));
  if (f.activation != NK_ACTIVATION_RELU) {
    require_use(a.relu_mask, false, "relu_mask", activation_field(f));
  }
  require_no_running(a.running_mean, s, "running_mean");
  require_no_running(a.running_var, s, "running_var");
  require_no_running(a.num_batches_tracked, s, "num_batches_tracked");
  if (a.params.phase == NK_INFERENCE) {
    for (const auto& [p, name] : {std::pair<const void*, const char*>{a.save_mean, "save_mean"},
                                  {a.save_invstd, "save_invstd"}}) {
      if (p != nullptr) {
        fail(NK_ERROR_INVALID_VALUE, name,
             " is not NULL in NK_INFERENCE: inference normalizes with the running statistics and "
             "saves none");
      }
    }
  }
  validate_buffers(a, workspace_of(ctx));
  check_host_counter(a, ctx);
}

void validate_fused_config(const ChannelBackwardArgs& a, const nk_norm_params& params) {
  validate_fused_params(&params, a.shape.kind);
  validate_config(a);
}

void validate_fused(const ChannelBackwardArgs& a, const nk_context_s& ctx) {
  const ChannelShape& s = a.shape;
  const ChannelFusion& f = a.fusion;
  const bool relu = f.activation == NK_ACTIVATION_RELU, silu = f.activation == NK_ACTIVATION_SILU;
  validate_config(a);
  require_pointer(a.x, "x");
  require_pointer(a.dy, "dy");
  if (relu && (a.y == nullptr) == (a.relu_mask == nullptr)) {
    fail(NK_ERROR_INVALID_VALUE, "y and relu_mask are both ", a.y ? "given" : "NULL",
         " with fusion->activation = NK_ACTIVATION_RELU: expected exactly one of them (the "
         "forward's mask, or its y)");
  }
  if (!relu) {
    require_use(a.y, false, "y", activation_field(f));
    require_use(a.relu_mask, false, "relu_mask", activation_field(f));
  }
  require_use(a.z, silu && f.residual, "z",
              cat(activation_field(f), " and ", residual_field(f),
                  " (only SiLU with a residual recomputes u from z)"));
  if (!silu) {
    require_use(a.bias, false, "bias",
                cat(activation_field(f), " (only SiLU recomputes u, from the bias among others)"));
  }
  if (!f.residual) require_use(a.dz, false, "dz", residual_field(f));
  const bool training = a.phase == NK_TRAINING;
  const char* phase = training ? "NK_TRAINING" : "NK_INFERENCE";
  for (const auto& [p, name, read] :
       {std::tuple<const void*, const char*, bool>{a.running_mean, "running_mean", !training},
        {a.running_var, "running_var", !training},
        {a.save_mean, "save_mean", training},
        {a.save_invstd, "save_invstd", training}}) {
    if (!read && p != nullptr) {
      fail(NK_ERROR_INVALID_VALUE, name, " is not NULL in ", phase, ": ", family_name(s.kind),
           " backward in ", phase, " reads ",
           training ? "the statistics saved by the forward" : "the running statistics",
           ", never this one");
    }
  }
  if (a.dx != nullptr && a.dx == a.dy && a.dz == a.dy) {
    fail(NK_ERROR_INVALID_VALUE, "dx and dz both equal dy (", a.dy,
         "): one of the two gradients may overwrite dy, not both");
  }
  validate_buffers(a, workspace_of(ctx));
}

}  // namespace nk
