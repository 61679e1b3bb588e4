// Layer norm and RMS norm backward on the GPU.
//
// Per row, with g = dy * weight and xhat = (x - mean) * rstd from the saved statistics:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))     (RMS norm: no mean(g) term)
// (taken per row as three coefficients of g and x - mean: DxCoefficients)
// and the column sums dweight = sum(dy * xhat), dbias = sum(dy) over all rows.
//
// Rows up to 8192 elements (4096 with single-element packs) sit in registers, at most 8 elements a
// thread (4 single ones) and 1024 threads a row, within 64 registers: x and dy are read once and
// kept as stored (16-bit packs take half a register an element), and in 16-byte packs the next
// row's are loaded while this one is reduced and written.
// Each thread keeps fp32 dweight/dbias accumulators for the columns it owns, which are the same in
// every row, in shared memory (registers held them until the next row's packs needed the room).
// The rows are cut into chunks whose number depends on the shape only (row_norm_tiling.hpp): a
// block takes whole chunks, its lane groups add their rows in row order, the groups' sums are added
// in group order in shared memory, and each chunk writes one partial row. The finalize adds the
// partial rows in a fixed tree. Nothing depends on the grid launched or the SM count, and nothing
// is read, modified and written back in global memory, so dweight and dbias have the same bits on
// every GPU.
//
// Longer rows up to 16384 elements in 16-byte packs are staged in dynamic shared memory when x and
// dy fit the portable limit (shared_memory_limit.hpp, 99 KB: bf16 to 16384, 64 KB; fp32 to about
// 12.5K columns, longer fp32 rows take the generic path on every GPU; row_norm_tiling.hpp), and
// so are the register rows of 513 to 1023 threads, which would hold one block an SM: one block per
// row (512 threads up to 8192 elements, two blocks an SM; else 1024) reads x and dy once, as
// stored, into shared memory, takes the row sums and its threads' dweight/dbias accumulators (in
// registers, up to 16 columns a thread: 64 registers) and dx from there; chunks and partial rows
// are those of a block per row in registers, so the reduction order is the shape's alone. (Every
// supported GPU grants the 99 KB, so the path a row takes, and the bits, are the same on every
// GPU.)
// Rows that fit neither take the generic path: dx from one block per row (statistics over memory,
// then a second read of the row, usually from L2), and dweight/dbias from a separate column pass
// over x and dy that writes one partial row per chunk of rows, finalized the same way. Few long
// rows (fewer than 128, 16-byte packs) take dx split across blocks instead
// (row_norm_split_backward.cu), so that they fill the GPU.
//
// The fused forms (nk_row_norm_fused_backward) are runtime switches, uniform across the grid: a
// zero-centred weight (g = dy * (1 + w)), the residual add's extra gradient (dh = ... + dh_extra,
// stored to dx and/or dresidual), and dbias_in, the column sum of dh as stored: a column pass over
// the stored dh after the main kernel (one more read of rows x cols; it keeps the hot kernels'
// registers as they were), cut into the same chunks and finalized by the same kernel into the
// same partial rows, reused once dweight and dbias are done. Its order depends on the shape only.
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "common/check.cuh"
#include "common/dependent_launch.cuh"
#include "common/device_types.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "row_norm.hpp"
#include "row_norm_backward_io.cuh"
#include "row_norm_split_backward.hpp"
#include "row_norm_tiling.hpp"
#include "shared_memory_limit.hpp"

namespace nk::cuda {
namespace {

// Sums N values over the threads of one row: a lane group (tpr <= 32) by shuffles, or the tpr / 32
// warps of a row (a block may hold several rows) through `scratch` (N floats per warp), added by
// every warp of the row in one butterfly (lane w holds the row's warp w). t is the thread's index
// in its row: the row's first warp is warp - t / 32 (a division by tpr / 32 took about 30
// instructions a row). Every thread of the block calls it.
template <int N>
__device__ __forceinline__ dev::Floats<N> row_total(dev::Floats<N> a, int tpr, int t,
                                                    float* scratch) {
  if (tpr <= 32) return dev::group_sum<N>(a, tpr);
  a = dev::group_sum<N>(a, 32);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps_per_row = tpr / 32;
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) scratch[warp * N + i] = a.v[i];
  }
  __syncthreads();
  dev::Floats<N> total{};
  if (lane < warps_per_row) {
    const int w = warp - t / 32 + lane;
#pragma unroll
    for (int i = 0; i < N; ++i) total.v[i] = scratch[w * N + i];
  }
  total = dev::group_sum<N>(total, 32);
  __syncthreads();
  return total;
}

// Writes a block's accumulators of one chunk as partial row `out` (cols floats): straight from the
// registers when the block holds one row, else staged per lane group in shared memory and added
// in group order. Every thread of the block calls it.
template <int E, int P>
__device__ __forceinline__ void write_partial(const float (&acc)[P][E], float* out, float* staged,
                                              int rows_per_block, int group, int t, int tpr,
                                              int packs, int64_t cols) {
  if (rows_per_block == 1) {
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int pack = t + k * tpr;
      if (pack < packs) dev::store_floats<float, E>(out + pack * E, acc[k]);
    }
    return;
  }
  __syncthreads();  // the previous use of `staged` is over
#pragma unroll
  for (int k = 0; k < P; ++k) {
    const int pack = t + k * tpr;
    if (pack < packs) {
#pragma unroll
      for (int i = 0; i < E; ++i) staged[group * cols + pack * E + i] = acc[k][i];
    }
  }
  __syncthreads();
  for (int64_t col = threadIdx.x; col < cols; col += blockDim.x) {
    float sum = 0.0f;
    for (int g = 0; g < rows_per_block; ++g) sum += staged[g * cols + col];
    out[col] = sum;
  }
}

// A thread's packs of one row, as stored (in 32-bit words: a load under a predicate then replaces
// whole registers, where 16-bit elements were merged into the registers they replace, which waits
// for the load right there), and the row's saved statistics. The register kernel fetches them a
// row ahead, so that the next row's loads are in flight while this row is reduced and written.
template <class T, int E, int P>
struct BackwardRow {
  static constexpr int kBytes = static_cast<int>(sizeof(T)) * E;
  using Raw = std::conditional_t<kBytes == 16, uint4,
                                 std::conditional_t<kBytes == 4, uint32_t, uint16_t>>;
  static_assert(sizeof(Raw) == kBytes, "a pack is 16 bytes or one element");
  Raw x[P];
  Raw dy[P];
  float mean;
  float rstd;

  __device__ __forceinline__ static dev::Pack<T, E> pack(const Raw& raw) {
    dev::Pack<T, E> out;
    memcpy(&out, &raw, sizeof(out));
    return out;
  }
};

// Row `row` of this thread's packs (past the last row: none, and statistics of zero).
template <class T, int E, int P>
__device__ __forceinline__ void fetch_row(const BackwardParams& p, int64_t row, int t, int tpr,
                                          int packs, BackwardRow<T, E, P>& r) {
  using Raw = typename BackwardRow<T, E, P>::Raw;
  const bool active = row < p.rows;
  r.mean = active && !p.rms ? p.save_mean[row] : 0.0f;
  r.rstd = active ? p.save_rstd[row] : 0.0f;
#pragma unroll
  for (int k = 0; k < P; ++k) {
    const int pack = t + k * tpr;
    if (active && pack < packs) {
      const int64_t offset = row * p.cols + pack * E;
      r.x[k] = *reinterpret_cast<const Raw*>(static_cast<const T*>(p.x) + offset);
      r.dy[k] = *reinterpret_cast<const Raw*>(static_cast<const T*>(p.dy) + offset);
    }
  }
}

// The dweight/dbias accumulators of the register kernel's threads, in its dynamic shared memory
// after the scratch: a thread's 2 * P * E sums (dweight's elements, then dbias') in kVectors float4
// vectors, vector j of thread i at [i / 512][j][i % 512] (lanes 16 bytes apart: no bank conflict;
// a constant stride, so one address register serves every vector). Only the thread that owns them
// reads or writes them: no barrier. In registers they left no room for the next row's packs.
template <int E, int P>
struct SharedAccumulators {
  static_assert(E * P % 4 == 0, "whole float4 vectors");
  static constexpr int kVectors = 2 * E * P / 4;
  static constexpr int kStride = kBackwardRowsBlock;
  float4* base;  // this thread's vector 0

  __device__ __forceinline__ explicit SharedAccumulators(float4* all)
      : base(all + threadIdx.x / kStride * kVectors * kStride + threadIdx.x % kStride) {}

  // The vector holding sum q (dweight's element q < E * P, else dbias' element q - E * P),
  // q % 4 == 0.
  __device__ __forceinline__ float4& vector(int q) const { return base[q / 4 * kStride]; }

  __device__ __forceinline__ void zero() const {
#pragma unroll
    for (int j = 0; j < kVectors; ++j) base[j * kStride] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  __device__ __forceinline__ void load(float (&dw)[P][E], float (&db)[P][E]) const {
    float all[2 * E * P];
#pragma unroll
    for (int j = 0; j < kVectors; ++j) {
      const float4 v = base[j * kStride];
      all[4 * j] = v.x;
      all[4 * j + 1] = v.y;
      all[4 * j + 2] = v.z;
      all[4 * j + 3] = v.w;
    }
#pragma unroll
    for (int q = 0; q < E * P; ++q) {
      dw[q / E][q % E] = all[q];
      db[q / E][q % E] = all[E * P + q];
    }
  }
  __device__ __forceinline__ void store(const float (&dw)[P][E], const float (&db)[P][E]) const {
    float all[2 * E * P];
#pragma unroll
    for (int q = 0; q < E * P; ++q) {
      all[q] = dw[q / E][q % E];
      all[E * P + q] = db[q / E][q % E];
    }
#pragma unroll
    for (int j = 0; j < kVectors; ++j) {
      base[j * kStride] = make_float4(all[4 * j], all[4 * j + 1], all[4 * j + 2], all[4 * j + 3]);
    }
  }
};

// Values through an asm the compiler cannot see into, each time the call stands: addresses derived
// from them are computed where a row uses them, not hoisted out of a row loop into registers that
// the loop needs (where they spilled). threadIdx.x, or v when kOpaque (else v as it is).
__device__ __forceinline__ int opaque_thread_index() {
  int t;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(t));
  return t;
}
template <bool kOpaque>
__device__ __forceinline__ int opaque_if(int v) {
  if constexpr (kOpaque) asm volatile("mov.u32 %0, %0;" : "+r"(v));
  return v;
}

// Rows in registers: a lane group or whole warps per row, several rows per block; the block takes
// chunks of rows in turn (blockIdx.x, + gridDim.x, ...) and writes one partial row per chunk.
// Each row's loads are issued while the row before it (in the block's order, across chunks) is
// reduced and written: x and dy of two rows are live in registers, and the dweight/dbias
// accumulators wait in shared memory except while a row adds to them.
// Dynamic shared memory (register_backward_shared_bytes): the scratch of the row sums, the
// accumulators, then [rows_per_block][cols] floats for the partial rows when rows_per_block > 1.
template <class T, class W, int E, int P>
__global__ void __launch_bounds__(kBackwardRowBlock, 1) backward_in_registers(BackwardParams p) {
  dev::enter_chain();
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  auto* acc_vectors = reinterpret_cast<float4*>(shared_bytes + kStagedScratchBytes);
  using Accumulators = SharedAccumulators<E, P>;
  const Accumulators acc(acc_vectors);
  const int acc_threads = (blockDim.x + Accumulators::kStride - 1) / Accumulators::kStride *
                          Accumulators::kStride;
  float* staged = reinterpret_cast<float*>(acc_vectors + Accumulators::kVectors * acc_threads);
  const int tpr = p.threads_per_row;
  const int group0 = threadIdx.x / tpr, t0 = threadIdx.x % tpr;  // the row loop takes copies
  const int rows_per_block = blockDim.x / tpr;
  const int packs = static_cast<int>(p.cols / E);
  const float inv_cols = p.inv_cols;
  const bool want_dh = p.dx != nullptr || p.dresidual != nullptr;
  const int64_t rows_per_chunk = p.groups_per_chunk * rows_per_block;
  // A row ahead in 16-byte packs; single elements, which spilled 4 to 44 bytes with it, load each
  // row when they reach it. Zeroed first: packs past the row's end are never loaded, and their
  // copies must not read indeterminate values.
  constexpr bool kAhead = E > 1;
  // fp16 rows with fp32 weights take their thread's indices through an opaque copy each row, so
  // that the addresses derived from them are computed where a row uses them instead of held across
  // the loop (held, they spilled 8 to 16 bytes beside the row ahead, sm_80 and sm_90). The other
  // instantiations spilled with the copy (bf16 rows with fp32 weights 8 bytes, fp32 rows of two
  // packs 4) and fit without it.
  constexpr bool kOpaqueIndices = kAhead && std::is_same_v<T, __half> && sizeof(W) > sizeof(T);
  BackwardRow<T, E, P> next{};
  if constexpr (kAhead) {
    fetch_row<T, E, P>(p, blockIdx.x * rows_per_chunk + group0, t0, tpr, packs, next);
  }
  // bf16 rows take two rows a turn of the unrolled loop: the row ahead then alternates between
  // two sets of registers instead of being copied into the current one (sm_90: 18 to 24
  // instructions fewer a row). Not fp16 rows, which spilled with it (fp16 weights 4 bytes on
  // sm_80; fp32 weights 4 to 8 bytes), nor fp32 rows (one pack a thread: 4 instructions more).
  constexpr bool kTwoRows = kAhead && std::is_same_v<T, __nv_bfloat16>;
  constexpr int kRowUnroll = kTwoRows ? 2 : 1;

  for (int64_t chunk = blockIdx.x; chunk < p.chunks; chunk += gridDim.x) {
    acc.zero();
    const int64_t chunk_first = chunk * rows_per_chunk;
    // Every thread runs the same iterations: row_total's barriers need the whole block; groups
    // past the last row only add zeros.
#pragma unroll kRowUnroll
    for (int64_t it = 0; it < p.groups_per_chunk; ++it) {
      const int group = opaque_if<kOpaqueIndices>(group0), t = opaque_if<kOpaqueIndices>(t0);
      const int64_t row = chunk_first + it * rows_per_block + group;
      const bool active = row < p.rows;
      BackwardRow<T, E, P> cur{};
      if constexpr (kAhead) {
        cur = next;
        // The block's next row: its group's in the next iteration, or in the block's next chunk.
        const int64_t ahead = it + 1 < p.groups_per_chunk
                                  ? row + rows_per_block
                                  : (chunk + gridDim.x) * rows_per_chunk + group;
        fetch_row<T, E, P>(p, ahead, t, tpr, packs, next);
      } else {
        fetch_row<T, E, P>(p, row, t, tpr, packs, cur);
      }
      const float mean = cur.mean, rstd = cur.rstd;
      dev::Pack<T, E> xs[P], ds[P];
#pragma unroll
      for (int k = 0; k < P; ++k) {
        xs[k] = cur.pack(cur.x[k]);
        ds[k] = cur.pack(cur.dy[k]);
      }
      dev::Floats<2> sums{};  // sum(g), sum(g * xhat)
      if constexpr (E >= 4 && (sizeof(W) > sizeof(T) || P > 1)) {
        // Four elements' accumulators at a time, a 16-byte load of the weight at a time: all of
        // a thread's at once, with fp32 weights or two packs, spilled beside the next row's.
        constexpr int kGroup = E < 16 / static_cast<int>(sizeof(W)) ? E : 16 / sizeof(W);
#pragma unroll
        for (int k = 0; k < P; ++k) {
          const int pack = t + k * tpr;
          if (active && pack < packs) {
#pragma unroll
            for (int i0 = 0; i0 < E; i0 += kGroup) {
              float w[kGroup];
              load_gamma<W, kGroup>(p, pack * E + i0, w);
#pragma unroll
              for (int v = 0; v < kGroup; v += 4) {
                float4 dw = acc.vector(k * E + i0 + v), db = acc.vector(E * P + k * E + i0 + v);
                float* dws = &dw.x;
                float* dbs = &db.x;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                  const int i = i0 + v + j;
                  const float xhat = (dev::element(xs[k], i) - mean) * rstd;
                  const float d = dev::element(ds[k], i), g = d * w[v + j];
                  sums.v[0] += g;
                  sums.v[1] += g * xhat;
                  dws[j] += d * xhat;
                  dbs[j] += d;
                }
                acc.vector(k * E + i0 + v) = dw;
                acc.vector(E * P + k * E + i0 + v) = db;
              }
            }
          }
        }
      } else {
        float acc_dw[P][E], acc_db[P][E];
        acc.load(acc_dw, acc_db);
#pragma unroll
        for (int k = 0; k < P; ++k) {
          const int pack = t + k * tpr;
          if (active && pack < packs) {
            float w[E];
            load_gamma<W, E>(p, pack * E, w);
#pragma unroll
            for (int i = 0; i < E; ++i) {
              const float xhat = (dev::element(xs[k], i) - mean) * rstd;
              const float d = dev::element(ds[k], i), g = d * w[i];
              sums.v[0] += g;
              sums.v[1] += g * xhat;
              acc_dw[k][i] += d * xhat;
              acc_db[k][i] += d;
            }
          }
        }
        acc.store(acc_dw, acc_db);
      }
      if (!want_dh) continue;  // uniform across the grid: barriers stay matched
      sums = row_total<2>(sums, tpr, t, scratch);
      const DxCoefficients dxk =
          dx_coefficients(rstd, p.rms ? 0.0f : sums.v[0] * inv_cols, sums.v[1] * inv_cols);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const int pack = t + k * tpr;
        if (active && pack < packs) {
          float w[E], out[E];
          load_gamma<W, E>(p, pack * E, w);
#pragma unroll
          for (int i = 0; i < E; ++i) {
            out[i] = dx_of(dxk, dev::element(ds[k], i) * w[i],
                           dev::element(xs[k], i) - mean);
          }
          store_dh<T, E>(p, row * p.cols + pack * E, out);
        }
      }
    }
    if (p.partial_dw == nullptr) continue;  // uniform across the grid
    float acc_dw[P][E], acc_db[P][E];
    acc.load(acc_dw, acc_db);
    write_partial<E, P>(acc_dw, p.partial_dw + chunk * p.stride, staged, rows_per_block, group0, t0,
                        tpr, packs, p.cols);
    if (p.partial_db != nullptr) {
      write_partial<E, P>(acc_db, p.partial_db + chunk * p.stride, staged, rows_per_block, group0,
                          t0, tpr, packs, p.cols);
    }
  }
}

// Rows of up to kBackwardStagedMaxCols elements, one block of kBlock threads per row, x and dy
// staged in shared memory as stored: each is read from memory once in 16-byte packs (a copy with
// one pack of each in flight a thread: 32 KiB an SM), then the row sums and this thread's
// dweight/dbias accumulators are taken from shared memory, and dx after the block sum. The block
// takes chunks of rows in turn as the register path does (rows in row order, one partial row per
// chunk, straight from the accumulators). Thread t owns packs t, t + kBlock, ... of every row, in
// memory, in shared memory and in its accumulators, so the staging needs no barrier.
template <class T, class W, int E, int P, int kBlock>
__global__ void __launch_bounds__(kBlock, 1024 / kBlock) backward_staged(BackwardParams p) {
  dev::enter_chain();
  constexpr int kStride = kBlock;
  extern __shared__ __align__(16) unsigned char staged_bytes[];  // scratch, x, then dy
  float* scratch = reinterpret_cast<float*>(staged_bytes);
  const int packs = static_cast<int>(p.cols / E);
  auto* xs_staged = reinterpret_cast<dev::Pack<T, E>*>(staged_bytes + kStagedScratchBytes);
  auto* ds_staged = xs_staged + packs;
  const float inv_cols = p.inv_cols;
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  const bool want_dh = p.dx != nullptr || p.dresidual != nullptr;

  for (int64_t chunk = blockIdx.x; chunk < p.chunks; chunk += gridDim.x) {
    float acc_dw[P][E] = {}, acc_db[P][E] = {};
    const int64_t chunk_first = chunk * p.groups_per_chunk;
    const int64_t chunk_end =
        chunk_first + p.groups_per_chunk < p.rows ? chunk_first + p.groups_per_chunk : p.rows;
    for (int64_t row = chunk_first; row < chunk_end; ++row) {  // uniform across the block
      const int t = opaque_thread_index();
      const float mean = p.rms ? 0.0f : p.save_mean[row], rstd = p.save_rstd[row];
      // Memory to shared memory: x and dy of this thread's packs, one of each at a time (two of
      // each in flight spilled 64 to 96 bytes of accumulators).
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const int pack = t + k * kStride;
        if (pack < packs) {
          const dev::Pack<T, E> xv = load_pack<T, E>(x + row * p.cols + pack * E);
          const dev::Pack<T, E> dv = load_pack<T, E>(dy + row * p.cols + pack * E);
          xs_staged[pack] = xv;
          ds_staged[pack] = dv;
        }
      }
      // The row sums and this thread's dweight/dbias accumulators, from shared memory.
      dev::Floats<2> sums{};  // sum(g), sum(g * xhat)
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const int pack = t + k * kStride;
        if (pack < packs) {
          const dev::Pack<T, E> xv = xs_staged[pack], dv = ds_staged[pack];
          // The weight four columns at a time: eight fp32 weights at once spilled 8 to 16 bytes
          // next to the accumulators.
#pragma unroll
          for (int i0 = 0; i0 < E; i0 += 4) {
            float w[4];
            load_gamma<W, 4>(p, pack * E + i0, w);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const int i = i0 + j;
              const float xhat = (dev::element(xv, i) - mean) * rstd;
              const float d = dev::element(dv, i), g = d * w[j];
              sums.v[0] += g;
              sums.v[1] += g * xhat;
              acc_dw[k][i] += d * xhat;
              acc_db[k][i] += d;
            }
          }
        }
      }
      if (!want_dh) continue;  // uniform across the grid
      sums = dev::block_sum<2>(sums, scratch);
      const DxCoefficients dxk =
          dx_coefficients(rstd, p.rms ? 0.0f : sums.v[0] * inv_cols, sums.v[1] * inv_cols);
      // Not unrolled: no accumulator is indexed here, and the loads of all P packs hoisted ahead
      // would spill next to the accumulators.
#pragma unroll 1
      for (int pack = t; pack < packs; pack += kStride) {
        const dev::Pack<T, E> xv = xs_staged[pack], dv = ds_staged[pack];
        float w[E], out[E];
        load_gamma<W, E>(p, pack * E, w);
#pragma unroll
        for (int i = 0; i < E; ++i) {
          out[i] = dx_of(dxk, dev::element(dv, i) * w[i], dev::element(xv, i) - mean);
        }
        store_dh<T, E, true>(p, row * p.cols + pack * E, out);
      }
    }
    if (p.partial_dw == nullptr) continue;  // uniform across the grid
    const int t = threadIdx.x;
    write_partial<E, P>(acc_dw, p.partial_dw + chunk * p.stride, nullptr, 1, 0, t, kStride, packs,
                        p.cols);
    if (p.partial_db != nullptr) {
      write_partial<E, P>(acc_db, p.partial_db + chunk * p.stride, nullptr, 1, 0, t, kStride, packs,
                          p.cols);
    }
  }
}

// dx of rows of any length, one block per row: sum(g) and sum(g * xhat) over memory, then a
// second read of the row (usually from L2) that writes dx.
template <class T, class W, int E>
__global__ void __launch_bounds__(512) backward_generic(BackwardParams p) {
  dev::enter_chain();
  __shared__ float scratch[64];
  const int64_t packs = p.cols / E;
  const float inv_cols = 1.0f / static_cast<float>(p.cols);
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const float mean = p.rms ? 0.0f : p.save_mean[row], rstd = p.save_rstd[row];
    const T* xr = x + row * p.cols;
    const T* dyr = dy + row * p.cols;
    dev::Floats<2> sums{};
    for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
      const dev::Pack<T, E> xv = load_pack<T, E>(xr + pack * E);
      const dev::Pack<T, E> dv = load_pack<T, E>(dyr + pack * E);
      float w[E];
      load_gamma<W, E>(p, pack * E, w);
#pragma unroll
      for (int i = 0; i < E; ++i) {
        const float xhat = (dev::element(xv, i) - mean) * rstd, g = dev::element(dv, i) * w[i];
        sums.v[0] += g;
        sums.v[1] += g * xhat;
      }
    }
    sums = dev::block_sum<2>(sums, scratch);
    const DxCoefficients dxk =
        dx_coefficients(rstd, p.rms ? 0.0f : sums.v[0] * inv_cols, sums.v[1] * inv_cols);
    for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
      const dev::Pack<T, E> xv = load_pack<T, E>(xr + pack * E);
      const dev::Pack<T, E> dv = load_pack<T, E>(dyr + pack * E);
      float w[E], out[E];
      load_gamma<W, E>(p, pack * E, w);
#pragma unroll
      for (int i = 0; i < E; ++i) {
        out[i] = dx_of(dxk, dev::element(dv, i) * w[i], dev::element(xv, i) - mean);
      }
      store_dh<T, E>(p, row * p.cols + pack * E, out);
    }
  }
}

// dweight/dbias partials of long rows: block (x, y) takes 256 packs of columns (one a thread) and
// chunk y of the rows, adds its rows in row order and writes its piece of partial row y.
template <class T, int E>
__global__ void __launch_bounds__(256) column_partials(BackwardParams p) {
  dev::enter_chain();
  const int64_t pack = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pack * E >= p.cols) return;  // no barriers below
  const int64_t rows_per_chunk = p.groups_per_chunk;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t last = first + rows_per_chunk < p.rows ? first + rows_per_chunk : p.rows;
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  float dw[E] = {}, db[E] = {};
  for (int64_t row = first; row < last; ++row) {
    const float mean = p.rms ? 0.0f : p.save_mean[row], rstd = p.save_rstd[row];
    float v[E], d[E];
    dev::load_floats<T, E>(x + row * p.cols + pack * E, v);
    dev::load_floats<T, E>(dy + row * p.cols + pack * E, d);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      dw[i] += d[i] * ((v[i] - mean) * rstd);
      db[i] += d[i];
    }
  }
  dev::store_floats<float, E>(p.partial_dw + blockIdx.y * p.stride + pack * E, dw);
  if (p.partial_db)
    dev::store_floats<float, E>(p.partial_db + blockIdx.y * p.stride + pack * E, db);
}

// dbias_in partials: the column sums of dh as stored (dx or dresidual), laid out as
// column_partials' (block (x, y): 256 packs of columns, chunk y of the rows, rows in order).
template <class T, int E>
__global__ void __launch_bounds__(256)
    dh_column_partials(const T* dh, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                       int64_t stride, float* partial) {
  dev::enter_chain();
  const int64_t pack = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pack * E >= cols) return;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t last = first + rows_per_chunk < rows ? first + rows_per_chunk : rows;
  float sum[E] = {};
  for (int64_t row = first; row < last; ++row) {
    float v[E];
    dev::load_floats<T, E>(dh + row * cols + pack * E, v);
#pragma unroll
    for (int i = 0; i < E; ++i) sum[i] += v[i];
  }
  dev::store_floats<float, E>(partial + blockIdx.y * stride + pack * E, sum);
}

// dweight, dbias from the partial rows: a tile of col_threads * V columns per block; row lane y
// adds partial rows y, y + lanes, ... in order, then the lanes add up in a fixed tree.
template <class W, int V>
__global__ void __launch_bounds__(256)
    finalize_columns(const float* partial_dw, const float* partial_db, int64_t chunks, int64_t cols,
                     int64_t stride, W* dweight, W* dbias) {
  dev::enter_chain();
  __shared__ float tree[2][256 * V];
  const int lanes = blockDim.y, slot = threadIdx.y * blockDim.x + threadIdx.x;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  float sw[V] = {}, sb[V] = {};
  if (col < cols) {
    for (int64_t r = threadIdx.y; r < chunks; r += lanes) {
      float w[V], b[V];
      dev::load_floats<float, V>(partial_dw + r * stride + col, w);
      if (partial_db) dev::load_floats<float, V>(partial_db + r * stride + col, b);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        sw[i] += w[i];
        if (partial_db) sb[i] += b[i];
      }
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) {
    tree[0][slot * V + i] = sw[i];
    tree[1][slot * V + i] = sb[i];
  }
  __syncthreads();
  for (int half = lanes / 2; half > 0; half /= 2) {
    if (threadIdx.y < half) {
      const int other = slot + half * blockDim.x;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        tree[0][slot * V + i] += tree[0][other * V + i];
        tree[1][slot * V + i] += tree[1][other * V + i];
      }
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && col < cols) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (dweight) dweight[col + i] = dev::from_float<W>(tree[0][slot * V + i]);
      if (dbias) dbias[col + i] = dev::from_float<W>(tree[1][slot * V + i]);
    }
  }
}

// Grid, shared memory and partial rows of one backward. The workspace holds the partial rows:
// dweight's, then (256-byte aligned) dbias'.
struct Plan {
  RowTiling tiling;
  PartialPlan partials;
  int grid;              // in registers: blocks over the chunks; generic: blocks over the rows
  size_t shared_bytes;   // dynamic shared memory: register_backward_shared_bytes, or staged rows
  size_t partial_bytes;  // one of the two partial arrays, chunks x stride floats, 256-byte aligned
  RowSplit split;        // generic path: few long rows take dx split across blocks
  size_t split_bytes;    // their row sums, after the two partial arrays
};

// Calls use(kernel) with the in-registers instantiation that serves a tiling, or use(nullptr-like
// generic) for the generic path.
template <class T, class W, class Use>
void with_kernel(const RowTiling& tiling, Use&& use) {
  constexpr int kE = 16 / sizeof(T);
  if (tiling.staged) {
    if (tiling.block_threads == kBackwardStagedBlock) {
      use(backward_staged<T, W, kE, kBackwardStagedElems / kE, kBackwardStagedBlock>);
    } else {
      use(backward_staged<T, W, kE, kBackwardStagedElems / kE, kBackwardStagedWideBlock>);
    }
  } else if (!tiling.in_registers) {
    if (tiling.pack_elems == 1) {
      use(backward_generic<T, W, 1>);
    } else {
      use(backward_generic<T, W, kE>);
    }
  } else if (tiling.pack_elems == 1) {
    use(backward_in_registers<T, W, 1, kBackwardScalarElems>);
  } else if (tiling.packs_per_thread == 1) {
    use(backward_in_registers<T, W, kE, 1>);
  } else if constexpr (kE * 2 <= kBackwardMaxElems) {  // two packs only within the budget
    use(backward_in_registers<T, W, kE, 2>);
  } else {
    fail(NK_ERROR_INTERNAL, "no backward kernel for ", tiling.packs_per_thread, " packs of ", kE,
         " elements");
  }
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// The part of the plan that depends on the shape only (tiling, partial rows and their bytes): the
// workspace size comes from it, so it cannot depend on the device.
template <class T>
Plan shape_plan(const RowShape& s, bool vector_access, int64_t shared_limit) {
  Plan plan{};
  plan.tiling = choose_backward_tiling(s.cols, sizeof(T), vector_access, shared_limit);
  const RowTiling& tiling = plan.tiling;
  if (tiling.in_registers) {
    const int rpb = tiling.rows_per_block();
    plan.partials = plan_partials(s.rows, rpb, 1);
    plan.shared_bytes = static_cast<size_t>(register_backward_shared_bytes(tiling, s.cols));
  } else if (tiling.staged) {
    plan.partials = plan_partials(s.rows, 1, 1);  // as a block per row in registers
    plan.shared_bytes = static_cast<size_t>(tiling.shared_bytes);
  } else {
    plan.partials = plan_partials(s.rows, 1, kMinGenericChunkRows);
    plan.split = plan_row_split(s.rows, s.cols, sizeof(T), vector_access);
    plan.split_bytes = static_cast<size_t>(split_backward_bytes(s.rows, plan.split));
  }
  plan.partial_bytes =
      align256(static_cast<size_t>(plan.partials.chunks) * partial_stride(s.cols) * sizeof(float));
  return plan;
}

// The shape's plan with the grid: at most the blocks the device holds at once.
template <class T, class W>
Plan make_plan(const RowShape& s, bool vector_access, int sm_count) {
  Plan plan = shape_plan<T>(s, vector_access, dynamic_shared_limit());
  const RowTiling& tiling = plan.tiling;
  int per_sm = 0;
  with_kernel<T, W>(tiling, [&](auto kernel) {
    if (plan.shared_bytes > kDefaultDynamicShared) {
      dev::check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(plan.shared_bytes)),
                      "cudaFuncSetAttribute(max dynamic shared memory)");
    }
    dev::check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                        &per_sm, kernel, tiling.block_threads, plan.shared_bytes),
                    "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  });
  const int64_t resident = static_cast<int64_t>(per_sm > 0 ? per_sm : 1) * sm_count;
  const int64_t work = tiling.in_registers || tiling.staged ? plan.partials.chunks : s.rows;
  plan.grid = static_cast<int>(work < resident ? work : resident);
  return plan;
}

template <class T, class W>
void launch_finalize(const RowShape& s, const Plan& plan, const float* partial_dw,
                     const float* partial_db, void* dweight, void* dbias, cudaStream_t stream) {
  const FinalizeTiling f = choose_finalize_tiling(s.cols, plan.partials.chunks);
  const dim3 block(f.col_threads, f.row_lanes);
  const dim3 grid(static_cast<unsigned>(f.blocks(s.cols)));
  auto* dw = static_cast<W*>(dweight);
  auto* db = static_cast<W*>(dbias);
  const int64_t stride = partial_stride(s.cols);
  if (f.vec == 4) {
    dev::launch_dependent(finalize_columns<W, 4>, grid, block, 0, stream, partial_dw, partial_db,
                          plan.partials.chunks, s.cols, stride, dw, db);
  } else {
    dev::launch_dependent(finalize_columns<W, 1>, grid, block, 0, stream, partial_dw, partial_db,
                          plan.partials.chunks, s.cols, stride, dw, db);
  }
  dev::check_cuda(cudaGetLastError(), "row norm dweight/dbias finalize launch");
}

}  // namespace

size_t row_norm_backward_workspace_size(const RowBackwardArgs& a) {
  size_t bytes = 0;
  dev::dispatch_row_dtypes(a.shape, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    // Either access width, and staged or not: the device's shared memory must not change it.
    for (bool vector_access : {true, false}) {
      if (vector_access && a.shape.cols % (16 / sizeof(T)) != 0) continue;
      for (int64_t shared_limit : {int64_t{0}, std::numeric_limits<int64_t>::max()}) {
        const Plan plan = shape_plan<T>(a.shape, vector_access, shared_limit);
        const size_t need = 2 * plan.partial_bytes + plan.split_bytes;
        if (need > bytes) bytes = need;
      }
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
                               dev::aligned16(a.weight) && dev::aligned16(a.dh_extra) &&
                               dev::aligned16(a.dresidual);
    const Plan plan = make_plan<T, W>(s, vector_access, l.sm_count);
    const bool want_params = a.dweight != nullptr || a.dbias != nullptr;
    auto* workspace = static_cast<unsigned char*>(l.workspace);
    float* partial_dw = want_params ? reinterpret_cast<float*>(workspace) : nullptr;
    float* partial_db =
        a.dbias != nullptr ? reinterpret_cast<float*>(workspace + plan.partial_bytes) : nullptr;
    BackwardParams p{a.x,
                     a.dy,
                     a.weight,
                     a.save_mean,
                     a.save_rstd,
                     a.dx,
                     a.fusion.residual ? a.dh_extra : nullptr,
                     a.fusion.residual ? a.dresidual : nullptr,
                     partial_dw,
                     partial_db,
                     s.rows,
                     s.cols,
                     partial_stride(s.cols),
                     plan.partials.chunks,
                     plan.partials.groups_per_chunk,
                     s.rms,
                     a.fusion.zero_centered ? 1.0f : 0.0f,
                     plan.tiling.threads_per_row,
                     1.0f / static_cast<float>(s.cols)};
    auto stream = static_cast<cudaStream_t>(l.stream);
    if (plan.tiling.in_registers || plan.tiling.staged) {
      with_kernel<T, W>(plan.tiling, [&](auto kernel) {
        dev::launch_dependent(kernel, plan.grid, plan.tiling.block_threads, plan.shared_bytes,
                              stream, p);
      });
      dev::check_cuda(cudaGetLastError(), "row norm backward launch");
    } else {
      // The column pass first: with dx == dy the dx kernels overwrite dy, which it reads.
      if (want_params) {
        p.groups_per_chunk = plan.partials.rows_per_chunk();
        const int e = plan.tiling.pack_elems;
        const dim3 grid(static_cast<unsigned>((s.cols / e + 255) / 256),
                        static_cast<unsigned>(plan.partials.chunks));
        if (e == 1) {
          dev::launch_dependent(column_partials<T, 1>, grid, 256, 0, stream, p);
        } else {
          dev::launch_dependent(column_partials<T, 16 / sizeof(T)>, grid, 256, 0, stream, p);
        }
        dev::check_cuda(cudaGetLastError(), "row norm dweight/dbias column pass launch");
      }
      if ((p.dx != nullptr || p.dresidual != nullptr) && plan.split.slices > 0) {
        row_norm_split_backward(p, s, plan.split, workspace + 2 * plan.partial_bytes, stream);
      } else if (p.dx != nullptr || p.dresidual != nullptr) {
        with_kernel<T, W>(plan.tiling, [&](auto kernel) {
          dev::launch_dependent(kernel, plan.grid, plan.tiling.block_threads, 0, stream, p);
        });
        dev::check_cuda(cudaGetLastError(), "row norm backward launch");
      }
    }
    if (want_params) {
      launch_finalize<T, W>(s, plan, partial_dw, partial_db, a.dweight, a.dbias, stream);
    }
    if (a.fusion.residual && a.dbias_in != nullptr) {
      // After the finalize above on the same stream: the first partial array is free again.
      float* partial = reinterpret_cast<float*>(workspace);
      const T* dh = static_cast<const T*>(a.dx != nullptr ? a.dx : a.dresidual);
      const int e = plan.tiling.pack_elems;
      const dim3 grid(static_cast<unsigned>((s.cols / e + 255) / 256),
                      static_cast<unsigned>(plan.partials.chunks));
      const int64_t rows_per_chunk = plan.partials.rows_per_chunk();
      const int64_t stride = partial_stride(s.cols);
      if (e == 1) {
        dev::launch_dependent(dh_column_partials<T, 1>, grid, 256, 0, stream, dh, s.rows, s.cols,
                              rows_per_chunk, stride, partial);
      } else {
        dev::launch_dependent(dh_column_partials<T, 16 / sizeof(T)>, grid, 256, 0, stream, dh,
                              s.rows, s.cols, rows_per_chunk, stride, partial);
      }
      dev::check_cuda(cudaGetLastError(), "row norm dbias_in column pass launch");
      launch_finalize<T, W>(s, plan, partial, nullptr, a.dbias_in, nullptr, stream);
    }
  });
}

}  // namespace nk::cuda
