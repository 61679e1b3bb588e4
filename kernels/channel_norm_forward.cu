// Batch, instance and group norm forward on the GPU.
//
// Training, three launches on the context's stream and nothing on the host:
//  1. partials: Welford states of x - shift, one per (slot, c, chunk) of a shape-only plan
//     (channel_norm_partials.cuh), where shift is the first element of the statistic the values
//     belong to: x - shift stays small when |mean| >> std, so fp32 keeps the variance (and later
//     y) accurate;
//  2. finalize, a warp per statistic or channel: merges its partials in a fixed order, writes the
//     statistics (and save_mean/save_invstd), and updates running_mean/running_var (momentum, or
//     the cumulative average from the device counter), so no extra launch and no host round trip;
//  3. apply: y = ((x - shift) - centre) * invstd * weight + bias, elementwise, 16-byte packs; its
//     first thread advances num_batches_tracked, after the finalize has read it. A counter that
//     cannot advance (negative, or INT64_MAX) stays as it is and the finalize leaves the running
//     statistics as they are: the device's rule, where the CPU backend returns an error.
// x is read twice (1 and 3); when it fits in L2 the second read mostly hits it. A fused persistent
// kernel that keeps x on chip is the tuning step this design leaves room for.
// Inference is one elementwise launch: y = (x - running_mean) * scale + bias with the
// per-channel scale = weight / sqrt(running_var + eps) (subtracting first keeps large offsets
// accurate).
#include <cstdint>

#include "channel_norm.hpp"
#include "channel_norm_partials.cuh"
#include "common/check.cuh"
#include "common/device_types.cuh"
#include "common/welford.cuh"

namespace nk::cuda {
namespace {

// Index of element (n, c, s) in the plan's layout (channels layout covers NCHW with S == 1 too).
__device__ __forceinline__ int64_t element_index(const ChannelPlan& p, int64_t n, int64_t c,
                                                 int64_t s) {
  return p.rows_layout ? (n * p.c + c) * p.s + s : (n * p.s + s) * p.c + c;
}

// The first element of statistic (n, c)'s set: (n or 0, first channel of c's group or c, s = 0).
__device__ __forceinline__ int64_t first_of_stat(const ChannelPlan& p, ChannelNorm kind,
                                                 int64_t groups, int64_t n, int64_t c) {
  const int64_t c0 = kind == ChannelNorm::kGroup ? c / (p.c / groups) * (p.c / groups) : c;
  return element_index(p, kind == ChannelNorm::kBatch ? 0 : n, c0, 0);
}

// The device rule for num_batches_tracked (normkit.h): a counter that is negative, or at INT64_MAX
// where the increment would overflow, is not advanced, and the running statistics it would weigh
// are left as they were, so a bad counter never writes NaN (1 / 0) or a negative momentum.
__device__ __forceinline__ bool counter_can_advance(int64_t tracked) {
  return tracked >= 0 && tracked < INT64_MAX;
}

template <class T>
struct StatsOp {
  using State = dev::Welford;
  static constexpr bool kReadsDy = false;
  const T* x;
  ChannelPlan plan;
  ChannelNorm kind;
  int64_t groups;

  struct Local {
    float shift;
    template <int K>
    __device__ void push(State& s, const float (&x)[K], const float (&)[K]) const {
      float v[K];
#pragma unroll
      for (int i = 0; i < K; ++i) v[i] = x[i] - shift;
      s = dev::welford_push_values(s, v);
    }
    template <int K>
    __device__ void push_some(State& s, const float (&x)[K], const float (&)[K],
                              const bool (&use)[K]) const {
      float v[K];
#pragma unroll
      for (int i = 0; i < K; ++i) v[i] = x[i] - shift;
      s = dev::welford_push_some(s, v, use);
    }
  };
  __device__ Local local(int64_t n, int64_t c) const {
    return Local{dev::to_float(x[first_of_stat(plan, kind, groups, n, c)])};
  }
  __device__ State identity() const { return dev::welford_empty(); }
  __device__ State merge(State a, State b) const { return dev::welford_merge(a, b); }
};

// Statistics of the batch: shift, centre (the mean of x - shift) and invstd per statistic.
struct StatArrays {
  float* shift;
  float* centre;
  float* invstd;
};

template <class T>
struct FinalizeParams {
  const dev::Welford* partials;
  const T* x;
  ChannelPlan plan;
  ChannelNorm kind;
  int64_t groups;
  float eps;
  float momentum;
  bool cumulative;
  bool unbiased;
  float* running_mean;
  float* running_var;
  int64_t* num_batches_tracked;
  StatArrays stats;
  float* save_mean;
  float* save_invstd;
};

// A warp per unit (a channel for batch and instance norm, an (n, group) for group norm): lanes
// merge the unit's partials in lane-strided order, a fixed tree joins the lanes, lane 0 writes the
// statistics and updates the running buffers. The counter is only read here: the apply kernel
// increments it afterwards, so no warp ever sees a count another has already advanced.
template <class T>
__global__ void __launch_bounds__(256) finalize_forward(FinalizeParams<T> p) {
  const ChannelPlan& plan = p.plan;
  const int lane = threadIdx.x % 32;
  const int64_t unit = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
  const int64_t tracked = p.num_batches_tracked ? *p.num_batches_tracked : 0;
  // The momentum, or -1 when the counter cannot advance: a float that stays in a register, where
  // a bool held across the merges' division calls was spilled by ptxas on sm_90.
  const float m = !counter_can_advance(tracked) ? -1.0f
                  : p.cumulative                ? 1.0f / static_cast<float>(tracked + 1)
                                                : p.momentum;
  const dev::WelfordMerge merge;
  // Writes statistic k from its merged state; returns (mean, variance for the running average).
  auto write = [&](int64_t k, const dev::Welford& t, int64_t first) -> float2 {
    const float shift = dev::to_float(p.x[first]);
    const float var = dev::welford_biased_var(t), invstd = rsqrtf(var + p.eps);
    p.stats.shift[k] = shift;
    p.stats.centre[k] = t.mean;
    p.stats.invstd[k] = invstd;
    if (p.save_mean) p.save_mean[k] = shift + t.mean;
    if (p.save_invstd) p.save_invstd[k] = invstd;
    const float n = static_cast<float>(t.count);
    return make_float2(shift + t.mean, p.unbiased ? t.m2 / (n - 1.0f) : var);
  };
  auto update_running = [&](int64_t c, float mean, float var) {
    if (p.running_mean == nullptr || !(m >= 0.0f)) return;
    p.running_mean[c] = (1.0f - m) * p.running_mean[c] + m * mean;
    p.running_var[c] = (1.0f - m) * p.running_var[c] + m * var;
  };
  if (p.kind == ChannelNorm::kGroup) {
    if (unit >= plan.n * p.groups) return;  // the whole warp leaves together
    const int64_t per_group = plan.c / p.groups;
    const int64_t n = unit / p.groups, c0 = unit % p.groups * per_group;
    dev::Welford t = dev::welford_empty();
    for (int64_t j = lane; j < per_group * plan.chunks; j += 32) {
      t = merge(t, p.partials[plan.partial_index(n, c0 + j / plan.chunks, j % plan.chunks)]);
    }
    t = dev::warp_merge(t, lane, 32, merge);
    if (lane == 0) write(unit, t, first_of_stat(plan, p.kind, p.groups, n, c0));
  } else if (p.kind == ChannelNorm::kBatch) {
    if (unit >= plan.c) return;
    dev::Welford t = dev::welford_empty();
    // Batch norm: one slot; chunk j of channel unit at first + j * step (partial_index).
    const int64_t first = plan.partial_index(0, unit, 0), step = plan.rows_layout ? 1 : plan.c;
    for (int64_t j = lane; j < plan.chunks; j += 32) t = merge(t, p.partials[first + j * step]);
    t = dev::warp_merge(t, lane, 32, merge);
    if (lane == 0) {
      const float2 mv = write(unit, t, first_of_stat(plan, p.kind, p.groups, 0, unit));
      update_running(unit, mv.x, mv.y);
    }
  } else {
    // Instance norm: a statistic per (n, c); the running statistics take their mean over n, as
    // PyTorch does.
    if (unit >= plan.c) return;
    dev::Floats<2> run{};
    for (int64_t n = lane; n < plan.n; n += 32) {
      dev::Welford t = dev::welford_empty();
      for (int64_t k = 0; k < plan.chunks; ++k)
        t = merge(t, p.partials[plan.partial_index(n, unit, k)]);
      const float2 mv = write(n * plan.c + unit, t, first_of_stat(plan, p.kind, p.groups, n, unit));
      run.v[0] += mv.x;
      run.v[1] += mv.y;
    }
    run = dev::group_sum<2>(run, 32);
    const float inv = 1.0f / static_cast<float>(plan.n);
    if (lane == 0) update_running(unit, run.v[0] * inv, run.v[1] * inv);
  }
}

template <class T>
struct ApplyParams {
  const T* x;
  T* y;
  ChannelPlan plan;
  ChannelNorm kind;
  int64_t groups;
  bool training;
  StatArrays stats;           // training
  const float* running_mean;  // inference
  const float* running_var;   // inference
  float eps;
  const float* weight;
  const float* bias;
  int64_t* num_batches_tracked;  // training: incremented once, after the finalize has read it
};

// y for every element, a pack per iteration of a persistent grid-stride loop.
template <class T, int E>
__global__ void __launch_bounds__(256) apply_forward(ApplyParams<T> p) {
  const ChannelPlan& plan = p.plan;
  if (p.num_batches_tracked && blockIdx.x == 0 && threadIdx.x == 0) {
    const int64_t tracked = *p.num_batches_tracked;
    if (counter_can_advance(tracked)) *p.num_batches_tracked = tracked + 1;
  }
  const int64_t packs = plan.n * plan.c * plan.s / E;
  for (int64_t pack = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; pack < packs;
       pack += int64_t{gridDim.x} * blockDim.x) {
    const int64_t e = pack * E;
    int64_t n, c0;
    if (plan.rows_layout) {  // the pack lies in one (n, c) row
      const int64_t row = e / plan.s;
      n = row / plan.c;
      c0 = row % plan.c;
    } else {  // the pack covers channels c0 .. c0 + E - 1 of one (n, s)
      n = e / (plan.s * plan.c);
      c0 = e % plan.c;
    }
    float v[E];
    dev::load_floats<T, E>(p.x + e, v);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const int64_t c = plan.rows_layout ? c0 : c0 + i;
      const float w = p.weight ? p.weight[c] : 1.0f, b = p.bias ? p.bias[c] : 0.0f;
      if (p.training) {
        const int64_t k = stat_index(p.kind, n, c, plan.c, p.groups);
        v[i] = ((v[i] - p.stats.shift[k]) - p.stats.centre[k]) * (p.stats.invstd[k] * w) + b;
      } else {
        v[i] = (v[i] - p.running_mean[c]) * (w * rsqrtf(p.running_var[c] + p.eps)) + b;
      }
    }
    dev::store_floats<T, E>(p.y + e, v);
  }
}

// Workspace: the partials, then shift, centre and invstd per statistic, each 256-byte aligned.
struct Layout {
  size_t partials, stats, total;
};

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

Layout layout_of(const ChannelPlan& plan, int64_t num_stats, bool training) {
  if (!training) return Layout{0, 0, 0};
  const size_t partials = align256(static_cast<size_t>(plan.partials()) * sizeof(dev::Welford));
  const size_t stats = align256(static_cast<size_t>(num_stats) * sizeof(float));
  return Layout{partials, stats, partials + 3 * stats};
}

// Synchronized batch norm, local half: a warp per channel merges its partials and writes this
// shard's mean and m2 (the partials hold x - shift, so the shift returns in the mean); the first
// thread writes the shard's count, which the host knows.
template <class T>
__global__ void __launch_bounds__(256)
    finalize_local(const dev::Welford* partials, const T* x, ChannelPlan plan, int64_t* count,
                   float* mean, float* m2) {
  const int lane = threadIdx.x % 32;
  const int64_t c = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
  if (blockIdx.x == 0 && threadIdx.x == 0) *count = plan.n * plan.s;
  if (c >= plan.c) return;
  const dev::WelfordMerge merge;
  dev::Welford t = dev::welford_empty();
  // Batch norm: one slot; chunk j of channel c at first + j * step (partial_index).
  const int64_t first = plan.partial_index(0, c, 0), step = plan.rows_layout ? 1 : plan.c;
  for (int64_t j = lane; j < plan.chunks; j += 32) t = merge(t, partials[first + j * step]);
  t = dev::warp_merge(t, lane, 32, merge);
  if (lane == 0) {
    mean[c] = dev::to_float(x[element_index(plan, 0, c, 0)]) + t.mean;
    m2[c] = t.m2;
  }
}

// Synchronized batch norm, global half: the statistics come merged over every rank (count in
// device memory, so nothing waits for the host). One block walks the channels: every thread reads
// num_batches_tracked before the block's barrier, then one thread advances it, so no channel sees
// a count another has already moved. A global count below 2 has no unbiased variance: the running
// statistics and the counter are then left as they were, and below 1 the statistics are taken as
// 0 (an all-empty batch), so an empty rank never produces NaN. A counter that cannot advance
// (counter_can_advance) leaves them as they were too.
struct GlobalParams {
  int64_t channels;
  GlobalStats g;
  float eps, momentum;
  bool cumulative, unbiased;
  float* running_mean;
  float* running_var;
  int64_t* num_batches_tracked;
  StatArrays stats;
  float* save_mean;
  float* save_invstd;
};

__global__ void __launch_bounds__(256) finalize_global(GlobalParams p) {
  const GlobalStats& g = p.g;
  const int64_t count = *g.count;
  const int64_t tracked = p.num_batches_tracked ? *p.num_batches_tracked : 0;
  const bool advance = count >= 2 && counter_can_advance(tracked);
  const bool update = advance && p.running_mean != nullptr;
  const float m = p.cumulative ? 1.0f / static_cast<float>(advance ? tracked + 1 : 1) : p.momentum;
  for (int64_t c = threadIdx.x; c < p.channels; c += blockDim.x) {
    const float n = static_cast<float>(count);
    const float mean = count >= 1 ? g.mean[c] : 0.0f;
    const float var = count >= 1 ? g.m2[c] / n : 0.0f;
    const float invstd = rsqrtf(var + p.eps);
    p.stats.shift[c] = 0.0f;
    p.stats.centre[c] = mean;
    p.stats.invstd[c] = invstd;
    if (p.save_mean) p.save_mean[c] = mean;
    if (p.save_invstd) p.save_invstd[c] = invstd;
    if (update) {
      const float run_var = p.unbiased ? g.m2[c] / (n - 1.0f) : var;
      p.running_mean[c] = (1.0f - m) * p.running_mean[c] + m * mean;
      p.running_var[c] = (1.0f - m) * p.running_var[c] + m * run_var;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0 && advance && p.num_batches_tracked) *p.num_batches_tracked = tracked + 1;
}

// y elementwise: with the batch's statistics in `stats` (training) or the running ones.
template <class T>
void launch_apply(const ChannelForwardArgs& a, const ChannelPlan& plan, bool training,
                  const StatArrays& stats, int64_t* num_batches_tracked, const Launch& l) {
  const ChannelShape& s = a.shape;
  const ApplyParams<T> p{static_cast<const T*>(a.x),
                         static_cast<T*>(a.y),
                         plan,
                         s.kind,
                         s.groups,
                         training,
                         stats,
                         a.running_mean,
                         a.running_var,
                         static_cast<float>(a.params.eps),
                         a.weight,
                         a.bias,
                         num_batches_tracked};
  const int64_t packs = s.numel() / plan.pack_elems;
  const int64_t cap = int64_t{l.sm_count} * 8;
  const unsigned grid =
      static_cast<unsigned>((packs + 255) / 256 < cap ? (packs + 255) / 256 : cap);
  auto stream = static_cast<cudaStream_t>(l.stream);
  if (plan.pack_elems == 1) {
    apply_forward<T, 1><<<grid, 256, 0, stream>>>(p);
  } else {
    apply_forward<T, 16 / sizeof(T)><<<grid, 256, 0, stream>>>(p);
  }
  dev::check_cuda(cudaGetLastError(), "channel norm apply launch");
}

StatArrays carve_stats(unsigned char* base, size_t stats_bytes) {
  return StatArrays{reinterpret_cast<float*>(base), reinterpret_cast<float*>(base + stats_bytes),
                    reinterpret_cast<float*>(base + 2 * stats_bytes)};
}

template <class T>
void forward(const ChannelForwardArgs& a, const Launch& l) {
  const ChannelShape& s = a.shape;
  const bool training = a.params.phase == NK_TRAINING;
  const bool vector_access = dev::aligned16(a.x) && dev::aligned16(a.y);
  const ChannelPlan plan = plan_channel_norm(s, sizeof(T), vector_access);
  auto stream = static_cast<cudaStream_t>(l.stream);
  const Layout lay = layout_of(plan, s.num_stats(), training);
  auto* base = static_cast<unsigned char*>(l.workspace);
  StatArrays stats{};
  if (training) {
    auto* partials = reinterpret_cast<dev::Welford*>(base);
    stats = carve_stats(base + lay.partials, lay.stats);
    const T* x = static_cast<const T*>(a.x);
    launch_partials(StatsOp<T>{x, plan, s.kind, s.groups}, x, static_cast<const T*>(nullptr), plan,
                    l.sm_count, partials, stream);
    dev::check_cuda(cudaGetLastError(), "channel norm statistics launch");
    const FinalizeParams<T> f{partials,
                              x,
                              plan,
                              s.kind,
                              s.groups,
                              static_cast<float>(a.params.eps),
                              static_cast<float>(a.params.momentum),
                              a.params.momentum_mode == NK_MOMENTUM_CUMULATIVE,
                              a.params.running_var == NK_RUNNING_VAR_UNBIASED,
                              a.running_mean,
                              a.running_var,
                              a.num_batches_tracked,
                              stats,
                              a.save_mean,
                              a.save_invstd};
    const int64_t units = s.kind == ChannelNorm::kGroup ? s.n * s.groups : s.c;
    finalize_forward<T><<<static_cast<unsigned>((units + 7) / 8), 256, 0, stream>>>(f);
    dev::check_cuda(cudaGetLastError(), "channel norm finalize launch");
  }
  launch_apply<T>(a, plan, training, stats, training ? a.num_batches_tracked : nullptr, l);
}

template <class T>
void local_stats(const ChannelShape& s, const void* x_, int64_t* count, float* mean, float* m2,
                 const Launch& l) {
  const T* x = static_cast<const T*>(x_);
  const ChannelPlan plan = plan_channel_norm(s, sizeof(T), dev::aligned16(x));
  auto stream = static_cast<cudaStream_t>(l.stream);
  auto* partials = static_cast<dev::Welford*>(l.workspace);
  launch_partials(StatsOp<T>{x, plan, s.kind, s.groups}, x, static_cast<const T*>(nullptr), plan,
                  l.sm_count, partials, stream);
  dev::check_cuda(cudaGetLastError(), "batch norm local statistics launch");
  finalize_local<T><<<static_cast<unsigned>((s.c + 7) / 8), 256, 0, stream>>>(partials, x, plan,
                                                                              count, mean, m2);
  dev::check_cuda(cudaGetLastError(), "batch norm local statistics finalize launch");
}

template <class T>
void forward_global(const ChannelForwardArgs& a, const GlobalStats& g, const Launch& l) {
  const ChannelShape& s = a.shape;
  const StatArrays stats =
      carve_stats(static_cast<unsigned char*>(l.workspace), align256(s.c * sizeof(float)));
  const GlobalParams f{s.c,
                       g,
                       static_cast<float>(a.params.eps),
                       static_cast<float>(a.params.momentum),
                       a.params.momentum_mode == NK_MOMENTUM_CUMULATIVE,
                       a.params.running_var == NK_RUNNING_VAR_UNBIASED,
                       a.running_mean,
                       a.running_var,
                       a.num_batches_tracked,
                       stats,
                       a.save_mean,
                       a.save_invstd};
  finalize_global<<<1, 256, 0, static_cast<cudaStream_t>(l.stream)>>>(f);
  dev::check_cuda(cudaGetLastError(), "synchronized batch norm finalize launch");
  if (s.numel() == 0) return;  // an empty shard still takes part in the running update
  const bool vector_access = dev::aligned16(a.x) && dev::aligned16(a.y);
  launch_apply<T>(a, plan_channel_norm(s, sizeof(T), vector_access), true, stats, nullptr, l);
}

}  // namespace

size_t channel_norm_forward_workspace_size(const ChannelForwardArgs& a) {
  size_t bytes = 0;
  const int elem = static_cast<int>(dtype_size(a.shape.dtype));
  for (bool vector_access : {true, false}) {
    const ChannelPlan plan = plan_channel_norm(a.shape, elem, vector_access);
    const size_t need = layout_of(plan, a.shape.num_stats(), a.params.phase == NK_TRAINING).total;
    if (need > bytes) bytes = need;
  }
  return bytes;
}

void channel_norm_forward(const ChannelForwardArgs& a, const Launch& l) {
  dispatch_dtype(a.shape.dtype, [&](auto t) { forward<dev::device_t<decltype(t)>>(a, l); });
}

size_t batch_norm_local_stats_workspace_size(const ChannelShape& s) {
  size_t bytes = 0;
  for (bool vector_access : {true, false}) {
    const ChannelPlan plan =
        plan_channel_norm(s, static_cast<int>(dtype_size(s.dtype)), vector_access);
    const size_t need = align256(static_cast<size_t>(plan.partials()) * sizeof(dev::Welford));
    if (need > bytes) bytes = need;
  }
  return bytes;
}

void batch_norm_local_stats(const ChannelShape& s, const void* x, int64_t* count, float* mean,
                            float* m2, const Launch& l) {
  dispatch_dtype(
      s.dtype, [&](auto t) { local_stats<dev::device_t<decltype(t)>>(s, x, count, mean, m2, l); });
}

size_t batch_norm_forward_global_workspace_size(const ChannelShape& s) {
  return 3 * align256(static_cast<size_t>(s.c) * sizeof(float));
}

void batch_norm_forward_global(const ChannelForwardArgs& a, const GlobalStats& g, const Launch& l) {
  dispatch_dtype(a.shape.dtype,
                 [&](auto t) { forward_global<dev::device_t<decltype(t)>>(a, g, l); });
}

}  // namespace nk::cuda
