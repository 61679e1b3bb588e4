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
// spans every n, so its workspace grows with C only), (2) a warp per channel or statistic (two
// warps per block, so small C spreads over many SMs) that adds them in a fixed order into dweight,
// dbias and the dx coefficients per unit - c for batch norm, (n, c) for instance and group norm -
//   dx = a * dy + (x - mean_k) * b + c,  a = weight_c * invstd_k,  b = -c2_k,  c = -c1_k
// (one float4 per unit; x - mean is kept as a difference, as the forward keeps x - shift, for
// large offsets), (3) dx elementwise (channel_norm_apply.cuh). Inference without dweight/dbias is
// the elementwise launch alone, with a = weight_c / sqrt(running_var_c + eps) folded in registers
// and dy the only input. No atomics: results repeat bit for bit.
#include <cstdint>
#include <type_traits>

#include "channel_norm.hpp"
#include "channel_norm_apply.cuh"
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
  float4* coefs;  // training with dx: (mean, a, b, c) per unit
};

constexpr int kFinalizeBlock = 64;  // two warps: C = 64 channels make 32 blocks

// A warp per unit: the first C warps (when dweight or dbias is wanted) sum a channel's partials
// over n and chunks; the next warps (when dx is wanted in training) sum a statistic's members into
// c1 and c2 and write the dx coefficients of its units. Lanes take members in lane-strided order
// and a fixed butterfly joins them (every lane ends with the same bits).
__global__ void __launch_bounds__(kFinalizeBlock) finalize_backward(FinalizeParams p) {
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
  if (p.coefs == nullptr) return;
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
  const float count = static_cast<float>(c_count * plan.span());
  const float invstd = p.stats.scale[k], mean = p.stats.mean[k];
  const float c1 = invstd * t.v[0] / count, c2 = invstd * invstd * t.v[1] / count;
  // Units of statistic k: channel c (batch norm) or (slot, c) for its c_count channels.
  const int64_t unit0 = kind == ChannelNorm::kBatch ? c0 : slot * plan.c + c0;
  for (int64_t j = lane; j < c_count; j += 32) {
    const float w = p.weight ? p.weight[c0 + j] : 1.0f;
    p.coefs[unit0 + j] = make_float4(mean, w * invstd, -c2, -c1);
  }
}

// The backward's apply op (channel_norm_apply.cuh). Training: dx = a*dy + (x - mean)*b + c with
// the finalize's (mean, a, b, c) per unit; inference: dx = a*dy, a folded per channel from the
// weight and the running variance in registers, and x not read.
template <class T, bool kTraining>
struct DxApply {
  using Elem = T;
  using Coef = std::conditional_t<kTraining, float4, float>;
  static constexpr int kInputs = kTraining ? 2 : 1;
  const T* in[kInputs];  // dy, then x in training
  T* out;                // dx
  const float4* coefs;
  const float* weight;
  const float* running_var;
  float eps;

  __device__ void once() const {}
  __device__ Coef coef(int64_t u) const {
    if constexpr (kTraining) {
      return coefs[u];
    } else {
      return (weight ? weight[u] : 1.0f) * rsqrtf(running_var[u] + eps);
    }
  }
  __device__ float apply(const Coef& k, const float (&v)[kInputs]) const {
    if constexpr (kTraining) {
      return fmaf(k.y, v[0], fmaf(v[1] - k.x, k.z, k.w));
    } else {
      return k * v[0];
    }
  }
};

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Workspace: the partial sums, then the dx coefficients (a float4 per unit), 256-byte aligned.
struct Layout {
  size_t partials, coefficients, total;
};

// Coefficient units: c for batch norm, (n, c) for instance and group norm.
int64_t coef_units(const ChannelShape& s) {
  return s.kind == ChannelNorm::kBatch ? s.c : s.n * s.c;
}

Layout layout_of(const ChannelPlan& plan, int64_t units) {
  const size_t partials = align256(static_cast<size_t>(plan.partials()) * sizeof(float2));
  const size_t coefficients = align256(static_cast<size_t>(units) * sizeof(float4));
  return Layout{partials, coefficients, partials + coefficients};
}

// dx elementwise: with the finalize's coefficients (training) or the running variance.
template <class T>
void launch_dx(const ChannelBackwardArgs& a, const ChannelPlan& plan, bool training,
               const float4* coefs, const Launch& l) {
  auto stream = static_cast<cudaStream_t>(l.stream);
  const auto* x = static_cast<const T*>(a.x);
  const auto* dy = static_cast<const T*>(a.dy);
  auto* dx = static_cast<T*>(a.dx);
  const float eps = static_cast<float>(a.eps);
  if (training) {
    using Op = DxApply<T, true>;
    const Op op{{dy, x}, dx, coefs, a.weight, a.running_var, eps};
    if (a.shape.kind == ChannelNorm::kBatch) {
      launch_elementwise<Op, false>(op, plan, l.sm_count, stream);
    } else {
      launch_elementwise<Op, true>(op, plan, l.sm_count, stream);
    }
  } else {
    using Op = DxApply<T, false>;
    launch_elementwise<Op, false>(Op{{dy}, dx, nullptr, a.weight, a.running_var, eps}, plan,
                                  l.sm_count, stream);
  }
  dev::check_cuda(cudaGetLastError(), "channel norm dx launch");
}

// Synchronized batch norm: the dx coefficients per channel from the sums over every rank and the
// global count in device memory (a count below 1 means no rank had samples: c1 = c2 = 0), a
// thread per channel.
__global__ void __launch_bounds__(256)
    global_coefficients(int64_t channels, const int64_t* count, const float* sum_dy,
                        const float* sum_dy_xhat, const float* weight, const float* save_mean,
                        const float* save_invstd, float4* coefs) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  const int64_t total = *count;
  const float n = static_cast<float>(total), w = weight ? weight[c] : 1.0f;
  const float invstd = save_invstd[c];
  const float c1 = total >= 1 ? invstd * (w * sum_dy[c]) / n : 0.0f;
  const float c2 = total >= 1 ? invstd * invstd * (w * sum_dy_xhat[c]) / n : 0.0f;
  coefs[c] = make_float4(save_mean[c], w * invstd, -c2, -c1);
}

template <class T>
void backward_global(const ChannelBackwardArgs& a, const int64_t* count, const float* sum_dy,
                     const float* sum_dy_xhat, const Launch& l) {
  const ChannelShape& s = a.shape;
  auto* coefs = static_cast<float4*>(l.workspace);
  global_coefficients<<<static_cast<unsigned>((s.c + 255) / 256), 256, 0,
                        static_cast<cudaStream_t>(l.stream)>>>(
      s.c, count, sum_dy, sum_dy_xhat, a.weight, a.save_mean, a.save_invstd, coefs);
  dev::check_cuda(cudaGetLastError(), "synchronized batch norm coefficients launch");
  if (s.numel() == 0) return;
  const bool vector_access = dev::aligned16(a.x) && dev::aligned16(a.dy) && dev::aligned16(a.dx);
  launch_dx<T>(a, plan_channel_norm(s, sizeof(T), vector_access), true, coefs, l);
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
  const Layout lay = layout_of(plan, coef_units(s));
  auto* base = static_cast<unsigned char*>(l.workspace);
  const bool want_params = a.dweight != nullptr || a.dbias != nullptr;
  const bool want_coefficients = training && a.dx != nullptr;
  float4* coefs = want_coefficients ? reinterpret_cast<float4*>(base + lay.partials) : nullptr;
  if (want_params || want_coefficients) {
    auto* partials = reinterpret_cast<float2*>(base);
    launch_partials(GradOp{stats}, static_cast<const T*>(a.x), static_cast<const T*>(a.dy), plan,
                    l.sm_count, partials, stream);
    dev::check_cuda(cudaGetLastError(), "channel norm gradient sums launch");
    const int64_t units = (want_params ? s.c : 0) + (want_coefficients ? s.num_stats() : 0);
    constexpr int kWarps = kFinalizeBlock / 32;
    finalize_backward<<<static_cast<unsigned>((units + kWarps - 1) / kWarps), kFinalizeBlock, 0,
                        stream>>>(
        FinalizeParams{partials, plan, stats, a.weight, a.dweight, a.dbias, coefs});
    dev::check_cuda(cudaGetLastError(), "channel norm gradient finalize launch");
  }
  if (a.dx != nullptr) launch_dx<T>(a, plan, training, coefs, l);
}

}  // namespace

size_t channel_norm_backward_workspace_size(const ChannelBackwardArgs& a) {
  size_t bytes = 0;
  const int elem = static_cast<int>(dtype_size(a.shape.dtype));
  for (bool vector_access : {true, false}) {
    const size_t need =
        layout_of(plan_channel_norm(a.shape, elem, vector_access), coef_units(a.shape)).total;
    if (need > bytes) bytes = need;
  }
  return bytes;
}

size_t channel_norm_backward_scratch_size(const ChannelBackwardArgs& a) {
  const bool want_params = a.dweight != nullptr || a.dbias != nullptr;
  const bool want_coefficients = a.phase == NK_TRAINING && a.dx != nullptr;
  if (!want_params && !want_coefficients) return 0;  // inference dx alone: elementwise only
  const Layout lay = layout_of(
      plan_channel_norm(a.shape, static_cast<int>(dtype_size(a.shape.dtype)),
                        dev::aligned16(a.x) && dev::aligned16(a.dy) && dev::aligned16(a.dx)),
      coef_units(a.shape));
  return want_coefficients ? lay.total : lay.partials;
}

void channel_norm_backward(const ChannelBackwardArgs& a, const Launch& l) {
  dispatch_dtype(a.shape.dtype, [&](auto t) { backward<dev::device_t<decltype(t)>>(a, l); });
}

size_t batch_norm_backward_global_workspace_size(const ChannelShape& s) {
  return align256(static_cast<size_t>(s.c) * sizeof(float4));
}

void batch_norm_backward_global(const ChannelBackwardArgs& a, const int64_t* count,
                                const float* sum_dy, const float* sum_dy_xhat, const Launch& l) {
  dispatch_dtype(a.shape.dtype, [&](auto t) {
    backward_global<dev::device_t<decltype(t)>>(a, count, sum_dy, sum_dy_xhat, l);
  });
}

}  // namespace nk::cuda
