// The arguments of each op family gathered in one struct, filled by the C shim and read by
// validation and by every backend. Batch, instance and group norm share one family ("channel
// norms": statistics over subsets of an N x C x S tensor); layer and RMS norm share another ("row
// norms": statistics per row).
#pragma once

#include <normkit/normkit.h>

#include <cmath>
#include <cstdint>

namespace nk {

enum class ChannelNorm { kBatch, kInstance, kGroup };

inline const char* family_name(ChannelNorm kind) {
  return kind == ChannelNorm::kBatch      ? "batch norm"
         : kind == ChannelNorm::kInstance ? "instance norm"
                                          : "group norm";
}

struct ChannelShape {
  ChannelNorm kind;
  int64_t n, c, s;
  nk_layout layout;
  nk_dtype dtype;
  int64_t groups;  // group norm; 1 otherwise

  int64_t numel() const { return n * c * s; }
  // Number of statistics: C (batch), N*C (instance), N*groups (group).
  int64_t num_stats() const {
    return kind == ChannelNorm::kBatch ? c : kind == ChannelNorm::kInstance ? n * c : n * groups;
  }
  // Values each statistic is taken over.
  int64_t count_per_stat() const {
    return kind == ChannelNorm::kBatch      ? n * s
           : kind == ChannelNorm::kInstance ? s
                                            : (c / groups) * s;
  }
  bool has_running_stats() const { return kind != ChannelNorm::kGroup; }
};

// The fused forms of batch, instance and group norm (nk_channel_fusion, normkit.h): u = norm(x)
// (+ z), y = act(u). All off for the plain calls.
struct ChannelFusion {
  bool residual = false;                         // z is added to the norm's output
  nk_activation activation = NK_ACTIVATION_IDENTITY;
  bool any() const { return residual || activation != NK_ACTIVATION_IDENTITY; }
};

// Bytes of the ReLU bit mask of a shape: one bit per element in 32-bit words, the last word
// padded with zero bits (nk_channel_norm_relu_mask_size).
inline int64_t relu_mask_bytes(const ChannelShape& s) { return 4 * ((s.numel() + 31) / 32); }

struct ChannelForwardArgs {
  ChannelShape shape;
  nk_norm_params params;  // group norm: NK_TRAINING with its eps
  const void* x;
  const float* weight;
  const float* bias;
  float* running_mean;
  float* running_var;
  int64_t* num_batches_tracked;
  void* y;
  float* save_mean;
  float* save_invstd;
  ChannelFusion fusion;     // off for the plain calls
  const void* z;            // fusion.residual only
  uint32_t* relu_mask;      // nullable, ReLU only: bit i of word i / 32 is u_i > 0
};

struct ChannelBackwardArgs {
  ChannelShape shape;
  nk_phase phase;
  double eps;
  const void* x;
  const void* dy;
  const float* weight;
  const float* running_mean;
  const float* running_var;
  const float* save_mean;
  const float* save_invstd;
  void* dx;
  float* dweight;
  float* dbias;
  ChannelFusion fusion;        // off for the plain calls; dy is then the gradient of y = act(u)
  const void* y;               // ReLU without relu_mask: act'(u) = y > 0
  const uint32_t* relu_mask;   // ReLU: act'(u) = the bit
  const void* z;               // SiLU with a residual: u needs it
  const float* bias;           // SiLU: u needs it (nullable: 0)
  void* dz;                    // nullable, fusion.residual only: du
};

struct RowShape {
  bool rms;  // RMS norm (no centring, no bias) or layer norm
  int64_t rows, cols;
  nk_dtype dtype;
  nk_dtype weight_dtype;
};

inline const char* family_name(const RowShape& s) { return s.rms ? "RMS norm" : "layer norm"; }

// The fused forms of layer and RMS norm (nk_row_fusion, normkit.h): all off for the plain calls.
struct RowFusion {
  bool residual = false;                      // normalize h = x + residual
  bool zero_centered = false;                 // gamma = 1 + weight
  nk_output_format output = NK_OUTPUT_DTYPE;  // y in the dtype, or fp8 of y * scale
  bool fp8() const { return output != NK_OUTPUT_DTYPE; }
};

struct RowForwardArgs {
  RowShape shape;
  RowFusion fusion;
  double eps;
  const void* x;
  const void* residual;  // fusion.residual only
  const void* bias_in;   // nullable, fusion.residual only: added to h
  const void* weight;
  const void* bias;      // always nullptr for RMS norm
  void* h;               // nullable, fusion.residual only
  void* y;               // dtype, or one byte an element with an fp8 output
  const float* y_scale;  // fp8 output only
  float* y_amax;         // nullable, fp8 output only
  float* save_mean;      // always nullptr for RMS norm
  float* save_rstd;
};

struct RowBackwardArgs {
  RowShape shape;
  RowFusion fusion;  // output is not read
  const void* x;     // the normalized input (h with a residual)
  const void* dy;
  const void* dh_extra;  // nullable, fusion.residual only
  const void* weight;
  const float* save_mean;  // always nullptr for RMS norm
  const float* save_rstd;
  void* dx;
  void* dresidual;  // nullable, fusion.residual only
  void* dbias_in;   // nullable, fusion.residual only: column sums of dh as stored
  void* dweight;
  void* dbias;  // always nullptr for RMS norm
};

// ---- preprocessing normalizers: rows x cols, weight_dtype unused --------------------------------
// The host resolves what both backends must agree on bit for bit before either runs: where each
// quantile falls, and each column's scaling parameters.

// numpy's 'linear' quantile q of a sorted column of `rows` values: h = q * (rows - 1), the value is
// v[lo] + frac * (v[lo + 1] - v[lo]) with lo = floor(h) and frac = h - lo (frac 0: v[lo] itself).
struct QuantilePosition {
  int64_t lo;
  double frac;
};

inline QuantilePosition quantile_position(double q, int64_t rows) {
  const double h = q * static_cast<double>(rows - 1);
  const auto lo = static_cast<int64_t>(std::floor(h));
  return {lo, h - static_cast<double>(lo)};
}

struct QuantileArgs {
  RowShape shape;
  const void* x;
  const QuantilePosition* positions;  // host, [nq]
  int64_t nq;
  float* out;  // [nq x cols]
};

// y = (x - center_j) * inverse_j in fp64, rounded once.
struct ScaleArgs {
  RowShape shape;
  const void* x;
  void* y;                // may be x
  const double* columns;  // host, [cols x 2]: center_j, inverse_j (0 for an ignored zero spread)
};

// y = x / max(||x||_2, eps) per row.
struct L2NormalizeArgs {
  RowShape shape;
  double eps;
  const void* x;
  void* y;  // may be x
};

}  // namespace nk
