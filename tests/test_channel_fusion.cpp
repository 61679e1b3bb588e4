// Fused batch, instance and group norm with an activation on the CPU backend
// (nk_channel_norm_fused_forward / _backward), against the plain ops of the same backend and the
// activation evaluated here in fp64, for every norm x phase x activation x residual x layout x
// dtype.
//
// Forward reference: the plain forward on x converted to fp32 (exact), so that its fp32 output n
// is norm(x) rounded once to fp32 and not to the dtype; then u = n + z and act(u) in fp64, rounded
// to the dtype. The fused call keeps u in fp64 and rounds y once, so the two differ by at most
//   |y - y_ref| <= ulp_dtype(|act(u)| + d) + d,   d = 1.1 * (2^-24 |n| + fp64 noise)
// (half an ulp from each rounding, and |act'| <= 1.1 times the fp32 rounding of n). The saved and
// running statistics are x's alone: bitwise those of the plain forward in the dtype. The ReLU
// mask's bits are (u > 0) wherever |u| exceeds that rounding, its padding bits are 0 and nothing
// past its queried size is written.
// Backward reference: du = dy * act'(u) in fp64 from the reference u, rounded to fp32, then the
// plain backward in fp32 with du as dy. The fused call takes du in fp64 from its own u, so each du
// differs by eta = 2^-24 |du| (fp32 rounding) plus, for SiLU, |dy| * max|silu''| (= 0.5) times
// the distance between the two u (the backward recomputes u from the fp32 saved statistics:
// 2^-24 relative in mean and invstd). That propagates through the norm's backward formula
//   dx = invstd * (g - mean(g) - xhat * mean(g * xhat)),  g = weight * du
// as the same expression in |.| of eta (training; w * invstd * eta in inference); dweight and
// dbias move by sum eta |xhat| and sum eta. Outputs in the dtype add half an ulp of it, the fp32
// reference half an ulp of fp32.
// Identity with no residual is the plain op, bit for bit, forward and backward; the ReLU backward
// from the mask and from y give the same bits where the mask and y > 0 agree.
// Inputs are fresh random values every run (the seed is printed), with a non-zero mean; outputs are
// poisoned (NaN) first and every element is checked. Shapes reach S = 1, odd S and C % 8 != 0.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "channel_fusion_cases.hpp"
#include "channel_ops.hpp"
#include "test_support.hpp"

namespace nkt {
namespace {

using Config = FusionConfig;

constexpr double kF32Rounding = 0x1p-24;  // relative error of one rounding to fp32
constexpr double kNoise = 1e-12;          // fp64 evaluation-order differences, relative

// (n, c, s, groups): S = 1, odd S, C % 8 != 0, and whole 8-element packs (C = 8, S = 16); group
// norm with 1 < G < C. Training shapes with one value per statistic are left out.
std::vector<ChannelCase> shapes(const Config& c) {
  const int64_t list[][4] = {{2, 4, 1, 2}, {3, 6, 7, 3}, {2, 12, 33, 4}, {2, 8, 16, 4}};
  std::vector<ChannelCase> out;
  for (const auto& s : list) {
    const ChannelCase k{c.family, s[0],     s[1],
                        s[2],     c.layout, c.family == Family::kGroup ? s[3] : 1};
    if (runnable(c, k)) out.push_back(k);
  }
  return out;
}

std::vector<float> nan_floats(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
}
bool same_floats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
Buffer as_f32(const Buffer& b) { return Buffer(NK_F32, b.values()); }

using Inputs = FusionInputs;

// The outputs of one forward call, poisoned before it.
struct ForwardOut {
  Buffer y;
  std::vector<float> mean, invstd, rm, rv;  // saved (training) and running statistics
  int64_t tracked = 0;
  std::vector<uint32_t> mask;  // ReLU: the queried words plus one guard word
};

class ChannelFusion : public testing::TestWithParam<Config> {
 protected:
  CpuContext ctx_;
  Random rng_;

  Inputs make_inputs(const ChannelCase& k, bool affine = true) {
    return fusion_inputs(rng_, GetParam(), k, affine);
  }

  // The plain forward of x (any dtype with x's values) with in's parameters and running buffers.
  ForwardOut plain_forward(const ChannelCase& k, const Buffer& x, const Inputs& in) {
    const Config& c = GetParam();
    const bool training = c.phase == NK_TRAINING;
    ForwardOut o{Buffer(x.dtype(), numel(k)),
                 nan_floats(num_stats(k)),
                 nan_floats(num_stats(k)),
                 in.rm,
                 in.rv,
                 in.tracked,
                 {}};
    o.y.poison();
    const bool run = has_running(c);
    EXPECT_EQ(
        channel_forward(ctx_, k, x.dtype(), fusion_params(c), x.data(),
                        in.w.empty() ? nullptr : in.w.data(), in.b.empty() ? nullptr : in.b.data(),
                        run ? o.rm.data() : nullptr, run ? o.rv.data() : nullptr,
                        run ? &o.tracked : nullptr, o.y.data(), training ? o.mean.data() : nullptr,
                        training ? o.invstd.data() : nullptr),
        NK_SUCCESS)
        << nk_last_error();
    return o;
  }

  ForwardOut fused_forward(const ChannelCase& k, const Inputs& in, bool with_mask) {
    const Config& c = GetParam();
    const bool training = c.phase == NK_TRAINING, run = has_running(c);
    ForwardOut o{Buffer(c.dtype, numel(k)),
                 nan_floats(num_stats(k)),
                 nan_floats(num_stats(k)),
                 in.rm,
                 in.rv,
                 in.tracked,
                 {}};
    o.y.poison();
    if (with_mask) {
      const nk_act_desc d = desc_of(k, c.dtype);
      size_t bytes = 0;
      EXPECT_EQ(nk_channel_norm_relu_mask_size(&d, &bytes), NK_SUCCESS) << nk_last_error();
      EXPECT_EQ(bytes, static_cast<size_t>(4 * ((numel(k) + 31) / 32)));
      o.mask.assign(bytes / 4 + 1, 0xFFFFFFFFu);
    }
    const nk_act_desc d = desc_of(k, c.dtype);
    const nk_channel_fusion f = fusion_of(c, k);
    const nk_norm_params p = fusion_params(c);
    nk_channel_fused_forward_buffers fb{};
    fb.x = in.x.data();
    fb.z = c.residual ? in.z.data() : nullptr;
    fb.weight = in.w.empty() ? nullptr : in.w.data();
    fb.bias = in.b.empty() ? nullptr : in.b.data();
    fb.running_mean = run ? o.rm.data() : nullptr;
    fb.running_var = run ? o.rv.data() : nullptr;
    fb.num_batches_tracked = run ? &o.tracked : nullptr;
    fb.y = o.y.data();
    fb.save_mean = training ? o.mean.data() : nullptr;
    fb.save_invstd = training ? o.invstd.data() : nullptr;
    fb.relu_mask = with_mask ? o.mask.data() : nullptr;
    EXPECT_EQ(nk_channel_norm_fused_forward(ctx_, &d, &f, &p, &fb), NK_SUCCESS) << nk_last_error();
    return o;
  }
};

// The forward reference: u = n + z with n the plain forward's fp32 output, act(u) in fp64, and
// delta, the bound on |u_fused - u| (n's rounding to fp32 and fp64 noise).
struct ForwardRef {
  std::vector<double> n, u, act, delta;
};

ForwardRef forward_reference(const Config& c, const Buffer& n32, const Buffer& z) {
  ForwardRef r;
  r.n = n32.values();
  const size_t count = r.n.size();
  r.u.resize(count);
  r.act.resize(count);
  r.delta.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const double zi = c.residual ? z.get(static_cast<int64_t>(i)) : 0.0;
    r.u[i] = r.n[i] + zi;
    r.act[i] = activate(c.act, r.u[i]);
    r.delta[i] =
        kF32Rounding * std::fabs(r.n[i]) + kNoise * (1 + std::fabs(r.n[i]) + std::fabs(zi));
  }
  return r;
}

INSTANTIATE_TEST_SUITE_P(All, ChannelFusion,
                         testing::ValuesIn(fusion_configs([](const Config&) { return true; })),
                         fusion_config_name);

TEST_P(ChannelFusion, ForwardIsActivationOfPlainOpPlusResidual) {
  const Config c = GetParam();
  for (const ChannelCase& k : shapes(c)) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s
                                    << " g=" << k.groups << ", seed " << rng_.seed());
    const Inputs in = make_inputs(k);
    const ForwardOut plain = plain_forward(k, in.x, in);
    const ForwardRef ref = forward_reference(c, plain_forward(k, as_f32(in.x), in).y, in.z);
    const bool relu = c.act == NK_ACTIVATION_RELU;
    const ForwardOut fused = fused_forward(k, in, relu);

    std::vector<double> bound(ref.act.size());
    for (size_t i = 0; i < bound.size(); ++i) {
      const double d = kMaxSiluSlope * ref.delta[i];
      bound[i] = ulp(std::fabs(ref.act[i]) + d, c.dtype) + d;
    }
    expect_within(fused.y.values(), rounded(ref.act, c.dtype), bound, "y");
    EXPECT_TRUE(same_floats(fused.mean, plain.mean)) << "save_mean";
    EXPECT_TRUE(same_floats(fused.invstd, plain.invstd)) << "save_invstd";
    if (has_running(c)) {
      EXPECT_TRUE(same_floats(fused.rm, plain.rm)) << "running_mean";
      EXPECT_TRUE(same_floats(fused.rv, plain.rv)) << "running_var";
      EXPECT_EQ(fused.tracked, plain.tracked);
      if (c.phase == NK_TRAINING) {
        EXPECT_EQ(fused.tracked, in.tracked + 1);
      }
    }
    if (!relu) continue;

    // The mask: (u > 0) wherever u is decided, zero padding, nothing past the queried words.
    const int64_t count = numel(k), words = (count + 31) / 32;
    int wrong = 0;
    for (int64_t i = 0; i < count; ++i) {
      if (std::fabs(ref.u[i]) <= ref.delta[i]) continue;  // within rounding of 0
      if (mask_bit(fused.mask, i) != (ref.u[i] > 0) && ++wrong <= 5) {
        ADD_FAILURE() << "mask bit " << i << " = " << mask_bit(fused.mask, i) << ", u " << ref.u[i];
      }
    }
    EXPECT_EQ(wrong, 0);
    for (int64_t i = count; i < 32 * words; ++i) EXPECT_FALSE(mask_bit(fused.mask, i)) << i;
    EXPECT_EQ(fused.mask.back(), 0xFFFFFFFFu) << "written past the mask's size";
    // Without a mask: the same y.
    EXPECT_EQ(fused_forward(k, in, false).y.bytes(), fused.y.bytes());
  }
}

// Which act'(u) the backward reference uses for ReLU: the mask (u > 0) or y (y > 0).
enum class ReluFrom { kMask, kY };

struct BackwardOut {
  Buffer dx, dz;
  std::vector<float> dw, db;
};

class ChannelFusionBackward : public ChannelFusion {
 protected:
  // The fused backward after fw, ReLU's derivative from `from`; outputs poisoned first.
  BackwardOut fused_backward(const ChannelCase& k, const Inputs& in, const ForwardOut& fw,
                             ReluFrom from) {
    const Config& c = GetParam();
    const bool training = c.phase == NK_TRAINING, relu = c.act == NK_ACTIVATION_RELU;
    const bool silu = c.act == NK_ACTIVATION_SILU;
    BackwardOut o{Buffer(c.dtype, numel(k)), Buffer(c.dtype, numel(k)), nan_floats(k.c),
                  nan_floats(k.c)};
    o.dx.poison();
    o.dz.poison();
    const nk_act_desc d = desc_of(k, c.dtype);
    const nk_channel_fusion f = fusion_of(c, k);
    const nk_norm_params p = fusion_params(c);
    nk_channel_fused_backward_buffers bb{};
    bb.x = in.x.data();
    bb.dy = in.dy.data();
    bb.y = relu && from == ReluFrom::kY ? fw.y.data() : nullptr;
    bb.relu_mask = relu && from == ReluFrom::kMask ? fw.mask.data() : nullptr;
    bb.z = silu && c.residual ? in.z.data() : nullptr;
    bb.weight = in.w.empty() ? nullptr : in.w.data();
    bb.bias = silu && !in.b.empty() ? in.b.data() : nullptr;
    bb.running_mean = training ? nullptr : in.rm.data();
    bb.running_var = training ? nullptr : in.rv.data();
    bb.save_mean = training ? fw.mean.data() : nullptr;
    bb.save_invstd = training ? fw.invstd.data() : nullptr;
    bb.dx = o.dx.data();
    bb.dz = c.residual ? o.dz.data() : nullptr;
    bb.dweight = o.dw.data();
    bb.dbias = o.db.data();
    EXPECT_EQ(nk_channel_norm_fused_backward(ctx_, &d, &f, &p, &bb), NK_SUCCESS) << nk_last_error();
    return o;
  }

  // The plain backward of x (any dtype with x's values) with dy, after fw.
  BackwardOut plain_backward(const ChannelCase& k, const Buffer& x, const Buffer& dy,
                             const Inputs& in, const ForwardOut& fw) {
    const Config& c = GetParam();
    const bool training = c.phase == NK_TRAINING;
    BackwardOut o{Buffer(x.dtype(), numel(k)), Buffer(), nan_floats(k.c), nan_floats(k.c)};
    o.dx.poison();
    EXPECT_EQ(channel_backward(
                  ctx_, k, x.dtype(), fusion_params(c), x.data(), dy.data(),
                  in.w.empty() ? nullptr : in.w.data(), training ? nullptr : in.rm.data(),
                  training ? nullptr : in.rv.data(), training ? fw.mean.data() : nullptr,
                  training ? fw.invstd.data() : nullptr, o.dx.data(), o.dw.data(), o.db.data()),
              NK_SUCCESS)
        << nk_last_error();
    return o;
  }
};

INSTANTIATE_TEST_SUITE_P(All, ChannelFusionBackward,
                         testing::ValuesIn(fusion_configs([](const Config&) { return true; })),
                         fusion_config_name);

TEST_P(ChannelFusionBackward, BackwardIsPlainBackwardOfActivationGradient) {
  const Config c = GetParam();
  const bool relu = c.act == NK_ACTIVATION_RELU, silu = c.act == NK_ACTIVATION_SILU;
  for (const ChannelCase& k : shapes(c)) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s
                                    << " g=" << k.groups << ", seed " << rng_.seed());
    const Inputs in = make_inputs(k);
    const Buffer x32 = as_f32(in.x);
    const ForwardRef ref = forward_reference(c, plain_forward(k, x32, in).y, in.z);
    const ForwardOut fw = fused_forward(k, in, relu);
    const BackwardStats st = backward_stats(c, k, in, fw.mean, fw.invstd);
    const std::vector<double> dy = in.dy.values(), y = fw.y.values();
    const auto count = static_cast<size_t>(numel(k));

    for (ReluFrom from : {ReluFrom::kMask, ReluFrom::kY}) {
      if (from == ReluFrom::kY && !relu) break;
      SCOPED_TRACE(relu ? (from == ReluFrom::kMask ? "ReLU from the mask" : "ReLU from y") : "");
      // du and eta, the bound on |du_fused - du| before du's rounding to fp32 (added below).
      std::vector<double> du(count), eta(count), magnitude(count);
      for (size_t i = 0; i < count; ++i) {
        double slope = 1.0, u_gap = 0.0;
        if (relu) {
          // The mask holds u > 0; y > 0 holds exactly where u exceeds half the dtype's smallest
          // subnormal (header). Within rounding of that threshold, the fused call's own decision
          // (the mask is checked in the forward test, y against the mask below).
          const double threshold = from == ReluFrom::kMask ? 0.0 : ulp(0.0, c.dtype) / 2;
          const bool decided = std::fabs(ref.u[i] - threshold) > ref.delta[i];
          const bool own =
              from == ReluFrom::kMask ? mask_bit(fw.mask, static_cast<int64_t>(i)) : y[i] > 0;
          slope = decided ? ref.u[i] > threshold : own;
        } else if (silu) {
          slope = silu_slope(ref.u[i]);
          // u recomputed from the fp32 statistics: 2^-24 relative in mean and invstd.
          const double mean_term = st.training ? std::fabs(st.mean[i]) : 0.0;
          u_gap = ref.delta[i] + 1.01 * kF32Rounding *
                                     (std::fabs(st.weight[i] * st.xhat[i]) +
                                      std::fabs(st.weight[i]) * st.invstd[i] * mean_term);
        }
        du[i] = dy[i] * slope;
        eta[i] = kMaxSiluCurvature * std::fabs(dy[i]) * u_gap + kNoise * std::fabs(dy[i]);
        magnitude[i] = std::fabs(du[i]);
      }
      const Buffer du32(NK_F32, du);
      for (size_t i = 0; i < count; ++i) {
        eta[i] += std::fabs(du32.get(static_cast<int64_t>(i)) - du[i]);
      }

      const BackwardOut want = plain_backward(k, x32, du32, in, fw);
      const BackwardOut got = fused_backward(k, in, fw, from);
      const std::vector<double> err = st.propagate(eta), noise = st.propagate(magnitude);
      const std::vector<double> dx_ref = want.dx.values();
      std::vector<double> bound(count);
      for (size_t i = 0; i < count; ++i) {
        const double e = err[i] + kNoise * noise[i], half32 = ulp(dx_ref[i], NK_F32) / 2;
        bound[i] = ulp(std::fabs(dx_ref[i]) + e + half32, c.dtype) / 2 + half32 + e;
      }
      expect_within(got.dx.values(), dx_ref, bound, "dx");
      if (c.residual) {
        for (size_t i = 0; i < count; ++i) {
          bound[i] = ulp(std::fabs(du[i]) + eta[i], c.dtype) / 2 + eta[i];
        }
        expect_within(got.dz.values(), du, bound, "dz");
      }
      // dweight, dbias: per-channel sums of du * xhat and du.
      std::vector<double> ew(static_cast<size_t>(k.c), 0.0), eb = ew, nw = ew, nb = ew;
      for (size_t i = 0; i < count; ++i) {
        const auto ch = static_cast<size_t>(st.channel[i]);
        ew[ch] += eta[i] * std::fabs(st.xhat[i]);
        eb[ch] += eta[i];
        nw[ch] += magnitude[i] * std::fabs(st.xhat[i]);
        nb[ch] += magnitude[i];
      }
      std::vector<double> bw(ew.size()), bb(eb.size());
      for (size_t ch = 0; ch < ew.size(); ++ch) {
        ew[ch] += kNoise * nw[ch];
        eb[ch] += kNoise * nb[ch];
        bw[ch] = ulp(std::fabs(want.dw[ch]) + ew[ch], NK_F32) + ew[ch];
        bb[ch] = ulp(std::fabs(want.db[ch]) + eb[ch], NK_F32) + eb[ch];
      }
      expect_within(to_doubles(got.dw), to_doubles(want.dw), bw, "dweight");
      expect_within(to_doubles(got.db), to_doubles(want.db), bb, "dbias");
    }
  }
}

// The ReLU backward from the forward's mask and from its y: the same bytes of every output, since
// the mask and y > 0 agree except where a positive u rounded to y = 0 (then only there).
class ChannelFusionRelu : public ChannelFusionBackward {};

INSTANTIATE_TEST_SUITE_P(Relu, ChannelFusionRelu,
                         testing::ValuesIn(fusion_configs([](const Config& c) {
                           return c.act == NK_ACTIVATION_RELU;
                         })),
                         fusion_config_name);

TEST_P(ChannelFusionRelu, BackwardFromMaskEqualsBackwardFromY) {
  const Config c = GetParam();
  int64_t positive = 0, total = 0;  // over all shapes: both signs must occur
  for (const ChannelCase& k : shapes(c)) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s
                                    << " g=" << k.groups << ", seed " << rng_.seed());
    const Inputs in = make_inputs(k);
    const ForwardOut fw = fused_forward(k, in, true);
    const std::vector<double> y = fw.y.values();
    int64_t disagree = 0;
    total += numel(k);
    for (int64_t i = 0; i < numel(k); ++i) {
      positive += y[i] > 0;
      if (mask_bit(fw.mask, i) != (y[i] > 0)) {
        ++disagree;
        EXPECT_TRUE(mask_bit(fw.mask, i) && y[i] == 0) << "element " << i << ": y " << y[i];
      }
    }
    const BackwardOut a = fused_backward(k, in, fw, ReluFrom::kMask);
    const BackwardOut b = fused_backward(k, in, fw, ReluFrom::kY);
    if (disagree > 0) continue;  // a positive u below the dtype's smallest subnormal: rare
    EXPECT_EQ(a.dx.bytes(), b.dx.bytes());
    if (c.residual) {
      EXPECT_EQ(a.dz.bytes(), b.dz.bytes());
    }
    EXPECT_TRUE(same_floats(a.dw, b.dw)) << "dweight";
    EXPECT_TRUE(same_floats(a.db, b.db)) << "dbias";
  }
  EXPECT_GT(positive, 0);
  EXPECT_LT(positive, total);
}

// Identity with no residual is the plain op: the same bytes of y, the saved and running
// statistics, dx, dweight and dbias, with and without weight and bias.
class ChannelFusionIdentity : public ChannelFusionBackward {};

INSTANTIATE_TEST_SUITE_P(Identity, ChannelFusionIdentity,
                         testing::ValuesIn(fusion_configs([](const Config& c) {
                           return c.act == NK_ACTIVATION_IDENTITY && !c.residual;
                         })),
                         fusion_config_name);

TEST_P(ChannelFusionIdentity, EqualsPlainOpBitForBit) {
  const Config c = GetParam();
  for (bool affine : {true, false}) {
    for (const ChannelCase& k : shapes(c)) {
      SCOPED_TRACE(testing::Message()
                   << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups
                   << (affine ? " affine" : " plain") << ", seed " << rng_.seed());
      const Inputs in = make_inputs(k, affine);
      const ForwardOut plain = plain_forward(k, in.x, in);
      const ForwardOut fused = fused_forward(k, in, false);
      EXPECT_EQ(fused.y.bytes(), plain.y.bytes()) << "y";
      EXPECT_TRUE(same_floats(fused.mean, plain.mean)) << "save_mean";
      EXPECT_TRUE(same_floats(fused.invstd, plain.invstd)) << "save_invstd";
      EXPECT_TRUE(same_floats(fused.rm, plain.rm)) << "running_mean";
      EXPECT_TRUE(same_floats(fused.rv, plain.rv)) << "running_var";
      EXPECT_EQ(fused.tracked, plain.tracked);
      const BackwardOut want = plain_backward(k, in.x, in.dy, in, plain);
      const BackwardOut got = fused_backward(k, in, fused, ReluFrom::kMask);
      EXPECT_EQ(got.dx.bytes(), want.dx.bytes()) << "dx";
      EXPECT_TRUE(same_floats(got.dw, want.dw)) << "dweight";
      EXPECT_TRUE(same_floats(got.db, want.db)) << "dbias";
    }
  }
}

}  // namespace
}  // namespace nkt
