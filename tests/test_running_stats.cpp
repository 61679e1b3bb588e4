// Running statistics of batch and instance norm over several training steps, against expectations
// computed here from each batch's own fp64 statistics: exponential momentum, PyTorch's cumulative
// average (momentum=None), the Keras convention (biased variance, momentum 1 - k), the unbiased
// factor n/(n-1), instance norm's batch mean of per-instance statistics, num_batches_tracked, and
// convergence to the population statistics.
#include <cmath>
#include <vector>

#include "channel_ops.hpp"
#include "test_support.hpp"

namespace nkt {
namespace {

struct Step {
  std::vector<double> mean, var;  // per channel: what enters the running average this step
};

// Per-channel batch statistics of one batch as the running update sees them: batch norm takes the
// channel's mean and variance; instance norm the batch mean of the per-instance ones.
Step batch_statistics(const ChannelCase& k, const std::vector<double>& x, bool unbiased) {
  const ChannelForwardRef r = channel_forward_training(k, x, nullptr, nullptr, 0.0);
  const double count = k.family == Family::kBatch ? double(k.n * k.s) : double(k.s);
  const double factor = unbiased ? count / (count - 1) : 1.0;
  Step st{std::vector<double>(k.c, 0.0), std::vector<double>(k.c, 0.0)};
  const int64_t instances = k.family == Family::kBatch ? 1 : k.n;
  for (int64_t n = 0; n < instances; ++n) {
    for (int64_t c = 0; c < k.c; ++c) {
      const auto j = static_cast<size_t>(stat_index(k, n, c));
      st.mean[c] += r.mean[j] / double(instances);
      st.var[c] += r.var[j] * factor / double(instances);
    }
  }
  return st;
}

struct Scenario {
  Family family;
  nk_momentum_mode mode;
  nk_running_var convention;
  double momentum;
};

// Runs `steps` training steps on batches with shifting means and checks running_mean,
// running_var and num_batches_tracked after every step.
void run_steps(const Scenario& sc, const ChannelCase& k, int steps) {
  CpuContext ctx;
  Random rng;
  const int64_t numel = k.n * k.c * k.s;
  std::vector<float> rm(k.c, 0.0f), rv(k.c, 1.0f);  // PyTorch's initial buffers
  std::vector<double> exp_mean(k.c, 0.0), exp_var(k.c, 1.0);
  int64_t tracked = 0;
  nk_norm_params p = nk_norm_params_default();
  p.momentum_mode = sc.mode;
  p.running_var = sc.convention;
  p.momentum = sc.momentum;
  for (int step = 1; step <= steps; ++step) {
    SCOPED_TRACE(testing::Message() << "step " << step);
    Buffer x(NK_F32, rng.normal(numel, 2.0 * step - 5.0, 0.5 + step)), y(NK_F32, numel);
    ASSERT_EQ(channel_forward(ctx, k, NK_F32, p, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                              &tracked, y.data(), nullptr, nullptr),
              NK_SUCCESS)
        << nk_last_error();
    const Step st = batch_statistics(k, x.values(), sc.convention == NK_RUNNING_VAR_UNBIASED);
    const double m = sc.mode == NK_MOMENTUM_CUMULATIVE ? 1.0 / step : sc.momentum;
    for (int64_t c = 0; c < k.c; ++c) {
      exp_mean[c] = (1 - m) * exp_mean[c] + m * st.mean[c];
      exp_var[c] = (1 - m) * exp_var[c] + m * st.var[c];
    }
    EXPECT_EQ(tracked, step);
    // fp32 storage of the buffers between steps: a few fp32 roundings of drift.
    expect_close(std::vector<double>(rm.begin(), rm.end()), exp_mean, {1e-5, 1e-5}, "running_mean");
    expect_close(std::vector<double>(rv.begin(), rv.end()), exp_var, {1e-5, 1e-5}, "running_var");
  }
}

TEST(RunningStats, BatchNormExponentialMomentumUnbiased) {
  run_steps({Family::kBatch, NK_MOMENTUM_EXPONENTIAL, NK_RUNNING_VAR_UNBIASED, 0.1},
            {Family::kBatch, 4, 3, 5, NK_NCHW}, 6);
}

TEST(RunningStats, BatchNormCumulativeAverage) {
  run_steps({Family::kBatch, NK_MOMENTUM_CUMULATIVE, NK_RUNNING_VAR_UNBIASED, 0.0},
            {Family::kBatch, 3, 2, 4, NK_NHWC}, 5);
}

TEST(RunningStats, BatchNormKerasConvention) {
  // Keras BatchNormalization(momentum=0.99): moving = 0.99 * moving + 0.01 * batch, biased var.
  run_steps({Family::kBatch, NK_MOMENTUM_EXPONENTIAL, NK_RUNNING_VAR_BIASED, 1 - 0.99},
            {Family::kBatch, 5, 2, 3, NK_NHWC}, 4);
}

TEST(RunningStats, InstanceNormAveragesPerInstanceStatistics) {
  run_steps({Family::kInstance, NK_MOMENTUM_EXPONENTIAL, NK_RUNNING_VAR_UNBIASED, 0.3},
            {Family::kInstance, 3, 2, 6, NK_NCHW}, 4);
}

TEST(RunningStats, InstanceNormCumulativeBiased) {
  run_steps({Family::kInstance, NK_MOMENTUM_CUMULATIVE, NK_RUNNING_VAR_BIASED, 0.0},
            {Family::kInstance, 2, 3, 5, NK_NHWC}, 4);
}

// The cumulative average after k steps is the plain average of the k batch statistics.
TEST(RunningStats, CumulativeAverageEqualsArithmeticMean) {
  CpuContext ctx;
  Random rng;
  const ChannelCase k{Family::kBatch, 2, 1, 3, NK_NCHW};
  std::vector<float> rm = {123.0f}, rv = {456.0f};  // overwritten entirely at the first step
  int64_t tracked = 0;
  nk_norm_params p = nk_norm_params_default();
  p.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  double sum_mean = 0, sum_var = 0;
  for (int step = 1; step <= 4; ++step) {
    const std::vector<double> xv = rounded(rng.normal(6, step, 1), NK_F32);
    Buffer x(NK_F32, xv), y(NK_F32, 6);
    ASSERT_EQ(channel_forward(ctx, k, NK_F32, p, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                              &tracked, y.data(), nullptr, nullptr),
              NK_SUCCESS);
    double mean = 0, sq = 0;
    for (double v : xv) mean += v / 6;
    for (double v : xv) sq += (v - mean) * (v - mean);
    sum_mean += mean;
    sum_var += sq / 5;  // unbiased over the 6 values
  }
  EXPECT_EQ(tracked, 4);
  EXPECT_NEAR(rm[0], sum_mean / 4, 1e-5 * (1 + std::abs(sum_mean)));
  EXPECT_NEAR(rv[0], sum_var / 4, 1e-5 * (1 + sum_var));
}

// Two values per channel: the unbiased variance is twice the biased one.
TEST(RunningStats, UnbiasedFactorForTwoValues) {
  CpuContext ctx;
  const ChannelCase k{Family::kBatch, 2, 1, 1, NK_NCHW};
  const std::vector<float> x = {1.0f, 5.0f};  // mean 3, biased var 4, unbiased 8
  std::vector<float> y(2), rm = {0}, rv = {0};
  nk_norm_params p = nk_norm_params_default();
  p.momentum = 1.0;  // running statistics become the batch's
  ASSERT_EQ(channel_forward(ctx, k, NK_F32, p, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                            nullptr, y.data(), nullptr, nullptr),
            NK_SUCCESS);
  EXPECT_EQ(rm[0], 3.0f);
  EXPECT_EQ(rv[0], 8.0f);
  p.running_var = NK_RUNNING_VAR_BIASED;
  ASSERT_EQ(channel_forward(ctx, k, NK_F32, p, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                            nullptr, y.data(), nullptr, nullptr),
            NK_SUCCESS);
  EXPECT_EQ(rv[0], 4.0f);
}

TEST(RunningStats, MomentumZeroLeavesBuffersAndCountsTheBatch) {
  CpuContext ctx;
  Random rng;
  const ChannelCase k{Family::kBatch, 4, 2, 3, NK_NHWC};
  Buffer x(NK_F32, rng.normal(24, 3, 2)), y(NK_F32, 24);
  std::vector<float> rm = {0.25f, -1.5f}, rv = {2.0f, 0.5f};
  const std::vector<float> rm0 = rm, rv0 = rv;
  int64_t tracked = 41;
  nk_norm_params p = nk_norm_params_default();
  p.momentum = 0.0;
  ASSERT_EQ(channel_forward(ctx, k, NK_F32, p, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                            &tracked, y.data(), nullptr, nullptr),
            NK_SUCCESS);
  EXPECT_EQ(rm, rm0);
  EXPECT_EQ(rv, rv0);
  EXPECT_EQ(tracked, 42);
}

TEST(RunningStats, CounterAdvancesWithoutRunningBuffers) {
  CpuContext ctx;
  Random rng;
  const ChannelCase k{Family::kBatch, 3, 2, 2, NK_NCHW};
  Buffer x(NK_F32, rng.normal(12)), y(NK_F32, 12);
  int64_t tracked = 0;
  const nk_norm_params p = nk_norm_params_default();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(channel_forward(ctx, k, NK_F32, p, x.data(), nullptr, nullptr, nullptr, nullptr,
                              &tracked, y.data(), nullptr, nullptr),
              NK_SUCCESS);
  }
  EXPECT_EQ(tracked, 3);
}

// Many steps on data of a fixed distribution: the running statistics approach the population's.
TEST(RunningStats, ConvergesToPopulationStatistics) {
  CpuContext ctx;
  Random rng;
  const ChannelCase k{Family::kBatch, 64, 2, 4, NK_NCHW};
  const int64_t numel = k.n * k.c * k.s;
  std::vector<float> rm(2, 0.0f), rv(2, 1.0f);
  const nk_norm_params p = nk_norm_params_default();  // momentum 0.1
  for (int step = 0; step < 150; ++step) {
    Buffer x(NK_F32, rng.normal(numel, 5.0, 2.0)), y(NK_F32, numel);
    ASSERT_EQ(channel_forward(ctx, k, NK_F32, p, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                              nullptr, y.data(), nullptr, nullptr),
              NK_SUCCESS);
  }
  // Each batch mean has std 2/sqrt(256) = 0.125; the exponential average shrinks it by
  // sqrt(0.1/1.9) to ~0.03, the variance's to ~0.08. Bounds are > 5 standard deviations.
  for (int c = 0; c < 2; ++c) {
    EXPECT_NEAR(rm[c], 5.0, 0.15);
    EXPECT_NEAR(rv[c], 4.0, 0.45);
  }
}

}  // namespace
}  // namespace nkt
