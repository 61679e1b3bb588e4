// The header-only C++ API: RAII context, nk::Error with status and message, and typed overloads
// that give the same bytes as the C calls they wrap.
#include <cmath>
#include <cstdint>
#include <normkit/normkit.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "test_support.hpp"

namespace {

static_assert(!std::is_copy_constructible_v<nk::Context>, "a context is owned once");
static_assert(std::is_nothrow_move_constructible_v<nk::Context>, "contexts move");
static_assert(sizeof(nk::half) == 2 && sizeof(nk::bfloat16) == 2, "16-bit storage types");

TEST(CppApi, ContextIsMovableAndReportsBackend) {
  nk::Context a = nk::Context::cpu();
  EXPECT_EQ(a.backend(), NK_BACKEND_CPU);
  nk_context raw = a.get();
  nk::Context b(std::move(a));
  EXPECT_EQ(b.get(), raw);
  EXPECT_EQ(a.get(),
            nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  nk::Context c = nk::Context::cpu();
  c = std::move(b);
  EXPECT_EQ(c.get(), raw);
  EXPECT_EQ(nk::version(), nk_version());
}

TEST(CppApi, ErrorsCarryStatusAndMessage) {
  nk::Context ctx = nk::Context::cpu();
  std::vector<float> x(4, 1.0f), y(4, -3.0f);
  nk_norm_params p = nk_norm_params_default();
  p.eps = -1.0;
  try {
    nk::batch_norm_forward<float>(ctx, nk::Shape{2, 2, 1, NK_NCHW}, p, x.data(), nullptr, nullptr,
                                  nullptr, nullptr, nullptr, y.data(), nullptr, nullptr);
    FAIL() << "expected nk::Error";
  } catch (const nk::Error& e) {
    EXPECT_EQ(e.status(), NK_ERROR_INVALID_VALUE);
    EXPECT_NE(std::string(e.what()).find("nk_batch_norm_forward: params->eps = -1"),
              std::string::npos)
        << e.what();
  }
  for (float v : y) EXPECT_EQ(v, -3.0f) << "a failing call writes nothing";
  EXPECT_THROW(nk::Context(static_cast<nk_backend>(9)), nk::Error);
}

TEST(CppApi, TypedBatchNormMatchesCApi) {
  nk::Context ctx = nk::Context::cpu();
  nkt::Random rng;
  const nk::Shape shape{3, 4, 5, NK_NHWC};
  const nk_norm_params p = nk_norm_params_default();
  nkt::Buffer x(NK_F16, rng.normal(60, 1, 2)), dy(NK_F16, rng.normal(60));
  nkt::Buffer y_c(NK_F16, 60), y_cpp(NK_F16, 60), dx_c(NK_F16, 60), dx_cpp(NK_F16, 60);
  std::vector<float> rm_c(4, 0.f), rv_c(4, 1.f), rm_cpp = rm_c, rv_cpp = rv_c;
  std::vector<float> mean(4), invstd(4), dw_c(4), dw_cpp(4);
  int64_t t_c = 0, t_cpp = 0;
  const nk_act_desc d{3, 4, 5, NK_NHWC, NK_F16};
  ASSERT_EQ(nk_batch_norm_forward(ctx, &d, &p, x.data(), nullptr, nullptr, rm_c.data(), rv_c.data(),
                                  &t_c, y_c.data(), mean.data(), invstd.data()),
            NK_SUCCESS);
  auto* xh = static_cast<const nk::half*>(x.data());
  nk::batch_norm_forward(ctx, shape, p, xh, nullptr, nullptr, rm_cpp.data(), rv_cpp.data(), &t_cpp,
                         static_cast<nk::half*>(y_cpp.data()), nullptr, nullptr);
  EXPECT_EQ(y_c.bytes(), y_cpp.bytes());
  EXPECT_EQ(rm_c, rm_cpp);
  EXPECT_EQ(rv_c, rv_cpp);
  EXPECT_EQ(t_c, t_cpp);
  ASSERT_EQ(nk_batch_norm_backward(ctx, &d, &p, x.data(), dy.data(), nullptr, nullptr, nullptr,
                                   mean.data(), invstd.data(), dx_c.data(), dw_c.data(), nullptr),
            NK_SUCCESS);
  nk::batch_norm_backward(ctx, shape, p, xh, static_cast<const nk::half*>(dy.data()), nullptr,
                          nullptr, nullptr, mean.data(), invstd.data(),
                          static_cast<nk::half*>(dx_cpp.data()), dw_cpp.data(), nullptr);
  EXPECT_EQ(dx_c.bytes(), dx_cpp.bytes());
  EXPECT_EQ(dw_c, dw_cpp);
  EXPECT_EQ(nk::batch_norm_forward_workspace_size<nk::half>(ctx, shape, p), [&] {
    size_t b = 0;
    nk_batch_norm_forward_workspace_size(ctx, &d, &p, &b);
    return b;
  }());
}

TEST(CppApi, TypedLayerNormWithFloatWeightsMatchesCApi) {
  nk::Context ctx = nk::Context::cpu();
  nkt::Random rng;
  const int64_t rows = 3, cols = 10;
  nkt::Buffer x(NK_BF16, rng.normal(rows * cols)), y_c(NK_BF16, rows * cols),
      y_cpp(NK_BF16, rows * cols);
  const std::vector<float> w = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, b(10, 0.5f);
  std::vector<float> mean(rows), rstd(rows);
  const nk_row_desc d{rows, cols, NK_BF16, NK_F32};
  ASSERT_EQ(nk_layer_norm_forward(ctx, &d, 1e-5, x.data(), w.data(), b.data(), y_c.data(),
                                  mean.data(), rstd.data()),
            NK_SUCCESS);
  nk::layer_norm_forward(ctx, rows, cols, 1e-5, static_cast<const nk::bfloat16*>(x.data()),
                         w.data(), b.data(), static_cast<nk::bfloat16*>(y_cpp.data()), nullptr,
                         nullptr);
  EXPECT_EQ(y_c.bytes(), y_cpp.bytes());
  // Named types when there is no weight.
  nk::rms_norm_forward<nk::bfloat16, float>(ctx, rows, cols, 1e-6,
                                            static_cast<const nk::bfloat16*>(x.data()), nullptr,
                                            static_cast<nk::bfloat16*>(y_cpp.data()), rstd.data());
  ASSERT_EQ(nk_rms_norm_forward(ctx, &d, 1e-6, x.data(), nullptr, y_c.data(), nullptr), NK_SUCCESS);
  EXPECT_EQ(y_c.bytes(), y_cpp.bytes());
  EXPECT_GT((nk::layer_norm_backward_workspace_size<nk::bfloat16, float>(ctx, rows, cols)), 0u);
}

TEST(CppApi, FusedRowNormMatchesCApiAndThrowsOnErrors) {
  nk::Context ctx = nk::Context::cpu();
  nkt::Random rng;
  const int64_t rows = 3, cols = 10, n = rows * cols;
  nkt::Buffer x(NK_BF16, rng.normal(n)), r(NK_BF16, rng.normal(n)), dy(NK_BF16, rng.normal(n));
  const std::vector<double> wv = rng.uniform(cols, -0.5, 0.5);
  const std::vector<float> w(wv.begin(), wv.end());
  std::vector<uint8_t> y_c(n, 1), y_cpp(n, 2);
  nkt::Buffer h_c(NK_BF16, n), h_cpp(NK_BF16, n), dx_c(NK_BF16, n), dx_cpp(NK_BF16, n);
  float scale = 8.0f, amax_c = -1, amax_cpp = -2;
  std::vector<float> rstd(rows);
  nk_row_fusion f = nk_row_fusion_default();
  f.norm = NK_RMS_NORM;
  f.residual = NK_RESIDUAL_ADD;
  f.weight_form = NK_WEIGHT_ZERO_CENTERED;
  f.output = NK_OUTPUT_FP8_E4M3;
  const nk_row_desc d{rows, cols, NK_BF16, NK_F32};
  nk_row_fused_forward_buffers fb{};
  fb.x = x.data();
  fb.residual = r.data();
  fb.weight = w.data();
  fb.h = h_c.data();
  fb.y = y_c.data();
  fb.y_scale = &scale;
  fb.y_amax = &amax_c;
  fb.save_rstd = rstd.data();
  ASSERT_EQ(nk_row_norm_fused_forward(ctx, &d, &f, 1e-6, &fb), NK_SUCCESS) << nk_last_error();
  fb.h = h_cpp.data();
  fb.y = y_cpp.data();
  fb.y_amax = &amax_cpp;
  nk::row_norm_fused_forward<nk::bfloat16, float>(ctx, rows, cols, f, 1e-6, fb);
  EXPECT_EQ(y_c, y_cpp);
  EXPECT_EQ(h_c.bytes(), h_cpp.bytes());
  EXPECT_EQ(amax_c, amax_cpp);
  EXPECT_EQ((nk::row_norm_fused_forward_workspace_size<nk::bfloat16, float>(ctx, rows, cols, f)),
            0u);
  nk_row_fused_backward_buffers bb{};
  bb.x = h_c.data();
  bb.dy = dy.data();
  bb.weight = w.data();
  bb.save_rstd = rstd.data();
  bb.dx = dx_c.data();
  ASSERT_EQ(nk_row_norm_fused_backward(ctx, &d, &f, &bb), NK_SUCCESS) << nk_last_error();
  bb.dx = dx_cpp.data();
  nk::row_norm_fused_backward<nk::bfloat16, float>(ctx, rows, cols, f, bb);
  EXPECT_EQ(dx_c.bytes(), dx_cpp.bytes());
  EXPECT_GT((nk::row_norm_fused_backward_workspace_size<nk::bfloat16, float>(ctx, rows, cols, f)),
            0u);
  // A failing call throws nk::Error with the status and message.
  bb.weight = nullptr;
  try {
    nk::row_norm_fused_backward<nk::bfloat16, float>(ctx, rows, cols, f, bb);
    ADD_FAILURE() << "no exception";
  } catch (const nk::Error& e) {
    EXPECT_EQ(e.status(), NK_ERROR_INVALID_VALUE);
    EXPECT_NE(std::string(e.what()).find("weight is NULL"), std::string::npos) << e.what();
  }
}

TEST(CppApi, FusedChannelNormMatchesCApiAndThrowsOnErrors) {
  nk::Context ctx = nk::Context::cpu();
  nkt::Random rng;
  const nk::Shape s{2, 4, 9, NK_NHWC};
  const int64_t n = 2 * 4 * 9;
  nkt::Buffer x(NK_F16, rng.normal(n)), z(NK_F16, rng.normal(n)), dy(NK_F16, rng.normal(n));
  nkt::Buffer y_c(NK_F16, n), y_cpp(NK_F16, n), dx_c(NK_F16, n), dx_cpp(NK_F16, n);
  nkt::Buffer dz_c(NK_F16, n), dz_cpp(NK_F16, n);
  for (nkt::Buffer* b : {&y_c, &y_cpp, &dx_c, &dx_cpp, &dz_c, &dz_cpp}) b->poison();
  const std::vector<double> wv = rng.uniform(4, 0.5, 1.5), bv = rng.normal(4);
  const std::vector<float> w(wv.begin(), wv.end()), b(bv.begin(), bv.end());
  std::vector<float> mean_c(4, -1), invstd_c(4, -1), mean_cpp(4, -2), invstd_cpp(4, -2);  // N x G
  nk_channel_fusion f = nk::channel_fusion_default();
  EXPECT_EQ(f.norm, NK_BATCH_NORM);
  EXPECT_EQ(f.groups, 0);
  EXPECT_EQ(f.residual, NK_RESIDUAL_NONE);
  EXPECT_EQ(f.activation, NK_ACTIVATION_IDENTITY);
  f.norm = NK_GROUP_NORM;
  f.groups = 2;
  f.residual = NK_RESIDUAL_ADD;
  f.activation = NK_ACTIVATION_SILU;
  const nk_norm_params p = nk_norm_params_default();
  const nk_act_desc d{2, 4, 9, NK_NHWC, NK_F16};
  nk_channel_fused_forward_buffers fb{};
  fb.x = x.data();
  fb.z = z.data();
  fb.weight = w.data();
  fb.bias = b.data();
  fb.y = y_c.data();
  fb.save_mean = mean_c.data();
  fb.save_invstd = invstd_c.data();
  ASSERT_EQ(nk_channel_norm_fused_forward(ctx, &d, &f, &p, &fb), NK_SUCCESS) << nk_last_error();
  fb.y = y_cpp.data();
  fb.save_mean = mean_cpp.data();
  fb.save_invstd = invstd_cpp.data();
  nk::channel_norm_fused_forward<nk::half>(ctx, s, f, p, fb);
  EXPECT_EQ(y_c.bytes(), y_cpp.bytes());
  EXPECT_EQ(mean_c, mean_cpp);
  EXPECT_EQ(invstd_c, invstd_cpp);
  size_t c_bytes = 1;
  ASSERT_EQ(nk_channel_norm_fused_forward_workspace_size(ctx, &d, &f, &p, &c_bytes), NK_SUCCESS);
  EXPECT_EQ(nk::channel_norm_fused_forward_workspace_size<nk::half>(ctx, s, f, p), c_bytes);
  EXPECT_EQ(nk::channel_norm_relu_mask_size<nk::half>(s), 12u);  // 72 bits: 3 words
  nk_channel_fused_backward_buffers bb{};
  bb.x = x.data();
  bb.dy = dy.data();
  bb.z = z.data();
  bb.weight = w.data();
  bb.bias = b.data();
  bb.save_mean = mean_c.data();
  bb.save_invstd = invstd_c.data();
  bb.dx = dx_c.data();
  bb.dz = dz_c.data();
  ASSERT_EQ(nk_channel_norm_fused_backward(ctx, &d, &f, &p, &bb), NK_SUCCESS) << nk_last_error();
  bb.dx = dx_cpp.data();
  bb.dz = dz_cpp.data();
  nk::channel_norm_fused_backward<nk::half>(ctx, s, f, p, bb);
  EXPECT_EQ(dx_c.bytes(), dx_cpp.bytes());
  EXPECT_EQ(dz_c.bytes(), dz_cpp.bytes());
  for (int64_t i = 0; i < n; ++i) {  // written, not left poisoned (NaN) by both calls
    ASSERT_FALSE(std::isnan(y_c.get(i)) || std::isnan(dx_c.get(i)) || std::isnan(dz_c.get(i)))
        << "element " << i;
  }
  ASSERT_EQ(nk_channel_norm_fused_backward_workspace_size(ctx, &d, &f, &p, &c_bytes), NK_SUCCESS);
  EXPECT_EQ(nk::channel_norm_fused_backward_workspace_size<nk::half>(ctx, s, f, p), c_bytes);
  // A failing call throws nk::Error with the status and message.
  bb.z = nullptr;
  try {
    nk::channel_norm_fused_backward<nk::half>(ctx, s, f, p, bb);
    ADD_FAILURE() << "no exception";
  } catch (const nk::Error& e) {
    EXPECT_EQ(e.status(), NK_ERROR_INVALID_VALUE);
    EXPECT_NE(std::string(e.what()).find("z is NULL"), std::string::npos) << e.what();
  }
}

TEST(CppApi, GroupAndInstanceNormOverloads) {
  // Group norm with one channel per group is instance norm, forward and backward.
  nk::Context ctx = nk::Context::cpu();
  nkt::Random rng;
  const nk::Shape shape{2, 6, 4, NK_NCHW};
  nkt::Buffer x(NK_F32, rng.normal(48)), dy(NK_F32, rng.normal(48));
  std::vector<float> y_g(48, -1), y_i(48, -2), dx_g(48, -1), dx_i(48, -2);
  std::vector<float> mean_g(12), invstd_g(12), mean_i(12), invstd_i(12), dw_g(6), dw_i(6);
  nk::group_norm_forward(ctx, shape, 6, 1e-5, x.f32(), nullptr, nullptr, y_g.data(), mean_g.data(),
                         invstd_g.data());
  nk::group_norm_backward(ctx, shape, 6, x.f32(), dy.f32(), nullptr, mean_g.data(), invstd_g.data(),
                          dx_g.data(), dw_g.data(), nullptr);
  nk::instance_norm_forward(ctx, shape, nk_norm_params_default(), x.f32(), nullptr, nullptr,
                            nullptr, nullptr, nullptr, y_i.data(), mean_i.data(), invstd_i.data());
  nk::instance_norm_backward(ctx, shape, nk_norm_params_default(), x.f32(), dy.f32(), nullptr,
                             nullptr, nullptr, mean_i.data(), invstd_i.data(), dx_i.data(),
                             dw_i.data(), nullptr);
  EXPECT_EQ(y_g, y_i);
  EXPECT_EQ(mean_g, mean_i);
  EXPECT_EQ(invstd_g, invstd_i);
  EXPECT_EQ(dx_g, dx_i);
  EXPECT_EQ(dw_g, dw_i);
  EXPECT_EQ(nk::group_norm_backward_workspace_size<float>(ctx, shape, 6),
            nk::instance_norm_backward_workspace_size<float>(ctx, shape, nk_norm_params_default()));
}

TEST(CppApi, StatsAccumulator) {
  nk::Context ctx = nk::Context::cpu();
  nk::Stats a(ctx, 2), b(ctx, 2);
  const std::vector<float> first = {1, 10, 3, 30}, second = {5, 50, 7, 70};  // rows x 2 columns
  a.add_columns(2, 2, first.data());
  b.add_columns(2, 2, second.data());
  a.merge(b);
  EXPECT_EQ(a.count(), 4);
  std::vector<float> mean(2), var(2);
  a.finalize(mean.data(), var.data(), nullptr);
  EXPECT_FLOAT_EQ(mean[0], 4.0f);  // {1, 3, 5, 7}
  EXPECT_FLOAT_EQ(var[0], 5.0f);
  EXPECT_FLOAT_EQ(mean[1], 40.0f);  // {10, 30, 50, 70}
  EXPECT_FLOAT_EQ(var[1], 500.0f);
  nk::Stats moved(std::move(a));
  EXPECT_EQ(moved.count(), 4);
  EXPECT_THROW(moved.merge(moved), nk::Error);
  nk::Stats three(ctx, 3);
  EXPECT_THROW(three.finalize(mean.data(), nullptr, nullptr), nk::Error) << "no samples yet";
}

}  // namespace
