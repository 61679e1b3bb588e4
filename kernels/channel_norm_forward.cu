// Batch, instance and group norm forward on the GPU.
//
// Training, three launches on the context's stream and nothing on the host:
//  1. partials: Welford states of x - shift, one per (slot, c, chunk) of a shape-only plan
//     (channel_norm_partials.cuh), where shift is the first element of the statistic the values
//     belong to: x - shift stays small when |mean| >> std, so fp32 keeps the variance (and later
//     y) accurate;
//  2. finalize, 32 to 256 threads per batch-norm channel (up to 2048 partials), group-norm
//     statistic (finalize_channel_lanes) or instance-norm channel (finalize_instance_shape; two
//     channels a block at 32, so that small C still spreads over many SMs): loads ahead what it
//     writes with, merges its partials in a fixed order (each lane loading 8 at a time), writes
//     save_mean/save_invstd, updates running_mean/running_var (momentum, or the cumulative
//     average from the device counter), and emits per (statistic, channel) unit - c for batch
//     norm, (n, c) for instance and group norm (group statistics are per (n, g) but the weight is
//     per c) - the coefficients
//       shift = the statistic's shift,  scale = invstd * weight_c,  offset = bias_c - centre *
//       scale
//     with centre = mean - shift (small), so that y = (x - shift) * scale + offset is one subtract
//     and one FMA per element. The mean is not folded into an additive constant (x * a + b): at
//     |mean| / std = 1e4 that loses about 1e-3 in fp32, where x - shift is exact enough;
//  3. apply (channel_norm_apply.cuh): that formula elementwise, coefficients loaded once per pack
//     (NCHW) or kept in registers (NHWC); its first thread advances num_batches_tracked, after the
//     finalize has read it. A counter that cannot advance (negative, or INT64_MAX) stays as it is
//     and the finalize leaves the running statistics as they are: the device's rule, where the CPU
//     backend returns an error.
// x is read twice (1 and 3); when it fits in L2 the second read mostly hits it.
// Instance and group norm in the rows layout read x once where a statistic's row fits a block's
// shared memory (plan_resident_rows, channel_norm_resident.cuh), or up to twice that with the rest
// reread from memory (predicted: from L2), and longer rows in parts, a block each (one cluster a
// row on sm_90, else two launches through the workspace, the same bits): one launch that stages
// each row, takes its statistics and writes y, then for instance norm with running statistics or
// a counter a one-block launch that averages the rows' statistics over n into the running buffers
// and advances the counter. Group norm in NHWC reads x once in the same way where a tile of whole
// groups of a sample, its positions' runs whole 16-byte packs, fits (plan_group_tiles,
// channel_norm_group_tile.cuh), and instance norm in NHWC where a tile of a pack of channels of a
// sample fits (plan_instance_tiles, channel_norm_instance_tile.cuh); batch norm in NHWC (or with
// S = 1) takes those tiles too, as the instance norm of one sample of N * S positions
// (instance_tile_shape): the same values per channel, at the same addresses. Tiles above a block
// are split into parts, a block each (channel_norm_split_tile.cuh; group norm's in
// forward_group_tile): one cluster a tile on sm_90 (x read once), else two launches through the
// workspace (x read twice), with the same bits.
// Batch norm in NCHW with S > 1 reads x once where a channel's N runs of S fit a block
// (plan_batch_tiles, channel_norm_batch_tile.cuh), which also blends the running statistics; a
// one-thread launch after it advances the counter.
// Rows of at most a 16-byte pack (plan_short_rows) read x once too: a thread holds whole rows in
// registers, whole packs of the tensor, and writes their statistics and y
// (channel_norm_short_rows.cuh). Rows above a pack up to 4 KiB (plan_row_groups) likewise: a block
// stages a run of whole rows in shared memory, a group of lanes takes each row's statistics and
// writes its y there, and the block stores y (channel_norm_row_groups.cuh).
// Inference is the apply alone, with the running statistics folded into the same form in
// registers (shift = running_mean, scale = weight / sqrt(running_var + eps), offset = bias): no
// workspace, no extra launch.
// Fused forms (y = act(u), u = norm(x) + z): only the apply changes - z is one more input of the
// walk, the activation ends each element's formula in fp32, and a ReLU mask is written from the
// same values (whole bytes for 8-element packs; narrower packs OR into a mask zeroed first).
#include <cstdint>
#include <type_traits>

#include "channel_norm.hpp"
#include "channel_norm_apply.cuh"
#include "channel_norm_batch_tile.cuh"
#include "channel_norm_group_tile.cuh"
#include "channel_norm_instance_tile.cuh"
#include "channel_norm_partials.cuh"
#include "channel_norm_resident.cuh"
#include "channel_norm_row_groups.cuh"
#include "channel_norm_running.cuh"
#include "channel_norm_short_rows.cuh"
#include "channel_norm_split_parts.cuh"
#include "channel_norm_split_tile.cuh"
#include "common/activation.cuh"
#include "common/check.cuh"
#include "common/dependent_launch.cuh"
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

template <class T>
struct StatsOp {
  using State = dev::Welford;
  static constexpr bool kReadsDy = false;
  static constexpr bool kFold = false, kAux = false;
  static constexpr bool kWelfordLanes = true;  // Local::push: a Welford push of x - shift
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
  // local(n, c + i) of a channels walk's pack (the channels layout: (n, c)'s first element is
  // n * S * C + c), loaded from one base: group norm steps each channel's group from the first
  // one's, so a pack divides twice (C / G, c / (C/G)) where local divided twice a channel (sm_90
  // SASS of the walk's setup: 56 instructions a channel, each 64-bit division about 20 of them;
  // about 150 a pack now).
  template <int E, bool kWrap>
  __device__ void locals(int64_t n, int64_t c, Local (&out)[E]) const {
    const T* sample = x + (kind == ChannelNorm::kBatch ? 0 : n) * plan.s * plan.c;
    if (kind != ChannelNorm::kGroup) {
#pragma unroll
      for (int i = 0; i < E; ++i) {
        out[i] = Local{dev::to_float(sample[c])};
        c = kWrap && c + 1 == plan.c ? 0 : c + 1;
      }
      return;
    }
    const int64_t per_group = plan.c / groups;
    int64_t first = c / per_group * per_group, place = c - first;  // c's group and place in it
#pragma unroll
    for (int i = 0; i < E; ++i) {
      out[i] = Local{dev::to_float(sample[first])};
      if (kWrap && ++c == plan.c) {
        c = 0, first = 0, place = 0;
      } else if (++place == per_group) {
        place = 0, first += per_group;
      }
    }
  }
  __device__ State identity() const { return dev::welford_empty(); }
  __device__ State merge(State a, State b) const { return dev::welford_merge_approx(a, b); }
};

// The apply's coefficients per unit (c, or n*C + c): y = (x - shift) * scale + offset.
struct CoefArrays {
  float* shift;
  float* scale;
  float* offset;
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
  const float* weight;
  const float* bias;
  CoefArrays coefs;
  float* save_mean;
  float* save_invstd;
};

// Partials a finalize lane loads before merging them (dev::fold_ahead): 32 merges a lane wait on
// memory 4 times, not 32.
constexpr int kMergeAhead = 8;

// The finalize kernels' merge of partials: Chan's merge with one reciprocal and no branch
// (welford_merge_approx), where the full division's check and branches made each merge of a
// lane's chain and of the joining tree about twice as long.
using FinalizeMerge = dev::WelfordMergeApprox;

// A lane's merge of batch norm channel c's partials (one slot), in a fixed order: the walk's chunks
// w = g, g + lanes, ... (g: the lane's index among the channel's `lanes`), each with its
// plan.columns columns in order (partial_index, whose column walks' division per partial spilled
// finalize_local on sm_80, stepped instead).
__device__ __forceinline__ dev::Welford merge_batch_partials(const ChannelPlan& plan, int64_t c,
                                                             int g, int lanes,
                                                             const dev::Welford* partials) {
  const int columns = plan.rows_layout && plan.columns > 1 ? plan.columns : 1;
  const int64_t first = plan.partial_index(0, c, 0);
  const int64_t stride = plan.partial_index(0, c, columns) - first;  // the walk's next chunk
  // The lane's chunks w, each with its columns q: `at` is chunk w's first, `q` the next column.
  int64_t at = first + g * stride;
  int q = 0;
  auto next = [&] {
    const dev::Welford v = partials[at + q];
    if (++q == columns) q = 0, at += lanes * stride;
    return v;
  };
  const int64_t count = members_from(g, plan.chunks / columns, lanes) * columns;
  return dev::fold_ahead<kMergeAhead>(dev::welford_empty(), count, next, FinalizeMerge{});
}

// What a finalize thread writes channel c's results from besides its merged state: its weight and
// bias, and its running buffers' old values where they are updated. Loaded before the merge, so
// that they wait on memory together with the partials (and the statistic's shift, x[first]),
// where loaded after it they were three waits in a row: the shift, then the weight and bias, then
// the running buffers behind the stores before them.
struct ChannelInputs {
  float weight, bias, running_mean, running_var;
};

template <class T>
__device__ __forceinline__ ChannelInputs load_channel_inputs(const FinalizeParams<T>& p,
                                                             int64_t c, bool running) {
  ChannelInputs in{p.weight ? p.weight[c] : 1.0f, p.bias ? p.bias[c] : 0.0f, 0.0f, 0.0f};
  if (running && p.running_mean != nullptr) {
    in.running_mean = p.running_mean[c];
    in.running_var = p.running_var[c];
  }
  return in;
}

// Writes unit u's coefficients from its statistic's shift, centre and invstd and its channel's
// weight and bias.
__device__ __forceinline__ void write_coefs(const CoefArrays& out, int64_t u, float weight,
                                            float bias, float shift, float centre, float invstd) {
  const float scale = invstd * weight;
  out.shift[u] = shift;
  out.scale[u] = scale;
  out.offset[u] = bias - centre * scale;
}

// The running average's weight of this batch: the momentum, or -1 when the counter cannot
// advance. A float that stays in a register, where a bool held across the merges' division calls
// was spilled by ptxas on sm_90. The counter is only read by the finalize: the apply kernel
// increments it afterwards, so no finalize thread ever sees a count another has already advanced.
template <class T>
__device__ __forceinline__ float running_weight(const FinalizeParams<T>& p) {
  const int64_t tracked = p.num_batches_tracked ? *p.num_batches_tracked : 0;
  return !counter_can_advance(tracked) ? -1.0f
         : p.cumulative                ? 1.0f / static_cast<float>(tracked + 1)
                                       : p.momentum;
}

// A statistic's results from its merged state (of x - shift) and its shift.
struct Statistic {
  float mean, invstd;
  float running_var;  // the variance the running average takes: unbiased where asked
};

template <class T>
__device__ __forceinline__ Statistic finish_statistic(const FinalizeParams<T>& p,
                                                      const dev::Welford& t, float shift) {
  const float var = dev::welford_biased_var(t), n = static_cast<float>(t.count);
  return Statistic{shift + t.mean, rsqrtf(var + p.eps), p.unbiased ? t.m2 / (n - 1.0f) : var};
}

template <class T>
__device__ __forceinline__ void write_statistic(const FinalizeParams<T>& p, int64_t k,
                                                const Statistic& st) {
  if (p.save_mean) p.save_mean[k] = st.mean;
  if (p.save_invstd) p.save_invstd[k] = st.invstd;
}

// Channel c's running buffers from their old values in `in` and the batch's (mean, var), weighed
// by m (running_weight: negative when the counter cannot advance, which leaves them).
template <class T>
__device__ __forceinline__ void update_running(const FinalizeParams<T>& p, float m, int64_t c,
                                               const ChannelInputs& in, float mean, float var) {
  if (p.running_mean == nullptr || !(m >= 0.0f)) return;
  p.running_mean[c] = (1.0f - m) * in.running_mean + m * mean;
  p.running_var[c] = (1.0f - m) * in.running_var + m * var;
}

// A statistic's `lanes` threads joined, every thread ending with the same bits: a warp by
// shuffles; more than 32 lanes (then the block is that one statistic) the block's warps in order
// too, after the identity, which the merge returns the first warp's state for exactly.
__device__ __forceinline__ dev::Welford join_lanes(dev::Welford t, int lanes,
                                                   dev::Welford* scratch) {
  const FinalizeMerge merge;
  return lanes > 32 ? dev::block_merge(t, scratch, dev::welford_empty(), merge)
                    : dev::warp_merge(t, threadIdx.x % 32, 32, merge);
}

// Batch norm: `lanes` threads a channel (finalize_channel_lanes of the plan's chunks: shape-only),
// blockDim.x / lanes channels a block (one; two of a warp each). A channel's lanes merge its
// partials in lane-strided order (each loading at most kMergeAhead of them before merging, where a
// warp per channel waited on memory 8 times for C = 64 in NHWC: 2048 partials), a fixed tree joins
// them (shuffles, then the warps in order), and the channel's first lane writes the statistics,
// the running buffers and the coefficients from the inputs it loaded before the merge.
template <class T>
__global__ void __launch_bounds__(kBatchFinalizeBlock)
    finalize_batch(FinalizeParams<T> p, int lanes) {
  dev::enter_chain();
  __shared__ dev::Welford scratch[kBatchFinalizeBlock / 32];
  const ChannelPlan& plan = p.plan;
  const int g = threadIdx.x % lanes;
  const int64_t c = int64_t{blockIdx.x} * (blockDim.x / lanes) + threadIdx.x / lanes;
  const bool writer = c < plan.c && g == 0;
  const float m = running_weight(p);
  float shift = 0.0f;
  ChannelInputs in{};
  if (writer) {
    shift = dev::to_float(p.x[first_of_stat(plan, p.kind, p.groups, 0, c)]);
    in = load_channel_inputs(p, c, m >= 0.0f);
  }
  dev::Welford t =
      c < plan.c ? merge_batch_partials(plan, c, g, lanes, p.partials) : dev::welford_empty();
  t = join_lanes(t, lanes, scratch);
  if (!writer) return;
  const Statistic st = finish_statistic(p, t, shift);
  write_statistic(p, c, st);
  write_coefs(p.coefs, c, in.weight, in.bias, shift, t.mean, st.invstd);
  update_running(p, m, c, in, st.mean, st.running_var);
}

// Group norm: `lanes` threads a statistic (n, g) (finalize_channel_lanes of its C/G * chunks
// partials: shape-only), blockDim.x / lanes statistics a block (one; two of a warp each). The lanes
// merge the members j = g, g + lanes, ... (channel c0 + j / chunks, chunk j % chunks), loaded
// ahead; shuffles, then the warps in order, join them, every thread of the statistic merging the
// same warp states in the same order (so all hold the same bits); the first lane writes the
// statistics and the lanes the coefficients of the group's C/G channels, the shift and each
// lane's first channel's weight and bias loaded before the merge. Where a warp per statistic had
// 27 partials a lane (N8 C640 64x64 NHWC: 860 a group), 128 lanes load 7 each.
template <class T>
__global__ void __launch_bounds__(kBatchFinalizeBlock)
    finalize_group(FinalizeParams<T> p, int lanes) {
  dev::enter_chain();
  __shared__ dev::Welford scratch[kBatchFinalizeBlock / 32];
  const ChannelPlan& plan = p.plan;
  const int g = threadIdx.x % lanes;
  const int64_t unit = int64_t{blockIdx.x} * (blockDim.x / lanes) + threadIdx.x / lanes;
  const bool valid = unit < plan.n * p.groups;
  const int64_t per_group = plan.c / p.groups;
  const int64_t n = valid ? unit / p.groups : 0, c0 = valid ? unit % p.groups * per_group : 0;
  float shift = 0.0f;
  ChannelInputs in{};
  if (valid) {
    shift = dev::to_float(p.x[first_of_stat(plan, p.kind, p.groups, n, c0)]);
    if (g < per_group) in = load_channel_inputs(p, c0 + g, false);
  }
  const FinalizeMerge merge;
  dev::Welford t = dev::welford_empty();
  if (valid) {
    auto load = [&](int64_t m, int64_t chunk) {
      return p.partials[plan.partial_index(n, c0 + m, chunk)];
    };
    t = fold_members<kMergeAhead>(t, g, per_group * plan.chunks, plan.chunks, lanes, load, merge);
  }
  t = join_lanes(t, lanes, scratch);
  if (!valid) return;
  const Statistic st = finish_statistic(p, t, shift);
  if (g == 0) write_statistic(p, unit, st);
  for (int64_t j = g; j < per_group; j += lanes) {
    if (j != g) in = load_channel_inputs(p, c0 + j, false);
    write_coefs(p.coefs, n * plan.c + c0 + j, in.weight, in.bias, shift, t.mean, st.invstd);
  }
}

// Instance norm: `threads` a channel (finalize_instance_shape: shape-only), blockDim.x / threads
// channels a block (one; two of a warp each), in rounds of threads / w samples, w lanes a sample:
// lane l of sample n merges chunks l, l + w, ... of (n, c), loaded ahead, a tree over its w lanes
// joins them, and the sample's first lane writes its statistics and coefficients and adds its
// (mean, var) to its sums; the channel's threads then add those sums in a fixed tree (the warp,
// then the block's warps in order) and its first thread updates the running buffers with their
// mean over n, as PyTorch does. The channel's weight, bias and running buffers load before the
// first round, each round's shifts before its merges.
template <class T>
__global__ void __launch_bounds__(kBatchFinalizeBlock)
    finalize_instance(FinalizeParams<T> p, InstanceFinalizeShape shape) {
  dev::enter_chain();
  __shared__ float scratch[2 * 32];
  const ChannelPlan& plan = p.plan;
  const int threads = shape.threads, w = shape.sample_lanes;
  const int g = threadIdx.x % threads, sub = g % w;
  const int64_t unit = int64_t{blockIdx.x} * (blockDim.x / threads) + threadIdx.x / threads;
  const bool valid = unit < plan.c;
  const float m = running_weight(p);
  const FinalizeMerge merge;
  ChannelInputs in{};
  if (valid) in = load_channel_inputs(p, unit, g == 0 && m >= 0.0f);
  dev::Floats<2> run{};
  for (int64_t n0 = 0; n0 < plan.n; n0 += threads / w) {
    const int64_t n = n0 + g / w;
    const bool member = valid && n < plan.n, writer = member && sub == 0;
    const float shift =
        writer ? dev::to_float(p.x[first_of_stat(plan, p.kind, p.groups, n, unit)]) : 0.0f;
    dev::Welford t = dev::welford_empty();
    if (member) {
      // Chunks sub, sub + w, ... of (n, unit): their partials are `stride` apart.
      const int64_t at0 = plan.partial_index(n, unit, 0);
      const int64_t stride = plan.chunks > 1 ? plan.partial_index(n, unit, 1) - at0 : 0;
      int64_t at = at0 + sub * stride;
      auto next = [&] {
        const dev::Welford v = p.partials[at];
        at += w * stride;
        return v;
      };
      t = dev::fold_ahead<kMergeAhead>(t, members_from(sub, plan.chunks, w), next, merge);
    }
    t = dev::warp_merge(t, threadIdx.x % 32, w, merge);  // every lane of the warp, every round
    if (!writer) continue;
    const int64_t k = n * plan.c + unit;
    const Statistic st = finish_statistic(p, t, shift);
    write_statistic(p, k, st);
    write_coefs(p.coefs, k, in.weight, in.bias, shift, t.mean, st.invstd);
    run.v[0] += st.mean;
    run.v[1] += st.running_var;
  }
  run = threads > 32 ? dev::block_sum<2>(run, scratch) : dev::group_sum<2>(run, 32);
  const float inv = 1.0f / static_cast<float>(plan.n);
  if (valid && g == 0) update_running(p, m, unit, in, run.v[0] * inv, run.v[1] * inv);
}

// Instance norm after a one-read kernel (resident rows, rows in registers, row groups), up to
// kRunningOneBlockRows rows: one block averages each channel's row statistics over n (in n order)
// into the running buffers, then advances the counter: every thread reads it before the block's
// barrier, and a counter that cannot advance leaves everything as it was.
struct InstanceRunningParams {
  const float2* row_stats;  // [n * C + c]: (mean, variance for the running average)
  int64_t n, c;
  float momentum;
  bool cumulative;
  float* running_mean;
  float* running_var;
  int64_t* num_batches_tracked;

  // Channel ch's running buffers from its rows' sums over n, weighed by the counter's value.
  __device__ void blend(int64_t ch, int64_t tracked, float mean_sum, float var_sum) const {
    const float m = cumulative ? 1.0f / static_cast<float>(tracked + 1) : momentum;
    const float inv = 1.0f / static_cast<float>(n);
    running_mean[ch] = (1.0f - m) * running_mean[ch] + m * (mean_sum * inv);
    running_var[ch] = (1.0f - m) * running_var[ch] + m * (var_sum * inv);
  }
};

__global__ void __launch_bounds__(256) update_instance_running(InstanceRunningParams p) {
  dev::enter_chain();
  const int64_t tracked = p.num_batches_tracked ? *p.num_batches_tracked : 0;
  const bool advance = counter_can_advance(tracked);
  if (advance && p.running_mean != nullptr) {
    for (int64_t c = threadIdx.x; c < p.c; c += blockDim.x) {
      float mean = 0.0f, var = 0.0f;
      for (int64_t n = 0; n < p.n; ++n) {
        const float2 t = p.row_stats[n * p.c + c];
        mean += t.x;
        var += t.y;
      }
      p.blend(c, tracked, mean, var);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0 && advance && p.num_batches_tracked) *p.num_batches_tracked = tracked + 1;
}

// The same over many rows (above kRunningOneBlockRows, channel_norm_plan.hpp): a block per 32
// channels, a lane per channel, its 8 warps summing n = warp, warp + 8, ... and warp 0 adding the
// warps' sums in warp order (a fixed order for the shape). The counter is left to advance_counter,
// launched after, so that every block has read it first.
__global__ void __launch_bounds__(256) update_instance_running_spread(InstanceRunningParams p) {
  dev::enter_chain();
  __shared__ float2 warp_sums[8][32];
  const int64_t tracked = p.num_batches_tracked ? *p.num_batches_tracked : 0;
  if (!counter_can_advance(tracked) || p.running_mean == nullptr) return;  // the whole block
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  const int64_t c = int64_t{blockIdx.x} * 32 + lane;
  float2 sum = make_float2(0.0f, 0.0f);
  if (c < p.c) {
    for (int64_t n = warp; n < p.n; n += 8) {
      const float2 t = p.row_stats[n * p.c + c];
      sum.x += t.x;
      sum.y += t.y;
    }
  }
  warp_sums[warp][lane] = sum;
  __syncthreads();
  if (warp != 0 || c >= p.c) return;
  float mean = 0.0f, var = 0.0f;
#pragma unroll
  for (int w = 0; w < 8; ++w) {
    mean += warp_sums[w][lane].x;
    var += warp_sums[w][lane].y;
  }
  p.blend(c, tracked, mean, var);
}

// Advances the counter after update_instance_running_spread's blocks have read it.
__global__ void advance_counter(int64_t* num_batches_tracked) {
  dev::enter_chain();
  advance_counter_once(num_batches_tracked);
}

// The forward's apply op (channel_norm_apply.cuh): u = (x - shift) * scale + offset (+ z),
// y = act(u), and the ReLU mask when asked for. kFold: inference, the coefficients folded per
// channel from the running statistics and the affine, in registers; else the finalize's, per unit.
// u stays in fp32: y is rounded once.
template <class T, bool kFold, int kAct, bool kResidual>
struct ForwardApply {
  using Elem = T;
  struct Coef {
    float shift, scale, offset;
  };
  static constexpr int kInputs = kResidual ? 2 : 1;
  static constexpr bool kBits = false;
  static constexpr int kOutputs = 1;
  const T* in[kInputs];  // x, then z
  T* out;                // y
  uint32_t* mask;        // ReLU only, nullable
  CoefArrays coefs;
  const float* running_mean;
  const float* running_var;
  const float* weight;
  const float* bias;
  float eps;
  int64_t* num_batches_tracked;  // training: incremented once, after the finalize has read it

  __device__ void once() const { advance_counter_once(num_batches_tracked); }
  __device__ Coef coef(int64_t u) const {
    if constexpr (kFold) {
      const float scale = (weight ? weight[u] : 1.0f) * rsqrtf(running_var[u] + eps);
      return Coef{running_mean[u], scale, bias ? bias[u] : 0.0f};
    } else {
      return Coef{coefs.shift[u], coefs.scale[u], coefs.offset[u]};
    }
  }
  __device__ void apply(const Coef& k, const float (&v)[kInputs], float (&r)[1]) const {
    float u = fmaf(v[0] - k.shift, k.scale, k.offset);
    if constexpr (kResidual) u += v[1];
    r[0] = dev::activate<kAct>(u);
  }
  template <int E>
  __device__ void store(int64_t i, const float (&r)[1][E]) const {
    dev::store_floats<T, E>(out + i, r[0]);
    if constexpr (kAct == NK_ACTIVATION_RELU) {
      if (mask != nullptr) dev::store_mask<E>(mask, i, r[0]);  // y > 0 exactly where u > 0
    }
  }
  template <int E>
  __device__ void store_some(int64_t i, const float (&r)[1][E], int count) const {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (e < count) out[i + e] = dev::from_float<T>(r[0][e]);
    }
    if constexpr (kAct == NK_ACTIVATION_RELU) {
      if (mask != nullptr) dev::store_mask<E>(mask, i, r[0], count);
    }
  }
  template <int E>
  __device__ uint32_t bits(int64_t) const {
    return 0;
  }
};

// Workspace: the partials, then shift, scale and offset per unit, each 256-byte aligned.
struct Layout {
  size_t partials, coefs, total;
};

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Coefficient units: c for batch norm, (n, c) for instance and group norm.
int64_t coef_units(const ChannelShape& s) {
  return s.kind == ChannelNorm::kBatch ? s.c : s.n * s.c;
}

Layout layout_of(const ChannelPlan& plan, int64_t units, bool training) {
  if (!training) return Layout{0, 0, 0};
  const size_t partials = align256(static_cast<size_t>(plan.partials()) * sizeof(dev::Welford));
  const size_t coefs = align256(static_cast<size_t>(units) * sizeof(float));
  return Layout{partials, coefs, partials + 3 * coefs};
}

// Synchronized batch norm, local half: a warp per channel merges its partials and writes this
// shard's mean and m2 (the partials hold x - shift, so the shift returns in the mean); the first
// thread writes the shard's count, which the host knows.
template <class T>
__global__ void __launch_bounds__(256)
    finalize_local(const dev::Welford* partials, const T* x, ChannelPlan plan, int64_t* count,
                   float* mean, float* m2) {
  dev::enter_chain();
  const int lane = threadIdx.x % 32;
  const int64_t c = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
  if (blockIdx.x == 0 && threadIdx.x == 0) *count = plan.n * plan.s;
  if (c >= plan.c) return;
  const FinalizeMerge merge;
  dev::Welford t = merge_batch_partials(plan, c, lane, 32, partials);
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
  const float* weight;
  const float* bias;
  CoefArrays coefs;
  float* save_mean;
  float* save_invstd;
};

__global__ void __launch_bounds__(256) finalize_global(GlobalParams p) {
  dev::enter_chain();
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
    write_coefs(p.coefs, c, p.weight ? p.weight[c] : 1.0f, p.bias ? p.bias[c] : 0.0f, mean, 0.0f,
                invstd);
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

// y elementwise with one fusion: with the finalize's coefficients in `coefs` (training) or the
// running statistics (kFold).
template <class T, bool kFold, bool kPerSample, int kAct, bool kResidual>
void launch_apply_op(const ChannelForwardArgs& a, const ChannelPlan& plan, const CoefArrays& coefs,
                     int64_t* num_batches_tracked, const Launch& l) {
  using Op = ForwardApply<T, kFold, kAct, kResidual>;
  Op op{};
  op.in[0] = static_cast<const T*>(a.x);
  if constexpr (kResidual) op.in[1] = static_cast<const T*>(a.z);
  op.out = static_cast<T*>(a.y);
  op.mask = a.relu_mask;
  op.coefs = coefs;
  op.running_mean = a.running_mean;
  op.running_var = a.running_var;
  op.weight = a.weight;
  op.bias = a.bias;
  op.eps = static_cast<float>(a.params.eps);
  op.num_batches_tracked = num_batches_tracked;
  launch_elementwise<Op, kPerSample>(op, plan, l.sm_count, static_cast<cudaStream_t>(l.stream));
}

template <class T, bool kFold, bool kPerSample>
void launch_apply_fused(const ChannelForwardArgs& a, const ChannelPlan& plan,
                        const CoefArrays& coefs, int64_t* num_batches_tracked, const Launch& l) {
  auto run = [&](auto act) {
    constexpr int kAct = decltype(act)::value;
    if (a.fusion.residual) {
      launch_apply_op<T, kFold, kPerSample, kAct, true>(a, plan, coefs, num_batches_tracked, l);
    } else {
      launch_apply_op<T, kFold, kPerSample, kAct, false>(a, plan, coefs, num_batches_tracked, l);
    }
  };
  switch (a.fusion.activation) {
    case NK_ACTIVATION_RELU:
      run(std::integral_constant<int, NK_ACTIVATION_RELU>{});
      break;
    case NK_ACTIVATION_SILU:
      run(std::integral_constant<int, NK_ACTIVATION_SILU>{});
      break;
    default:
      run(std::integral_constant<int, NK_ACTIVATION_IDENTITY>{});
  }
}

// The ReLU mask is zeroed first where packs of fewer than eight elements OR their bits into it;
// eight-element packs store whole bytes, and only the last word's padding needs zeroing then.
void clear_mask(const ChannelForwardArgs& a, int pack_elems, cudaStream_t stream) {
  if (a.relu_mask == nullptr) return;
  const int64_t words = (a.shape.numel() + 31) / 32;
  if (pack_elems == 8) {
    dev::check_cuda(cudaMemsetAsync(a.relu_mask + words - 1, 0, sizeof(uint32_t), stream),
                    "cudaMemsetAsync (relu mask)");
  } else {
    dev::check_cuda(
        cudaMemsetAsync(a.relu_mask, 0, static_cast<size_t>(words) * sizeof(uint32_t), stream),
        "cudaMemsetAsync (relu mask)");
  }
}

// The mask of the elementwise walk (launch_apply), zeroed before the call's first kernel rather
// than between two: a copy between kernels would end their dependent launch (dependent_launch.cuh).
template <class T>
void clear_apply_mask(const ChannelForwardArgs& a, const ChannelPlan& plan, bool training,
                      const Launch& l) {
  const bool per_sample = training && a.shape.kind != ChannelNorm::kBatch;
  clear_mask(a, elementwise_pack_elems(elementwise_plan(plan, sizeof(T), per_sample), sizeof(T)),
             static_cast<cudaStream_t>(l.stream));
}

// y elementwise: with the finalize's coefficients in `coefs` (training) or the running
// statistics. The caller has cleared the mask (clear_apply_mask).
template <class T>
void launch_apply(const ChannelForwardArgs& a, const ChannelPlan& plan, bool training,
                  const CoefArrays& coefs, int64_t* num_batches_tracked, const Launch& l) {
  if (!training) {
    launch_apply_fused<T, true, false>(a, plan, coefs, num_batches_tracked, l);
  } else if (a.shape.kind == ChannelNorm::kBatch) {
    launch_apply_fused<T, false, false>(a, plan, coefs, num_batches_tracked, l);
  } else {
    launch_apply_fused<T, false, true>(a, plan, coefs, num_batches_tracked, l);
  }
  dev::check_cuda(cudaGetLastError(), "channel norm apply launch");
}

CoefArrays carve_coefs(unsigned char* base, size_t coef_bytes) {
  return CoefArrays{reinterpret_cast<float*>(base), reinterpret_cast<float*>(base + coef_bytes),
                    reinterpret_cast<float*>(base + 2 * coef_bytes)};
}

// Bytes of a one-read path's workspace (resident or short rows): the rows' statistics for
// instance norm's running update.
size_t row_stats_workspace(int64_t rows, const ChannelShape& s) {
  return s.kind == ChannelNorm::kInstance ? align256(static_cast<size_t>(rows) * sizeof(float2))
                                          : 0;
}

// Whether a one-read forward writes the rows' statistics for the running update.
bool instance_running(const ChannelForwardArgs& a) {
  return a.shape.kind == ChannelNorm::kInstance &&
         (a.running_mean != nullptr || a.num_batches_tracked != nullptr);
}

// Instance norm's running buffers and counter from the rows' statistics of a one-read forward.
void update_running_from_rows(const ChannelForwardArgs& a, const float2* row_stats,
                              cudaStream_t stream) {
  const InstanceRunningParams u{row_stats,
                                a.shape.n,
                                a.shape.c,
                                static_cast<float>(a.params.momentum),
                                a.params.momentum_mode == NK_MOMENTUM_CUMULATIVE,
                                a.running_mean,
                                a.running_var,
                                a.num_batches_tracked};
  if (a.shape.n * a.shape.c <= kRunningOneBlockRows) {
    dev::launch_dependent(update_instance_running, 1, 256, 0, stream, u);
    dev::check_cuda(cudaGetLastError(), "instance norm running update launch");
    return;
  }
  dev::launch_dependent(update_instance_running_spread,
                        static_cast<unsigned>((a.shape.c + 31) / 32), 256, 0, stream, u);
  dev::check_cuda(cudaGetLastError(), "instance norm running update launch");
  if (a.num_batches_tracked != nullptr) {
    dev::launch_dependent(advance_counter, 1, 1, 0, stream, a.num_batches_tracked);
    dev::check_cuda(cudaGetLastError(), "instance norm counter launch");
  }
}

// The tensors and parameters of a forward that reads x once (ResidentParams, GroupTileParams).
template <class Params>
void set_forward_io(Params& p, const ChannelForwardArgs& a) {
  p.x = a.x;
  p.z = a.fusion.residual ? a.z : nullptr;
  p.y = a.y;
  p.mask = a.relu_mask;
  p.weight = a.weight;
  p.bias = a.bias;
  p.save_mean = a.save_mean;
  p.save_invstd = a.save_invstd;
}

// The host side shared by the one-read forwards of the rows layout: the tensors, instance norm's
// row statistics in the workspace (for the running update), eps and the running variance's kind,
// then fill(p) for the path's own fields; the mask cleared (the kernels store whole packs of it, of
// `mask_pack_elems`: 1 where they OR every pack's bits in), launch(p, stream), and the running
// update from the rows' statistics.
template <class T, class Params, class Fill, class LaunchKernel>
void forward_rows_once(const ChannelForwardArgs& a, const Launch& l, const char* what, Fill&& fill,
                       LaunchKernel&& launch,
                       int mask_pack_elems = 16 / static_cast<int>(sizeof(T))) {
  auto stream = static_cast<cudaStream_t>(l.stream);
  const bool running = instance_running(a);
  Params p{};
  set_forward_io(p, a);
  p.row_stats = running ? static_cast<float2*>(l.workspace) : nullptr;
  p.eps = static_cast<float>(a.params.eps);
  p.unbiased = a.params.running_var == NK_RUNNING_VAR_UNBIASED;
  fill(p);
  clear_mask(a, mask_pack_elems, stream);
  launch(p, stream);
  dev::check_cuda(cudaGetLastError(), what);
  if (running) update_running_from_rows(a, p.row_stats, stream);
}

// The split rows' workspace of the two-launch form, after the rows' statistics: every part's
// statistics and x0 a row, reserved whether or not the device takes clusters (the size depends on
// the shape only).
size_t resident_part_stats_bytes(const ResidentPlan& r) {
  return r.parts == 1 ? 0 : align256(static_cast<size_t>(r.rows * (r.parts + 1)) * sizeof(float2));
}

// A block a row (channel_norm_resident.cuh), or where a row exceeds a block its parts, as one
// cluster where the device has them, else in two launches through the workspace.
template <class T>
void forward_resident_rows(const ChannelForwardArgs& a, const ResidentPlan& r, const Launch& l) {
  constexpr int E = 16 / static_cast<int>(sizeof(T));
  constexpr int kElem = static_cast<int>(sizeof(T));
  forward_rows_once<T, ResidentParams>(
      a, l, "channel norm resident rows launch",
      [&](ResidentParams& p) {
        set_row_geometry(p, a.shape, r);
        p.head_packs = resident_head_packs(r, kElem);
        p.inv_len_minus_1 = 1.0f / static_cast<float>(r.len - 1);
        if (r.parts > 1) {
          p.head_packs = resident_split_head_packs(r, kElem, sizeof(SplitStatScratch));
          p.part_stats = reinterpret_cast<float2*>(static_cast<unsigned char*>(l.workspace) +
                                                   row_stats_workspace(r.rows, a.shape));
        }
      },
      [&](const ResidentParams& p, cudaStream_t stream) {
        if (r.parts == 1) return launch_resident<T>(p, r, a.fusion.activation, stream);
        launch_forward_split<T>(
            p, SplitLaunch{r.rows * r.parts, r.threads, r.parts, sizeof(SplitStatScratch)},
            a.fusion.activation, stream, [](auto access, auto act, auto residual, auto step) {
              return forward_resident<T, decltype(access)::value, decltype(act)::value,
                                      decltype(residual)::value, decltype(step)::value>;
            });
      },
      // Rows (or parts) that are not whole packs OR every pack's bits in.
      r.len % E == 0 && r.part_len % E == 0 ? E : 1);
}

// Rows of at most a pack, a thread per few rows in registers (channel_norm_short_rows.cuh).
template <class T>
void forward_in_registers(const ChannelForwardArgs& a, const ShortRowsPlan& r, const Launch& l) {
  forward_rows_once<T, ShortRowsParams>(
      a, l, "channel norm short rows launch",
      [&](ShortRowsParams& p) {
        set_short_row_geometry(p, a.shape, r);
        p.vector_access = dev::aligned16(p.x) && dev::aligned16(p.z) && dev::aligned16(p.y);
      },
      [&](const ShortRowsParams& p, cudaStream_t stream) {
        launch_short_rows<T>(p, r, a.fusion.activation, stream);
      });
}

// Rows above a pack up to 4 KiB, a group of lanes a row (channel_norm_row_groups.cuh).
template <class T>
void forward_in_row_groups(const ChannelForwardArgs& a, const RowGroupsPlan& r, const Launch& l) {
  forward_rows_once<T, RowGroupsParams>(
      a, l, "channel norm row groups launch",
      [&](RowGroupsParams& p) {
        p.g = row_groups_geometry(a.shape, r);
        p.inv_len = 1.0f / static_cast<float>(r.len);
        p.inv_len_minus_1 = 1.0f / static_cast<float>(r.len - 1);
        p.vector_access = dev::aligned16(p.x) && dev::aligned16(p.z) && dev::aligned16(p.y);
      },
      [&](const RowGroupsParams& p, cudaStream_t stream) {
        launch_row_groups<T>(p, r, a.fusion.activation, stream);
      });
}

// The split tiles' workspace of the two-launch form: every part's statistics and each tile's x0
// a statistic of the tile (instance norm: a channel; group norm: a group), reserved whether or not
// the device takes clusters, so that the size depends on the shape only.
size_t part_stats_bytes(const GroupTilePlan& g) {
  return align256(static_cast<size_t>(g.tiles * (g.parts + 1) * g.groups_per_tile) *
                  sizeof(float2));
}

// Group norm in NHWC, a block per tile of groups (channel_norm_group_tile.cuh), or where a tile
// exceeds a block its parts, as one cluster where the device has them, else in two launches
// through the workspace (part_stats_bytes; else none).
template <class T>
void forward_group_tiles(const ChannelForwardArgs& a, const GroupTilePlan& g, const Launch& l) {
  const ChannelShape& s = a.shape;
  auto stream = static_cast<cudaStream_t>(l.stream);
  GroupTileParams p{};
  set_forward_io(p, a);
  set_tile_geometry(p, s, g, static_cast<int>(sizeof(T)));
  p.eps = static_cast<float>(a.params.eps);
  p.parts = g.parts;
  p.part_positions = static_cast<int>(g.part_positions);
  if (g.parts > 1) {
    p.head_packs = split_head_packs(g, static_cast<int>(sizeof(T)));
    p.part_stats = static_cast<float2*>(l.workspace);
  }
  clear_mask(a, 16 / static_cast<int>(sizeof(T)), stream);  // the kernel writes whole packs
  launch_group_tiles<T>(p, g, a.fusion.activation, stream);
  dev::check_cuda(cudaGetLastError(), "group norm tiles launch");
}

// Instance norm in NHWC, a block per tile of a pack of channels (channel_norm_instance_tile.cuh),
// the rows' statistics in the workspace for the running update; batch norm likewise as the
// instance norm of one sample (`as_instance`: instance_tile_shape's view of a's shape). One sample
// (batch norm, or instance norm with N = 1): the blocks blend the running statistics themselves,
// so the view has no running buffers (no row statistics, no update launch), and a launch after
// them advances the counter.
template <class T>
void forward_instance_tiles(const ChannelForwardArgs& a, const ChannelShape& as_instance,
                            const GroupTilePlan& g, const Launch& l) {
  const bool one_sample = as_instance.n == 1;
  ChannelForwardArgs view = a;
  view.shape = as_instance;
  if (one_sample) {
    view.running_mean = nullptr;
    view.running_var = nullptr;
    view.num_batches_tracked = nullptr;
  }
  forward_rows_once<T, InstanceTileParams>(
      view, l, "instance norm tiles launch",
      [&](InstanceTileParams& p) {
        set_instance_tile_geometry(p, as_instance, g, static_cast<int>(sizeof(T)));
        p.inv_count_minus_1 = 1.0f / static_cast<float>(as_instance.s - 1);
        if (one_sample) {
          p.running = RunningBlend{a.running_mean, a.running_var, a.num_batches_tracked,
                                   static_cast<float>(a.params.momentum),
                                   a.params.momentum_mode == NK_MOMENTUM_CUMULATIVE};
        }
      },
      [&](const InstanceTileParams& p, cudaStream_t stream) {
        launch_instance_tiles<T>(p, g, a.fusion.activation, stream);
      });
  if (one_sample && a.num_batches_tracked != nullptr) {
    dev::launch_dependent(advance_counter, 1, 1, 0, static_cast<cudaStream_t>(l.stream),
                          a.num_batches_tracked);
    dev::check_cuda(cudaGetLastError(), "channel norm counter launch");
  }
}

// The instance split tiles' workspace: the rows' statistics (N > 1), then part_stats_bytes.
size_t split_rows_bytes(const ChannelShape& as_instance) {
  return as_instance.n == 1 ? 0 : row_stats_workspace(as_instance.n * as_instance.c, as_instance);
}
size_t split_tiles_workspace(const ChannelShape& as_instance, const GroupTilePlan& g) {
  return split_rows_bytes(as_instance) + part_stats_bytes(g);
}

// Instance norm in NHWC (batch norm as one sample) where a tile exceeds a block: each tile's parts
// (channel_norm_split_tile.cuh) as one cluster where the device has them, else in two launches
// through the workspace; otherwise as forward_instance_tiles.
template <class T>
void forward_split_tiles(const ChannelForwardArgs& a, const ChannelShape& as_instance,
                         const GroupTilePlan& g, const Launch& l) {
  const bool one_sample = as_instance.n == 1;
  ChannelForwardArgs view = a;
  view.shape = as_instance;
  if (one_sample) {
    view.running_mean = nullptr;
    view.running_var = nullptr;
    view.num_batches_tracked = nullptr;
  }
  forward_rows_once<T, SplitTileParams>(
      view, l, "split tiles launch",
      [&](SplitTileParams& p) {
        set_instance_tile_geometry(p, as_instance, g, static_cast<int>(sizeof(T)));
        p.inv_count_minus_1 = 1.0f / static_cast<float>(as_instance.s - 1);
        if (one_sample) {
          p.running = RunningBlend{a.running_mean, a.running_var, a.num_batches_tracked,
                                   static_cast<float>(a.params.momentum),
                                   a.params.momentum_mode == NK_MOMENTUM_CUMULATIVE};
        }
        p.head_packs = split_head_packs(g, static_cast<int>(sizeof(T)));
        p.parts = g.parts;
        p.part_positions = static_cast<int>(g.part_positions);
        p.part_stats = reinterpret_cast<float2*>(static_cast<unsigned char*>(l.workspace) +
                                                 split_rows_bytes(as_instance));
      },
      [&](const SplitTileParams& p, cudaStream_t stream) {
        launch_split_tiles<T>(p, g, a.fusion.activation, stream);
      });
  if (one_sample && a.num_batches_tracked != nullptr) {
    dev::launch_dependent(advance_counter, 1, 1, 0, static_cast<cudaStream_t>(l.stream),
                          a.num_batches_tracked);
    dev::check_cuda(cudaGetLastError(), "channel norm counter launch");
  }
}

// The batch split tiles' workspace of the two-launch form: every part's statistics and x0 a
// channel, reserved whether or not the device takes clusters (the size depends on the shape only).
size_t batch_part_stats_bytes(const ChannelShape& s, const BatchTilePlan& b) {
  return align256(static_cast<size_t>(s.c * (b.parts + 1)) * sizeof(float2));
}

// Batch norm in NCHW, a block per channel (channel_norm_batch_tile.cuh), which blends the running
// statistics itself; a launch after the blocks advances the counter. No workspace; where a
// channel's runs exceed a block, its parts (a block each) as one cluster where the device has
// them, else in two launches through the workspace (batch_part_stats_bytes).
template <class T>
void forward_batch_tiles(const ChannelForwardArgs& a, const BatchTilePlan& b, const Launch& l) {
  const ChannelShape& s = a.shape;
  auto stream = static_cast<cudaStream_t>(l.stream);
  BatchTileParams p{};
  set_forward_io(p, a);
  // y == z needs nothing: z's packs not wholly in a run are read element by element.
  set_batch_tile_geometry(p, s, b, static_cast<int>(sizeof(T)), a.y == a.x);
  p.parts = b.parts;
  p.part_runs = b.part_runs;
  if (b.parts > 1) {
    p.head_packs = batch_split_head_packs(b, static_cast<int>(sizeof(T)), sizeof(SplitStatScratch));
    p.part_stats = static_cast<float2*>(l.workspace);
  }
  p.eps = static_cast<float>(a.params.eps);
  p.inv_count = 1.0f / static_cast<float>(s.n * s.s);
  p.inv_count_minus_1 = 1.0f / static_cast<float>(s.n * s.s - 1);
  p.unbiased = a.params.running_var == NK_RUNNING_VAR_UNBIASED;
  p.running = RunningBlend{a.running_mean, a.running_var, a.num_batches_tracked,
                           static_cast<float>(a.params.momentum),
                           a.params.momentum_mode == NK_MOMENTUM_CUMULATIVE};
  constexpr int E = 16 / static_cast<int>(sizeof(T));
  clear_mask(a, s.s % E == 0 ? E : 1, stream);  // runs that are not whole packs OR their bits in
  launch_batch_tiles<T>(p, b, s.c, a.fusion.activation, stream);
  dev::check_cuda(cudaGetLastError(), "batch norm tiles launch");
  if (a.num_batches_tracked != nullptr) {
    dev::launch_dependent(advance_counter, 1, 1, 0, stream, a.num_batches_tracked);
    dev::check_cuda(cudaGetLastError(), "channel norm counter launch");
  }
}

template <class T>
void forward(const ChannelForwardArgs& a, const Launch& l) {
  const ChannelShape& s = a.shape;
  const bool training = a.params.phase == NK_TRAINING;
  if (training) {  // in the order bench/channel_paths.cpp names them
    const ResidentPlan r = plan_resident_rows(s, sizeof(T));
    if (r.use) return forward_resident_rows<T>(a, r, l);
    const ShortRowsPlan sr = plan_short_rows(s, sizeof(T));
    if (sr.use) return forward_in_registers<T>(a, sr, l);
    const RowGroupsPlan rg = plan_row_groups(s, sizeof(T));
    if (rg.use) return forward_in_row_groups<T>(a, rg, l);
    const GroupTilePlan g = plan_group_tiles(s, sizeof(T));
    if (g.use) return forward_group_tiles<T>(a, g, l);
    const ChannelShape as_instance = instance_tile_shape(s);
    const GroupTilePlan it = plan_instance_tiles(as_instance, sizeof(T));
    if (it.use && it.parts > 1) return forward_split_tiles<T>(a, as_instance, it, l);
    if (it.use) return forward_instance_tiles<T>(a, as_instance, it, l);
    const BatchTilePlan bt = plan_batch_tiles(s, sizeof(T));
    if (bt.use) return forward_batch_tiles<T>(a, bt, l);
  }
  const bool vector_access = dev::aligned16(a.x) && dev::aligned16(a.y) && dev::aligned16(a.z);
  const ChannelPlan plan = plan_channel_norm(s, sizeof(T), vector_access);
  auto stream = static_cast<cudaStream_t>(l.stream);
  const Layout lay = layout_of(plan, coef_units(s), training);
  auto* base = static_cast<unsigned char*>(l.workspace);
  CoefArrays coefs{};
  clear_apply_mask<T>(a, plan, training, l);
  if (training) {
    auto* partials = reinterpret_cast<dev::Welford*>(base);
    coefs = carve_coefs(base + lay.partials, lay.coefs);
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
                              a.weight,
                              a.bias,
                              coefs,
                              a.save_mean,
                              a.save_invstd};
    if (s.kind == ChannelNorm::kBatch) {
      const int lanes = finalize_channel_lanes(plan.chunks, kMergeAhead);
      // A channel a block, or two where a warp takes each (as finalize_instance), so that small C
      // still spreads over many SMs: 256-thread blocks of 8 channels at C = 512 took 9.4 us
      // under ncu on the H200 where 64-thread ones took 8.2.
      const int threads = lanes > 64 ? lanes : 64;
      const int64_t per_block = threads / lanes;
      dev::launch_dependent(finalize_batch<T>,
                            static_cast<unsigned>((s.c + per_block - 1) / per_block), threads, 0,
                            stream, f, lanes);
    } else if (s.kind == ChannelNorm::kGroup) {
      const int lanes = finalize_channel_lanes(s.c / s.groups * plan.chunks, kMergeAhead);
      const int threads = lanes > 64 ? lanes : 64;
      const int64_t per_block = threads / lanes, units = s.n * s.groups;
      dev::launch_dependent(finalize_group<T>,
                            static_cast<unsigned>((units + per_block - 1) / per_block), threads, 0,
                            stream, f, lanes);
    } else {
      const InstanceFinalizeShape shape = finalize_instance_shape(s.n, plan.chunks, kMergeAhead);
      const int threads = shape.threads > 64 ? shape.threads : 64;
      const int64_t per_block = threads / shape.threads;
      dev::launch_dependent(finalize_instance<T>,
                            static_cast<unsigned>((s.c + per_block - 1) / per_block), threads, 0,
                            stream, f, shape);
    }
    dev::check_cuda(cudaGetLastError(), "channel norm finalize launch");
  }
  launch_apply<T>(a, plan, training, coefs, training ? a.num_batches_tracked : nullptr, l);
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
  dev::launch_dependent(finalize_local<T>, static_cast<unsigned>((s.c + 7) / 8), 256, 0, stream,
                        partials, x, plan, count, mean, m2);
  dev::check_cuda(cudaGetLastError(), "batch norm local statistics finalize launch");
}

template <class T>
void forward_global(const ChannelForwardArgs& a, const GlobalStats& g, const Launch& l) {
  const ChannelShape& s = a.shape;
  const CoefArrays coefs =
      carve_coefs(static_cast<unsigned char*>(l.workspace), align256(s.c * sizeof(float)));
  ChannelPlan plan{};
  if (s.numel() > 0) {
    plan = plan_channel_norm(s, sizeof(T), dev::aligned16(a.x) && dev::aligned16(a.y));
    clear_apply_mask<T>(a, plan, true, l);
  }
  const GlobalParams f{s.c,
                       g,
                       static_cast<float>(a.params.eps),
                       static_cast<float>(a.params.momentum),
                       a.params.momentum_mode == NK_MOMENTUM_CUMULATIVE,
                       a.params.running_var == NK_RUNNING_VAR_UNBIASED,
                       a.running_mean,
                       a.running_var,
                       a.num_batches_tracked,
                       a.weight,
                       a.bias,
                       coefs,
                       a.save_mean,
                       a.save_invstd};
  dev::launch_dependent(finalize_global, 1, 256, 0, static_cast<cudaStream_t>(l.stream), f);
  dev::check_cuda(cudaGetLastError(), "synchronized batch norm finalize launch");
  if (s.numel() == 0) return;  // an empty shard still takes part in the running update
  launch_apply<T>(a, plan, true, coefs, nullptr, l);
}

}  // namespace

size_t channel_norm_forward_workspace_size(const ChannelForwardArgs& a) {
  size_t bytes = 0;
  const int elem = static_cast<int>(dtype_size(a.shape.dtype));
  if (a.params.phase == NK_TRAINING) {
    const ResidentPlan r = plan_resident_rows(a.shape, elem);
    if (r.use) return row_stats_workspace(r.rows, a.shape) + resident_part_stats_bytes(r);
    const ShortRowsPlan sr = plan_short_rows(a.shape, elem);
    if (sr.use) return row_stats_workspace(sr.rows, a.shape);
    const RowGroupsPlan rg = plan_row_groups(a.shape, elem);
    if (rg.use) return row_stats_workspace(rg.rows, a.shape);
    const GroupTilePlan g = plan_group_tiles(a.shape, elem);
    if (g.use) return g.parts > 1 ? part_stats_bytes(g) : 0;
    const ChannelShape as_instance = instance_tile_shape(a.shape);
    const GroupTilePlan it = plan_instance_tiles(as_instance, elem);
    if (it.use && it.parts > 1) return split_tiles_workspace(as_instance, it);
    if (it.use) {
      // One sample blends the running statistics in the kernel: no row statistics.
      if (as_instance.n == 1) return 0;
      return row_stats_workspace(as_instance.n * as_instance.c, as_instance);
    }
    const BatchTilePlan bt = plan_batch_tiles(a.shape, elem);
    if (bt.use) return bt.parts > 1 ? batch_part_stats_bytes(a.shape, bt) : 0;
  }
  for (bool vector_access : {true, false}) {
    const ChannelPlan plan = plan_channel_norm(a.shape, elem, vector_access);
    const size_t need = layout_of(plan, coef_units(a.shape), a.params.phase == NK_TRAINING).total;
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
