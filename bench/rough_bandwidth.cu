// A first, rough bandwidth probe (the full benchmark suite against cuDNN and PyTorch is separate):
// bf16 layer norm forward and backward at D = 1024 and 8192 on 256 MiB of x, and bf16 batch norm
// training forward and backward on ResNet-like shapes (C = 64, 56 x 56, N = 32, which fits in L2,
// and N = 256, which does not), NCHW and NHWC. Timed with CUDA events (median of 20 after 5
// warm-ups) against the device-to-device copy bandwidth measured in the same run (a 16-byte
// vectorized copy kernel and cudaMemcpy, 1 GiB each way). Bytes counted are the minimum the op
// must move: forward reads x and writes y; backward reads x and dy and writes dx.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <normkit/normkit.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

#define CHECK(call)                                                      \
  do {                                                                   \
    cudaError_t err_ = (call);                                           \
    if (err_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)

__global__ void copy16(const int4* in, int4* out, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    out[i] = in[i];
  }
}

__global__ void fill(__nv_bfloat16* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    p[i] = __float2bfloat16(static_cast<float>(h % 2000) / 1000.0f - 1.0f);
  }
}

template <class F>
float median_ms(F&& f) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 5; ++i) f();
  std::vector<float> times;
  for (int i = 0; i < 20; ++i) {
    CHECK(cudaEventRecord(a));
    f();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main() {
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
    std::printf("no CUDA device: nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  const size_t copy_bytes = size_t{1} << 30;
  void *src, *dst;
  CHECK(cudaMalloc(&src, copy_bytes));
  CHECK(cudaMalloc(&dst, copy_bytes));
  CHECK(cudaMemset(src, 1, copy_bytes));
  const float memcpy_ms =
      median_ms([&] { CHECK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice)); });
  const float kernel_ms = median_ms([&] {
    copy16<<<prop.multiProcessorCount * 8, 512>>>(static_cast<const int4*>(src),
                                                  static_cast<int4*>(dst), copy_bytes / 16);
  });
  const double memcpy_gbs = 2.0 * copy_bytes / memcpy_ms / 1e6,
               kernel_gbs = 2.0 * copy_bytes / kernel_ms / 1e6;
  const double copy_gbs = std::max(memcpy_gbs, kernel_gbs);
  std::printf("copy: cudaMemcpy %.0f GB/s, 16-byte kernel %.0f GB/s (read + write counted)\n",
              memcpy_gbs, kernel_gbs);
  CHECK(cudaFree(src));
  CHECK(cudaFree(dst));

  nk_context ctx;
  if (nk_context_create(NK_BACKEND_CUDA, 0, &ctx) != NK_SUCCESS) {
    std::printf("%s\n", nk_last_error());
    return 1;
  }
  std::printf("%-11s %6s %8s %10s %9s %8s   (D, rows for ln; C, N for bn)\n", "op", "D|C", "rows|N",
              "time_us", "GB/s", "of_copy");
  for (int64_t cols : {int64_t{1024}, int64_t{8192}}) {
    const int64_t rows = (int64_t{256} << 20) / (cols * 2), n = rows * cols;
    const nk_row_desc d{rows, cols, NK_BF16, NK_BF16};
    __nv_bfloat16 *x, *y, *dy, *dx, *w, *b, *dw, *db;
    float *mean, *rstd;
    CHECK(cudaMalloc(&x, n * 2));
    CHECK(cudaMalloc(&y, n * 2));
    CHECK(cudaMalloc(&dy, n * 2));
    CHECK(cudaMalloc(&dx, n * 2));
    CHECK(cudaMalloc(&w, cols * 2));
    CHECK(cudaMalloc(&b, cols * 2));
    CHECK(cudaMalloc(&dw, cols * 2));
    CHECK(cudaMalloc(&db, cols * 2));
    CHECK(cudaMalloc(&mean, rows * 4));
    CHECK(cudaMalloc(&rstd, rows * 4));
    fill<<<1024, 256>>>(x, n, 1u);
    fill<<<1024, 256>>>(dy, n, 2u);
    fill<<<16, 256>>>(w, cols, 3u);
    fill<<<16, 256>>>(b, cols, 4u);
    size_t ws_bytes = 0;
    nk_layer_norm_backward_workspace_size(ctx, &d, &ws_bytes);
    void* ws = nullptr;
    CHECK(cudaMalloc(&ws, ws_bytes + 256));
    nk_context_set_workspace(ctx, ws, ws_bytes);
    nk_status st = NK_SUCCESS;
    const float fwd =
        median_ms([&] { st = nk_layer_norm_forward(ctx, &d, 1e-5, x, w, b, y, mean, rstd); });
    if (st != NK_SUCCESS) std::printf("forward: %s\n", nk_last_error());
    const float bwd =
        median_ms([&] { st = nk_layer_norm_backward(ctx, &d, x, dy, w, mean, rstd, dx, dw, db); });
    if (st != NK_SUCCESS) std::printf("backward: %s\n", nk_last_error());
    CHECK(cudaDeviceSynchronize());
    const double fwd_gbs = 2.0 * n * 2 / fwd / 1e6, bwd_gbs = 3.0 * n * 2 / bwd / 1e6;
    std::printf("%-11s %6lld %8lld %10.1f %9.0f %8.3f\n", "ln_fwd", (long long)cols,
                (long long)rows, fwd * 1e3, fwd_gbs, fwd_gbs / copy_gbs);
    std::printf("%-11s %6lld %8lld %10.1f %9.0f %8.3f\n", "ln_bwd", (long long)cols,
                (long long)rows, bwd * 1e3, bwd_gbs, bwd_gbs / copy_gbs);
    nk_context_set_workspace(ctx, nullptr, 0);
    for (void* p : {(void*)x, (void*)y, (void*)dy, (void*)dx, (void*)w, (void*)b, (void*)dw,
                    (void*)db, (void*)mean, (void*)rstd, ws})
      CHECK(cudaFree(p));
  }
  for (nk_layout layout : {NK_NCHW, NK_NHWC}) {
    for (int64_t batch : {int64_t{32}, int64_t{256}}) {
      const int64_t channels = 64, spatial = 56 * 56, n = batch * channels * spatial;
      const nk_act_desc d{batch, channels, spatial, layout, NK_BF16};
      const nk_norm_params p = nk_norm_params_default();
      __nv_bfloat16 *x, *y, *dy, *dx;
      float *rm, *rv, *mean, *invstd, *dw, *db;
      int64_t* tracked;
      CHECK(cudaMalloc(&x, n * 2));
      CHECK(cudaMalloc(&y, n * 2));
      CHECK(cudaMalloc(&dy, n * 2));
      CHECK(cudaMalloc(&dx, n * 2));
      for (float** q : {&rm, &rv, &mean, &invstd, &dw, &db}) CHECK(cudaMalloc(q, channels * 4));
      CHECK(cudaMalloc(&tracked, 8));
      CHECK(cudaMemset(rm, 0, channels * 4));
      CHECK(cudaMemset(rv, 0, channels * 4));
      CHECK(cudaMemset(tracked, 0, 8));
      fill<<<1024, 256>>>(x, n, 5u);
      fill<<<1024, 256>>>(dy, n, 6u);
      size_t fwd_ws = 0, bwd_ws = 0;
      nk_batch_norm_forward_workspace_size(ctx, &d, &p, &fwd_ws);
      nk_batch_norm_backward_workspace_size(ctx, &d, &p, &bwd_ws);
      void* ws = nullptr;
      CHECK(cudaMalloc(&ws, std::max(fwd_ws, bwd_ws) + 256));
      nk_context_set_workspace(ctx, ws, std::max(fwd_ws, bwd_ws));
      nk_status st = NK_SUCCESS;
      const float fwd = median_ms([&] {
        st = nk_batch_norm_forward(ctx, &d, &p, x, nullptr, nullptr, rm, rv, tracked, y, mean,
                                   invstd);
      });
      if (st != NK_SUCCESS) std::printf("forward: %s\n", nk_last_error());
      const float bwd = median_ms([&] {
        st = nk_batch_norm_backward(ctx, &d, &p, x, dy, nullptr, nullptr, nullptr, mean, invstd, dx,
                                    dw, db);
      });
      if (st != NK_SUCCESS) std::printf("backward: %s\n", nk_last_error());
      CHECK(cudaDeviceSynchronize());
      const double fwd_gbs = 2.0 * n * 2 / fwd / 1e6, bwd_gbs = 3.0 * n * 2 / bwd / 1e6;
      const char* tag = layout == NK_NCHW ? "nchw" : "nhwc";
      std::printf("bn_fwd_%s %4lld %8lld %10.1f %9.0f %8.3f\n", tag, (long long)channels,
                  (long long)batch, fwd * 1e3, fwd_gbs, fwd_gbs / copy_gbs);
      std::printf("bn_bwd_%s %4lld %8lld %10.1f %9.0f %8.3f\n", tag, (long long)channels,
                  (long long)batch, bwd * 1e3, bwd_gbs, bwd_gbs / copy_gbs);
      nk_context_set_workspace(ctx, nullptr, 0);
      for (void* q : {(void*)x, (void*)y, (void*)dy, (void*)dx, (void*)rm, (void*)rv, (void*)mean,
                      (void*)invstd, (void*)dw, (void*)db, (void*)tracked, ws})
        CHECK(cudaFree(q));
    }
  }
  nk_context_destroy(ctx);
  return 0;
}
