// The statistics accumulator on the GPU. A batch is reduced the way the channel norms reduce
// theirs (channel_norm_partials.cuh: per-(n, c) partials over S, 16-byte loads, fixed merge order)
// into fp32 Welford states of x - shift (shift: the feature's first value, so |mean| >> std keeps
// its precision) with the minimum and maximum; a warp per feature then merges the partials in fp64
// and folds them into the accumulator's fp64 state with Chan's merge. Results repeat bit for bit.
#include <cuda_runtime.h>

#include <cmath>

#include "channel_norm_partials.cuh"
#include "common/check.cuh"
#include "common/device_types.cuh"
#include "common/welford.cuh"
#include "statistics.hpp"

namespace nk::cuda {
namespace {

// min and max that propagate NaN, as the mean and the variance do (the CPU backend's rule). v != v
// tests for NaN: isnan() here costs local memory in the partial kernels.
template <class F>
__device__ __forceinline__ F lower(F a, F b) {
  return a != a || b != b ? F(NAN) : (b < a ? b : a);
}
template <class F>
__device__ __forceinline__ F higher(F a, F b) {
  return a != a || b != b ? F(NAN) : (b > a ? b : a);
}

struct Partial {
  dev::Welford w;
  float lo, hi;
};

__device__ __forceinline__ Partial shfl_xor(Partial s, int mask, int width) {
  return Partial{dev::shfl_xor(s.w, mask, width), __shfl_xor_sync(0xffffffffu, s.lo, mask, width),
                 __shfl_xor_sync(0xffffffffu, s.hi, mask, width)};
}

template <class T>
struct AccumulateOp {
  using State = Partial;
  static constexpr bool kReadsDy = false;
  static constexpr bool kFold = false, kAux = false, kWelfordLanes = false;
  const T* x;
  ChannelPlan plan;

  // A push's min and max take fminf/fmaxf (one instruction each, NaN dropped) and one NaN test
  // per value folded into a flag; a NaN among the values or already in the state (lo, set with hi)
  // then makes both NaN, so they propagate it as lower/higher do, at 3 instructions a value where
  // lower/higher cost about 8.
  struct Local {
    float shift;
    template <int K>
    __device__ void push(State& s, const float (&x)[K], const float (&)[K]) const {
      float v[K];
      bool nan = s.lo != s.lo;
#pragma unroll
      for (int i = 0; i < K; ++i) {
        v[i] = x[i] - shift;
        nan |= x[i] != x[i];
        s.lo = fminf(s.lo, x[i]);
        s.hi = fmaxf(s.hi, x[i]);
      }
      if (nan) s.lo = s.hi = NAN;
      s.w = dev::welford_push_values(s.w, v);
    }
    template <int K>
    __device__ void push_some(State& s, const float (&x)[K], const float (&)[K],
                              const bool (&use)[K]) const {
      float v[K];
      bool nan = s.lo != s.lo;
#pragma unroll
      for (int i = 0; i < K; ++i) {
        v[i] = x[i] - shift;
        if (use[i]) {
          nan |= x[i] != x[i];
          s.lo = fminf(s.lo, x[i]);
          s.hi = fmaxf(s.hi, x[i]);
        }
      }
      if (nan) s.lo = s.hi = NAN;
      s.w = dev::welford_push_some(s.w, v, use);
    }
  };
  __device__ Local local(int64_t, int64_t c) const {
    return Local{dev::to_float(x[plan.rows_layout ? c * plan.s : c])};
  }
  __device__ State identity() const { return Partial{dev::welford_empty(), INFINITY, -INFINITY}; }
  __device__ State merge(State a, State b) const {
    return Partial{dev::welford_merge_approx(a.w, b.w), lower(a.lo, b.lo), higher(a.hi, b.hi)};
  }
};

// A feature's statistics in fp64: what the accumulator holds.
struct Wide {
  int64_t count;
  double mean, m2, lo, hi;
};

__device__ __forceinline__ Wide merge_wide(Wide a, Wide b) {
  if (b.count == 0) return Wide{a.count, a.mean, a.m2, lower(a.lo, b.lo), higher(a.hi, b.hi)};
  if (a.count == 0) return Wide{b.count, b.mean, b.m2, lower(a.lo, b.lo), higher(a.hi, b.hi)};
  const int64_t n = a.count + b.count;
  const double delta = b.mean - a.mean, share = static_cast<double>(b.count) / n;
  return Wide{n, a.mean + delta * share, a.m2 + (b.m2 + delta * delta * a.count * share),
              lower(a.lo, b.lo), higher(a.hi, b.hi)};
}

__device__ __forceinline__ Wide shfl_xor(Wide s, int mask, int width) {
  return Wide{__shfl_xor_sync(0xffffffffu, s.count, mask, width),
              __shfl_xor_sync(0xffffffffu, s.mean, mask, width),
              __shfl_xor_sync(0xffffffffu, s.m2, mask, width),
              __shfl_xor_sync(0xffffffffu, s.lo, mask, width),
              __shfl_xor_sync(0xffffffffu, s.hi, mask, width)};
}

// A warp per feature: merges the batch's partials (lane-strided, then a fixed butterfly) and folds
// the batch into the state, which has seen `count` samples.
template <class T>
__global__ void __launch_bounds__(256)
    fold_batch(StatsState st, int64_t count, const Partial* partials, const T* x,
               ChannelPlan plan) {
  const int lane = threadIdx.x % 32;
  const int64_t c = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
  if (c >= plan.c) return;
  const double shift = dev::to_float(x[plan.rows_layout ? c * plan.s : c]);
  Wide t{0, 0.0, 0.0, INFINITY, -INFINITY};
  for (int64_t j = lane; j < plan.chunks; j += 32) {  // a batch-norm shape: one slot
    const Partial& p = partials[plan.partial_index(0, c, j)];
    t = merge_wide(t, Wide{p.w.count, shift + p.w.mean, p.w.m2, p.lo, p.hi});
  }
  t = dev::warp_merge(t, lane, 32, [](Wide a, Wide b) { return merge_wide(a, b); });
  if (lane == 0) {
    const Wide merged = merge_wide(Wide{count, st.mean[c], st.m2[c], st.min[c], st.max[c]}, t);
    st.mean[c] = merged.mean;
    st.m2[c] = merged.m2;
    st.min[c] = merged.lo;
    st.max[c] = merged.hi;
  }
}

__global__ void __launch_bounds__(256) clear_kernel(StatsState st) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= st.features) return;
  st.mean[c] = 0.0;
  st.m2[c] = 0.0;
  st.min[c] = INFINITY;
  st.max[c] = -INFINITY;
}

__global__ void __launch_bounds__(256)
    merge_kernel(StatsState into, int64_t into_count, StatsState from, int64_t from_count) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= into.features) return;
  const Wide merged =
      merge_wide(Wide{into_count, into.mean[c], into.m2[c], into.min[c], into.max[c]},
                 Wide{from_count, from.mean[c], from.m2[c], from.min[c], from.max[c]});
  into.mean[c] = merged.mean;
  into.m2[c] = merged.m2;
  into.min[c] = merged.lo;
  into.max[c] = merged.hi;
}

__global__ void __launch_bounds__(256)
    finalize_kernel(StatsState st, int64_t count, float* mean, float* var, float* var_unbiased) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= st.features) return;
  if (mean) mean[c] = static_cast<float>(st.mean[c]);
  if (var) var[c] = static_cast<float>(st.m2[c] / static_cast<double>(count));
  if (var_unbiased) var_unbiased[c] = static_cast<float>(st.m2[c] / static_cast<double>(count - 1));
}

__global__ void __launch_bounds__(256) min_max_kernel(StatsState st, float* min, float* max) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= st.features) return;
  if (min) min[c] = static_cast<float>(st.min[c]);
  if (max) max[c] = static_cast<float>(st.max[c]);
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }
unsigned blocks_for(int64_t features) { return static_cast<unsigned>((features + 255) / 256); }

template <class T>
void add(const StatsState& st, int64_t count, const ChannelShape& s, const void* x_,
         const Launch& l) {
  const T* x = static_cast<const T*>(x_);
  const ChannelPlan plan = plan_channel_norm(s, sizeof(T), dev::aligned16(x));
  auto stream = static_cast<cudaStream_t>(l.stream);
  auto* partials = static_cast<Partial*>(l.workspace);
  launch_partials(AccumulateOp<T>{x, plan}, x, static_cast<const T*>(nullptr), plan, l.sm_count,
                  partials, stream);
  dev::check_cuda(cudaGetLastError(), "statistics partials launch");
  fold_batch<T>
      <<<static_cast<unsigned>((s.c + 7) / 8), 256, 0, stream>>>(st, count, partials, x, plan);
  dev::check_cuda(cudaGetLastError(), "statistics fold launch");
}

}  // namespace

size_t stats_state_bytes(int64_t features) {
  return 4 * align256(static_cast<size_t>(features) * sizeof(double));
}

StatsState stats_state(void* memory, int64_t features) {
  auto* base = static_cast<unsigned char*>(memory);
  const size_t each = align256(static_cast<size_t>(features) * sizeof(double));
  return StatsState{
      features, reinterpret_cast<double*>(base), reinterpret_cast<double*>(base + each),
      reinterpret_cast<double*>(base + 2 * each), reinterpret_cast<double*>(base + 3 * each)};
}

void stats_clear(const StatsState& st, void* stream) {
  clear_kernel<<<blocks_for(st.features), 256, 0, static_cast<cudaStream_t>(stream)>>>(st);
  dev::check_cuda(cudaGetLastError(), "statistics clear launch");
}

size_t stats_add_workspace_size(const ChannelShape& s) {
  size_t bytes = 0;
  for (bool vector_access : {true, false}) {
    const ChannelPlan plan =
        plan_channel_norm(s, static_cast<int>(dtype_size(s.dtype)), vector_access);
    const size_t need = align256(static_cast<size_t>(plan.partials()) * sizeof(Partial));
    if (need > bytes) bytes = need;
  }
  return bytes;
}

void stats_add(const StatsState& st, int64_t count, const ChannelShape& s, const void* x,
               const Launch& l) {
  dispatch_dtype(s.dtype, [&](auto t) { add<dev::device_t<decltype(t)>>(st, count, s, x, l); });
}

void stats_merge(const StatsState& into, int64_t into_count, const StatsState& from,
                 int64_t from_count, void* stream) {
  merge_kernel<<<blocks_for(into.features), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      into, into_count, from, from_count);
  dev::check_cuda(cudaGetLastError(), "statistics merge launch");
}

void stats_finalize(const StatsState& st, int64_t count, float* mean, float* var,
                    float* var_unbiased, void* stream) {
  finalize_kernel<<<blocks_for(st.features), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      st, count, mean, var, var_unbiased);
  dev::check_cuda(cudaGetLastError(), "statistics finalize launch");
}

void stats_min_max(const StatsState& st, float* min, float* max, void* stream) {
  min_max_kernel<<<blocks_for(st.features), 256, 0, static_cast<cudaStream_t>(stream)>>>(st, min,
                                                                                         max);
  dev::check_cuda(cudaGetLastError(), "statistics min/max launch");
}

}  // namespace nk::cuda
