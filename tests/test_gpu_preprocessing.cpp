// The preprocessing normalizers on the CUDA backend, checked against the CPU backend on fresh
// random data for fp32, fp16 and bf16 over shapes from one element to a few thousand rows:
// quantiles (ties, a NaN column, fixed and random q) and column scaling must match bit for bit, L2
// normalization to within one unit in the last place of the dtype. Device outputs are poisoned
// before every call and every element is compared; misaligned pointers, in-place calls, both
// zero-spread modes, the workspace rules of these ops and the CUDA-only refusal are covered.
// Skipped, with the reason, without a CUDA device.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if NORMKIT_TEST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "gpu_support.hpp"
#include "test_support.hpp"

namespace nkt {
namespace {

struct Shape {
  int64_t rows, cols;
};

std::vector<Shape> shapes() {
  if (reduced_gpu_tests()) return {{1, 1}, {1, 9}, {6, 1}, {33, 17}, {257, 3}};
  return {{1, 1},    {1, 37},     {7, 1},     {2, 3},    {33, 17},  {101, 64},
          {4099, 3}, {3001, 129}, {17, 1000}, {3, 5000}, {2, 70001}};
}

// Elements of two buffers of the same dtype with different bytes, the first few reported.
void expect_same_bits(const Buffer& actual, const Buffer& expected, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  const size_t elem = elem_size(actual.dtype());
  int64_t failures = 0;
  for (int64_t i = 0; i < actual.size(); ++i) {
    if (std::memcmp(actual.bytes().data() + i * elem, expected.bytes().data() + i * elem, elem)) {
      if (++failures <= 5) {
        ADD_FAILURE() << what << "[" << i << "] = " << actual.get(i) << ", CPU backend "
                      << expected.get(i) << " (bits differ)";
      }
    }
  }
  if (failures > 5) ADD_FAILURE() << what << ": " << failures << " elements differ in all";
}

class GpuPreprocessing : public GpuTest, public testing::WithParamInterface<nk_dtype> {
 protected:
  nk_row_desc desc(const Shape& s) const { return {s.rows, s.cols, GetParam(), GetParam()}; }

  // Quantile input: every third column holds ties (a few values, none of them zero: the order of
  // -0 and +0 is not specified), column 1 a NaN when there are two columns or more.
  Buffer quantile_input(const Shape& s) {
    std::vector<double> v = rng_.normal(s.rows * s.cols, 1.0, 3.0);
    const std::vector<double> u = rng_.uniform(s.rows * s.cols, 1.0, 6.0);
    for (int64_t i = 0; i < s.rows * s.cols; ++i) {
      if (i % s.cols % 3 == 0) v[i] = std::floor(u[i]) - 3.5;
    }
    if (s.cols >= 2) v[(s.rows / 2) * s.cols + 1] = NAN;
    return Buffer(GetParam(), v);
  }

  std::vector<double> quantile_levels() {
    std::vector<double> q = {0.0, 0.25, 0.5, 0.75, 1.0};
    for (double r : rng_.uniform(4, 0.0, 1.0)) q.push_back(r);
    return q;
  }

  // Quantiles on both backends, device pointers `offset` elements past their allocation.
  void check_quantiles(const Shape& s, int64_t x_offset, int64_t out_offset) {
    const nk_row_desc d = desc(s);
    const Buffer x = quantile_input(s);
    const std::vector<double> q = quantile_levels();
    const int64_t nq = static_cast<int64_t>(q.size());
    Buffer expected(NK_F32, nq * s.cols);
    ASSERT_EQ(nk_quantiles_columns(cpu_, &d, x.data(), q.data(), nq, expected.f32()), NK_SUCCESS)
        << nk_last_error();
    DeviceBuffer x_dev(x, x_offset), out(NK_F32, nq * s.cols, out_offset);
    ASSERT_EQ(nk_quantiles_columns(gpu_, &d, x_dev.data(), q.data(), nq, out.f32()), NK_SUCCESS)
        << nk_last_error();
    expect_same_bits(out.download(), expected, "quantiles");
    EXPECT_EQ(x_dev.download().bytes(), x.bytes()) << "x is read only";
  }
};

std::string dtype_name(const testing::TestParamInfo<nk_dtype>& info) { return name(info.param); }

// ---- quantiles ----------------------------------------------------------------------------------

TEST_P(GpuPreprocessing, QuantilesMatchCpuBitwise) {
  for (const Shape& s : shapes()) {
    SCOPED_TRACE(testing::Message() << "rows=" << s.rows << " cols=" << s.cols);
    check_quantiles(s, 0, 0);
  }
}

TEST_P(GpuPreprocessing, QuantilesOfMisalignedPointers) {
  for (const Shape& s : {Shape{33, 17}, Shape{1000, 5}}) {
    SCOPED_TRACE(testing::Message() << "rows=" << s.rows << " cols=" << s.cols);
    check_quantiles(s, 1, 0);
    check_quantiles(s, 0, 1);
  }
}

// More keys than one sort takes (kQuantileBatchKeys = 2^26): several batches of many columns and a
// ragged last batch.
TEST_P(GpuPreprocessing, QuantilesInSeveralBatches) {
  if (reduced_gpu_tests()) {
    GTEST_SKIP() << "not in the reduced set: 67 million keys (the split into batches is tested "
                    "on the CPU, test_preprocessing.cpp)";
  }
  check_quantiles({4097, 16400}, 0, 0);
}

// A workspace that holds the scratch is used (its bytes change) and one that does not is left
// alone while the call allocates; the results are the same bits either way.
TEST_P(GpuPreprocessing, QuantilesUseAWorkspaceOnlyWhenItIsLargeEnough) {
  const Shape s{300, 40};
  const nk_row_desc d = desc(s);
  const Buffer x = quantile_input(s);
  const std::vector<double> q = quantile_levels();
  const int64_t nq = static_cast<int64_t>(q.size());
  Buffer expected(NK_F32, nq * s.cols);
  ASSERT_EQ(nk_quantiles_columns(cpu_, &d, x.data(), q.data(), nq, expected.f32()), NK_SUCCESS);
  DeviceBuffer x_dev(x);
  for (int64_t workspace_bytes : {int64_t{64} << 20, int64_t{256}}) {
    SCOPED_TRACE(testing::Message() << "workspace of " << workspace_bytes << " bytes");
    DeviceBuffer workspace(NK_F32, workspace_bytes / 4), out(NK_F32, nq * s.cols);
    const Buffer poisoned = workspace.download();
    ASSERT_EQ(nk_context_set_workspace(gpu_, workspace.data(), workspace_bytes), NK_SUCCESS);
    ASSERT_EQ(nk_quantiles_columns(gpu_, &d, x_dev.data(), q.data(), nq, out.f32()), NK_SUCCESS)
        << nk_last_error();
    expect_same_bits(out.download(), expected, "quantiles");
    if (workspace_bytes > 256) {
      EXPECT_NE(workspace.download().bytes(), poisoned.bytes()) << "the workspace was not used";
    } else {
      EXPECT_EQ(workspace.download().bytes(), poisoned.bytes()) << "a small workspace was written";
    }
    ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);
  }
}

// The checks shared with the CPU backend refuse on a CUDA context too, before anything is written.
TEST_P(GpuPreprocessing, QuantileErrorsWriteNothing) {
  const Shape s{4, 3};
  const nk_row_desc d = desc(s);
  DeviceBuffer x(Buffer(GetParam(), rng_.normal(12))), out(NK_F32, 6);
  const Buffer poisoned = out.download();
  const std::vector<double> bad = {0.5, 1.5};
  EXPECT_EQ(nk_quantiles_columns(gpu_, &d, x.data(), bad.data(), 2, out.f32()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("q[1] = 1.5"), std::string::npos) << nk_last_error();
  EXPECT_EQ(nk_quantiles_columns(gpu_, &d, x.data(), bad.data(), 0, out.f32()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(out.download().bytes(), poisoned.bytes());
}

// Columns of 2^31 rows or more are refused on CUDA (the segmented sort's int offsets), by shape
// alone: no pointer is touched before the check, so none is allocated here.
TEST_P(GpuPreprocessing, QuantilesRefuseColumnsOf2To31Rows) {
  const nk_row_desc d{int64_t{1} << 31, 1, GetParam(), GetParam()};
  const void* x = reinterpret_cast<const void*>(uintptr_t{1} << 44);
  float* out = reinterpret_cast<float*>(uintptr_t{1} << 45);
  const double q = 0.5;
  EXPECT_EQ(nk_quantiles_columns(gpu_, &d, x, &q, 1, out), NK_ERROR_NOT_SUPPORTED);
  EXPECT_NE(std::string(nk_last_error()).find("desc->rows = 2147483648"), std::string::npos)
      << nk_last_error();
}

// ---- scaling ------------------------------------------------------------------------------------

struct Frozen {
  std::vector<float> center, spread;
  nk_frozen_stats stats(nk_stats_kind kind, nk_dtype dtype) {
    return {kind, dtype, NK_RUNNING_VAR_BIASED, static_cast<int64_t>(center.size()),
            100,  0.0,   center.data(),         spread.data()};
  }
};

Frozen random_frozen(Random& rng, int64_t cols) {
  Frozen f;
  for (double c : rng.normal(cols, 1.0, 3.0)) f.center.push_back(static_cast<float>(c));
  for (double v : rng.uniform(cols, 0.1, 4.0)) f.spread.push_back(static_cast<float>(v));
  return f;
}

constexpr nk_stats_kind kScalers[] = {NK_STATS_STANDARDIZE, NK_STATS_MIN_MAX, NK_STATS_ROBUST};

TEST_P(GpuPreprocessing, ScaleColumnsMatchesCpuBitwise) {
  for (const Shape& s : shapes()) {
    const nk_row_desc d = desc(s);
    const int64_t n = s.rows * s.cols;
    Frozen f = random_frozen(rng_, s.cols);
    const Buffer x(GetParam(), rng_.normal(n, 1.0, 4.0));
    for (nk_stats_kind kind : kScalers) {
      SCOPED_TRACE(testing::Message()
                   << "rows=" << s.rows << " cols=" << s.cols << " kind=" << kind);
      const nk_frozen_stats stats = f.stats(kind, GetParam());
      Buffer expected(GetParam(), n);
      ASSERT_EQ(nk_scale_columns(cpu_, &d, &stats, NK_ZERO_SPREAD_ERROR, x.data(), expected.data()),
                NK_SUCCESS)
          << nk_last_error();
      DeviceBuffer x_dev(x), y(GetParam(), n);
      ASSERT_EQ(nk_scale_columns(gpu_, &d, &stats, NK_ZERO_SPREAD_ERROR, x_dev.data(), y.data()),
                NK_SUCCESS)
          << nk_last_error();
      expect_same_bits(y.download(), expected, "y");
      DeviceBuffer inplace(x, 1);  // in place, and misaligned
      ASSERT_EQ(
          nk_scale_columns(gpu_, &d, &stats, NK_ZERO_SPREAD_ERROR, inplace.data(), inplace.data()),
          NK_SUCCESS)
          << nk_last_error();
      expect_same_bits(inplace.download(), expected, "y == x");
    }
  }
}

// A constant feature: with NK_ZERO_SPREAD_ERROR the call fails naming it and leaves y (and x, in
// place) byte for byte as they were; with NK_ZERO_SPREAD_ZERO that column is 0, as on the CPU.
TEST_P(GpuPreprocessing, ZeroSpreadInBothModes) {
  const Shape s{37, 5};
  const nk_row_desc d = desc(s);
  const int64_t n = s.rows * s.cols;
  Frozen f = random_frozen(rng_, s.cols);
  f.spread[3] = 0.0f;
  const Buffer x(GetParam(), rng_.normal(n, 1.0, 4.0));
  for (nk_stats_kind kind : kScalers) {
    SCOPED_TRACE(testing::Message() << "kind " << kind);
    const nk_frozen_stats stats = f.stats(kind, GetParam());
    DeviceBuffer x_dev(x), y(GetParam(), n);
    const Buffer poisoned = y.download();
    EXPECT_EQ(nk_scale_columns(gpu_, &d, &stats, NK_ZERO_SPREAD_ERROR, x_dev.data(), y.data()),
              NK_ERROR_INVALID_VALUE);
    EXPECT_NE(std::string(nk_last_error()).find("feature 3 has no spread"), std::string::npos)
        << nk_last_error();
    EXPECT_EQ(y.download().bytes(), poisoned.bytes()) << "y written by a failing call";
    EXPECT_EQ(nk_scale_columns(gpu_, &d, &stats, NK_ZERO_SPREAD_ERROR, x_dev.data(), x_dev.data()),
              NK_ERROR_INVALID_VALUE);
    EXPECT_EQ(x_dev.download().bytes(), x.bytes()) << "x written by a failing in-place call";

    Buffer expected(GetParam(), n);
    ASSERT_EQ(nk_scale_columns(cpu_, &d, &stats, NK_ZERO_SPREAD_ZERO, x.data(), expected.data()),
              NK_SUCCESS);
    ASSERT_EQ(nk_scale_columns(gpu_, &d, &stats, NK_ZERO_SPREAD_ZERO, x_dev.data(), y.data()),
              NK_SUCCESS)
        << nk_last_error();
    const Buffer got = y.download();
    expect_same_bits(got, expected, "y");
    for (int64_t r = 0; r < s.rows; ++r) EXPECT_EQ(got.get(r * s.cols + 3), 0.0) << "row " << r;
  }
}

// ---- L2 normalization ---------------------------------------------------------------------------

// The CPU sums squares in fp64 in row order, the GPU in fp64 in a tree: both round the output once
// from values that differ by far less than the dtype's precision, so they differ by at most one
// unit in its last place (relative 2^-23, 2^-10, 2^-7), or by its smallest subnormal near zero.
Tolerance l2_tolerance(nk_dtype dtype) {
  switch (dtype) {
    case NK_F16:
      return {std::ldexp(1.0, -24), std::ldexp(1.0, -10)};
    case NK_BF16:
      return {std::ldexp(1.0, -133), std::ldexp(1.0, -7)};
    default:
      return {std::ldexp(1.0, -149), std::ldexp(1.0, -23)};
  }
}

class GpuL2 : public GpuPreprocessing {
 protected:
  // Rows of fresh data, row 0 all zeros and row 1 tiny (its norm below eps) when there are more.
  Buffer input(const Shape& s) {
    std::vector<double> v = rng_.normal(s.rows * s.cols, 0.5, 2.0);
    if (s.rows >= 3) {
      for (int64_t j = 0; j < s.cols; ++j) {
        v[j] = 0.0;
        v[s.cols + j] = 1e-9 * v[s.cols + j];
      }
    }
    return Buffer(GetParam(), v);
  }

  void check(const Shape& s, int64_t x_offset, int64_t y_offset) {
    const nk_row_desc d = desc(s);
    const int64_t n = s.rows * s.cols;
    const double eps = 1e-6;
    const Buffer x = input(s);
    Buffer expected(GetParam(), n);
    ASSERT_EQ(nk_l2_normalize_rows(cpu_, &d, eps, x.data(), expected.data()), NK_SUCCESS);
    DeviceBuffer x_dev(x, x_offset), y(GetParam(), n, y_offset);
    ASSERT_EQ(nk_l2_normalize_rows(gpu_, &d, eps, x_dev.data(), y.data()), NK_SUCCESS)
        << nk_last_error();
    const Buffer got = y.download();
    expect_close(got.values(), expected.values(), l2_tolerance(GetParam()), "y");
    DeviceBuffer inplace(x, x_offset);
    ASSERT_EQ(nk_l2_normalize_rows(gpu_, &d, eps, inplace.data(), inplace.data()), NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(inplace.download().bytes(), got.bytes()) << "y == x gives other bytes";
  }
};

TEST_P(GpuL2, MatchesCpuToOneUlp) {
  for (const Shape& s : shapes()) {
    SCOPED_TRACE(testing::Message() << "rows=" << s.rows << " cols=" << s.cols);
    check(s, 0, 0);
  }
}

// Warp per row (up to 1024 columns) and block per row, each with a misaligned x or y: the
// single-element path.
TEST_P(GpuL2, MisalignedPointersTakeTheScalarPath) {
  for (const Shape& s : {Shape{9, 64}, Shape{4, 4096}}) {
    SCOPED_TRACE(testing::Message() << "rows=" << s.rows << " cols=" << s.cols);
    check(s, 1, 0);
    check(s, 0, 1);
  }
}

TEST_P(GpuL2, ErrorsWriteNothing) {
  const Shape s{3, 8};
  const nk_row_desc d = desc(s);
  DeviceBuffer x(Buffer(GetParam(), rng_.normal(24))), y(GetParam(), 24);
  const Buffer poisoned = y.download();
  for (double eps : {0.0, -1.0, std::nan("")}) {
    EXPECT_EQ(nk_l2_normalize_rows(gpu_, &d, eps, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
  }
  EXPECT_EQ(y.download().bytes(), poisoned.bytes());
}

INSTANTIATE_TEST_SUITE_P(All, GpuPreprocessing, testing::Values(NK_F32, NK_F16, NK_BF16),
                         dtype_name);
INSTANTIATE_TEST_SUITE_P(All, GpuL2, testing::Values(NK_F32, NK_F16, NK_BF16), dtype_name);

}  // namespace
}  // namespace nkt
