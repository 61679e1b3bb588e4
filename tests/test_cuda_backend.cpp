// The CUDA backend where a CUDA device is present: context creation selects the device, streams
// and workspaces are accepted, and every op (whose kernels are not written yet) refuses with
// NK_ERROR_NOT_SUPPORTED naming the op, writing nothing. Skipped, with the reason, elsewhere.
#include <string>
#include <vector>

#include "channel_ops.hpp"
#include "test_support.hpp"

namespace {

class CudaBackend : public testing::Test {
 protected:
  void SetUp() override {
    if (!NORMKIT_TEST_WITH_CUDA) GTEST_SKIP() << "normkit was built without CUDA";
    if (nk_context_create(NK_BACKEND_CUDA, 0, &ctx_) != NK_SUCCESS) {
      GTEST_SKIP() << "no CUDA device: " << nk_last_error();
    }
  }
  void TearDown() override { nk_context_destroy(ctx_); }
  nk_context ctx_ = nullptr;
};

TEST_F(CudaBackend, ContextReportsItsBackend) {
  nk_backend backend = NK_BACKEND_CPU;
  ASSERT_EQ(nk_context_get_backend(ctx_, &backend), NK_SUCCESS);
  EXPECT_EQ(backend, NK_BACKEND_CUDA);
  EXPECT_EQ(nk_context_set_stream(ctx_, nullptr), NK_SUCCESS);
}

TEST_F(CudaBackend, DeviceOutOfRangeIsRejected) {
  nk_context other = nullptr;
  EXPECT_EQ(nk_context_create(NK_BACKEND_CUDA, 1 << 20, &other), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("device = 1048576"), std::string::npos);
  EXPECT_EQ(nk_context_create(NK_BACKEND_CUDA, -1, &other), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(other, nullptr);
}

// Ops without kernels name themselves. Host pointers are fine here: nothing is dereferenced.
TEST_F(CudaBackend, OpsWithoutKernelsAreNotSupported) {
  const nk_act_desc desc{2, 3, 4, NK_NCHW, NK_F32};
  const nk_norm_params p = nk_norm_params_default();
  std::vector<float> x(24, 1.0f), y(24, -7.0f), stats(6, -7.0f);
  EXPECT_EQ(nk_batch_norm_forward(ctx_, &desc, &p, x.data(), nullptr, nullptr, nullptr, nullptr,
                                  nullptr, y.data(), nullptr, nullptr),
            NK_ERROR_NOT_SUPPORTED);
  EXPECT_NE(std::string(nk_last_error()).find("batch norm forward"), std::string::npos);
  EXPECT_EQ(nk_group_norm_backward(ctx_, &desc, 3, x.data(), x.data(), nullptr, stats.data(),
                                   stats.data(), y.data(), nullptr, nullptr),
            NK_ERROR_NOT_SUPPORTED);
  EXPECT_NE(std::string(nk_last_error()).find("group norm backward"), std::string::npos);
  const nk_row_desc rows{4, 6, NK_F32, NK_F32};
  EXPECT_EQ(nk_rms_norm_forward(ctx_, &rows, 1e-6, x.data(), nullptr, y.data(), nullptr),
            NK_ERROR_NOT_SUPPORTED);
  EXPECT_NE(std::string(nk_last_error()).find("RMS norm forward"), std::string::npos);
  size_t bytes = 123;
  EXPECT_EQ(nk_layer_norm_backward_workspace_size(ctx_, &rows, &bytes), NK_ERROR_NOT_SUPPORTED);
  EXPECT_EQ(bytes, 123u);
  for (float v : y) EXPECT_EQ(v, -7.0f);
}

}  // namespace
