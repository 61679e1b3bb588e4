// The CUDA backend where a CUDA device is present: context creation selects the device, streams
// are accepted, and a workspace smaller than an op's query refuses before any kernel runs. The ops
// themselves are tested in test_gpu_row_norms.cpp and test_gpu_channel_norms.cpp. Skipped, with
// the reason, elsewhere.
#include <cstdint>
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

// A channel norm with a workspace smaller than its query refuses before any kernel runs (so host
// buffers are safe to pass: nothing is launched).
TEST_F(CudaBackend, ChannelNormWorkspaceTooSmall) {
  const nk_act_desc desc{4, 8, 16, NK_NHWC, NK_F32};
  const nk_norm_params p = nk_norm_params_default();
  size_t bytes = 0;
  ASSERT_EQ(nk_batch_norm_forward_workspace_size(ctx_, &desc, &p, &bytes), NK_SUCCESS)
      << nk_last_error();
  ASSERT_GT(bytes, 256u);
  ASSERT_EQ(nk_context_set_workspace(ctx_, reinterpret_cast<void*>(uintptr_t{1} << 40), 256),
            NK_SUCCESS);
  std::vector<float> x(512, 1.0f), y(512, -7.0f), rm(8, 0.5f), rv(8, 2.0f);
  EXPECT_EQ(nk_batch_norm_forward(ctx_, &desc, &p, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                                  nullptr, y.data(), nullptr, nullptr),
            NK_ERROR_WORKSPACE);
  EXPECT_NE(std::string(nk_last_error()).find("workspace has 256 bytes"), std::string::npos);
  for (float v : y) EXPECT_EQ(v, -7.0f);
  for (float v : rm) EXPECT_EQ(v, 0.5f);
}

// A workspace smaller than the query refuses before any kernel runs.
TEST_F(CudaBackend, RowNormWorkspaceTooSmall) {
  const nk_row_desc d{64, 1024, NK_F32, NK_F32};
  size_t bytes = 0;
  ASSERT_EQ(nk_layer_norm_backward_workspace_size(ctx_, &d, &bytes), NK_SUCCESS) << nk_last_error();
  ASSERT_GT(bytes, 256u);
  // Any 256-aligned address: the size check comes before the pointer is used.
  ASSERT_EQ(nk_context_set_workspace(ctx_, reinterpret_cast<void*>(uintptr_t{1} << 40), 256),
            NK_SUCCESS);
  std::vector<float> host(64 * 1024, 0.0f), stats(64, 1.0f);
  EXPECT_EQ(nk_layer_norm_backward(ctx_, &d, host.data(), host.data() + 1, nullptr, stats.data(),
                                   stats.data(), nullptr, host.data() + 2, nullptr),
            NK_ERROR_INVALID_VALUE)
      << "overlapping arguments come first";
  std::vector<float> x(64 * 1024), dy(64 * 1024), dw(1024, -7.0f);
  EXPECT_EQ(nk_layer_norm_backward(ctx_, &d, x.data(), dy.data(), nullptr, stats.data(),
                                   stats.data(), nullptr, dw.data(), nullptr),
            NK_ERROR_WORKSPACE);
  EXPECT_NE(std::string(nk_last_error()).find("workspace has 256 bytes"), std::string::npos);
  for (float v : dw) EXPECT_EQ(v, -7.0f);
}

}  // namespace
