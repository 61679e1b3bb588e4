// Preprocessing normalizers on the CPU: min/max from the accumulator, exact quantiles against a
// sort-based reference written here, z-score / min-max / robust scaling with frozen parameters
// (fit, freeze to a file, load, transform), every zero-spread case in both modes, the checks, and
// L2 normalization of rows. Outputs are poisoned and checked unchanged after failing calls. Also
// how the CUDA backend batches quantile columns (plain C++, checked here without a GPU).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "preprocessing.hpp"  // kernels/
#include "test_support.hpp"

namespace {

using nkt::Buffer;

// numpy's default ('linear') quantile of a column, independently: sort, interpolate.
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double h = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(h), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (h - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

nk_frozen_stats frozen(nk_stats_kind kind, nk_dtype dtype, std::vector<float>& center,
                       std::vector<float>& spread) {
  return nk_frozen_stats{kind, dtype, NK_RUNNING_VAR_BIASED, static_cast<int64_t>(center.size()),
                         100,  0.0,   center.data(),         spread.data()};
}

class Preprocessing : public testing::Test {
 protected:
  nkt::CpuContext ctx_;
  nkt::Random rng_;
};

TEST_F(Preprocessing, MinMaxFromTheAccumulator) {
  nk_stats stats = nullptr;
  ASSERT_EQ(nk_stats_create(ctx_, 2, &stats), NK_SUCCESS);
  std::vector<float> lo(2, NAN), hi(2, NAN);
  EXPECT_EQ(nk_stats_min_max(stats, lo.data(), hi.data()), NK_ERROR_INVALID_VALUE);
  const std::vector<float> a = {3, -1, 7, 4}, b = {-2, 9, 5, 0};  // 2 rows x 2 columns each
  const nk_row_desc d{2, 2, NK_F32, NK_F32};
  ASSERT_EQ(nk_stats_add_columns(stats, &d, a.data()), NK_SUCCESS);
  ASSERT_EQ(nk_stats_add_columns(stats, &d, b.data()), NK_SUCCESS);
  ASSERT_EQ(nk_stats_min_max(stats, lo.data(), hi.data()), NK_SUCCESS);
  EXPECT_EQ(lo, (std::vector<float>{-2, -1}));
  EXPECT_EQ(hi, (std::vector<float>{7, 9}));
  ASSERT_EQ(nk_stats_reset(stats), NK_SUCCESS);
  EXPECT_EQ(nk_stats_min_max(stats, lo.data(), hi.data()), NK_ERROR_INVALID_VALUE)
      << "reset forgets";
  nk_stats_destroy(stats);
}

TEST_F(Preprocessing, QuantilesByHandAndAgainstSorting) {
  // One column [3, 1, 2, 4]: sorted 1 2 3 4; q = 0.25 -> h = 0.75 -> 1.75; median 2.5.
  const std::vector<float> x = {3, 1, 2, 4};
  const std::vector<double> q = {0.0, 0.25, 0.5, 1.0};
  std::vector<float> out(4, NAN);
  const nk_row_desc d{4, 1, NK_F32, NK_F32};
  ASSERT_EQ(nk_quantiles_columns(ctx_, &d, x.data(), q.data(), 4, out.data()), NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(out, (std::vector<float>{1.0f, 1.75f, 2.5f, 4.0f}));
  for (nk_dtype dtype : {NK_F32, NK_BF16}) {
    const int64_t rows = 101, cols = 5;
    const Buffer data(dtype, rng_.normal(rows * cols, 3.0, 4.0));
    const std::vector<double> qs = {0.1, 0.25, 0.5, 0.75, 0.9, 0.333};
    std::vector<float> got(qs.size() * cols, NAN);
    const nk_row_desc dd{rows, cols, dtype, NK_F32};
    ASSERT_EQ(nk_quantiles_columns(ctx_, &dd, data.data(), qs.data(), 6, got.data()), NK_SUCCESS);
    const std::vector<double> v = data.values();
    for (int64_t j = 0; j < cols; ++j) {
      std::vector<double> column;
      for (int64_t r = 0; r < rows; ++r) column.push_back(v[r * cols + j]);
      for (size_t i = 0; i < qs.size(); ++i) {
        EXPECT_NEAR(got[i * cols + j], quantile(column, qs[i]),
                    1e-6 * (1 + std::abs(quantile(column, qs[i]))))
            << "q " << qs[i] << " column " << j;
      }
    }
  }
}

// One row; a NaN column (NaN quantiles, as numpy); an infinity next to the order statistic asked
// for (the order statistic itself, no inf - inf); fp16 input.
TEST_F(Preprocessing, QuantileEdgeCases) {
  const std::vector<double> q = {0.0, 0.5, 1.0};
  std::vector<float> out(6, -7.0f);
  const std::vector<float> one_row = {5, -2};
  const nk_row_desc row{1, 2, NK_F32, NK_F32};
  ASSERT_EQ(nk_quantiles_columns(ctx_, &row, one_row.data(), q.data(), 3, out.data()), NK_SUCCESS);
  EXPECT_EQ(out, (std::vector<float>{5, -2, 5, -2, 5, -2}));
  const std::vector<float> special = {1, NAN, 2, 0, INFINITY, 4};  // 3 rows x 2 columns
  const nk_row_desc three{3, 2, NK_F32, NK_F32};
  ASSERT_EQ(nk_quantiles_columns(ctx_, &three, special.data(), q.data(), 3, out.data()),
            NK_SUCCESS);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[2], 2.0f) << "median of {1, 2, inf} is 2";
  EXPECT_EQ(out[4], INFINITY);
  for (int i : {1, 3, 5}) EXPECT_TRUE(std::isnan(out[i])) << "column with a NaN";
  const Buffer half(NK_F16, std::vector<double>{3, 1, 2, 4});
  const nk_row_desc hd{4, 1, NK_F16, NK_F16};
  std::vector<float> median(1);
  const double mid = 0.5;
  ASSERT_EQ(nk_quantiles_columns(ctx_, &hd, half.data(), &mid, 1, median.data()), NK_SUCCESS);
  EXPECT_EQ(median[0], 2.5f);
}

TEST_F(Preprocessing, QuantileErrorsWriteNothing) {
  const std::vector<float> x = {1, 2, 3, 4};
  const nk_row_desc d{4, 1, NK_F32, NK_F32};
  std::vector<float> out(2, -7.0f);
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    const std::vector<double> q = {0.5, bad};
    EXPECT_EQ(nk_quantiles_columns(ctx_, &d, x.data(), q.data(), 2, out.data()),
              NK_ERROR_INVALID_VALUE);
    EXPECT_NE(std::string(nk_last_error()).find("q[1] = "), std::string::npos) << nk_last_error();
  }
  const std::vector<double> q = {0.5};
  EXPECT_EQ(nk_quantiles_columns(ctx_, &d, x.data(), q.data(), 0, out.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_quantiles_columns(ctx_, &d, nullptr, q.data(), 1, out.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_quantiles_columns(ctx_, &d, x.data(), q.data(), 1, nullptr), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(out, std::vector<float>(2, -7.0f));
}

// Fit each scaler on batches, freeze it in a file, load it, transform a new batch; compare with the
// formula on the loaded parameters.
TEST_F(Preprocessing, FitFreezeLoadTransform) {
  const int64_t rows = 64, cols = 3;
  std::vector<Buffer> batches;
  nk_stats stats = nullptr;
  ASSERT_EQ(nk_stats_create(ctx_, cols, &stats), NK_SUCCESS);
  for (int i = 0; i < 4; ++i) {
    batches.emplace_back(NK_F32, rng_.normal(rows * cols, 10.0 * i, 2.0 + i));
    const nk_row_desc d{rows, cols, NK_F32, NK_F32};
    ASSERT_EQ(nk_stats_add_columns(stats, &d, batches.back().data()), NK_SUCCESS);
  }
  std::vector<float> mean(cols), var(cols), lo(cols), hi(cols);
  ASSERT_EQ(nk_stats_finalize(stats, mean.data(), var.data(), nullptr), NK_SUCCESS);
  ASSERT_EQ(nk_stats_min_max(stats, lo.data(), hi.data()), NK_SUCCESS);
  nk_stats_destroy(stats);
  std::vector<float> range(cols);
  for (int64_t j = 0; j < cols; ++j) range[j] = hi[j] - lo[j];
  const std::vector<double> q = {0.5, 0.25, 0.75};
  std::vector<float> quart(3 * cols), median(cols), iqr(cols);
  const nk_row_desc one{rows, cols, NK_F32, NK_F32};
  ASSERT_EQ(nk_quantiles_columns(ctx_, &one, batches[0].data(), q.data(), 3, quart.data()),
            NK_SUCCESS);
  for (int64_t j = 0; j < cols; ++j) {
    median[j] = quart[j];
    iqr[j] = quart[2 * cols + j] - quart[cols + j];
  }
  char dir[] = "/tmp/normkit_scalers_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/scaler.nkstats";
  struct Fit {
    nk_stats_kind kind;
    std::vector<float>* center;
    std::vector<float>* spread;
  };
  for (const Fit& fit : {Fit{NK_STATS_STANDARDIZE, &mean, &var}, Fit{NK_STATS_MIN_MAX, &lo, &range},
                         Fit{NK_STATS_ROBUST, &median, &iqr}}) {
    SCOPED_TRACE(testing::Message() << "kind " << fit.kind);
    const nk_frozen_stats f = frozen(fit.kind, NK_F32, *fit.center, *fit.spread);
    ASSERT_EQ(nk_frozen_stats_save(path.c_str(), &f), NK_SUCCESS) << nk_last_error();
    nk_frozen_stats loaded{};
    ASSERT_EQ(nk_frozen_stats_load(path.c_str(), &loaded), NK_SUCCESS) << nk_last_error();
    const Buffer x(NK_F32, rng_.normal(rows * cols, 5.0, 3.0));
    Buffer y(NK_F32, rows * cols);
    y.poison();
    ASSERT_EQ(nk_scale_columns(ctx_, &one, &loaded, NK_ZERO_SPREAD_ERROR, x.data(), y.data()),
              NK_SUCCESS)
        << nk_last_error();
    std::vector<double> expected(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        const double scale = fit.kind == NK_STATS_STANDARDIZE ? std::sqrt(double{loaded.spread[j]})
                                                              : loaded.spread[j];
        expected[r * cols + j] = (x.get(r * cols + j) - loaded.center[j]) / scale;
      }
    }
    nkt::expect_close(y.values(), expected, nkt::output_tolerance(NK_F32), "y");
    // In place gives the same bytes.
    Buffer inplace = x;
    ASSERT_EQ(
        nk_scale_columns(ctx_, &one, &loaded, NK_ZERO_SPREAD_ERROR, inplace.data(), inplace.data()),
        NK_SUCCESS);
    EXPECT_EQ(inplace.bytes(), y.bytes());
    nk_frozen_stats_release(&loaded);
  }
  std::remove(path.c_str());
  rmdir(dir);
}

// A zero spread (constant feature) for every kind: an error naming the feature and writing
// nothing, or zeros for that feature only.
TEST_F(Preprocessing, ZeroSpreadInBothModes) {
  const nk_row_desc d{4, 2, NK_F32, NK_F32};
  const std::vector<float> x = {1, 5, 2, 5, 3, 5, 4, 5};  // column 1 is constant
  for (nk_stats_kind kind : {NK_STATS_STANDARDIZE, NK_STATS_MIN_MAX, NK_STATS_ROBUST}) {
    SCOPED_TRACE(testing::Message() << "kind " << kind);
    std::vector<float> center = {2.5f, 5.0f}, spread = {1.25f, 0.0f};
    const nk_frozen_stats f = frozen(kind, NK_F32, center, spread);
    std::vector<float> y(8, -7.0f);
    EXPECT_EQ(nk_scale_columns(ctx_, &d, &f, NK_ZERO_SPREAD_ERROR, x.data(), y.data()),
              NK_ERROR_INVALID_VALUE);
    EXPECT_NE(std::string(nk_last_error()).find("feature 1 has no spread"), std::string::npos)
        << nk_last_error();
    EXPECT_EQ(y, std::vector<float>(8, -7.0f));
    ASSERT_EQ(nk_scale_columns(ctx_, &d, &f, NK_ZERO_SPREAD_ZERO, x.data(), y.data()), NK_SUCCESS);
    const double scale = kind == NK_STATS_STANDARDIZE ? std::sqrt(1.25) : 1.25;
    for (int r = 0; r < 4; ++r) {
      EXPECT_FLOAT_EQ(y[2 * r], static_cast<float>((x[2 * r] - 2.5) / scale));
      EXPECT_EQ(y[2 * r + 1], 0.0f) << "no inf, no NaN";
    }
  }
}

TEST_F(Preprocessing, ScaleRefusesMismatches) {
  std::vector<float> center = {0, 0}, spread = {1, 1};
  const std::vector<float> x(8, 1.0f);
  std::vector<float> y(8, -7.0f);
  const nk_row_desc d{4, 2, NK_F32, NK_F32};
  nk_frozen_stats f = frozen(NK_STATS_STANDARDIZE, NK_BF16, center, spread);
  EXPECT_EQ(nk_scale_columns(ctx_, &d, &f, NK_ZERO_SPREAD_ERROR, x.data(), y.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("dtype = bf16 in the frozen statistics but f32"),
            std::string::npos)
      << nk_last_error();
  f = frozen(NK_STATS_BATCH_NORM, NK_F32, center, spread);
  EXPECT_EQ(nk_scale_columns(ctx_, &d, &f, NK_ZERO_SPREAD_ERROR, x.data(), y.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("NK_STATS_BATCH_NORM: nk_scale_columns takes"),
            std::string::npos)
      << nk_last_error();
  f = frozen(NK_STATS_MIN_MAX, NK_F32, center, spread);
  const nk_row_desc three{4, 3, NK_F32, NK_F32};
  const std::vector<float> x3(12, 1.0f);
  std::vector<float> y3(12, -7.0f);
  EXPECT_EQ(nk_scale_columns(ctx_, &three, &f, NK_ZERO_SPREAD_ERROR, x3.data(), y3.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("features = 2 in the frozen statistics but 3"),
            std::string::npos)
      << nk_last_error();
  EXPECT_EQ(nk_scale_columns(ctx_, &d, &f, static_cast<nk_zero_spread>(5), x.data(), y.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_scale_columns(ctx_, &d, &f, NK_ZERO_SPREAD_ERROR, x.data(),
                             const_cast<float*>(x.data()) + 1),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(y, std::vector<float>(8, -7.0f));
  EXPECT_EQ(y3, std::vector<float>(12, -7.0f));
}

TEST_F(Preprocessing, L2NormalizeRows) {
  // [3, 4] has norm 5; a zero row stays zero; a tiny row is divided by eps.
  const std::vector<float> x = {3, 4, 0, 0, 1e-9f, 0};
  std::vector<float> y(6, NAN);
  const nk_row_desc d{3, 2, NK_F32, NK_F32};
  ASSERT_EQ(nk_l2_normalize_rows(ctx_, &d, 1e-6, x.data(), y.data()), NK_SUCCESS)
      << nk_last_error();
  EXPECT_FLOAT_EQ(y[0], 0.6f);
  EXPECT_FLOAT_EQ(y[1], 0.8f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_FLOAT_EQ(y[4], 1e-3f);
  const Buffer big(NK_BF16, rng_.normal(7 * 33, 1.0, 3.0));
  Buffer out(NK_BF16, 7 * 33);
  out.poison();
  const nk_row_desc bd{7, 33, NK_BF16, NK_BF16};
  ASSERT_EQ(nk_l2_normalize_rows(ctx_, &bd, 1e-12, big.data(), out.data()), NK_SUCCESS);
  for (int r = 0; r < 7; ++r) {
    double norm = 0;
    for (int j = 0; j < 33; ++j) norm += out.get(r * 33 + j) * out.get(r * 33 + j);
    EXPECT_NEAR(std::sqrt(norm), 1.0, 0.01) << "row " << r;
  }
  Buffer inplace = big;
  ASSERT_EQ(nk_l2_normalize_rows(ctx_, &bd, 1e-12, inplace.data(), inplace.data()), NK_SUCCESS);
  EXPECT_EQ(inplace.bytes(), out.bytes()) << "in place";
  std::vector<float> untouched(6, -7.0f);
  for (double eps : {0.0, -1.0, std::nan("")}) {
    EXPECT_EQ(nk_l2_normalize_rows(ctx_, &d, eps, x.data(), untouched.data()),
              NK_ERROR_INVALID_VALUE);
  }
  EXPECT_EQ(untouched, std::vector<float>(6, -7.0f));
}

// Every batch is whole columns, at least one; a sort holds fewer than 2^31 keys (the segmented
// sort's int offsets) and no more than kQuantileBatchKeys unless a single column is longer; and a
// batch is as wide as that allows.
TEST(QuantileBatches, WholeColumnsFewerThan2To31KeysPerSort) {
  using nk::cuda::kMaxQuantileRows;
  using nk::cuda::kQuantileBatchKeys;
  for (int64_t rows : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4097}, kQuantileBatchKeys - 1,
                       kQuantileBatchKeys, kQuantileBatchKeys + 1, kMaxQuantileRows}) {
    for (int64_t cols : {int64_t{1}, int64_t{2}, int64_t{16400}, int64_t{1} << 40}) {
      SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
      const int64_t batch = nk::cuda::quantile_batch_columns(rows, cols);
      ASSERT_GE(batch, 1);
      ASSERT_LE(batch, cols);
      ASSERT_LE(batch * rows, kMaxQuantileRows);
      if (batch > 1) {
        ASSERT_LE(batch * rows, kQuantileBatchKeys);
      }
      if (batch < cols) {
        ASSERT_GT((batch + 1) * rows, kQuantileBatchKeys);
      }
    }
  }
}

}  // namespace
