// The statistics accumulator on the CPU: batches fed one by one against fp64 two-pass statistics
// of all the data, merges of accumulators, both layouts and the columns pattern, fp16/bf16 inputs,
// precise batch-norm statistics written into running buffers (the variance of all the data, not
// the mean of per-batch variances), dataset standardization with frozen values, and every error,
// with the accumulator unchanged after a failing call.
#include <cmath>
#include <vector>

#include "test_support.hpp"

namespace {

using nkt::Buffer;

struct Exact {
  std::vector<double> mean, var;  // biased
};

// Per-channel statistics of several N x C x S NCHW batches together, two-pass in fp64.
Exact exact_channels(const std::vector<std::vector<double>>& batches, int64_t n, int64_t c,
                     int64_t s) {
  Exact e{std::vector<double>(c, 0.0), std::vector<double>(c, 0.0)};
  double count = 0;
  for (const auto& b : batches)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < c; ++j)
        for (int64_t k = 0; k < s; ++k) e.mean[j] += b[(i * c + j) * s + k];
  count = static_cast<double>(batches.size() * n * s);
  for (double& m : e.mean) m /= count;
  for (const auto& b : batches)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < c; ++j)
        for (int64_t k = 0; k < s; ++k) {
          const double d = b[(i * c + j) * s + k] - e.mean[j];
          e.var[j] += d * d / count;
        }
  return e;
}

class StatsTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(nk_stats_create(ctx_, 3, &stats_), NK_SUCCESS) << nk_last_error();
  }
  void TearDown() override { nk_stats_destroy(stats_); }
  std::vector<float> finalize_mean() {
    std::vector<float> m(3, NAN);
    EXPECT_EQ(nk_stats_finalize(stats_, m.data(), nullptr, nullptr), NK_SUCCESS) << nk_last_error();
    return m;
  }
  nkt::CpuContext ctx_;
  nkt::Random rng_;
  nk_stats stats_ = nullptr;
};

TEST_F(StatsTest, HandComputed) {
  // Channel 0 sees {1, 3} then {5, 7}: mean 4, biased var 5, unbiased 20/3.
  const nk_act_desc d{2, 3, 1, NK_NCHW, NK_F32};
  const std::vector<float> a = {1, 10, 0, 3, 20, 0}, b = {5, 30, 0, 7, 40, 2};
  ASSERT_EQ(nk_stats_add_channels(stats_, &d, a.data()), NK_SUCCESS);
  ASSERT_EQ(nk_stats_add_channels(stats_, &d, b.data()), NK_SUCCESS);
  int64_t count = 0;
  ASSERT_EQ(nk_stats_count(stats_, &count), NK_SUCCESS);
  EXPECT_EQ(count, 4);
  std::vector<float> mean(3, NAN), var(3, NAN), unbiased(3, NAN);
  ASSERT_EQ(nk_stats_finalize(stats_, mean.data(), var.data(), unbiased.data()), NK_SUCCESS);
  EXPECT_FLOAT_EQ(mean[0], 4.0f);
  EXPECT_FLOAT_EQ(var[0], 5.0f);
  EXPECT_FLOAT_EQ(unbiased[0], 20.0f / 3);
  EXPECT_FLOAT_EQ(mean[1], 25.0f);  // {10, 20, 30, 40}
  EXPECT_FLOAT_EQ(var[1], 125.0f);  // (225 + 25 + 25 + 225) / 4
  EXPECT_FLOAT_EQ(mean[2], 0.5f);   // {0, 0, 0, 2}
  EXPECT_FLOAT_EQ(var[2], 0.75f);
}

// Many batches with drifting means, fed one by one, in both layouts: the exact statistics of all.
TEST_F(StatsTest, BatchesOneByOneMatchAllTheData) {
  for (nk_layout layout : {NK_NCHW, NK_NHWC}) {
    ASSERT_EQ(nk_stats_reset(stats_), NK_SUCCESS);
    const int64_t n = 4, c = 3, s = 7;
    std::vector<std::vector<double>> batches;
    for (int i = 0; i < 9; ++i) {
      std::vector<double> nchw =
          nkt::rounded(rng_.normal(n * c * s, 1e3 + 10 * i, 1.0 + i), NK_F32);
      batches.push_back(nchw);
      std::vector<double> stored = nchw;
      if (layout == NK_NHWC) {
        for (int64_t a = 0; a < n; ++a)
          for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t k = 0; k < s; ++k)
              stored[(a * s + k) * c + ch] = nchw[(a * c + ch) * s + k];
      }
      const Buffer x(NK_F32, stored);
      const nk_act_desc d{n, c, s, layout, NK_F32};
      ASSERT_EQ(nk_stats_add_channels(stats_, &d, x.data()), NK_SUCCESS) << nk_last_error();
    }
    const Exact e = exact_channels(batches, n, c, s);
    std::vector<float> mean(3), var(3);
    ASSERT_EQ(nk_stats_finalize(stats_, mean.data(), var.data(), nullptr), NK_SUCCESS);
    nkt::expect_close(std::vector<double>(mean.begin(), mean.end()), e.mean, {0, 1e-7}, "mean");
    nkt::expect_close(std::vector<double>(var.begin(), var.end()), e.var, {0, 1e-6}, "var");
  }
}

// Two accumulators merged equal one that saw everything; columns are channels of an N x C batch.
TEST_F(StatsTest, MergeAndColumns) {
  nk_stats other = nullptr, all = nullptr;
  ASSERT_EQ(nk_stats_create(ctx_, 3, &other), NK_SUCCESS);
  ASSERT_EQ(nk_stats_create(ctx_, 3, &all), NK_SUCCESS);
  for (int i = 0; i < 6; ++i) {
    const Buffer x(NK_BF16, rng_.normal(5 * 3, i, 2.0));
    const nk_row_desc d{5, 3, NK_BF16, NK_BF16};
    ASSERT_EQ(nk_stats_add_columns(i % 2 ? stats_ : other, &d, x.data()), NK_SUCCESS)
        << nk_last_error();
    ASSERT_EQ(nk_stats_add_columns(all, &d, x.data()), NK_SUCCESS);
  }
  ASSERT_EQ(nk_stats_merge(stats_, other), NK_SUCCESS) << nk_last_error();
  std::vector<float> m1(3), v1(3), m2(3), v2(3);
  ASSERT_EQ(nk_stats_finalize(stats_, m1.data(), v1.data(), nullptr), NK_SUCCESS);
  ASSERT_EQ(nk_stats_finalize(all, m2.data(), v2.data(), nullptr), NK_SUCCESS);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(m1[c], m2[c], 1e-6 * (1 + std::abs(m2[c])));
    EXPECT_NEAR(v1[c], v2[c], 1e-6 * v2[c]);
  }
  int64_t count = 0;
  ASSERT_EQ(nk_stats_count(stats_, &count), NK_SUCCESS);
  EXPECT_EQ(count, 30);
  nk_stats_destroy(other);
  nk_stats_destroy(all);
}

// Precise batch-norm statistics: after training, recompute the population statistics over the
// batches and write them into the running buffers. With batches of different means, the variance
// of all the data exceeds the mean of the per-batch variances; the running buffers get the former.
TEST_F(StatsTest, PreciseBatchNormStatistics) {
  const int64_t n = 8, c = 3, s = 4;
  std::vector<std::vector<double>> batches;
  for (int i = 0; i < 5; ++i) {
    batches.push_back(nkt::rounded(rng_.normal(n * c * s, 3.0 * i, 1.0), NK_F32));
    const Buffer x(NK_F32, batches.back());
    const nk_act_desc d{n, c, s, NK_NCHW, NK_F32};
    ASSERT_EQ(nk_stats_add_channels(stats_, &d, x.data()), NK_SUCCESS);
  }
  std::vector<float> running_mean(3, 0.0f), running_var(3, 1.0f);
  ASSERT_EQ(nk_stats_finalize(stats_, running_mean.data(), nullptr, running_var.data()),
            NK_SUCCESS);
  const Exact all = exact_channels(batches, n, c, s);
  const double count = 5.0 * n * s;
  for (int ch = 0; ch < 3; ++ch) {
    EXPECT_NEAR(running_mean[ch], all.mean[ch], 1e-5);
    EXPECT_NEAR(running_var[ch], all.var[ch] * count / (count - 1), 1e-4);
    double mean_of_batch_vars = 0;
    for (const auto& b : batches) mean_of_batch_vars += exact_channels({b}, n, c, s).var[ch] / 5;
    EXPECT_GT(running_var[ch], 5 * mean_of_batch_vars) << "the means differ by 3 per batch";
  }
}

// Dataset standardization: fit over batches, then transform with the frozen values through batch
// norm inference (no affine, eps 0): the whole dataset comes out with mean 0 and variance 1.
TEST_F(StatsTest, DatasetStandardization) {
  std::vector<Buffer> data;
  for (int i = 0; i < 4; ++i) {
    data.emplace_back(NK_F32, rng_.normal(10 * 3, 50.0 - 7 * i, 4.0 + i));
    const nk_row_desc d{10, 3, NK_F32, NK_F32};
    ASSERT_EQ(nk_stats_add_columns(stats_, &d, data.back().data()), NK_SUCCESS);
  }
  std::vector<float> mean(3), var(3);
  ASSERT_EQ(nk_stats_finalize(stats_, mean.data(), var.data(), nullptr), NK_SUCCESS);
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  p.eps = 0.0;
  std::vector<std::vector<double>> out;
  for (const Buffer& x : data) {
    Buffer y(NK_F32, 30);
    const nk_act_desc d{10, 3, 1, NK_NHWC, NK_F32};  // rows x cols is N x C with S = 1
    ASSERT_EQ(nk_batch_norm_forward(ctx_, &d, &p, x.data(), nullptr, nullptr, mean.data(),
                                    var.data(), nullptr, y.data(), nullptr, nullptr),
              NK_SUCCESS);
    std::vector<double> nchw(30);
    for (int r = 0; r < 10; ++r)
      for (int ch = 0; ch < 3; ++ch) nchw[ch + 3 * r] = y.get(r * 3 + ch);
    out.push_back(nchw);
  }
  const Exact e = exact_channels(out, 10, 3, 1);
  for (int ch = 0; ch < 3; ++ch) {
    EXPECT_NEAR(e.mean[ch], 0.0, 1e-5);
    EXPECT_NEAR(e.var[ch], 1.0, 1e-5);
  }
}

TEST_F(StatsTest, ErrorsChangeNothing) {
  const nk_act_desc d{2, 3, 2, NK_NCHW, NK_F32};
  const Buffer x(NK_F32, rng_.normal(12));
  ASSERT_EQ(nk_stats_add_channels(stats_, &d, x.data()), NK_SUCCESS);
  const std::vector<float> before = finalize_mean();
  const nk_act_desc wrong{2, 4, 2, NK_NCHW, NK_F32};
  const Buffer x4(NK_F32, rng_.normal(16));
  EXPECT_EQ(nk_stats_add_channels(stats_, &wrong, x4.data()), NK_ERROR_BAD_SHAPE);
  EXPECT_NE(std::string(nk_last_error()).find("4 features but the accumulator 3"),
            std::string::npos);
  EXPECT_EQ(nk_stats_add_channels(stats_, &d, nullptr), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_stats_add_channels(stats_, &d, static_cast<const char*>(x.data()) + 2),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_stats_add_channels(stats_, nullptr, x.data()), NK_ERROR_INVALID_VALUE);
  const nk_row_desc rows{4, 0, NK_F32, NK_F32};
  EXPECT_EQ(nk_stats_add_columns(stats_, &rows, x.data()), NK_ERROR_BAD_SHAPE);
  EXPECT_EQ(nk_stats_merge(stats_, stats_), NK_ERROR_INVALID_VALUE);
  nk_stats four = nullptr;
  ASSERT_EQ(nk_stats_create(ctx_, 4, &four), NK_SUCCESS);
  EXPECT_EQ(nk_stats_merge(stats_, four), NK_ERROR_BAD_SHAPE);
  EXPECT_EQ(nk_stats_finalize(four, nullptr, nullptr, nullptr), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("no samples"), std::string::npos);
  nk_stats_destroy(four);
  EXPECT_EQ(finalize_mean(), before) << "a failing call changed the accumulator";
  EXPECT_EQ(nk_stats_add_channels(nullptr, &d, x.data()), NK_ERROR_INVALID_VALUE);
  nk_stats created = nullptr;
  EXPECT_EQ(nk_stats_create(ctx_, 0, &created), NK_ERROR_BAD_SHAPE);
  EXPECT_EQ(nk_stats_create(nullptr, 3, &created), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_stats_create(ctx_, 3, nullptr), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(created, nullptr);
  EXPECT_EQ(nk_stats_destroy(nullptr), NK_SUCCESS);
}

TEST_F(StatsTest, OverlappingOutputsAndNaN) {
  const nk_act_desc d{2, 3, 1, NK_NCHW, NK_F32};
  const std::vector<float> x = {1, NAN, 3, 4, 5, 6};
  ASSERT_EQ(nk_stats_add_channels(stats_, &d, x.data()), NK_SUCCESS);
  std::vector<float> one(3, -7.0f);
  EXPECT_EQ(nk_stats_finalize(stats_, one.data(), one.data(), nullptr), NK_ERROR_INVALID_VALUE)
      << "mean == var";
  EXPECT_EQ(one, std::vector<float>(3, -7.0f));
  std::vector<float> lo(3), hi(3);
  ASSERT_EQ(nk_stats_min_max(stats_, lo.data(), hi.data()), NK_SUCCESS);
  EXPECT_EQ(lo[0], 1.0f);
  EXPECT_TRUE(std::isnan(lo[1]) && std::isnan(hi[1]))
      << "NaN propagates to min and max as to the mean";
  EXPECT_EQ(nk_stats_merge(nullptr, stats_), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("into is NULL"), std::string::npos);
}

TEST_F(StatsTest, UnbiasedNeedsTwoSamples) {
  const nk_act_desc d{1, 3, 1, NK_NCHW, NK_F32};
  const std::vector<float> x = {1, 2, 3};
  ASSERT_EQ(nk_stats_add_channels(stats_, &d, x.data()), NK_SUCCESS);
  std::vector<float> var(3, -1.0f), unbiased(3, -1.0f);
  EXPECT_EQ(nk_stats_finalize(stats_, nullptr, var.data(), unbiased.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(var, std::vector<float>(3, -1.0f)) << "nothing is written by a failing finalize";
  EXPECT_EQ(nk_stats_finalize(stats_, nullptr, var.data(), nullptr), NK_SUCCESS);
  EXPECT_EQ(var, std::vector<float>(3, 0.0f));
}

}  // namespace
