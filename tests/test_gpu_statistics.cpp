// The statistics accumulator and frozen-statistics batch norm inference on the CUDA backend,
// checked against the CPU backend on fresh random data.
//  - Accumulator: several batches fed one by one (channels in both layouts, columns), every dtype,
//    shapes that reach every path of the partial reductions (a warp per row, rows split into
//    chunks, the channels layout with few lanes and with chunks, S == 1, C == 1, N == 1, odd sizes,
//    a column longer than the grid's y limit, more than 256 features, misaligned batches), data
//    with |mean| >> std, NaN in one feature, finalize and min/max into poisoned device buffers,
//    merge, reset, count, precise statistics finalized into a batch norm's running buffers, bitwise
//    determinism, and the errors of the CUDA path (a cross-backend merge, a workspace too small,
//    a batch inside the workspace), each leaving the accumulator as it was.
//  - Frozen inference (nk_batch_norm_forward_frozen): host center and spread, the CPU backend's y
//    and the bytes of the ordinary CUDA inference, host arrays reusable as soon as the call
//    returns, and the checks that must write nothing.
// Skipped, with the reason, without a CUDA device.
#include <algorithm>
#include <cfloat>
#include <cmath>
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

// Bounds of the accumulator against the CPU backend. Both backends read the same input values
// (fp16 and bf16 convert exactly to fp32), so the bounds do not depend on the input dtype. The CPU
// accumulates in fp64 and rounds each output once. The GPU reduces x - shift (shift: a value of
// the feature in this batch) in fp32 partials, each a few dozen sequential Welford steps and a
// tree of at most eight merges (relative error a few 1e-7 of the spread and of m2), and merges the
// partials and the batches in fp64. So: the mean within 1e-5 * stddev plus one fp32 rounding of
// the output (FLT_EPSILON relative); the variances within 2e-5 relative (ten times the partials'
// error); the minimum and the maximum exactly.
Tolerance mean_tolerance(double stddev) { return {1e-5 * stddev, FLT_EPSILON}; }
Tolerance var_tolerance(double stddev) { return {1e-7 * stddev * stddev, 2e-5}; }
constexpr Tolerance kExact{0.0, 0.0};

// Bounds of y against the CPU backend, as in test_gpu_channel_norms.cpp: fp32 math against fp64
// (a few ulps of |y| ~ 10) and, for fp16 / bf16, two output roundings of slack.
Tolerance gpu_tolerance(nk_dtype dtype) {
  const Tolerance t = output_tolerance(dtype);
  return dtype == NK_F32 ? Tolerance{2e-5, 2e-5} : Tolerance{2 * t.atol, 2 * t.rtol};
}

std::vector<double> f64(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}
std::vector<float> f32(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// expect_close, except that where the expected value is NaN the actual one must be NaN too.
bool expect_close_or_nan(const std::vector<double>& actual, const std::vector<double>& expected,
                         Tolerance tol, const std::string& what) {
  EXPECT_EQ(actual.size(), expected.size()) << what;
  if (actual.size() != expected.size()) return false;
  int failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double bound = tol.atol + tol.rtol * std::abs(expected[i]);
    const bool ok = std::isnan(expected[i]) ? std::isnan(actual[i])
                                            : std::abs(actual[i] - expected[i]) <= bound;
    if (!ok && ++failures <= 5) {
      ADD_FAILURE() << what << "[" << i << "] = " << actual[i] << ", expected " << expected[i]
                    << " (bound " << bound << ")";
    }
  }
  if (failures > 5) ADD_FAILURE() << what << ": " << failures << " elements out of bounds in all";
  return failures == 0;
}

// An accumulator destroyed at scope exit (before the fixture destroys the context).
class Accumulator {
 public:
  Accumulator(nk_context ctx, int64_t features) {
    EXPECT_EQ(nk_stats_create(ctx, features, &stats_), NK_SUCCESS) << nk_last_error();
  }
  ~Accumulator() { nk_stats_destroy(stats_); }
  Accumulator(const Accumulator&) = delete;
  Accumulator& operator=(const Accumulator&) = delete;
  operator nk_stats() const { return stats_; }

 private:
  nk_stats stats_ = nullptr;
};

// A batch shape: channels (N x C x S in `layout`) or columns (N rows x C columns, S == 1).
struct Shape {
  int64_t n, c, s;
  nk_layout layout;
  bool columns;
};

std::string describe(const Shape& k) {
  return k.columns
             ? "columns " + std::to_string(k.n) + " x " + std::to_string(k.c)
             : std::string(k.layout == NK_NCHW ? "nchw" : "nhwc") + " n=" + std::to_string(k.n) +
                   " c=" + std::to_string(k.c) + " s=" + std::to_string(k.s);
}

nk_status add_batch(nk_stats st, const Shape& k, nk_dtype dtype, const void* x) {
  if (k.columns) {
    const nk_row_desc d{k.n, k.c, dtype, dtype};
    return nk_stats_add_columns(st, &d, x);
  }
  const nk_act_desc d{k.n, k.c, k.s, k.layout, dtype};
  return nk_stats_add_channels(st, &d, x);
}

// Everything an accumulator reports. `unbiased` is left poisoned below two samples.
struct Outputs {
  int64_t count = -1;
  Buffer mean, var, unbiased, min, max;
};

Outputs read_cpu(nk_stats st, int64_t features) {
  Outputs o;
  EXPECT_EQ(nk_stats_count(st, &o.count), NK_SUCCESS) << nk_last_error();
  for (Buffer* b : {&o.mean, &o.var, &o.unbiased, &o.min, &o.max}) {
    *b = Buffer(NK_F32, features);
    b->poison();
  }
  EXPECT_EQ(
      nk_stats_finalize(st, o.mean.f32(), o.var.f32(), o.count >= 2 ? o.unbiased.f32() : nullptr),
      NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(nk_stats_min_max(st, o.min.f32(), o.max.f32()), NK_SUCCESS) << nk_last_error();
  return o;
}

// The outputs of a CUDA accumulator, written into device buffers poisoned before the calls.
Outputs read_gpu(nk_stats st, int64_t features) {
  Outputs o;
  EXPECT_EQ(nk_stats_count(st, &o.count), NK_SUCCESS) << nk_last_error();
  DeviceBuffer mean(NK_F32, features), var(NK_F32, features), unbiased(NK_F32, features),
      lo(NK_F32, features), hi(NK_F32, features);
  EXPECT_EQ(nk_stats_finalize(st, mean.f32(), var.f32(), o.count >= 2 ? unbiased.f32() : nullptr),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(nk_stats_min_max(st, lo.f32(), hi.f32()), NK_SUCCESS) << nk_last_error();
  o.mean = mean.download();
  o.var = var.download();
  o.unbiased = unbiased.download();
  o.min = lo.download();
  o.max = hi.download();
  return o;
}

void expect_matches(const Outputs& gpu, const Outputs& cpu, double stddev) {
  EXPECT_EQ(gpu.count, cpu.count);
  expect_close_or_nan(gpu.mean.values(), cpu.mean.values(), mean_tolerance(stddev), "mean");
  expect_close_or_nan(gpu.var.values(), cpu.var.values(), var_tolerance(stddev), "var");
  if (cpu.count >= 2) {
    expect_close_or_nan(gpu.unbiased.values(), cpu.unbiased.values(), var_tolerance(stddev),
                        "var_unbiased");
  }
  expect_close_or_nan(gpu.min.values(), cpu.min.values(), kExact, "min");
  expect_close_or_nan(gpu.max.values(), cpu.max.values(), kExact, "max");
}

void expect_same_bytes(const Outputs& a, const Outputs& b) {
  EXPECT_EQ(a.count, b.count);
  EXPECT_EQ(a.mean.bytes(), b.mean.bytes()) << "mean";
  EXPECT_EQ(a.var.bytes(), b.var.bytes()) << "var";
  if (a.count >= 2) {
    EXPECT_EQ(a.unbiased.bytes(), b.unbiased.bytes()) << "var_unbiased";
  }
  EXPECT_EQ(a.min.bytes(), b.min.bytes()) << "min";
  EXPECT_EQ(a.max.bytes(), b.max.bytes()) << "max";
}

// Channel shapes: S == 1 (channels layout in NCHW too), N == 1, C == 1 with S > 1 (the rows layout
// in NHWC too), a warp per row with 16-byte packs, odd sizes, rows split into chunks (NCHW) and
// channels split into chunks with few lanes (NHWC), more than 256 features (several blocks in the
// per-feature kernels), many rows of a block each, long odd rows (S = 1031: 16-byte loads
// between each row's ends, a chunk starting inside a row), short rows with N = 1 (S = 49: a lane
// per row's partial), and rows of half packs in chunks a block each (S = 1028 in 16 bits,
// S = 1030 in fp32: two chunks of 2056 to 2576 elements), rows shorter than a pack read as
// columns of the samples (NCHW S = 3: 48 columns, whole packs; S = 5: 15 columns, periods of 8 or
// 4 samples), and NHWC C = 514: a period of 257 packs (2056 elements in 16 bits, 1028 in fp32),
// wider than a block, walked in tiles (ChannelWalk::kSplitPeriod).
std::vector<Shape> channel_shapes() {
  struct S {
    int64_t n, c, s;
  };
  const std::vector<S> list =
      reduced_gpu_tests()
          ? std::vector<S>{{5, 3, 1},    {3, 1, 77}, {4, 16, 32},  {2, 3, 5000}, {4, 3, 1031},
                           {4, 300, 49}, {1, 3, 49}, {4, 3, 1028}, {4, 3, 1030}, {40, 16, 3},
                           {16, 3, 5},   {2, 514, 8}}
          : std::vector<S>{{5, 3, 1},      {1, 6, 13},   {3, 1, 77},   {4, 16, 32},  {3, 7, 11},
                           {2, 3, 100003}, {2, 3, 5000}, {4, 3, 1031}, {4, 300, 49}, {64, 16, 600},
                           {7, 1, 1},      {1, 3, 49},   {4, 3, 1028}, {4, 3, 1030}, {40, 16, 3},
                           {16, 3, 5},     {2, 514, 8}};
  std::vector<Shape> out;
  for (nk_layout layout : {NK_NCHW, NK_NHWC})
    for (const S& s : list) out.push_back({s.n, s.c, s.s, layout, false});
  return out;
}

// Column shapes (rows x cols): one row, one column longer than the partial grid's 65535 rows of
// blocks, odd widths, more than 256 columns.
std::vector<Shape> column_shapes() {
  struct S {
    int64_t rows, cols;
  };
  const std::vector<S> list = reduced_gpu_tests() ? std::vector<S>{{1, 5}, {200, 37}, {7, 300}}
                                                  : std::vector<S>{{1, 5},   {70000, 1}, {1000, 37},
                                                                   {7, 300}, {33, 8},    {2, 1}};
  std::vector<Shape> out;
  for (const S& s : list) out.push_back({s.rows, s.cols, 1, NK_NHWC, true});
  return out;
}

class GpuStatsAccumulator : public GpuTest, public testing::WithParamInterface<nk_dtype> {
 protected:
  // Feeds `batches` batches of shape k (N alternating n, n + 1; the third batch misaligned by one
  // element, which takes the single-element path) to a CPU and a CUDA accumulator, checking the
  // count after each, then every output.
  void check_batches(const Shape& k, int batches, double mean, double stddev) {
    const nk_dtype dtype = GetParam();
    Accumulator cpu(cpu_, k.c), gpu(gpu_, k.c);
    for (int b = 0; b < batches; ++b) {
      Shape batch = k;
      batch.n = k.n + b % 2;
      const Buffer x(dtype, rng_.normal(batch.n * batch.c * batch.s, mean + b, stddev));
      const DeviceBuffer xd(x, b == 2 ? 1 : 0);
      ASSERT_EQ(add_batch(cpu, batch, dtype, x.data()), NK_SUCCESS) << nk_last_error();
      ASSERT_EQ(add_batch(gpu, batch, dtype, xd.data()), NK_SUCCESS) << nk_last_error();
      int64_t count_cpu = -1, count_gpu = -2;
      ASSERT_EQ(nk_stats_count(cpu, &count_cpu), NK_SUCCESS);
      ASSERT_EQ(nk_stats_count(gpu, &count_gpu), NK_SUCCESS);
      EXPECT_EQ(count_gpu, count_cpu) << "after batch " << b;
    }
    expect_matches(read_gpu(gpu, k.c), read_cpu(cpu, k.c), stddev);
  }
};

std::string dtype_name(const testing::TestParamInfo<nk_dtype>& info) { return name(info.param); }

TEST_P(GpuStatsAccumulator, ChannelBatchesMatchCpu) {
  for (const Shape& k : channel_shapes()) {
    SCOPED_TRACE(describe(k));
    check_batches(k, 3, 0.5, 2.0);
  }
}

TEST_P(GpuStatsAccumulator, ColumnBatchesMatchCpu) {
  for (const Shape& k : column_shapes()) {
    SCOPED_TRACE(describe(k));
    check_batches(k, 3, -1.5, 3.0);
  }
}

// into += from equals one accumulator fed with both sets (up to the order of the merges), and
// the CPU backend's merge; `from` is left as it was. Merging into an empty accumulator, or merging
// an empty one, is exact (Chan's merge with an empty side is the identity): bitwise.
TEST_P(GpuStatsAccumulator, MergeEqualsOneFedWithBoth) {
  const nk_dtype dtype = GetParam();
  for (const Shape& k : {Shape{3, 300, 7, NK_NHWC, false}, Shape{2, 5, 300, NK_NCHW, false},
                         Shape{40, 3, 1, NK_NHWC, true}}) {
    SCOPED_TRACE(describe(k));
    Accumulator a(gpu_, k.c), b(gpu_, k.c), all(gpu_, k.c), empty(gpu_, k.c);
    Accumulator a_cpu(cpu_, k.c), b_cpu(cpu_, k.c);
    for (int i = 0; i < 5; ++i) {
      const Buffer x(dtype, rng_.normal(k.n * k.c * k.s, 2.0 * i, 1.0 + i));
      const DeviceBuffer xd(x);
      ASSERT_EQ(add_batch(i % 2 ? b : a, k, dtype, xd.data()), NK_SUCCESS) << nk_last_error();
      ASSERT_EQ(add_batch(i % 2 ? b_cpu : a_cpu, k, dtype, x.data()), NK_SUCCESS);
      ASSERT_EQ(add_batch(all, k, dtype, xd.data()), NK_SUCCESS);
    }
    const Outputs b_before = read_gpu(b, k.c), all_alone = read_gpu(all, k.c);
    ASSERT_EQ(nk_stats_merge(a, b), NK_SUCCESS) << nk_last_error();
    ASSERT_EQ(nk_stats_merge(a_cpu, b_cpu), NK_SUCCESS) << nk_last_error();
    const Outputs merged = read_gpu(a, k.c);
    EXPECT_EQ(merged.count, 5 * k.n * k.s);
    expect_matches(merged, read_cpu(a_cpu, k.c), 5.0);
    expect_matches(merged, all_alone, 5.0);
    expect_same_bytes(read_gpu(b, k.c), b_before);
    ASSERT_EQ(nk_stats_merge(empty, all), NK_SUCCESS) << nk_last_error();
    expect_same_bytes(read_gpu(empty, k.c), all_alone);
    Accumulator nothing(gpu_, k.c);
    ASSERT_EQ(nk_stats_merge(all, nothing), NK_SUCCESS) << nk_last_error();
    expect_same_bytes(read_gpu(all, k.c), all_alone);
  }
}

// After a reset the accumulator has no samples (finalize and min/max refuse and write nothing),
// then equals one that only saw what came after.
TEST_P(GpuStatsAccumulator, ResetStartsOver) {
  const nk_dtype dtype = GetParam();
  const Shape k{3, 7, 11, NK_NCHW, false};
  Accumulator gpu(gpu_, k.c), fresh(cpu_, k.c);
  for (int i = 0; i < 2; ++i) {
    const DeviceBuffer x(Buffer(dtype, rng_.normal(k.n * k.c * k.s, 40.0, 5.0)));
    ASSERT_EQ(add_batch(gpu, k, dtype, x.data()), NK_SUCCESS) << nk_last_error();
  }
  ASSERT_EQ(nk_stats_reset(gpu), NK_SUCCESS) << nk_last_error();
  int64_t count = -1;
  ASSERT_EQ(nk_stats_count(gpu, &count), NK_SUCCESS);
  EXPECT_EQ(count, 0);
  DeviceBuffer mean(NK_F32, k.c), lo(NK_F32, k.c);
  const Buffer poisoned = mean.download();
  EXPECT_EQ(nk_stats_finalize(gpu, mean.f32(), nullptr, nullptr), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("no samples"), std::string::npos) << nk_last_error();
  EXPECT_EQ(nk_stats_min_max(gpu, lo.f32(), nullptr), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(mean.download().bytes(), poisoned.bytes());
  EXPECT_EQ(lo.download().bytes(), poisoned.bytes());
  for (int i = 0; i < 2; ++i) {
    const Buffer x(dtype, rng_.normal(k.n * k.c * k.s, -3.0, 0.5));
    const DeviceBuffer xd(x);
    ASSERT_EQ(add_batch(gpu, k, dtype, xd.data()), NK_SUCCESS) << nk_last_error();
    ASSERT_EQ(add_batch(fresh, k, dtype, x.data()), NK_SUCCESS);
  }
  expect_matches(read_gpu(gpu, k.c), read_cpu(fresh, k.c), 0.5);
}

// One NaN in one feature makes that feature's mean, variances, minimum and maximum NaN and leaves
// the others alone, exactly as on the CPU; a NaN that is the first value of a feature in its batch
// (the value the GPU shifts that feature by) too; NaN survives later clean batches and merges.
// In the last two shapes the thread that meets the NaN first pushes again after it (a warp walks
// each feature's 960 values in NCHW; 6 to 8 positions a thread in NHWC), and that push must keep
// it: a push takes NaN from its values or from the state it adds to.
TEST_P(GpuStatsAccumulator, NanPropagatesPerFeature) {
  const nk_dtype dtype = GetParam();
  for (const Shape& k : {Shape{4, 5, 6, NK_NCHW, false}, Shape{4, 5, 6, NK_NHWC, false},
                         Shape{20, 5, 1, NK_NHWC, true}, Shape{3, 5, 600, NK_NCHW, false},
                         Shape{3, 4, 320, NK_NCHW, false}, Shape{3, 4, 2000, NK_NHWC, false}}) {
    SCOPED_TRACE(describe(k));
    Accumulator gpu(gpu_, k.c), cpu(cpu_, k.c), clean_gpu(gpu_, k.c), clean_cpu(cpu_, k.c);
    auto index = [&](int64_t n, int64_t c, int64_t s) {
      return k.layout == NK_NCHW ? (n * k.c + c) * k.s + s : (n * k.s + s) * k.c + c;
    };
    for (int b = 0; b < 4; ++b) {
      std::vector<double> v = rng_.normal(k.n * k.c * k.s, 1.0, 2.0);
      if (b == 1) v[static_cast<size_t>(index(2, 1, k.s - 1))] = NAN;  // inside feature 1
      if (b == 2) v[static_cast<size_t>(index(0, 3, 0))] = NAN;        // first value of feature 3
      const Buffer x(dtype, v);
      const DeviceBuffer xd(x);
      ASSERT_EQ(add_batch(gpu, k, dtype, xd.data()), NK_SUCCESS) << nk_last_error();
      ASSERT_EQ(add_batch(cpu, k, dtype, x.data()), NK_SUCCESS);
      const Buffer y(dtype, rng_.normal(k.n * k.c * k.s, -1.0, 1.0));
      const DeviceBuffer yd(y);
      ASSERT_EQ(add_batch(clean_gpu, k, dtype, yd.data()), NK_SUCCESS);
      ASSERT_EQ(add_batch(clean_cpu, k, dtype, y.data()), NK_SUCCESS);
    }
    const Outputs got = read_gpu(gpu, k.c);
    expect_matches(got, read_cpu(cpu, k.c), 2.0);
    for (int64_t c = 0; c < k.c; ++c) {
      const bool nan_feature = c == 1 || c == 3;
      for (const Buffer* b : {&got.mean, &got.var, &got.unbiased, &got.min, &got.max}) {
        EXPECT_EQ(std::isnan(b->get(c)), nan_feature) << "feature " << c << " = " << b->get(c);
      }
    }
    ASSERT_EQ(nk_stats_merge(clean_gpu, gpu), NK_SUCCESS) << nk_last_error();
    ASSERT_EQ(nk_stats_merge(clean_cpu, cpu), NK_SUCCESS);
    expect_matches(read_gpu(clean_gpu, k.c), read_cpu(clean_cpu, k.c), 2.0);
  }
}

// The same batches give the same bits: two accumulators, and one reset and fed again.
TEST_P(GpuStatsAccumulator, RepeatedRunsAreBitwiseIdentical) {
  const nk_dtype dtype = GetParam();
  const int64_t long_row = reduced_gpu_tests() ? 10007 : 100003;
  // The reduced set leaves out the 70000-row column (more rows than a grid's y dimension): in the
  // simulator its blocks cost minutes; the full set keeps it.
  const int64_t column_rows = reduced_gpu_tests() ? 700 : 70000;
  for (const Shape& k : {Shape{2, 3, long_row, NK_NCHW, false}, Shape{4, 300, 49, NK_NHWC, false},
                         Shape{column_rows, 1, 1, NK_NHWC, true}}) {
    SCOPED_TRACE(describe(k));
    std::vector<DeviceBuffer> batches;
    for (int b = 0; b < 3; ++b) {
      batches.emplace_back(Buffer(dtype, rng_.normal(k.n * k.c * k.s, 3.0 * b, 2.0)), b);
    }
    Accumulator first(gpu_, k.c), second(gpu_, k.c);
    for (const DeviceBuffer& x : batches) {
      ASSERT_EQ(add_batch(first, k, dtype, x.data()), NK_SUCCESS) << nk_last_error();
      ASSERT_EQ(add_batch(second, k, dtype, x.data()), NK_SUCCESS) << nk_last_error();
    }
    const Outputs reference = read_gpu(first, k.c);
    expect_same_bytes(read_gpu(second, k.c), reference);
    ASSERT_EQ(nk_stats_reset(second), NK_SUCCESS);
    for (const DeviceBuffer& x : batches) {
      ASSERT_EQ(add_batch(second, k, dtype, x.data()), NK_SUCCESS) << nk_last_error();
    }
    expect_same_bytes(read_gpu(second, k.c), reference);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GpuStatsAccumulator, testing::Values(NK_F32, NK_F16, NK_BF16),
                         dtype_name);

class GpuStatsAccumulatorCuda : public GpuTest {};

// |mean| >> std in fp32 (1e4 + N(0, 1)): the statistics keep the precision of the spread, not of
// the offset (a variance from sums of squares in fp32 would be off by whole units here).
TEST_F(GpuStatsAccumulatorCuda, LargeOffsetKeepsPrecision) {
  const int64_t long_row = reduced_gpu_tests() ? 10007 : 100003;
  for (const Shape& k : {Shape{8, 4, 1000, NK_NCHW, false}, Shape{8, 4, 1000, NK_NHWC, false},
                         Shape{3, 2, long_row, NK_NCHW, false},
                         Shape{reduced_gpu_tests() ? 500 : 5000, 3, 1, NK_NHWC, true}}) {
    SCOPED_TRACE(describe(k));
    Accumulator cpu(cpu_, k.c), gpu(gpu_, k.c);
    for (int b = 0; b < 4; ++b) {
      const Buffer x(NK_F32, rng_.normal(k.n * k.c * k.s, 1e4 + 0.5 * b, 1.0));
      const DeviceBuffer xd(x);
      ASSERT_EQ(add_batch(cpu, k, NK_F32, x.data()), NK_SUCCESS);
      ASSERT_EQ(add_batch(gpu, k, NK_F32, xd.data()), NK_SUCCESS) << nk_last_error();
    }
    expect_matches(read_gpu(gpu, k.c), read_cpu(cpu, k.c), 1.0);
  }
}

// Accumulators of different backends do not merge, either way; neither changes.
TEST_F(GpuStatsAccumulatorCuda, CrossBackendMergeIsRefused) {
  const Shape k{6, 4, 3, NK_NHWC, false};
  Accumulator cpu(cpu_, k.c), gpu(gpu_, k.c);
  const Buffer x(NK_F32, rng_.normal(k.n * k.c * k.s, 1.0, 2.0)),
      y(NK_F32, rng_.normal(k.n * k.c * k.s, -4.0, 1.0));
  const DeviceBuffer yd(y);
  ASSERT_EQ(add_batch(cpu, k, NK_F32, x.data()), NK_SUCCESS);
  ASSERT_EQ(add_batch(gpu, k, NK_F32, yd.data()), NK_SUCCESS) << nk_last_error();
  const Outputs cpu_before = read_cpu(cpu, k.c), gpu_before = read_gpu(gpu, k.c);
  EXPECT_EQ(nk_stats_merge(gpu, cpu), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("different backends"), std::string::npos)
      << nk_last_error();
  EXPECT_EQ(nk_stats_merge(cpu, gpu), NK_ERROR_INVALID_VALUE);
  expect_same_bytes(read_cpu(cpu, k.c), cpu_before);
  expect_same_bytes(read_gpu(gpu, k.c), gpu_before);
}

#if NORMKIT_TEST_WITH_CUDA

// The CUDA path's own refusals, each before anything is written: a batch inside the workspace, and
// the checks every backend makes (overlapping outputs, var_unbiased of one sample, a feature-count
// mismatch).
TEST_F(GpuStatsAccumulatorCuda, ErrorsChangeNothing) {
  const Shape k{4, 16, 32, NK_NCHW, false};
  const int64_t numel = k.n * k.c * k.s;
  Accumulator gpu(gpu_, k.c);
  const DeviceBuffer x(Buffer(NK_F32, rng_.normal(numel, 2.0, 1.0)));
  ASSERT_EQ(add_batch(gpu, k, NK_F32, x.data()), NK_SUCCESS) << nk_last_error();
  const Outputs before = read_gpu(gpu, k.c);

  DeviceBuffer big(NK_F32, numel + 1024);
  ASSERT_EQ(nk_context_set_workspace(gpu_, big.data(), static_cast<size_t>(numel + 1024) * 4),
            NK_SUCCESS);
  EXPECT_EQ(add_batch(gpu, k, NK_F32, big.f32() + 512), NK_ERROR_INVALID_VALUE)
      << "a batch inside the workspace";
  ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);

  const Shape wrong{4, 15, 32, NK_NCHW, false};
  EXPECT_EQ(add_batch(gpu, wrong, NK_F32, x.data()), NK_ERROR_BAD_SHAPE);
  DeviceBuffer out(NK_F32, 2 * k.c);
  const Buffer poisoned = out.download();
  EXPECT_EQ(nk_stats_finalize(gpu, out.f32(), out.f32() + 8, nullptr), NK_ERROR_INVALID_VALUE)
      << "mean and var overlap";
  EXPECT_EQ(nk_stats_min_max(gpu, out.f32(), out.f32()), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(out.download().bytes(), poisoned.bytes());
  expect_same_bytes(read_gpu(gpu, k.c), before);

  // One sample per feature: var works, var_unbiased refuses the whole call.
  Accumulator single(gpu_, 3);
  const DeviceBuffer one(Buffer(NK_F32, {1.0, 2.0, 3.0}));
  ASSERT_EQ(add_batch(single, Shape{1, 3, 1, NK_NCHW, false}, NK_F32, one.data()), NK_SUCCESS);
  DeviceBuffer var(NK_F32, 3), unbiased(NK_F32, 3);
  EXPECT_EQ(nk_stats_finalize(single, nullptr, var.f32(), unbiased.f32()), NK_ERROR_INVALID_VALUE);
  const std::vector<unsigned char> all_ones(12, 0xFF);  // the poison
  EXPECT_EQ(var.download().bytes(), all_ones) << "nothing is written by a failing finalize";
  EXPECT_EQ(unbiased.download().bytes(), all_ones);
  ASSERT_EQ(nk_stats_finalize(single, nullptr, var.f32(), nullptr), NK_SUCCESS) << nk_last_error();
  EXPECT_EQ(var.download().values(), std::vector<double>(3, 0.0));

  Accumulator other_size(gpu_, k.c + 1);
  EXPECT_EQ(nk_stats_merge(gpu, other_size), NK_ERROR_BAD_SHAPE);
  EXPECT_EQ(nk_stats_merge(gpu, gpu), NK_ERROR_INVALID_VALUE);
  expect_same_bytes(read_gpu(gpu, k.c), before);
}

// Adding a batch has no workspace size query, so its scratch is always its own stream-ordered
// allocation: a workspace too small for the partials is neither used nor an error.
TEST_F(GpuStatsAccumulatorCuda, ScratchNeverComesFromTheWorkspace) {
  const Shape k{4, 16, 32, NK_NCHW, false};
  const std::vector<double> values = rng_.normal(k.n * k.c * k.s, 2.0, 1.0);
  DeviceBuffer small(NK_F32, 64);  // 256 bytes, poisoned; 64 partials need more
  const Buffer poisoned = small.download();
  ASSERT_EQ(nk_context_set_workspace(gpu_, small.data(), 256), NK_SUCCESS);
  Accumulator gpu(gpu_, k.c), cpu(cpu_, k.c);
  const DeviceBuffer x(Buffer(NK_F32, values));
  ASSERT_EQ(add_batch(gpu, k, NK_F32, x.data()), NK_SUCCESS) << nk_last_error();
  const Buffer host(NK_F32, values);
  ASSERT_EQ(add_batch(cpu, k, NK_F32, host.data()), NK_SUCCESS) << nk_last_error();
  expect_matches(read_gpu(gpu, k.c), read_cpu(cpu, k.c), 1.0);
  EXPECT_EQ(small.download().bytes(), poisoned.bytes()) << "the workspace was written";
  ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);
}

#endif  // NORMKIT_TEST_WITH_CUDA

// Precise batch-norm statistics: finalize the mean and the unbiased variance of all the data
// straight into a batch norm's device running buffers, then run inference with them; the same on
// the CPU backend.
TEST_F(GpuStatsAccumulatorCuda, FinalizeIntoRunningBuffers) {
  const nk_act_desc d{8, 6, 25, NK_NCHW, NK_F32};
  const int64_t numel = d.n * d.c * d.spatial;
  Accumulator cpu(cpu_, d.c), gpu(gpu_, d.c);
  for (int b = 0; b < 5; ++b) {
    const Buffer x(NK_F32, rng_.normal(numel, 3.0 * b, 1.0));
    const DeviceBuffer xd(x);
    ASSERT_EQ(nk_stats_add_channels(cpu, &d, x.data()), NK_SUCCESS);
    ASSERT_EQ(nk_stats_add_channels(gpu, &d, xd.data()), NK_SUCCESS) << nk_last_error();
  }
  std::vector<float> rm_cpu(d.c, 0.0f), rv_cpu(d.c, 1.0f);
  ASSERT_EQ(nk_stats_finalize(cpu, rm_cpu.data(), nullptr, rv_cpu.data()), NK_SUCCESS);
  DeviceBuffer rm(Buffer(NK_F32, std::vector<double>(d.c, 0.0))),
      rv(Buffer(NK_F32, std::vector<double>(d.c, 1.0)));
  ASSERT_EQ(nk_stats_finalize(gpu, rm.f32(), nullptr, rv.f32()), NK_SUCCESS) << nk_last_error();
  const double spread = 4.5;  // the five batches' means 0, 3, ..., 12 around 6, plus N(0, 1)
  expect_close(rm.download().values(), f64(rm_cpu), mean_tolerance(spread), "running_mean");
  expect_close(rv.download().values(), f64(rv_cpu), var_tolerance(spread), "running_var");

  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  const Buffer x(NK_F32, rng_.normal(numel, 6.0, 4.0));
  Buffer y_ref(NK_F32, numel);
  ASSERT_EQ(nk_batch_norm_forward(cpu_, &d, &p, x.data(), nullptr, nullptr, rm_cpu.data(),
                                  rv_cpu.data(), nullptr, y_ref.data(), nullptr, nullptr),
            NK_SUCCESS);
  const DeviceBuffer xd(x);
  DeviceBuffer y(NK_F32, numel);
  ASSERT_EQ(nk_batch_norm_forward(gpu_, &d, &p, xd.data(), nullptr, nullptr, rm.f32(), rv.f32(),
                                  nullptr, y.data(), nullptr, nullptr),
            NK_SUCCESS)
      << nk_last_error();
  expect_close(y.download().values(), y_ref.values(), gpu_tolerance(NK_F32), "y");
}

// ---- frozen statistics ------------------------------------------------------------------------

struct FrozenCase {
  nk_dtype dtype;
  nk_layout layout;
};

std::string frozen_case_name(const testing::TestParamInfo<FrozenCase>& info) {
  return std::string(name(info.param.dtype)) + (info.param.layout == NK_NCHW ? "_nchw" : "_nhwc");
}

// Frozen statistics of `c` features with host arrays owned by the caller.
nk_frozen_stats frozen_of(nk_dtype dtype, int64_t c, std::vector<float>& center,
                          std::vector<float>& spread) {
  return nk_frozen_stats{NK_STATS_BATCH_NORM, dtype,        NK_RUNNING_VAR_UNBIASED, c, 1000, 1e-5,
                         center.data(),       spread.data()};
}

class GpuFrozenStatsBatchNorm : public GpuTest, public testing::WithParamInterface<FrozenCase> {};

// y equals the CPU backend's (within the per-dtype bound) and, bit for bit, the CUDA backend's
// ordinary inference with the same statistics uploaded: the frozen call is that op with a copy.
TEST_P(GpuFrozenStatsBatchNorm, MatchesCpuBackend) {
  const FrozenCase fc = GetParam();
  struct S {
    int64_t n, c, s, misalign;
  };
  const std::vector<S> shapes = {{2, 3, 5, 0},    {5, 3, 1, 0},  {3, 1, 77, 0},   {4, 16, 32, 0},
                                 {4, 16, 32, 1},  {1, 6, 13, 1}, {2, 8, 5000, 0}, {3, 40, 1, 0},
                                 {2, 24, 333, 0}, {1, 300, 9, 0}};
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  for (const S& s : shapes) {
    for (bool affine : {false, true}) {
      SCOPED_TRACE(testing::Message() << "n=" << s.n << " c=" << s.c << " s=" << s.s
                                      << " misalign=" << s.misalign << " affine=" << affine);
      const nk_act_desc d{s.n, s.c, s.s, fc.layout, fc.dtype};
      const int64_t numel = s.n * s.c * s.s;
      std::vector<float> center = f32(rng_.normal(s.c, 0.0, 1.0)),
                         spread = f32(rng_.uniform(s.c, 0.5, 1.5));
      const std::vector<float> w = f32(rng_.normal(s.c, 1.0, 0.5)), b = f32(rng_.normal(s.c));
      const nk_frozen_stats fs = frozen_of(fc.dtype, s.c, center, spread);
      const Buffer x(fc.dtype, rng_.normal(numel, 0.5, 2.0));
      Buffer y_ref(fc.dtype, numel);
      ASSERT_EQ(
          nk_batch_norm_forward_frozen(cpu_, &d, &p, &fs, x.data(), affine ? w.data() : nullptr,
                                       affine ? b.data() : nullptr, y_ref.data()),
          NK_SUCCESS)
          << nk_last_error();
      const DeviceBuffer xd(x, s.misalign), wd(Buffer(NK_F32, f64(w))), bd(Buffer(NK_F32, f64(b)));
      DeviceBuffer y(fc.dtype, numel, s.misalign);
      ASSERT_EQ(
          nk_batch_norm_forward_frozen(gpu_, &d, &p, &fs, xd.data(), affine ? wd.f32() : nullptr,
                                       affine ? bd.f32() : nullptr, y.data()),
          NK_SUCCESS)
          << nk_last_error();
      const Buffer got = y.download();
      expect_close(got.values(), y_ref.values(), gpu_tolerance(fc.dtype), "y");
      const DeviceBuffer rm(Buffer(NK_F32, f64(center))), rv(Buffer(NK_F32, f64(spread)));
      DeviceBuffer y_plain(fc.dtype, numel, s.misalign);
      ASSERT_EQ(nk_batch_norm_forward(gpu_, &d, &p, xd.data(), affine ? wd.f32() : nullptr,
                                      affine ? bd.f32() : nullptr, rm.f32(), rv.f32(), nullptr,
                                      y_plain.data(), nullptr, nullptr),
                NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(got.bytes(), y_plain.download().bytes()) << "frozen vs ordinary CUDA inference";
    }
  }
}

// Every check fails before y is touched: a mismatched eps, dtype, feature count or kind, an invalid
// field, the training phase, NULL arrays, misaligned or overlapping buffers.
TEST_P(GpuFrozenStatsBatchNorm, ChecksWriteNothing) {
  const FrozenCase fc = GetParam();
  const nk_act_desc d{3, 4, 5, fc.layout, fc.dtype};
  const int64_t numel = d.n * d.c * d.spatial;
  std::vector<float> center = f32(rng_.normal(d.c)), spread = f32(rng_.uniform(d.c, 0.5, 1.5));
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  const DeviceBuffer x(Buffer(fc.dtype, rng_.normal(numel)));
  DeviceBuffer y(fc.dtype, numel + 1);
  const Buffer poisoned = y.download();
  auto call = [&](const nk_frozen_stats& fs, const nk_norm_params& params, const void* xp,
                  void* yp) {
    return nk_batch_norm_forward_frozen(gpu_, &d, &params, &fs, xp, nullptr, nullptr, yp);
  };
  const nk_frozen_stats good = frozen_of(fc.dtype, d.c, center, spread);
  nk_frozen_stats bad = good;
  bad.eps = 1e-3;
  EXPECT_EQ(call(bad, p, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("eps = 0.001 in the frozen statistics"),
            std::string::npos)
      << nk_last_error();
  bad = good;
  bad.dtype = fc.dtype == NK_F32 ? NK_BF16 : NK_F32;
  EXPECT_EQ(call(bad, p, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
  bad = good;
  bad.features = d.c + 1;
  EXPECT_EQ(call(bad, p, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
  bad = good;
  bad.kind = NK_STATS_INSTANCE_NORM;
  EXPECT_EQ(call(bad, p, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
  bad = good;
  bad.center = nullptr;
  EXPECT_EQ(call(bad, p, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
  std::vector<float> negative = spread;
  negative[2] = -1.0f;
  bad = good;
  bad.spread = negative.data();
  EXPECT_EQ(call(bad, p, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
  nk_norm_params training = p;
  training.phase = NK_TRAINING;
  EXPECT_EQ(call(good, training, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(call(good, p, x.data(), static_cast<char*>(y.data()) + 1), NK_ERROR_INVALID_VALUE)
      << "misaligned y";
  EXPECT_EQ(call(good, p, x.data(),
                 static_cast<char*>(const_cast<void*>(x.data())) + elem_size(fc.dtype)),
            NK_ERROR_INVALID_VALUE)
      << "y overlapping x without being x";
  EXPECT_EQ(call(good, p, nullptr, y.data()), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(y.download().bytes(), poisoned.bytes());
}

INSTANTIATE_TEST_SUITE_P(All, GpuFrozenStatsBatchNorm,
                         testing::Values(FrozenCase{NK_F32, NK_NCHW}, FrozenCase{NK_F32, NK_NHWC},
                                         FrozenCase{NK_F16, NK_NCHW}, FrozenCase{NK_F16, NK_NHWC},
                                         FrozenCase{NK_BF16, NK_NCHW},
                                         FrozenCase{NK_BF16, NK_NHWC}),
                         frozen_case_name);

class GpuFrozenStatsBatchNormCuda : public GpuTest {};

// |mean| >> std in fp32: statistics and data around 1e4 still normalize to the CPU's y.
TEST_F(GpuFrozenStatsBatchNormCuda, LargeOffset) {
  for (nk_layout layout : {NK_NCHW, NK_NHWC}) {
    const nk_act_desc d{4, 8, 300, layout, NK_F32};
    const int64_t numel = d.n * d.c * d.spatial;
    std::vector<float> center = f32(rng_.normal(d.c, 1e4, 0.1)),
                       spread = f32(rng_.uniform(d.c, 0.5, 1.5));
    const nk_frozen_stats fs = frozen_of(NK_F32, d.c, center, spread);
    nk_norm_params p = nk_norm_params_default();
    p.phase = NK_INFERENCE;
    const Buffer x(NK_F32, rng_.normal(numel, 1e4, 1.0));
    Buffer y_ref(NK_F32, numel);
    ASSERT_EQ(
        nk_batch_norm_forward_frozen(cpu_, &d, &p, &fs, x.data(), nullptr, nullptr, y_ref.data()),
        NK_SUCCESS);
    const DeviceBuffer xd(x);
    DeviceBuffer y(NK_F32, numel);
    ASSERT_EQ(
        nk_batch_norm_forward_frozen(gpu_, &d, &p, &fs, xd.data(), nullptr, nullptr, y.data()),
        NK_SUCCESS)
        << nk_last_error();
    expect_close(y.download().values(), y_ref.values(), gpu_tolerance(NK_F32), "y");
  }
}

#if NORMKIT_TEST_WITH_CUDA

// The host arrays are copied before the call returns (normkit.h: the caller may reuse them): on a
// stream still busy with a large training forward, overwriting and freeing them right after the
// call must not change y.
TEST_F(GpuFrozenStatsBatchNormCuda, HostArraysMayBeReusedOnReturn) {
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(nk_context_set_stream(gpu_, stream), NK_SUCCESS);
  // Work queued ahead of the copy, so that it is still pending when the call returns.
  const nk_act_desc busy = reduced_gpu_tests() ? nk_act_desc{8, 16, 32 * 32, NK_NCHW, NK_F32}
                                               : nk_act_desc{64, 64, 64 * 64, NK_NCHW, NK_F32};
  DeviceBuffer bx(NK_F32, busy.n * busy.c * busy.spatial),
      by(NK_F32, busy.n * busy.c * busy.spatial);
  ASSERT_EQ(cudaMemset(bx.data(), 0, static_cast<size_t>(busy.n * busy.c * busy.spatial) * 4),
            cudaSuccess);
  const nk_act_desc d{3, 5, 7, NK_NHWC, NK_F32};
  const int64_t numel = d.n * d.c * d.spatial;
  std::vector<float> center = f32(rng_.normal(d.c)), spread = f32(rng_.uniform(d.c, 0.5, 1.5));
  std::vector<float> center_copy = center, spread_copy = spread;
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  const Buffer x(NK_F32, rng_.normal(numel));
  Buffer y_ref(NK_F32, numel);
  const nk_frozen_stats fs_copy = frozen_of(NK_F32, d.c, center_copy, spread_copy);
  ASSERT_EQ(nk_batch_norm_forward_frozen(cpu_, &d, &p, &fs_copy, x.data(), nullptr, nullptr,
                                         y_ref.data()),
            NK_SUCCESS);
  const DeviceBuffer xd(x);
  DeviceBuffer y(NK_F32, numel);
  const nk_norm_params train = nk_norm_params_default();
  ASSERT_EQ(nk_batch_norm_forward(gpu_, &busy, &train, bx.data(), nullptr, nullptr, nullptr,
                                  nullptr, nullptr, by.data(), nullptr, nullptr),
            NK_SUCCESS)
      << nk_last_error();
  const nk_frozen_stats fs = frozen_of(NK_F32, d.c, center, spread);
  ASSERT_EQ(nk_batch_norm_forward_frozen(gpu_, &d, &p, &fs, xd.data(), nullptr, nullptr, y.data()),
            NK_SUCCESS)
      << nk_last_error();
  std::fill(center.begin(), center.end(), NAN);
  std::fill(spread.begin(), spread.end(), NAN);
  std::vector<float>().swap(center);  // and freed
  std::vector<float>().swap(spread);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  expect_close(y.download().values(), y_ref.values(), gpu_tolerance(NK_F32), "y");
  nk_context_set_stream(gpu_, nullptr);
  cudaStreamDestroy(stream);
}

// The frozen call copies its statistics into scratch of its own (it has no workspace size query):
// a workspace too small for them is neither used nor an error.
TEST_F(GpuFrozenStatsBatchNormCuda, WorkspaceIsNotUsed) {
  const nk_act_desc d{2, 70, 3, NK_NCHW, NK_F32};  // 2 x 280 bytes of statistics
  const int64_t numel = d.n * d.c * d.spatial;
  std::vector<float> center = f32(rng_.normal(d.c)), spread = f32(rng_.uniform(d.c, 0.5, 1.5));
  const nk_frozen_stats fs = frozen_of(NK_F32, d.c, center, spread);
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  DeviceBuffer small(NK_F32, 64);  // 256 bytes, poisoned
  const Buffer small_before = small.download();
  ASSERT_EQ(nk_context_set_workspace(gpu_, small.data(), 256), NK_SUCCESS);
  const Buffer host_x(NK_F32, rng_.normal(numel));
  const DeviceBuffer x(host_x);
  DeviceBuffer y(NK_F32, numel);
  ASSERT_EQ(nk_batch_norm_forward_frozen(gpu_, &d, &p, &fs, x.data(), nullptr, nullptr, y.data()),
            NK_SUCCESS)
      << nk_last_error();
  Buffer y_ref(NK_F32, numel);
  ASSERT_EQ(nk_batch_norm_forward_frozen(cpu_, &d, &p, &fs, host_x.data(), nullptr, nullptr,
                                         y_ref.data()),
            NK_SUCCESS)
      << nk_last_error();
  expect_close(y.download().values(), y_ref.values(), gpu_tolerance(NK_F32), "y");
  EXPECT_EQ(small.download().bytes(), small_before.bytes()) << "the workspace was written";
  ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);
}

#endif  // NORMKIT_TEST_WITH_CUDA

}  // namespace
}  // namespace nkt
