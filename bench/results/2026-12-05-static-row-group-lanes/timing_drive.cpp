// One instance or group norm training call (forward, or forward then backward) on normkit's CUDA
// backend, for GPGPU-Sim's timing mode: the simulator prints each kernel's cycles
// (gpu_sim_cycle). x and dy hold the same pseudo-random values (a fixed LCG), weight and bias ones.
//
//   timing_drive in|gn fwd|bwd N C S G bf16|f32 nchw|nhwc
//
// Built against the simulator lane's library (build-sim, CUDA runtime shared), from the root:
//   g++ -O1 -std=c++17 -Iinclude -I$CUDA/include $DIR/timing_drive.cpp -o timing_drive
//       -Lbuild-sim -lnormkit -L$CUDA/lib64 -lcudart   (one command line)
#include <cuda_runtime_api.h>
#include <normkit/normkit.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

void* device_copy(const void* host, size_t bytes) {
  void* p = nullptr;
  cudaMalloc(&p, bytes);
  if (host) cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: timing_drive in|gn fwd|bwd N C S G bf16|f32 nchw|nhwc\n");
    return 2;
  }
  const bool group = !std::strcmp(argv[1], "gn"), backward = !std::strcmp(argv[2], "bwd");
  nk_act_desc d{};
  d.n = std::atoll(argv[3]);
  d.c = std::atoll(argv[4]);
  d.spatial = std::atoll(argv[5]);
  const int64_t groups = std::atoll(argv[6]);
  d.dtype = !std::strcmp(argv[7], "bf16") ? NK_BF16 : NK_F32;
  d.layout = !std::strcmp(argv[8], "nhwc") ? NK_NHWC : NK_NCHW;
  const size_t numel = static_cast<size_t>(d.n * d.c * d.spatial);
  const size_t bytes = numel * (d.dtype == NK_F32 ? 4 : 2);
  // bf16 values in [0.5, 1) or fp32 bit patterns of the same kind: any finite data will do.
  std::vector<uint16_t> host(bytes / 2);
  uint32_t r = 1;
  for (uint16_t& v : host) {
    r = r * 1664525u + 1013904223u;
    v = static_cast<uint16_t>(d.dtype == NK_F32 ? (r >> 16) : (0x3f00u | (r >> 25)));
  }
  if (d.dtype == NK_F32) {
    for (size_t i = 1; i < host.size(); i += 2) host[i] = 0x3f00;  // high halves: about 0.5
  }
  const std::vector<float> ones(static_cast<size_t>(d.c), 1.0f);
  const size_t stats = static_cast<size_t>(d.n * (group ? groups : d.c)) * sizeof(float);
  void* x = device_copy(host.data(), bytes);
  void* dy = device_copy(host.data(), bytes);
  void* y = device_copy(nullptr, bytes);
  void* dx = device_copy(nullptr, bytes);
  auto* w = static_cast<float*>(device_copy(ones.data(), ones.size() * sizeof(float)));
  auto* b = static_cast<float*>(device_copy(ones.data(), ones.size() * sizeof(float)));
  auto* dw = static_cast<float*>(device_copy(nullptr, ones.size() * sizeof(float)));
  auto* db = static_cast<float*>(device_copy(nullptr, ones.size() * sizeof(float)));
  auto* mean = static_cast<float*>(device_copy(nullptr, stats));
  auto* invstd = static_cast<float*>(device_copy(nullptr, stats));
  nk_context ctx = nullptr;
  if (nk_context_create(NK_BACKEND_CUDA, 0, &ctx) != NK_SUCCESS) return 1;
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_TRAINING;
  nk_status s = group ? nk_group_norm_forward(ctx, &d, groups, 1e-5, x, w, b, y, mean, invstd)
                      : nk_instance_norm_forward(ctx, &d, &p, x, w, b, nullptr, nullptr, nullptr, y,
                                                 mean, invstd);
  if (s == NK_SUCCESS && backward) {
    s = group ? nk_group_norm_backward(ctx, &d, groups, x, dy, w, mean, invstd, dx, dw, db)
              : nk_instance_norm_backward(ctx, &d, &p, x, dy, w, nullptr, nullptr, mean, invstd,
                                          dx, dw, db);
  }
  cudaDeviceSynchronize();
  std::printf("status %d\n", static_cast<int>(s));
  nk_context_destroy(ctx);
  return s == NK_SUCCESS ? 0 : 1;
}
