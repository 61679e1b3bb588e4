// The combinations the fused channel-norm tests (test_channel_fusion.cpp on the CPU backend,
// test_gpu_channel_fusion.cpp against it) run, their inputs, and the fp64 pieces both need: the
// activation and its slope, the spacing of a dtype's numbers, the ReLU mask's bits. Inputs have a
// non-zero mean and, in inference, running statistics near the batch's, so that u takes both
// signs.
#pragma once

#include <normkit/normkit.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "channel_ops.hpp"
#include "test_support.hpp"

namespace nkt {

struct FusionConfig {
  Family family;
  nk_phase phase;
  nk_activation act;
  bool residual;
  nk_layout layout;
  nk_dtype dtype;
};

inline const char* act_name(nk_activation a) {
  return a == NK_ACTIVATION_IDENTITY ? "identity" : a == NK_ACTIVATION_RELU ? "relu" : "silu";
}

inline std::string fusion_config_name(const testing::TestParamInfo<FusionConfig>& info) {
  const FusionConfig& c = info.param;
  return std::string(name(c.family)) + (c.phase == NK_TRAINING ? "_training_" : "_inference_") +
         act_name(c.act) + (c.residual ? "_add" : "") +
         (c.layout == NK_NCHW ? "_nchw_" : "_nhwc_") + name(c.dtype);
}

// Every norm x phase (inference for batch and instance norm) x activation x residual x layout x
// dtype that `keep` accepts.
template <class Keep>
std::vector<FusionConfig> fusion_configs(Keep keep) {
  std::vector<FusionConfig> out;
  for (Family f : {Family::kBatch, Family::kInstance, Family::kGroup})
    for (nk_phase ph : {NK_TRAINING, NK_INFERENCE})
      for (nk_activation a : {NK_ACTIVATION_IDENTITY, NK_ACTIVATION_RELU, NK_ACTIVATION_SILU})
        for (bool r : {false, true})
          for (nk_layout l : {NK_NCHW, NK_NHWC})
            for (nk_dtype t : {NK_F32, NK_F16, NK_BF16}) {
              const FusionConfig c{f, ph, a, r, l, t};
              if (f == Family::kGroup && ph == NK_INFERENCE) continue;
              if (keep(c)) out.push_back(c);
            }
  return out;
}

inline bool has_running(const FusionConfig& c) { return c.family != Family::kGroup; }
inline int64_t numel(const ChannelCase& k) { return k.n * k.c * k.s; }

// Training needs more than one value per statistic.
inline bool runnable(const FusionConfig& c, const ChannelCase& k) {
  const int64_t count = c.family == Family::kBatch      ? k.n * k.s
                        : c.family == Family::kInstance ? k.s
                                                        : (k.c / k.groups) * k.s;
  return c.phase == NK_INFERENCE || count >= 2;
}

inline nk_channel_fusion fusion_of(const FusionConfig& c, const ChannelCase& k) {
  nk_channel_fusion f = nk_channel_fusion_default();
  f.norm = c.family == Family::kBatch      ? NK_BATCH_NORM
           : c.family == Family::kInstance ? NK_INSTANCE_NORM
                                           : NK_GROUP_NORM;
  f.groups = c.family == Family::kGroup ? k.groups : 0;
  f.residual = c.residual ? NK_RESIDUAL_ADD : NK_RESIDUAL_NONE;
  f.activation = c.act;
  return f;
}

constexpr double kFusionEps = 1e-5;

inline nk_norm_params fusion_params(const FusionConfig& c) {
  nk_norm_params p = nk_norm_params_default();
  p.phase = c.phase;
  p.eps = kFusionEps;
  return p;
}

// Spacing of dtype's numbers at |v| (the subnormal spacing below the normal range).
inline double ulp(double v, nk_dtype dtype) {
  const int digits = dtype == NK_F32 ? 24 : dtype == NK_F16 ? 11 : 8;
  const int min_exp = dtype == NK_F16 ? -14 : -126;  // exponent of the smallest normal
  int e = min_exp + 1;
  if (v != 0) std::frexp(std::fabs(v), &e);  // |v| = m * 2^e, m in [0.5, 1)
  return std::ldexp(1.0, std::max(e - 1, min_exp) - (digits - 1));
}

inline double activate(nk_activation a, double u) {
  if (a == NK_ACTIVATION_RELU) return u > 0 ? u : 0.0;
  if (a == NK_ACTIVATION_SILU) return u / (1.0 + std::exp(-u));
  return u;
}

inline double silu_slope(double u) {
  const double s = 1.0 / (1.0 + std::exp(-u));
  return s * (1.0 + u * (1.0 - s));
}

constexpr double kMaxSiluSlope = 1.1;      // max |silu'(u)| = 1.0998...
constexpr double kMaxSiluCurvature = 0.5;  // max |silu''(u)|, at u = 0

// Bit i of the mask (normkit.h: bit i mod 32 of 32-bit word i / 32).
inline bool mask_bit(const std::vector<uint32_t>& mask, int64_t i) {
  return (mask[static_cast<size_t>(i / 32)] >> (i % 32)) & 1u;
}

inline std::vector<float> to_floats(const std::vector<double>& v) { return {v.begin(), v.end()}; }
inline std::vector<double> to_doubles(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// The inputs of one forward and backward.
struct FusionInputs {
  Buffer x, z, dy;                  // desc dtype; z empty without a residual
  std::vector<float> w, b, rm, rv;  // [C] (w, b empty: no affine); rm, rv: running statistics
  int64_t tracked = 5;              // num_batches_tracked before the call
};

inline FusionInputs fusion_inputs(Random& rng, const FusionConfig& c, const ChannelCase& k,
                                  bool affine = true) {
  const int64_t n = numel(k);
  FusionInputs in;
  in.x = Buffer(c.dtype, rng.normal(n, 1.5, 2.0));
  if (c.residual) in.z = Buffer(c.dtype, rng.normal(n, -0.3, 1.0));
  in.dy = Buffer(c.dtype, rng.normal(n));
  if (affine) {
    in.w = to_floats(rng.normal(k.c, 1.0, 0.5));
    in.b = to_floats(rng.normal(k.c, 0.0, 0.5));
  }
  const bool training = c.phase == NK_TRAINING;
  in.rm = to_floats(training ? rng.normal(k.c, 0.0, 0.1) : rng.normal(k.c, 1.5, 0.3));
  in.rv = to_floats(training ? rng.uniform(k.c, 0.5, 1.5) : rng.uniform(k.c, 2.0, 6.0));
  return in;
}

// Every |actual - expected| <= bound, element by element; reports the first few failures.
inline void expect_within(const std::vector<double>& actual, const std::vector<double>& expected,
                          const std::vector<double>& bound, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!(std::fabs(actual[i] - expected[i]) <= bound[i]) && ++failures <= 5) {
      ADD_FAILURE() << what << "[" << i << "] = " << actual[i] << ", expected " << expected[i]
                    << " (bound " << bound[i] << ")";
    }
  }
  EXPECT_EQ(failures, 0) << what << ": elements out of bounds";
}

// Per element of x: the statistics the backward normalizes with (saved in training, running in
// inference) and the sums over each statistic's set that bound how a perturbation of du moves dx.
struct BackwardStats {
  std::vector<double> xhat, invstd, mean, weight;  // per element
  std::vector<int64_t> stat, channel;              // per element
  bool training = true;
  int64_t stats = 0;

  // The backward's dx = invstd * (g - mean(g) - xhat * mean(g * xhat)), g = weight * du, in |.|
  // applied to per-element perturbations v of du: invstd * (|w| v + mean(|w| v) + |xhat| *
  // mean(|w| v |xhat|)) in training, invstd * |w| * v in inference.
  std::vector<double> propagate(const std::vector<double>& v) const {
    std::vector<double> a(static_cast<size_t>(stats), 0.0), b = a, count = a, out(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const auto j = static_cast<size_t>(stat[i]);
      a[j] += std::fabs(weight[i]) * v[i];
      b[j] += std::fabs(weight[i]) * v[i] * std::fabs(xhat[i]);
      count[j] += 1;
    }
    for (size_t i = 0; i < v.size(); ++i) {
      const auto j = static_cast<size_t>(stat[i]);
      out[i] = invstd[i] * std::fabs(weight[i]) * v[i];
      if (training) out[i] += invstd[i] * (a[j] + std::fabs(xhat[i]) * b[j]) / count[j];
    }
    return out;
  }
};

// save_mean, save_invstd: the forward's (training); in inference the running statistics of `in`.
inline BackwardStats backward_stats(const FusionConfig& c, const ChannelCase& k,
                                    const FusionInputs& in, const std::vector<float>& save_mean,
                                    const std::vector<float>& save_invstd) {
  BackwardStats s;
  s.training = c.phase == NK_TRAINING;
  s.stats = s.training ? num_stats(k) : k.c;
  const auto count = static_cast<size_t>(numel(k));
  for (auto* v : {&s.xhat, &s.invstd, &s.mean, &s.weight}) v->resize(count);
  s.stat.resize(count);
  s.channel.resize(count);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t ch = 0; ch < k.c; ++ch)
      for (int64_t sp = 0; sp < k.s; ++sp) {
        const auto i = static_cast<size_t>(act_index(k, n, ch, sp));
        const int64_t j = s.training ? stat_index(k, n, ch) : ch;
        const auto uj = static_cast<size_t>(j), uc = static_cast<size_t>(ch);
        const double mean = s.training ? double{save_mean[uj]} : double{in.rm[uc]};
        const double invstd =
            s.training ? double{save_invstd[uj]} : 1 / std::sqrt(double{in.rv[uc]} + kFusionEps);
        s.xhat[i] = (in.x.get(static_cast<int64_t>(i)) - mean) * invstd;
        s.invstd[i] = invstd;
        s.mean[i] = mean;
        s.weight[i] = in.w.empty() ? 1.0 : in.w[uc];
        s.stat[i] = j;
        s.channel[i] = ch;
      }
  return s;
}

}  // namespace nkt
