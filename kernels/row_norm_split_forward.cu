// Layer norm and RMS norm forward of few long rows (fewer than kSplitRowsBelow of more than
// kSplitMinCols elements, 16-byte packs): one block a row would leave most SMs idle, so each row is
// split into slices of kSplitBlock threads x kSplitPacks packs, one block a slice, in two kernels.
//
// forward_split_statistics reads its slice of h (x, or x + residual + bias_in rounded to T) once
// and writes one Welford partial of h - h0: the slice's count, its mean, and the sum of squared
// deviations from that mean, both exact two-pass sums over the registers (RMS norm: mean 0 and the
// sum of squares, which Chan's merge then simply adds). h0, the row's first element, is the layer
// norm's shift, as on the other paths; the slice-0 block keeps it in the workspace, where the
// apply kernel reads it (with y == x, x[row, 0] is overwritten while other slices still need it).
//
// forward_split_apply issues the loads of its slice, then its first warp merges the row's
// partials while they are in flight (with a residual add, once h is formed): lane l merges
// partials l, l + 32, ... in turn, and the warp merges its lanes in a fixed butterfly
// (welford.cuh). The order depends on the slice count only, so every block of the row holds the
// same mean and rstd, and the bits do not depend on the GPU or the schedule. The second read of
// the slice comes from L2 (the first kernel read these few rows just before); h is stored here, y
// as on the other paths, and the slice-0 block saves the row's mean and rstd.
#include <cstdint>

#include "common/check.cuh"
#include "common/dependent_launch.cuh"
#include "common/device_types.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "common/welford.cuh"
#include "row_norm_forward_io.cuh"
#include "row_norm_split_forward.hpp"

namespace nk::cuda {
namespace {

static_assert(sizeof(dev::Welford) == kSplitPartialBytes, "the workspace holds Welford states");

// The row of the block (blockIdx.y), the first column of its slice (blockIdx.x) and its element
// count.
struct Slice {
  int64_t row;
  int64_t first;
  int count;
};

__device__ __forceinline__ Slice block_slice(const ForwardParams& p, int64_t slice_elems) {
  const int64_t first = blockIdx.x * slice_elems;
  const int64_t left = p.cols - first;
  return Slice{blockIdx.y, first, static_cast<int>(left < slice_elems ? left : slice_elems)};
}

// h0 of the row (layer norm's shift; 0 for RMS norm), read without storing h.
template <class T, class W>
__device__ __forceinline__ float row_shift(ForwardParams p, int64_t base) {
  if (p.rms) return 0.0f;
  p.h = nullptr;
  float first[1];
  load_input<T, W, 1>(p, base, 0, first);
  return first[0];
}

// Where each row's shift is kept, after the partials (RowSplit::workspace_bytes).
__device__ __forceinline__ float* row_shifts(dev::Welford* partials, int64_t rows) {
  return reinterpret_cast<float*>(partials + rows * gridDim.x);
}
__device__ __forceinline__ const float* row_shifts(const dev::Welford* partials, int64_t rows) {
  return reinterpret_cast<const float*>(partials + rows * gridDim.x);
}

template <class T, class W, int E, bool kFused>
__global__ void __launch_bounds__(kSplitBlock, kSplitMinBlocks)
    forward_split_statistics(ForwardParams p, dev::Welford* partials, int64_t slice_elems) {
  dev::enter_chain();
  without_fusion<kFused>(p);
  p.h = nullptr;  // the apply kernel stores h
  __shared__ float scratch[32];
  const Slice s = block_slice(p, slice_elems);
  const int64_t base = s.row * p.cols;
  const float shift = row_shift<T, W>(p, base);
  float v[kSplitPacks][E] = {};
  bool has[kSplitPacks];
#pragma unroll
  for (int k = 0; k < kSplitPacks; ++k) {
    const int col = (threadIdx.x + k * kSplitBlock) * E;
    has[k] = col < s.count;
    if (has[k]) load_input<T, W, E>(p, base, s.first + col, v[k]);
  }
  float mean = 0.0f;
  if (!p.rms) {
    dev::Floats<1> sum{};
#pragma unroll
    for (int k = 0; k < kSplitPacks; ++k) {
      if (has[k]) {
#pragma unroll
        for (int i = 0; i < E; ++i) {
          v[k][i] -= shift;
          sum.v[0] += v[k][i];
        }
      }
    }
    // Any mean makes the squares below exact up to count * (its error)^2: 2 ulp are enough, and
    // the fast division keeps the slow path's call out of the kernel.
    mean = __fdividef(dev::block_sum<1>(sum, scratch).v[0], static_cast<float>(s.count));
  }
  dev::Floats<1> squares{};
#pragma unroll
  for (int k = 0; k < kSplitPacks; ++k) {
    if (has[k]) {
#pragma unroll
      for (int i = 0; i < E; ++i) squares.v[0] += (v[k][i] - mean) * (v[k][i] - mean);
    }
  }
  const float m2 = dev::block_sum<1>(squares, scratch).v[0];
  if (threadIdx.x == 0) {
    partials[s.row * gridDim.x + blockIdx.x] = dev::Welford{s.count, mean, m2};
    if (blockIdx.x == 0) row_shifts(partials, p.rows)[s.row] = shift;
  }
}

template <class T, class W, int E, bool kFused>
__global__ void __launch_bounds__(kSplitBlock, kSplitMinBlocks)
    forward_split_apply(ForwardParams p, const dev::Welford* partials, int64_t slice_elems) {
  dev::enter_chain();
  without_fusion<kFused>(p);
  const Slice s = block_slice(p, slice_elems);
  const int64_t base = s.row * p.cols;
  // h0 as the statistics kernel read it: with y == x, the block of slice 0 may already have
  // overwritten it in x.
  const float shift = p.rms ? 0.0f : row_shifts(partials, p.rows)[s.row];
  // The slice's packs of h as stored (zeroed: packs past the slice's end are never loaded). Those
  // of x are in flight during the merge below; with a residual add h is computed, and stored when
  // asked for, first.
  dev::Pack<T, E> h[kSplitPacks]{};
#pragma unroll
  for (int k = 0; k < kSplitPacks; ++k) {
    const int col = (threadIdx.x + k * kSplitBlock) * E;
    if (col < s.count) h[k] = load_input_pack<T, W, E>(p, base, s.first + col);
  }

  // The first warp merges (each merge divides; the other warps would repeat it for nothing).
  __shared__ float row_stats[2];
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const dev::Welford* row_partials = partials + s.row * gridDim.x;
    dev::Welford total = dev::welford_empty();
    for (int64_t i = lane; i < gridDim.x; i += 32) {
      total = dev::welford_merge(total, row_partials[i]);
    }
    total = dev::warp_merge(total, lane, 32, dev::WelfordMerge{});
    if (lane == 0) {
      row_stats[0] = total.mean;
      row_stats[1] = rsqrtf(total.m2 / static_cast<float>(p.cols) + p.eps);
    }
  }
  __syncthreads();
  const float centre = row_stats[0], rstd = row_stats[1];

  unsigned amax_bits = 0;
#pragma unroll
  for (int k = 0; k < kSplitPacks; ++k) {
    const int col = (threadIdx.x + k * kSplitBlock) * E;
    if (col >= s.count) continue;
    float w[E], b[E], out[E];
    load_affine<W, E>(p, s.first + col, w, b);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      out[i] = ((dev::to_float(h[k].v[i]) - shift) - centre) * rstd * w[i] + b[i];
    }
    store_output<T, E>(p, base + s.first + col, out, amax_bits);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (p.save_mean) p.save_mean[s.row] = shift + centre;
    if (p.save_rstd) p.save_rstd[s.row] = rstd;
  }
  fold_amax(p, amax_bits);
}

}  // namespace

void row_norm_split_forward(const ForwardParams& p, const RowShape& s, bool fused,
                            const RowSplit& split, void* partials, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(split.slices), static_cast<unsigned>(s.rows));
  auto* states = static_cast<dev::Welford*>(partials);
  auto launch = [&](auto statistics, auto apply) {
    dev::launch_dependent(statistics, grid, kSplitBlock, 0, stream, p, states, split.slice_elems);
    dev::check_cuda(cudaGetLastError(), "row norm split forward launch (statistics)");
    dev::launch_dependent(apply, grid, kSplitBlock, 0, stream, p, states, split.slice_elems);
    dev::check_cuda(cudaGetLastError(), "row norm split forward launch (apply)");
  };
  dev::dispatch_row_dtypes(s, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    constexpr int kE = 16 / sizeof(T);
    if (fused) {
      launch(forward_split_statistics<T, W, kE, true>, forward_split_apply<T, W, kE, true>);
    } else {
      launch(forward_split_statistics<T, W, kE, false>, forward_split_apply<T, W, kE, false>);
    }
  });
}

}  // namespace nk::cuda
