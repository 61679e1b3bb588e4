// Batch, instance and group norm on the CPU backend: hand-computed cases, the forward in both
// phases against a naive fp64 reference for every dtype x layout x affine option, the
// normalization invariants, NHWC against NCHW, fp64 finite-difference checks of dx, dweight and
// dbias in both phases, subsets of gradient outputs, in-place aliasing and determinism. Outputs are
// poisoned (NaN) before each call and every element is checked.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "channel_ops.hpp"
#include "test_support.hpp"

namespace nkt {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> to_f32(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}
std::vector<double> to_f64(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

nk_norm_params params(nk_phase phase, double eps = 1e-5) {
  nk_norm_params p = nk_norm_params_default();
  p.phase = phase;
  p.eps = eps;
  return p;
}

// ---- hand-computed cases ---------------------------------------------------------------------

TEST(ChannelNormByHand, BatchNormTrainingNchw) {
  CpuContext ctx;
  // N=2, C=2, S=2. Channel 0 holds {1, 3, 5, 7}: mean 4, biased var (9+1+1+9)/4 = 5.
  // Channel 1 holds {2, 2, 4, 8}: mean 4, biased var (4+4+0+16)/4 = 6.
  const std::vector<float> x = {1, 3, 2, 2, 5, 7, 4, 8};
  const std::vector<float> w = {2, 1}, b = {0.5f, -1};
  std::vector<float> y(8, kNaN), mean(2, kNaN), invstd(2, kNaN), rm = {0, 0}, rv = {1, 1};
  int64_t tracked = 3;
  const nk_act_desc d{2, 2, 2, NK_NCHW, NK_F32};
  const nk_norm_params p = params(NK_TRAINING, 0.0);  // momentum 0.1
  ASSERT_EQ(nk_batch_norm_forward(ctx, &d, &p, x.data(), w.data(), b.data(), rm.data(), rv.data(),
                                  &tracked, y.data(), mean.data(), invstd.data()),
            NK_SUCCESS)
      << nk_last_error();
  const double s5 = std::sqrt(5.0), s6 = std::sqrt(6.0);
  const std::vector<double> expected = {2 * -3 / s5 + 0.5, 2 * -1 / s5 + 0.5, -2 / s6 - 1,
                                        -2 / s6 - 1,       2 * 1 / s5 + 0.5,  2 * 3 / s5 + 0.5,
                                        0 / s6 - 1,        4 / s6 - 1};
  expect_close(to_f64(y), expected, output_tolerance(NK_F32), "y");
  expect_close(to_f64(mean), {4, 4}, {1e-7, 0}, "save_mean");
  expect_close(to_f64(invstd), {1 / s5, 1 / s6}, {0, 1e-7}, "save_invstd");
  // running_mean = 0.9*0 + 0.1*4; running_var = 0.9*1 + 0.1*var*4/3 (unbiased: 20/3 and 8).
  expect_close(to_f64(rm), {0.4, 0.4}, {0, 1e-7}, "running_mean");
  expect_close(to_f64(rv), {0.9 + 0.1 * 20 / 3, 0.9 + 0.1 * 8}, {0, 1e-7}, "running_var");
  EXPECT_EQ(tracked, 4);
}

TEST(ChannelNormByHand, BatchNormInferenceFoldsRunningStatistics) {
  CpuContext ctx;
  // y = (x - running_mean) / sqrt(running_var + eps) * w + b with mean 1, var 3, eps 1: /2.
  const std::vector<float> x = {1, 5, -3}, w = {3}, b = {1}, rm = {1}, rv = {3};
  std::vector<float> y(3, kNaN);
  const nk_act_desc d{3, 1, 1, NK_NHWC, NK_F32};
  const nk_norm_params p = params(NK_INFERENCE, 1.0);
  ASSERT_EQ(nk_batch_norm_forward(ctx, &d, &p, x.data(), w.data(), b.data(),
                                  const_cast<float*>(rm.data()), const_cast<float*>(rv.data()),
                                  nullptr, y.data(), nullptr, nullptr),
            NK_SUCCESS)
      << nk_last_error();
  expect_close(to_f64(y), {1, 7, -5}, output_tolerance(NK_F32), "y");
}

TEST(ChannelNormByHand, InstanceNormTraining) {
  CpuContext ctx;
  // One instance [1, 2, 3, 4]: mean 2.5, biased var 1.25, unbiased 5/3.
  const std::vector<float> x = {1, 2, 3, 4};
  std::vector<float> y(4, kNaN), mean(1, kNaN), invstd(1, kNaN), rm = {1}, rv = {1};
  const nk_act_desc d{1, 1, 4, NK_NCHW, NK_F32};
  nk_norm_params p = params(NK_TRAINING, 0.0);
  p.momentum = 0.5;
  ASSERT_EQ(nk_instance_norm_forward(ctx, &d, &p, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                                     nullptr, y.data(), mean.data(), invstd.data()),
            NK_SUCCESS)
      << nk_last_error();
  const double r = 1 / std::sqrt(1.25);
  expect_close(to_f64(y), {-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r}, output_tolerance(NK_F32), "y");
  expect_close(to_f64(mean), {2.5}, {0, 1e-7}, "save_mean");
  expect_close(to_f64(rm), {0.5 * 1 + 0.5 * 2.5}, {0, 1e-7}, "running_mean");
  expect_close(to_f64(rv), {0.5 * 1 + 0.5 * 5.0 / 3}, {0, 1e-7}, "running_var");
}

TEST(ChannelNormByHand, GroupNormTwoGroups) {
  CpuContext ctx;
  // C=4 in 2 groups, S=1: group 0 {1, 3} mean 2 var 1; group 1 {10, 14} mean 12 var 4.
  const std::vector<float> x = {1, 3, 10, 14}, w = {1, 2, 3, 4}, b = {0, 0, 0, 1};
  std::vector<float> y(4, kNaN), mean(2, kNaN), invstd(2, kNaN);
  const nk_act_desc d{1, 4, 1, NK_NCHW, NK_F32};
  ASSERT_EQ(nk_group_norm_forward(ctx, &d, 2, 0.0, x.data(), w.data(), b.data(), y.data(),
                                  mean.data(), invstd.data()),
            NK_SUCCESS)
      << nk_last_error();
  expect_close(to_f64(y), {-1, 2, -3, 5}, output_tolerance(NK_F32), "y");
  expect_close(to_f64(mean), {2, 12}, {0, 1e-7}, "save_mean");
  expect_close(to_f64(invstd), {1, 0.5}, {0, 1e-7}, "save_invstd");
}

// ---- parameterized over family x dtype x layout x affine -------------------------------------

struct Param {
  Family family;
  nk_dtype dtype;
  nk_layout layout;
  bool affine;
};

std::string param_name(const testing::TestParamInfo<Param>& info) {
  const Param& p = info.param;
  return std::string(name(p.family)) + "_" + name(p.dtype) + "_" +
         (p.layout == NK_NCHW ? "nchw" : "nhwc") + (p.affine ? "_affine" : "_plain");
}

std::vector<Param> all_params() {
  std::vector<Param> out;
  for (Family f : {Family::kBatch, Family::kInstance, Family::kGroup})
    for (nk_dtype t : {NK_F32, NK_F16, NK_BF16})
      for (nk_layout l : {NK_NCHW, NK_NHWC})
        for (bool affine : {false, true}) out.push_back({f, t, l, affine});
  return out;
}

// Shapes legal in training for the family, odd sizes and degenerate dims included.
std::vector<ChannelCase> shapes(Family f, nk_layout layout) {
  std::vector<ChannelCase> out;
  if (f == Family::kBatch) {
    for (auto [n, c, s] : {std::tuple{2, 3, 5}, {5, 1, 1}, {1, 4, 7}, {3, 2, 1}, {4, 16, 9}})
      out.push_back({f, n, c, s, layout});
  } else if (f == Family::kInstance) {
    for (auto [n, c, s] : {std::tuple{2, 3, 5}, {1, 1, 2}, {1, 4, 7}, {3, 5, 13}})
      out.push_back({f, n, c, s, layout});
  } else {
    for (auto [n, c, s, g] :
         {std::tuple{2, 6, 5, 3}, {1, 4, 1, 2}, {1, 1, 7, 1}, {3, 8, 9, 8}, {2, 12, 3, 1}})
      out.push_back({f, n, c, s, layout, g});
  }
  return out;
}

class ChannelNormTest : public testing::TestWithParam<Param> {
 protected:
  CpuContext ctx_;
  Random rng_;
};

TEST_P(ChannelNormTest, TrainingForwardMatchesReference) {
  const Param p = GetParam();
  for (const ChannelCase& k : shapes(p.family, p.layout)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    Buffer x(p.dtype, rng_.normal(numel, 3.0, 2.0)), y(p.dtype, numel);
    const std::vector<double> w = rng_.normal(k.c, 1.0, 0.5), b = rng_.normal(k.c);
    const std::vector<float> wf = to_f32(w), bf = to_f32(b);
    std::vector<float> mean(static_cast<size_t>(stats), kNaN), invstd(mean);
    y.poison();
    ASSERT_EQ(channel_forward(ctx_, k, p.dtype, params(NK_TRAINING), x.data(),
                              p.affine ? wf.data() : nullptr, p.affine ? bf.data() : nullptr,
                              nullptr, nullptr, nullptr, y.data(), mean.data(), invstd.data()),
              NK_SUCCESS)
        << nk_last_error();
    const std::vector<double> wr = to_f64(wf), br = to_f64(bf);
    const ChannelForwardRef ref = channel_forward_training(k, x.values(), p.affine ? &wr : nullptr,
                                                           p.affine ? &br : nullptr, 1e-5);
    expect_close(y.values(), ref.y, output_tolerance(p.dtype), "y");
    expect_close(to_f64(mean), ref.mean, {1e-6, 1e-6}, "save_mean");
    expect_close(to_f64(invstd), ref.invstd, {0, 1e-6}, "save_invstd");
  }
}

// Batch and instance norm only: group norm has no inference phase.
class ChannelNormInferenceTest : public ChannelNormTest {};

TEST_P(ChannelNormInferenceTest, ForwardUsesOnlyRunningStatistics) {
  const Param p = GetParam();
  ChannelCase k = shapes(p.family, p.layout)[0];
  k.n = 1;  // a batch of one is legal in inference
  const int64_t numel = k.n * k.c * k.s;
  Buffer x(p.dtype, rng_.normal(numel, -2.0, 3.0)), y(p.dtype, numel);
  const std::vector<float> wf = to_f32(rng_.normal(k.c)), bf = to_f32(rng_.normal(k.c));
  const std::vector<float> rm = to_f32(rng_.normal(k.c)), rv = to_f32(rng_.uniform(k.c, 0.5, 2));
  std::vector<float> rm_io = rm, rv_io = rv, save(static_cast<size_t>(num_stats(k)), kNaN);
  int64_t tracked = 11;
  y.poison();
  ASSERT_EQ(
      channel_forward(ctx_, k, p.dtype, params(NK_INFERENCE), x.data(),
                      p.affine ? wf.data() : nullptr, p.affine ? bf.data() : nullptr, rm_io.data(),
                      rv_io.data(), &tracked, y.data(), save.data(), save.data()),
      NK_SUCCESS)
      << nk_last_error();
  const std::vector<double> wr = to_f64(wf), br = to_f64(bf);
  expect_close(y.values(),
               channel_forward_inference(k, x.values(), p.affine ? &wr : nullptr,
                                         p.affine ? &br : nullptr, to_f64(rm), to_f64(rv), 1e-5),
               output_tolerance(p.dtype), "y");
  EXPECT_EQ(rm_io, rm) << "inference must not update running_mean";
  EXPECT_EQ(rv_io, rv) << "inference must not update running_var";
  EXPECT_EQ(tracked, 11) << "inference must not count batches";
  for (float v : save) EXPECT_TRUE(std::isnan(v)) << "inference must not write saved statistics";
}

// On plain (no affine) f32 outputs.
class ChannelNormInvariantTest : public ChannelNormTest {};

TEST_P(ChannelNormInvariantTest, NormalizedStatisticsAreZeroMeanUnitVariance) {
  const Param p = GetParam();
  for (const ChannelCase& k : shapes(p.family, p.layout)) {
    const int64_t numel = k.n * k.c * k.s;
    Buffer x(NK_F32, rng_.normal(numel, 50.0, 7.0)), y(NK_F32, numel);
    y.poison();
    ASSERT_EQ(channel_forward(ctx_, k, NK_F32, params(NK_TRAINING, 0.0), x.data(), nullptr, nullptr,
                              nullptr, nullptr, nullptr, y.data(), nullptr, nullptr),
              NK_SUCCESS)
        << nk_last_error();
    // Statistics of the output, per statistic set, computed from y alone.
    const std::vector<double> out = y.values();
    const ChannelForwardRef stats_of_y = channel_forward_training(k, out, nullptr, nullptr, 0.0);
    expect_close(stats_of_y.mean, std::vector<double>(stats_of_y.mean.size(), 0.0), {1e-6, 0},
                 "mean(y)");
    expect_close(stats_of_y.var, std::vector<double>(stats_of_y.var.size(), 1.0), {1e-5, 0},
                 "var(y)");
  }
}

// NCHW parameters: each case transposes its NCHW input to NHWC once.
class ChannelNormLayoutTest : public ChannelNormTest {};

TEST_P(ChannelNormLayoutTest, NhwcEqualsNchwAfterTranspose) {
  const Param p = GetParam();
  for (ChannelCase k : shapes(p.family, NK_NCHW)) {
    const int64_t numel = k.n * k.c * k.s;
    const std::vector<double> xv = rounded(rng_.normal(numel, 1.0, 2.0), p.dtype);
    const std::vector<float> wf = to_f32(rng_.normal(k.c)), bf = to_f32(rng_.normal(k.c));
    ChannelCase t = k;
    t.layout = NK_NHWC;
    std::vector<double> xt(xv.size());
    for (int64_t n = 0; n < k.n; ++n)
      for (int64_t c = 0; c < k.c; ++c)
        for (int64_t s = 0; s < k.s; ++s) xt[act_index(t, n, c, s)] = xv[act_index(k, n, c, s)];
    Buffer x1(p.dtype, xv), x2(p.dtype, xt), y1(p.dtype, numel), y2(p.dtype, numel);
    y1.poison();
    y2.poison();
    const float* w = p.affine ? wf.data() : nullptr;
    const float* b = p.affine ? bf.data() : nullptr;
    ASSERT_EQ(channel_forward(ctx_, k, p.dtype, params(NK_TRAINING), x1.data(), w, b, nullptr,
                              nullptr, nullptr, y1.data(), nullptr, nullptr),
              NK_SUCCESS);
    ASSERT_EQ(channel_forward(ctx_, t, p.dtype, params(NK_TRAINING), x2.data(), w, b, nullptr,
                              nullptr, nullptr, y2.data(), nullptr, nullptr),
              NK_SUCCESS);
    std::vector<double> back(xv.size());
    for (int64_t n = 0; n < k.n; ++n)
      for (int64_t c = 0; c < k.c; ++c)
        for (int64_t s = 0; s < k.s; ++s)
          back[act_index(k, n, c, s)] = y2.get(act_index(t, n, c, s));
    // Same statistics up to fp64 summation order; one ulp of the output dtype at most.
    expect_close(back, y1.values(), output_tolerance(p.dtype), "NHWC y transposed to NCHW");
  }
}

// dx, dweight and dbias against central differences of the fp64 reference forward, with
// L = sum(y * dy). Training uses the library's saved statistics, inference the running ones.
TEST_P(ChannelNormTest, BackwardMatchesFiniteDifferences) {
  const Param p = GetParam();
  for (nk_phase phase : {NK_TRAINING, NK_INFERENCE}) {
    if (phase == NK_INFERENCE && p.family == Family::kGroup) continue;
    SCOPED_TRACE(phase == NK_TRAINING ? "training" : "inference");
    for (const ChannelCase& k : shapes(p.family, p.layout)) {
      SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
      const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
      std::vector<double> xv = rounded(rng_.normal(numel, 0.5, 1.5), p.dtype);
      const std::vector<double> dyv = rounded(rng_.normal(numel), p.dtype);
      std::vector<double> wv = to_f64(to_f32(rng_.normal(k.c, 1.0, 0.5)));
      std::vector<double> bv = to_f64(to_f32(rng_.normal(k.c)));
      const std::vector<float> rm = to_f32(rng_.normal(k.c)),
                               rv = to_f32(rng_.uniform(k.c, 0.5, 2));
      const std::vector<float> wf = to_f32(wv);
      Buffer x(p.dtype, xv), dy(p.dtype, dyv), y(p.dtype, numel), dx(p.dtype, numel);
      std::vector<float> mean(static_cast<size_t>(stats)), invstd(mean);
      const float* w = p.affine ? wf.data() : nullptr;
      if (phase == NK_TRAINING) {
        ASSERT_EQ(channel_forward(ctx_, k, p.dtype, params(NK_TRAINING), x.data(), w, nullptr,
                                  nullptr, nullptr, nullptr, y.data(), mean.data(), invstd.data()),
                  NK_SUCCESS)
            << nk_last_error();
      }
      std::vector<float> dw(static_cast<size_t>(k.c), kNaN), db(dw);
      dx.poison();
      ASSERT_EQ(
          channel_backward(ctx_, k, p.dtype, params(phase), x.data(), dy.data(), w, rm.data(),
                           rv.data(), mean.data(), invstd.data(), dx.data(), dw.data(), db.data()),
          NK_SUCCESS)
          << nk_last_error();

      const std::vector<double>* wp = p.affine ? &wv : nullptr;
      auto loss = [&] {
        const std::vector<double> yv =
            phase == NK_TRAINING
                ? channel_forward_training(k, xv, wp, &bv, 1e-5).y
                : channel_forward_inference(k, xv, wp, &bv, to_f64(rm), to_f64(rv), 1e-5);
        return dot(yv, dyv);
      };
      std::vector<double> dx_fd(xv.size()), dw_fd(wv.size()), db_fd(bv.size());
      for (size_t i = 0; i < xv.size(); ++i) dx_fd[i] = finite_difference(loss, xv, i);
      // The batch statistics in fp64, for the rounding bounds of dx and dweight below.
      const ChannelForwardRef ref = channel_forward_training(k, xv, wp, &bv, 1e-5);
      // dx is a difference of terms of size |dy * weight * invstd|; its rounding error scales
      // with them, not with dx (tiny when a statistic has only two values).
      double scale = 0;
      {
        const double max_invstd =
            phase == NK_TRAINING ? *std::max_element(ref.invstd.begin(), ref.invstd.end())
                                 : 1 / std::sqrt(*std::min_element(rv.begin(), rv.end()) + 1e-5);
        double max_w = 1;
        for (double v : wv) max_w = std::max(max_w, p.affine ? std::abs(v) : 1.0);
        for (double v : dyv) scale = std::max(scale, std::abs(v) * max_w * max_invstd);
      }
      for (size_t c = 0; c < wv.size(); ++c) {
        // With no affine the library still returns the gradient at weight 1.
        if (p.affine) {
          dw_fd[c] = finite_difference(loss, wv, c);
        } else {
          std::vector<double> ones(wv.size(), 1.0);
          wp = &ones;
          dw_fd[c] = finite_difference(loss, ones, c);
          wp = nullptr;
        }
        db_fd[c] = finite_difference(loss, bv, c);
      }
      // dx is rounded once to the dtype. The parameter gradients are fp32 sums of fp64 products.
      // dweight sums dy * xhat, and xhat = (x - mean) * invstd carries fp32 rounding of about
      // u * (|x| + |mean|) * invstd: large where a statistic's values lie close together (two
      // values, n=1 c=1 s=2). Bound it per channel by 4u times the sum of |dy| times that.
      const Tolerance t = output_tolerance(p.dtype);
      expect_close(dx.values(), dx_fd, {1e-6 + t.atol * scale, t.rtol + 1e-6}, "dx");
      std::vector<double> xhat_error(wv.size(), 0.0);
      for (int64_t n = 0; n < k.n; ++n) {
        for (int64_t c = 0; c < k.c; ++c) {
          const auto j = static_cast<size_t>(stat_index(k, n, c));
          const double mu = phase == NK_TRAINING ? ref.mean[j] : rm[static_cast<size_t>(c)];
          const double inv = phase == NK_TRAINING
                                 ? ref.invstd[j]
                                 : 1 / std::sqrt(rv[static_cast<size_t>(c)] + 1e-5);
          for (int64_t s = 0; s < k.s; ++s) {
            const auto i = static_cast<size_t>(act_index(k, n, c, s));
            const double xhat = (xv[i] - mu) * inv;
            xhat_error[static_cast<size_t>(c)] +=
                std::abs(dyv[i]) * ((std::abs(xv[i]) + std::abs(mu)) * inv + std::abs(xhat));
          }
        }
      }
      const double u = std::ldexp(1.0, -24);
      for (size_t c = 0; c < wv.size(); ++c) {
        const double bound = 1e-5 + 1e-5 * std::abs(dw_fd[c]) + 4 * u * xhat_error[c];
        EXPECT_LE(std::abs(dw[c] - dw_fd[c]), bound) << "dweight[" << c << "]";
      }
      expect_close(to_f64(db), db_fd, {1e-5, 1e-5}, "dbias");
    }
  }
}

// Once per family and affine option (bf16, NHWC).
class ChannelNormOutputsTest : public ChannelNormTest {};

TEST_P(ChannelNormOutputsTest, EachGradientOutputIsOptional) {
  const Param p = GetParam();
  const ChannelCase k = shapes(p.family, p.layout)[0];
  const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
  Buffer x(p.dtype, rng_.normal(numel)), dy(p.dtype, rng_.normal(numel)), y(p.dtype, numel);
  const std::vector<float> wf = to_f32(rng_.normal(k.c));
  const float* w = p.affine ? wf.data() : nullptr;
  std::vector<float> mean(static_cast<size_t>(stats)), invstd(mean);
  ASSERT_EQ(channel_forward(ctx_, k, p.dtype, params(NK_TRAINING), x.data(), w, nullptr, nullptr,
                            nullptr, nullptr, y.data(), mean.data(), invstd.data()),
            NK_SUCCESS);
  Buffer dx_all(p.dtype, numel);
  std::vector<float> dw_all(static_cast<size_t>(k.c)), db_all(dw_all);
  ASSERT_EQ(channel_backward(ctx_, k, p.dtype, params(NK_TRAINING), x.data(), dy.data(), w, nullptr,
                             nullptr, mean.data(), invstd.data(), dx_all.data(), dw_all.data(),
                             db_all.data()),
            NK_SUCCESS);
  for (int mask = 0; mask < 8; ++mask) {
    SCOPED_TRACE(testing::Message() << "outputs mask " << mask);
    Buffer dx(p.dtype, numel);
    std::vector<float> dw(static_cast<size_t>(k.c), kNaN), db(dw);
    dx.poison();
    const std::vector<unsigned char> poisoned = dx.bytes();
    ASSERT_EQ(
        channel_backward(ctx_, k, p.dtype, params(NK_TRAINING), x.data(), dy.data(), w, nullptr,
                         nullptr, mean.data(), invstd.data(), mask & 1 ? dx.data() : nullptr,
                         mask & 2 ? dw.data() : nullptr, mask & 4 ? db.data() : nullptr),
        NK_SUCCESS);
    EXPECT_EQ(dx.bytes(), mask & 1 ? dx_all.bytes() : poisoned);
    for (size_t c = 0; c < dw.size(); ++c) {
      if (mask & 2)
        EXPECT_EQ(dw[c], dw_all[c]);
      else
        EXPECT_TRUE(std::isnan(dw[c]));
      if (mask & 4)
        EXPECT_EQ(db[c], db_all[c]);
      else
        EXPECT_TRUE(std::isnan(db[c]));
    }
  }
}

TEST_P(ChannelNormTest, InPlaceAndRepeatedCallsGiveIdenticalBytes) {
  const Param p = GetParam();
  const ChannelCase k = shapes(p.family, p.layout)[0];
  const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
  const std::vector<float> wf = to_f32(rng_.normal(k.c)), bf = to_f32(rng_.normal(k.c));
  const float* w = p.affine ? wf.data() : nullptr;
  const float* b = p.affine ? bf.data() : nullptr;
  Buffer x(p.dtype, rng_.normal(numel, 2, 3)), dy(p.dtype, rng_.normal(numel));
  Buffer y1(p.dtype, numel), y2(p.dtype, numel), dx(p.dtype, numel);
  std::vector<float> mean(static_cast<size_t>(stats)), invstd(mean);
  const nk_norm_params train = params(NK_TRAINING);
  ASSERT_EQ(channel_forward(ctx_, k, p.dtype, train, x.data(), w, b, nullptr, nullptr, nullptr,
                            y1.data(), mean.data(), invstd.data()),
            NK_SUCCESS);
  ASSERT_EQ(channel_forward(ctx_, k, p.dtype, train, x.data(), w, b, nullptr, nullptr, nullptr,
                            y2.data(), nullptr, nullptr),
            NK_SUCCESS);
  EXPECT_EQ(y1.bytes(), y2.bytes()) << "two identical calls differ";
  Buffer inplace = x;
  ASSERT_EQ(channel_forward(ctx_, k, p.dtype, train, inplace.data(), w, b, nullptr, nullptr,
                            nullptr, inplace.data(), nullptr, nullptr),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(inplace.bytes(), y1.bytes()) << "forward with y == x differs";
  ASSERT_EQ(channel_backward(ctx_, k, p.dtype, train, x.data(), dy.data(), w, nullptr, nullptr,
                             mean.data(), invstd.data(), dx.data(), nullptr, nullptr),
            NK_SUCCESS);
  Buffer dinplace = dy;
  ASSERT_EQ(
      channel_backward(ctx_, k, p.dtype, train, x.data(), dinplace.data(), w, nullptr, nullptr,
                       mean.data(), invstd.data(), dinplace.data(), nullptr, nullptr),
      NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(dinplace.bytes(), dx.bytes()) << "backward with dx == dy differs";
}

template <class Keep>
std::vector<Param> params_where(Keep keep) {
  std::vector<Param> out;
  for (const Param& p : all_params())
    if (keep(p)) out.push_back(p);
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, ChannelNormTest, testing::ValuesIn(all_params()), param_name);
INSTANTIATE_TEST_SUITE_P(RunningNorms, ChannelNormInferenceTest,
                         testing::ValuesIn(params_where([](const Param& p) {
                           return p.family != Family::kGroup;
                         })),
                         param_name);
INSTANTIATE_TEST_SUITE_P(PlainF32, ChannelNormInvariantTest,
                         testing::ValuesIn(params_where([](const Param& p) {
                           return !p.affine && p.dtype == NK_F32;
                         })),
                         param_name);
INSTANTIATE_TEST_SUITE_P(Nchw, ChannelNormLayoutTest,
                         testing::ValuesIn(params_where([](const Param& p) {
                           return p.layout == NK_NCHW;
                         })),
                         param_name);
INSTANTIATE_TEST_SUITE_P(Bf16Nhwc, ChannelNormOutputsTest,
                         testing::ValuesIn(params_where([](const Param& p) {
                           return p.layout == NK_NHWC && p.dtype == NK_BF16;
                         })),
                         param_name);

// Large offset (|mean| >> std): the statistics must not cancel catastrophically.
TEST(ChannelNormAccuracy, LargeOffsetKeepsFullPrecision) {
  CpuContext ctx;
  Random rng;
  const ChannelCase k{Family::kBatch, 64, 3, 33, NK_NCHW};
  const int64_t numel = k.n * k.c * k.s;
  Buffer x(NK_F32, rng.normal(numel, 1e4, 1.0)), y(NK_F32, numel);
  std::vector<float> mean(3), invstd(3);
  y.poison();
  ASSERT_EQ(channel_forward(ctx, k, NK_F32, params(NK_TRAINING), x.data(), nullptr, nullptr,
                            nullptr, nullptr, nullptr, y.data(), mean.data(), invstd.data()),
            NK_SUCCESS);
  const ChannelForwardRef ref = channel_forward_training(k, x.values(), nullptr, nullptr, 1e-5);
  // E[x^2] - E[x]^2 in fp32 would lose all digits of a unit variance at mean 1e4 (1e8 vs 1).
  expect_close(y.values(), ref.y, {1e-5, 1e-5}, "y");
  expect_close(to_f64(invstd), ref.invstd, {0, 1e-6}, "save_invstd");
}

// fp16 and bf16 outputs are the fp64 result rounded once: within half an ulp of the dtype.
TEST(ChannelNormAccuracy, HalfPrecisionOutputsAreRoundedOnce) {
  CpuContext ctx;
  Random rng;
  for (nk_dtype dtype : {NK_F16, NK_BF16}) {
    const ChannelCase k{Family::kBatch, 16, 4, 25, NK_NHWC};
    const int64_t numel = k.n * k.c * k.s;
    Buffer x(dtype, rng.normal(numel, 1, 3)), y(dtype, numel);
    y.poison();
    ASSERT_EQ(channel_forward(ctx, k, dtype, params(NK_TRAINING), x.data(), nullptr, nullptr,
                              nullptr, nullptr, nullptr, y.data(), nullptr, nullptr),
              NK_SUCCESS);
    const std::vector<double> ref =
        channel_forward_training(k, x.values(), nullptr, nullptr, 1e-5).y;
    const int mantissa = dtype == NK_F16 ? 10 : 7;
    for (int64_t i = 0; i < numel; ++i) {
      const double r = ref[static_cast<size_t>(i)];
      // ulp of the output near r; f16 spacing stops shrinking at its subnormals (2^-24).
      double ulp = std::ldexp(1.0, std::ilogb(r == 0 ? 1e-30 : r) - mantissa);
      if (dtype == NK_F16) ulp = std::max(ulp, std::ldexp(1.0, -24));
      EXPECT_LE(std::abs(y.get(i) - r), 0.5 * ulp * (1 + 1e-9) + 1e-12)
          << name(dtype) << " y[" << i << "] = " << y.get(i) << ", fp64 " << r;
    }
  }
}

}  // namespace
}  // namespace nkt
