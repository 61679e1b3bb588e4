#include "bench_case.hpp"

#include <utility>

namespace nkb {

const char* dtype_name(nk_dtype dtype) {
  switch (dtype) {
    case NK_F32:
      return "fp32";
    case NK_F16:
      return "fp16";
    case NK_BF16:
      return "bf16";
  }
  return "unknown";
}

size_t dtype_size(nk_dtype dtype) { return dtype == NK_F32 ? 4 : 2; }

const char* op_name(Op op) {
  switch (op) {
    case Op::batch_norm:
      return "batch_norm";
    case Op::instance_norm:
      return "instance_norm";
    case Op::group_norm:
      return "group_norm";
    case Op::layer_norm:
      return "layer_norm";
    case Op::rms_norm:
      return "rms_norm";
  }
  return "unknown";
}

const char* phase_name(const Case& c) {
  // Group, layer and RMS norm have no inference phase: their forward is just "fwd".
  const bool has_phases = c.op == Op::batch_norm || c.op == Op::instance_norm;
  switch (c.phase) {
    case Phase::forward_training:
      return has_phases ? "train_fwd" : "fwd";
    case Phase::forward_inference:
      return "infer_fwd";
    case Phase::backward:
      return "bwd";
  }
  return "unknown";
}

int64_t Case::elements() const { return is_row_op() ? rows * cols : n * c * spatial(); }

int64_t Case::stat_count() const {
  switch (op) {
    case Op::batch_norm:
      return c;
    case Op::instance_norm:
      return n * c;
    case Op::group_norm:
      return n * groups;
    case Op::layer_norm:
    case Op::rms_norm:
      return rows;
  }
  return 0;
}

int64_t Case::param_count() const { return is_row_op() ? cols : c; }

std::string RowFusion::name() const {
  std::string s;
  for (const auto& [on, part] : {std::pair<bool, const char*>{residual, "residual"},
                                 {zero_centered, "zc"},
                                 {fp8_output, "fp8"}}) {
    if (on) s += (s.empty() ? "" : "_") + std::string(part);
  }
  return s;
}

std::string ChannelFusion::name(const char* norm) const {
  std::string s = norm;
  if (residual) s += "_add";
  switch (activation) {
    case NK_ACTIVATION_IDENTITY:
      break;
    case NK_ACTIVATION_RELU:
      s += "_relu";
      break;
    case NK_ACTIVATION_SILU:
      s += "_silu";
      break;
  }
  return s;
}

std::string Case::fusion_name() const {
  if (row_fused()) return fusion.name();
  if (!channel_fused()) return "";
  const char* norm = op == Op::group_norm ? "gn" : op == Op::instance_norm ? "in" : "bn";
  return channel_fusion.name(norm);
}

int64_t Case::relu_mask_bytes() const { return 4 * ((elements() + 31) / 32); }

int64_t Case::minimal_bytes() const {
  const int64_t tensor = elements() * static_cast<int64_t>(dtype_size(dtype));
  if (channel_fused()) {
    // See the file comment of bench_case.hpp: z read / dz written with the residual add, the
    // ReLU mask written by a training forward and read by the backward.
    const int64_t z = channel_fusion.residual ? tensor : 0;
    const int64_t mask =
        channel_fusion.relu() && phase != Phase::forward_inference ? relu_mask_bytes() : 0;
    return (phase == Phase::backward ? 3 * tensor : 2 * tensor) + z + mask;
  }
  // The residual add's extra tensors: residual read + h written forward, dh_extra read +
  // dresidual written backward (see the file comment of bench_case.hpp).
  const int64_t residual = fusion.residual ? 2 * tensor : 0;
  if (phase == Phase::backward) return 3 * tensor + residual;
  const int64_t y = fusion.fp8_output ? elements() : tensor;  // fp8: one byte an element
  return tensor + y + residual;
}

int64_t Case::section5_bytes(const OnChip& device) const {
  const int64_t minimal = minimal_bytes();
  if (is_row_op() || phase == Phase::forward_inference) return minimal;
  // The tensors both passes read: x, and dy in a backward.
  const int64_t inputs = elements() * static_cast<int64_t>(dtype_size(dtype)) *
                         (phase == Phase::backward ? 2 : 1);
  const int64_t stats = stat_count();
  // A statistic's share of them: batch norm's spans every sample, instance norm's a row, group
  // norm's a sample's C / G rows.
  const int64_t per_stat = stats > 0 ? inputs / stats : 0;
  const bool fits = inputs <= device.l2_bytes || per_stat <= device.block_bytes;
  return fits ? minimal : minimal + inputs;
}

std::string Case::name() const {
  std::string s = set + "/";
  // Sets that mix ops (rows, long_rows, small, check) name the op; the others are named after
  // theirs.
  if (set == "rows" || set == "long_rows" || set == "small" || set == "check" ||
      set == "fused_rows" || set == "fused_channels") {
    s += std::string(op_name(op)) + "/";
  }
  if (is_row_op()) {
    s += "D" + std::to_string(cols) + "/M" + std::to_string(rows) + "/" + dtype_name(dtype) +
         "/w_" + dtype_name(weight_dtype);
  } else {
    s += "N" + std::to_string(n) + "/C" + std::to_string(c) + "/HW" + std::to_string(h);
    if (w != h) s += "x" + std::to_string(w);
    if (op == Op::group_norm) s += "/G" + std::to_string(groups);
    s += std::string("/") + (layout == NK_NCHW ? "NCHW" : "NHWC") + "/" + dtype_name(dtype);
  }
  if (fused()) s += "/" + fusion_name();
  return s + "/" + phase_name(*this);
}

nk_act_desc Case::act_desc() const { return nk_act_desc{n, c, spatial(), layout, dtype}; }

nk_row_desc Case::row_desc() const { return nk_row_desc{rows, cols, dtype, weight_dtype}; }

nk_row_fusion Case::row_fusion() const {
  nk_row_fusion f = nk_row_fusion_default();
  f.norm = op == Op::rms_norm ? NK_RMS_NORM : NK_LAYER_NORM;
  f.residual = fusion.residual ? NK_RESIDUAL_ADD : NK_RESIDUAL_NONE;
  f.weight_form = fusion.zero_centered ? NK_WEIGHT_ZERO_CENTERED : NK_WEIGHT_DIRECT;
  f.output = fusion.fp8_output ? NK_OUTPUT_FP8_E4M3 : NK_OUTPUT_DTYPE;
  return f;
}

nk_channel_fusion Case::channel_fusion_desc() const {
  nk_channel_fusion f{};  // every field set below
  f.norm = op == Op::group_norm      ? NK_GROUP_NORM
           : op == Op::instance_norm ? NK_INSTANCE_NORM
                                     : NK_BATCH_NORM;
  f.groups = op == Op::group_norm ? groups : 0;
  f.residual = channel_fusion.residual ? NK_RESIDUAL_ADD : NK_RESIDUAL_NONE;
  f.activation = channel_fusion.activation;
  return f;
}

}  // namespace nkb
