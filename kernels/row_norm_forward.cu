// Layer norm and RMS norm forward on the GPU.
//
// Rows up to 16384 elements live in registers (row_norm_tiling.hpp picks a lane group or a block
// per row): x is read from memory once, the statistics are the exact two-pass ones over the
// registers (mean, then the centred sum of squares), and y is written with the same 16-byte packs.
// Layer norm first shifts each row by its first element x0: x - x0 is exact for nearby values
// (Sterbenz), so with |mean| >> std the sums stay small and y keeps fp32 accuracy instead of
// inheriting the rounding of a mean near 1e4.
// Longer rows take the generic path: one block per row, Welford over memory, then a second read
// of the row to normalize (the row is usually still in L2). Both grids are persistent: at most as
// many blocks as fit on the device at once, each looping over rows. Instantiated per dtype, weight
// dtype and pack shape, never per hidden size.
#include <cstdint>

#include "common/check.cuh"
#include "common/device_types.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "common/welford.cuh"
#include "row_norm.hpp"
#include "row_norm_tiling.hpp"

namespace nk::cuda {
namespace {

struct ForwardParams {
  const void* x;
  const void* weight;
  const void* bias;
  void* y;
  float* save_mean;
  float* save_rstd;
  int64_t rows;
  int64_t cols;
  float eps;
  bool rms;
  int threads_per_row;
};

// One row per lane group (or per block) in registers; rows strided over a persistent grid.
template <class T, class W, int E, int P>
__global__ void __launch_bounds__(max_forward_block_threads(E* P), 1)
    forward_in_registers(ForwardParams p) {
  __shared__ float scratch[32];
  __shared__ float block_shift;
  const int tpr = p.threads_per_row;
  const int group = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int64_t rows_per_block = blockDim.x / tpr;
  const int packs = static_cast<int>(p.cols / E);
  const float inv_cols = 1.0f / static_cast<float>(p.cols);
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const W* weight = static_cast<const W*>(p.weight);
  const W* bias = static_cast<const W*>(p.bias);

  // Every thread runs the same number of iterations: lane-group shuffles and block barriers need
  // the whole warp and block; groups past the last row only contribute zeros.
  for (int64_t first = blockIdx.x * rows_per_block; first < p.rows;
       first += gridDim.x * rows_per_block) {
    const int64_t row = first + group;
    const bool active = row < p.rows;
    const T* xr = x + row * p.cols;
    float v[P][E] = {};
    dev::Floats<1> sum{};
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int pack = t + k * tpr;
      if (active && pack < packs) dev::load_floats<T, E>(xr + pack * E, v[k]);
    }
    // Layer norm: v becomes x - x0 (x0 is element 0, in thread 0 of the row) and the mean of the
    // shifted row is `centre`; RMS norm keeps x and centre 0.
    float shift = 0.0f, centre = 0.0f;
    if (!p.rms) {
      if (tpr <= 32) {
        shift = __shfl_sync(0xffffffffu, v[0][0], 0, tpr);
      } else {
        if (threadIdx.x == 0) block_shift = v[0][0];
        __syncthreads();
        shift = block_shift;
      }
      sum.v[0] = 0.0f;
#pragma unroll
      for (int k = 0; k < P; ++k) {
        if (active && t + k * tpr < packs) {
#pragma unroll
          for (int i = 0; i < E; ++i) {
            v[k][i] -= shift;
            sum.v[0] += v[k][i];
          }
        }
      }
      centre = dev::row_sum<1>(sum, tpr, scratch).v[0] * inv_cols;
    }
    dev::Floats<1> squares{};
#pragma unroll
    for (int k = 0; k < P; ++k) {
      if (active && t + k * tpr < packs) {
#pragma unroll
        for (int i = 0; i < E; ++i) squares.v[0] += (v[k][i] - centre) * (v[k][i] - centre);
      }
    }
    const float rstd = rsqrtf(dev::row_sum<1>(squares, tpr, scratch).v[0] * inv_cols + p.eps);
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int pack = t + k * tpr;
      if (active && pack < packs) {
        float w[E], b[E], out[E];
        dev::load_param<W, E>(weight ? weight + pack * E : nullptr, w, 1.0f);
        dev::load_param<W, E>(bias ? bias + pack * E : nullptr, b, 0.0f);
#pragma unroll
        for (int i = 0; i < E; ++i) out[i] = (v[k][i] - centre) * rstd * w[i] + b[i];
        dev::store_floats<T, E>(y + row * p.cols + pack * E, out);
      }
    }
    if (active && t == 0) {
      if (p.save_mean) p.save_mean[row] = shift + centre;
      if (p.save_rstd) p.save_rstd[row] = rstd;
    }
  }
}

// One block per row, any length: Welford over x - x0 (or the sum of squares for RMS) over memory,
// then a second pass that normalizes.
template <class T, class W, int E>
__global__ void __launch_bounds__(512) forward_generic(ForwardParams p) {
  __shared__ dev::Welford welford_scratch[32];
  __shared__ float scratch[32];
  const int64_t packs = p.cols / E;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const W* weight = static_cast<const W*>(p.weight);
  const W* bias = static_cast<const W*>(p.bias);
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const T* xr = x + row * p.cols;
    float shift = 0.0f, centre = 0.0f, var;
    if (p.rms) {
      dev::Floats<1> squares{};
      for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
        float v[E];
        dev::load_floats<T, E>(xr + pack * E, v);
#pragma unroll
        for (int i = 0; i < E; ++i) squares.v[0] += v[i] * v[i];
      }
      var = dev::block_sum<1>(squares, scratch).v[0] / static_cast<float>(p.cols);
    } else {
      shift = dev::to_float(xr[0]);  // as in the register path: Welford over x - x0
      dev::Welford s = dev::welford_empty();
      for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
        float v[E];
        dev::load_floats<T, E>(xr + pack * E, v);
#pragma unroll
        for (int i = 0; i < E; ++i) s = dev::welford_push(s, v[i] - shift);
      }
      s = dev::block_reduce(s, welford_scratch);
      centre = s.mean;
      var = dev::welford_biased_var(s);
    }
    const float rstd = rsqrtf(var + p.eps);
    for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
      float v[E], w[E], b[E];
      dev::load_floats<T, E>(xr + pack * E, v);
      dev::load_param<W, E>(weight ? weight + pack * E : nullptr, w, 1.0f);
      dev::load_param<W, E>(bias ? bias + pack * E : nullptr, b, 0.0f);
#pragma unroll
      for (int i = 0; i < E; ++i) v[i] = ((v[i] - shift) - centre) * rstd * w[i] + b[i];
      dev::store_floats<T, E>(y + row * p.cols + pack * E, v);
    }
    if (threadIdx.x == 0) {
      if (p.save_mean) p.save_mean[row] = shift + centre;
      if (p.save_rstd) p.save_rstd[row] = rstd;
    }
  }
}

// Persistent grid: no more blocks than are resident at once, and no more than there are rows.
template <class Kernel>
int grid_size(Kernel kernel, int block_threads, int64_t row_groups, int sm_count) {
  int per_sm = 0;
  dev::check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block_threads, 0),
                  "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  const int64_t resident = static_cast<int64_t>(per_sm > 0 ? per_sm : 1) * sm_count;
  return static_cast<int>(row_groups < resident ? row_groups : resident);
}

template <class Kernel>
void launch(Kernel kernel, const RowTiling& tiling, const ForwardParams& p, const Launch& l) {
  const int64_t row_groups = (p.rows + tiling.rows_per_block() - 1) / tiling.rows_per_block();
  const int grid = grid_size(kernel, tiling.block_threads, row_groups, l.sm_count);
  kernel<<<grid, tiling.block_threads, 0, static_cast<cudaStream_t>(l.stream)>>>(p);
  dev::check_cuda(cudaGetLastError(), "row norm forward launch");
}

template <class T, class W>
void forward(const ForwardParams& p, const RowTiling& tiling, const Launch& l) {
  constexpr int kE = 16 / sizeof(T);
  if (!tiling.in_registers) {
    if (tiling.pack_elems == 1) {
      launch(forward_generic<T, W, 1>, tiling, p, l);
    } else {
      launch(forward_generic<T, W, kE>, tiling, p, l);
    }
    return;
  }
  if (tiling.pack_elems == 1) return launch(forward_in_registers<T, W, 1, 8>, tiling, p, l);
  switch (tiling.packs_per_thread) {
    case 1:
      return launch(forward_in_registers<T, W, kE, 1>, tiling, p, l);
    case 2:
      return launch(forward_in_registers<T, W, kE, 2>, tiling, p, l);
    case 4:
      return launch(forward_in_registers<T, W, kE, 4>, tiling, p, l);
    default:
      return launch(forward_in_registers<T, W, kE, 8>, tiling, p, l);
  }
}

}  // namespace

size_t row_norm_forward_workspace_size(const RowForwardArgs&) { return 0; }

void row_norm_forward(const RowForwardArgs& a, const Launch& l) {
  const RowShape& s = a.shape;
  const int elem = static_cast<int>(dtype_size(s.dtype));
  const bool vector_access = s.cols % (16 / elem) == 0 && dev::aligned16(a.x) &&
                             dev::aligned16(a.y) && dev::aligned16(a.weight) &&
                             dev::aligned16(a.bias);
  const RowTiling tiling = choose_row_tiling(s.cols, elem, vector_access);
  const ForwardParams p{a.x,
                        a.weight,
                        a.bias,
                        a.y,
                        a.save_mean,
                        a.save_rstd,
                        s.rows,
                        s.cols,
                        static_cast<float>(a.eps),
                        s.rms,
                        tiling.threads_per_row};
  dev::dispatch_row_dtypes(
      s, [&](auto t, auto w) { forward<decltype(t), decltype(w)>(p, tiling, l); });
}

}  // namespace nk::cuda
