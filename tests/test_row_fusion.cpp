// Fused layer and RMS norm on the CPU backend (nk_row_norm_fused_*), each fusion against a
// composition of existing operations on the same backend:
//  - residual add: h = x + residual + bias_in rounded to the dtype, then nk_layer_norm_forward /
//    nk_rms_norm_forward on h: h, y and the saved statistics have the same bytes;
//  - zero-centred weight: the plain calls with weight + 1 (gamma drawn in [0.5, 2) so that
//    gamma - 1 and back are exact): the same bytes, forward and backward;
//  - fp8 output: the fp64 reference y (nkt::row_forward), then src/fp8.hpp's encoding of y * scale
//    (scales chosen so that some values saturate): the same bytes; y_amax = max |y|; a NaN input
//    row gives 0x7F and a NaN amax;
//  - backward with a residual: dx = dresidual = plain dx + dh_extra (within one rounding), dweight
//    and dbias the plain ones' bytes, dbias_in the column sums of the stored dx;
//  - no fusion: the plain calls' bytes; every validation error, with nothing written.
// Inputs are fresh random values every run (the seed is printed); outputs are poisoned first and
// every element is checked.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "fp8.hpp"
#include "test_support.hpp"

namespace {

using nkt::Buffer;

struct Config {
  bool rms;
  nk_dtype dtype, wdtype;
};

std::string config_name(const ::testing::TestParamInfo<Config>& info) {
  const Config& c = info.param;
  return std::string(c.rms ? "Rms_" : "Layer_") + nkt::name(c.dtype) + "_w" + nkt::name(c.wdtype);
}

const std::pair<int64_t, int64_t> kShapes[] = {{1, 1}, {3, 40}, {5, 17}, {2, 1000}};
constexpr double kEps = 1e-5;

std::vector<float> nan_floats(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
}
bool same_bytes(const Buffer& a, const Buffer& b) { return a.bytes() == b.bytes(); }
bool same_floats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool all_poisoned(const Buffer& b) {
  for (unsigned char c : b.bytes()) {
    if (c != 0xFF) return false;
  }
  return true;
}

nk_row_fusion fusion_of(bool rms) {
  nk_row_fusion f = nk_row_fusion_default();
  f.norm = rms ? NK_RMS_NORM : NK_LAYER_NORM;
  return f;
}

// The plain calls (bias and save_mean ignored for RMS norm).
nk_status plain_forward(nk_context ctx, bool rms, const nk_row_desc& d, const void* x,
                        const void* w, const void* b, void* y, float* mean, float* rstd) {
  return rms ? nk_rms_norm_forward(ctx, &d, kEps, x, w, y, rstd)
             : nk_layer_norm_forward(ctx, &d, kEps, x, w, b, y, mean, rstd);
}
nk_status plain_backward(nk_context ctx, bool rms, const nk_row_desc& d, const void* x,
                         const void* dy, const void* w, const float* mean, const float* rstd,
                         void* dx, void* dw, void* db) {
  return rms ? nk_rms_norm_backward(ctx, &d, x, dy, w, rstd, dx, dw)
             : nk_layer_norm_backward(ctx, &d, x, dy, w, mean, rstd, dx, dw, db);
}

// The fused forward and backward with fusion f against the plain calls on the same x and dy:
// `w` is the weight as the fused call takes it, `gamma` the one the plain calls take. Every output
// (y, the saved statistics, dx, dweight, dbias) must have the plain calls' bytes.
void expect_fused_equals_plain(nk_context ctx, const Config& c, const nk_row_desc& d,
                               const nk_row_fusion& f, const Buffer& x, const Buffer& dy,
                               const Buffer& w, const Buffer& gamma, const Buffer& b) {
  const int64_t rows = d.rows, cols = d.cols, n = rows * cols;
  Buffer y_ref(c.dtype, n), y(c.dtype, n);
  std::vector<float> mean_ref = nan_floats(rows), rstd_ref = nan_floats(rows);
  ASSERT_EQ(plain_forward(ctx, c.rms, d, x.data(), gamma.data(), b.data(), y_ref.data(),
                          mean_ref.data(), rstd_ref.data()),
            NK_SUCCESS);
  y.poison();
  std::vector<float> mean = nan_floats(rows), rstd = nan_floats(rows);
  nk_row_fused_forward_buffers fb{};
  fb.x = x.data();
  fb.weight = w.data();
  fb.bias = c.rms ? nullptr : b.data();
  fb.y = y.data();
  fb.save_mean = c.rms ? nullptr : mean.data();
  fb.save_rstd = rstd.data();
  ASSERT_EQ(nk_row_norm_fused_forward(ctx, &d, &f, kEps, &fb), NK_SUCCESS) << nk_last_error();
  EXPECT_TRUE(same_bytes(y, y_ref));
  EXPECT_TRUE(same_floats(rstd, rstd_ref));
  EXPECT_TRUE(same_floats(mean, mean_ref));

  Buffer dx_ref(c.dtype, n), dw_ref(c.wdtype, cols), db_ref(c.wdtype, cols);
  ASSERT_EQ(plain_backward(ctx, c.rms, d, x.data(), dy.data(), gamma.data(), mean_ref.data(),
                           rstd_ref.data(), dx_ref.data(), dw_ref.data(), db_ref.data()),
            NK_SUCCESS);
  Buffer dx(c.dtype, n), dw(c.wdtype, cols), db(c.wdtype, cols);
  dx.poison();
  dw.poison();
  db.poison();
  nk_row_fused_backward_buffers bb{};
  bb.x = x.data();
  bb.dy = dy.data();
  bb.weight = w.data();
  bb.save_mean = c.rms ? nullptr : mean.data();
  bb.save_rstd = rstd.data();
  bb.dx = dx.data();
  bb.dweight = dw.data();
  bb.dbias = c.rms ? nullptr : db.data();
  ASSERT_EQ(nk_row_norm_fused_backward(ctx, &d, &f, &bb), NK_SUCCESS) << nk_last_error();
  EXPECT_TRUE(same_bytes(dx, dx_ref));
  EXPECT_TRUE(same_bytes(dw, dw_ref));
  if (!c.rms) {
    EXPECT_TRUE(same_bytes(db, db_ref));
  }
}

class RowFusion : public ::testing::TestWithParam<Config> {
 protected:
  nkt::CpuContext ctx;
  nkt::Random rng;
  void SetUp() override { RecordProperty("seed", std::to_string(rng.seed())); }
};

TEST_P(RowFusion, ResidualAddMatchesAddThenNorm) {
  const Config c = GetParam();
  for (auto [rows, cols] : kShapes) {
    SCOPED_TRACE(::testing::Message() << rows << " x " << cols << ", seed " << rng.seed());
    const nk_row_desc d{rows, cols, c.dtype, c.wdtype};
    const int64_t n = rows * cols;
    const Buffer x(c.dtype, rng.normal(n)), r(c.dtype, rng.normal(n, 0.5, 2.0)),
        bin(c.wdtype, rng.normal(cols)), w(c.wdtype, rng.normal(cols, 1.0, 0.5)),
        b(c.wdtype, rng.normal(cols));
    // The composition: h rounded once to the dtype, then the plain forward.
    std::vector<double> hv(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) hv[i] = x.get(i) + r.get(i) + bin.get(i % cols);
    const Buffer h_ref(c.dtype, hv);
    Buffer y_ref(c.dtype, n);
    std::vector<float> mean_ref = nan_floats(rows), rstd_ref = nan_floats(rows);
    ASSERT_EQ(plain_forward(ctx, c.rms, d, h_ref.data(), w.data(), b.data(), y_ref.data(),
                            mean_ref.data(), rstd_ref.data()),
              NK_SUCCESS);

    nk_row_fusion f = fusion_of(c.rms);
    f.residual = NK_RESIDUAL_ADD;
    Buffer h(c.dtype, n), y(c.dtype, n);
    h.poison();
    y.poison();
    std::vector<float> mean = nan_floats(rows), rstd = nan_floats(rows);
    nk_row_fused_forward_buffers fb{};
    fb.x = x.data();
    fb.residual = r.data();
    fb.bias_in = bin.data();
    fb.weight = w.data();
    fb.bias = c.rms ? nullptr : b.data();
    fb.h = h.data();
    fb.y = y.data();
    fb.save_mean = c.rms ? nullptr : mean.data();
    fb.save_rstd = rstd.data();
    ASSERT_EQ(nk_row_norm_fused_forward(ctx, &d, &f, kEps, &fb), NK_SUCCESS) << nk_last_error();
    EXPECT_TRUE(same_bytes(h, h_ref));
    EXPECT_TRUE(same_bytes(y, y_ref));
    EXPECT_TRUE(same_floats(rstd, rstd_ref));
    EXPECT_TRUE(same_floats(mean, mean_ref));  // both NaN (untouched) for RMS norm

    // Without h and bias_in: the same y as the plain call on x + residual.
    std::vector<double> sum(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) sum[i] = x.get(i) + r.get(i);
    const Buffer h2(c.dtype, sum);
    ASSERT_EQ(
        plain_forward(ctx, c.rms, d, h2.data(), w.data(), b.data(), y_ref.data(), nullptr, nullptr),
        NK_SUCCESS);
    y.poison();
    fb.bias_in = nullptr;
    fb.h = nullptr;
    ASSERT_EQ(nk_row_norm_fused_forward(ctx, &d, &f, kEps, &fb), NK_SUCCESS) << nk_last_error();
    EXPECT_TRUE(same_bytes(y, y_ref));
  }
}

TEST_P(RowFusion, ZeroCenteredWeightMatchesWeightPlusOne) {
  const Config c = GetParam();
  for (auto [rows, cols] : kShapes) {
    SCOPED_TRACE(::testing::Message() << rows << " x " << cols << ", seed " << rng.seed());
    const nk_row_desc d{rows, cols, c.dtype, c.wdtype};
    const int64_t n = rows * cols;
    // gamma in [0.5, 2): gamma - 1 is exact (Sterbenz), and so is (gamma - 1) + 1.
    const Buffer gamma(c.wdtype, rng.uniform(cols, 0.5, 1.999));
    std::vector<double> wv = gamma.values();
    for (double& v : wv) v -= 1.0;
    const Buffer w(c.wdtype, wv), b(c.wdtype, rng.normal(cols)), x(c.dtype, rng.normal(n, 3.0)),
        dy(c.dtype, rng.normal(n));
    nk_row_fusion f = fusion_of(c.rms);
    f.weight_form = NK_WEIGHT_ZERO_CENTERED;
    expect_fused_equals_plain(ctx, c, d, f, x, dy, w, gamma, b);
  }
}

TEST_P(RowFusion, Fp8OutputIsTheEncodingOfTheScaledReference) {
  const Config c = GetParam();
  for (bool e5m2 : {false, true}) {
    for (auto [rows, cols] : kShapes) {
      SCOPED_TRACE(::testing::Message() << (e5m2 ? "E5M2 " : "E4M3 ") << rows << " x " << cols
                                        << ", seed " << rng.seed());
      const nk_row_desc d{rows, cols, c.dtype, c.wdtype};
      const int64_t n = rows * cols;
      const Buffer x(c.dtype, rng.normal(n, 1.0, 2.0)), w(c.wdtype, rng.normal(cols, 1.0, 0.5)),
          b(c.wdtype, rng.normal(cols));
      // Scales that saturate |y| above about 2 (and, e4m3, reach the subnormals near 0).
      const float scale = e5m2 ? 25000.0f : 200.0f;
      const std::vector<double> xv = x.values(), wv = w.values(), bv = b.values();
      const nkt::RowForwardRef ref =
          nkt::row_forward(c.rms, rows, cols, xv, &wv, c.rms ? nullptr : &bv, kEps);
      nk_row_fusion f = fusion_of(c.rms);
      f.output = e5m2 ? NK_OUTPUT_FP8_E5M2 : NK_OUTPUT_FP8_E4M3;
      std::vector<uint8_t> y(static_cast<size_t>(n), 0xAB);
      float amax = std::numeric_limits<float>::quiet_NaN();
      nk_row_fused_forward_buffers fb{};
      fb.x = x.data();
      fb.weight = w.data();
      fb.bias = c.rms ? nullptr : b.data();
      fb.y = y.data();
      fb.y_scale = &scale;
      fb.y_amax = &amax;
      ASSERT_EQ(nk_row_norm_fused_forward(ctx, &d, &f, kEps, &fb), NK_SUCCESS) << nk_last_error();
      double max_abs = 0;
      int bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        max_abs = std::fmax(max_abs, std::fabs(ref.y[i]));
        const uint8_t want = nk::encode_fp8(ref.y[i] * scale, e5m2);
        if (y[i] != want && bad++ < 5) {
          ADD_FAILURE() << "y[" << i << "] = 0x" << std::hex << int{y[i]} << ", expected 0x"
                        << int{want} << std::dec << " (y " << ref.y[i] << ")";
        }
      }
      EXPECT_EQ(bad, 0);
      EXPECT_NEAR(amax, max_abs, 1e-6 * max_abs);
    }
  }
}

TEST_P(RowFusion, Fp8NanRowGivesNanCodesAndNanAmax) {
  const Config c = GetParam();
  const int64_t rows = 3, cols = 24, n = rows * cols;
  const nk_row_desc d{rows, cols, c.dtype, c.wdtype};
  Buffer x(c.dtype, rng.normal(n));
  x.set(cols + 5, std::numeric_limits<double>::quiet_NaN());  // row 1
  const float scale = 1.0f;
  nk_row_fusion f = fusion_of(c.rms);
  f.output = NK_OUTPUT_FP8_E4M3;
  std::vector<uint8_t> y(static_cast<size_t>(n), 0xAB);
  float amax = 0.0f;
  nk_row_fused_forward_buffers fb{};
  fb.x = x.data();
  fb.y = y.data();
  fb.y_scale = &scale;
  fb.y_amax = &amax;
  ASSERT_EQ(nk_row_norm_fused_forward(ctx, &d, &f, kEps, &fb), NK_SUCCESS) << nk_last_error();
  EXPECT_TRUE(std::isnan(amax));
  for (int64_t j = 0; j < cols; ++j) EXPECT_EQ(y[cols + j], 0x7F) << j;  // the whole row is NaN
  for (int64_t j = 0; j < cols; ++j) EXPECT_NE(y[j], 0x7F) << j;
}

TEST_P(RowFusion, ResidualBackwardAddsTheExtraGradientAndSumsDbiasIn) {
  const Config c = GetParam();
  const nkt::Tolerance tol = nkt::output_tolerance(c.dtype);
  for (auto [rows, cols] : kShapes) {
    SCOPED_TRACE(::testing::Message() << rows << " x " << cols << ", seed " << rng.seed());
    const nk_row_desc d{rows, cols, c.dtype, c.wdtype};
    const int64_t n = rows * cols;
    const Buffer h(c.dtype, rng.normal(n, 2.0)), dy(c.dtype, rng.normal(n)),
        extra(c.dtype, rng.normal(n)), w(c.wdtype, rng.normal(cols, 1.0, 0.5));
    std::vector<float> mean = nan_floats(rows), rstd = nan_floats(rows);
    Buffer y(c.dtype, n);
    ASSERT_EQ(plain_forward(ctx, c.rms, d, h.data(), w.data(), nullptr, y.data(), mean.data(),
                            rstd.data()),
              NK_SUCCESS);
    const float* m = c.rms ? nullptr : mean.data();
    Buffer dx_ref(c.dtype, n), dw_ref(c.wdtype, cols), db_ref(c.wdtype, cols);
    ASSERT_EQ(plain_backward(ctx, c.rms, d, h.data(), dy.data(), w.data(), m, rstd.data(),
                             dx_ref.data(), dw_ref.data(), db_ref.data()),
              NK_SUCCESS);

    nk_row_fusion f = fusion_of(c.rms);
    f.residual = NK_RESIDUAL_ADD;
    Buffer dx(c.dtype, n), dres(c.dtype, n), dbin(c.wdtype, cols), dw(c.wdtype, cols),
        db(c.wdtype, cols);
    for (Buffer* o : {&dx, &dres, &dbin, &dw, &db}) o->poison();
    nk_row_fused_backward_buffers bb{};
    bb.x = h.data();
    bb.dy = dy.data();
    bb.dh_extra = extra.data();
    bb.weight = w.data();
    bb.save_mean = m;
    bb.save_rstd = rstd.data();
    bb.dx = dx.data();
    bb.dresidual = dres.data();
    bb.dbias_in = dbin.data();
    bb.dweight = dw.data();
    bb.dbias = c.rms ? nullptr : db.data();
    ASSERT_EQ(nk_row_norm_fused_backward(ctx, &d, &f, &bb), NK_SUCCESS) << nk_last_error();
    // dh is rounded once, the composition twice: within one rounding of |dx_ref| + |extra|.
    int bad = 0;
    std::vector<double> col_sum(static_cast<size_t>(cols), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double want = dx_ref.get(i) + extra.get(i);
      const double bound =
          tol.atol + tol.rtol * (std::fabs(dx_ref.get(i)) + std::fabs(extra.get(i)));
      if (!(std::fabs(dx.get(i) - want) <= bound) && bad++ < 5) {
        ADD_FAILURE() << "dx[" << i << "] = " << dx.get(i) << ", expected " << want;
      }
      col_sum[i % cols] += dx.get(i);
    }
    EXPECT_EQ(bad, 0);
    EXPECT_TRUE(same_bytes(dres, dx));
    EXPECT_TRUE(same_bytes(dbin, Buffer(c.wdtype, col_sum)));
    EXPECT_TRUE(same_bytes(dw, dw_ref));
    if (!c.rms) {
      EXPECT_TRUE(same_bytes(db, db_ref));
    }

    // No extra gradient, dresidual only: the plain dx's bytes.
    dres.poison();
    bb.dh_extra = nullptr;
    bb.dx = nullptr;
    bb.dbias_in = nullptr;
    bb.dweight = nullptr;
    bb.dbias = nullptr;
    ASSERT_EQ(nk_row_norm_fused_backward(ctx, &d, &f, &bb), NK_SUCCESS) << nk_last_error();
    EXPECT_TRUE(same_bytes(dres, dx_ref));
  }
}

TEST_P(RowFusion, NoFusionGivesThePlainCallsBytes) {
  const Config c = GetParam();
  const int64_t rows = 4, cols = 33, n = rows * cols;
  const nk_row_desc d{rows, cols, c.dtype, c.wdtype};
  const Buffer x(c.dtype, rng.normal(n, 5.0)), dy(c.dtype, rng.normal(n)),
      w(c.wdtype, rng.normal(cols, 1.0, 0.5)), b(c.wdtype, rng.normal(cols));
  expect_fused_equals_plain(ctx, c, d, fusion_of(c.rms), x, dy, w, w, b);
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, RowFusion,
    ::testing::Values(Config{false, NK_F32, NK_F32}, Config{false, NK_F16, NK_F16},
                      Config{false, NK_BF16, NK_BF16}, Config{false, NK_BF16, NK_F32},
                      Config{true, NK_F32, NK_F32}, Config{true, NK_F16, NK_F16},
                      Config{true, NK_BF16, NK_BF16}),
    config_name);

// ---- validation: each error path, with every output left untouched --------------------------

struct ForwardCall {
  int64_t rows = 2, cols = 8;
  nk_row_desc desc{2, 8, NK_F32, NK_F32};
  nk_row_fusion fusion = nk_row_fusion_default();
  double eps = kEps;
  Buffer x{NK_F32, std::vector<double>(16, 1.5)}, r{NK_F32, std::vector<double>(16, 0.5)};
  Buffer bin{NK_F32, std::vector<double>(8, 0.1)}, w{NK_F32, std::vector<double>(8, 1.0)};
  Buffer h{NK_F32, 16}, y{NK_F32, 16}, y8{NK_F32, 4};  // y8: 16 bytes of fp8
  float scale = 1.0f, amax = 0.0f;
  std::vector<float> mean = nan_floats(2), rstd = nan_floats(2);
  nk_row_fused_forward_buffers b{};
  ForwardCall() {
    h.poison();
    y.poison();
    y8.poison();
    b.x = x.data();
    b.weight = w.data();
    b.y = y.data();
    b.save_mean = mean.data();
    b.save_rstd = rstd.data();
  }
  bool untouched() const {
    float poisoned_amax = 0.0f;
    return all_poisoned(h) && all_poisoned(y) && all_poisoned(y8) && amax == poisoned_amax &&
           std::isnan(mean[0]) && std::isnan(mean[1]) && std::isnan(rstd[0]) && std::isnan(rstd[1]);
  }
};

void expect_forward_error(const char* what, const std::function<void(ForwardCall&)>& mutate,
                          const std::string& message_part, bool null_fusion = false,
                          bool null_buffers = false) {
  SCOPED_TRACE(what);
  nkt::CpuContext ctx;
  ForwardCall call;
  mutate(call);
  const nk_status s =
      nk_row_norm_fused_forward(ctx, &call.desc, null_fusion ? nullptr : &call.fusion, call.eps,
                                null_buffers ? nullptr : &call.b);
  EXPECT_EQ(s, NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find(message_part), std::string::npos) << nk_last_error();
  EXPECT_TRUE(call.untouched());
}

TEST(RowFusionValidation, ForwardErrorPaths) {
  auto fp8 = [](ForwardCall& c) {
    c.fusion.output = NK_OUTPUT_FP8_E4M3;
    c.b.y = c.y8.data();
    c.b.y_scale = &c.scale;
  };
  auto rms = [](ForwardCall& c) {
    c.fusion.norm = NK_RMS_NORM;
    c.b.save_mean = nullptr;
  };
  expect_forward_error(
      "fusion NULL", [](ForwardCall&) {}, "fusion is NULL", true);
  expect_forward_error(
      "buffers NULL", [](ForwardCall&) {}, "buffers is NULL", false, true);
  expect_forward_error(
      "bad norm", [](ForwardCall& c) { c.fusion.norm = static_cast<nk_row_norm>(7); },
      "fusion->norm = 7");
  expect_forward_error(
      "bad residual", [](ForwardCall& c) { c.fusion.residual = static_cast<nk_residual>(-1); },
      "fusion->residual = -1");
  expect_forward_error(
      "bad weight form",
      [](ForwardCall& c) { c.fusion.weight_form = static_cast<nk_weight_form>(2); },
      "fusion->weight_form = 2");
  expect_forward_error(
      "bad output", [](ForwardCall& c) { c.fusion.output = static_cast<nk_output_format>(3); },
      "fusion->output = 3");
  expect_forward_error(
      "negative eps", [](ForwardCall& c) { c.eps = -1.0; }, "eps = -1");
  expect_forward_error(
      "x NULL", [](ForwardCall& c) { c.b.x = nullptr; }, "x is NULL");
  expect_forward_error(
      "y NULL", [](ForwardCall& c) { c.b.y = nullptr; }, "y is NULL");
  expect_forward_error(
      "residual missing", [](ForwardCall& c) { c.fusion.residual = NK_RESIDUAL_ADD; },
      "residual is NULL with fusion->residual = NK_RESIDUAL_ADD");
  expect_forward_error(
      "residual unused", [](ForwardCall& c) { c.b.residual = c.r.data(); },
      "residual is not NULL with fusion->residual = NK_RESIDUAL_NONE");
  expect_forward_error(
      "h unused", [](ForwardCall& c) { c.b.h = c.h.data(); },
      "h is not NULL with fusion->residual = NK_RESIDUAL_NONE");
  expect_forward_error(
      "bias_in unused", [](ForwardCall& c) { c.b.bias_in = c.bin.data(); },
      "bias_in is not NULL with fusion->residual = NK_RESIDUAL_NONE");
  expect_forward_error(
      "zero-centred without weight",
      [](ForwardCall& c) {
        c.fusion.weight_form = NK_WEIGHT_ZERO_CENTERED;
        c.b.weight = nullptr;
      },
      "weight is NULL with fusion->weight_form = NK_WEIGHT_ZERO_CENTERED");
  expect_forward_error(
      "RMS with bias",
      [&](ForwardCall& c) {
        rms(c);
        c.b.bias = c.bin.data();
      },
      "bias is not NULL for RMS norm");
  expect_forward_error(
      "RMS with save_mean",
      [&](ForwardCall& c) {
        rms(c);
        c.b.save_mean = c.mean.data();
      },
      "save_mean is not NULL for RMS norm");
  expect_forward_error(
      "fp8 without y_scale",
      [&](ForwardCall& c) {
        fp8(c);
        c.b.y_scale = nullptr;
      },
      "y_scale is NULL with fusion->output = NK_OUTPUT_FP8_E4M3");
  expect_forward_error(
      "y_scale without fp8", [](ForwardCall& c) { c.b.y_scale = &c.scale; },
      "y_scale is not NULL with fusion->output = NK_OUTPUT_DTYPE");
  expect_forward_error(
      "y_amax without fp8", [](ForwardCall& c) { c.b.y_amax = &c.amax; },
      "y_amax is not NULL with fusion->output = NK_OUTPUT_DTYPE");
  expect_forward_error(
      "fp8 in place",
      [&](ForwardCall& c) {
        fp8(c);
        c.b.y = const_cast<void*>(c.b.x);
      },
      "an fp8 output cannot overwrite its input");
  expect_forward_error(
      "h overlaps y",
      [](ForwardCall& c) {
        c.fusion.residual = NK_RESIDUAL_ADD;
        c.b.residual = c.r.data();
        c.b.h = c.y.data();
      },
      "h (");
  expect_forward_error(
      "bias_in misaligned",
      [](ForwardCall& c) {
        c.fusion.residual = NK_RESIDUAL_ADD;
        c.b.residual = c.r.data();
        c.b.bias_in = static_cast<const char*>(c.bin.data()) + 2;
      },
      "bias_in = ");
}

struct BackwardCall {
  nk_row_desc desc{2, 8, NK_F32, NK_F32};
  nk_row_fusion fusion = nk_row_fusion_default();
  Buffer x{NK_F32, std::vector<double>(16, 1.5)}, dy{NK_F32, std::vector<double>(16, 0.5)};
  Buffer w{NK_F32, std::vector<double>(8, 1.0)};
  std::vector<float> mean = std::vector<float>(2, 0.0f), rstd = std::vector<float>(2, 1.0f);
  Buffer dx{NK_F32, 16}, dres{NK_F32, 16}, dbin{NK_F32, 8}, dw{NK_F32, 8}, db{NK_F32, 8};
  nk_row_fused_backward_buffers b{};
  BackwardCall() {
    for (Buffer* o : {&dx, &dres, &dbin, &dw, &db}) o->poison();
    b.x = x.data();
    b.dy = dy.data();
    b.weight = w.data();
    b.save_mean = mean.data();
    b.save_rstd = rstd.data();
    b.dx = dx.data();
    b.dweight = dw.data();
    b.dbias = db.data();
  }
  bool untouched() const {
    return all_poisoned(dx) && all_poisoned(dres) && all_poisoned(dbin) && all_poisoned(dw) &&
           all_poisoned(db);
  }
};

void expect_backward_error(const char* what, const std::function<void(BackwardCall&)>& mutate,
                           const std::string& message_part, bool null_fusion = false,
                           bool null_buffers = false) {
  SCOPED_TRACE(what);
  nkt::CpuContext ctx;
  BackwardCall call;
  mutate(call);
  const nk_status s = nk_row_norm_fused_backward(
      ctx, &call.desc, null_fusion ? nullptr : &call.fusion, null_buffers ? nullptr : &call.b);
  EXPECT_EQ(s, NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find(message_part), std::string::npos) << nk_last_error();
  EXPECT_TRUE(call.untouched());
}

TEST(RowFusionValidation, BackwardErrorPaths) {
  auto residual = [](BackwardCall& c) { c.fusion.residual = NK_RESIDUAL_ADD; };
  auto rms = [](BackwardCall& c) {
    c.fusion.norm = NK_RMS_NORM;
    c.b.save_mean = nullptr;
    c.b.dbias = nullptr;
  };
  expect_backward_error(
      "fusion NULL", [](BackwardCall&) {}, "fusion is NULL", true);
  expect_backward_error(
      "buffers NULL", [](BackwardCall&) {}, "buffers is NULL", false, true);
  expect_backward_error(
      "bad output", [](BackwardCall& c) { c.fusion.output = static_cast<nk_output_format>(9); },
      "fusion->output = 9");
  expect_backward_error(
      "x NULL", [](BackwardCall& c) { c.b.x = nullptr; }, "x is NULL");
  expect_backward_error(
      "dy NULL", [](BackwardCall& c) { c.b.dy = nullptr; }, "dy is NULL");
  expect_backward_error(
      "save_rstd NULL", [](BackwardCall& c) { c.b.save_rstd = nullptr; }, "save_rstd is NULL");
  expect_backward_error(
      "save_mean NULL", [](BackwardCall& c) { c.b.save_mean = nullptr; }, "save_mean is NULL");
  expect_backward_error(
      "RMS with save_mean",
      [&](BackwardCall& c) {
        rms(c);
        c.b.save_mean = c.mean.data();
      },
      "save_mean is not NULL for RMS norm");
  expect_backward_error(
      "RMS with dbias",
      [&](BackwardCall& c) {
        rms(c);
        c.b.dbias = c.db.data();
      },
      "dbias is not NULL for RMS norm");
  expect_backward_error(
      "dh_extra unused", [](BackwardCall& c) { c.b.dh_extra = c.dy.data(); },
      "dh_extra is not NULL with fusion->residual = NK_RESIDUAL_NONE");
  expect_backward_error(
      "dresidual unused", [](BackwardCall& c) { c.b.dresidual = c.dres.data(); },
      "dresidual is not NULL with fusion->residual = NK_RESIDUAL_NONE");
  expect_backward_error(
      "dbias_in unused", [](BackwardCall& c) { c.b.dbias_in = c.dbin.data(); },
      "dbias_in is not NULL with fusion->residual = NK_RESIDUAL_NONE");
  expect_backward_error(
      "dbias_in without dh",
      [&](BackwardCall& c) {
        residual(c);
        c.b.dbias_in = c.dbin.data();
        c.b.dx = nullptr;
      },
      "dbias_in is not NULL while dx and dresidual are NULL");
  expect_backward_error(
      "zero-centred without weight",
      [](BackwardCall& c) {
        c.fusion.weight_form = NK_WEIGHT_ZERO_CENTERED;
        c.b.weight = nullptr;
      },
      "weight is NULL with fusion->weight_form = NK_WEIGHT_ZERO_CENTERED");
  expect_backward_error(
      "dresidual overlaps dx",
      [&](BackwardCall& c) {
        residual(c);
        c.b.dresidual = c.dx.data();
      },
      "overlaps dresidual");
}

TEST(RowFusionWorkspace, QueriesOnTheCpu) {
  nkt::CpuContext ctx;
  const nk_row_desc d{4, 100, NK_BF16, NK_F32};
  nk_row_fusion f = nk_row_fusion_default();
  f.residual = NK_RESIDUAL_ADD;
  f.output = NK_OUTPUT_FP8_E5M2;
  size_t fwd = 1, plain = 0, fused = 0;
  ASSERT_EQ(nk_row_norm_fused_forward_workspace_size(ctx, &d, &f, &fwd), NK_SUCCESS);
  EXPECT_EQ(fwd, 0u);
  ASSERT_EQ(nk_layer_norm_backward_workspace_size(ctx, &d, &plain), NK_SUCCESS);
  ASSERT_EQ(nk_row_norm_fused_backward_workspace_size(ctx, &d, &f, &fused), NK_SUCCESS);
  EXPECT_GE(fused, plain + 8 * 100);  // dbias_in's fp64 column sums
  f.output = static_cast<nk_output_format>(5);
  EXPECT_EQ(nk_row_norm_fused_forward_workspace_size(ctx, &d, &f, &fwd), NK_ERROR_INVALID_VALUE);
}

}  // namespace
