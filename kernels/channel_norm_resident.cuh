// Instance and group norm training forward with one read of x (plan_resident_rows): a block per
// statistic copies its row of L contiguous elements (NCHW: (n, c), or (n, g)'s C/G channels) into
// shared memory, takes the exact two-pass statistics of x - x0 from there (x0 the row's first
// element, as the split path shifts, so |mean| >> std keeps its accuracy), and writes y (with the
// fused residual, activation and ReLU mask) from there: x is read once and y written once, with no
// partials or finalize (instance norm's running update needs 8 bytes of workspace a row). The
// block's threads, and so its reduction tree, depend on L only; the global accesses are 16-byte
// packs when every pointer allows, else single elements into the same staged packs, so the bits do
// not depend on the pointers either. Per element: 1 shared load and 2 adds (the mean), 1 shared
// load, a subtract and an FMA (the centred squares), then a shared load, subtract, FMA (+ z) and
// the activation (y). Group norm's weight changes along the row every S elements: its coefficients
// come once per pack when S is a multiple of the pack, else once per run of a channel's elements
// within a pack.
// Rows above kResidentMaxBytes stage their first 96 KiB (the head) and read the rest (the tail)
// from memory in each of the three passes (four packs in flight a thread in the first). A thread
// takes its packs in the same order from either place, so no bit depends on where the head ends.
// Rows that are not whole packs stage the packs that lie wholly in them; each of the fewer than 2 E
// elements at their ends (RowEdges) is read (as the staging starts) and written by a thread of its
// own.
// Rows above a block are split into parts of consecutive elements (plan_resident_rows' parts), a
// block each, which take their exact two-pass statistics about the row's x0 and merge them in rank
// order (SplitStep): one cluster a row, or two launches through the workspace, the same bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "channel_norm_act_grad.cuh"
#include "channel_norm_one_read_io.cuh"
#include "channel_norm_plan.hpp"
#include "channel_norm_split_step.cuh"
#include "common/activation.cuh"
#include "common/check.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"

namespace nk::cuda {

// The tensors (save_mean and save_invstd: [rows]), then the rows' geometry.
struct ResidentParams : OneReadForwardIo {
  float2* row_stats;     // [rows]: (mean, variance for the running average); nullable
  int64_t len;           // L: elements of a row
  int head_packs;        // packs of a row staged in shared memory (at most; a row of fewer
                         // whole packs stages them all); the rest (the tail) are read from
                         // memory in each pass
  int s;                 // S: a channel's elements within the row
  int channels_per_row;  // 1 (instance norm) or C / G
  int rows_per_sample;   // C (instance norm) or G
  float eps;
  // 1 / L and 1 / (L - 1), from the host: a float division is a call (its slow path), whose saved
  // registers spill on sm_80.
  float inv_len, inv_len_minus_1;
  bool unbiased;       // row_stats' variance: m2 / (L - 1), else m2 / L
  int part_len;        // elements of a part (the last may have fewer): L where not split
  float2* part_stats;  // [rows][parts + 1]: each part's (centre, m2), then (x0, 0); kParts, kApply
};
// Within kMaxKernelArgBytes, one argument (channel_norm_one_read_io.cuh).
static_assert(sizeof(ResidentParams) <= kMaxKernelArgBytes, "a kernel argument within 128 bytes");

// Shared memory before the staged row: block_sum's 32 floats, a multiple of 16 bytes.
constexpr size_t kResidentScratchBytes = 32 * sizeof(float);

// Loads (kAccess == E: one 16-byte access; 1: E single elements) E elements at p as floats.
template <class T, int E, int kAccess>
__device__ __forceinline__ void load_elems(const T* p, float (&v)[E]) {
  if constexpr (kAccess == E) {
    dev::load_elements<T, E>(p, v);
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) v[e] = dev::to_float(p[e]);
  }
}

template <class T, int E, int kAccess>
__device__ __forceinline__ void store_elems(T* p, const float (&v)[E]) {
  if constexpr (kAccess == E) {
    dev::store_floats<T, E>(p, v);
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) p[e] = dev::from_float<T>(v[e]);
  }
}

// The E inputs of act' of a one-read backward's pack at element offset o: bits bit .. bit + E - 1
// of the ReLU mask as 0 or 1 (kFromMask), the pack of y or z at aux + o (kAux), else zeros.
template <class T, int E, int kAccess, int kSource, bool kAux>
__device__ __forceinline__ void load_act_inputs(const uint32_t* mask, int64_t bit, const T* aux,
                                                int64_t o, float (&a)[E]) {
  if constexpr (kSource == kFromMask) {
    const uint32_t bits = dev::load_mask<E>(mask, bit);
#pragma unroll
    for (int e = 0; e < E; ++e) a[e] = static_cast<float>((bits >> e) & 1u);
  } else if constexpr (kAux) {
    load_elems<T, E, kAccess>(aux + o, a);
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) a[e] = 0.0f;
  }
}

// Copies `count` units (16-byte packs, or single elements) of a row of each of kTensors tensors
// from global to shared memory, four loads of each in flight per thread before their stores;
// visit(unit) sees the thread's units of the first tensor in ascending order (i = threadIdx.x,
// + blockDim.x, ...), as a pass over the staged row would.
template <int kTensors, class U, class Visit>
__device__ __forceinline__ void stage_units(const U* const (&src)[kTensors],
                                            U* const (&dst)[kTensors], int count, Visit&& visit) {
  constexpr int kBatch = 4;
  for (int first = threadIdx.x; first < count; first += kBatch * blockDim.x) {
    U v[kTensors][kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int i = first + k * static_cast<int>(blockDim.x);
      if (i < count) {
#pragma unroll
        for (int t = 0; t < kTensors; ++t) v[t][k] = src[t][i];
      }
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int i = first + k * static_cast<int>(blockDim.x);
      if (i < count) {
#pragma unroll
        for (int t = 0; t < kTensors; ++t) dst[t][i] = v[t][k];
        visit(v[0][k]);
      }
    }
  }
}

// Pack q of a row at x from memory: one 16-byte access (kAccess == E) or E single elements.
template <class T, int E, int kAccess>
__device__ __forceinline__ dev::Pack<T, E> row_pack(const T* x, int q) {
  dev::Pack<T, E> v;
  if constexpr (kAccess == E) {
    v = reinterpret_cast<const dev::Pack<T, E>*>(x)[q];
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) v.v[e] = x[q * E + e];
  }
  return v;
}

// Visits (pack, index) for this thread's packs of [begin, packs) of a row at x (threadIdx.x,
// + blockDim.x, ... from begin on) in ascending order, read from memory with kBatch packs in
// flight before their visits (four in the second and third passes took ptxas to 70-96
// registers); kAccess: elements per access (E, or 1 for misaligned pointers).
template <class T, int E, int kAccess, int kBatch, class Visit>
__device__ __forceinline__ void stream_packs(const T* x, int begin, int packs, Visit&& visit) {
  const int step = static_cast<int>(blockDim.x);
  int first = static_cast<int>(threadIdx.x);
  if (first < begin) first += (begin - first + step - 1) / step * step;
  for (; first < packs; first += kBatch * step) {
    dev::Pack<T, E> v[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int q = first + k * step;
      if (q < packs) v[k] = row_pack<T, E, kAccess>(x, q);
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (first + k * step < packs) visit(v[k], first + k * step);
    }
  }
}

// Visits (pack, index) for this thread's packs of a row in ascending order: those of the staged
// head from shared memory, then the tail's from memory (x), one pack at a time.
template <class T, int E, int kAccess, class Visit>
__device__ __forceinline__ void visit_row(const dev::Pack<T, E>* staged, const T* x, int head,
                                          int packs, Visit&& visit) {
  for (int q = threadIdx.x; q < head; q += blockDim.x) {
    const dev::Pack<T, E> v = staged[q];  // one 16-byte shared load (a reference reads elements)
    visit(v, q);
  }
  stream_packs<T, E, kAccess, 1>(x, head, packs, visit);
}

// The block's part of a statistic's row of row_len elements (blockIdx.x = row * parts + rank, each
// part part_len elements but the last; kSplit false: the whole row, a block a row). The parts'
// count and a part's first channel (group norm, whose parts are whole channels of s elements) are
// derived here, a division each a block: as parameters they took the kernels' above 128 bytes,
// where nvcc reloads them in the loops (kWhole's backward staged x and dy in 141 instructions a
// turn, not 88). 32-bit: the plan keeps the blocks and a row's elements below 2^31.
template <bool kSplit>
struct RowPart {
  unsigned parts, row, rank;
  int begin;              // the block's first element of the row
  int len;                // the block's elements
  int64_t first_channel;  // the block's first channel of the row's (0 for instance norm)
  __device__ __forceinline__ RowPart(int64_t row_len, int part_len, int channels_per_row, int s) {
    const int n = static_cast<int>(row_len);
    parts = kSplit ? static_cast<unsigned>((n + part_len - 1) / part_len) : 1u;
    row = kSplit ? blockIdx.x / parts : blockIdx.x;
    rank = kSplit ? blockIdx.x - row * parts : 0u;
    begin = static_cast<int>(rank) * part_len;
    len = kSplit ? min(n - begin, part_len) : n;
    first_channel = kSplit && channels_per_row > 1 ? int64_t{rank} * (part_len / s) : int64_t{0};
  }
};

// A row that is not whole 16-byte packs (L % E != 0) starts inside a pack of the tensor: its packs
// are those that lie wholly in it, from element `lead` on (lead = (-row * L) mod E, so the packs
// sit on the tensor's pack boundaries whatever the row), and the fewer than E elements before them
// and after them are its edges. Thread t takes edge t (`at`), one element, which it adds to its
// sums after its packs: each edge costs the row the latency of one single load, not of a loop.
// lead depends on the row and the shape only, so the bits do not depend on the pointers.
template <int E>
struct RowEdges {
  int lead;   // edge elements before the packs (0 where L is whole packs)
  int packs;  // whole packs from element lead on
  int end;    // lead + packs * E: the first trailing edge element
  __device__ __forceinline__ RowEdges(int64_t first, int64_t len)
      : lead(static_cast<int>((E - first % E) % E)),
        packs(static_cast<int>((len - lead) / E)),
        end(lead + packs * E) {}
  // The row element of thread t's edge, or -1 (the row of len elements has fewer than t + 1).
  __device__ __forceinline__ int at(int t, int len) const {
    const int o = t < lead ? t : end + (t - lead);
    return o < len ? o : -1;
  }
};

// Group norm rows: where a thread's packs start, as the channel j of the row and the element `at`
// within it, for packs at elements o0, o0 + stride, ...: each turn moves on by a fixed (channels,
// elements) step, so the loop holds no division (a reciprocal held across it spilled on sm_80).
struct PackChannel {
  unsigned s, j, at, step_j, step_at;
  __device__ __forceinline__ PackChannel(unsigned o0, unsigned stride, unsigned s_)
      : s(s_), j(o0 / s_), at(o0 - j * s_), step_j(stride / s_), step_at(stride - step_j * s_) {}
  __device__ __forceinline__ void next() {
    j += step_j;
    at += step_at;
    if (at >= s) {
      at -= s;
      ++j;
    }
  }
  // The channel of each element of the current pack in turn: step(refresh) before each element
  // calls refresh(channel) where the element starts the row's next channel.
  struct Elements {
    unsigned j, at, s;
    template <class Refresh>
    __device__ __forceinline__ void step(Refresh&& refresh) {
      if (at == s) {
        at = 0;
        refresh(++j);
      }
      ++at;
    }
  };
  __device__ __forceinline__ Elements elements() const { return Elements{j, at, s}; }
};

// One block per statistic (blockIdx.x: the row n * rows_per_sample + c or g), its row staged in
// `blockDim.x`-strided packs; kAccess: elements per global access (E, or 1 for misaligned
// pointers). The explicit minimum of two blocks holds ptxas to 64 registers, so that two blocks
// of 512 threads share an SM: without it, the tail's loops took ReLU with a residual to 66 (16-bit
// types; without any minimum, it held some instances at 40 registers and spilled). The parts of
// split rows stage up to 219 KiB, a block an SM, and take one.
// kStep: kWhole, a block a row. Else the row's parts of part_len elements, a block each
// (blockIdx.x = row * parts + rank), each its own RowEdges, whose statistics about the row's x0
// merge in rank order (merge_parts) in every block alike: kCluster, a cluster a row through
// distributed shared memory (x read once); kParts then kApply, two launches through the workspace
// (part_stats; kApply reads x again, x0 from the workspace: with y == x, rank 0 may have
// overwritten it). Rank 0 saves the statistics.
template <class T, int kAccess, int kAct, bool kResidual, SplitStep kStep = SplitStep::kWhole>
__global__ void __launch_bounds__(kResidentMaxThreads, kStep == SplitStep::kWhole ? 2 : 1)
    forward_resident(ResidentParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  constexpr bool kSplit = kStep != SplitStep::kWhole;
  using Raw = dev::Pack<T, E>;
  // One dynamic allocation holds the reduction scratch, then the row (a static array next to a
  // dynamic one was placed over the row by the simulator).
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  auto& split_sh = *reinterpret_cast<SplitStatScratch*>(shared_bytes);  // split forms only
  unsigned char* staged_bytes =
      shared_bytes + (kSplit ? sizeof(SplitStatScratch) : kResidentScratchBytes);
  Raw* staged = reinterpret_cast<Raw*>(staged_bytes);
  const RowPart<kSplit> part(p.len, p.part_len, p.channels_per_row, p.s);
  const unsigned parts = part.parts, row_index = part.row, rank = part.rank;
  const int64_t row = row_index, row_first = row * p.len, first = row_first + part.begin;
  const int len = part.len;  // the block's elements
  const RowEdges<E> ends(first, len);
  const int packs = ends.packs, lead = ends.lead;
  const int head = kStep == SplitStep::kApply ? 0 : min(packs, p.head_packs);  // kApply rereads
  const T* x = static_cast<const T*>(p.x) + first;  // the block's elements
  const T* xp = x + lead;                           // its packs
  float2* stats = kSplit ? p.part_stats + int64_t{row_index} * (parts + 1) : nullptr;
  // This thread's edge element (RowEdges), loaded while the packs are.
  const int edge = ends.at(threadIdx.x, len);
  const float xe = edge >= 0 ? dev::to_float(x[edge]) : 0.0f;
  const float shift = kStep == SplitStep::kApply
                          ? stats[parts].x
                          : dev::to_float(static_cast<const T*>(p.x)[row_first]);
  float centre = 0.0f, m2 = 0.0f;
  if constexpr (kStep != SplitStep::kApply) {
    // The sum of x - x0 is taken as the packs arrive (16-byte loads), or in a pass over the
    // staged head with the same packs per thread in the same order (single-element loads), then
    // over the tail as it arrives, then over the thread's edge: the same bits whatever the
    // pointers and the head.
    dev::Floats<1> sum{};
    auto add = [&](const Raw& v) {
#pragma unroll
      for (int e = 0; e < E; ++e) sum.v[0] += dev::to_float(v.v[e]) - shift;
    };
    if constexpr (kAccess == E) {
      stage_units<1>({reinterpret_cast<const Raw*>(xp)}, {staged}, head, add);
      __syncthreads();
    } else {
      stage_units<1>({xp}, {reinterpret_cast<T*>(staged_bytes)}, head * E, [](const T&) {});
      __syncthreads();
      for (int q = threadIdx.x; q < head; q += blockDim.x) {
        const Raw v = staged[q];
        add(v);
      }
    }
    stream_packs<T, E, kAccess, 4>(xp, head, packs, [&](const Raw& v, int) { add(v); });
    if (edge >= 0) sum.v[0] += xe - shift;
    // Of the row, or of this part's len values.
    centre = dev::block_sum<1>(sum, scratch).v[0] *
             (kSplit ? 1.0f / static_cast<float>(len) : p.inv_len);
    dev::Floats<1> squares{};
    auto add_square = [&](const Raw& v, int) {
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float d = (dev::to_float(v.v[e]) - shift) - centre;
        squares.v[0] = fmaf(d, d, squares.v[0]);
      }
    };
    visit_row<T, E, kAccess>(staged, xp, head, packs, add_square);
    if (edge >= 0) {
      const float d = (xe - shift) - centre;
      squares.v[0] = fmaf(d, d, squares.v[0]);
    }
    m2 = dev::block_sum<1>(squares, scratch).v[0];
    if constexpr (kSplit) {
      if (threadIdx.x == 0) {
        publish_part<kStep>(make_float2(centre, m2), shift, rank, parts, 1, 0, stats,
                            split_sh.part);
      }
      if constexpr (kStep == SplitStep::kParts) return;
    }
  }
  if constexpr (kSplit) {  // the row's statistics
    const float2 row_stats = merged_parts<kStep>(split_sh, static_cast<int>(parts), p.part_len,
                                                 static_cast<int>(p.len), stats);
    centre = row_stats.x;
    m2 = row_stats.y;
  }
  const float var = m2 * p.inv_len, invstd = rsqrtf(var + p.eps);
  if (threadIdx.x == 0 && rank == 0) {
    if (p.save_mean) p.save_mean[row] = shift + centre;
    if (p.save_invstd) p.save_invstd[row] = invstd;
    if (p.row_stats) {
      const float run_var = p.unbiased ? m2 * p.inv_len_minus_1 : var;
      p.row_stats[row] = make_float2(shift + centre, run_var);
    }
  }

  // y = (x - shift) * scale + offset (+ z), scale = invstd * w_c, offset = b_c - centre * scale.
  // 32-bit: a 64-bit remainder is a call, whose saved registers spill on sm_80 (blocks and
  // channels are < 2^31: the plan caps the rows).
  const int64_t c0 =
      int64_t{row_index % static_cast<unsigned>(p.rows_per_sample)} * p.channels_per_row +
      part.first_channel;  // the block's first
  auto coef = [&](int64_t c) {
    const float scale = invstd * (p.weight ? p.weight[c] : 1.0f);
    return make_float2(scale, (p.bias ? p.bias[c] : 0.0f) - centre * scale);
  };
  const T* z = kResidual ? static_cast<const T*>(p.z) + first : nullptr;
  T* y = static_cast<T*>(p.y) + first;
  const unsigned s = static_cast<unsigned>(p.s);
  // The thread's edge first, so that it holds no register across the loop below.
  if (edge >= 0) {
    const float2 k = coef(c0 + static_cast<unsigned>(edge) / s);
    float t = fmaf(xe - shift, k.x, k.y);
    if constexpr (kResidual) t += dev::to_float(z[edge]);
    const float u[1] = {dev::activate<kAct>(t)};
    y[edge] = dev::from_float<T>(u[0]);
    if constexpr (kAct == NK_ACTIVATION_RELU) {
      if (p.mask != nullptr) dev::store_mask<1>(p.mask, first + edge, u);
    }
  }
  // The packs: o counts from the first (element lead of the row).
  const T* zp = kResidual ? z + lead : nullptr;
  T* yp = y + lead;
  const int64_t mask_first = first + lead;  // a multiple of E
  // The coefficients of the row (instance norm), of each pack (group norm, S a multiple of the
  // pack) or of each run of a channel's elements (else): one loop each, holding only its own work.
  auto write_y = [&](auto mode) {
    constexpr int kMode = decltype(mode)::value;
    const float2 row_coef = coef(c0);
    PackChannel walk(lead + threadIdx.x * E, blockDim.x * E, s);
    auto write_pack = [&](const Raw& v, int q) {
      const unsigned o = static_cast<unsigned>(q) * E;
      float u[E];
      if constexpr (kResidual) load_elems<T, E, kAccess>(zp + o, u);
      float2 k = kMode == 0 ? row_coef : coef(c0 + walk.j);
      auto run = walk.elements();
#pragma unroll
      for (int e = 0; e < E; ++e) {
        if constexpr (kMode == 2) run.step([&](unsigned j) { k = coef(c0 + j); });
        float t = fmaf(dev::to_float(v.v[e]) - shift, k.x, k.y);
        if constexpr (kResidual) t += u[e];
        u[e] = dev::activate<kAct>(t);
      }
      store_elems<T, E, kAccess>(yp + o, u);
      if constexpr (kAct == NK_ACTIVATION_RELU) {
        if (p.mask != nullptr) {
          if (E == 8 && (p.len % E != 0 || (kSplit && p.part_len % E != 0))) {
            // Rows (or parts) that are not whole packs share a mask byte with the next at their
            // ends: every pack ORs its bits in (eight-element packs store whole bytes otherwise).
            dev::or_mask<E>(p.mask, mask_first + o, u);
          } else {
            dev::store_mask<E>(p.mask, mask_first + o, u);
          }
        }
      }
      if constexpr (kMode != 0) walk.next();
    };
    visit_row<T, E, kAccess>(staged, xp, head, packs, write_pack);
  };
  if (p.channels_per_row == 1) {
    write_y(std::integral_constant<int, 0>{});
  } else if (s % E == 0) {
    write_y(std::integral_constant<int, 1>{});
  } else {
    write_y(std::integral_constant<int, 2>{});
  }
  if constexpr (kStep == SplitStep::kCluster) dev::cluster_wait();
}

// The row geometry of both resident kernels' parameters: L, S, the channels of a row and the rows
// of a sample (instance norm: 1 and C; group norm: C / G and G), 1 / L, and the parts.
template <class Params>
void set_row_geometry(Params& p, const ChannelShape& s, const ResidentPlan& r) {
  const bool instance = s.kind == ChannelNorm::kInstance;
  p.len = r.len;
  p.s = static_cast<int>(s.s);
  p.channels_per_row = static_cast<int>(instance ? 1 : s.c / s.groups);
  p.rows_per_sample = static_cast<int>(instance ? s.c : s.groups);
  p.inv_len = 1.0f / static_cast<float>(r.len);
  p.part_len = static_cast<int>(r.part_len);
}

// Packs of a row (of each staged tensor) the resident kernels stage: the plan's head, or fewer
// under the test-only knob NORMKIT_TEST_RESIDENT_HEAD=<bytes> (read at each launch; 0 stages
// nothing), which moves packs to the tail so that tests reach its loops on short rows. No bit
// depends on it.
inline int resident_head_packs(int64_t head_len, int elem_bytes) {
  int64_t bytes = head_len * elem_bytes;
  if (const char* knob = std::getenv("NORMKIT_TEST_RESIDENT_HEAD")) {
    char* end = nullptr;
    const long long v = std::strtoll(knob, &end, 10);
    if (end != knob && *end == '\0' && v >= 0 && v < bytes) bytes = v / 16 * 16;
  }
  return static_cast<int>(bytes / 16);
}
inline int resident_head_packs(const ResidentPlan& r, int elem_bytes) {
  return resident_head_packs(r.head_len, elem_bytes);
}

// Enqueues kernel(p) on `blocks` blocks of `threads` with `bytes` of dynamic shared memory; a
// kernel of two arguments takes p's two bases (channel_norm_one_read_io.cuh). Above 48 KiB the
// memory must be granted (every supported GPU allows kResidentMaxBytes and the scratch); the
// attribute is per function and device, so it is set per launch. The caller checks
// cudaGetLastError.
template <class... Args, class Params>
void launch_blocks(void (*kernel)(Args...), int64_t blocks, int threads, size_t bytes,
                   cudaStream_t stream, const Params& p) {
  if (bytes > 48 * 1024) {
    dev::check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)),
                    "cudaFuncSetAttribute (one read of x)");
  }
  dev::launch_dependent(kernel, static_cast<unsigned>(blocks), threads, bytes, stream,
                        static_cast<const Args&>(p)...);
}

// A block per row of the plan.
template <class Params>
void launch_rows(void (*kernel)(Params), const ResidentPlan& plan, size_t bytes,
                 cudaStream_t stream, const Params& p) {
  launch_blocks(kernel, plan.rows, plan.threads, bytes, stream, p);
}

// Calls f(act, residual) with the fused activation as std::integral_constant<int, kAct> and the
// residual as std::true_type or std::false_type: the forward kernels' fusion templates.
template <class F>
void with_forward_fusion(int activation, bool residual, F&& f) {
  auto with_residual = [&](auto act) {
    if (residual) {
      f(act, std::true_type{});
    } else {
      f(act, std::false_type{});
    }
  };
  switch (activation) {
    case NK_ACTIVATION_RELU:
      with_residual(std::integral_constant<int, NK_ACTIVATION_RELU>{});
      break;
    case NK_ACTIVATION_SILU:
      with_residual(std::integral_constant<int, NK_ACTIVATION_SILU>{});
      break;
    default:
      with_residual(std::integral_constant<int, NK_ACTIVATION_IDENTITY>{});
  }
}

// Enqueues the kernel of the fusion and pointers; the caller checks cudaGetLastError.
template <class T>
void launch_resident(const ResidentParams& p, const ResidentPlan& plan, int activation,
                     cudaStream_t stream) {
  constexpr int E = 16 / sizeof(T);
  const bool vector_access = dev::aligned16(p.x) && dev::aligned16(p.z) && dev::aligned16(p.y);
  const size_t bytes = kResidentScratchBytes + static_cast<size_t>(p.head_packs) * 16;
  with_forward_fusion(activation, p.z != nullptr, [&](auto act, auto residual) {
    constexpr int kAct = decltype(act)::value;
    constexpr bool kResidual = decltype(residual)::value;
    if (vector_access) {
      launch_rows(forward_resident<T, E, kAct, kResidual>, plan, bytes, stream, p);
    } else {
      launch_rows(forward_resident<T, 1, kAct, kResidual>, plan, bytes, stream, p);
    }
  });
}

}  // namespace nk::cuda
