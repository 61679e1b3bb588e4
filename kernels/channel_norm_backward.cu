// Batch, instance and group norm backward on the GPU.
//
// With g = dy * weight_c and x-hat = (x - mean_k) * invstd_k (saved statistics in training, the
// running ones in inference), every quantity needs only per-(n, c) sums of dy and dy * x-hat:
//   dbias_c = sum dy,  dweight_c = sum dy * x-hat            (over n and s)
//   sum_g_k = sum over (n, c) in k of weight_c * sum dy,  sum_gx_k likewise with dy * x-hat
//   training:  dx = weight_c * invstd_k * dy - c1_k - (x - mean_k) * c2_k,
//              c1_k = invstd_k * sum_g_k / count_k,  c2_k = invstd_k^2 * sum_gx_k / count_k
//   inference: dx = dy * weight_c / sqrt(running_var_c + eps)
// So: (1) partial sums per (slot, c, chunk) (channel_norm_partials.cuh; batch norm's one slot
// spans every n, so its workspace grows with C only), (2) a warp per channel or statistic
// that adds them in a fixed order into dweight, dbias and c1/c2, (3) dx elementwise. Inference
// without dweight/dbias is the elementwise launch alone. No atomics: results repeat bit for bit.
#include <cstdint>

#include "channel_norm.hpp"
#include "channel_norm_partials.cuh"
#include "common/check.cuh"
#include "common/device_types.cuh"

namespace nk::cuda {
namespace {

// The statistics x-hat is taken with: per statistic (training) or per channel (inference).
struct XhatStats {
  bool training;
  const float* mean;   // save_mean, or running_mean
  const float* scale;  // save_invstd, or running_var (inverted here)
  float eps;
  ChannelNorm kind;
  int64_t channels, groups;

  __device__ float2 at(int64_t n, int64_t c) const {  // (mean, invstd)
    if (!training) return make_float2(mean[c], rsqrtf(scale[c] + eps));
    const int64_t k = stat_index(kind, n, c, channels, groups);
    return make_float2(mean[k], scale[k]);
  }
};

struct GradOp {
  using State = float2;  // (sum dy, sum dy * x-hat)
  static constexpr bool kReadsDy = true;
  XhatStats stats;

  struct Local {
    float mean, invstd;
    // invstd multiplies the tile's sum of dy * (x - mean) once, not every product.
    template <int K>
    __device__ void push(State& s, const float (&x)[K], const float (&dy)[K]) const {
      float sum_dy = 0.0f, sum_dyx = 0.0f;
#pragma unroll
      for (int i = 0; i < K; ++i) {
        sum_dy += dy[i];
        sum_dyx += dy[i] * (x[i] - mean);
      }
      s.x += sum_dy;
      s.y += sum_dyx * invstd;
    }
    // The values left out come as dy = 0 and x = 0 (finite), so they add nothing.
    template <int K>
    __device__ void push_some(State& s, const float (&x)[K], const float (&dy)[K],
                              const bool (&)[K]) const {
      push(s, x, dy);
    }
  };
  __device__ Local local(int64_t n, int64_t c) const {
    const float2 m = stats.at(n, c);
    return Local{m.x, m.y};
  }
  __device__ State identity() const { return make_float2(0.0f, 0.0f); }
  __device__ State merge(State a, State b) const { return make_float2(a.x + b.x, a.y + b.y); }
};

struct FinalizeParams {
  const float2* partials;
  ChannelPlan plan;
  XhatStats stats;
  const float* weight;
  float* dweight;
  float* dbias;
  float* c1;  // training with dx: per statistic
  float* c2;
};

// A warp per unit: the first C warps (when dweight or dbias is wanted) sum a channel's partials
// over n and chunks; the next warps (when dx is wanted in training) sum a statistic's members into
// c1 and c2. Lanes take members in lane-strided order and a fixed butterfly joins them.
__global__ void __launch_bounds__(256) finalize_backward(FinalizeParams p) {
  const ChannelPlan& plan = p.plan;
  const int lane = threadIdx.x % 32;
  const int64_t unit = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
  const int64_t channel_units = (p.dweight || p.dbias) ? plan.c : 0;
  if (unit < channel_units) {
    dev::Floats<2> t{};
    for (int64_t j = lane; j < plan.slots * plan.chunks; j += 32) {
      const float2 v = p.partials[plan.partial_index(j / plan.chunks, unit, j % plan.chunks)];
      t.v[0] += v.x;
      t.v[1] += v.y;
    }
    t = dev::group_sum<2>(t, 32);
    if (lane == 0) {
      if (p.dbias) p.dbias[unit] = t.v[0];
      if (p.dweight) p.dweight[unit] = t.v[1];
    }
    return;
  }
  if (p.c1 == nullptr) return;
  const ChannelNorm kind = p.stats.kind;
  const int64_t groups = p.stats.groups, per_group = plan.c / groups;
  const int64_t stats = kind == ChannelNorm::kBatch      ? plan.c
                        : kind == ChannelNorm::kInstance ? plan.n * plan.c
                                                         : plan.n * groups;
  const int64_t k = unit - channel_units;
  if (k >= stats) return;
  // The members of statistic k: one slot's channels c0 .. c0 + c_count - 1, each with its chunks
  // (batch norm's one slot holds every sample).
  int64_t slot, c0, c_count;
  if (kind == ChannelNorm::kBatch) {
    slot = 0, c0 = k, c_count = 1;
  } else if (kind == ChannelNorm::kInstance) {
    slot = k / plan.c, c0 = k % plan.c, c_count = 1;
  } else {
    slot = k / groups, c0 = k % groups * per_group, c_count = per_group;
  }
  dev::Floats<2> t{};  // sum_g, sum_gx
  for (int64_t j = lane; j < c_count * plan.chunks; j += 32) {
    const int64_t chunk = j % plan.chunks, c = c0 + j / plan.chunks;
    const float w = p.weight ? p.weight[c] : 1.0f;
    const float2 v = p.partials[plan.partial_index(slot, c, chunk)];
    t.v[0] += w * v.x;
    t.v[1] += w * v.y;
  }
  t = dev::group_sum<2>(t, 32);
  if (lane == 0) {
    const float count = static_cast<float>(c_count * plan.span());
    const float invstd = p.stats.scale[k];
    p.c1[k] = invstd * t.v[0] / count;
    p.c2[k] = invstd * invstd * t.v[1] / count;
  }
}

template <class T>
struct DxParams {
  const T* x;
  const T* dy;
  T* dx;
  ChannelPlan plan;
  XhatStats stats;
  const float* weight;
  const float* c1;
  const float* c2;
};

// dx for every element, a pack per iteration of a persistent grid-stride loop. Inference
// (kTraining false) needs dy alone: x is not read.
template <class T, int E, bool kTraining>
__global__ void __launch_bounds__(256) apply_backward(DxParams<T> p) {
  const ChannelPlan& plan = p.plan;
  const int64_t packs = plan.n * plan.c * plan.s / E;
  for (int64_t pack = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; pack < packs;
       pack += int64_t{gridDim.x} * blockDim.x) {
    const int64_t e = pack * E;
    int64_t n, c0;
    if (plan.rows_layout) {
      const int64_t row = e / plan.s;
      n = row / plan.c;
      c0 = row % plan.c;
    } else {
      n = e / (plan.s * plan.c);
      c0 = e % plan.c;
    }
    float xv[E] = {}, dv[E];
    if constexpr (kTraining) dev::load_floats<T, E>(p.x + e, xv);
    dev::load_floats<T, E>(p.dy + e, dv);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const int64_t c = plan.rows_layout ? c0 : c0 + i;
      const float w = p.weight ? p.weight[c] : 1.0f;
      const float2 m = p.stats.at(n, c);
      if constexpr (kTraining) {
        const int64_t k = stat_index(p.stats.kind, n, c, plan.c, p.stats.groups);
        dv[i] = w * m.y * dv[i] - p.c1[k] - (xv[i] - m.x) * p.c2[k];
      } else {
        dv[i] = dv[i] * w * m.y;
      }
    }
    dev::store_floats<T, E>(p.dx + e, dv);
  }
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Workspace: the partial sums, then c1 and c2 per statistic, each 256-byte aligned.
struct Layout {
  size_t partials, coefficients, total;
};

Layout layout_of(const ChannelPlan& plan, int64_t num_stats) {
  const size_t partials = align256(static_cast<size_t>(plan.partials()) * sizeof(float2));
  const size_t coefficients = align256(static_cast<size_t>(num_stats) * sizeof(float));
  return Layout{partials, coefficients, partials + 2 * coefficients};
}

template <class T>
void launch_dx(const ChannelBackwardArgs& a, const ChannelPlan& plan, const XhatStats& stats,
               const float* c1, const float* c2, const Launch& l) {
  const DxParams<T> p{static_cast<const T*>(a.x),
                      static_cast<const T*>(a.dy),
                      static_cast<T*>(a.dx),
                      plan,
                      stats,
                      a.weight,
                      c1,
                      c2};
  const int64_t packs = a.shape.numel() / plan.pack_elems;
  const int64_t cap = int64_t{l.sm_count} * 8;
  const unsigned grid =
      static_cast<unsigned>((packs + 255) / 256 < cap ? (packs + 255) / 256 : cap);
  auto stream = static_cast<cudaStream_t>(l.stream);
  constexpr int kE = 16 / sizeof(T);
  if (stats.training) {
    if (plan.pack_elems == 1) {
      apply_backward<T, 1, true><<<grid, 256, 0, stream>>>(p);
    } else {
      apply_backward<T, kE, true><<<grid, 256, 0, stream>>>(p);
    }
  } else if (plan.pack_elems == 1) {
    apply_backward<T, 1, false><<<grid, 256, 0, stream>>>(p);
  } else {
    apply_backward<T, kE, false><<<grid, 256, 0, stream>>>(p);
  }
  dev::check_cuda(cudaGetLastError(), "channel norm dx launch");
}

// Synchronized batch norm: c1 and c2 per channel from the sums over every rank and the global
// count in device memory (a count below 1 means no rank had samples: the coefficients are 0).
__global__ void __launch_bounds__(256)
    global_coefficients(int64_t channels, const int64_t* count, const float* sum_dy,
                        const float* sum_dy_xhat, const float* weight, const float* save_invstd,
                        float* c1, float* c2) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  const int64_t total = *count;
  const float n = static_cast<float>(total), w = weight ? weight[c] : 1.0f;
  const float invstd = save_invstd[c];
  c1[c] = total >= 1 ? invstd * (w * sum_dy[c]) / n : 0.0f;
  c2[c] = total >= 1 ? invstd * invstd * (w * sum_dy_xhat[c]) / n : 0.0f;
}

template <class T>
void backward_global(const ChannelBackwardArgs& a, const int64_t* count, const float* sum_dy,
                     const float* sum_dy_xhat, const Launch& l) {
  const ChannelShape& s = a.shape;
  auto* base = static_cast<unsigned char*>(l.workspace);
  auto* c1 = reinterpret_cast<float*>(base);
  auto* c2 = reinterpret_cast<float*>(base + align256(s.c * sizeof(float)));
  global_coefficients<<<static_cast<unsigned>((s.c + 255) / 256), 256, 0,
                        static_cast<cudaStream_t>(l.stream)>>>(s.c, count, sum_dy, sum_dy_xhat,
                                                               a.weight, a.save_invstd, c1, c2);
  dev::check_cuda(cudaGetLastError(), "synchronized batch norm coefficients launch");
  if (s.numel() == 0) return;
  const bool vector_access = dev::aligned16(a.x) && dev::aligned16(a.dy) && dev::aligned16(a.dx);
  const ChannelPlan plan = plan_channel_norm(s, sizeof(T), vector_access);
  const XhatStats stats{true, a.save_mean, a.save_invstd, 0.0f, s.kind, s.c, s.groups};
  launch_dx<T>(a, plan, stats, c1, c2, l);
}

template <class T>
void backward(const ChannelBackwardArgs& a, const Launch& l) {
  const ChannelShape& s = a.shape;
  const bool training = a.phase == NK_TRAINING;
  const bool vector_access = dev::aligned16(a.x) && dev::aligned16(a.dy) && dev::aligned16(a.dx);
  const ChannelPlan plan = plan_channel_norm(s, sizeof(T), vector_access);
  auto stream = static_cast<cudaStream_t>(l.stream);
  const XhatStats stats{training,
                        training ? a.save_mean : a.running_mean,
                        training ? a.save_invstd : a.running_var,
                        static_cast<float>(a.eps),
                        s.kind,
                        s.c,
                        s.groups};
  const Layout lay = layout_of(plan, s.num_stats());
  auto* base = static_cast<unsigned char*>(l.workspace);
  const bool want_params = a.dweight != nullptr || a.dbias != nullptr;
  const bool want_coefficients = training && a.dx != nullptr;
  float* c1 = want_coefficients ? reinterpret_cast<float*>(base + lay.partials) : nullptr;
  float* c2 = want_coefficients ? reinterpret_cast<float*>(base + lay.partials + lay.coefficients)
                                : nullptr;
  if (want_params || want_coefficients) {
    auto* partials = reinterpret_cast<float2*>(base);
    launch_partials(GradOp{stats}, static_cast<const T*>(a.x), static_cast<const T*>(a.dy), plan,
                    l.sm_count, partials, stream);
    dev::check_cuda(cudaGetLastError(), "channel norm gradient sums launch");
    const int64_t units = (want_params ? s.c : 0) + (want_coefficients ? s.num_stats() : 0);
    finalize_backward<<<static_cast<unsigned>((units + 7) / 8), 256, 0, stream>>>(
        FinalizeParams{partials, plan, stats, a.weight, a.dweight, a.dbias, c1, c2});
    dev::check_cuda(cudaGetLastError(), "channel norm gradient finalize launch");
  }
  if (a.dx != nullptr) launch_dx<T>(a, plan, stats, c1, c2, l);
}

}  // namespace

size_t channel_norm_backward_workspace_size(const ChannelBackwardArgs& a) {
  size_t bytes = 0;
  const int elem = static_cast<int>(dtype_size(a.shape.dtype));
  for (bool vector_access : {true, false}) {
    const size_t need =
        layout_of(plan_channel_norm(a.shape, elem, vector_access), a.shape.num_stats())
            .total;
    if (need > bytes) bytes = need;
  }
  return bytes;
}

size_t channel_norm_backward_scratch_size(const ChannelBackwardArgs& a) {
  const bool want_params = a.dweight != nullptr || a.dbias != nullptr;
  const bool want_coefficients = a.phase == NK_TRAINING && a.dx != nullptr;
  if (!want_params && !want_coefficients) return 0;  // inference dx alone: elementwise only
  const Layout lay =
      layout_of(plan_channel_norm(
                    a.shape, static_cast<int>(dtype_size(a.shape.dtype)),
                    dev::aligned16(a.x) && dev::aligned16(a.dy) && dev::aligned16(a.dx)),
                a.shape.num_stats());
  return want_coefficients ? lay.total : lay.partials;
}

void channel_norm_backward(const ChannelBackwardArgs& a, const Launch& l) {
  dispatch_dtype(a.shape.dtype, [&](auto t) { backward<dev::device_t<decltype(t)>>(a, l); });
}

size_t batch_norm_backward_global_workspace_size(const ChannelShape& s) {
  return 2 * align256(static_cast<size_t>(s.c) * sizeof(float));
}

void batch_norm_backward_global(const ChannelBackwardArgs& a, const int64_t* count,
                                const float* sum_dy, const float* sum_dy_xhat, const Launch& l) {
  dispatch_dtype(a.shape.dtype, [&](auto t) {
    backward_global<dev::device_t<decltype(t)>>(a, count, sum_dy, sum_dy_xhat, l);
  });
}

}  // namespace nk::cuda
