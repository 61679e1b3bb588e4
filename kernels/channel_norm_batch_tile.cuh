// Batch norm training forward in NCHW (S > 1) with one read of x (plan_batch_tiles): a block per
// channel stages the channel's N runs of S elements (C * S apart) in shared memory, takes its exact
// two-pass statistics from there, blends them into the running buffers, and writes y from there
// (with the fused residual, activation and ReLU mask). x is read once and y written once, with no
// partials, finalize or workspace.
//
// Run n starts o_n elements into a 16-byte pack of the tensor (o_n = (c * S + n * C * S) mod E)
// and is staged as the Q packs from that one on, pack (n, j) in slot n * Q + j, so that global
// accesses are whole aligned packs: the elements of a pack outside the run belong to the
// neighbouring channels and are masked out of every pass (a pack wholly outside, at most the last
// of a run, is not read at all). In place, where the neighbours' blocks write those elements, a
// pack not wholly in the run is read element by element. Thread t takes the slots t, t + R, ...
// (R the block's threads), each slot's (n, j) from a multiply (batch_tile_run), and keeps E sums,
// one per element of its packs (pass 1 with four 16-byte loads in flight); the block adds them in
// a fixed order (dev::block_sum), so no bit depends on the pointers or the grid. The statistics
// are of x - x0, x0 the channel's first value (so |mean| >> std keeps its accuracy).
// y is stored as whole packs where a pack lies in the run, else element by element, since the
// neighbours' blocks write the rest of those packs; the ReLU mask likewise (ORed in where runs are
// not whole packs, into a mask cleared first). Tiles above the staged head read the rest from
// memory in each pass, each pack the same values from either place, so no bit depends on the
// head. A channel above a block is split into parts of consecutive runs, a block each, whose
// statistics merge in rank order (SplitStep, below; plan_batch_tiles' parts).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_one_read_io.cuh"
#include "channel_norm_plan.hpp"
#include "channel_norm_resident.cuh"
#include "channel_norm_running.cuh"
#include "channel_norm_split_parts.cuh"
#include "common/activation.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"

namespace nk::cuda {

// A channel's runs (forward and backward).
struct BatchTileGeometry {
  int64_t numel;        // N * C * S: packs reaching past it are read element by element
  int64_t sample_len;   // C * S: from a run to the next
  int s;                // S: elements of a run
  int n;                // N: runs of a channel
  int seg_packs;        // Q: packs per run
  uint32_t slot_magic;  // batch_tile_run's multiplier for Q
  int head_packs;       // the tile's first slots staged (of each staged tensor); the rest, the
                        // tail, read from memory in each pass
  // The packs read in one access (whole_access) are those whose range in the run ends (its hi) in
  // [whole_hi_min, whole_hi_min + whole_hi_span]: every pack with elements of the run ([1, S + E)),
  // or in place (an output is a tensor read here: y == x; dx or dz == dy) those wholly in it
  // ([E, S]; none where S < E).
  int whole_hi_min;
  unsigned whole_hi_span;
};

// The tensors (save_mean and save_invstd: [C]), the runs, then eps, 1 / (N * S),
// 1 / (N * S - 1) and the running buffers, which each block blends its channel into.
struct BatchTileParams : OneReadForwardIo, BatchTileGeometry {
  float eps;
  float inv_count, inv_count_minus_1;
  bool unbiased;  // the running variance: m2 / (N * S - 1), else m2 / (N * S)
  RunningBlend running;
  int parts;           // blocks a channel (split tiles; else 1)
  int part_runs;       // runs a part (the last may have fewer)
  float2* part_stats;  // [C][parts + 1]: each part's (centre, m2), then (x0, 0); kParts, kApply
};

// The elements [lo, hi) of a pack that belong to its run (lo <= 0 and hi >= E: all of them).
template <int E>
struct RunRange {
  int lo, hi;
  __device__ __forceinline__ bool whole() const { return lo <= 0 && hi >= E; }
  __device__ __forceinline__ bool has(int e) const { return e >= lo && e < hi; }
};

// Slot q of a channel's tile: pack j = q mod Q of run n = q / Q (batch_tile_run: a multiply, no
// division), its first element in the tensor (`at`, a multiple of E) and its range in the run.
template <int E>
struct RunPack {
  int64_t at;
  RunRange<E> range;
};

template <int E>
__device__ __forceinline__ RunPack<E> run_pack(const BatchTileGeometry& p, int64_t start, int q) {
  const int n = batch_tile_run(q, p.slot_magic);
  const int j = q - n * p.seg_packs;
  const int64_t run = n * p.sample_len + start;  // run n's first element
  const int offset = static_cast<int>(run & (E - 1));
  RunPack<E> r;
  r.at = run - offset + j * E;
  r.range.lo = offset - j * E;
  r.range.hi = r.range.lo + p.s;
  return r;
}

// Whether the pack at r is read in one 16-byte access: where the pointers allow it (kAccess == E)
// and the pack has elements of the run and lies in the tensor. In place, a pack's elements
// outside the run are the neighbouring channels' outputs, which their blocks may be writing: only
// packs wholly in the run are read whole, so that no byte is read while another block writes it.
template <int E, int kAccess>
__device__ __forceinline__ bool whole_access(const BatchTileGeometry& p, const RunPack<E>& r) {
  // One compare for both ends: below whole_hi_min the difference wraps above every span.
  return kAccess == E && static_cast<unsigned>(r.range.hi - p.whole_hi_min) <= p.whole_hi_span &&
         r.at + E <= p.numel;
}

// The run's elements of the pack at `at` one by one, the rest 0.
template <class T, int E>
__device__ __forceinline__ dev::Pack<T, E> load_run_elements(const T* x, int64_t at,
                                                             RunRange<E> range) {
  dev::Pack<T, E> v{};
#pragma unroll
  for (int e = 0; e < E; ++e) {
    if (range.has(e)) v.v[e] = x[at + e];
  }
  return v;
}

// The pack of x at r from memory: whole where whole_access allows, else its run's elements.
template <class T, int E, int kAccess>
__device__ __forceinline__ dev::Pack<T, E> load_run_pack(const BatchTileGeometry& p, const T* x,
                                                         const RunPack<E>& r) {
  return whole_access<E, kAccess>(p, r) ? row_pack<T, E, kAccess>(x + r.at, 0)
                                        : load_run_elements<T, E>(x, r.at, r.range);
}

// The later passes over a block's `packs` slots from `start` (a channel's tile, or a part's runs):
// f(slot, pack, r) for the thread's slots in ascending order, those of the head (its first
// head_packs) from `staged`, then those of the tail from x in memory, a loop each.
template <class T, int E, int kAccess, class F>
__device__ __forceinline__ void visit_run_packs(const BatchTileGeometry& p, int64_t start,
                                                int packs, int head_packs,
                                                const dev::Pack<T, E>* staged, const T* x, F&& f) {
  const int head = min(head_packs, packs);
  const int threads = static_cast<int>(blockDim.x);
  int q = static_cast<int>(threadIdx.x);
  for (; q < head; q += threads) f(q, staged[q], run_pack<E>(p, start, q));
  for (; q < packs; q += threads) {
    const RunPack<E> r = run_pack<E>(p, start, q);
    f(q, load_run_pack<T, E, kAccess>(p, x, r), r);
  }
}

// Stores v rounded to T at r's elements of out (y, dx or dz): one 16-byte store where the pack lies
// in the run and the pointers allow it (built from the elements beside the single-element branch,
// the compiler split it into a 4-byte and six 2-byte stores in bf16), else the run's elements
// alone, since the neighbours' blocks write the rest of the pack.
template <class T, int E, int kAccess>
__device__ __forceinline__ void store_run_pack(T* out, const RunPack<E>& r, const float (&v)[E]) {
  if (r.range.whole()) {
    if constexpr (kAccess == E) {
      dev::store_floats_global<T, E>(out + r.at, v);
    } else {
      store_elems<T, E, kAccess>(out + r.at, v);
    }
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (r.range.has(e)) out[r.at + e] = dev::from_float<T>(v[e]);
    }
  }
}

// Adds g(element value) of the run's elements of pack v to acc, element by element.
template <class T, int E, class G>
__device__ __forceinline__ void add_run_elements(float (&acc)[E], const dev::Pack<T, E>& v,
                                                 RunRange<E> range, G&& g) {
  if (range.whole()) {
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] += g(dev::element(v, e));
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float term = g(dev::element(v, e));  // garbage outside the run: selected away
      acc[e] += range.has(e) ? term : 0.0f;
    }
  }
}

// The shared memory before a block's staged packs: block_sum's scratch, and a split tile's
// SplitStatScratch.
template <SplitStep kStep>
constexpr size_t kBatchTileScratchBytes = kStep == SplitStep::kWhole ? kResidentScratchBytes
                                                                     : sizeof(SplitStatScratch);

// kAccess: elements per global access (E, or 1 for misaligned pointers). The minimum of two
// blocks of 512 threads an SM holds ptxas to 64 registers, as in the other one-read kernels; the
// parts of split tiles stage up to 219 KiB, a block an SM, and take one (64 spilled 16 bytes in
// kParts, 16-bit types), as the group tiles'.
// kStep: kWhole, a block a channel. Else the channel's N runs are split into parts of part_runs
// consecutive runs (the last may have fewer), a block a part (blockIdx.x = channel * parts +
// rank), each taking its part's exact two-pass statistics about the same x0 (the channel's first
// value), merged in rank order (merge_parts) by every block alike: kCluster, a cluster a channel
// through distributed shared memory (x read once); kParts then kApply, two launches through the
// workspace (part_stats; kApply reads x again, x0 from the workspace: with y == x, rank 0 may
// have overwritten it). Rank 0 saves the statistics and blends the running buffers.
template <class T, int kAccess, int kAct, bool kResidual, SplitStep kStep = SplitStep::kWhole>
__global__ void __launch_bounds__(kResidentMaxThreads, kStep == SplitStep::kWhole ? 2 : 1)
    forward_batch_tile(BatchTileParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  constexpr bool kSplit = kStep != SplitStep::kWhole;
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  auto& split_sh = *reinterpret_cast<SplitStatScratch*>(shared_bytes);  // split forms only
  Raw* staged = reinterpret_cast<Raw*>(shared_bytes + kBatchTileScratchBytes<kStep>);
  const int t = static_cast<int>(threadIdx.x);
  // 32-bit: the plan keeps the blocks below 2^31.
  const unsigned parts = kSplit ? static_cast<unsigned>(p.parts) : 1u;
  const unsigned channel = kSplit ? blockIdx.x / parts : blockIdx.x;
  const unsigned rank = kSplit ? blockIdx.x - channel * parts : 0u;
  const int run0 = static_cast<int>(rank) * p.part_runs;  // kSplit: this part's first run
  const int runs = kSplit ? min(p.n - run0, p.part_runs) : p.n;
  const int64_t c = channel, first = c * p.s;  // run 0 of channel c
  const int64_t start = kSplit ? first + int64_t{run0} * p.sample_len : first;  // the block's
  const T* x = static_cast<const T*>(p.x);
  float2* stats = kSplit ? p.part_stats + int64_t{channel} * (parts + 1) : nullptr;
  const float shift = kStep == SplitStep::kApply ? stats[parts].x : dev::to_float(x[first]);
  const int packs = runs * p.seg_packs;
  const int head = kStep == SplitStep::kApply ? 0 : p.head_packs;  // kApply reads x again
  auto block_total = [&](float(&acc)[E]) {
    dev::Floats<1> a{};
#pragma unroll
    for (int e = 0; e < E; ++e) a.v[0] += acc[e];
    return dev::block_sum<1>(a, scratch).v[0];
  };

  float weight = 1.0f, bias = 0.0f, centre = 0.0f, m2 = 0.0f;
  float2 running{};
  int64_t tracked = 0;
  const bool saves = rank == 0 && t == 0;
  if constexpr (kStep != SplitStep::kApply) {
    // Pass 1: the runs from memory into shared memory, kBatch packs in flight a thread, the sums
    // of x - x0 as they arrive, in the order of the later passes.
    constexpr int kBatch = kAccess == E ? 4 : 2;  // single elements: 2, as the other tile kernels
    const int threads = static_cast<int>(blockDim.x);
    float acc[E] = {};
    for (int slot0 = t; slot0 < packs; slot0 += kBatch * threads) {
      // The 16-byte loads first, all in flight; the packs of single elements (misaligned
      // pointers, the tensor's last pack) as they are used. Held as 32-bit words: a pack merged
      // from two sources element by element kept 16-bit halves apart and spilled (fp16 with ReLU).
      uint4 v[kBatch];
      RunRange<E> range[kBatch];
      bool loaded[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int slot = slot0 + k * threads;
        const RunPack<E> r = run_pack<E>(p, start, slot);
        loaded[k] = slot < packs && whole_access<E, kAccess>(p, r);
        if (loaded[k]) v[k] = *reinterpret_cast<const uint4*>(x + r.at);
        range[k] = r.range;
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int slot = slot0 + k * threads;
        if (slot < packs) {
          if (!loaded[k]) {
            const Raw elements =
                load_run_elements<T, E>(x, run_pack<E>(p, start, slot).at, range[k]);
            memcpy(&v[k], &elements, sizeof(v[k]));
          }
          Raw pack;
          memcpy(&pack, &v[k], sizeof(pack));
          if (slot < head) staged[slot] = pack;
          add_run_elements<T, E>(acc, pack, range[k], [&](float xv) { return xv - shift; });
        }
      }
    }
    if constexpr (kStep != SplitStep::kParts) {
      // What the statistics are written with, loaded here to wait on memory during the passes
      // from shared memory: loaded after them, thread 0's running blend was three waits in a row
      // (the batch's weight, then each buffer's load behind the store before it) and every
      // thread's weight and bias one more. (Loaded before pass 1, they spilled its registers.)
      weight = p.weight ? p.weight[c] : 1.0f;
      bias = p.bias ? p.bias[c] : 0.0f;
      if (saves && p.running.mean) running = p.running.load(c), tracked = p.running.tracked();
    }
    // The block's centre (its barrier orders the staging): of the channel, or of this part's
    // runs * S values.
    centre = kSplit ? block_total(acc) * (1.0f / static_cast<float>(runs * p.s))
                    : block_total(acc) * p.inv_count;

    // Pass 2: the centred squares.
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] = 0.0f;
    visit_run_packs<T, E, kAccess>(p, start, packs, head, staged, x,
                                   [&](int, const Raw& v, const RunPack<E>& r) {
                                     add_run_elements<T, E>(acc, v, r.range, [&](float xv) {
                                       const float d = (xv - shift) - centre;
                                       return d * d;
                                     });
                                   });
    m2 = block_total(acc);
    if constexpr (kSplit) {
      if (t == 0) {
        publish_part<kStep>(make_float2(centre, m2), shift, rank, parts, 1, 0, stats,
                            split_sh.part);
      }
      if constexpr (kStep == SplitStep::kParts) return;
    }
  } else {
    weight = p.weight ? p.weight[c] : 1.0f;
    bias = p.bias ? p.bias[c] : 0.0f;
    if (saves && p.running.mean) running = p.running.load(c), tracked = p.running.tracked();
  }
  if constexpr (kSplit) {
    // The channel's statistics, the parts' merged in rank order.
    const float2 merged =
        merged_parts<kStep>(split_sh, p.parts, p.part_runs * p.s, p.n * p.s, stats);
    centre = merged.x;
    m2 = merged.y;
  }
  const float var = m2 * p.inv_count, invstd = rsqrtf(var + p.eps);
  if (saves) {
    if (p.save_mean) p.save_mean[c] = shift + centre;
    if (p.save_invstd) p.save_invstd[c] = invstd;
    const float blend = p.running.weight(tracked);  // < 0: none, or a stuck counter
    if (blend >= 0.0f) {
      p.running.blend(c, blend, running, shift + centre,
                      p.unbiased ? m2 * p.inv_count_minus_1 : var);
    }
  }

  // Pass 3: y = (x - x0) * scale + offset (+ z), scale = invstd * w_c, offset = b_c - centre *
  // scale.
  const float scale = invstd * weight;
  const float offset = bias - centre * scale;
  const T* z = static_cast<const T*>(p.z);
  T* y = static_cast<T*>(p.y);
  const bool whole_runs = p.s % E == 0;  // every pack in a run: whole mask bytes
  visit_run_packs<T, E, kAccess>(p, start, packs, head, staged, x,
                                 [&](int, const Raw& v, const RunPack<E>& r) {
                                   const bool whole = r.range.whole();
                                   float u[E];
                                   if constexpr (kResidual) {
                                     if (whole) {
                                       load_elems<T, E, kAccess>(z + r.at, u);
                                     } else {
#pragma unroll
                                       for (int e = 0; e < E; ++e) {
                                         u[e] = r.range.has(e) ? dev::to_float(z[r.at + e]) : 0.0f;
                                       }
                                     }
                                   }
#pragma unroll
                                   for (int e = 0; e < E; ++e) {
                                     float out = fmaf(dev::element(v, e) - shift, scale, offset);
                                     if constexpr (kResidual) out += u[e];
                                     u[e] = dev::activate<kAct>(out);
                                   }
                                   store_run_pack<T, E, kAccess>(y, r, u);
                                   if constexpr (kAct == NK_ACTIVATION_RELU) {
                                     if (p.mask != nullptr) {
                                       if (whole_runs) {
                                         dev::store_mask<E>(p.mask, r.at, u);
                                       } else {
                                         uint32_t bits = 0;
#pragma unroll
                                         for (int e = 0; e < E; ++e) {
                                           bits |= (r.range.has(e) && u[e] > 0.0f ? 1u : 0u) << e;
                                         }
                                         if (bits != 0)
                                           atomicOr(p.mask + r.at / 32, bits << (r.at % 32));
                                       }
                                     }
                                   }
                                 });
  if constexpr (kStep == SplitStep::kCluster) dev::cluster_wait();
}

// The runs of plan b for shape s, for the forward's and the backward's parameters: the staged
// head is resident_head_packs' (with its test knob); in_place: an output is a tensor read here.
inline void set_batch_tile_geometry(BatchTileGeometry& g, const ChannelShape& s,
                                    const BatchTilePlan& b, int elem_bytes, bool in_place) {
  const int e = 16 / elem_bytes;
  g.numel = s.numel();
  g.sample_len = s.c * s.s;
  g.s = static_cast<int>(s.s);
  g.n = static_cast<int>(s.n);
  g.seg_packs = b.seg_packs;
  g.slot_magic = b.slot_magic;
  g.head_packs = resident_head_packs(b.head_packs * 16 / elem_bytes, elem_bytes);
  // A pack's hi is below S + E (its run starts less than E elements into it): in place with
  // S < E, no hi reaches [S + E, S + E].
  g.whole_hi_min = !in_place ? 1 : g.s >= e ? e : g.s + e;
  g.whole_hi_span = static_cast<unsigned>(!in_place ? g.s + e - 2 : g.s >= e ? g.s - e : 0);
}

// A split tile's staged head a block (a part's runs, of each of `staged_tensors` tensors, after
// `scratch_bytes`): part_head_packs.
inline int batch_split_head_packs(const BatchTilePlan& b, int elem_bytes, size_t scratch_bytes,
                                  int staged_tensors = 1) {
  return part_head_packs(int64_t{b.part_runs} * b.seg_packs * 16, b.head_packs * 16,
                         static_cast<int64_t>(scratch_bytes), staged_tensors, elem_bytes);
}

// Enqueues the kernel of the fusion and pointers, a block per channel with the scratch and the
// tile in dynamic shared memory, or (parts > 1) a block per part of a channel's runs
// (launch_forward_split); the caller checks cudaGetLastError.
template <class T>
void launch_batch_tiles(const BatchTileParams& p, const BatchTilePlan& plan, int64_t channels,
                        int activation, cudaStream_t stream) {
  if (plan.parts > 1) {
    launch_forward_split<T>(
        p, SplitLaunch{channels * plan.parts, plan.threads, plan.parts, sizeof(SplitStatScratch)},
        activation, stream, [](auto access, auto act, auto residual, auto step) {
          return forward_batch_tile<T, decltype(access)::value, decltype(act)::value,
                                    decltype(residual)::value, decltype(step)::value>;
        });
    return;
  }
  constexpr int E = 16 / sizeof(T);
  const bool vector_access = dev::aligned16(p.x) && dev::aligned16(p.z) && dev::aligned16(p.y);
  const size_t bytes = kResidentScratchBytes + static_cast<size_t>(p.head_packs) * 16;
  with_forward_fusion(activation, p.z != nullptr, [&](auto act, auto residual) {
    constexpr int kAct = decltype(act)::value;
    constexpr bool kResidual = decltype(residual)::value;
    if (vector_access) {
      launch_blocks(forward_batch_tile<T, E, kAct, kResidual>, channels, plan.threads, bytes,
                    stream, p);
    } else {
      launch_blocks(forward_batch_tile<T, 1, kAct, kResidual>, channels, plan.threads, bytes,
                    stream, p);
    }
  });
}

}  // namespace nk::cuda
