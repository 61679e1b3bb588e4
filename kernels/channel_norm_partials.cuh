// Per-(n, c) partial reductions over S for batch, instance and group norm (the layouts and chunks
// of channel_norm_plan.hpp). An Op supplies the state and what one element adds to it:
//   using State; static constexpr bool kReadsDy;
//   State identity() const; State merge(State lower, State higher) const;
//   Local local(int64_t n, int64_t c) const;   // per-(n, c) context, with
//   void Local::push(State&, float x, float dy) const;
// The forward reduces Welford states of x; the backward sums dy and dy * x-hat. Partials are merged
// in a fixed order (block_merge, or a fixed tree over the rows), so results repeat bit for bit.
#pragma once

#include <cstdint>

#include "channel_norm_plan.hpp"
#include "common/reduce.cuh"
#include "common/vec.cuh"

namespace nk::cuda {

// The statistic that (n, c) belongs to: c (batch), n*C + c (instance), n*G + c/(C/G) (group).
__device__ __forceinline__ int64_t stat_index(ChannelNorm kind, int64_t n, int64_t c,
                                              int64_t channels, int64_t groups) {
  return kind == ChannelNorm::kBatch      ? c
         : kind == ChannelNorm::kInstance ? n * channels + c
                                          : n * groups + c / (channels / groups);
}

// Rows layout (NCHW, S > 1): a warp per short row, else a block per (row, chunk); persistent
// grid-stride over rows or (row, chunk) items.
template <class Op, class T, int E, bool kWarpPerRow>
__global__ void __launch_bounds__(kPartialBlock)
    partials_rows(Op op, const T* x, const T* dy, ChannelPlan plan, typename Op::State* out) {
  using State = typename Op::State;
  __shared__ State scratch[32];
  const int64_t rows = plan.n * plan.c;
  auto merge = [&](State a, State b) { return op.merge(a, b); };
  if constexpr (kWarpPerRow) {
    const int lane = threadIdx.x % 32, warps = kPartialBlock / 32;
    const int64_t packs = plan.s / E;
    for (int64_t row = blockIdx.x * int64_t{warps} + threadIdx.x / 32; row < rows;
         row += int64_t{gridDim.x} * warps) {
      const auto local = op.local(row / plan.c, row % plan.c);
      State st = op.identity();
      for (int64_t pack = lane; pack < packs; pack += 32) {
        float xv[E], dv[E] = {};
        dev::load_floats<T, E>(x + row * plan.s + pack * E, xv);
        if constexpr (Op::kReadsDy) dev::load_floats<T, E>(dy + row * plan.s + pack * E, dv);
#pragma unroll
        for (int i = 0; i < E; ++i) local.push(st, xv[i], dv[i]);
      }
      st = dev::warp_merge(st, lane, 32, merge);
      if (lane == 0) out[row] = st;  // one chunk: partial_index(n, c, 0) == row
    }
  } else {
    const int64_t items = rows * plan.chunks;
    for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
      const int64_t row = item / plan.chunks, chunk = item % plan.chunks;
      const int64_t begin = chunk * plan.chunk_len / E;
      const int64_t end = (chunk * plan.chunk_len + plan.chunk_len < plan.s
                               ? chunk * plan.chunk_len + plan.chunk_len
                               : plan.s) /
                          E;
      const auto local = op.local(row / plan.c, row % plan.c);
      State st = op.identity();
      for (int64_t pack = begin + threadIdx.x; pack < end; pack += kPartialBlock) {
        float xv[E], dv[E] = {};
        dev::load_floats<T, E>(x + row * plan.s + pack * E, xv);
        if constexpr (Op::kReadsDy) dev::load_floats<T, E>(dy + row * plan.s + pack * E, dv);
#pragma unroll
        for (int i = 0; i < E; ++i) local.push(st, xv[i], dv[i]);
      }
      st = dev::block_merge(st, scratch, op.identity(), merge);
      if (threadIdx.x == 0) out[item] = st;  // item == partial_index(n, c, chunk)
    }
  }
}

// Channels layout (NHWC, or S == 1): 256 threads as plan.block_rows() rows of plan.lanes lanes;
// lane tx owns channel pack blockIdx.x * lanes + tx, row ty walks s = ty, ty + rows, ... of one
// (n, chunk) item; the rows are then merged as a fixed-order tree in shared memory.
template <class Op, class T, int E>
__global__ void __launch_bounds__(kPartialBlock)
    partials_channels(Op op, const T* x, const T* dy, ChannelPlan plan, typename Op::State* out) {
  using State = typename Op::State;
  __shared__ State staged[kPartialBlock][E];
  const int lanes = plan.lanes, rows = kPartialBlock / lanes;
  const int tx = threadIdx.x % lanes, ty = threadIdx.x / lanes;
  const int64_t pack = int64_t{blockIdx.x} * lanes + tx;
  const bool valid = pack * E < plan.c;
  const int64_t items = plan.n * plan.chunks;
  for (int64_t item = blockIdx.y; item < items; item += gridDim.y) {
    const int64_t n = item / plan.chunks, chunk = item % plan.chunks;
    const int64_t s_begin = chunk * plan.chunk_len;
    const int64_t s_end = s_begin + plan.chunk_len < plan.s ? s_begin + plan.chunk_len : plan.s;
    State st[E];
#pragma unroll
    for (int i = 0; i < E; ++i) st[i] = op.identity();
    if (valid) {
      decltype(op.local(0, 0)) local[E];
#pragma unroll
      for (int i = 0; i < E; ++i) local[i] = op.local(n, pack * E + i);
      for (int64_t s = s_begin + ty; s < s_end; s += rows) {
        const int64_t at = (n * plan.s + s) * plan.c + pack * E;
        float xv[E], dv[E] = {};
        dev::load_floats<T, E>(x + at, xv);
        if constexpr (Op::kReadsDy) dev::load_floats<T, E>(dy + at, dv);
#pragma unroll
        for (int i = 0; i < E; ++i) local[i].push(st[i], xv[i], dv[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < E; ++i) staged[threadIdx.x][i] = st[i];
    __syncthreads();
    for (int stride = rows / 2; stride > 0; stride /= 2) {  // rows is a power of two
      if (ty < stride) {
#pragma unroll
        for (int i = 0; i < E; ++i) {
          staged[threadIdx.x][i] =
              op.merge(staged[threadIdx.x][i], staged[threadIdx.x + stride * lanes][i]);
        }
      }
      __syncthreads();
    }
    if (ty == 0 && valid) {
#pragma unroll
      for (int i = 0; i < E; ++i)
        out[item * plan.c + pack * E + i] = staged[tx][i];  // partial_index
    }
    __syncthreads();
  }
}

// Launches the partial reduction the plan asks for.
template <class Op, class T>
void launch_partials(const Op& op, const T* x, const T* dy, const ChannelPlan& plan, int sm_count,
                     typename Op::State* out, cudaStream_t stream) {
  constexpr int kE = 16 / sizeof(T);
  const int64_t cap = int64_t{sm_count} * 16;  // persistent grids: enough blocks to fill the GPU
  auto blocks = [&](int64_t want) { return static_cast<unsigned>(want < cap ? want : cap); };
  if (plan.rows_layout) {
    const int64_t rows = plan.n * plan.c;
    const unsigned grid = plan.warp_per_row ? blocks((rows + 7) / 8) : blocks(rows * plan.chunks);
    if (plan.pack_elems == 1) {
      if (plan.warp_per_row) {
        partials_rows<Op, T, 1, true><<<grid, kPartialBlock, 0, stream>>>(op, x, dy, plan, out);
      } else {
        partials_rows<Op, T, 1, false><<<grid, kPartialBlock, 0, stream>>>(op, x, dy, plan, out);
      }
    } else if (plan.warp_per_row) {
      partials_rows<Op, T, kE, true><<<grid, kPartialBlock, 0, stream>>>(op, x, dy, plan, out);
    } else {
      partials_rows<Op, T, kE, false><<<grid, kPartialBlock, 0, stream>>>(op, x, dy, plan, out);
    }
  } else {
    const int64_t tiles = (plan.c / plan.pack_elems + plan.lanes - 1) / plan.lanes;
    const int64_t items = plan.n * plan.chunks;
    const dim3 grid(static_cast<unsigned>(tiles),
                    static_cast<unsigned>(items < 65535 ? items : 65535));
    if (plan.pack_elems == 1) {
      partials_channels<Op, T, 1><<<grid, kPartialBlock, 0, stream>>>(op, x, dy, plan, out);
    } else {
      partials_channels<Op, T, kE><<<grid, kPartialBlock, 0, stream>>>(op, x, dy, plan, out);
    }
  }
}

}  // namespace nk::cuda
