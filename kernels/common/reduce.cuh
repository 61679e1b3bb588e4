// Reductions across aligned lane groups, warps and blocks: float sums (addition is commutative, so
// the xor butterfly gives every lane of a group the same bits; used where a row sits in registers
// and the exact two-pass statistics replace Welford), and merges of any state with an associative
// merge (Welford, pairs of sums), which always combine the lower-indexed partial first so every
// thread holding a result holds the same bits. Block results read the warp partials in a fixed
// order: no atomics, runs repeat bit for bit.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace nk::dev {

template <int N>
struct Floats {
  float v[N];
};

// Sums each of N values over aligned groups of `width` lanes (a power of two <= 32). All 32 lanes
// of the warp call it.
// Unrolled over the five possible steps, each taken when its offset is inside the group (uniform
// across the warp): a shuffle and an add a step, not a loop's branch and counters.
template <int N>
__device__ __forceinline__ Floats<N> group_sum(Floats<N> a, int width) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    if (offset < width) {
#pragma unroll
      for (int i = 0; i < N; ++i) a.v[i] += __shfl_xor_sync(0xffffffffu, a.v[i], offset, width);
    }
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
  // Every warp adds the warps' partials in one butterfly (lane w holds warp w's): a load and five
  // shuffles a thread instead of a loop over up to 32 partials, and the same bits in every lane.
  Floats<N> total{};
  if (lane < warps) {
#pragma unroll
    for (int i = 0; i < N; ++i) total.v[i] = scratch[lane * N + i];
  }
  total = group_sum<N>(total, 32);
  __syncthreads();
  return total;
}

__device__ __forceinline__ float2 shfl_xor(float2 v, int mask, int width) {
  return make_float2(__shfl_xor_sync(0xffffffffu, v.x, mask, width),
                     __shfl_xor_sync(0xffffffffu, v.y, mask, width));
}

// Merges a state over aligned groups of `width` lanes (a power of two <= 32) with
// merge(lower, higher); every lane of a group ends with the group's total. All 32 lanes call it.
// State needs an overload of shfl_xor.
template <class State, class Merge>
__device__ __forceinline__ State warp_merge(State s, int lane, int width, Merge merge) {
  for (int offset = width / 2; offset > 0; offset /= 2) {
    const State other = shfl_xor(s, offset, width);
    s = (lane & offset) ? merge(other, s) : merge(s, other);
  }
  return s;
}

// Folds `count` values into `acc` in order (acc = fold(acc, value)), each value the result of
// next(), which loads one and advances its cursor: the loads are issued kAhead at a time before
// their folds (the last, partial batch too, its loads predicated), so a lane's chain of dependent
// folds waits on memory once per kAhead values rather than once per value. The order of the folds,
// and so every bit of the result, is the plain loop's.
template <int kAhead, class Acc, class Next, class Fold>
__device__ __forceinline__ Acc fold_ahead(Acc acc, int64_t count, Next next, Fold fold) {
  using Value = decltype(next());
  for (; count > 0; count -= kAhead) {
    Value v[kAhead];
#pragma unroll
    for (int i = 0; i < kAhead; ++i) {
      if (i < count) v[i] = next();
    }
#pragma unroll
    for (int i = 0; i < kAhead; ++i) {
      if (i < count) acc = fold(acc, v[i]);
    }
  }
  return acc;
}

// Merges a state over the whole block (blockDim.x * blockDim.y threads, a multiple of 32, linear
// thread order x-fastest); every thread gets the total. `scratch` holds 32 states in shared memory
// and may be reused once the call returns.
template <class State, class Merge>
__device__ __forceinline__ State block_merge(State s, State* scratch, State identity, Merge merge) {
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int lane = tid % 32, warp = tid / 32, warps = blockDim.x * blockDim.y / 32;
  s = warp_merge(s, lane, 32, merge);
  if (lane == 0) scratch[warp] = s;
  __syncthreads();
  State total = identity;
  for (int w = 0; w < warps; ++w) total = merge(total, scratch[w]);
  __syncthreads();
  return total;
}

}  // namespace nk::dev
