// The preprocessing normalizers on the GPU, computing what the CPU backend computes bit for bit
// (quantiles, scaling) or to within one unit in the last place (L2 normalization).
//
// Quantiles: columns are processed in batches (quantile_batch_columns). A tiled transpose gathers
// each column of the batch into a contiguous float segment (fp16 and bf16 widen exactly) and flags
// the columns holding a NaN; cub::DeviceSegmentedSort sorts the segments; one kernel interpolates
// in fp64 at the positions the host computed with the CPU backend's own arithmetic. The fp64
// operations are written as __dadd_rn / __dmul_rn so that nvcc cannot contract them into an FMA,
// which the CPU does not use. CUB sorts a column much larger than shared memory with one block, so
// a few very long columns sort slower than many short ones; with many columns CUB's partitioning
// synchronizes the stream once per batch.
// Scaling: y = (x - center) * inverse in fp64 with the host's per-column parameters, rounded once.
// L2 normalization: the sum of squares in fp64 (a warp per row up to 1024 columns, a block per row
// beyond), then a second read of the row to scale it; 16-byte packs when the pointers and the row
// length allow, single elements otherwise. fp64 here is on purpose: these are not the norm kernels.
#include <algorithm>
#include <cstdint>
#include <cub/device/device_segmented_sort.cuh>

#include "common/check.cuh"
#include "common/device_types.cuh"
#include "common/vec.cuh"
#include "preprocessing.hpp"
#include "workspace.hpp"

namespace nk::cuda {
namespace {

__device__ __forceinline__ double to_double(float v) { return v; }
__device__ __forceinline__ double to_double(__half v) { return __half2float(v); }
__device__ __forceinline__ double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }

// Round once from fp64, to nearest even, as the CPU backend's from_double.
template <class T>
__device__ __forceinline__ T from_double(double v);
template <>
__device__ __forceinline__ float from_double<float>(double v) {
  return __double2float_rn(v);
}
template <>
__device__ __forceinline__ __half from_double<__half>(double v) {
  return __double2half(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_double<__nv_bfloat16>(double v) {
  return __double2bfloat16(v);
}

cudaStream_t stream_of(const Launch& l) { return static_cast<cudaStream_t>(l.stream); }

// A grid of at most `blocks_per_sm` blocks per multiprocessor, and no more than `work` blocks.
int persistent_grid(int64_t work, int sm_count, int blocks_per_sm) {
  const int64_t resident = static_cast<int64_t>(sm_count) * blocks_per_sm;
  return static_cast<int>(std::max<int64_t>(1, std::min(work, resident)));
}

// ---- quantiles ----------------------------------------------------------------------------------

constexpr int kTile = 32;     // gather tile: kTile x kTile elements
constexpr int kTileRows = 8;  // threads per tile column (blockDim.y)

// Device scratch of one quantile call, laid out by one Carver for the size query and the call.
struct QuantileScratch {
  QuantilePosition* positions;  // [nq]
  int* offsets;                 // [batch columns + 1]: column c of a batch starts at c * rows
  unsigned* has_nan;            // [batch columns]
  float* keys[2];               // [batch columns x rows] each: gathered, then CUB's double buffer
  void* temp;
  size_t temp_bytes;
  size_t bytes;  // all of the above
};

// CUB's temporary storage for sorting `columns` segments of `rows` keys (nothing runs).
size_t sort_temp_bytes(int64_t rows, int64_t columns) {
  cub::DoubleBuffer<float> keys(nullptr, nullptr);
  size_t bytes = 0;
  const int* offsets = nullptr;
  dev::check_cuda(cub::DeviceSegmentedSort::SortKeys(nullptr, bytes, keys, rows * columns, columns,
                                                     offsets, offsets + 1),
                  "cub::DeviceSegmentedSort::SortKeys (size query)");
  return bytes;
}

// The layout over `base`, or only its size (base nullptr).
QuantileScratch carve(const QuantileArgs& a, void* base) {
  const int64_t rows = a.shape.rows, cols = a.shape.cols;
  const int64_t batch = quantile_batch_columns(rows, cols);
  const int64_t last = cols - (cols - 1) / batch * batch;  // columns in the last batch
  QuantileScratch s{};
  Carver c(base);
  s.positions = c.take<QuantilePosition>(a.nq);
  s.offsets = c.take<int>(batch + 1);
  s.has_nan = c.take<unsigned>(batch);
  s.keys[0] = c.take<float>(batch * rows);
  s.keys[1] = c.take<float>(batch * rows);
  s.temp_bytes = std::max(sort_temp_bytes(rows, batch), sort_temp_bytes(rows, last));
  s.temp = c.take<unsigned char>(static_cast<int64_t>(s.temp_bytes));
  s.bytes = c.bytes();
  return s;
}

// offsets[c] = c * rows for c in [0, count]: one thread per offset.
__global__ void fill_offsets(int* offsets, int64_t count, int64_t rows) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c <= count) offsets[c] = static_cast<int>(c * rows);
}

// keys[c * rows + r] = x[r * cols + col0 + c] for the batch's columns c < ncols, through kTile x
// kTile shared-memory tiles (a block of kTile x kTileRows threads per tile, tiles strided over the
// grid) so that reads along a row and writes along a column are both coalesced. A column holding a
// NaN gets has_nan[c] set (an integer OR: the order does not matter).
template <class T>
__global__ void __launch_bounds__(kTile* kTileRows)
    gather_columns(const T* x, int64_t rows, int64_t cols, int64_t col0, int64_t ncols, float* keys,
                   unsigned* has_nan) {
  __shared__ float tile[kTile][kTile + 1];  // +1: the transposed reads hit distinct banks
  const int64_t col_tiles = (ncols + kTile - 1) / kTile;
  const int64_t tiles = col_tiles * ((rows + kTile - 1) / kTile);
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t r0 = t / col_tiles * kTile, c0 = t % col_tiles * kTile;
    const int64_t c = c0 + threadIdx.x;
    for (int i = threadIdx.y; i < kTile; i += kTileRows) {
      const int64_t r = r0 + i;
      if (r < rows && c < ncols) {
        const float v = dev::to_float(x[r * cols + col0 + c]);
        if (isnan(v)) atomicOr(has_nan + c, 1u);
        tile[i][threadIdx.x] = v;
      }
    }
    __syncthreads();
    const int64_t r = r0 + threadIdx.x;
    for (int i = threadIdx.y; i < kTile; i += kTileRows) {
      if (r < rows && c0 + i < ncols) keys[(c0 + i) * rows + r] = tile[threadIdx.x][i];
    }
    __syncthreads();
  }
}

// out[i * cols + col0 + c] = quantile i of sorted column c (NaN for a column with a NaN), as the
// CPU backend computes it: one thread per output, columns fastest, grid-stride.
__global__ void interpolate(const float* sorted, const unsigned* has_nan,
                            const QuantilePosition* positions, int64_t nq, int64_t rows,
                            int64_t cols, int64_t col0, int64_t ncols, float* out) {
  const int64_t total = nq * ncols;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = k / ncols, c = k % ncols;
    float result = __int_as_float(0x7fc00000);  // the CPU backend's NAN
    if (!has_nan[c]) {
      const QuantilePosition p = positions[i];
      const float* v = sorted + c * rows;
      const double lo = v[p.lo];
      double value = lo;
      if (p.frac != 0) {
        const double hi = v[p.lo + 1 < rows ? p.lo + 1 : rows - 1];
        value = __dadd_rn(lo, __dmul_rn(p.frac, __dsub_rn(hi, lo)));
      }
      result = __double2float_rn(value);
    }
    out[i * cols + col0 + c] = result;
  }
}

template <class T>
void quantiles(const QuantileArgs& a, const QuantileScratch& s, const Launch& l) {
  const int64_t rows = a.shape.rows, cols = a.shape.cols;
  const int64_t batch = quantile_batch_columns(rows, cols);
  const cudaStream_t stream = stream_of(l);
  fill_offsets<<<static_cast<unsigned>((batch + 256) / 256), 256, 0, stream>>>(s.offsets, batch,
                                                                               rows);
  dev::check_cuda(cudaGetLastError(), "quantile offsets launch");
  for (int64_t col0 = 0; col0 < cols; col0 += batch) {
    const int64_t ncols = std::min(batch, cols - col0);
    dev::check_cuda(cudaMemsetAsync(s.has_nan, 0, ncols * sizeof(unsigned), stream),
                    "cudaMemsetAsync");
    const int64_t tiles = (ncols + kTile - 1) / kTile * ((rows + kTile - 1) / kTile);
    gather_columns<T><<<persistent_grid(tiles, l.sm_count, 8), dim3(kTile, kTileRows), 0, stream>>>(
        static_cast<const T*>(a.x), rows, cols, col0, ncols, s.keys[0], s.has_nan);
    dev::check_cuda(cudaGetLastError(), "quantile gather launch");
    cub::DoubleBuffer<float> keys(s.keys[0], s.keys[1]);
    size_t temp_bytes = s.temp_bytes;
    dev::check_cuda(cub::DeviceSegmentedSort::SortKeys(s.temp, temp_bytes, keys, rows * ncols,
                                                       ncols, s.offsets, s.offsets + 1, stream),
                    "cub::DeviceSegmentedSort::SortKeys");
    interpolate<<<persistent_grid((a.nq * ncols + 255) / 256, l.sm_count, 8), 256, 0, stream>>>(
        keys.Current(), s.has_nan, s.positions, a.nq, rows, cols, col0, ncols, a.out);
    dev::check_cuda(cudaGetLastError(), "quantile interpolation launch");
  }
}

// ---- scaling ------------------------------------------------------------------------------------

// y = (x - center_j) * inverse_j in fp64, rounded once: one thread per element, grid-stride, the
// column tracked incrementally (no 64-bit division per element). y may be x.
template <class T>
__global__ void scale(const T* x, T* y, const double2* columns, int64_t n, int64_t cols) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t step = stride % cols;
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (int64_t j = i % cols; i < n; i += stride) {
    const double2 p = columns[j];
    y[i] = from_double<T>(__dmul_rn(__dsub_rn(to_double(x[i]), p.x), p.y));
    j += step;
    if (j >= cols) j -= cols;
  }
}

// ---- L2 normalization ---------------------------------------------------------------------------

constexpr int kL2Threads = 256;
constexpr int64_t kWarpPerRowMaxCols = 1024;

template <class T, int E>
__device__ __forceinline__ void load_doubles(const T* p, double (&out)[E]) {
  const dev::Pack<T, E> pack = *reinterpret_cast<const dev::Pack<T, E>*>(p);
#pragma unroll
  for (int i = 0; i < E; ++i) out[i] = to_double(pack.v[i]);
}

template <class T, int E>
__device__ __forceinline__ void store_doubles(T* p, const double (&in)[E]) {
  dev::Pack<T, E> pack;
#pragma unroll
  for (int i = 0; i < E; ++i) pack.v[i] = from_double<T>(in[i]);
  *reinterpret_cast<dev::Pack<T, E>*>(p) = pack;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Block total of v, every thread gets it; warp partials added in warp order (same bits every run).
__device__ __forceinline__ double block_sum(double v, double* scratch) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += scratch[w];
  __syncthreads();
  return total;
}

// y = x / max(||x||_2, eps) per row, fp64 sum of squares, packs of E elements: a warp per row
// (kBlockPerRow false) or the block per row, rows strided over a persistent grid. y may be x:
// each element is read twice and written last by the thread that read it.
template <class T, int E, bool kBlockPerRow>
__global__ void __launch_bounds__(kL2Threads)
    l2_normalize(const T* x, T* y, int64_t rows, int64_t cols, double eps) {
  __shared__ double scratch[32];
  const int64_t packs = cols / E;
  const int width = kBlockPerRow ? blockDim.x : 32;
  const int t = kBlockPerRow ? threadIdx.x : threadIdx.x % 32;
  const int64_t first = kBlockPerRow
                            ? blockIdx.x
                            : (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int64_t step = kBlockPerRow ? gridDim.x : static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t row = first; row < rows; row += step) {
    const T* xr = x + row * cols;
    double squares = 0;
    for (int64_t pack = t; pack < packs; pack += width) {
      double v[E];
      load_doubles<T, E>(xr + pack * E, v);
#pragma unroll
      for (int i = 0; i < E; ++i) squares += v[i] * v[i];
    }
    squares = kBlockPerRow ? block_sum(squares, scratch) : warp_sum(squares);
    const double norm = sqrt(squares);
    const double scale = 1.0 / (norm < eps ? eps : norm);  // std::max's NaN behaviour
    for (int64_t pack = t; pack < packs; pack += width) {
      double v[E];
      load_doubles<T, E>(xr + pack * E, v);
#pragma unroll
      for (int i = 0; i < E; ++i) v[i] = __dmul_rn(v[i], scale);
      store_doubles<T, E>(y + row * cols + pack * E, v);
    }
  }
}

template <class T, int E>
void l2(const L2NormalizeArgs& a, const Launch& l) {
  const int64_t rows = a.shape.rows, cols = a.shape.cols;
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  if (cols <= kWarpPerRowMaxCols) {
    const int64_t blocks = (rows + kL2Threads / 32 - 1) / (kL2Threads / 32);
    l2_normalize<T, E, false>
        <<<persistent_grid(blocks, l.sm_count, 8), kL2Threads, 0, stream_of(l)>>>(x, y, rows, cols,
                                                                                  a.eps);
  } else {
    l2_normalize<T, E, true><<<persistent_grid(rows, l.sm_count, 8), kL2Threads, 0, stream_of(l)>>>(
        x, y, rows, cols, a.eps);
  }
  dev::check_cuda(cudaGetLastError(), "L2 normalization launch");
}

// Calls body(T{}) with the device type of the shape's dtype.
template <class Body>
void dispatch(const RowShape& s, Body&& body) {
  dispatch_dtype(s.dtype, [&](auto host) { body(dev::device_t<decltype(host)>{}); });
}

}  // namespace

size_t quantiles_columns_scratch_size(const QuantileArgs& a) { return carve(a, nullptr).bytes; }

void quantiles_columns(const QuantileArgs& a, const Launch& l) {
  const QuantileScratch s = carve(a, l.workspace);
  dev::check_cuda(cudaMemcpyAsync(s.positions, a.positions, a.nq * sizeof(QuantilePosition),
                                  cudaMemcpyHostToDevice, stream_of(l)),
                  "cudaMemcpyAsync (quantile positions)");
  dispatch(a.shape, [&](auto t) { quantiles<decltype(t)>(a, s, l); });
}

size_t scale_columns_scratch_size(const ScaleArgs& a) {
  Carver c;
  c.take<double2>(a.shape.cols);
  return c.bytes();
}

void scale_columns(const ScaleArgs& a, const Launch& l) {
  const int64_t cols = a.shape.cols, n = a.shape.rows * cols;
  double2* columns = Carver(l.workspace).take<double2>(cols);
  dev::check_cuda(cudaMemcpyAsync(columns, a.columns, cols * sizeof(double2),
                                  cudaMemcpyHostToDevice, stream_of(l)),
                  "cudaMemcpyAsync (column parameters)");
  dispatch(a.shape, [&](auto t) {
    using T = decltype(t);
    scale<T><<<persistent_grid((n + 255) / 256, l.sm_count, 8), 256, 0, stream_of(l)>>>(
        static_cast<const T*>(a.x), static_cast<T*>(a.y), columns, n, cols);
  });
  dev::check_cuda(cudaGetLastError(), "column scaling launch");
}

void l2_normalize_rows(const L2NormalizeArgs& a, const Launch& l) {
  dispatch(a.shape, [&](auto t) {
    using T = decltype(t);
    constexpr int kE = 16 / sizeof(T);
    if (a.shape.cols % kE == 0 && dev::aligned16(a.x) && dev::aligned16(a.y)) {
      l2<T, kE>(a, l);
    } else {
      l2<T, 1>(a, l);
    }
  });
}

}  // namespace nk::cuda
