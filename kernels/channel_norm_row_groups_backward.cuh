// Instance and group norm training backward with one read of x and dy where a statistic's row is
// above a 16-byte pack and below 4 KiB (plan_row_groups): a block stages the same R rows of x and
// of dy as the forward's block in shared memory, with their channels' weights (the forward's
// pairs), and the row's group of G lanes takes, with the saved mean and invstd, each channel's
// sums of du and du * x-hat (a sub-group of W lanes a channel, then a butterfly over those W),
// then
//   dx = w_c * invstd * du - c1 - (x - mean) * c2,
//   c1 = invstd * sum_g / L,  c2 = invstd^2 * sum_gx / L,
//   sum_g = sum over the row's channels c of w_c * sum du,  sum_gx likewise with du * x-hat,
// the formulas of the split passes (channel_norm_backward.cu), and du (the fused backward's dz),
// written over the staged x and dy; the block stores them in 16-byte packs. The channels' sums go
// to the [N, C] array that the finalize adds over n into dweight and dbias, as the other one-read
// kernels' do. y (ReLU without a mask) or z (SiLU with a residual) and the mask bits are read from
// memory element by element in both passes (the second read of the block's rows just read). The
// tree of every sum depends on L and S only, and the staged copy is the same whatever the
// pointers, so no bit depends on the pointers or the grid.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_act_grad.cuh"
#include "channel_norm_one_read_io.cuh"
#include "channel_norm_row_groups.cuh"
#include "common/dependent_launch.cuh"

namespace nk::cuda {

struct RowGroupsBackwardConfig {
  RowGroupsGeometry g;
  float inv_len;       // 1 / L
  bool vector_access;  // x, dy, dx and dz allow 16-byte accesses
};
struct RowGroupsBackwardParams : OneReadBackwardIo, RowGroupsBackwardConfig {};
static_assert(sizeof(RowGroupsBackwardConfig) <= kMaxKernelArgBytes,
              "a kernel argument within 128 bytes");

// Visits this lane's elements of its row, channel by channel: G / W channels at a time, a
// sub-group of W lanes each, lane l of a sub-group taking the channel's elements l, l + W, ...
// begin(j, has) before channel j's elements, visit(i) for each (i: the element of the row),
// end(j, has) after them. Every lane of the warp calls begin and end the same times (has false
// where it has no channel), so shuffles inside them are uniform; visit holds none.
template <class Begin, class Visit, class End>
__device__ __forceinline__ void walk_row_channels(const RowGroupsGeometry& g,
                                                  const RowGroupThread& t, Begin&& begin,
                                                  Visit&& visit, End&& end) {
  const int w_log2 = g.channel_lanes_log2;
  const int sub = t.lane >> w_log2, at = t.lane & ((1 << w_log2) - 1);
  const int per_batch = 1 << (g.lanes_log2 - w_log2);
  for (int b = 0; b < g.channel_batches; ++b) {
    const int j = b * per_batch + sub;
    const bool has = t.active && j < g.channels_per_row;
    begin(j, has);
    if (has) for_lane_elements(j * g.s, g.s, w_log2, at, visit);
    end(j, has);
  }
}

template <class T, int kSource, bool kZ>
__global__ void __launch_bounds__(kRowGroupsBlock)
    backward_row_groups(OneReadBackwardIo io, RowGroupsBackwardConfig config) {
  dev::enter_chain();
  const RowGroupsBackwardParams p{io, config};
  constexpr int E = 16 / sizeof(T);
  constexpr bool kAux = kSource == kFromY || (kSource == kSiluOfU && kZ);
  const RowGroupsGeometry& g = p.g;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* xs = reinterpret_cast<T*>(shared_bytes);  // x, then dx over it
  // dy, then du over it: whole packs after x's, addressed as packs so that the compiler sees them
  // 16-byte aligned (from xs + chunk it loaded dz's packs as single elements).
  T* dys = reinterpret_cast<T*>(reinterpret_cast<dev::Pack<T, E>*>(shared_bytes) + g.chunk / E);
  // (weight, SiLU's bias) pairs after dy's rows (whole packs, so 8-byte aligned).
  float2* coefs = reinterpret_cast<float2*>(dys + g.chunk);
  const RowGroupThread t = locate_row_group(g);
  const float* bias = kSource == kSiluOfU ? p.bias : nullptr;
  // The row's statistics and this thread's first pair load before the staging, to wait with it.
  const int row_index = t.row0 + t.r;
  const float mean = t.active ? p.save_mean[row_index] : 0.0f;
  const float invstd = t.active ? p.save_invstd[row_index] : 0.0f;
  const float2 first_coef = first_row_group_coef(g, t, p.weight, bias);
  stage_row_groups<T, 2>(
      {static_cast<const T*>(p.x) + t.first, static_cast<const T*>(p.dy) + t.first}, {xs, dys},
      t.count, p.vector_access);
  stage_row_group_coefs(g, t, p.weight, bias, first_coef, coefs);
  __syncthreads();

  const int64_t row_first = t.first + int64_t{t.r} * g.len;  // the row's first element
  T* xrow = xs + t.r * g.len;
  T* dyrow = dys + t.r * g.len;
  const float2* row_coefs = coefs + t.r * g.channels_per_row;
  struct Coef {
    float w, scale, bias;  // weight, invstd * weight, and SiLU's bias
  };
  Coef k{0.0f, 0.0f, 0.0f};
  auto load_coef = [&](int j, bool has) {
    if (has) {
      const float2 wb = row_coefs[j];
      k.w = wb.x;
      k.scale = invstd * k.w;
      k.bias = wb.y;
    }
  };
  // du of element i of the row (valid), with act' from the mask bit, y or z.
  auto du_at = [&](int i) {
    float aux = 0.0f;
    if constexpr (kSource == kFromMask) {
      aux = static_cast<float>(dev::load_mask<1>(p.mask, row_first + i));
    } else if constexpr (kAux) {
      aux = dev::to_float(static_cast<const T*>(p.aux)[row_first + i]);
    }
    return du_of<kSource, kZ>(dev::to_float(dyrow[i]), dev::to_float(xrow[i]), aux, mean, k.scale,
                              k.bias);
  };

  // Each channel's (sum du, sum du * x-hat) over its sub-group, stored by the sub-group's first
  // lane, which also adds them, weighted, to the row's totals (the other lanes add zeros).
  const int w = 1 << g.channel_lanes_log2;
  const bool sub_leader = (t.lane & (w - 1)) == 0;
  dev::Floats<2> sums{}, totals{};
  walk_row_channels(
      g, t,
      [&](int j, bool has) {
        load_coef(j, has);
        sums = dev::Floats<2>{};
      },
      [&](int i) {
        const float du = du_at(i);
        sums.v[0] += du;
        sums.v[1] = fmaf(du, dev::to_float(xrow[i]) - mean, sums.v[1]);
      },
      [&](int j, bool has) {
        sums = dev::group_sum<2>(sums, w);
        if (has && sub_leader) {
          const float t0 = sums.v[0], t1 = sums.v[1] * invstd;
          if (p.channel_sums) {
            p.channel_sums[int64_t{row_index} * g.channels_per_row + j] = make_float2(t0, t1);
          }
          totals.v[0] = fmaf(k.w, t0, totals.v[0]);
          totals.v[1] = fmaf(k.w, t1, totals.v[1]);
        }
      });
  totals = dev::group_sum<2>(totals, 1 << g.lanes_log2);
  const float c1 = invstd * totals.v[0] * p.inv_len;
  const float c2 = invstd * invstd * totals.v[1] * p.inv_len;
  walk_row_channels(
      g, t, load_coef,
      [&](int i) {
        const float du = du_at(i), xm = dev::to_float(xrow[i]) - mean;
        xrow[i] = dev::from_float<T>(fmaf(k.scale, du, fmaf(xm, -c2, -c1)));
        dyrow[i] = dev::from_float<T>(du);
      },
      [](int, bool) {});
  __syncthreads();
  if (p.dx != nullptr)
    store_row_groups<T>(xs, static_cast<T*>(p.dx) + t.first, t.count, p.vector_access);
  if (p.dz != nullptr)
    store_row_groups<T>(dys, static_cast<T*>(p.dz) + t.first, t.count, p.vector_access);
}

}  // namespace nk::cuda
