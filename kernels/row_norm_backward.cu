// Layer norm and RMS norm backward on the GPU.
//
// Per row, with g = dy * weight and xhat = (x - mean) * rstd from the saved statistics:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))     (RMS norm: no mean(g) term)
// and the column sums dweight = sum(dy * xhat), dbias = sum(dy) over all rows.
//
// Rows up to 16384 elements sit in registers (at most 16 elements per thread, since the thread also
// keeps its columns' dweight/dbias accumulators): x and dy are read once. Each block sums its lane
// groups' accumulators in shared memory in a fixed order and writes one partial row per block; a
// small finalize kernel then adds the partial rows in block order. No atomics: the result depends
// only on the inputs and the device's grid size, so runs repeat bit for bit. Longer rows take the
// generic block-per-row path, which accumulates its partial row in the workspace and reads the row
// a second time for dx.
#include <cstdint>

#include "common/check.cuh"
#include "common/device_types.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "row_norm.hpp"
#include "row_norm_tiling.hpp"

namespace nk::cuda {
namespace {

struct BackwardParams {
  const void* x;
  const void* dy;
  const void* weight;
  const float* save_mean;  // nullptr for RMS norm
  const float* save_rstd;
  void* dx;
  float* partial_dweight;  // [blocks x cols], nullptr when neither dweight nor dbias is wanted
  float* partial_dbias;    // [blocks x cols]
  int64_t rows;
  int64_t cols;
  bool rms;
  int threads_per_row;
};

// Rows in registers (lane group or block per row), persistent grid; one partial row per block.
template <class T, class W, int E, int P>
__global__ void __launch_bounds__(max_block_threads(E* P, /*backward=*/true), 1)
    backward_in_registers(BackwardParams p) {
  __shared__ float scratch[64];
  extern __shared__ float group_partials[];  // [2][rows_per_block][cols] when rows_per_block > 1
  const int tpr = p.threads_per_row;
  const int group = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int rows_per_block = blockDim.x / tpr;
  const int packs = static_cast<int>(p.cols / E);
  const float inv_cols = 1.0f / static_cast<float>(p.cols);
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  T* dx = static_cast<T*>(p.dx);
  const W* weight = static_cast<const W*>(p.weight);
  float acc_dw[P][E] = {}, acc_db[P][E] = {};

  for (int64_t first = static_cast<int64_t>(blockIdx.x) * rows_per_block; first < p.rows;
       first += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const int64_t row = first + group;
    const bool active = row < p.rows;
    const float mean = active && !p.rms ? p.save_mean[row] : 0.0f;
    const float rstd = active ? p.save_rstd[row] : 0.0f;
    float xhat[P][E], g[P][E];
    dev::Floats<2> sums{};  // sum(g), sum(g * xhat)
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int pack = t + k * tpr;
      if (active && pack < packs) {
        float d[E], w[E];
        dev::load_floats<T, E>(x + row * p.cols + pack * E, xhat[k]);
        dev::load_floats<T, E>(dy + row * p.cols + pack * E, d);
        dev::load_param<W, E>(weight ? weight + pack * E : nullptr, w, 1.0f);
#pragma unroll
        for (int i = 0; i < E; ++i) {
          xhat[k][i] = (xhat[k][i] - mean) * rstd;
          g[k][i] = d[i] * w[i];
          sums.v[0] += g[k][i];
          sums.v[1] += g[k][i] * xhat[k][i];
          acc_dw[k][i] += d[i] * xhat[k][i];
          acc_db[k][i] += d[i];
        }
      }
    }
    if (dx == nullptr) continue;  // uniform across the grid: barriers stay matched
    sums = dev::row_sum<2>(sums, tpr, scratch);
    const float mean_g = p.rms ? 0.0f : sums.v[0] * inv_cols, mean_gx = sums.v[1] * inv_cols;
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int pack = t + k * tpr;
      if (active && pack < packs) {
        float out[E];
#pragma unroll
        for (int i = 0; i < E; ++i) out[i] = rstd * (g[k][i] - mean_g - xhat[k][i] * mean_gx);
        dev::store_floats<T, E>(dx + row * p.cols + pack * E, out);
      }
    }
  }
  if (p.partial_dweight == nullptr) return;

  float* dw_out = p.partial_dweight + blockIdx.x * p.cols;
  float* db_out = p.partial_dbias + blockIdx.x * p.cols;
  if (rows_per_block == 1) {
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int pack = t + k * tpr;
      if (pack < packs) {
        dev::store_floats<float, E>(dw_out + pack * E, acc_dw[k]);
        dev::store_floats<float, E>(db_out + pack * E, acc_db[k]);
      }
    }
    return;
  }
  // Several lane groups: stage their accumulators, then add them in group order.
  float* staged_dw = group_partials;
  float* staged_db = group_partials + rows_per_block * p.cols;
#pragma unroll
  for (int k = 0; k < P; ++k) {
    const int pack = t + k * tpr;
    if (pack < packs) {
#pragma unroll
      for (int i = 0; i < E; ++i) {
        staged_dw[group * p.cols + pack * E + i] = acc_dw[k][i];
        staged_db[group * p.cols + pack * E + i] = acc_db[k][i];
      }
    }
  }
  __syncthreads();
  for (int64_t col = threadIdx.x; col < p.cols; col += blockDim.x) {
    float sw = 0.0f, sb = 0.0f;
    for (int r = 0; r < rows_per_block; ++r) {
      sw += staged_dw[r * p.cols + col];
      sb += staged_db[r * p.cols + col];
    }
    dw_out[col] = sw;
    db_out[col] = sb;
  }
}

// One block per row, any length; the block's partial row of dweight/dbias accumulates in the
// workspace (each thread owns the same columns for every row, so no two threads touch one entry).
template <class T, class W, int E>
__global__ void __launch_bounds__(512) backward_generic(BackwardParams p) {
  __shared__ float scratch[64];
  const int64_t packs = p.cols / E;
  const float inv_cols = 1.0f / static_cast<float>(p.cols);
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  T* dx = static_cast<T*>(p.dx);
  const W* weight = static_cast<const W*>(p.weight);
  float* dw_out = p.partial_dweight ? p.partial_dweight + blockIdx.x * p.cols : nullptr;
  float* db_out = p.partial_dbias ? p.partial_dbias + blockIdx.x * p.cols : nullptr;
  if (dw_out) {
    for (int64_t col = threadIdx.x * E; col < p.cols; col += blockDim.x * E) {
#pragma unroll
      for (int i = 0; i < E; ++i) dw_out[col + i] = db_out[col + i] = 0.0f;
    }
  }
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const float mean = p.rms ? 0.0f : p.save_mean[row], rstd = p.save_rstd[row];
    const T* xr = x + row * p.cols;
    const T* dyr = dy + row * p.cols;
    dev::Floats<2> sums{};
    for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
      float v[E], d[E], w[E];
      dev::load_floats<T, E>(xr + pack * E, v);
      dev::load_floats<T, E>(dyr + pack * E, d);
      dev::load_param<W, E>(weight ? weight + pack * E : nullptr, w, 1.0f);
#pragma unroll
      for (int i = 0; i < E; ++i) {
        const float xhat = (v[i] - mean) * rstd, g = d[i] * w[i];
        sums.v[0] += g;
        sums.v[1] += g * xhat;
        if (dw_out) {
          dw_out[pack * E + i] += d[i] * xhat;
          db_out[pack * E + i] += d[i];
        }
      }
    }
    sums = dev::block_sum<2>(sums, scratch);
    if (dx == nullptr) continue;
    const float mean_g = p.rms ? 0.0f : sums.v[0] * inv_cols, mean_gx = sums.v[1] * inv_cols;
    for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
      float v[E], d[E], w[E];
      dev::load_floats<T, E>(xr + pack * E, v);
      dev::load_floats<T, E>(dyr + pack * E, d);
      dev::load_param<W, E>(weight ? weight + pack * E : nullptr, w, 1.0f);
#pragma unroll
      for (int i = 0; i < E; ++i) {
        const float xhat = (v[i] - mean) * rstd;
        v[i] = rstd * (d[i] * w[i] - mean_g - xhat * mean_gx);
      }
      dev::store_floats<T, E>(dx + row * p.cols + pack * E, v);
    }
  }
}

// dweight, dbias from the per-block partial rows: a 32-column tile per block, 16 threads down the
// partials, then the 16 sums added in order in shared memory.
template <class W>
__global__ void __launch_bounds__(512)
    finalize_columns(const float* partial_dw, const float* partial_db, int partials, int64_t cols,
                     W* dweight, W* dbias) {
  __shared__ float tile[2][16][33];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float sw = 0.0f, sb = 0.0f;
  if (col < cols) {
    for (int r = threadIdx.y; r < partials; r += 16) {
      sw += partial_dw[r * cols + col];
      sb += partial_db[r * cols + col];
    }
  }
  tile[0][threadIdx.y][threadIdx.x] = sw;
  tile[1][threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    sw = sb = 0.0f;
    for (int r = 0; r < 16; ++r) {
      sw += tile[0][r][threadIdx.x];
      sb += tile[1][r][threadIdx.x];
    }
    if (dweight) dweight[col] = dev::from_float<W>(sw);
    if (dbias) dbias[col] = dev::from_float<W>(sb);
  }
}

// Grid, dynamic shared memory and workspace of one backward launch. The workspace holds the
// per-block partial rows: dweight's, then (256-byte aligned) dbias'.
struct Plan {
  RowTiling tiling;
  int grid;
  size_t shared_bytes;   // staged lane-group accumulators when a block holds several rows
  size_t partial_bytes;  // one of the two partial arrays, grid x cols floats, 256-byte aligned
};

template <class Kernel>
Plan plan_for(Kernel kernel, const RowTiling& tiling, int64_t rows, int64_t cols, int sm_count) {
  const int rpb = tiling.rows_per_block();
  const size_t shared = rpb > 1 ? 2 * static_cast<size_t>(rpb) * cols * sizeof(float) : 0;
  int per_sm = 0;
  dev::check_cuda(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, tiling.block_threads, shared),
      "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  // The generic path's partial rows are as long as its rows: one block per SM keeps them small.
  const int64_t resident =
      tiling.in_registers ? static_cast<int64_t>(per_sm > 0 ? per_sm : 1) * sm_count : sm_count;
  const int64_t groups = (rows + rpb - 1) / rpb;
  const int grid = static_cast<int>(groups < resident ? groups : resident);
  const size_t partial = (static_cast<size_t>(grid) * cols * sizeof(float) + 255) / 256 * 256;
  return Plan{tiling, grid, shared, partial};
}

// Calls use(kernel) with the instantiation that serves a tiling.
template <class T, class W, class Use>
void with_kernel(const RowTiling& tiling, Use&& use) {
  constexpr int kE = 16 / sizeof(T);
  if (!tiling.in_registers) {
    if (tiling.pack_elems == 1) {
      use(backward_generic<T, W, 1>);
    } else {
      use(backward_generic<T, W, kE>);
    }
  } else if (tiling.pack_elems == 1) {
    use(backward_in_registers<T, W, 1, 8>);
  } else if (tiling.packs_per_thread == 1) {
    use(backward_in_registers<T, W, kE, 1>);
  } else if (tiling.packs_per_thread == 2) {
    use(backward_in_registers<T, W, kE, 2>);
  } else if constexpr (kE * 4 <= 16) {  // four packs only where they stay within 16 elements
    use(backward_in_registers<T, W, kE, 4>);
  } else {
    fail(NK_ERROR_INTERNAL, "no backward kernel for ", tiling.packs_per_thread, " packs of ", kE,
         " elements");
  }
}

template <class T, class W>
Plan make_plan(const RowShape& s, bool vector_access, int sm_count) {
  const RowTiling tiling = choose_row_tiling(s.cols, sizeof(T), vector_access, /*backward=*/true);
  Plan plan{};
  with_kernel<T, W>(
      tiling, [&](auto kernel) { plan = plan_for(kernel, tiling, s.rows, s.cols, sm_count); });
  return plan;
}

}  // namespace

size_t row_norm_backward_workspace_size(const RowBackwardArgs& a, int sm_count) {
  size_t bytes = 0;
  dev::dispatch_row_dtypes(a.shape, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    for (bool vector_access : {true, false}) {
      if (vector_access && a.shape.cols % (16 / sizeof(T)) != 0) continue;
      const size_t need = 2 * make_plan<T, W>(a.shape, vector_access, sm_count).partial_bytes;
      if (need > bytes) bytes = need;
    }
  });
  return bytes;
}

void row_norm_backward(const RowBackwardArgs& a, const Launch& l) {
  const RowShape& s = a.shape;
  dev::dispatch_row_dtypes(s, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    const bool vector_access = s.cols % (16 / sizeof(T)) == 0 && dev::aligned16(a.x) &&
                               dev::aligned16(a.dy) && dev::aligned16(a.dx) &&
                               dev::aligned16(a.weight);
    const Plan plan = make_plan<T, W>(s, vector_access, l.sm_count);
    const bool want_params = a.dweight != nullptr || a.dbias != nullptr;
    auto* workspace = static_cast<unsigned char*>(l.workspace);
    float* partial_dw = want_params ? reinterpret_cast<float*>(workspace) : nullptr;
    float* partial_db =
        want_params ? reinterpret_cast<float*>(workspace + plan.partial_bytes) : nullptr;
    const BackwardParams p{a.x,         a.dy,   a.weight,   a.save_mean,
                           a.save_rstd, a.dx,   partial_dw, partial_db,
                           s.rows,      s.cols, s.rms,      plan.tiling.threads_per_row};
    auto stream = static_cast<cudaStream_t>(l.stream);
    with_kernel<T, W>(plan.tiling, [&](auto kernel) {
      kernel<<<plan.grid, plan.tiling.block_threads, plan.shared_bytes, stream>>>(p);
    });
    dev::check_cuda(cudaGetLastError(), "row norm backward launch");
    if (!want_params) return;
    const dim3 block(32, 16), grid(static_cast<unsigned>((s.cols + 31) / 32));
    finalize_columns<W><<<grid, block, 0, stream>>>(partial_dw, partial_db, plan.grid, s.cols,
                                                    static_cast<W*>(a.dweight),
                                                    static_cast<W*>(a.dbias));
    dev::check_cuda(cudaGetLastError(), "row norm dweight/dbias finalize launch");
  });
}

}  // namespace nk::cuda
