// Validation details outside the per-op fixture of test_validation.cpp, on the CPU backend:
// floating-point values in the messages of the frozen statistics and the preprocessing calls read
// back as exactly the value passed; synchronized batch norm checks num_batches_tracked like the
// forward does; the element-count limit of the calls that multiply counts of their own; unknown
// enum values in fields a call does not read. Inputs are fresh random values; outputs, running
// statistics and counters are poisoned or set before each failing call and compared byte for byte
// after it.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using nkt::Buffer;

// Bytes of a vector, to compare a buffer before and after a failing call.
template <class T>
std::vector<unsigned char> bytes_of(const std::vector<T>& v) {
  std::vector<unsigned char> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<float> poisoned_floats(size_t count) {
  std::vector<float> v(count);
  std::memset(v.data(), 0xFF, count * sizeof(float));
  return v;
}

std::vector<float> to_f32(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

std::string last_error() { return nk_last_error(); }

// A few ulp (1 to 8, and either way when `both_ways`) away from `value`.
int few_ulps(nkt::Random& rng, bool both_ways = true) {
  const int k = static_cast<int>(rng.integer(1, 8));
  return both_ways && rng.integer(0, 1) == 0 ? -k : k;
}

// Fake, aligned and never dereferenced: the calls below fail before they touch these.
void* fake(uint64_t k) { return reinterpret_cast<void*>(static_cast<uintptr_t>(k) << 40); }

// ---- frozen statistics ------------------------------------------------------------------------

class FrozenStatsValues : public testing::Test {
 protected:
  void SetUp() override {
    center_ = to_f32(rng_.normal(kFeatures));
    spread_ = to_f32(rng_.uniform(kFeatures, 0.5, 2.0));
    stats_ = nk_frozen_stats{NK_STATS_BATCH_NORM, NK_F32,        NK_RUNNING_VAR_UNBIASED,
                             kFeatures,           512,           1e-5,
                             center_.data(),      spread_.data()};
  }
  static constexpr int64_t kFeatures = 3;
  nkt::CpuContext ctx_;
  nkt::Random rng_;
  std::vector<float> center_, spread_;
  nk_frozen_stats stats_{};
};

// Two eps a few ulp apart (the 1.0000001e-5 against 1e-5, then random neighbours): the
// message shows two different numbers, each reading back as exactly the eps it names; the frozen
// forward says the same and leaves y as it was.
TEST_F(FrozenStatsValues, EpsMismatchShowsBothValuesExactly) {
  const nk_act_desc d{4, kFeatures, 5, NK_NHWC, NK_F32};
  const Buffer x(NK_F32, rng_.normal(60, 1.0, 2.0));
  std::vector<float> y = poisoned_floats(60);
  const std::vector<unsigned char> y_before = bytes_of(y);
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  for (double frozen : {1.0000001e-5, nkt::ulps_from(1e-5, few_ulps(rng_))}) {
    SCOPED_TRACE(testing::Message() << "frozen eps " << std::setprecision(17) << frozen);
    stats_.eps = frozen;
    ASSERT_EQ(nk_frozen_stats_check(&stats_, NK_STATS_BATCH_NORM, NK_F32, kFeatures, 1e-5),
              NK_ERROR_INVALID_VALUE);
    EXPECT_EQ(nkt::number_after(last_error(), "eps = "), frozen) << last_error();
    EXPECT_EQ(nkt::number_after(last_error(), "in the frozen statistics but "), 1e-5)
        << last_error();
    p.eps = 1e-5;
    ASSERT_EQ(
        nk_batch_norm_forward_frozen(ctx_, &d, &p, &stats_, x.data(), nullptr, nullptr, y.data()),
        NK_ERROR_INVALID_VALUE);
    EXPECT_EQ(last_error().rfind("nk_batch_norm_forward_frozen: eps = ", 0), 0u) << last_error();
    EXPECT_EQ(nkt::number_after(last_error(), "eps = "), frozen) << last_error();
    EXPECT_EQ(bytes_of(y), y_before) << "y written by a failing call";
  }
}

// A negative variance a few float ulp from -0.25 (which 6 digits would show as -0.25): read back
// with strtof, the message's number is that float. A failing save creates no file.
TEST_F(FrozenStatsValues, NegativeSpreadIsShownExactly) {
  char folder[] = "/tmp/normkit_details_XXXXXX";
  ASSERT_NE(mkdtemp(folder), nullptr);
  const std::string path = std::string(folder) + "/bn.nkstats";
  const float bad = nkt::ulps_from(-0.25f, few_ulps(rng_));
  spread_[1] = bad;
  EXPECT_EQ(nk_frozen_stats_save(path.c_str(), &stats_), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nkt::float_after(last_error(), "spread[1] = "), bad) << last_error();
  struct stat st {};
  EXPECT_NE(::stat(path.c_str(), &st), 0) << "a failing save wrote " << path;
  EXPECT_EQ(nk_frozen_stats_check(&stats_, NK_STATS_BATCH_NORM, NK_F32, kFeatures, 1e-5),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nkt::float_after(last_error(), "spread[1] = "), bad) << last_error();
  rmdir(folder);
}

// The frozen forward reads phase and eps only, and checks the whole parameter block: unknown
// enum values are refused, and a training phase is named.
TEST_F(FrozenStatsValues, FrozenForwardChecksTheWholeParameterBlock) {
  const nk_act_desc d{2, kFeatures, 4, NK_NCHW, NK_F32};
  const Buffer x(NK_F32, rng_.normal(24));
  std::vector<float> y = poisoned_floats(24);
  const std::vector<unsigned char> y_before = bytes_of(y);
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  p.running_var = static_cast<nk_running_var>(3);
  EXPECT_EQ(
      nk_batch_norm_forward_frozen(ctx_, &d, &p, &stats_, x.data(), nullptr, nullptr, y.data()),
      NK_ERROR_INVALID_VALUE);
  EXPECT_NE(last_error().find("params->running_var = 3 is not an nk_running_var"),
            std::string::npos)
      << last_error();
  p.running_var = NK_RUNNING_VAR_UNBIASED;
  p.momentum_mode = static_cast<nk_momentum_mode>(-1);
  EXPECT_EQ(
      nk_batch_norm_forward_frozen(ctx_, &d, &p, &stats_, x.data(), nullptr, nullptr, y.data()),
      NK_ERROR_INVALID_VALUE);
  EXPECT_NE(last_error().find("params->momentum_mode = -1"), std::string::npos) << last_error();
  p.momentum_mode = NK_MOMENTUM_EXPONENTIAL;
  p.phase = NK_TRAINING;
  EXPECT_EQ(
      nk_batch_norm_forward_frozen(ctx_, &d, &p, &stats_, x.data(), nullptr, nullptr, y.data()),
      NK_ERROR_INVALID_VALUE);
  EXPECT_NE(last_error().find("params->phase = NK_TRAINING: expected NK_INFERENCE"),
            std::string::npos)
      << last_error();
  EXPECT_EQ(bytes_of(y), y_before) << "y written by a failing call";
  p.phase = NK_INFERENCE;
  EXPECT_EQ(
      nk_batch_norm_forward_frozen(ctx_, &d, &p, &stats_, x.data(), nullptr, nullptr, y.data()),
      NK_SUCCESS)
      << last_error();
}

// ---- preprocessing ----------------------------------------------------------------------------

class PreprocessingValues : public testing::Test {
 protected:
  nkt::CpuContext ctx_;
  nkt::Random rng_;
};

TEST_F(PreprocessingValues, QuantileAFewUlpOutsideIsShownExactly) {
  const nk_row_desc d{5, 2, NK_F32, NK_F32};
  const std::vector<float> x = to_f32(rng_.normal(10));
  std::vector<float> out = poisoned_floats(4);
  const std::vector<unsigned char> before = bytes_of(out);
  const int k = static_cast<int>(rng_.integer(1, 8));
  for (double bad : {nkt::ulps_from(1.0, k), nkt::ulps_from(0.0, -k)}) {
    const std::vector<double> q = {rng_.uniform(1, 0, 1)[0], bad};
    EXPECT_EQ(nk_quantiles_columns(ctx_, &d, x.data(), q.data(), 2, out.data()),
              NK_ERROR_INVALID_VALUE);
    EXPECT_EQ(nkt::number_after(last_error(), "q[1] = "), bad) << last_error();
    EXPECT_EQ(bytes_of(out), before) << "out written by a failing call";
  }
}

// eps must be > 0: a few ulp below 0, and a few ulp from -1e-12 (-1e-12 with 6 digits).
TEST_F(PreprocessingValues, L2EpsAtOrBelowZeroIsShownExactly) {
  const nk_row_desc d{3, 4, NK_F32, NK_F32};
  const std::vector<float> x = to_f32(rng_.normal(12));
  std::vector<float> y = poisoned_floats(12);
  const std::vector<unsigned char> before = bytes_of(y);
  for (double eps : {0.0, nkt::ulps_from(0.0, -static_cast<int>(rng_.integer(1, 8))),
                     nkt::ulps_from(-1e-12, few_ulps(rng_))}) {
    EXPECT_EQ(nk_l2_normalize_rows(ctx_, &d, eps, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
    EXPECT_EQ(nkt::number_after(last_error(), "eps = "), eps) << last_error();
    EXPECT_EQ(bytes_of(y), before) << "y written by a failing call";
  }
}

// desc->weight_dtype is not read by the preprocessing calls, but an unknown value is an error
// there as everywhere; any known one is accepted (even one that layer norm would refuse).
TEST_F(PreprocessingValues, UnknownWeightDtypeIsRefused) {
  const std::vector<float> x = to_f32(rng_.normal(8, 1.0, 2.0));
  std::vector<float> center = {0.5f, -0.25f}, spread = {1.5f, 2.0f};
  const nk_frozen_stats f{NK_STATS_STANDARDIZE, NK_F32,       NK_RUNNING_VAR_BIASED, 2, 100, 0.0,
                          center.data(),        spread.data()};
  const double q = 0.5;
  for (int bad : {7, -1}) {
    SCOPED_TRACE(testing::Message() << "weight_dtype " << bad);
    const nk_row_desc d{4, 2, NK_F32, static_cast<nk_dtype>(bad)};
    const std::string fragment = "desc->weight_dtype = " + std::to_string(bad);
    std::vector<float> y = poisoned_floats(8), out = poisoned_floats(2);
    const std::vector<unsigned char> y_before = bytes_of(y), out_before = bytes_of(out);
    EXPECT_EQ(nk_quantiles_columns(ctx_, &d, x.data(), &q, 1, out.data()), NK_ERROR_INVALID_VALUE);
    EXPECT_NE(last_error().find(fragment), std::string::npos) << last_error();
    EXPECT_EQ(nk_scale_columns(ctx_, &d, &f, NK_ZERO_SPREAD_ERROR, x.data(), y.data()),
              NK_ERROR_INVALID_VALUE);
    EXPECT_NE(last_error().find(fragment), std::string::npos) << last_error();
    EXPECT_EQ(nk_l2_normalize_rows(ctx_, &d, 1e-12, x.data(), y.data()), NK_ERROR_INVALID_VALUE);
    EXPECT_NE(last_error().find(fragment), std::string::npos) << last_error();
    EXPECT_EQ(bytes_of(y), y_before);
    EXPECT_EQ(bytes_of(out), out_before);
  }
  const nk_row_desc known{4, 2, NK_F32, NK_BF16};
  std::vector<float> y(8), out(2);
  EXPECT_EQ(nk_quantiles_columns(ctx_, &known, x.data(), &q, 1, out.data()), NK_SUCCESS)
      << last_error();
  EXPECT_EQ(nk_scale_columns(ctx_, &known, &f, NK_ZERO_SPREAD_ERROR, x.data(), y.data()),
            NK_SUCCESS)
      << last_error();
  EXPECT_EQ(nk_l2_normalize_rows(ctx_, &known, 1e-12, x.data(), y.data()), NK_SUCCESS)
      << last_error();
}

// nq x cols outputs: the element-count limit and its message, as for every shape.
TEST_F(PreprocessingValues, QuantileOutputCountAboveTheLimit) {
  const nk_row_desc d{1, int64_t{1} << 31, NK_F32, NK_F32};
  EXPECT_EQ(nk_quantiles_columns(ctx_, &d, fake(1), static_cast<const double*>(fake(2)),
                                 int64_t{1} << 31, static_cast<float*>(fake(3))),
            NK_ERROR_BAD_SHAPE);
  EXPECT_NE(last_error().find("out (nq x cols) = 2147483648 x 2147483648 = 4611686018427387904: "
                              "the limit is 1152921504606846975 elements"),
            std::string::npos)
      << last_error();
}

// ---- statistics accumulator -------------------------------------------------------------------

TEST(StatsAccumulatorValidation, AddColumnsRefusesUnknownWeightDtype) {
  nkt::CpuContext ctx;
  nkt::Random rng;
  nk_stats stats = nullptr;
  ASSERT_EQ(nk_stats_create(ctx, 3, &stats), NK_SUCCESS);
  const std::vector<float> x = to_f32(rng.normal(12));
  const nk_row_desc bad{4, 3, NK_F32, static_cast<nk_dtype>(5)};
  EXPECT_EQ(nk_stats_add_columns(stats, &bad, x.data()), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(last_error().find("desc->weight_dtype = 5"), std::string::npos) << last_error();
  int64_t count = -1;
  ASSERT_EQ(nk_stats_count(stats, &count), NK_SUCCESS);
  EXPECT_EQ(count, 0) << "a failing add changed the accumulator";
  const nk_row_desc known{4, 3, NK_F32, NK_F16};  // not read: any known dtype
  EXPECT_EQ(nk_stats_add_columns(stats, &known, x.data()), NK_SUCCESS) << last_error();
  ASSERT_EQ(nk_stats_count(stats, &count), NK_SUCCESS);
  EXPECT_EQ(count, 4);
  nk_stats_destroy(stats);
}

// ---- synchronized batch norm ------------------------------------------------------------------

class SyncValidation : public testing::Test {
 protected:
  void SetUp() override {
    x_ = to_f32(rng_.normal(kNumel, 0.5, 2.0));
    ASSERT_EQ(nk_batch_norm_local_stats(ctx_, &desc_, x_.data(), &count_, mean_.data(), m2_.data()),
              NK_SUCCESS)
        << last_error();
  }
  // The global forward of this single shard with `tracked` as num_batches_tracked; running
  // statistics random, outputs poisoned. Returns the status; `unchanged` tells whether every
  // written buffer (counter included) kept its bytes.
  nk_status forward(const nk_norm_params& p, int64_t tracked, bool* unchanged) {
    std::vector<float> rm = to_f32(rng_.normal(kC)), rv = to_f32(rng_.uniform(kC, 0.5, 2.0));
    std::vector<float> y = poisoned_floats(kNumel), sm = poisoned_floats(kC),
                       si = poisoned_floats(kC);
    std::vector<int64_t> counter = {tracked};
    auto snapshot = [&] {
      return std::vector<std::vector<unsigned char>>{bytes_of(rm), bytes_of(rv), bytes_of(y),
                                                     bytes_of(sm), bytes_of(si), bytes_of(counter)};
    };
    const auto before = snapshot();
    const nk_status st = nk_batch_norm_forward_global(
        ctx_, &desc_, &p, &count_, mean_.data(), m2_.data(), x_.data(), nullptr, nullptr, rm.data(),
        rv.data(), counter.data(), y.data(), sm.data(), si.data());
    *unchanged = snapshot() == before;
    counter_after_ = counter[0];
    return st;
  }

  static constexpr int64_t kC = 3, kNumel = 2 * 3 * 4;
  const nk_act_desc desc_{2, kC, 4, NK_NCHW, NK_F32};
  nkt::CpuContext ctx_;
  nkt::Random rng_;
  std::vector<float> x_, mean_ = std::vector<float>(kC), m2_ = std::vector<float>(kC);
  int64_t count_ = 0, counter_after_ = 0;
};

// As nk_batch_norm_forward: a counter outside [0, INT64_MAX - 1] is refused before anything is
// written, in both momentum modes; the bounds themselves advance.
TEST_F(SyncValidation, GlobalForwardRefusesACounterThatCannotAdvance) {
  for (nk_momentum_mode mode : {NK_MOMENTUM_EXPONENTIAL, NK_MOMENTUM_CUMULATIVE}) {
    nk_norm_params p = nk_norm_params_default();
    p.momentum_mode = mode;
    for (int64_t bad : {int64_t{-1}, int64_t{-2}, rng_.integer(INT64_MIN, -3), INT64_MAX}) {
      SCOPED_TRACE(testing::Message() << "mode " << mode << " counter " << bad);
      bool unchanged = false;
      EXPECT_EQ(forward(p, bad, &unchanged), NK_ERROR_INVALID_VALUE);
      EXPECT_EQ(
          last_error().rfind(
              "nk_batch_norm_forward_global: *num_batches_tracked = " + std::to_string(bad), 0),
          0u)
          << last_error();
      EXPECT_TRUE(unchanged) << "a failing call wrote a buffer";
    }
    for (int64_t edge : {int64_t{0}, INT64_MAX - 1}) {
      bool unchanged = true;
      EXPECT_EQ(forward(p, edge, &unchanged), NK_SUCCESS) << last_error();
      EXPECT_EQ(counter_after_, edge + 1);
      EXPECT_FALSE(unchanged);
    }
  }
}

// The NCCL forward checks its arguments, the counter included, before refusing a CPU context.
TEST_F(SyncValidation, NcclForwardChecksTheCounterOnACpuContext) {
  const nk_norm_params p = nk_norm_params_default();
  std::vector<float> rm(kC, 0.5f), rv(kC, 2.0f), y = poisoned_floats(kNumel);
  const std::vector<unsigned char> y_before = bytes_of(y);
  int64_t tracked = -1;
  int fake_comm = 0;  // never dereferenced on a CPU context
  EXPECT_EQ(nk_sync_batch_norm_forward(ctx_, &fake_comm, &desc_, &p, x_.data(), nullptr, nullptr,
                                       rm.data(), rv.data(), &tracked, y.data(), nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(last_error().find("*num_batches_tracked = -1"), std::string::npos) << last_error();
  EXPECT_EQ(tracked, -1);
  EXPECT_EQ(rm, std::vector<float>(kC, 0.5f));
  EXPECT_EQ(rv, std::vector<float>(kC, 2.0f));
  EXPECT_EQ(bytes_of(y), y_before);
}

// The NCCL forward's size query does not read params, and checks all of it all the same.
TEST_F(SyncValidation, NcclForwardQueryChecksTheParameterBlock) {
  int fake_comm = 0;
  size_t bytes = 77;
  nk_norm_params p = nk_norm_params_default();
  p.momentum_mode = static_cast<nk_momentum_mode>(4);
  EXPECT_EQ(nk_sync_batch_norm_forward_workspace_size(ctx_, &fake_comm, &desc_, &p, &bytes),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(last_error().find("params->momentum_mode = 4"), std::string::npos) << last_error();
  p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  EXPECT_EQ(nk_sync_batch_norm_forward_workspace_size(ctx_, &fake_comm, &desc_, &p, &bytes),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(last_error().find("params->phase = NK_INFERENCE: expected NK_TRAINING"),
            std::string::npos)
      << last_error();
  EXPECT_EQ(bytes, 77u);
  p.phase = NK_TRAINING;
  EXPECT_EQ(nk_sync_batch_norm_forward_workspace_size(ctx_, &fake_comm, &desc_, &p, &bytes),
            NK_ERROR_NOT_SUPPORTED)
      << "a valid block reaches the backend check";
}

// ranks x channels partials: the element-count limit and its message, as for every shape.
TEST_F(SyncValidation, MergeElementCountAboveTheLimit) {
  const std::vector<int64_t> counts = {4, 4};  // 2^30 ranks: never read, the shape fails first
  std::vector<float> mean = poisoned_floats(2), m2 = poisoned_floats(2);
  int64_t total = -5;
  const std::vector<unsigned char> mean_before = bytes_of(mean), m2_before = bytes_of(m2);
  EXPECT_EQ(
      nk_batch_norm_merge_stats(ctx_, int64_t{1} << 30, int64_t{1} << 30, counts.data(),
                                static_cast<const float*>(fake(1)),
                                static_cast<const float*>(fake(2)), &total, mean.data(), m2.data()),
      NK_ERROR_BAD_SHAPE);
  EXPECT_NE(last_error().find("means and m2s (ranks x channels) = 1073741824 x 1073741824 = "
                              "1152921504606846976: the limit is 1152921504606846975 elements"),
            std::string::npos)
      << last_error();
  EXPECT_EQ(total, -5);
  EXPECT_EQ(bytes_of(mean), mean_before);
  EXPECT_EQ(bytes_of(m2), m2_before);
}

}  // namespace
