// Device-side fill of benchmark inputs (see fill.hpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "bench_error.hpp"
#include "fill.hpp"

namespace nkb {
namespace {

// A 32-bit integer mixer: consecutive indices give unrelated values.
__device__ uint32_t mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

__device__ void store(float* p, float v) { *p = v; }
__device__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// One element per thread and grid-stride step.
template <class T>
__global__ void fill_kernel(T* out, int64_t count, float lo, float scale, uint32_t seed) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < count; i += stride) {
    const uint32_t h = mix(static_cast<uint32_t>(i) ^ mix(static_cast<uint32_t>(i >> 32) + seed));
    store(out + i, lo + scale * static_cast<float>(h >> 8) * (1.0f / 16777216.0f));
  }
}

}  // namespace

void fill_uniform(void* ptr, nk_dtype dtype, int64_t count, float lo, float hi, uint32_t seed,
                  cudaStream_t stream) {
  if (count <= 0) return;
  constexpr int kThreads = 256;
  const int64_t wanted = (count + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted < 65536 ? wanted : 65536);
  const float scale = hi - lo;
  switch (dtype) {
    case NK_F32:
      fill_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<float*>(ptr), count, lo, scale,
                                                   seed);
      break;
    case NK_F16:
      fill_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<__half*>(ptr), count, lo, scale,
                                                   seed);
      break;
    case NK_BF16:
      fill_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(ptr), count, lo,
                                                   scale, seed);
      break;
  }
  check_cuda(cudaGetLastError(), "fill kernel launch");
}

}  // namespace nkb
