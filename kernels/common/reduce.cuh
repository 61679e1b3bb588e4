// Sums of floats across aligned lane groups, warps and blocks. Float addition is commutative, so
// the xor butterfly gives every lane of a group the same bits; block sums read the warp partials in
// a fixed order. Used where a row sits in registers and the exact two-pass statistics (mean, then
// centred sum of squares) replace Welford.
#pragma once

#include <cuda_runtime.h>

namespace nk::dev {

template <int N>
struct Floats {
  float v[N];
};

// Sums each of N values over aligned groups of `width` lanes (a power of two <= 32). All 32 lanes
// of the warp call it.
template <int N>
__device__ __forceinline__ Floats<N> group_sum(Floats<N> a, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) {
#pragma unroll
    for (int i = 0; i < N; ++i) a.v[i] += __shfl_xor_sync(0xffffffffu, a.v[i], offset, width);
  }
  return a;
}

// Sums N values over the whole block (blockDim.x a multiple of 32). `scratch` is 32 * N floats of
// shared memory, reusable once the call returns.
template <int N>
__device__ __forceinline__ Floats<N> block_sum(Floats<N> a, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  a = group_sum<N>(a, 32);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) scratch[warp * N + i] = a.v[i];
  }
  __syncthreads();
  Floats<N> total{};
  for (int w = 0; w < warps; ++w) {
#pragma unroll
    for (int i = 0; i < N; ++i) total.v[i] += scratch[w * N + i];
  }
  __syncthreads();
  return total;
}

// Sum over the threads that share a row: a lane group when threads_per_row <= 32, else the block
// (one row per block).
template <int N>
__device__ __forceinline__ Floats<N> row_sum(Floats<N> a, int threads_per_row, float* scratch) {
  return threads_per_row <= 32 ? group_sum<N>(a, threads_per_row) : block_sum<N>(a, scratch);
}

}  // namespace nk::dev
