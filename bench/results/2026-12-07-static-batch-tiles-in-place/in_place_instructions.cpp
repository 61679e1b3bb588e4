// Batch norm NCHW training forward and backward in bf16 through the batch tiles, out of place and
// in place (y == x; dx == dy), one call each, with a line before each call, so that the simulator's
// per-kernel instruction counts can be assigned to the calls (in_place_instructions.py). From the
// repository root, with the simulated lane's build-sim/ (PTX only, the CUDA runtime shared):
//   g++ -std=c++17 -O2 -I include -I /usr/local/cuda/include \
//       bench/results/2026-12-07-static-batch-tiles-in-place/in_place_instructions.cpp \
//       -L build-sim -lnormkit -L /usr/local/cuda/lib64 -lcudart -o in_place_instructions
#include <cuda_runtime.h>
#include <normkit/normkit.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace {

void check(nk_status s, const char* what) {
  if (s != NK_SUCCESS) {
    std::printf("%s: %s\n", what, nk_last_error());
    std::exit(1);
  }
}

void* device_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &v[i], 4);
    h[i] = static_cast<uint16_t>(bits >> 16);
  }
  void* d = nullptr;
  cudaMalloc(&d, h.size() * 2);
  cudaMemcpy(d, h.data(), h.size() * 2, cudaMemcpyHostToDevice);
  return d;
}

float* device_floats(int64_t n, float value) {
  std::vector<float> h(static_cast<size_t>(n), value);
  float* d = nullptr;
  cudaMalloc(&d, h.size() * 4);
  cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice);
  return d;
}

}  // namespace

int main() {
  nk_context ctx = nullptr;
  check(nk_context_create(NK_BACKEND_CUDA, 0, &ctx), "context");
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(1.0f, 2.0f);
  for (int64_t s : {49, 196, 784}) {
    const nk_act_desc d{8, 16, s, NK_NCHW, NK_BF16};
    const int64_t count = d.n * d.c * d.spatial;
    std::vector<float> xv(static_cast<size_t>(count)), dyv = xv;
    for (float& v : xv) v = normal(rng);
    for (float& v : dyv) v = normal(rng);
    nk_norm_params p = nk_norm_params_default();
    float* w = device_floats(d.c, 1.0f);
    float* b = device_floats(d.c, 0.0f);
    float* mean = device_floats(d.c, 0.0f);
    float* invstd = device_floats(d.c, 1.0f);
    float *dw = device_floats(d.c, 0.0f), *db = device_floats(d.c, 0.0f);
    for (int in_place = 0; in_place < 2; ++in_place) {
      void* x = device_bf16(xv);
      void* y = in_place ? x : device_bf16(xv);
      std::printf("CALL forward S=%lld %s\n", static_cast<long long>(s),
                  in_place ? "in-place" : "out-of-place");
      std::fflush(stdout);
      check(nk_batch_norm_forward(ctx, &d, &p, x, w, b, nullptr, nullptr, nullptr, y, mean, invstd),
            "forward");
      cudaDeviceSynchronize();
      void* xb = device_bf16(xv);
      void* dy = device_bf16(dyv);
      void* dx = in_place ? dy : device_bf16(dyv);
      std::printf("CALL backward S=%lld %s\n", static_cast<long long>(s),
                  in_place ? "in-place" : "out-of-place");
      std::fflush(stdout);
      check(nk_batch_norm_backward(ctx, &d, &p, xb, dy, w, nullptr, nullptr, mean, invstd, dx, dw,
                                   db),
            "backward");
      cudaDeviceSynchronize();
    }
  }
  std::printf("CALL end\n");
  nk_context_destroy(ctx);
  return 0;
}
