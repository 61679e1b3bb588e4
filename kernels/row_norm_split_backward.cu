// dx of layer norm and RMS norm for few long rows (fewer than kSplitRowsBelow of more than
// kSplitMinCols elements, 16-byte packs): the generic path's block a row would leave most SMs idle,
// so each row is split into the forward's slices (kSplitBlock threads x kSplitPacks packs), one
// block a slice, in two kernels.
//
// backward_split_sums reads its slice of x and dy once and writes the slice's sums of g = dy *
// gamma and of g * xhat (xhat from the saved mean and rstd).
//
// backward_split_dx issues the loads of its slice, then its first warp adds the row's slice sums
// while they are in flight: lane l adds sums l, l + 32, ... in turn, and the warp adds its lanes
// in one butterfly. The order depends on the slice count only, so every block of the row holds the
// same two means, and dx has the same bits on every GPU. The second read of the slice comes from
// L2 (the first kernel read these few rows just before); dh (dx and/or dresidual, dh_extra added)
// is stored as on the other paths.
#include <cstdint>

#include "common/check.cuh"
#include "common/dependent_launch.cuh"
#include "common/device_types.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "row_norm_backward_io.cuh"
#include "row_norm_split_backward.hpp"

namespace nk::cuda {
namespace {

// The row of the block (blockIdx.y), the first column of its slice (blockIdx.x) and its element
// count.
struct Slice {
  int64_t row;
  int64_t first;
  int count;
};

__device__ __forceinline__ Slice block_slice(const BackwardParams& p, int64_t slice_elems) {
  const int64_t first = blockIdx.x * slice_elems;
  const int64_t left = p.cols - first;
  return Slice{blockIdx.y, first, static_cast<int>(left < slice_elems ? left : slice_elems)};
}

template <class T, class W, int E>
__global__ void __launch_bounds__(kSplitBlock, kSplitMinBlocks)
    backward_split_sums(BackwardParams p, float2* sums, int64_t slice_elems) {
  dev::enter_chain();
  __shared__ float scratch[64];
  const Slice s = block_slice(p, slice_elems);
  const int64_t base = s.row * p.cols + s.first;
  const float mean = p.rms ? 0.0f : p.save_mean[s.row], rstd = p.save_rstd[s.row];
  float v[kSplitPacks][E] = {}, d[kSplitPacks][E] = {};
#pragma unroll
  for (int k = 0; k < kSplitPacks; ++k) {
    const int col = (threadIdx.x + k * kSplitBlock) * E;
    if (col < s.count) {
      dev::load_floats<T, E>(static_cast<const T*>(p.x) + base + col, v[k]);
      dev::load_floats<T, E>(static_cast<const T*>(p.dy) + base + col, d[k]);
    }
  }
  dev::Floats<2> total{};
#pragma unroll
  for (int k = 0; k < kSplitPacks; ++k) {
    const int col = (threadIdx.x + k * kSplitBlock) * E;
    if (col < s.count) {
      float w[E];
      load_gamma<W, E>(p, s.first + col, w);
#pragma unroll
      for (int i = 0; i < E; ++i) {
        const float xhat = (v[k][i] - mean) * rstd, g = d[k][i] * w[i];
        total.v[0] += g;
        total.v[1] += g * xhat;
      }
    }
  }
  total = dev::block_sum<2>(total, scratch);
  if (threadIdx.x == 0) sums[s.row * gridDim.x + blockIdx.x] = make_float2(total.v[0], total.v[1]);
}

template <class T, class W, int E>
__global__ void __launch_bounds__(kSplitBlock, kSplitMinBlocks)
    backward_split_dx(BackwardParams p, const float2* sums, int64_t slice_elems) {
  dev::enter_chain();
  const Slice s = block_slice(p, slice_elems);
  const int64_t base = s.row * p.cols + s.first;
  // The slice's packs as stored (zeroed: packs past the slice's end are never loaded), in flight
  // during the sum below.
  dev::Pack<T, E> x[kSplitPacks]{}, dy[kSplitPacks]{};
#pragma unroll
  for (int k = 0; k < kSplitPacks; ++k) {
    const int col = (threadIdx.x + k * kSplitBlock) * E;
    if (col < s.count) {
      x[k] = load_pack<T, E>(static_cast<const T*>(p.x) + base + col);
      dy[k] = load_pack<T, E>(static_cast<const T*>(p.dy) + base + col);
    }
  }
  __shared__ float row_means[2];
  if (threadIdx.x < 32) {
    const float2* row_sums = sums + s.row * gridDim.x;
    dev::Floats<2> total{};
    for (int64_t i = threadIdx.x; i < gridDim.x; i += 32) {
      const float2 v = row_sums[i];
      total.v[0] += v.x;
      total.v[1] += v.y;
    }
    total = dev::group_sum<2>(total, 32);
    if (threadIdx.x == 0) {
      const float inv_cols = 1.0f / static_cast<float>(p.cols);
      row_means[0] = p.rms ? 0.0f : total.v[0] * inv_cols;
      row_means[1] = total.v[1] * inv_cols;
    }
  }
  __syncthreads();
  const float mean = p.rms ? 0.0f : p.save_mean[s.row], rstd = p.save_rstd[s.row];
  const DxCoefficients dxk = dx_coefficients(rstd, row_means[0], row_means[1]);
#pragma unroll
  for (int k = 0; k < kSplitPacks; ++k) {
    const int col = (threadIdx.x + k * kSplitBlock) * E;
    if (col < s.count) {
      float w[E], dh[E];
      load_gamma<W, E>(p, s.first + col, w);
#pragma unroll
      for (int i = 0; i < E; ++i) {
        dh[i] = dx_of(dxk, dev::element(dy[k], i) * w[i], dev::element(x[k], i) - mean);
      }
      store_dh<T, E>(p, base + col, dh);
    }
  }
}

}  // namespace

void row_norm_split_backward(const BackwardParams& p, const RowShape& s, const RowSplit& split,
                             void* sums, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(split.slices), static_cast<unsigned>(s.rows));
  auto* row_sums = static_cast<float2*>(sums);
  dev::dispatch_row_dtypes(s, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    constexpr int kE = 16 / sizeof(T);
    dev::launch_dependent(backward_split_sums<T, W, kE>, grid, kSplitBlock, 0, stream, p, row_sums,
                          split.slice_elems);
    dev::check_cuda(cudaGetLastError(), "row norm split backward launch (sums)");
    dev::launch_dependent(backward_split_dx<T, W, kE>, grid, kSplitBlock, 0, stream, p, row_sums,
                          split.slice_elems);
    dev::check_cuda(cudaGetLastError(), "row norm split backward launch (dx)");
  });
}

}  // namespace nk::cuda
