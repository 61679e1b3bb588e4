// The device Welford collective's state functions (kernels/common/welford.cuh), run on the CPU:
// pushes and Chan's merge in fp32 against two-pass fp64 statistics, merge identities, and the
// stability that E[x^2] - E[x]^2 lacks when |mean| >> std.
#include <cmath>
#include <utility>
#include <vector>

#include "common/welford.cuh"
#include "test_support.hpp"

namespace {

using nk::dev::Welford;

struct Exact {
  double mean, var;
};

Exact exact(const std::vector<double>& v) {
  double mean = 0, sq = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  for (double x : v) sq += (x - mean) * (x - mean);
  return {mean, sq / static_cast<double>(v.size())};
}

Welford push_all(const std::vector<double>& v, size_t begin, size_t end) {
  Welford s = nk::dev::welford_empty();
  for (size_t i = begin; i < end; ++i) s = nk::dev::welford_push(s, static_cast<float>(v[i]));
  return s;
}

TEST(WelfordState, MergedPartitionsMatchTwoPassStatistics) {
  nkt::Random rng;
  const std::vector<double> v = nkt::rounded(rng.normal(10007, 3.0, 2.0), NK_F32);
  const Exact e = exact(v);
  for (size_t parts : {1u, 2u, 7u, 64u, 1000u}) {
    Welford total = nk::dev::welford_empty();
    for (size_t p = 0; p < parts; ++p) {
      total = nk::dev::welford_merge(total,
                                     push_all(v, v.size() * p / parts, v.size() * (p + 1) / parts));
    }
    EXPECT_EQ(total.count, static_cast<int64_t>(v.size()));
    EXPECT_NEAR(total.mean, e.mean, 1e-5 * std::abs(e.mean)) << parts << " parts";
    EXPECT_NEAR(nk::dev::welford_biased_var(total), e.var, 1e-4 * e.var) << parts << " parts";
  }
}

TEST(WelfordState, EmptyIsTheIdentityOfMerge) {
  const Welford a{5, 2.5f, 10.0f}, empty = nk::dev::welford_empty();
  const Welford l = nk::dev::welford_merge(empty, a), r = nk::dev::welford_merge(a, empty);
  EXPECT_EQ(l.count, 5);
  EXPECT_EQ(l.mean, 2.5f);
  EXPECT_EQ(l.m2, 10.0f);
  EXPECT_EQ(r.count, 5);
  EXPECT_EQ(r.mean, 2.5f);
  EXPECT_EQ(r.m2, 10.0f);
  EXPECT_EQ(nk::dev::welford_biased_var(empty), 0.0f);
}

TEST(WelfordState, MergeOfTwoKnownHalves) {
  // {1, 3}: mean 2, m2 2; {10, 14}: mean 12, m2 8. All four: mean 7, m2 = 2 + 8 + 10^2 * 2*2/4.
  const Welford a = push_all({1, 3}, 0, 2), b = push_all({10, 14}, 0, 2);
  const Welford m = nk::dev::welford_merge(a, b);
  EXPECT_EQ(m.count, 4);
  EXPECT_FLOAT_EQ(m.mean, 7.0f);
  EXPECT_FLOAT_EQ(m.m2, 110.0f);
}

// welford_merge_approx is welford_merge rearranged: on the CPU, where both divide exactly, the
// same bits while the merged count is below 2^24, and either state empty gives the other exactly.
// (On the GPU its reciprocal is approximate: the GPU tests bound that.)
TEST(WelfordState, ApproximateMergeIsTheMergeOnTheCpu) {
  nkt::Random rng;
  const std::vector<double> means = rng.normal(200, 1e4, 3.0);
  const std::vector<double> m2s = rng.uniform(200, 0.0, 50.0);
  for (size_t i = 0; i + 1 < means.size(); i += 2) {
    // Counts from 1 to 2^22 + 1000 (every magnitude below 2^24 merged); the first pair starts
    // from the empty state.
    const int64_t a_count = i == 0 ? 0 : (int64_t{1} << (i / 2 % 23)) + rng.integer(0, 1000);
    const int64_t b_count = rng.integer(1, 1000);
    const Welford a = a_count == 0 ? nk::dev::welford_empty()
                                   : Welford{a_count, static_cast<float>(means[i]),
                                             static_cast<float>(m2s[i] * a_count)};
    const Welford b{b_count, static_cast<float>(means[i + 1]),
                    static_cast<float>(m2s[i + 1] * b_count)};
    SCOPED_TRACE(testing::Message() << "a.count=" << a_count << " b.count=" << b_count);
    for (const auto& [l, r] : {std::pair{a, b}, std::pair{b, a}}) {
      const Welford x = nk::dev::welford_merge_approx(l, r), y = nk::dev::welford_merge(l, r);
      EXPECT_EQ(x.count, y.count);
      EXPECT_EQ(x.mean, y.mean);
      EXPECT_EQ(x.m2, y.m2);
    }
    if (a_count == 0) {
      for (const Welford& m : {nk::dev::welford_merge_approx(a, b),
                               nk::dev::welford_merge_approx(b, a)}) {
        EXPECT_EQ(m.count, b.count);
        EXPECT_EQ(m.mean, b.mean);
        EXPECT_EQ(m.m2, b.m2);
      }
    }
  }
}

// Counts past 2^24, where welford_merge_approx's float of a's count (the merged count's float
// less b's) is off by up to an ulp of the merged count, n * 2^-23: the merged mean within 1e-6 of
// the fp64 formula, m2 within 1e-6 plus what that error costs the between-partials term,
// delta^2 * (n * 2^-23) * nb / n.
TEST(WelfordState, ApproximateMergeOfLargeCounts) {
  nkt::Random rng;
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t na = rng.integer(int64_t{1} << 24, int64_t{1} << 30);
    const int64_t nb = rng.integer(1, int64_t{1} << 30);
    const std::vector<double> v = rng.normal(4, 5.0, 2.0);
    const Welford a{na, static_cast<float>(v[0]), static_cast<float>(std::abs(v[1]) * na)};
    const Welford b{nb, static_cast<float>(v[2]), static_cast<float>(std::abs(v[3]) * nb)};
    const Welford m = nk::dev::welford_merge_approx(a, b);
    const double n = static_cast<double>(na) + static_cast<double>(nb);
    const double delta = static_cast<double>(b.mean) - a.mean;
    const double mean = a.mean + delta * static_cast<double>(nb) / n;
    const double m2 = static_cast<double>(a.m2) + b.m2 + delta * delta * na * (nb / n);
    SCOPED_TRACE(testing::Message() << "na=" << na << " nb=" << nb);
    EXPECT_EQ(m.count, na + nb);
    EXPECT_NEAR(m.mean, mean, 1e-6 * (std::abs(mean) + std::abs(delta)));
    EXPECT_NEAR(m.m2, m2, 1e-6 * m2 + delta * delta * std::ldexp(static_cast<double>(nb), -23));
  }
}

// Mean 1e4, std 1 in fp32: Welford keeps the variance; the sum-of-squares formula loses it.
TEST(WelfordState, StableWhereSumOfSquaresCancels) {
  nkt::Random rng;
  const std::vector<double> v = nkt::rounded(rng.normal(4096, 1e4, 1.0), NK_F32);
  const Exact e = exact(v);
  Welford total = nk::dev::welford_empty();
  for (size_t p = 0; p < 32; ++p)
    total = nk::dev::welford_merge(total, push_all(v, p * 128, (p + 1) * 128));
  EXPECT_NEAR(nk::dev::welford_biased_var(total), e.var, 2e-2 * e.var);
  float sum = 0, sum_sq = 0;
  for (double x : v) {
    sum += static_cast<float>(x);
    sum_sq += static_cast<float>(x) * static_cast<float>(x);
  }
  const float naive = sum_sq / 4096 - (sum / 4096) * (sum / 4096);
  EXPECT_GT(std::abs(naive - e.var), 0.5 * e.var) << "the naive formula was expected to fail here";
}

// welford_push_values over tiles of K values, merged in order, against two-pass fp64 statistics,
// at an offset where a sum of squares would have no correct digit (mean 1e4, std 1).
template <int K>
void expect_tiles_match(const std::vector<double>& v) {
  const Exact e = exact(v);
  Welford total = nk::dev::welford_empty();
  for (size_t i = 0; i + K <= v.size(); i += K) {
    float tile[K];
    for (int j = 0; j < K; ++j) tile[j] = static_cast<float>(v[i + j]);
    total = nk::dev::welford_push_values<K>(total, tile);
  }
  EXPECT_EQ(total.count, static_cast<int64_t>(v.size())) << K;
  EXPECT_NEAR(total.mean, e.mean, 1e-5 * std::abs(e.mean)) << K;
  // The variance within 5e-3: pure pushes (K = 1) drift most; over 20000 random sets of this
  // kind their relative error had median 1.3e-4, 99.9th percentile 1.3e-3 and maximum 1.8e-3, so
  // 1e-3 failed about one run in 200. A sum of squares is off by more than 50 % here.
  EXPECT_NEAR(nk::dev::welford_biased_var(total), e.var, 5e-3 * e.var) << K;
}

TEST(WelfordState, TilesOfValuesMatchTwoPassStatistics) {
  nkt::Random rng;
  const std::vector<double> v = nkt::rounded(rng.normal(4096, 1e4, 1.0), NK_F32);
  expect_tiles_match<1>(v);
  expect_tiles_match<4>(v);
  expect_tiles_match<8>(v);
  expect_tiles_match<16>(v);
  expect_tiles_match<32>(v);
}

// The shared-count lanes push value by value like welford_push, the division by the count replaced
// by a product with its reciprocal: each lane within a few ulp of welford_push over the same values
// and of two-pass fp64 statistics, lanes at different means and scales (one constant) apart.
TEST(WelfordState, LanesPushLikeWelfordPushPerLane) {
  constexpr int kE = 4, kCount = 777;
  nkt::Random rng;
  // Means within a few standard deviations: the walks push x less a sample of its statistic.
  const double means[3] = {0.0, 2.5, -3e-3}, scales[3] = {1.0, 0.5, 1e-3};
  std::vector<double> v[kE];
  for (int e = 0; e < 3; ++e) v[e] = nkt::rounded(rng.normal(kCount, means[e], scales[e]), NK_F32);
  v[3].assign(kCount, 7.0);
  nk::dev::WelfordLanes<kE> lanes = nk::dev::welford_lanes_empty<kE>();
  for (int t = 0; t < kCount; ++t) {
    float values[kE];
    for (int e = 0; e < kE; ++e) values[e] = static_cast<float>(v[e][t]);
    nk::dev::welford_lanes_push<kE>(lanes, values);
  }
  for (int e = 0; e < kE; ++e) {
    const Welford lane = nk::dev::welford_lane(lanes, e);
    const Welford single = push_all(v[e], 0, v[e].size());
    const Exact x = exact(v[e]);
    const double scale = e < 3 ? scales[e] : 1.0;
    EXPECT_EQ(lane.count, kCount) << e;
    EXPECT_NEAR(lane.mean, single.mean, 3e-6 * (std::abs(x.mean) + scale)) << e;
    EXPECT_NEAR(lane.mean, x.mean, 3e-6 * (std::abs(x.mean) + scale)) << e;
    EXPECT_NEAR(nk::dev::welford_biased_var(lane), x.var, 1e-5 * x.var) << e;
    EXPECT_NEAR(lane.m2, single.m2, 1e-5 * single.m2) << e;
  }
  EXPECT_EQ(nk::dev::welford_lane(lanes, 3).m2, 0.0f);  // the constant lane: no deviation at all
  EXPECT_EQ(nk::dev::welford_lane(lanes, 3).mean, 7.0f);
}

TEST(WelfordState, TileOfKnownValues) {
  // {2, 4, 4, 4, 5, 5, 7, 9}: mean 5, m2 32; merged after {1, 3} (mean 2, m2 2): 10 values,
  // mean (2 * 2 + 8 * 5) / 10 = 4.4, m2 = 2 + 32 + 3^2 * 2 * 8 / 10 = 48.4.
  const float tile[8] = {2, 4, 4, 4, 5, 5, 7, 9};
  const Welford t = nk::dev::welford_push_values<8>(nk::dev::welford_empty(), tile);
  EXPECT_EQ(t.count, 8);
  EXPECT_FLOAT_EQ(t.mean, 5.0f);
  EXPECT_FLOAT_EQ(t.m2, 32.0f);
  const Welford m = nk::dev::welford_push_values<8>(push_all({1, 3}, 0, 2), tile);
  EXPECT_EQ(m.count, 10);
  EXPECT_FLOAT_EQ(m.mean, 4.4f);
  EXPECT_FLOAT_EQ(m.m2, 48.4f);
}

}  // namespace
