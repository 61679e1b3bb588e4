// Layer norm and RMS norm forward on the GPU.
//
// Rows of up to 512 16-byte packs (4096 elements of 16 bits, 2048 of fp32) live in registers, one
// pack a thread (row_norm_tiling.hpp picks a lane group or a block per row): x is read from memory
// once, the statistics are the exact two-pass ones over the registers (mean, then the centred sum
// of squares), and y is written with the same 16-byte packs. Each thread loads its pack of the
// next row before it reduces the current one, and (unfused, parameters in the activation dtype)
// keeps its weight and bias packs in registers across rows; every instantiation fits 64
// registers, so at least 1024 threads stay resident on an SM.
// Layer norm first shifts each row by its first element x0: x - x0 is exact for nearby values
// (Sterbenz), so with |mean| >> std the sums stay small and y keeps fp32 accuracy instead of
// inheriting the rounding of a mean near 1e4.
// Longer rows in 16-byte packs are staged in dynamic shared memory when they fit the portable
// limit (shared_memory_limit.hpp: 99 KB, bf16 up to about 50K elements, fp32 25K): one block per
// row reads x (and the residual, bias_in) once, keeps h as stored in shared memory, and takes the
// same exact two-pass statistics and y from there; two such blocks (64 registers a thread) fit an
// SM. Rows that fit neither (or single-element packs past 8192) take the generic path: one block
// per row, Welford over memory, then a second read of the row (and the residual) to normalize,
// usually from L2. Every grid is persistent: at most as many
// blocks as fit on the device at once, each looping over rows. Instantiated per dtype, weight
// dtype and pack shape, never per hidden size. Fewer than 128 rows of more than 16384 elements in
// 16-byte packs go to row_norm_split_forward.cu instead: one block a row would leave SMs idle.
//
// The fused forms are runtime switches of the same kernels (uniform across the grid, so they cost
// a predictable branch, not an instantiation): a residual add (h = x + residual + bias_in rounded
// once to the dtype, optionally stored, then normalized), a zero-centred weight (gamma = 1 +
// weight), and an fp8 output (common/fp8_encode.hpp: the bytes of src/fp8.hpp, the CPU encoder,
// one byte an element). The fp8 output's absolute maximum is kept as the bits of |y|, which order
// like the values (a NaN's bits are above infinity's, so a NaN wins): y_amax is zeroed on the
// stream, then each warp folds its maximum into it with an integer atomicMax. A maximum is exact in
// any order, so neither the grid nor the schedule changes its bits, and no workspace is needed.
#include <cstdint>

#include "common/check.cuh"
#include "common/dependent_launch.cuh"
#include "common/device_types.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "common/welford.cuh"
#include "row_norm.hpp"
#include "row_norm_forward_io.cuh"
#include "row_norm_split_forward.hpp"
#include "row_norm_tiling.hpp"
#include "shared_memory_limit.hpp"

namespace nk::cuda {
namespace {

// Which threads share a row in an instantiation of the register kernel: a lane group
// (threads_per_row <= 32), the block, or either, decided by threads_per_row at run time.
enum class RowThreads { kLaneGroup, kBlock, kEither };

// The sum of one value over the threads of a row: its lane group, or the block.
__device__ __forceinline__ float row_total(dev::Floats<1> a, bool block_row, int tpr,
                                           float* scratch) {
  return block_row ? dev::block_sum<1>(a, scratch).v[0] : dev::group_sum<1>(a, tpr).v[0];
}

// The packs of a row that one thread holds, as stored: x, and the residual when fused. The register
// kernel fetches them a row ahead, so that the next row's loads are in flight while this row is
// reduced and written.
template <class T, int E, int P>
struct RowInput {
  dev::Pack<T, E> x[P];
  dev::Pack<T, E> residual[P];
};

template <class T, int E, int P>
__device__ __forceinline__ void fetch_row(const ForwardParams& p, int64_t row, int t, int tpr,
                                          int packs, RowInput<T, E, P>& in) {
  if (row >= p.rows) return;
  const int64_t base = row * p.cols;
#pragma unroll
  for (int k = 0; k < P; ++k) {
    const int pack = t + k * tpr;
    if (pack >= packs) continue;
    const int64_t offset = base + static_cast<int64_t>(pack) * E;
    in.x[k] = *reinterpret_cast<const dev::Pack<T, E>*>(static_cast<const T*>(p.x) + offset);
    if (p.residual != nullptr) {
      in.residual[k] =
          *reinterpret_cast<const dev::Pack<T, E>*>(static_cast<const T*>(p.residual) + offset);
    }
  }
}


// gamma and beta of a thread's packs. A thread's columns are the same in every row, so where the
// parameters are as narrow as the activations (16-byte packs of W) they are loaded once, before the
// first row, and kept in registers as stored. Wider ones (fp32 parameters of 16-bit activations: 32
// bytes a pack) and those of the fused forms (whose residual pack is in flight instead) would not
// fit 64 registers: they are read for each row, from L1.
template <class T, class W, int E, int P, bool kFused>
struct RowAffine {
  static constexpr bool kHeld = E > 1 && sizeof(W) == sizeof(T) && !kFused;
  dev::Pack<W, E> weight[kHeld ? P : 1];
  dev::Pack<W, E> bias[kHeld ? P : 1];

  // An absent weight is held as ones and an absent bias as zeros (exact in every W), so that the
  // rows need no branch on them; only unfused kernels hold, so there is no zero-centred weight.
  __device__ __forceinline__ void load(const ForwardParams& p, int t, int tpr, int packs) {
    if constexpr (kHeld) {
      const W* w = static_cast<const W*>(p.weight);
      const W* b = static_cast<const W*>(p.bias);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const int pack = t + k * tpr;
        if (pack >= packs) continue;
        if (w != nullptr) {
          weight[k] = *reinterpret_cast<const dev::Pack<W, E>*>(w + pack * E);
        } else {
#pragma unroll
          for (int i = 0; i < E; ++i) weight[k].v[i] = dev::from_float<W>(1.0f);
        }
        if (b != nullptr) {
          bias[k] = *reinterpret_cast<const dev::Pack<W, E>*>(b + pack * E);
        } else {
#pragma unroll
          for (int i = 0; i < E; ++i) bias[k].v[i] = dev::from_float<W>(0.0f);
        }
      }
    }
  }

  // gamma (weight, 1 + weight when zero-centred, or 1) and beta (bias or 0) of pack k.
  __device__ __forceinline__ void get(const ForwardParams& p, int k, int64_t col, float (&w)[E],
                                      float (&b)[E]) const {
    if constexpr (kHeld) {
#pragma unroll
      for (int i = 0; i < E; ++i) {
        w[i] = dev::to_float(weight[k].v[i]);
        b[i] = dev::to_float(bias[k].v[i]);
      }
    } else {
      load_affine<W, E>(p, col, w, b);
    }
  }
};

// One row per lane group or per block in registers; rows strided over a persistent grid, each
// row's loads issued while the row before it is reduced and written. With 16-byte packs the two
// row shapes are separate instantiations, so that neither carries the other's reduction in its
// loop; single-element packs keep one instantiation for both (split, their fused block rows
// spilled).
template <class T, class W, int E, int P, bool kFused, RowThreads kRows>
__global__ void __launch_bounds__(forward_block_bound(E), forward_min_blocks(E))
    forward_in_registers(ForwardParams p) {
  dev::enter_chain();
  without_fusion<kFused>(p);
  __shared__ float scratch[32];
  __shared__ float block_shift;
  const int tpr = p.threads_per_row;
  const bool block_row = kRows == RowThreads::kEither ? tpr > 32 : kRows == RowThreads::kBlock;
  const int group = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int64_t rows_per_block = blockDim.x / tpr;
  const int64_t row_stride = gridDim.x * rows_per_block;
  const int packs = static_cast<int>(p.cols / E);
  const float inv_cols = 1.0f / static_cast<float>(p.cols);
  unsigned amax_bits = 0;
  // Zeroed first: packs past the row's end (and a next row past the last) are never loaded, and
  // their copies must not read indeterminate values.
  RowAffine<T, W, E, P, kFused> affine{};
  affine.load(p, t, tpr, packs);
  // Single-element packs (eight a thread) load each row when they reach it: a row ahead would not
  // fit the register budget.
  constexpr bool kAhead = E > 1;
  RowInput<T, E, P> next{};
  if constexpr (kAhead) {
    fetch_row<T, E, P>(p, blockIdx.x * rows_per_block + group, t, tpr, packs, next);
  }

  // Every thread runs the same number of iterations: lane-group shuffles and block barriers need
  // the whole warp and block; groups past the last row only contribute zeros.
  for (int64_t first = blockIdx.x * rows_per_block; first < p.rows; first += row_stride) {
    const int64_t row = first + group;
    const bool active = row < p.rows;
    RowInput<T, E, P> in{};
    if constexpr (kAhead) {
      in = next;
      fetch_row<T, E, P>(p, row + row_stride, t, tpr, packs, next);
    }
    float v[P][E] = {};
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int pack = t + k * tpr;
      if (active && pack < packs) {
        if constexpr (kAhead) {
          finish_input<T, W, E>(p, row * p.cols + pack * E, pack * E, in.x[k], in.residual[k],
                                v[k]);
        } else {
          load_input<T, W, E>(p, row * p.cols, pack * E, v[k]);
        }
      }
    }
    // Layer norm: v becomes x - x0 (x0 is element 0, in thread 0 of the row) and the mean of the
    // shifted row is `centre`; RMS norm keeps x and centre 0.
    float shift = 0.0f, centre = 0.0f;
    if (!p.rms) {
      if (!block_row) {
        shift = __shfl_sync(0xffffffffu, v[0][0], 0, tpr);
      } else {
        if (threadIdx.x == 0) block_shift = v[0][0];
        __syncthreads();
        shift = block_shift;
      }
      dev::Floats<1> sum{};
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
      centre = row_total(sum, block_row, tpr, scratch) * inv_cols;
    }
    dev::Floats<1> squares{};
#pragma unroll
    for (int k = 0; k < P; ++k) {
      if (active && t + k * tpr < packs) {
#pragma unroll
        for (int i = 0; i < E; ++i) squares.v[0] += (v[k][i] - centre) * (v[k][i] - centre);
      }
    }
    const float rstd = rsqrtf(row_total(squares, block_row, tpr, scratch) * inv_cols + p.eps);
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int pack = t + k * tpr;
      if (active && pack < packs) {
        float w[E], b[E], out[E];
        affine.get(p, k, pack * E, w, b);
#pragma unroll
        for (int i = 0; i < E; ++i) out[i] = (v[k][i] - centre) * rstd * w[i] + b[i];
        store_output<T, E>(p, row * p.cols + pack * E, out, amax_bits);
      }
    }
    if (active && t == 0) {
      if (p.save_mean) p.save_mean[row] = shift + centre;
      if (p.save_rstd) p.save_rstd[row] = rstd;
    }
  }
  fold_amax(p, amax_bits);
}

// One block per row, any length: Welford over x - x0, a 16-byte pack at a time (or the sum of
// squares for RMS), over memory, then a second pass that normalizes.
template <class T, class W, int E, bool kFused>
__global__ void __launch_bounds__(512, 2) forward_generic(ForwardParams p) {
  dev::enter_chain();
  without_fusion<kFused>(p);
  __shared__ dev::Welford welford_scratch[32];
  __shared__ float scratch[32];
  const int64_t packs = p.cols / E;
  unsigned amax_bits = 0;
  ForwardParams first_pass = p;  // the statistics pass leaves h to the second one
  first_pass.h = nullptr;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const int64_t base = row * p.cols;
    float shift = 0.0f, centre = 0.0f, var;
    if (p.rms) {
      dev::Floats<1> squares{};
      for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
        float v[E];
        load_input<T, W, E>(first_pass, base, pack * E, v);
#pragma unroll
        for (int i = 0; i < E; ++i) squares.v[0] += v[i] * v[i];
      }
      var = dev::block_sum<1>(squares, scratch).v[0] / static_cast<float>(p.cols);
    } else {
      float first[1];  // as in the register path: Welford over h - h0
      load_input<T, W, 1>(first_pass, base, 0, first);
      shift = first[0];
      // 16-byte packs: the pack's exact two-pass sums, then one Chan merge (one division a pack,
      // where a Welford push a value divided for each). Single elements: a push, the cheaper of
      // the two for one value.
      dev::Welford s = dev::welford_empty();
      for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
        float v[E];
        load_input<T, W, E>(first_pass, base, pack * E, v);
#pragma unroll
        for (int i = 0; i < E; ++i) v[i] -= shift;
        if constexpr (E == 1) {
          s = dev::welford_push(s, v[0]);
        } else {
          s = dev::welford_push_values<E>(s, v);
        }
      }
      s = dev::block_reduce(s, welford_scratch);
      centre = s.mean;
      var = dev::welford_biased_var(s);
    }
    const float rstd = rsqrtf(var + p.eps);
    for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
      float v[E], w[E], b[E];
      load_input<T, W, E>(p, base, pack * E, v);
      load_affine<W, E>(p, pack * E, w, b);
#pragma unroll
      for (int i = 0; i < E; ++i) v[i] = ((v[i] - shift) - centre) * rstd * w[i] + b[i];
      store_output<T, E>(p, base + pack * E, v, amax_bits);
    }
    if (threadIdx.x == 0) {
      if (p.save_mean) p.save_mean[row] = shift + centre;
      if (p.save_rstd) p.save_rstd[row] = rstd;
    }
  }
  fold_amax(p, amax_bits);
}

// One row per block staged in shared memory: the row (h when fused) is read from memory once, in
// 16-byte packs, kStagedInFlight loads in flight a thread, into shared memory as stored; then the
// exact two-pass statistics (layer norm over h - h0, as the register path) and y from there.
// Thread t only ever touches packs t, t + blockDim.x, ... of the staged row, so the staging needs
// no barrier of its own. Rows strided over a persistent grid.
template <class T, class W, int E, bool kFused>
__global__ void __launch_bounds__(kStagedForwardBlock, kStagedForwardMinBlocks)
    forward_staged(ForwardParams p) {
  dev::enter_chain();
  without_fusion<kFused>(p);
  extern __shared__ __align__(16) unsigned char staged_bytes[];  // scratch, then the row
  float* scratch = reinterpret_cast<float*>(staged_bytes);
  auto* staged = reinterpret_cast<dev::Pack<T, E>*>(staged_bytes + kStagedScratchBytes);
  const int packs = static_cast<int>(p.cols / E);
  const int stride = blockDim.x;
  const float inv_cols = 1.0f / static_cast<float>(p.cols);
  unsigned amax_bits = 0;
  ForwardParams shift_read = p;  // h0 is read by every thread: it must not store h
  shift_read.h = nullptr;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const int64_t base = row * p.cols;
    float shift = 0.0f, centre = 0.0f;
    if (!p.rms) {
      float first[1];
      load_input<T, W, 1>(shift_read, base, 0, first);
      shift = first[0];
    }
    // Memory to shared memory, with the sum of h - h0 (layer norm) on the way.
    dev::Floats<1> sum{};
    for (int lead = threadIdx.x; lead < packs; lead += kStagedInFlight * stride) {
      dev::Pack<T, E> h[kStagedInFlight];
#pragma unroll
      for (int k = 0; k < kStagedInFlight; ++k) {
        const int pack = lead + k * stride;
        if (pack < packs) h[k] = load_input_pack<T, W, E>(p, base, pack * E);
      }
#pragma unroll
      for (int k = 0; k < kStagedInFlight; ++k) {
        const int pack = lead + k * stride;
        if (pack < packs) {
          staged[pack] = h[k];
          if (!p.rms) {
#pragma unroll
            for (int i = 0; i < E; ++i) sum.v[0] += dev::to_float(h[k].v[i]) - shift;
          }
        }
      }
    }
    if (!p.rms) centre = dev::block_sum<1>(sum, scratch).v[0] * inv_cols;
    dev::Floats<1> squares{};
    for (int pack = threadIdx.x; pack < packs; pack += stride) {
      const dev::Pack<T, E> h = staged[pack];
#pragma unroll
      for (int i = 0; i < E; ++i) {
        const float c = (dev::to_float(h.v[i]) - shift) - centre;
        squares.v[0] += c * c;
      }
    }
    const float rstd = rsqrtf(dev::block_sum<1>(squares, scratch).v[0] * inv_cols + p.eps);
    for (int pack = threadIdx.x; pack < packs; pack += stride) {
      const dev::Pack<T, E> h = staged[pack];
      float w[E], b[E], out[E];
      load_affine<W, E>(p, pack * E, w, b);
#pragma unroll
      for (int i = 0; i < E; ++i) {
        out[i] = ((dev::to_float(h.v[i]) - shift) - centre) * rstd * w[i] + b[i];
      }
      store_output<T, E, true>(p, base + pack * E, out, amax_bits);
    }
    if (threadIdx.x == 0) {
      if (p.save_mean) p.save_mean[row] = shift + centre;
      if (p.save_rstd) p.save_rstd[row] = rstd;
    }
  }
  fold_amax(p, amax_bits);
}

// Persistent grid: no more blocks than are resident at once, and no more than there are rows.
template <class Kernel>
int grid_size(Kernel kernel, const RowTiling& tiling, int64_t rows, int sm_count) {
  int per_sm = 0;
  dev::check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                      &per_sm, kernel, tiling.block_threads, tiling.shared_bytes),
                  "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  const int64_t resident = static_cast<int64_t>(per_sm > 0 ? per_sm : 1) * sm_count;
  const int64_t row_groups = (rows + tiling.rows_per_block() - 1) / tiling.rows_per_block();
  return static_cast<int>(row_groups < resident ? row_groups : resident);
}

// Calls use(kernel) with the instantiation that serves a tiling.
template <class T, class W, bool kFused, class Use>
void with_kernel(const RowTiling& tiling, Use&& use) {
  constexpr int kE = 16 / sizeof(T);
  if (tiling.staged) {
    use(forward_staged<T, W, kE, kFused>);
  } else if (!tiling.in_registers) {
    if (tiling.pack_elems == 1) {
      use(forward_generic<T, W, 1, kFused>);
    } else {
      use(forward_generic<T, W, kE, kFused>);
    }
  } else if (tiling.pack_elems == 1) {
    use(forward_in_registers<T, W, 1, 8, kFused, RowThreads::kEither>);
  } else {
    if (tiling.threads_per_row > 32) {
      use(forward_in_registers<T, W, kE, 1, kFused, RowThreads::kBlock>);
    } else {
      use(forward_in_registers<T, W, kE, 1, kFused, RowThreads::kLaneGroup>);
    }
  }
}

}  // namespace

// The split's partials, sized for 16-byte access (pointers are not known to the query; the other
// paths need none).
size_t row_norm_forward_workspace_size(const RowForwardArgs& a) {
  const RowShape& s = a.shape;
  const int elem = static_cast<int>(dtype_size(s.dtype));
  return static_cast<size_t>(plan_row_split(s.rows, s.cols, elem, true).workspace_bytes(s.rows));
}

void row_norm_forward(const RowForwardArgs& a, const Launch& l) {
  const RowShape& s = a.shape;
  const int elem = static_cast<int>(dtype_size(s.dtype));
  const bool vector_access = s.cols % (16 / elem) == 0 && dev::aligned16(a.x) &&
                             dev::aligned16(a.residual) && dev::aligned16(a.bias_in) &&
                             dev::aligned16(a.h) && dev::aligned16(a.y) &&
                             dev::aligned16(a.weight) && dev::aligned16(a.bias);
  const RowTiling tiling = choose_row_tiling(s.cols, elem, vector_access, dynamic_shared_limit());
  ForwardParams p{};
  p.x = a.x;
  p.residual = a.fusion.residual ? a.residual : nullptr;
  p.bias_in = a.fusion.residual ? a.bias_in : nullptr;
  p.weight = a.weight;
  p.bias = a.bias;
  p.h = a.fusion.residual ? a.h : nullptr;
  p.y = a.y;
  p.save_mean = a.save_mean;
  p.save_rstd = a.save_rstd;
  p.y_scale = a.fusion.fp8() ? a.y_scale : nullptr;
  p.rows = s.rows;
  p.cols = s.cols;
  p.eps = static_cast<float>(a.eps);
  p.rms = s.rms;
  p.zero_centered = a.fusion.zero_centered;
  p.fp8 = a.fusion.output == NK_OUTPUT_FP8_E4M3 ? 1 : a.fusion.output == NK_OUTPUT_FP8_E5M2 ? 2 : 0;
  p.threads_per_row = tiling.threads_per_row;
  auto stream = static_cast<cudaStream_t>(l.stream);
  if (a.fusion.fp8() && a.y_amax != nullptr) {
    p.amax_bits = reinterpret_cast<unsigned*>(a.y_amax);  // float and unsigned: 4 aligned bytes
    dev::check_cuda(cudaMemsetAsync(p.amax_bits, 0, sizeof(unsigned), stream), "cudaMemsetAsync");
  }
  auto launch = [&](auto kernel) {
    if (tiling.shared_bytes > kDefaultDynamicShared) {
      dev::check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(tiling.shared_bytes)),
                      "cudaFuncSetAttribute(max dynamic shared memory)");
    }
    const int grid = grid_size(kernel, tiling, s.rows, l.sm_count);
    dev::launch_dependent(kernel, grid, tiling.block_threads, tiling.shared_bytes, stream, p);
    dev::check_cuda(cudaGetLastError(), "row norm forward launch");
  };
  const bool fused = a.fusion.residual || a.fusion.zero_centered || a.fusion.fp8();
  const RowSplit split = plan_row_split(s.rows, s.cols, elem, vector_access);
  if (split.slices > 0) {
    row_norm_split_forward(p, s, fused, split, l.workspace, stream);
    return;
  }
  dev::dispatch_row_dtypes(s, [&](auto t, auto w) {
    if (fused) {
      with_kernel<decltype(t), decltype(w), true>(tiling, launch);
    } else {
      with_kernel<decltype(t), decltype(w), false>(tiling, launch);
    }
  });
}

}  // namespace nk::cuda
