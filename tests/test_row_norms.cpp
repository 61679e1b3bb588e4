// Layer norm and RMS norm on the CPU backend (nk_layer_norm_* and nk_rms_norm_*):
//  - hand-computed rows (closed forms worked out in the comments), in every dtype;
//  - forward against the naive fp64 reference nkt::row_forward over dtype x weight dtype x affine
//    x shape, saved statistics included, plus a large-offset row that E[x^2] - E[x]^2 would ruin;
//  - invariants of rows normalized without affine; outputs rounded once from fp64 (half an ulp);
//  - backward against central finite differences of L = <y_ref(x, w, b), dy> in fp64, f16/bf16
//    backward against the f32 one, every subset of null gradient outputs, y == x and dx == dy
//    aliasing, caller workspaces (exact size and one byte short) and run-to-run determinism.
// Inputs are fresh random values every run (the seed is printed); outputs are poisoned first and
// every element is checked.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "test_support.hpp"

namespace {

using nkt::Buffer;

enum class Affine { kNone, kWeight, kBias, kWeightBias };

struct Config {
  bool rms;
  nk_dtype dtype, wdtype;
  Affine affine;
};

std::string config_name(const ::testing::TestParamInfo<Config>& info) {
  static const char* const affine[] = {"NoAffine", "Weight", "Bias", "WeightBias"};
  const Config& c = info.param;
  return std::string(c.rms ? "Rms_" : "Layer_") + nkt::name(c.dtype) + "_w" + nkt::name(c.wdtype) +
         "_" + affine[static_cast<int>(c.affine)];
}

using Shape = std::pair<int64_t, int64_t>;  // rows, cols
const Shape kShapes[] = {{1, 1}, {1, 3}, {5, 17}, {3, 128}, {2, 1000}, {7, 33}};

// Saved mean / rstd are fp32 roundings of fp64 statistics (the CPU backend accumulates in fp64,
// see normkit.h): one rounding is within 2^-24 relative, so 2^-22 (4 half-ulps) leaves room only
// for fp64 summation-order noise (the atol, ~1e-14 for these sizes, covers means close to 0).
const nkt::Tolerance kStatTol{1e-12, 0x1p-22};

std::vector<double> as_doubles(const std::vector<float>& v) { return {v.begin(), v.end()}; }
std::vector<float> nan_floats(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool all_poisoned(const Buffer& b) {
  return std::all_of(b.bytes().begin(), b.bytes().end(), [](unsigned char c) { return c == 0xFF; });
}

// One problem: inputs in their storage dtypes; values() is what the library actually sees.
struct Problem {
  Config cfg;
  nk_row_desc desc;
  Buffer x, w, b, dy;

  Problem(const Config& c, int64_t rows, int64_t cols, const std::vector<double>& xv,
          const std::vector<double>& wv, const std::vector<double>& bv,
          const std::vector<double>& dyv)
      : cfg(c),
        desc{rows, cols, c.dtype, c.wdtype},
        x(c.dtype, xv),
        w(c.wdtype, wv),
        b(c.wdtype, bv),
        dy(c.dtype, dyv) {}

  static Problem random(nkt::Random& rng, const Config& c, Shape s, double mean = 0.0) {
    const int64_t n = s.first * s.second;
    return Problem(c, s.first, s.second, rng.normal(n, mean, 1.0), rng.normal(s.second, 1.0, 0.5),
                   rng.normal(s.second, 0.0, 0.5), rng.normal(n));
  }

  int64_t numel() const { return desc.rows * desc.cols; }
  bool has_weight() const {
    return cfg.affine == Affine::kWeight || cfg.affine == Affine::kWeightBias;
  }
  bool has_bias() const { return cfg.affine == Affine::kBias || cfg.affine == Affine::kWeightBias; }
  const void* weight() const { return has_weight() ? w.data() : nullptr; }
  const void* bias() const { return has_bias() ? b.data() : nullptr; }

  // The fp64 reference on the rounded inputs and rounded parameters.
  nkt::RowForwardRef reference(double eps) const {
    const std::vector<double> xv = x.values(), wv = w.values(), bv = b.values();
    return nkt::row_forward(cfg.rms, desc.rows, desc.cols, xv, has_weight() ? &wv : nullptr,
                            has_bias() ? &bv : nullptr, eps);
  }

  nk_status forward(nk_context ctx, double eps, const void* in, void* y, float* mean,
                    float* rstd) const {
    return cfg.rms ? nk_rms_norm_forward(ctx, &desc, eps, in, weight(), y, rstd)
                   : nk_layer_norm_forward(ctx, &desc, eps, in, weight(), bias(), y, mean, rstd);
  }
  // RMS norm has no dbias: db must be NULL for it.
  nk_status backward(nk_context ctx, const void* grad, const float* mean, const float* rstd,
                     void* dx, void* dw, void* db) const {
    return cfg.rms ? nk_rms_norm_backward(ctx, &desc, x.data(), grad, weight(), rstd, dx, dw)
                   : nk_layer_norm_backward(ctx, &desc, x.data(), grad, weight(), mean, rstd, dx,
                                            dw, db);
  }
};

struct Forward {
  Buffer y;
  std::vector<float> mean, rstd;  // mean stays NaN for RMS norm
};

Forward run_forward(nk_context ctx, const Problem& p, double eps) {
  Forward f{Buffer(p.cfg.dtype, p.numel()), nan_floats(p.desc.rows), nan_floats(p.desc.rows)};
  f.y.poison();
  EXPECT_EQ(p.forward(ctx, eps, p.x.data(), f.y.data(), f.mean.data(), f.rstd.data()), NK_SUCCESS)
      << nk_last_error();
  return f;
}

struct Grads {
  Buffer dx, dw, db;  // db stays poisoned for RMS norm
};

Grads poisoned_grads(const Problem& p) {
  Grads g{Buffer(p.cfg.dtype, p.numel()), Buffer(p.cfg.wdtype, p.desc.cols),
          Buffer(p.cfg.wdtype, p.desc.cols)};
  g.dx.poison();
  g.dw.poison();
  g.db.poison();
  return g;
}

Grads run_backward(nk_context ctx, const Problem& p, const Forward& f) {
  Grads g = poisoned_grads(p);
  EXPECT_EQ(p.backward(ctx, p.dy.data(), f.mean.data(), f.rstd.data(), g.dx.data(), g.dw.data(),
                       p.cfg.rms ? nullptr : g.db.data()),
            NK_SUCCESS)
      << nk_last_error();
  return g;
}

void expect_same_grads(const Grads& a, const Grads& b) {
  EXPECT_TRUE(a.dx.bytes() == b.dx.bytes()) << "dx differs bitwise";
  EXPECT_TRUE(a.dw.bytes() == b.dw.bytes()) << "dweight differs bitwise";
  EXPECT_TRUE(a.db.bytes() == b.db.bytes()) << "dbias differs bitwise";
}

std::string shape_name(Shape s) {
  return "rows " + std::to_string(s.first) + ", cols " + std::to_string(s.second);
}

// ---- hand-computed rows -------------------------------------------------------------------

// All inputs below are exact in f32, f16 and bf16, so each dtype sees the same row.
const nk_dtype kDtypes[] = {NK_F32, NK_F16, NK_BF16};

TEST(LayerNormHand, OneRowWithWeightAndBias) {
  // x = [1, 2, 3, 4], eps 0: mean = 10/4 = 2.5, deviations [-1.5, -0.5, 0.5, 1.5],
  // var = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25 = 5/4, rstd = 2/sqrt(5) (0.894427191),
  // xhat = [-3, -1, 1, 3] / sqrt(5). With weight [1, 2, 0.5, -1] and bias [0, 1, -1, 0.5]:
  // y = [-3/s5, 1 - 2/s5, -1 + 0.5/s5, 0.5 - 3/s5]
  //   = [-1.3416407865, 0.1055728090, -0.7763932023, -0.8416407865].
  const double s5 = std::sqrt(5.0);
  const std::vector<double> want = {-3 / s5, 1 - 2 / s5, -1 + 0.5 / s5, 0.5 - 3 / s5};
  nkt::CpuContext ctx;
  for (nk_dtype dt : kDtypes) {
    SCOPED_TRACE(nkt::name(dt));
    const Problem p({false, dt, dt, Affine::kWeightBias}, 1, 4, {1, 2, 3, 4}, {1, 2, 0.5, -1},
                    {0, 1, -1, 0.5}, {0, 0, 0, 0});
    const Forward f = run_forward(ctx, p, 0.0);
    nkt::expect_close(f.y.values(), want, nkt::output_tolerance(dt), "y");
    nkt::expect_close(as_doubles(f.mean), {2.5}, kStatTol, "save_mean");
    nkt::expect_close(as_doubles(f.rstd), {2 / s5}, kStatTol, "save_rstd");
  }
}

TEST(LayerNormHand, EpsEntersTheVarianceAndConstantRowGivesBias) {
  // Row 0: x = [1, 2, 3, 4] (var 1.25) with eps 0.75: var + eps = 2, rstd = 1/sqrt(2), no affine:
  //   y = [-1.5, -0.5, 0.5, 1.5] / sqrt(2) = [-1.0606601718, -0.3535533906, 0.35.., 1.06..].
  // Row 1: x = [5, 5, 5, 5]: mean 5, var 0, rstd = 1/sqrt(0.75), xhat = 0, so y = 0 exactly.
  const double r2 = std::sqrt(2.0);
  const std::vector<double> want = {-1.5 / r2, -0.5 / r2, 0.5 / r2, 1.5 / r2, 0, 0, 0, 0};
  nkt::CpuContext ctx;
  for (nk_dtype dt : kDtypes) {
    SCOPED_TRACE(nkt::name(dt));
    const Problem p({false, dt, NK_F32, Affine::kNone}, 2, 4, {1, 2, 3, 4, 5, 5, 5, 5},
                    {1, 1, 1, 1}, {0, 0, 0, 0}, std::vector<double>(8, 0.0));
    const Forward f = run_forward(ctx, p, 0.75);
    nkt::expect_close(f.y.values(), want, nkt::output_tolerance(dt), "y");
    nkt::expect_close(as_doubles(f.mean), {2.5, 5}, kStatTol, "save_mean");
    nkt::expect_close(as_doubles(f.rstd), {1 / r2, 1 / std::sqrt(0.75)}, kStatTol, "save_rstd");
  }
}

TEST(RmsNormHand, TwoValuesWithWeight) {
  // x = [3, 4], eps 0: mean square = (9 + 16) / 2 = 12.5, rstd = 1/sqrt(12.5) = sqrt(2)/5
  // (0.2828427125), xhat = [3, 4] * sqrt(2)/5. Weight [2, -0.5]:
  // y = [6 sqrt(2)/5, -2 sqrt(2)/5] = [1.6970562748, -0.5656854249].
  // With eps 3.5 and no weight: ms + eps = 16, rstd = 1/4, y = [0.75, 1].
  const double r2 = std::sqrt(2.0);
  nkt::CpuContext ctx;
  for (nk_dtype dt : kDtypes) {
    SCOPED_TRACE(nkt::name(dt));
    const Problem p({true, dt, dt, Affine::kWeight}, 1, 2, {3, 4}, {2, -0.5}, {0, 0}, {0, 0});
    const Forward f = run_forward(ctx, p, 0.0);
    nkt::expect_close(f.y.values(), {6 * r2 / 5, -2 * r2 / 5}, nkt::output_tolerance(dt), "y");
    nkt::expect_close(as_doubles(f.rstd), {r2 / 5}, kStatTol, "save_rstd");

    const Problem q({true, dt, NK_F32, Affine::kNone}, 1, 2, {3, 4}, {1, 1}, {0, 0}, {0, 0});
    const Forward g = run_forward(ctx, q, 3.5);
    nkt::expect_close(g.y.values(), {0.75, 1.0}, nkt::output_tolerance(dt), "y (eps 3.5)");
    nkt::expect_close(as_doubles(g.rstd), {0.25}, kStatTol, "save_rstd (eps 3.5)");
  }
}

// ---- forward against the fp64 reference ---------------------------------------------------

std::vector<Config> forward_configs() {
  std::vector<Config> out;
  for (bool rms : {false, true})
    for (nk_dtype dt : kDtypes)
      for (int k = 0; k < (dt == NK_F32 ? 1 : 2); ++k) {  // weight dtype f32, then that of x
        const nk_dtype wdt = k == 0 ? NK_F32 : dt;
        for (Affine a : {Affine::kNone, Affine::kWeight, Affine::kBias, Affine::kWeightBias})
          if (!rms || a == Affine::kNone || a == Affine::kWeight) out.push_back({rms, dt, wdt, a});
      }
  return out;
}

class RowNormForward : public ::testing::TestWithParam<Config> {};

TEST_P(RowNormForward, MatchesFp64Reference) {
  const Config c = GetParam();
  const double eps = 1e-5;
  nkt::Random rng;
  nkt::CpuContext ctx;
  for (Shape s : kShapes) {
    SCOPED_TRACE(shape_name(s));
    const Problem p = Problem::random(rng, c, s);
    const nkt::RowForwardRef ref = p.reference(eps);
    const Forward f = run_forward(ctx, p, eps);
    nkt::expect_close(f.y.values(), ref.y, nkt::output_tolerance(c.dtype), "y");
    nkt::expect_close(as_doubles(f.rstd), ref.rstd, kStatTol, "save_rstd");
    if (!c.rms) nkt::expect_close(as_doubles(f.mean), ref.mean, kStatTol, "save_mean");

    // The saved statistics are optional and do not change y.
    Buffer y2(c.dtype, p.numel());
    y2.poison();
    ASSERT_EQ(p.forward(ctx, eps, p.x.data(), y2.data(), nullptr, nullptr), NK_SUCCESS)
        << nk_last_error();
    EXPECT_TRUE(y2.bytes() == f.y.bytes()) << "y without saved statistics differs";
  }
}

INSTANTIATE_TEST_SUITE_P(All, RowNormForward, ::testing::ValuesIn(forward_configs()), config_name);

// Unit in the last place of v in dtype (subnormal spacing below the smallest normal).
double ulp(double v, nk_dtype dtype) {
  const int mantissa = dtype == NK_F32 ? 23 : dtype == NK_F16 ? 10 : 7;
  const int emin = dtype == NK_F16 ? -14 : -126;
  int e = 0;
  std::frexp(v, &e);  // |v| = m * 2^e, m in [0.5, 1): floor(log2 |v|) = e - 1
  const int exponent = v == 0 ? emin : std::max(e - 1, emin);
  return std::ldexp(1.0, exponent - mantissa);
}

class RowNormRounding : public ::testing::TestWithParam<Config> {};

// The library evaluates each output in a wide accumulator and rounds it once: every y lies within
// half an ulp of the exact value (plus a hair for fp64 evaluation-order noise, 1e-6 of that
// half-ulp and 1e-14 absolute), which is stricter than the "one ulp of the rounded reference".
TEST_P(RowNormRounding, OutputIsTheFp64ValueRoundedOnce) {
  const Config c = GetParam();
  const double eps = 1e-5;
  nkt::Random rng;
  nkt::CpuContext ctx;
  for (Shape s : {Shape{5, 17}, Shape{3, 128}, Shape{2, 1000}}) {
    SCOPED_TRACE(shape_name(s));
    const Problem p = Problem::random(rng, c, s);
    const std::vector<double> want = p.reference(eps).y;
    const std::vector<double> got = run_forward(ctx, p, eps).y.values();
    int failures = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double bound = 0.5 * ulp(want[i], c.dtype) * (1 + 1e-6) + 1e-14;
      if (!(std::abs(got[i] - want[i]) <= bound) && ++failures <= 5)
        ADD_FAILURE() << "y[" << i << "] = " << got[i] << ", exact " << want[i] << ", ulp "
                      << ulp(want[i], c.dtype);
    }
    EXPECT_EQ(failures, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(All, RowNormRounding,
                         ::testing::Values(Config{false, NK_F16, NK_F32, Affine::kWeightBias},
                                           Config{false, NK_F16, NK_F16, Affine::kWeightBias},
                                           Config{false, NK_BF16, NK_F32, Affine::kWeightBias},
                                           Config{false, NK_BF16, NK_BF16, Affine::kWeightBias},
                                           Config{false, NK_F32, NK_F32, Affine::kWeightBias},
                                           Config{true, NK_F16, NK_F16, Affine::kWeight},
                                           Config{true, NK_BF16, NK_F32, Affine::kWeight},
                                           Config{true, NK_BF16, NK_BF16, Affine::kWeight},
                                           Config{true, NK_F32, NK_F32, Affine::kNone}),
                         config_name);

TEST(RowNormInvariants, UnitRowsWithoutAffine) {
  // eps 0 (allowed: finite and >= 0), so that even a row of two nearly equal values has output
  // variance exactly var / (var + eps) = 1 (any eps > 0 would lower it for such rows). y is fp32
  // (relative error <= 2^-24 each), so row means and mean squares of |y| <~ 5 are off by < 1e-6.
  nkt::Random rng;
  nkt::CpuContext ctx;
  for (bool rms : {false, true}) {
    for (Shape s : {Shape{5, 17}, Shape{3, 128}, Shape{2, 1000}, Shape{4, 2}}) {
      SCOPED_TRACE(std::string(rms ? "rms, " : "layer, ") + shape_name(s));
      const Problem p =
          Problem::random(rng, {rms, NK_F32, NK_F32, Affine::kNone}, s, rms ? 0.0 : 3.0);
      const std::vector<double> y = run_forward(ctx, p, 0.0).y.values();
      for (int64_t r = 0; r < s.first; ++r) {
        double mean = 0, sq = 0;
        for (int64_t j = 0; j < s.second; ++j) mean += y[static_cast<size_t>(r * s.second + j)];
        mean /= static_cast<double>(s.second);
        for (int64_t j = 0; j < s.second; ++j) {
          const double d = y[static_cast<size_t>(r * s.second + j)] - (rms ? 0.0 : mean);
          sq += d * d;
        }
        sq /= static_cast<double>(s.second);
        if (!rms) {
          EXPECT_NEAR(mean, 0.0, 1e-6) << "row " << r << " mean";
        }
        EXPECT_NEAR(sq, 1.0, 1e-6) << "row " << r << (rms ? " mean square" : " variance");
      }
    }
  }
}

TEST(LayerNormForward, LargeOffsetHasNoCatastrophicCancellation) {
  // x ~ N(1e4, 1) in f32. E[x^2] ~ 1e8 where an fp32 ulp is 8, so an fp32 E[x^2] - E[x]^2 gets the
  // variance (~1) wrong by O(1) and y wrong by O(1); a naive fp32 running sum (~1e7, ulp 1) moves
  // the mean by ~1e-2. The CPU backend accumulates in fp64 (normkit.h), so y must meet the plain
  // f32 output tolerance (2e-5 + 2e-5 |y|), rstd and mean the fp32 statistic bound.
  nkt::Random rng;
  nkt::CpuContext ctx;
  for (Shape s : {Shape{3, 128}, Shape{2, 1000}, Shape{4, 4096}}) {
    SCOPED_TRACE(shape_name(s));
    const Problem p = Problem::random(rng, {false, NK_F32, NK_F32, Affine::kWeightBias}, s, 1e4);
    const nkt::RowForwardRef ref = p.reference(1e-5);
    const Forward f = run_forward(ctx, p, 1e-5);
    nkt::expect_close(f.y.values(), ref.y, nkt::output_tolerance(NK_F32), "y");
    nkt::expect_close(as_doubles(f.mean), ref.mean, kStatTol, "save_mean");
    nkt::expect_close(as_doubles(f.rstd), ref.rstd, kStatTol, "save_rstd");
  }
}

// ---- backward against finite differences --------------------------------------------------

class RowNormBackwardFD : public ::testing::TestWithParam<Config> {};

// f32 storage, the library's own saved statistics. The loss L(x, w, b) = <y_ref(x, w, b), dy> is
// evaluated in fp64, so the central differences are accurate to ~1e-9. The library's error comes
// from the fp32 saved mean/rstd and the fp32 outputs (~1e-7 relative, amplified by rstd where a
// row is nearly constant; eps 1e-3 caps rstd at ~32). Bound: 2e-5 + 1e-4 |expected|.
TEST_P(RowNormBackwardFD, MatchesFiniteDifferences) {
  const Config c = GetParam();
  const double eps = 1e-3;
  const nkt::Tolerance tol{2e-5, 1e-4};
  const int64_t rows = 3;
  nkt::Random rng;
  nkt::CpuContext ctx;
  for (int64_t cols = 1; cols <= 9; ++cols) {
    SCOPED_TRACE("cols " + std::to_string(cols));
    const Problem p = Problem::random(rng, c, {rows, cols});
    const Grads g = run_backward(ctx, p, run_forward(ctx, p, eps));

    std::vector<double> xv = p.x.values(), bv = p.b.values();
    std::vector<double> wv = p.has_weight() ? p.w.values() : std::vector<double>(cols, 1.0);
    const std::vector<double> r = p.dy.values();
    auto loss = [&] {
      return nkt::dot(nkt::row_forward(c.rms, rows, cols, xv, &wv, c.rms ? nullptr : &bv, eps).y,
                      r);
    };
    std::vector<double> dx(xv.size()), dw(wv.size()), db(bv.size());
    for (size_t i = 0; i < xv.size(); ++i) dx[i] = nkt::finite_difference(loss, xv, i);
    for (size_t j = 0; j < wv.size(); ++j) dw[j] = nkt::finite_difference(loss, wv, j);
    for (size_t j = 0; j < bv.size(); ++j) db[j] = nkt::finite_difference(loss, bv, j);

    nkt::expect_close(g.dx.values(), dx, tol, "dx");
    nkt::expect_close(g.dw.values(), dw, tol, "dweight");
    if (!c.rms)
      nkt::expect_close(g.db.values(), db, tol, "dbias");
    else
      EXPECT_TRUE(all_poisoned(g.db));
  }
}

INSTANTIATE_TEST_SUITE_P(All, RowNormBackwardFD,
                         ::testing::Values(Config{false, NK_F32, NK_F32, Affine::kNone},
                                           Config{false, NK_F32, NK_F32, Affine::kWeightBias},
                                           Config{true, NK_F32, NK_F32, Affine::kNone},
                                           Config{true, NK_F32, NK_F32, Affine::kWeight}),
                         config_name);

class RowNormBackwardHalf : public ::testing::TestWithParam<Config> {};

// f16/bf16 storage against f32 storage of the same (rounded) values: the half results are the
// wide result rounded once more, so they meet the dtype's output tolerance (dweight and dbias that
// of the weight dtype).
TEST_P(RowNormBackwardHalf, MatchesF32Backward) {
  const Config c = GetParam();
  const double eps = 1e-5;
  nkt::Random rng;
  nkt::CpuContext ctx;
  for (Shape s : {Shape{5, 17}, Shape{3, 128}, Shape{1, 1}}) {
    SCOPED_TRACE(shape_name(s));
    const Problem p = Problem::random(rng, c, s);
    const Problem p32({c.rms, NK_F32, NK_F32, c.affine}, s.first, s.second, p.x.values(),
                      p.w.values(), p.b.values(), p.dy.values());
    const Grads g = run_backward(ctx, p, run_forward(ctx, p, eps));
    const Grads g32 = run_backward(ctx, p32, run_forward(ctx, p32, eps));
    nkt::expect_close(g.dx.values(), g32.dx.values(), nkt::output_tolerance(c.dtype), "dx");
    nkt::expect_close(g.dw.values(), g32.dw.values(), nkt::output_tolerance(c.wdtype), "dweight");
    if (!c.rms)
      nkt::expect_close(g.db.values(), g32.db.values(), nkt::output_tolerance(c.wdtype), "dbias");
  }
}

INSTANTIATE_TEST_SUITE_P(All, RowNormBackwardHalf,
                         ::testing::Values(Config{false, NK_F16, NK_F32, Affine::kWeightBias},
                                           Config{false, NK_F16, NK_F16, Affine::kWeightBias},
                                           Config{false, NK_BF16, NK_F32, Affine::kWeightBias},
                                           Config{false, NK_BF16, NK_BF16, Affine::kWeightBias},
                                           Config{true, NK_F16, NK_F16, Affine::kWeight},
                                           Config{true, NK_F16, NK_F32, Affine::kWeight},
                                           Config{true, NK_BF16, NK_F32, Affine::kWeight},
                                           Config{true, NK_BF16, NK_BF16, Affine::kWeight}),
                         config_name);

// ---- call semantics: null outputs, aliasing, workspace, determinism -----------------------

class RowNormCalls : public ::testing::TestWithParam<Config> {
 protected:
  const double eps_ = 1e-5;
  nkt::Random rng_;
  nkt::CpuContext ctx_;
};

const Shape kCallShapes[] = {{1, 1}, {5, 17}, {2, 1000}};

TEST_P(RowNormCalls, NullGradientOutputsAreSkipped) {
  const Config c = GetParam();
  for (Shape s : kCallShapes) {
    SCOPED_TRACE(shape_name(s));
    const Problem p = Problem::random(rng_, c, s);
    const Forward f = run_forward(ctx_, p, eps_);
    const Grads full = run_backward(ctx_, p, f);
    const Buffer x0 = p.x, dy0 = p.dy, w0 = p.w;
    const std::vector<float> mean0 = f.mean, rstd0 = f.rstd;
    // Bit 0: dx, bit 1: dweight, bit 2: dbias (layer norm only). Mask 0 requests nothing.
    for (int mask = 0; mask < (c.rms ? 4 : 8); ++mask) {
      SCOPED_TRACE("requested outputs mask " + std::to_string(mask));
      Grads g = poisoned_grads(p);
      ASSERT_EQ(p.backward(ctx_, p.dy.data(), f.mean.data(), f.rstd.data(),
                           (mask & 1) ? g.dx.data() : nullptr, (mask & 2) ? g.dw.data() : nullptr,
                           (mask & 4) ? g.db.data() : nullptr),
                NK_SUCCESS)
          << nk_last_error();
      EXPECT_TRUE((mask & 1) ? g.dx.bytes() == full.dx.bytes() : all_poisoned(g.dx)) << "dx";
      EXPECT_TRUE((mask & 2) ? g.dw.bytes() == full.dw.bytes() : all_poisoned(g.dw)) << "dweight";
      EXPECT_TRUE((mask & 4) ? g.db.bytes() == full.db.bytes() : all_poisoned(g.db)) << "dbias";
      // Nothing else is written: inputs and saved statistics are unchanged.
      EXPECT_TRUE(p.x.bytes() == x0.bytes() && p.dy.bytes() == dy0.bytes() &&
                  p.w.bytes() == w0.bytes() && same_bits(f.mean, mean0) &&
                  same_bits(f.rstd, rstd0));
    }
  }
}

TEST_P(RowNormCalls, ForwardInPlaceMatchesOutOfPlace) {
  const Config c = GetParam();
  for (Shape s : kCallShapes) {
    SCOPED_TRACE(shape_name(s));
    const Problem p = Problem::random(rng_, c, s);
    const Forward f = run_forward(ctx_, p, eps_);
    Buffer inout = p.x;  // y == x
    std::vector<float> mean = nan_floats(s.first), rstd = nan_floats(s.first);
    ASSERT_EQ(p.forward(ctx_, eps_, inout.data(), inout.data(), mean.data(), rstd.data()),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_TRUE(inout.bytes() == f.y.bytes()) << "in-place y differs bitwise";
    EXPECT_TRUE(same_bits(rstd, f.rstd) && (c.rms || same_bits(mean, f.mean)));
  }
}

TEST_P(RowNormCalls, BackwardDxOverDyMatchesSeparateDx) {
  const Config c = GetParam();
  for (Shape s : kCallShapes) {
    SCOPED_TRACE(shape_name(s));
    const Problem p = Problem::random(rng_, c, s);
    const Forward f = run_forward(ctx_, p, eps_);
    const Grads separate = run_backward(ctx_, p, f);
    Grads g = poisoned_grads(p);
    g.dx = p.dy;  // dx == dy
    ASSERT_EQ(p.backward(ctx_, g.dx.data(), f.mean.data(), f.rstd.data(), g.dx.data(), g.dw.data(),
                         c.rms ? nullptr : g.db.data()),
              NK_SUCCESS)
        << nk_last_error();
    expect_same_grads(g, separate);
  }
}

TEST_P(RowNormCalls, WorkspaceOfQueriedSizeAndOneByteShort) {
  const Config c = GetParam();
  const char* fn = c.rms ? "nk_rms_norm_backward" : "nk_layer_norm_backward";
  for (Shape s : kCallShapes) {
    SCOPED_TRACE(shape_name(s));
    const Problem p = Problem::random(rng_, c, s);
    size_t fwd_bytes = 12345, bwd_bytes = 12345;
    ASSERT_EQ(c.rms ? nk_rms_norm_forward_workspace_size(ctx_, &p.desc, &fwd_bytes)
                    : nk_layer_norm_forward_workspace_size(ctx_, &p.desc, &fwd_bytes),
              NK_SUCCESS)
        << nk_last_error();
    ASSERT_EQ(c.rms ? nk_rms_norm_backward_workspace_size(ctx_, &p.desc, &bwd_bytes)
                    : nk_layer_norm_backward_workspace_size(ctx_, &p.desc, &bwd_bytes),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_NE(fwd_bytes, 12345u);
    EXPECT_NE(bwd_bytes, 12345u);
    const Forward f = run_forward(ctx_, p, eps_);  // no workspace: the op allocates
    const Grads want = run_backward(ctx_, p, f);

    // 256-byte aligned block, filled with 0xFF so that stale scratch would show in the results.
    const size_t cap = (std::max({fwd_bytes, bwd_bytes, size_t{1}}) + 255) / 256 * 256;
    std::unique_ptr<void, decltype(&std::free)> block(std::aligned_alloc(256, cap), &std::free);
    ASSERT_NE(block.get(), nullptr);
    std::memset(block.get(), 0xFF, cap);

    ASSERT_EQ(nk_context_set_workspace(ctx_, block.get(), fwd_bytes), NK_SUCCESS)
        << nk_last_error();
    const Forward fw = run_forward(ctx_, p, eps_);
    EXPECT_TRUE(fw.y.bytes() == f.y.bytes() && same_bits(fw.rstd, f.rstd) &&
                (c.rms || same_bits(fw.mean, f.mean)))
        << "forward with a workspace differs";

    ASSERT_EQ(nk_context_set_workspace(ctx_, block.get(), bwd_bytes), NK_SUCCESS)
        << nk_last_error();
    expect_same_grads(run_backward(ctx_, p, f), want);

    ASSERT_GT(bwd_bytes, 0u);  // the backward needs fp64 column sums
    ASSERT_EQ(nk_context_set_workspace(ctx_, block.get(), bwd_bytes - 1), NK_SUCCESS);
    Grads g = poisoned_grads(p);
    EXPECT_EQ(p.backward(ctx_, p.dy.data(), f.mean.data(), f.rstd.data(), g.dx.data(), g.dw.data(),
                         c.rms ? nullptr : g.db.data()),
              NK_ERROR_WORKSPACE);
    EXPECT_NE(std::strstr(nk_last_error(), fn), nullptr) << nk_last_error();
    EXPECT_TRUE(all_poisoned(g.dx) && all_poisoned(g.dw) && all_poisoned(g.db))
        << "a failing call wrote an output";

    ASSERT_EQ(nk_context_set_workspace(ctx_, nullptr, 0), NK_SUCCESS);  // allocate again
    expect_same_grads(run_backward(ctx_, p, f), want);
  }
}

TEST_P(RowNormCalls, RepeatedCallsAreBitwiseIdentical) {
  const Config c = GetParam();
  for (Shape s : kCallShapes) {
    SCOPED_TRACE(shape_name(s));
    const Problem p = Problem::random(rng_, c, s);
    const Forward f1 = run_forward(ctx_, p, eps_), f2 = run_forward(ctx_, p, eps_);
    EXPECT_TRUE(f1.y.bytes() == f2.y.bytes() && same_bits(f1.rstd, f2.rstd) &&
                (c.rms || same_bits(f1.mean, f2.mean)));
    expect_same_grads(run_backward(ctx_, p, f1), run_backward(ctx_, p, f1));
  }
}

INSTANTIATE_TEST_SUITE_P(All, RowNormCalls,
                         ::testing::Values(Config{false, NK_F32, NK_F32, Affine::kWeightBias},
                                           Config{false, NK_F16, NK_F16, Affine::kWeightBias},
                                           Config{false, NK_BF16, NK_F32, Affine::kWeightBias},
                                           Config{true, NK_F32, NK_F32, Affine::kWeight},
                                           Config{true, NK_BF16, NK_BF16, Affine::kWeight},
                                           Config{true, NK_F16, NK_F32, Affine::kNone}),
                         config_name);

}  // namespace
