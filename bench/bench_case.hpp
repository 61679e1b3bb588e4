// One benchmark case: an op, a shape, a dtype, a layout and a phase; its name, its element counts
// and the minimal bytes it must move (DESIGN.md section 5).
//
// Bytes counted: every forward (training or inference) reads x and writes y; every backward reads
// x and dy and writes dx. The per-channel / per-column parameters, their gradients, the running
// and the saved statistics are not counted: one definition for every op keeps the ratios
// comparable, and they are small beside the activations except in the smallest shapes (a few
// percent for group norm at N = 2, 8 x 8, or layer norm at D = 128; the "small" set reports time
// per call instead).
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
  // Launch-bound: timed as back-to-back calls with warm caches, reported as us_per_call.
  bool launch_bound = false;

  bool is_row_op() const { return op == Op::layer_norm || op == Op::rms_norm; }
  int64_t spatial() const { return h * w; }
  int64_t elements() const;       // of x
  int64_t stat_count() const;     // entries of save_mean / save_invstd
  int64_t param_count() const;    // entries of weight / bias (C, or cols)
  int64_t minimal_bytes() const;  // see the file comment
  std::string name() const;       // e.g. "bn_resnet50/N256/C64/HW112/NHWC/bf16/train_fwd"
  nk_act_desc act_desc() const;   // channel ops
  nk_row_desc row_desc() const;   // row ops
};

const char* dtype_name(nk_dtype dtype);  // "fp32", "fp16", "bf16"
size_t dtype_size(nk_dtype dtype);
const char* op_name(Op op);             // "batch_norm", ...
const char* phase_name(const Case& c);  // "train_fwd", "infer_fwd", "fwd", "bwd"

}  // namespace nkb
