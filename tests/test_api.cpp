// Library-level C API: version, status names, the thread-local last error, the context (CPU
// backend; the CUDA backend where no GPU exists or CUDA is not built), defaults, and the workspace.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

TEST(Api, VersionMatchesProjectAndHeader) {
  EXPECT_EQ(nk_version(), NORMKIT_TEST_VERSION);
  EXPECT_EQ(nk_version(), 10000 * NK_VERSION_MAJOR + 100 * NK_VERSION_MINOR + NK_VERSION_PATCH);
}

TEST(Api, StatusNames) {
  EXPECT_STREQ(nk_status_name(NK_SUCCESS), "NK_SUCCESS");
  EXPECT_STREQ(nk_status_name(NK_ERROR_INVALID_VALUE), "NK_ERROR_INVALID_VALUE");
  EXPECT_STREQ(nk_status_name(NK_ERROR_BAD_SHAPE), "NK_ERROR_BAD_SHAPE");
  EXPECT_STREQ(nk_status_name(NK_ERROR_NOT_SUPPORTED), "NK_ERROR_NOT_SUPPORTED");
  EXPECT_STREQ(nk_status_name(NK_ERROR_WORKSPACE), "NK_ERROR_WORKSPACE");
  EXPECT_STREQ(nk_status_name(NK_ERROR_CUDA), "NK_ERROR_CUDA");
  EXPECT_STREQ(nk_status_name(NK_ERROR_OUT_OF_MEMORY), "NK_ERROR_OUT_OF_MEMORY");
  EXPECT_STREQ(nk_status_name(NK_ERROR_INTERNAL), "NK_ERROR_INTERNAL");
  EXPECT_STREQ(nk_status_name(NK_ERROR_IO), "NK_ERROR_IO");
  EXPECT_STREQ(nk_status_name(NK_ERROR_FILE_FORMAT), "NK_ERROR_FILE_FORMAT");
  for (int v : {10, -1, 1000}) {
    EXPECT_STREQ(nk_status_name(static_cast<nk_status>(v)), "NK_UNKNOWN_STATUS") << v;
  }
}

TEST(Api, DefaultsArePyTorchs) {
  const nk_norm_params p = nk_norm_params_default();
  EXPECT_EQ(p.phase, NK_TRAINING);
  EXPECT_EQ(p.eps, 1e-5);
  EXPECT_EQ(p.momentum, 0.1);
  EXPECT_EQ(p.momentum_mode, NK_MOMENTUM_EXPONENTIAL);
  EXPECT_EQ(p.running_var, NK_RUNNING_VAR_UNBIASED);
}

TEST(Api, LastErrorNamesTheCallAndSurvivesSuccess) {
  nkt::CpuContext ctx;
  const nk_row_desc desc{2, 0, NK_F32, NK_F32};
  float x[2] = {}, y[2] = {};
  EXPECT_EQ(nk_layer_norm_forward(ctx, &desc, 1e-5, x, nullptr, nullptr, y, nullptr, nullptr),
            NK_ERROR_BAD_SHAPE);
  const std::string message = nk_last_error();
  EXPECT_EQ(message.rfind("nk_layer_norm_forward: ", 0), 0u) << message;
  EXPECT_NE(message.find("desc->cols = 0"), std::string::npos) << message;
  const nk_row_desc ok{1, 2, NK_F32, NK_F32};
  ASSERT_EQ(nk_layer_norm_forward(ctx, &ok, 1e-5, x, nullptr, nullptr, y, nullptr, nullptr),
            NK_SUCCESS);
  EXPECT_EQ(message, nk_last_error()) << "a successful call must leave the last error as it was";
  // Another thread has its own message.
  std::string other;
  std::thread([&] { other = nk_last_error(); }).join();
  EXPECT_EQ(other, "");
}

TEST(Api, CpuContextLifecycle) {
  nk_context ctx = nullptr;
  ASSERT_EQ(nk_context_create(NK_BACKEND_CPU, 0, &ctx), NK_SUCCESS);
  ASSERT_NE(ctx, nullptr);
  nk_backend backend = NK_BACKEND_CUDA;
  EXPECT_EQ(nk_context_get_backend(ctx, &backend), NK_SUCCESS);
  EXPECT_EQ(backend, NK_BACKEND_CPU);
  int stream_token = 0;  // any value: the CPU backend records the stream and never uses it
  EXPECT_EQ(nk_context_set_stream(ctx, &stream_token), NK_SUCCESS);
  EXPECT_EQ(nk_context_destroy(ctx), NK_SUCCESS);
  EXPECT_EQ(nk_context_destroy(nullptr), NK_SUCCESS);
}

// Without a CUDA device (CI) or without CUDA in the build, a CUDA context is refused clearly and
// `out` is left alone.
TEST(Api, CudaContextWithoutDevice) {
  nk_context ctx = reinterpret_cast<nk_context>(uintptr_t{0x1234});
  const nk_status st = nk_context_create(NK_BACKEND_CUDA, 0, &ctx);
  if (st == NK_SUCCESS) {
    nk_context_destroy(ctx);
    GTEST_SKIP() << "a CUDA device is present: covered by the CudaBackend tests";
  }
  EXPECT_EQ(ctx, reinterpret_cast<nk_context>(uintptr_t{0x1234}));
  const std::string message = nk_last_error();
  if (NORMKIT_TEST_WITH_CUDA) {
    EXPECT_EQ(st, NK_ERROR_CUDA);
    EXPECT_NE(message.find("no CUDA device is present"), std::string::npos) << message;
  } else {
    EXPECT_EQ(st, NK_ERROR_NOT_SUPPORTED);
    EXPECT_NE(message.find("no CUDA backend"), std::string::npos) << message;
  }
}

// With a workspace set, ops use it (same results) and need no allocation.
TEST(Api, WorkspaceIsUsedAndSizeQueriesAgree) {
  nkt::CpuContext ctx;
  nkt::Random rng;
  const nk_act_desc desc{4, 3, 5, NK_NHWC, NK_F32};
  const nk_norm_params p = nk_norm_params_default();
  size_t bytes = 0;
  ASSERT_EQ(nk_batch_norm_forward_workspace_size(ctx, &desc, &p, &bytes), NK_SUCCESS);
  EXPECT_GT(bytes, 0u);
  nkt::Buffer x(NK_F32, rng.normal(60)), y1(NK_F32, 60), y2(NK_F32, 60);
  ASSERT_EQ(nk_batch_norm_forward(ctx, &desc, &p, x.data(), nullptr, nullptr, nullptr, nullptr,
                                  nullptr, y1.data(), nullptr, nullptr),
            NK_SUCCESS);
  void* ws = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  ASSERT_EQ(nk_context_set_workspace(ctx, ws, bytes), NK_SUCCESS);
  y2.poison();
  ASSERT_EQ(nk_batch_norm_forward(ctx, &desc, &p, x.data(), nullptr, nullptr, nullptr, nullptr,
                                  nullptr, y2.data(), nullptr, nullptr),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(y1.bytes(), y2.bytes());
  ASSERT_EQ(nk_context_set_workspace(ctx, nullptr, 0), NK_SUCCESS);
  std::free(ws);
  // Every query answers for a valid configuration.
  const nk_row_desc rows{3, 7, NK_BF16, NK_F32};
  for (auto query : {nk_layer_norm_forward_workspace_size, nk_layer_norm_backward_workspace_size,
                     nk_rms_norm_forward_workspace_size, nk_rms_norm_backward_workspace_size}) {
    EXPECT_EQ(query(ctx, &rows, &bytes), NK_SUCCESS) << nk_last_error();
  }
  for (auto query : {nk_batch_norm_backward_workspace_size, nk_instance_norm_forward_workspace_size,
                     nk_instance_norm_backward_workspace_size}) {
    EXPECT_EQ(query(ctx, &desc, &p, &bytes), NK_SUCCESS) << nk_last_error();
  }
  const nk_act_desc groups_desc{2, 6, 4, NK_NCHW, NK_F16};
  EXPECT_EQ(nk_group_norm_forward_workspace_size(ctx, &groups_desc, 3, &bytes), NK_SUCCESS);
  EXPECT_EQ(nk_group_norm_backward_workspace_size(ctx, &groups_desc, 3, &bytes), NK_SUCCESS);
}

}  // namespace
