// The CUDA backend where a CUDA device is present: context creation selects the device, streams
// and workspaces are accepted, and the ops whose kernels are not written yet (batch, instance and
// group norm) refuse with NK_ERROR_NOT_SUPPORTED naming the op, writing nothing. Layer and RMS norm
// are tested in test_gpu_row_norms.cpp. Skipped, with the reason, elsewhere.
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

// Ops without kernels name themselves. Host pointers are fine here: nothing is dereferenced.
TEST_F(CudaBackend, ChannelNormsAreNotSupportedYet) {
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
  size_t bytes = 123;
  EXPECT_EQ(nk_instance_norm_forward_workspace_size(ctx_, &desc, &p, &bytes),
            NK_ERROR_NOT_SUPPORTED);
  EXPECT_EQ(bytes, 123u);
  for (float v : y) EXPECT_EQ(v, -7.0f);
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
            NK_ERROR_INVALID_VALUE) << "overlapping arguments come first";
  std::vector<float> x(64 * 1024), dy(64 * 1024), dw(1024, -7.0f);
  EXPECT_EQ(nk_layer_norm_backward(ctx_, &d, x.data(), dy.data(), nullptr, stats.data(),
                                   stats.data(), nullptr, dw.data(), nullptr),
            NK_ERROR_WORKSPACE);
  EXPECT_NE(std::string(nk_last_error()).find("workspace has 256 bytes"), std::string::npos);
  for (float v : dw) EXPECT_EQ(v, -7.0f);
}

}  // namespace
