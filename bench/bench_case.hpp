// One benchmark case: an op, a shape, a dtype, a layout and a phase; its name, its element counts
// and the minimal bytes it must move (DESIGN.md section 5).
//
// Bytes counted: every forward (training or inference) reads x and writes y; every backward reads
// x and dy and writes dx. The per-channel / per-column parameters, their gradients, the running
// and the saved statistics are not counted: one definition for every op keeps the ratios
// comparable, and they are small beside the activations except in the smallest shapes (a few
// percent for group norm at N = 2, 8 x 8, or layer norm at D = 128; the "small" set reports time
// per call instead).
//
// Fused layer / RMS norm cases (the fused_rows set) count what the fused call moves beyond that, E
// being the elements of x and T = E x sizeof(dtype):
//  - forward: x read (T) and y written (T, or E with an fp8 output: one byte an element); with the
//    residual add, residual read and h written (2T more; bias_in is a parameter, not counted);
//  - backward: h (the case's x) and dy read, dx written (3T); with the residual add, dh_extra read
//    and dresidual written (2T more: the case passes both dx and dresidual, as a pre-norm block's
//    two inputs of the add; dbias_in is a parameter gradient, not counted).
// The zero-centred weight moves nothing more; y_scale and y_amax are scalars, not counted.
//
// Fused batch / group norm cases (the fused_channels set) count, with T as above and
// M = 4 * ceil(E / 32) the bytes of the ReLU bit mask (nk_channel_norm_relu_mask_size, about
// E / 8):
//  - training forward: x read, y written (2T); with the residual add, z read (T more); with ReLU,
//    the mask written (M more: the case passes it, as a training step that runs the backward
//    from it does);
//  - inference forward: x read, y written (2T); no mask (no backward follows);
//  - backward: x and dy read, dx written (3T); with ReLU, the mask read (M more; the case passes
//    the mask, not y); with the residual add, dz written (T more: the case passes dx and dz, the
//    two branches of the residual block). SiLU reads nothing more (u is recomputed from x, the
//    statistics, weight and bias). Statistics, parameters and their gradients are not counted.
//
// DESIGN.md section 5 counts more for batch, instance and group norm where their inputs cannot
// stay close between the two passes (statistics, then y; gradient sums, then dx): x (a training
// forward's) or x and dy (a backward's) are counted twice where they fit neither the device's L2
// nor, one statistic's share of them, one block's shared memory (OnChip). section5_bytes() is
// that count; minimal_bytes() (one read, whatever fits) stays the stricter one that frac_of_copy
// uses, so that the ratios of earlier runs compare.
#pragma once

#include <normkit/normkit.h>

#include <cstdint>
#include <string>

namespace nkb {

enum class Op { batch_norm, instance_norm, group_norm, layer_norm, rms_norm };

enum class Phase {
  forward_training,   // "train_fwd" (batch, instance norm) or "fwd" (group, layer, RMS norm)
  forward_inference,  // "infer_fwd": frozen running statistics (batch, instance norm)
  backward            // "bwd": training-phase backward with the saved statistics
};

// What a fused_rows case fuses around the norm (none of it in the other sets). The name joins the
// parts that are on, in this order: "residual", "zc", "fp8" (e.g. "residual_zc_fp8").
struct RowFusion {
  bool residual = false;       // h = x + residual + bias_in, h written; backward: dh_extra read,
                               // dx, dresidual and dbias_in written
  bool zero_centered = false;  // gamma = 1 + weight
  bool fp8_output = false;     // forward only: y in fp8 E4M3 scaled by y_scale, y_amax written

  bool any() const { return residual || zero_centered || fp8_output; }
  std::string name() const;
};

// What a fused_channels case fuses after the norm (nk_channel_norm_fused_forward / _backward):
// y = act(norm(x) [+ z]). The name joins the norm, "add" with the residual, and the activation:
// "bn_relu", "bn_add_relu", "gn_silu".
struct ChannelFusion {
  bool residual = false;                              // u = norm(x) + z; backward: dz written
  nk_activation activation = NK_ACTIVATION_IDENTITY;  // ReLU: bit mask written / read

  bool any() const { return residual || activation != NK_ACTIVATION_IDENTITY; }
  bool relu() const { return activation == NK_ACTIVATION_RELU; }
  std::string name(const char* norm) const;  // norm: "bn", "in", "gn"
};

// What the device keeps close: its L2, and the shared memory one block may hold (the opt-in
// limit).
struct OnChip {
  int64_t l2_bytes = 0;
  int64_t block_bytes = 0;
};

struct Case {
  std::string set;  // shape-set name, the first part of the benchmark name
  Op op = Op::batch_norm;
  Phase phase = Phase::forward_training;
  nk_dtype dtype = NK_BF16;  // x, y, dy, dx
  // Batch, instance and group norm: N x C x H x W in `layout`.
  int64_t n = 0, c = 0, h = 0, w = 0, groups = 0;
  nk_layout layout = NK_NCHW;
  // Layer and RMS norm: rows x cols, parameters in weight_dtype.
  int64_t rows = 0, cols = 0;
  nk_dtype weight_dtype = NK_F32;
  // Fused layer / RMS norm (set fused_rows): through nk_row_norm_fused_forward / _backward.
  RowFusion fusion;
  // Fused batch / instance / group norm (set fused_channels): through
  // nk_channel_norm_fused_forward / _backward.
  ChannelFusion channel_fusion;
  // Launch-bound: timed as back-to-back calls with warm caches, reported as us_per_call.
  bool launch_bound = false;
  // In place (set bn_in_place): a forward writes y over x, a backward dx over dy. Same bytes
  // counted as out of place.
  bool in_place = false;

  bool is_row_op() const { return op == Op::layer_norm || op == Op::rms_norm; }
  bool fused() const { return fusion.any() || channel_fusion.any(); }
  bool row_fused() const { return fusion.any(); }
  bool channel_fused() const { return channel_fusion.any(); }
  // The name part of the fusion ("residual_zc", "bn_add_relu"); empty when nothing is fused.
  std::string fusion_name() const;
  int64_t relu_mask_bytes() const;  // 4 * ceil(elements / 32): the ReLU mask's size query
  int64_t spatial() const { return h * w; }
  int64_t elements() const;          // of x
  int64_t stat_count() const;        // entries of save_mean / save_invstd
  int64_t param_count() const;       // entries of weight / bias (C, or cols)
  int64_t minimal_bytes() const;     // see the file comment
  int64_t section5_bytes(const OnChip& device) const;  // see the file comment
  std::string name() const;          // e.g. "bn_resnet50/N256/C64/HW112/NHWC/bf16/train_fwd"
  nk_act_desc act_desc() const;      // channel ops
  nk_row_desc row_desc() const;      // row ops
  nk_row_fusion row_fusion() const;  // row ops: norm, residual, weight form, output of `fusion`
  nk_channel_fusion channel_fusion_desc() const;  // channel ops: norm, groups, channel_fusion
};

const char* dtype_name(nk_dtype dtype);  // "fp32", "fp16", "bf16"
size_t dtype_size(nk_dtype dtype);
const char* op_name(Op op);             // "batch_norm", ...
const char* phase_name(const Case& c);  // "train_fwd", "infer_fwd", "fwd", "bwd"

}  // namespace nkb
