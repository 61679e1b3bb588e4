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
// spans every n, so its workspace grows with C only), (2) 32 to 256 threads per channel or
// statistic (as many as load 8 partials each; two per block at 32, so small C spreads over many
// SMs) that add them in a fixed order into dweight, dbias and the dx coefficients per unit - c
// for batch norm, (n, c) for instance and group norm -
//   dx = a * dy + (x - mean_k) * b + c,  a = weight_c * invstd_k,  b = -c2_k,  c = -c1_k
// (one float4 per unit; x - mean is kept as a difference, as the forward keeps x - shift, for
// large offsets), (3) dx elementwise (channel_norm_apply.cuh). Inference without dweight/dbias is
// the elementwise launch alone, with a = weight_c / sqrt(running_var_c + eps) folded in registers
// and dy the only input. No atomics: results repeat bit for bit.
// Instance and group norm training (with dx, or with dweight or dbias alone, so that their bits
// never depend on which outputs are asked for), where a statistic's row of x and of dy fits a block
// (plan_resident_rows with both staged; rows above 48 KiB stage their first 48 KiB of each and
// reread the rest; longer rows in parts, a block each, one cluster a row on sm_90, else two
// launches through the workspace), take one kernel instead of (1) and (3), which reads each once
// (channel_norm_resident_backward.cuh); (2) then only adds its per-(n, c) sums over n. Group
// norm in NHWC does the same where a tile of whole groups of one sample fits a block
// (plan_group_tiles with both staged, channel_norm_group_tile_backward.cuh), and rows of at most
// a 16-byte pack where a thread holds whole rows of x and dy in registers (plan_short_rows,
// channel_norm_short_rows_backward.cuh), and rows above a pack up to 4 KiB where a block stages
// a run of whole rows and a group of lanes takes each (plan_row_groups,
// channel_norm_row_groups_backward.cuh). Instance norm in NHWC, and batch norm in NHWC (or with
// S = 1) as one sample of N * S positions (instance_tile_shape), likewise where a tile of a pack
// of channels of x and of dy fits a block (plan_instance_tiles with both staged,
// channel_norm_instance_tile_backward.cuh), and in parts, a block each, where it exceeds a block
// (channel_norm_split_tile_backward.cuh: one cluster a tile on sm_90, else two launches through
// the workspace, with the same bits). Batch norm in NCHW with S > 1 likewise where a
// channel's runs of x and of dy fit a block (plan_batch_tiles with both staged,
// channel_norm_batch_tile_backward.cuh), which writes dweight and dbias itself: one launch.
// Fused forms (y = act(norm(x) + z)): dy is replaced by du = dy * act'(u) wherever it is read,
// value by value in registers, so the passes and the workspace stay the plain ones. act' comes
// from the ReLU mask's bits, from y > 0, or from SiLU's u recomputed with the same statistics
// (plus the bias and z); the partials kernels fold it into each tile (GradOp::Local::fold) and the
// dx pass applies it before its formula, writing du to dz as its second output. Every variant is
// a template instance (ActSource x residual), so the plain path's code is unchanged.
#include <cstdint>
#include <type_traits>

#include "channel_norm.hpp"
#include "channel_norm_act_grad.cuh"
#include "channel_norm_apply.cuh"
#include "channel_norm_batch_tile_backward.cuh"
#include "channel_norm_group_tile_backward.cuh"
#include "channel_norm_instance_tile.cuh"
#include "channel_norm_instance_tile_backward.cuh"
#include "channel_norm_partials.cuh"
#include "channel_norm_resident_backward.cuh"
#include "channel_norm_row_groups_backward.cuh"
#include "channel_norm_short_rows_backward.cuh"
#include "channel_norm_split_tile_backward.cuh"
#include "common/activation.cuh"
#include "common/check.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"
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

// The gradient sums (dy: du in the fused forms). kSource != kNoAct: the partials kernels hand
// each tile to Local::fold before push, with the tensor or mask bits that act' needs (aux) loaded
// at the same element indices.
template <class T, int kSource, bool kZ>
struct GradOp {
  using State = float2;  // (sum dy, sum dy * x-hat)
  static constexpr bool kReadsDy = true;
  static constexpr bool kFold = kSource != kNoAct;
  static constexpr bool kWelfordLanes = false;
  static constexpr bool kAux = kSource == kFromMask || kSource == kFromY || (kSource == kSiluOfU && kZ);
  XhatStats stats;
  const T* aux;             // y (kFromY) or z (kSiluOfU with a residual)
  const uint32_t* mask;     // kFromMask
  const float* weight;      // kSiluOfU: u needs the affine
  const float* bias;

  struct Local {
    float mean, invstd, scale, bias;  // scale and bias: SiLU's u
    template <int K>
    __device__ __forceinline__ void fold(const float (&x)[K], float (&dy)[K],
                                         const float (&aux)[K]) const {
#pragma unroll
      for (int i = 0; i < K; ++i) dy[i] = du_of<kSource, kZ>(dy[i], x[i], aux[i], mean, scale, bias);
    }
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
    Local l{m.x, m.y, 0.0f, 0.0f};
    if constexpr (kSource == kSiluOfU) {
      l.scale = m.y * (weight ? weight[c] : 1.0f);
      l.bias = bias ? bias[c] : 0.0f;
    }
    return l;
  }
  // The aux values of elements i .. i + E - 1 (aligned like x's pack at i).
  template <int E>
  __device__ void load_aux(int64_t i, float (&out)[E]) const {
    if constexpr (kSource == kFromMask) {
      const uint32_t bits = dev::load_mask<E>(mask, i);
#pragma unroll
      for (int e = 0; e < E; ++e) out[e] = static_cast<float>((bits >> e) & 1u);
    } else if constexpr (kAux) {
      dev::load_elements<T, E>(aux + i, out);
    }
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

// Partials a finalize lane loads before adding them (dev::fold_ahead): 32 adds a lane wait on
// memory 4 times, not 32.
constexpr int kSumAhead = 8;

// The finalize's threads a unit: finalize_channel_lanes of the most members a unit adds (a
// channel's slots * chunks partials, a statistic's C/G * chunks), so that a unit's lanes wait on
// memory once where the block allows (batch norm N256 C64 56x56 NHWC: 1024 partials a channel,
// 32 a lane of a warp, four waits). Shape-only, so the tree and every bit are too.
int backward_finalize_lanes(const ChannelPlan& plan, bool want_params, bool want_coefficients,
                            int64_t per_group) {
  const int64_t params = want_params ? plan.slots : 1, coefs = want_coefficients ? per_group : 1;
  const int64_t members = plan.chunks * (params > coefs ? params : coefs);
  return finalize_channel_lanes(members, kSumAhead);
}

// `lanes` threads a unit (backward_finalize_lanes), blockDim.x / lanes units a block (one; two of
// a warp each): the first C units (when dweight or dbias is wanted) sum a channel's partials over
// n and chunks; the next ones (when dx is wanted in training) sum a statistic's members into c1
// and c2 and write the dx coefficients of its units. Lanes take members in lane-strided order and
// a fixed tree joins them (a butterfly, then the warps in order): every lane ends with the same
// bits. The statistic's mean and invstd load before the sums, so that they wait on memory with
// the partials, not after them.
__global__ void __launch_bounds__(kBatchFinalizeBlock)
    finalize_backward(FinalizeParams p, int lanes) {
  dev::enter_chain();
  __shared__ float scratch[2 * 32];
  const ChannelPlan& plan = p.plan;
  const int g = threadIdx.x % lanes;
  const int64_t unit = int64_t{blockIdx.x} * (blockDim.x / lanes) + threadIdx.x / lanes;
  const int64_t channel_units = (p.dweight || p.dbias) ? plan.c : 0;
  const ChannelNorm kind = p.stats.kind;
  const int64_t groups = p.stats.groups, per_group = plan.c / groups;
  const int64_t stats = p.coefs == nullptr              ? 0
                        : kind == ChannelNorm::kBatch    ? plan.c
                        : kind == ChannelNorm::kInstance ? plan.n * plan.c
                                                         : plan.n * groups;
  const bool is_channel = unit < channel_units;
  const int64_t k = unit - channel_units;
  const bool is_stat = !is_channel && k < stats;
  // The members of statistic k: one slot's channels c0 .. c0 + c_count - 1, each with its chunks
  // (batch norm's one slot holds every sample).
  int64_t slot = 0, c0 = 0, c_count = 0;
  float mean = 0.0f, invstd = 0.0f;
  if (is_stat) {
    if (kind == ChannelNorm::kBatch) {
      slot = 0, c0 = k, c_count = 1;
    } else if (kind == ChannelNorm::kInstance) {
      slot = k / plan.c, c0 = k % plan.c, c_count = 1;
    } else {
      slot = k / groups, c0 = k % groups * per_group, c_count = per_group;
    }
    invstd = p.stats.scale[k], mean = p.stats.mean[k];
  }
  dev::Floats<2> t{};
  if (is_channel) {
    // Members j = g, g + lanes, ... of (slot j / chunks, chunk j % chunks).
    auto load = [&](int64_t s, int64_t chunk) {
      return p.partials[plan.partial_index(s, unit, chunk)];
    };
    auto add = [](dev::Floats<2> a, float2 v) {
      a.v[0] += v.x;
      a.v[1] += v.y;
      return a;
    };
    t = fold_members<kSumAhead>(t, g, plan.slots * plan.chunks, plan.chunks, lanes, load, add);
  } else if (is_stat) {
    // Members j = g, g + lanes, ... of (channel c0 + j / chunks, chunk j % chunks), each weighed
    // by its channel's weight: sum_g, sum_gx.
    auto load = [&](int64_t m, int64_t chunk) {
      const int64_t c = c0 + m;
      const float w = p.weight ? p.weight[c] : 1.0f;
      const float2 v = p.partials[plan.partial_index(slot, c, chunk)];
      return make_float3(w, v.x, v.y);
    };
    auto add_weighed = [](dev::Floats<2> a, float3 wv) {
      a.v[0] += wv.x * wv.y;
      a.v[1] += wv.x * wv.z;
      return a;
    };
    t = fold_members<kSumAhead>(t, g, c_count * plan.chunks, plan.chunks, lanes, load,
                                add_weighed);
  }
  // Every thread of the warp (lanes <= 32), or of the block (lanes > 32: one unit), joins.
  t = lanes > 32 ? dev::block_sum<2>(t, scratch) : dev::group_sum<2>(t, lanes);
  if (is_channel) {
    if (g == 0) {
      if (p.dbias) p.dbias[unit] = t.v[0];
      if (p.dweight) p.dweight[unit] = t.v[1];
    }
    return;
  }
  if (!is_stat) return;
  const float count = static_cast<float>(c_count * plan.span());
  const float c1 = invstd * t.v[0] / count, c2 = invstd * invstd * t.v[1] / count;
  // Units of statistic k: channel c (batch norm) or (slot, c) for its c_count channels.
  const int64_t unit0 = kind == ChannelNorm::kBatch ? c0 : slot * plan.c + c0;
  for (int64_t j = g; j < c_count; j += lanes) {
    const float w = p.weight ? p.weight[c0 + j] : 1.0f;
    p.coefs[unit0 + j] = make_float4(mean, w * invstd, -c2, -c1);
  }
}

// The finalize over `units` (channels first) on `stream`.
void launch_backward_finalize(const FinalizeParams& f, int64_t units, int lanes,
                              cudaStream_t stream) {
  const int threads = lanes > 64 ? lanes : 64;  // two units a block where a warp takes each
  const int64_t per_block = threads / lanes;
  dev::launch_dependent(finalize_backward,
                        static_cast<unsigned>((units + per_block - 1) / per_block), threads, 0,
                        stream, f, lanes);
}

// The backward's apply op (channel_norm_apply.cuh), with du = dy * act'(u) (du = dy unfused).
// Training: dx = a*du + (x - mean)*b + c with the finalize's (mean, a, b, c) per unit; inference:
// dx = a*du, a folded per channel from the weight and the running variance in registers, and x
// read only when SiLU recomputes u. With a residual, dz = du is the second output.
template <class T, bool kTraining, int kSource, bool kResidual>
struct DxApply {
  using Elem = T;
  struct Coef {
    float mean, a, b, c, bias;
  };
  static constexpr bool kReadsX = kTraining || kSource == kSiluOfU;
  static constexpr bool kReadsAux = kSource == kFromY || (kSource == kSiluOfU && kResidual);
  static constexpr int kInputs = 1 + (kReadsX ? 1 : 0) + (kReadsAux ? 1 : 0);
  static constexpr bool kBits = kSource == kFromMask;
  static constexpr int kOutputs = kResidual ? 2 : 1;
  const T* in[kInputs];  // dy, then x (training or SiLU), then y (kFromY) or z (SiLU)
  T* out;                // dx, nullable when dz is wanted
  T* dz;                 // nullable; kResidual only
  const uint32_t* mask;  // kFromMask
  const float4* coefs;   // training
  const float* weight;
  const float* bias;     // SiLU
  const float* running_mean;
  const float* running_var;
  float eps;
  int64_t channels;  // SiLU in training: the bias of unit u is bias[u % C] when per sample
  bool per_sample;

  __device__ void once() const {}
  __device__ Coef coef(int64_t u) const {
    Coef k{};
    if constexpr (kTraining) {
      const float4 f = coefs[u];
      k = Coef{f.x, f.y, f.z, f.w, 0.0f};
      if constexpr (kSource == kSiluOfU) {
        if (bias != nullptr) k.bias = bias[per_sample ? u % channels : u];
      }
    } else {
      k.a = (weight ? weight[u] : 1.0f) * rsqrtf(running_var[u] + eps);
      if constexpr (kSource == kSiluOfU) {
        k.mean = running_mean[u];
        k.bias = bias ? bias[u] : 0.0f;
      }
    }
    return k;
  }
  __device__ void apply(const Coef& k, const float (&v)[kInputs + (kBits ? 1 : 0)],
                        float (&r)[kOutputs]) const {
    // v: dy, then x (kReadsX), then y or z (kReadsAux), then the mask bit (kBits).
    float x = 0.0f, aux = 0.0f;
    if constexpr (kReadsX) x = v[1];
    if constexpr (kBits || kReadsAux) aux = v[kInputs + (kBits ? 1 : 0) - 1];
    const float du = du_of<kSource, kResidual>(v[0], x, aux, k.mean, k.a, k.bias);
    if constexpr (kTraining) {
      r[0] = fmaf(k.a, du, fmaf(x - k.mean, k.b, k.c));
    } else {
      r[0] = k.a * du;
    }
    if constexpr (kResidual) r[1] = du;
  }
  template <int E>
  __device__ void store(int64_t i, const float (&r)[kOutputs][E]) const {
    // dx is always given unless dz is (the pass runs for one of them).
    if (!kResidual || out != nullptr) dev::store_floats<T, E>(out + i, r[0]);
    if constexpr (kResidual) {
      if (dz != nullptr) dev::store_floats<T, E>(dz + i, r[1]);
    }
  }
  template <int E>
  __device__ void store_some(int64_t i, const float (&r)[kOutputs][E], int count) const {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (e >= count) continue;
      if (!kResidual || out != nullptr) out[i + e] = dev::from_float<T>(r[0][e]);
      if constexpr (kResidual) {
        if (dz != nullptr) dz[i + e] = dev::from_float<T>(r[1][e]);
      }
    }
  }
  template <int E>
  __device__ uint32_t bits(int64_t i) const {
    if constexpr (kBits) {
      return dev::load_mask<E>(mask, i);
    } else {
      return 0;
    }
  }
};

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Whether every tensor of the call allows 16-byte packs (the mask is read bit by bit).
bool vector_access(const ChannelBackwardArgs& a) {
  return dev::aligned16(a.x) && dev::aligned16(a.dy) && dev::aligned16(a.dx) &&
         dev::aligned16(a.y) && dev::aligned16(a.z) && dev::aligned16(a.dz);
}

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

// The act' source of a call.
int act_source(const ChannelBackwardArgs& a) {
  switch (a.fusion.activation) {
    case NK_ACTIVATION_RELU:
      return a.relu_mask != nullptr ? kFromMask : kFromY;
    case NK_ACTIVATION_SILU:
      return kSiluOfU;
    default:
      return kNoAct;
  }
}

// Calls f(integral_constant source, bool_constant residual) for the call's fusion.
template <class F>
void with_fusion(const ChannelBackwardArgs& a, F&& f) {
  auto go = [&](auto source) {
    if (a.fusion.residual) {
      f(source, std::true_type{});
    } else {
      f(source, std::false_type{});
    }
  };
  switch (act_source(a)) {
    case kFromMask:
      go(std::integral_constant<int, kFromMask>{});
      break;
    case kFromY:
      go(std::integral_constant<int, kFromY>{});
      break;
    case kSiluOfU:
      go(std::integral_constant<int, kSiluOfU>{});
      break;
    default:
      go(std::integral_constant<int, kNoAct>{});
  }
}

// dx (and dz) elementwise: with the finalize's coefficients (training) or the running variance.
template <class T, bool kTraining, int kSource, bool kResidual>
void launch_dx_op(const ChannelBackwardArgs& a, const ChannelPlan& plan, const float4* coefs,
                  const Launch& l) {
  using Op = DxApply<T, kTraining, kSource, kResidual>;
  Op op{};
  int i = 0;
  op.in[i++] = static_cast<const T*>(a.dy);
  if constexpr (Op::kReadsX) op.in[i++] = static_cast<const T*>(a.x);
  if constexpr (Op::kReadsAux) {
    op.in[i++] = static_cast<const T*>(kSource == kFromY ? a.y : a.z);
  }
  op.out = static_cast<T*>(a.dx);
  op.dz = static_cast<T*>(a.dz);
  op.mask = a.relu_mask;
  op.coefs = coefs;
  op.weight = a.weight;
  op.bias = a.bias;
  op.running_mean = a.running_mean;
  op.running_var = a.running_var;
  op.eps = static_cast<float>(a.eps);
  op.channels = a.shape.c;
  op.per_sample = a.shape.kind != ChannelNorm::kBatch;
  auto stream = static_cast<cudaStream_t>(l.stream);
  // Coefficients per (n, c) in training for instance and group norm; per channel otherwise.
  if constexpr (kTraining) {
    if (a.shape.kind != ChannelNorm::kBatch) {
      launch_elementwise<Op, true>(op, plan, l.sm_count, stream);
      return;
    }
  }
  launch_elementwise<Op, false>(op, plan, l.sm_count, stream);
}

template <class T>
void launch_dx(const ChannelBackwardArgs& a, const ChannelPlan& plan, bool training,
               const float4* coefs, const Launch& l) {
  with_fusion(a, [&](auto source, auto residual) {
    constexpr int kSource = decltype(source)::value;
    constexpr bool kResidual = decltype(residual)::value;
    if (training) {
      launch_dx_op<T, true, kSource, kResidual>(a, plan, coefs, l);
    } else {
      launch_dx_op<T, false, kSource, kResidual>(a, plan, coefs, l);
    }
  });
  dev::check_cuda(cudaGetLastError(), "channel norm dx launch");
}

// The gradient sums with the call's act' source.
template <class T>
void launch_gradient_sums(const ChannelBackwardArgs& a, const ChannelPlan& plan,
                          const XhatStats& stats, float2* partials, const Launch& l) {
  with_fusion(a, [&](auto source, auto residual) {
    constexpr int kSource = decltype(source)::value;
    // z enters act' only through SiLU's u; every other source ignores the residual here.
    constexpr bool kZ = kSource == kSiluOfU && decltype(residual)::value;
    const GradOp<T, kSource, kZ> op{stats,
                                    static_cast<const T*>(kSource == kFromY ? a.y : a.z),
                                    a.relu_mask, a.weight, a.bias};
    launch_partials(op, static_cast<const T*>(a.x), static_cast<const T*>(a.dy), plan,
                    l.sm_count, partials, static_cast<cudaStream_t>(l.stream));
  });
  dev::check_cuda(cudaGetLastError(), "channel norm gradient sums launch");
}

// Synchronized batch norm: the dx coefficients per channel from the sums over every rank and the
// global count in device memory (a count below 1 means no rank had samples: c1 = c2 = 0), a
// thread per channel.
__global__ void __launch_bounds__(256)
    global_coefficients(int64_t channels, const int64_t* count, const float* sum_dy,
                        const float* sum_dy_xhat, const float* weight, const float* save_mean,
                        const float* save_invstd, float4* coefs) {
  dev::enter_chain();
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
  dev::launch_dependent(global_coefficients, static_cast<unsigned>((s.c + 255) / 256), 256, 0,
                        static_cast<cudaStream_t>(l.stream), s.c, count, sum_dy, sum_dy_xhat,
                        a.weight, a.save_mean, a.save_invstd, coefs);
  dev::check_cuda(cudaGetLastError(), "synchronized batch norm coefficients launch");
  if (s.numel() == 0) return;
  launch_dx<T>(a, plan_channel_norm(s, sizeof(T), vector_access(a)), true, coefs, l);
}

// dweight and dbias from the per-(n, c) sums (sum du, sum du * x-hat) that a one-read kernel left
// in `sums`, added over n in index order by the finalize's channel warps.
void finalize_channel_sums(const ChannelBackwardArgs& a, const XhatStats& stats,
                           const float2* sums, cudaStream_t stream) {
  const ChannelShape& s = a.shape;
  // The sums as partials of one chunk per (n, c), in the rows layout's index order.
  ChannelPlan plan{};
  plan.rows_layout = true;
  plan.n = s.n;
  plan.c = s.c;
  plan.s = s.s;
  plan.slots = s.n;
  plan.seg_count = 1;
  plan.columns = 1;
  plan.chunks = 1;
  plan.chunk_len = s.s;
  launch_backward_finalize(
      FinalizeParams{sums, plan, stats, a.weight, a.dweight, a.dbias, nullptr}, s.c,
      backward_finalize_lanes(plan, true, false, 1), stream);
  dev::check_cuda(cudaGetLastError(), "channel norm one-read gradient finalize launch");
}

// The tensors of a backward that reads x and dy once (ResidentBackwardParams,
// GroupTileBackwardParams); channel_sums in the workspace when dweight or dbias is wanted.
template <class Params>
void set_backward_io(Params& p, const ChannelBackwardArgs& a, const Launch& l) {
  const int source = act_source(a);
  p.x = a.x;
  p.dy = a.dy;
  p.aux = source == kFromY ? a.y : (source == kSiluOfU && a.fusion.residual ? a.z : nullptr);
  p.mask = a.relu_mask;
  p.dx = a.dx;
  p.dz = a.fusion.residual ? a.dz : nullptr;
  p.weight = a.weight;
  p.bias = a.bias;
  p.save_mean = a.save_mean;
  p.save_invstd = a.save_invstd;
  const bool want_params = a.dweight != nullptr || a.dbias != nullptr;
  p.channel_sums = want_params ? static_cast<float2*>(l.workspace) : nullptr;
}

// Calls f(kernel) with the one-read backward kernel K<T, access, source, z> of the call's fusion
// and pointers (a class template with a `kernel` member, so both kernels share the dispatch).
template <class T, template <class, int, int, bool> class K, class F>
void with_backward_kernel(const ChannelBackwardArgs& a, F&& f) {
  constexpr int E = 16 / sizeof(T);
  const bool vector = vector_access(a);
  with_fusion(a, [&](auto src, auto residual) {
    constexpr int kSource = decltype(src)::value;
    constexpr bool kZ = kSource == kSiluOfU && decltype(residual)::value;
    if (vector) {
      f(K<T, E, kSource, kZ>::kernel);
    } else {
      f(K<T, 1, kSource, kZ>::kernel);
    }
  });
}

template <class T, int kAccess, int kSource, bool kZ>
struct ResidentBackwardKernel {
  static constexpr auto kernel = backward_resident<T, kAccess, kSource, kZ>;
};
template <class T, int kAccess, int kSource, bool kZ>
struct GroupTileBackwardKernel {
  static constexpr auto kernel = backward_group_tile<T, kAccess, kSource, kZ>;
};
template <class T, int kAccess, int kSource, bool kZ>
struct InstanceTileBackwardKernel {
  static constexpr auto kernel = backward_instance_tile<T, kAccess, kSource, kZ>;
};

// Enqueues a training backward's split tiles (group, instance or batch norm; `p`'s head, parts
// and workspace set by the caller) for the call's fusion and pointers, `bytes` of dynamic shared
// memory a block: kernel(access, source, z, step) names each step's instance, each argument a
// std::integral_constant; one launch of clusters where the device can hold one, else kParts then
// kApply. The caller checks cudaGetLastError.
template <class T, class Params, class Kernel>
void launch_backward_split(const ChannelBackwardArgs& a, const Params& p, const SplitLaunch& l,
                           size_t bytes, cudaStream_t stream, Kernel&& kernel) {
  constexpr int E = 16 / sizeof(T);
  const bool vector = vector_access(a);
  with_fusion(a, [&](auto src, auto residual) {
    constexpr bool kZ = decltype(src)::value == kSiluOfU && decltype(residual)::value;
    using Z = std::bool_constant<kZ>;
    auto with_access = [&](auto access) {
      auto step = [&](auto s) { return kernel(access, src, Z{}, s); };
      launch_split_steps(step(std::integral_constant<SplitStep, SplitStep::kCluster>{}),
                         step(std::integral_constant<SplitStep, SplitStep::kParts>{}),
                         step(std::integral_constant<SplitStep, SplitStep::kApply>{}), l.blocks,
                         l.threads, bytes, l.scratch_bytes, l.parts, stream, p);
    };
    if (vector) {
      with_access(std::integral_constant<int, E>{});
    } else {
      with_access(std::integral_constant<int, 1>{});
    }
  });
}

// The split rows' [N, C] channel sums (sum du, sum du * x-hat), first in their workspace.
size_t resident_sums_bytes(const ChannelShape& s) {
  return align256(static_cast<size_t>(s.n * s.c) * sizeof(float2));
}

// The split rows' workspace in the training backward: the channels' sums for dweight and dbias
// ([N, C]), then every part's two row sums for the two-launch form, reserved whether or not the
// device takes clusters (the size depends on the shape only). 0 where a row is not split: the
// sums then take the walk's layout, which is larger.
size_t resident_split_backward_workspace(const ChannelShape& s, const ResidentPlan& r) {
  if (r.parts == 1) return 0;
  return resident_sums_bytes(s) +
         align256(static_cast<size_t>(r.rows * r.parts * 2) * sizeof(float));
}

// Instance and group norm training with dx (or dz) where a row of x and of dy fits a block: one
// read of both (channel_norm_resident_backward.cuh), then dweight and dbias from its per-(n, c)
// sums. Larger rows in parts: one cluster a row where the device has them, else two launches
// through the workspace.
template <class T>
void backward_resident_rows(const ChannelBackwardArgs& a, const ResidentPlan& r,
                            const XhatStats& stats, const Launch& l) {
  auto stream = static_cast<cudaStream_t>(l.stream);
  ResidentBackwardParams p{};
  set_backward_io(p, a, l);
  set_row_geometry(p, a.shape, r);
  p.head_packs = resident_head_packs(r, static_cast<int>(sizeof(T)));
  if (r.parts == 1) {
    const size_t bytes = kResidentBackwardScratchBytes + size_t{32} * p.head_packs;
    with_backward_kernel<T, ResidentBackwardKernel>(
        a, [&](auto kernel) { launch_rows(kernel, r, bytes, stream, p); });
  } else {
    constexpr size_t kScratch = sizeof(SplitSumsScratch);
    p.head_packs = resident_split_head_packs(r, static_cast<int>(sizeof(T)), kScratch, 2);
    p.part_sums = reinterpret_cast<float*>(static_cast<unsigned char*>(l.workspace) +
                                           resident_sums_bytes(a.shape));
    launch_backward_split<T>(
        a, p, SplitLaunch{r.rows * r.parts, r.threads, r.parts, kScratch},
        kScratch + size_t{32} * p.head_packs, stream, [](auto access, auto src, auto z, auto step) {
          return backward_resident<T, decltype(access)::value, decltype(src)::value,
                                   decltype(z)::value, decltype(step)::value>;
        });
  }
  dev::check_cuda(cudaGetLastError(), "channel norm resident rows backward launch");
  if (p.channel_sums) finalize_channel_sums(a, stats, p.channel_sums, stream);
}

// Instance and group norm training with dx (or dz) where a row is at most a pack: rows held in
// registers (channel_norm_short_rows_backward.cuh), one read of x and dy, then dweight and dbias
// from the per-(n, c) sums.
template <class T, int L = 2>
void launch_short_rows_backward(const ChannelBackwardArgs& a, const ShortRowsPlan& r,
                                const ShortRowsBackwardParams& p, cudaStream_t stream) {
  if constexpr (L <= 16 / static_cast<int>(sizeof(T))) {
    if (r.len != L) return launch_short_rows_backward<T, L + 1>(a, r, p, stream);
    with_fusion(a, [&](auto src, auto residual) {
      constexpr int kSource = decltype(src)::value;
      constexpr bool kZ = kSource == kSiluOfU && decltype(residual)::value;
      dev::launch_dependent(backward_short_rows<T, L, kSource, kZ>, static_cast<unsigned>(r.blocks),
                            kShortRowsBlock, 0, stream, p);
    });
  }
}

template <class T>
void backward_in_registers(const ChannelBackwardArgs& a, const ShortRowsPlan& r,
                           const XhatStats& stats, const Launch& l) {
  auto stream = static_cast<cudaStream_t>(l.stream);
  ShortRowsBackwardParams p{};
  set_backward_io(p, a, l);
  set_short_row_geometry(p, a.shape, r);
  p.vector_access = vector_access(a);
  launch_short_rows_backward<T>(a, r, p, stream);
  dev::check_cuda(cudaGetLastError(), "channel norm short rows backward launch");
  if (p.channel_sums) finalize_channel_sums(a, stats, p.channel_sums, stream);
}

// Instance and group norm training with dx (or dz) where a row is above a pack up to 4 KiB: a group
// of lanes a row, the block's rows of x and dy staged (channel_norm_row_groups_backward.cuh), one
// read of both, then dweight and dbias from the per-(n, c) sums.
template <class T>
void backward_in_row_groups(const ChannelBackwardArgs& a, const RowGroupsPlan& r,
                            const XhatStats& stats, const Launch& l) {
  auto stream = static_cast<cudaStream_t>(l.stream);
  RowGroupsBackwardParams p{};
  set_backward_io(p, a, l);
  p.g = row_groups_geometry(a.shape, r);
  p.inv_len = 1.0f / static_cast<float>(r.len);
  p.vector_access = vector_access(a);
  // x's and dy's rows, then the coefficient pairs.
  const size_t bytes =
      size_t{2} * p.g.chunk * sizeof(T) + static_cast<size_t>(r.coefs) * sizeof(float2);
  with_fusion(a, [&](auto src, auto residual) {
    constexpr int kSource = decltype(src)::value;
    constexpr bool kZ = kSource == kSiluOfU && decltype(residual)::value;
    launch_blocks(backward_row_groups<T, kSource, kZ>, r.blocks, kRowGroupsBlock, bytes, stream,
                  p);
  });
  dev::check_cuda(cudaGetLastError(), "channel norm row groups backward launch");
  if (p.channel_sums) finalize_channel_sums(a, stats, p.channel_sums, stream);
}

// The group tiles' workspace in the training backward: the channels' sums for dweight and dbias, a
// row a part of a sample ([N * K, C]), then for split tiles every part's group sums for the
// two-launch form, reserved whether or not the device takes clusters (the size depends on the
// shape only).
size_t group_channel_sums_bytes(const ChannelShape& s, const GroupTilePlan& g) {
  return align256(static_cast<size_t>(s.n * g.parts * s.c) * sizeof(float2));
}
size_t group_tiles_backward_workspace(const ChannelShape& s, const GroupTilePlan& g) {
  return group_channel_sums_bytes(s, g) +
         (g.parts == 1 ? 0
                       : align256(static_cast<size_t>(g.tiles * g.parts * g.groups_per_tile) *
                                  sizeof(float2)));
}

// Group norm training with dx (or dz) in NHWC where a tile of groups of x and of dy fits a block:
// one read of both (channel_norm_group_tile_backward.cuh), then dweight and dbias from its
// per-(n, c) sums. Larger tiles in parts: one cluster a tile where the device has them, else two
// launches through the workspace; dweight and dbias from the per-(n, part, c) sums.
template <class T>
void backward_group_tiles(const ChannelBackwardArgs& a, const GroupTilePlan& g,
                          const XhatStats& stats, const Launch& l) {
  auto stream = static_cast<cudaStream_t>(l.stream);
  GroupTileBackwardParams p{};
  set_backward_io(p, a, l);
  set_tile_geometry(p, a.shape, g, static_cast<int>(sizeof(T)));
  p.parts = g.parts;
  p.part_positions = static_cast<int>(g.part_positions);
  if (g.parts == 1) {
    const size_t bytes = group_tile_backward_smem(p.head_packs);
    with_backward_kernel<T, GroupTileBackwardKernel>(
        a, [&](auto kernel) { launch_blocks(kernel, g.tiles, g.threads, bytes, stream, p); });
    dev::check_cuda(cudaGetLastError(), "group norm tiles backward launch");
    if (p.channel_sums) finalize_channel_sums(a, stats, p.channel_sums, stream);
    return;
  }
  p.head_packs = split_head_packs(g, static_cast<int>(sizeof(T)), 2);
  p.part_sums = reinterpret_cast<float2*>(static_cast<unsigned char*>(l.workspace) +
                                          group_channel_sums_bytes(a.shape, g));
  launch_backward_split<T>(
      a, p, SplitLaunch{g.tiles * g.parts, g.threads, g.parts, kGroupTileScratchBytes},
      group_tile_backward_smem(p.head_packs), stream, [](auto access, auto src, auto z, auto step) {
        return backward_group_tile<T, decltype(access)::value, decltype(src)::value,
                                   decltype(z)::value, decltype(step)::value>;
      });
  dev::check_cuda(cudaGetLastError(), "group norm split tiles backward launch");
  if (p.channel_sums) {  // the parts' rows as samples: N * K of them, added in that order
    ChannelBackwardArgs rows = a;
    rows.shape.n = a.shape.n * g.parts;
    finalize_channel_sums(rows, stats, p.channel_sums, stream);
  }
}

// Instance norm training with dx (or dz) in NHWC where a tile of a pack of channels of x and of dy
// fits a block, and batch norm as the instance norm of one sample (`as_instance`:
// instance_tile_shape's view of a's shape): one read of both
// (channel_norm_instance_tile_backward.cuh), then dweight and dbias from its per-(n, c) sums, or
// with one sample from the kernel itself.
template <class T>
void backward_instance_tiles(const ChannelBackwardArgs& a, const ChannelShape& as_instance,
                             const GroupTilePlan& g, const Launch& l) {
  auto stream = static_cast<cudaStream_t>(l.stream);
  ChannelBackwardArgs view = a;
  view.shape = as_instance;
  const XhatStats stats{true,
                        a.save_mean,
                        a.save_invstd,
                        static_cast<float>(a.eps),
                        ChannelNorm::kInstance,
                        as_instance.c,
                        1};
  InstanceTileBackwardParams p{};
  set_backward_io(p, view, l);
  set_instance_tile_geometry(p, as_instance, g, static_cast<int>(sizeof(T)));
  if (as_instance.n == 1) {  // the blocks hold whole channels: no sums to add over n
    p.channel_sums = nullptr;
    p.dweight = a.dweight;
    p.dbias = a.dbias;
  }
  const size_t bytes = group_tile_backward_smem(p.head_packs);
  with_backward_kernel<T, InstanceTileBackwardKernel>(
      view, [&](auto kernel) { launch_blocks(kernel, g.tiles, g.threads, bytes, stream, p); });
  dev::check_cuda(cudaGetLastError(), "instance norm tiles backward launch");
  if (p.channel_sums) finalize_channel_sums(view, stats, p.channel_sums, stream);
}

// The split tiles' workspace in the training backward: the channels' sums for dweight and dbias
// (N > 1), then every part's sums for the two-launch form, reserved whether or not the device
// takes clusters, so that the size depends on the shape only.
size_t split_sums_bytes(const ChannelShape& as_instance) {
  return as_instance.n == 1
             ? 0
             : align256(static_cast<size_t>(as_instance.n * as_instance.c) * sizeof(float2));
}
size_t split_tiles_backward_workspace(const ChannelShape& as_instance, const GroupTilePlan& g) {
  return split_sums_bytes(as_instance) +
         align256(static_cast<size_t>(g.tiles * g.parts * 2 * g.groups_per_tile) * sizeof(float));
}

// Instance norm training with dx (or dz) in NHWC, and batch norm as one sample, where a tile of x
// and dy exceeds a block: its parts (channel_norm_split_tile_backward.cuh) as one cluster a tile
// where the device has them, else in two launches through the workspace; otherwise as
// backward_instance_tiles.
template <class T>
void backward_split_tiles(const ChannelBackwardArgs& a, const ChannelShape& as_instance,
                          const GroupTilePlan& g, const Launch& l) {
  auto stream = static_cast<cudaStream_t>(l.stream);
  ChannelBackwardArgs view = a;
  view.shape = as_instance;
  const XhatStats stats{true,
                        a.save_mean,
                        a.save_invstd,
                        static_cast<float>(a.eps),
                        ChannelNorm::kInstance,
                        as_instance.c,
                        1};
  SplitTileBackwardParams p{};
  set_backward_io(p, view, l);
  set_instance_tile_geometry(p, as_instance, g, static_cast<int>(sizeof(T)));
  p.head_packs = split_head_packs(g, static_cast<int>(sizeof(T)), 2);
  if (as_instance.n == 1) {  // the blocks hold whole channels: no sums to add over n
    p.channel_sums = nullptr;
    p.dweight = a.dweight;
    p.dbias = a.dbias;
  }
  p.parts = g.parts;
  p.part_positions = static_cast<int>(g.part_positions);
  p.part_sums = reinterpret_cast<float*>(static_cast<unsigned char*>(l.workspace) +
                                         split_sums_bytes(as_instance));
  launch_backward_split<T>(
      view, p, SplitLaunch{g.tiles * g.parts, g.threads, g.parts, kGroupTileScratchBytes},
      group_tile_backward_smem(p.head_packs), stream, [](auto access, auto src, auto z, auto step) {
        return backward_split_tile<T, decltype(access)::value, decltype(src)::value,
                                   decltype(z)::value, decltype(step)::value>;
      });
  dev::check_cuda(cudaGetLastError(), "split tiles backward launch");
  if (p.channel_sums) finalize_channel_sums(view, stats, p.channel_sums, stream);
}

template <class T, int kAccess, int kSource, bool kZ>
struct BatchTileBackwardKernel {
  static constexpr auto kernel = backward_batch_tile<T, kAccess, kSource, kZ>;
};

// The batch split tiles' workspace in the training backward: every part's two sums a channel,
// reserved whether or not the device takes clusters (the size depends on the shape only).
size_t batch_part_sums_bytes(const ChannelShape& s, const BatchTilePlan& b) {
  return align256(static_cast<size_t>(s.c * b.parts * 2) * sizeof(float));
}

// Batch norm training with dx, dz, dweight or dbias in NCHW where a channel's runs of x and of dy
// fit a block: one read of both, dweight and dbias from the same launch
// (channel_norm_batch_tile_backward.cuh); where they exceed it, its parts (a block each) as one
// cluster where the device has them, else in two launches through the workspace
// (batch_part_sums_bytes).
template <class T>
void backward_batch_tiles(const ChannelBackwardArgs& a, const BatchTilePlan& b, const Launch& l) {
  auto stream = static_cast<cudaStream_t>(l.stream);
  BatchTileBackwardParams p{};
  set_backward_io(p, a, l);
  p.channel_sums = nullptr;
  const bool in_place = a.dx == a.dy || a.dz == a.dy;
  set_batch_tile_geometry(p, a.shape, b, static_cast<int>(sizeof(T)), in_place);
  p.inv_count = 1.0f / static_cast<float>(a.shape.n * a.shape.s);
  p.dweight = a.dweight;
  p.dbias = a.dbias;
  p.parts = b.parts;
  p.part_runs = b.part_runs;
  if (b.parts > 1) {
    constexpr size_t kScratch = kBatchTileBackwardScratchBytes<SplitStep::kCluster>;
    p.head_packs = batch_split_head_packs(b, static_cast<int>(sizeof(T)), kScratch, 2);
    p.part_sums = static_cast<float*>(l.workspace);
    launch_backward_split<T>(
        a, p, SplitLaunch{a.shape.c * b.parts, b.threads, b.parts, kScratch},
        kScratch + size_t{32} * p.head_packs, stream, [](auto access, auto src, auto z, auto step) {
          return backward_batch_tile<T, decltype(access)::value, decltype(src)::value,
                                     decltype(z)::value, decltype(step)::value>;
        });
  } else {
    const size_t bytes =
        kBatchTileBackwardScratchBytes<SplitStep::kWhole> + size_t{32} * p.head_packs;
    with_backward_kernel<T, BatchTileBackwardKernel>(
        a, [&](auto kernel) { launch_blocks(kernel, a.shape.c, b.threads, bytes, stream, p); });
  }
  dev::check_cuda(cudaGetLastError(), "batch norm tiles backward launch");
}

template <class T>
void backward(const ChannelBackwardArgs& a, const Launch& l) {
  const ChannelShape& s = a.shape;
  const bool training = a.phase == NK_TRAINING;
  const ChannelPlan plan = plan_channel_norm(s, sizeof(T), vector_access(a));
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
  const bool want_elementwise = a.dx != nullptr || a.dz != nullptr;
  const bool want_coefficients = training && want_elementwise;
  // Instance and group norm training (and batch norm's in the instance tiles) take their one-read
  // paths whenever they apply, with or without dx (the kernels then skip its stores): dweight and
  // dbias come from the same per-(n, c) sums, so their bits do not depend on which outputs a call
  // asks for.
  if (training && (want_elementwise || want_params)) {  // as bench/channel_paths.cpp names them
    const ResidentPlan r = plan_resident_rows(s, sizeof(T), 2);
    if (r.use) return backward_resident_rows<T>(a, r, stats, l);
    const GroupTilePlan g = plan_group_tiles(s, sizeof(T), 2);
    if (g.use) return backward_group_tiles<T>(a, g, stats, l);
    const ShortRowsPlan sr = plan_short_rows(s, sizeof(T));
    if (sr.use) return backward_in_registers<T>(a, sr, stats, l);
    const RowGroupsPlan rg = plan_row_groups(s, sizeof(T));
    if (rg.use) return backward_in_row_groups<T>(a, rg, stats, l);
    const ChannelShape as_instance = instance_tile_shape(s);
    const GroupTilePlan it = plan_instance_tiles(as_instance, sizeof(T), 2);
    if (it.use && it.parts > 1) return backward_split_tiles<T>(a, as_instance, it, l);
    if (it.use) return backward_instance_tiles<T>(a, as_instance, it, l);
    const BatchTilePlan bt = plan_batch_tiles(s, sizeof(T), 2);
    if (bt.use) return backward_batch_tiles<T>(a, bt, l);
  }
  float4* coefs = want_coefficients ? reinterpret_cast<float4*>(base + lay.partials) : nullptr;
  if (want_params || want_coefficients) {
    auto* partials = reinterpret_cast<float2*>(base);
    launch_gradient_sums<T>(a, plan, stats, partials, l);
    const int64_t units = (want_params ? s.c : 0) + (want_coefficients ? s.num_stats() : 0);
    const int lanes = backward_finalize_lanes(plan, want_params, want_coefficients,
                                              s.kind == ChannelNorm::kGroup ? s.c / s.groups : 1);
    launch_backward_finalize(
        FinalizeParams{partials, plan, stats, a.weight, a.dweight, a.dbias, coefs}, units, lanes,
        stream);
    dev::check_cuda(cudaGetLastError(), "channel norm gradient finalize launch");
  }
  if (want_elementwise) launch_dx<T>(a, plan, training, coefs, l);
}

}  // namespace

namespace {

// The split tiles' workspace where a training backward takes them, else 0.
size_t split_backward_need(const ChannelBackwardArgs& a) {
  if (a.phase != NK_TRAINING) return 0;
  const int elem = static_cast<int>(dtype_size(a.shape.dtype));
  const ResidentPlan r = plan_resident_rows(a.shape, elem, 2);
  if (r.use) return resident_split_backward_workspace(a.shape, r);
  // Group norm's tiles come before the instance tiles in backward(); no shape takes both.
  const GroupTilePlan g = plan_group_tiles(a.shape, elem, 2);
  if (g.use) return g.parts == 1 ? 0 : group_tiles_backward_workspace(a.shape, g);
  const ChannelShape as_instance = instance_tile_shape(a.shape);
  const GroupTilePlan it = plan_instance_tiles(as_instance, elem, 2);
  if (it.use) {
    // The one-read paths before it in backward() (their shapes never split) take none of these.
    return it.parts == 1 ? 0 : split_tiles_backward_workspace(as_instance, it);
  }
  const BatchTilePlan bt = plan_batch_tiles(a.shape, elem, 2);
  return bt.use && bt.parts > 1 ? batch_part_sums_bytes(a.shape, bt) : 0;
}

}  // namespace

size_t channel_norm_backward_workspace_size(const ChannelBackwardArgs& a) {
  size_t bytes = split_backward_need(a);
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
  const bool want_coefficients = a.phase == NK_TRAINING && (a.dx != nullptr || a.dz != nullptr);
  if (!want_params && !want_coefficients) return 0;  // inference dx alone: elementwise only
  const size_t split = split_backward_need(a);
  if (split > 0) return split;
  const Layout lay = layout_of(
      plan_channel_norm(a.shape, static_cast<int>(dtype_size(a.shape.dtype)), vector_access(a)),
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
