// The elementwise passes of batch, instance and group norm (y in the forward, dx in the backward):
// out = op(coefficients of (n, c), inputs), where a finalize (or, for frozen statistics, the op
// itself, in registers) has reduced everything per (statistic, channel) to a few floats.
//
// The kernels only walk the tensor; an Op supplies the formula:
//   using Elem; using Coef;
//   static constexpr int kInputs;     // tensors read at the element's index (x; dy, x; + z or y)
//   static constexpr bool kBits;      // also one mask bit per element (the ReLU mask), as 0 or 1
//   static constexpr int kOutputs;    // values apply produces per element (dx; dx and dz)
//   const Elem* in[kInputs];
//   Coef coef(int64_t unit) const;    // unit: c, or n*C + c when coefficients are per sample
//   void apply(const Coef&, const float (&v)[kInputs + kBits], float (&r)[kOutputs]) const;
//   template <int E> void store(int64_t i, const float (&r)[kOutputs][E]) const;  // pack at i
//   template <int E> void store_some(int64_t i, const float (&r)[kOutputs][E], int count) const;
//                                     // its first count (< E) elements: the tensor's tail
//   template <int E> uint32_t bits(int64_t i) const;  // kBits: the pack's E bits
//   void once() const;                // run by one thread of the grid (a counter update)
// Two walks, one per layout of the plan, and no integer division per element or per pack:
//  - rows (NCHW with S > 1): with S % E == 0 a pack lies in one (n, c) row, so its coefficients
//    are loaded once per pack; else (plan.packs_cross_rows: S = 49, 196, 3025 ...) a pack of the
//    flat tensor may end in the next row, whose coefficients it loads too, each element selecting
//    its own; rows shorter than a pack (S = 3, 5, 7) meet several in a pack, whose elements then
//    step from row to row one by one. The tensor's last N*C*S % E elements (its tail) are one
//    thread's, in a launch of its own, loaded and stored one by one. The row of a pack advances
//    by a precomputed (rows, offset) step per grid stride, wrapping at C (coefficients per
//    channel) or N*C (per sample);
//  - channels (NHWC, and NCHW with S == 1): a block is `lanes` channel packs wide (all of C when
//    C/E <= 256; else the packs are split over `tiles` blocks) and a few positions (n*S + s) tall;
//    every thread keeps one channel pack for the whole grid-stride loop, so its E coefficients
//    stay in registers, reloaded only when the sample changes (per-sample coefficients). There
//    each block walks a span of consecutive positions of its own, whole multiples of kGridPacks
//    times its height, a thread's packs one block height apart, so a thread reloads only where
//    its span crosses a sample boundary (about once a block). A reload (the forward's, 16 bits:
//    8 channels of 3 coefficients) is 24 scalar loads with the lanes 32 bytes apart, more load
//    instructions and L1 wavefronts than the packs' own; taking turns over the whole tensor, the
//    blocks paid it once a turn where the grid's stride exceeded a sample (GN N8 C640 64x64 on
//    264 blocks: 3 turns in 4). Where C is
//    not a multiple of E (plan.period = L, lcm(C, E)), the walk's rows are L elements (L / C
//    positions) and a pack's element e has channel (c0 + e) % C, the same in every row; a
//    partial last row (plan.period_tail()) is a launch of its own, a thread a pack of it. Where
//    the statistics have no period walk (plan.flat_packs: N > 1 samples that are not whole
//    periods; a period wider than a block that is not whole), per-sample coefficients take packs
//    of the flat tensor instead, each element stepping its channel and sample from the previous
//    one and loading its own coefficients (the tensor's tail: a launch of one thread); per-channel
//    ones walk the whole tensor as batch norm's one slot does (elementwise_plan).
// Both walk the tensor from its end to its start: the pass before them (the statistics or gradient
// sums, or the layer that wrote x) mostly ended near the end, so the first bytes they read may
// still be in L2: when x is larger than the L2, up to the L2's size of it comes from there instead
// of memory (predicted; x that fits is reread from L2 either way). Per-sample channels walks give
// that up for their spans (each block starts at its span's end), which only the last blocks'
// spans share with the end of the tensor. The partials visit memory in
// order for instance and group norm and for the channels layout; batch norm's rows layout visits
// channel by channel, each across every sample, so there the walk meets the L2's last channels
// only in part.
// Each thread has kApplyPacks (eight 16-byte loads, or four) in flight, issued before any math.
// The grid is the resident maximum from the occupancy API, capped by the work (kGridPacks a
// thread); the output does not depend on it (elementwise), so the test-only SM limit changes
// nothing but the grid.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "channel_norm_plan.hpp"
#include "common/check.cuh"
#include "common/dependent_launch.cuh"
#include "common/vec.cuh"

namespace nk::cuda {

constexpr int kApplyBlock = 256;  // threads per block, at most

// Packs per thread and turn, all loaded before any is used: eight 16-byte loads in the walks that
// carry only a pack's position (a rows walk inside rows, a channels walk), four where each pack
// also carries its rows or sample (kSimple false: with eight, ptxas spilled) and for ops of three
// inputs (with two packs, some lost 3 to 5 of 8 resident blocks). Eight because the loads in flight
// look like the bound at this occupancy: on the H200 (ncu of 2026-12-04) the channels walks of
// four at 2 blocks of 256 threads an SM, 32 KiB in flight, moved 74 to 80 % of DRAM peak with the
// issue slots 24 % busy; sm_90 keeps 2 blocks up to 128 registers, where eight packs of most ops
// fit (64 KiB in flight; predicted to move more, not measured).
template <class Op, bool kSimple = true>
constexpr int kApplyPacks = (kSimple && Op::kInputs < 3 ? 8 : 4) / Op::kInputs;

// Packs per thread that size a walk's grid (and a per-sample walk's spans): 4 / inputs, what the
// walks loaded a turn before they took 8 / inputs, so that a tensor of less than a wave of
// eight-pack turns still spreads over every SM (a thread then loads only the first packs of its
// turn) instead of half of them.
template <class Op>
constexpr int kGridPacks = kApplyPacks<Op, false>;

// The values an Op's apply takes per element: its tensors, then its mask bit.
template <class Op>
constexpr int kApplyValues = Op::kInputs + (Op::kBits ? 1 : 0);

// One pack through the op: its E elements' outputs from their values.
template <class Op, int E, class Raw, class K>
__device__ __forceinline__ void apply_values(const Op& op, const Raw (&raw)[Op::kInputs],
                                             uint32_t bits, const K& k,
                                             float (&r)[Op::kOutputs][E]) {
#pragma unroll
  for (int e = 0; e < E; ++e) {
    float v[kApplyValues<Op>];
#pragma unroll
    for (int in = 0; in < Op::kInputs; ++in) v[in] = dev::element(raw[in], e);
    if constexpr (Op::kBits) v[Op::kInputs] = static_cast<float>((bits >> e) & 1u);
    float out[Op::kOutputs];
    op.apply(k[e], v, out);
#pragma unroll
    for (int q = 0; q < Op::kOutputs; ++q) r[q][e] = out[q];
  }
}

// One pack through the op, its outputs stored at element i.
template <class Op, int E, class Raw, class K>
__device__ __forceinline__ void apply_pack(const Op& op, const Raw (&raw)[Op::kInputs],
                                           uint32_t bits, const K& k, int64_t i) {
  float r[Op::kOutputs][E];
  apply_values<Op, E>(op, raw, bits, k, r);
  op.template store<E>(i, r);
}

// The same coefficients for every element of a pack (rows layout).
template <class Coef>
struct SameCoef {
  const Coef& k;
  __device__ const Coef& operator[](int) const { return k; }
};

// A pack that may span two rows: its first `split` elements take `lo`, the rest `hi`. By value:
// selecting a reference made ptxas keep both in a 40-byte stack frame in SiLU's dx walks.
template <class Coef>
struct SplitCoef {
  const Coef& lo;
  const Coef& hi;
  int split;  // in [1, E]
  __device__ Coef operator[](int e) const { return e < split ? lo : hi; }
};

// How the packs of a rows walk meet the (n, c) rows: each inside one (S % E == 0), across at most
// one boundary (S > E), or across several (S < E, rows shorter than a pack).
enum class RowPacks { kInRow, kCrossOne, kCrossMany };

// The coefficients of the E elements from offset `off` of a row of unit `unit` on, rows of
// `row_len` elements, units wrapping at `units`: each row boundary the pack meets loads the next
// row's (rows shorter than a pack; a tail of any rows).
template <class Op, int E>
__device__ __forceinline__ void row_coefs(const Op& op, int64_t unit, int64_t off,
                                          int64_t row_len, int64_t units,
                                          typename Op::Coef (&k)[E]) {
  k[0] = op.coef(unit);
#pragma unroll
  for (int e = 1; e < E; ++e) {
    k[e] = k[e - 1];
    if (++off == row_len) {
      off = 0;
      unit = unit + 1 == units ? 0 : unit + 1;
      k[e] = op.coef(unit);
    }
  }
}

// Host-computed geometry of one launch: the rows walk's or the channels walk's.
struct RowsWalk {      // in the walk's units: packs, or elements when packs cross rows
  int64_t row_len;     // units per (n, c) row: S / E, or S
  int64_t units;       // coefficient units the row index wraps at: C, or N*C per sample
  int64_t step_units;  // stride (in the walk's units) / row_len, modulo units
  int64_t step_off;    // stride (in the walk's units) % row_len
  int tail;            // elements after the last whole pack (< E; packs crossing rows only)
};
struct ChannelsWalk {
  int64_t channels;        // elements per walked row: C, or the period L
  int64_t coef_channels;   // C
  int64_t channel_packs;   // channels / E
  int64_t tiles;           // blocks side by side across the channel packs
  int lanes;               // threads across channel packs in a block
  int64_t s;               // per-sample walks: walked rows per sample, S or S * C / L
  int64_t span;            // per-sample walks: the consecutive walked rows of a block
  int64_t tail_elems;  // kPeriod: elements of the partial row after the count whole ones
  int64_t tail_unit;   // its first coefficient unit: (N - 1) * C per sample, else 0
};
struct FlatWalk {           // packs of the flat channels-layout tensor
  int64_t channels;         // C
  int64_t sample_len;       // S * C
  int64_t step_c;           // stride (in elements) % C
  int64_t step_r, step_n;   // stride (in elements) as (samples, elements within a sample)
  int tail;                 // elements after the last whole pack (< E)
};
struct ApplyWalk {
  int64_t count;   // rows, flat: packs in the tensor; channels: walked rows (positions, or periods)
  int64_t stride;  // rows: packs per grid stride; channels: walked rows from a thread's pack to
                   // its next (a grid's height, or a block's in per-sample walks)
  union {          // one layout's: a kernel's parameters stay small (ptxas spilled a larger struct)
    RowsWalk rows;
    ChannelsWalk ch;
    FlatWalk flat;
  };
};

// The inputs (and mask bits) of pack `pack` of a walk of the flat tensor in E-element packs, where
// it exists (pack >= 0).
template <class Op, int E>
__device__ __forceinline__ void load_pack(const Op& op, int64_t pack,
                                          dev::Pack<typename Op::Elem, E> (&raw)[Op::kInputs],
                                          uint32_t& bits) {
  if (pack < 0) return;
#pragma unroll
  for (int i = 0; i < Op::kInputs; ++i)
    raw[i] = *reinterpret_cast<const dev::Pack<typename Op::Elem, E>*>(op.in[i] + pack * E);
  if constexpr (Op::kBits) bits = op.template bits<E>(pack * E);
}

// A tail's loads: the first `count` (<= E) elements of each input from element i into a pack (the
// rest 0), one by one, and their mask bits.
template <class Op, int E>
__device__ __forceinline__ uint32_t load_some(const Op& op, int64_t i, int count,
                                              dev::Pack<typename Op::Elem, E> (&raw)[Op::kInputs]) {
  uint32_t bits = 0;
#pragma unroll
  for (int e = 0; e < E; ++e) {
#pragma unroll
    for (int in = 0; in < Op::kInputs; ++in)
      raw[in].v[e] = e < count ? op.in[in][i + e] : dev::from_float<typename Op::Elem>(0.0f);
    if constexpr (Op::kBits) {
      if (e < count) bits |= op.template bits<1>(i + e) << e;
    }
  }
  return bits;
}

// The tensor's tail of a rows walk whose packs cross rows: its `w.rows.tail` (< E) elements after
// the w.count whole packs, through the op as one pack of single loads and stores, by one thread,
// each element with its own row's coefficients. A launch of its own: inside apply_rows this code
// cost up to 15 registers across the walk's loop in some instances, even placed after it.
template <class Op, int E>
__global__ void __launch_bounds__(32) apply_rows_tail(Op op, ApplyWalk w) {
  dev::enter_chain();
  using T = typename Op::Elem;
  const int64_t i = w.count * E, row = i / w.rows.row_len;
  const int count = w.rows.tail;
  dev::Pack<T, E> raw[Op::kInputs];
  const uint32_t bits = load_some<Op, E>(op, i, count, raw);
  typename Op::Coef k[E];
  row_coefs<Op, E>(op, row % w.rows.units, i - row * w.rows.row_len, w.rows.row_len,
                   w.rows.units, k);
  float r[Op::kOutputs][E];
  apply_values<Op, E>(op, raw, bits, k, r);
  op.template store_some<E>(i, r, count);
}

// out for every pack of a rows-layout tensor, a persistent grid-stride loop. Packs crossing rows
// (kRows != kInRow): packs of the flat tensor with S % E != 0, so a pack may end in the next row
// (or, S < E, rows); the walk then tracks the element offset in the row instead of the pack's,
// and loads the coefficients of every row the pack meets (the tensor's tail: apply_rows_tail).
template <class Op, int E, RowPacks kRows>
__global__ void __launch_bounds__(kApplyBlock) apply_rows(Op op, ApplyWalk w) {
  dev::enter_chain();
  using T = typename Op::Elem;
  using Raw = dev::Pack<T, E>;
  constexpr bool kCross = kRows != RowPacks::kInRow;
  constexpr int kPacks = kApplyPacks<Op, !kCross>;
  constexpr int kUnit = kCross ? E : 1;  // walk units per pack
  if (blockIdx.x == 0 && threadIdx.x == 0) op.once();
  const int64_t walked = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (walked >= w.count) return;
  int64_t pack = w.count - 1 - walked;                // from the end
  const int64_t row = pack * kUnit / w.rows.row_len;  // once per thread
  int64_t off = pack * kUnit - row * w.rows.row_len, unit = row % w.rows.units;
  while (pack >= 0) {
    int64_t at[kPacks], units[kPacks], offs[kPacks];
    Raw raw[kPacks][Op::kInputs];
    uint32_t bits[kPacks] = {};
#pragma unroll
    for (int j = 0; j < kPacks; ++j) {
      at[j] = pack;
      units[j] = unit;
      offs[j] = off;
      load_pack<Op, E>(op, pack, raw[j], bits[j]);
      pack -= w.stride;
      off -= w.rows.step_off;
      unit -= w.rows.step_units;
      if (off < 0) {
        off += w.rows.row_len;
        --unit;
      }
      if (unit < 0) unit += w.rows.units;
    }
#pragma unroll
    for (int j = 0; j < kPacks; ++j) {
      if (at[j] < 0) break;
      if constexpr (kRows == RowPacks::kCrossMany) {
        typename Op::Coef k[E];
        row_coefs<Op, E>(op, units[j], offs[j], w.rows.row_len, w.rows.units, k);
        apply_pack<Op, E>(op, raw[j], bits[j], k, at[j] * E);
        continue;
      }
      const typename Op::Coef k = op.coef(units[j]);
      if constexpr (kCross) {
        // Elements from `split` on lie in the next row (unit + 1, wrapping at the last).
        const int64_t left = w.rows.row_len - offs[j];
        const int split = left < E ? static_cast<int>(left) : E;
        const int64_t next = units[j] + 1 == w.rows.units ? 0 : units[j] + 1;
        const typename Op::Coef k_next = split < E ? op.coef(next) : k;
        apply_pack<Op, E>(op, raw[j], bits[j], SplitCoef<typename Op::Coef>{k, k_next, split},
                          at[j] * E);
      } else {
        apply_pack<Op, E>(op, raw[j], bits[j], SameCoef<typename Op::Coef>{k}, at[j] * E);
      }
    }
  }
}

// Moves a (sample, walked row in it) tracker down by (samples, rows) with rows < per_sample.
__device__ __forceinline__ void step_sample(int64_t& n, int64_t& s, int64_t samples, int64_t rows,
                                            int64_t per_sample) {
  n -= samples;
  s -= rows;
  if (s < 0) {
    s += per_sample;
    --n;
  }
}

// out for every pack of a channels-layout tensor: a fixed channel pack per thread, positions in a
// grid-stride loop (per-sample coefficients: the block's span). kPeriod: rows of the period L,
// whose packs keep their channels (C % E != 0).
template <class Op, int E, bool kPerSample, bool kPeriod>
__global__ void __launch_bounds__(kApplyBlock) apply_channels(Op op, ApplyWalk w) {
  dev::enter_chain();
  using T = typename Op::Elem;
  using Raw = dev::Pack<T, E>;
  constexpr int kPacks = kApplyPacks<Op>;
  if (blockIdx.x == 0 && threadIdx.x == 0) op.once();
  const int lane = static_cast<int>(threadIdx.x) % w.ch.lanes;
  const int64_t channel_pack = int64_t{blockIdx.x} % w.ch.tiles * w.ch.lanes + lane;
  if (channel_pack >= w.ch.channel_packs) return;
  const int64_t c0 = channel_pack * E;
  // The channel of the pack's first element (with kPeriod C <= kMaxSplitPeriod: an int saves
  // registers).
  using Channel = std::conditional_t<kPeriod, int, int64_t>;
  const Channel c_first = static_cast<Channel>(kPeriod ? c0 % w.ch.coef_channels : c0);
  // The thread visits walked rows lo + pos, pos from its first down to 0 (from the end; none
  // where it starts negative), its elements from `first` on. Per-sample walks give each block a
  // span of its own, else the grid's height strides over all of the rows (lo = 0).
  const int64_t row_block = int64_t{blockIdx.x} / w.ch.tiles;
  const int64_t row = threadIdx.x / w.ch.lanes;
  int64_t lo = 0, pos;
  if constexpr (kPerSample) {
    lo = row_block * w.ch.span;
    pos = (w.count - lo < w.ch.span ? w.count - lo : w.ch.span) - 1 - row;
  } else {
    pos = w.count - 1 - (row_block * (blockDim.x / w.ch.lanes) + row);
  }
  const int64_t first = lo * w.ch.channels + c0;
  typename Op::Coef k[E];
  // The pack's coefficients, its channels from c_first on, of the sample whose channel 0 is unit0.
  const auto load_coefs = [&](int64_t unit0) {
    Channel ch = c_first;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if constexpr (kPeriod && !kPerSample) {  // remainders keep registers low
        k[e] = op.coef((c0 + e) % w.ch.coef_channels);
      } else {
        k[e] = op.coef(unit0 + ch);
        ch = kPeriod && ch + 1 == w.ch.coef_channels ? 0 : ch + 1;  // periods wrap at C
      }
    }
  };
  if (!kPerSample && pos >= 0) load_coefs(0);  // held for good
  // Per-sample: k holds the coefficients of the rows from `start` to the end of their sample, so
  // walking down, a pack below it is the next sample's (or a later one's) and loads them.
  int64_t start = INT64_MAX;
  while (pos >= 0) {
    int64_t at[kPacks];
    Raw raw[kPacks][Op::kInputs];
    uint32_t bits[kPacks] = {};
#pragma unroll
    for (int j = 0; j < kPacks; ++j) {
      at[j] = pos;
      if (pos >= 0) {
#pragma unroll
        for (int i = 0; i < Op::kInputs; ++i)
          raw[j][i] = *reinterpret_cast<const Raw*>(op.in[i] + first + pos * w.ch.channels);
        if constexpr (Op::kBits) bits[j] = op.template bits<E>(first + pos * w.ch.channels);
      }
      pos -= w.stride;
    }
#pragma unroll
    for (int j = 0; j < kPacks; ++j) {
      if (at[j] < 0) break;
      if (kPerSample && at[j] < start) {
        const int64_t n = (lo + at[j]) / w.ch.s;
        start = n * w.ch.s - lo;
        load_coefs(n * w.ch.coef_channels);
      }
      apply_pack<Op, E>(op, raw[j], bits[j], k, first + at[j] * w.ch.channels);
    }
  }
}

// The coefficients of a pack of a period's row, loaded where each element takes them: held for the
// whole pack (with its channels stepped and wrapped) they cost ptxas an 8-byte spill on sm_80.
// 32-bit channels (a period of at most a block of packs): a 64-bit remainder is a call.
template <class Op>
struct PeriodCoef {
  const Op& op;
  int64_t unit0;  // the unit of channel 0
  int c0, channels;
  __device__ typename Op::Coef operator[](int e) const {
    return op.coef(unit0 + (c0 + e) % channels);
  }
};

// The partial last row of a period walk (one slot, plan.period_tail() positions): thread j takes
// pack j of it, its elements up to the tensor's end one by one. A launch of its own, so that the
// walk's loop keeps its registers.
template <class Op, int E>
__global__ void __launch_bounds__(kApplyBlock) apply_period_tail(Op op, ApplyWalk w) {
  dev::enter_chain();
  using T = typename Op::Elem;
  const int64_t c0 = int64_t{threadIdx.x} * E, left = w.ch.tail_elems - c0;
  if (left <= 0) return;
  const int count = left < E ? static_cast<int>(left) : E;
  const int64_t i = w.count * w.ch.channels + c0;
  dev::Pack<T, E> raw[Op::kInputs];
  const uint32_t bits = load_some<Op, E>(op, i, count, raw);
  const PeriodCoef<Op> k{op, w.ch.tail_unit, static_cast<int>(c0),
                         static_cast<int>(w.ch.coef_channels)};
  float r[Op::kOutputs][E];
  apply_values<Op, E>(op, raw, bits, k, r);
  if (count == E) {
    op.template store<E>(i, r);
  } else {
    op.template store_some<E>(i, r, count);
  }
}

// The per-sample coefficients of the E elements of the flat channels-layout tensor from channel c
// of sample n on (r: the element's offset in its sample; units n*C + c), each element stepping
// channel and sample from the previous one: C and S*C may be shorter than a pack. Only the first
// `count` elements exist (the tensor's tail: fewer than E); the rest repeat the last one's
// coefficients, since their units would lie past the last sample's, outside the arrays.
template <class Op, int E>
__device__ __forceinline__ void flat_coefs(const Op& op, int64_t c, int64_t n, int64_t r,
                                           const FlatWalk& f, typename Op::Coef (&k)[E],
                                           int count = E) {
#pragma unroll
  for (int e = 0; e < E; ++e) {
    if (e >= count) {  // count >= 1, so e >= 1 here
      k[e] = k[e > 0 ? e - 1 : 0];
      continue;
    }
    k[e] = op.coef(n * f.channels + c);
    if (++c == f.channels) c = 0;
    if (++r == f.sample_len) {
      r = 0;
      ++n;
    }
  }
}

// out for every pack of a channels-layout tensor with per-sample coefficients read as a flat one
// (plan.flat_packs), a persistent grid-stride loop from the end, as apply_rows: the (channel,
// sample, offset in the sample) of a pack's first element moves by a precomputed step per grid
// stride.
template <class Op, int E>
__global__ void __launch_bounds__(kApplyBlock) apply_flat(Op op, ApplyWalk w) {
  dev::enter_chain();
  using T = typename Op::Elem;
  using Raw = dev::Pack<T, E>;
  constexpr int kPacks = kApplyPacks<Op, false>;
  if (blockIdx.x == 0 && threadIdx.x == 0) op.once();
  const int64_t walked = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (walked >= w.count) return;
  int64_t pack = w.count - 1 - walked;  // from the end
  const int64_t first = pack * E;       // once per thread
  int64_t c = first % w.flat.channels, n = first / w.flat.sample_len;
  int64_t r = first - n * w.flat.sample_len;
  while (pack >= 0) {
    int64_t at[kPacks], cs[kPacks], ns[kPacks], rs[kPacks];
    Raw raw[kPacks][Op::kInputs];
    uint32_t bits[kPacks] = {};
#pragma unroll
    for (int j = 0; j < kPacks; ++j) {
      at[j] = pack;
      cs[j] = c;
      ns[j] = n;
      rs[j] = r;
      load_pack<Op, E>(op, pack, raw[j], bits[j]);
      pack -= w.stride;
      c -= w.flat.step_c;
      if (c < 0) c += w.flat.channels;
      step_sample(n, r, w.flat.step_n, w.flat.step_r, w.flat.sample_len);
    }
#pragma unroll
    for (int j = 0; j < kPacks; ++j) {
      if (at[j] < 0) break;
      typename Op::Coef k[E];
      flat_coefs<Op, E>(op, cs[j], ns[j], rs[j], w.flat, k);
      apply_pack<Op, E>(op, raw[j], bits[j], k, at[j] * E);
    }
  }
}

// The flat walk's tail: the tensor's last w.flat.tail (< E) elements, one thread, single loads.
template <class Op, int E>
__global__ void __launch_bounds__(32) apply_flat_tail(Op op, ApplyWalk w) {
  dev::enter_chain();
  using T = typename Op::Elem;
  const int64_t i = w.count * E, n = i / w.flat.sample_len;
  const int count = w.flat.tail;
  dev::Pack<T, E> raw[Op::kInputs];
  const uint32_t bits = load_some<Op, E>(op, i, count, raw);
  typename Op::Coef k[E];
  flat_coefs<Op, E>(op, i % w.flat.channels, n, i - n * w.flat.sample_len, w.flat, k, count);
  float r[Op::kOutputs][E];
  apply_values<Op, E>(op, raw, bits, k, r);
  op.template store_some<E>(i, r, count);
}

// Resident blocks of `kernel` with `threads` threads on the device, at least one per SM.
template <class Kernel>
int64_t resident_blocks(Kernel kernel, int threads, int sm_count) {
  int per_sm = 0;
  dev::check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0),
                  "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  return int64_t{per_sm > 0 ? per_sm : 1} * (sm_count > 0 ? sm_count : 1);
}

inline int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Enqueues op over a rows-layout tensor with E-element packs (plan.pack_elems, or half a pack for
// rows that allow only that: plan.row_load_elems; kRows != kInRow: 16-byte packs crossing rows);
// kPerSample: coefficients per (n, c), else per c. The caller checks cudaGetLastError.
template <class Op, int E, bool kPerSample, RowPacks kRows = RowPacks::kInRow>
void launch_rows_walk(const Op& op, const ChannelPlan& plan, int sm_count, cudaStream_t stream) {
  constexpr bool kCross = kRows != RowPacks::kInRow;
  ApplyWalk w{};
  auto kernel = apply_rows<Op, E, kRows>;
  const int64_t unit = kCross ? E : 1;  // walk units per pack
  w.rows.row_len = kCross ? plan.s : plan.s / E;
  w.count = plan.n * plan.c * plan.s / E;  // whole packs
  w.rows.tail = static_cast<int>(plan.n * plan.c * plan.s % E);
  w.rows.units = kPerSample ? plan.n * plan.c : plan.c;
  const int64_t wanted = ceil_div64(w.count, int64_t{kApplyBlock} * kGridPacks<Op>);
  const int64_t resident = resident_blocks(kernel, kApplyBlock, sm_count);
  const int64_t grid = wanted < 1 ? 1 : (wanted < resident ? wanted : resident);
  w.stride = grid * kApplyBlock;
  w.rows.step_units = w.stride * unit / w.rows.row_len % w.rows.units;
  w.rows.step_off = w.stride * unit % w.rows.row_len;
  dev::launch_dependent(kernel, static_cast<unsigned>(grid), kApplyBlock, 0, stream, op, w);
  if constexpr (kCross) {
    if (w.rows.tail > 0) dev::launch_dependent(apply_rows_tail<Op, E>, 1, 1, 0, stream, op, w);
  }
}

// The same over a channels-layout tensor with E-element packs (plan.pack_elems; kPeriod: 16-byte
// packs over rows of plan.period).
template <class Op, int E, bool kPerSample, bool kPeriod = false>
void launch_channels_walk(const Op& op, const ChannelPlan& plan, int sm_count,
                          cudaStream_t stream) {
  ApplyWalk w{};
  w.ch = ChannelsWalk{};
  const int64_t per = kPeriod ? plan.period / plan.c : 1;  // positions per walked row
  w.ch.channels = kPeriod ? plan.period : plan.c;
  w.ch.coef_channels = plan.c;
  w.ch.channel_packs = w.ch.channels / E;
  // Whole periods: plan.period divides every slot but one slot's period_tail (then N = 1 where
  // coefficients are per sample), which may leave none.
  w.count = plan.n * plan.s / per;
  // Per-sample walks take a reload's sample from it: whole periods there, at least 1 wherever a
  // row is walked (count >= 1).
  w.ch.s = kPerSample ? plan.s / per : 0;
  int64_t rows_per_block = 1;
  if (w.ch.channel_packs <= kApplyBlock) {
    w.ch.tiles = 1;
    w.ch.lanes = static_cast<int>(w.ch.channel_packs);
    rows_per_block = kApplyBlock / w.ch.channel_packs;
  } else {  // tiles of equal width, whole warps
    w.ch.tiles = ceil_div64(w.ch.channel_packs, kApplyBlock);
    w.ch.lanes = static_cast<int>(ceil_div64(ceil_div64(w.ch.channel_packs, w.ch.tiles), 32) * 32);
  }
  const int threads = static_cast<int>(w.ch.lanes * rows_per_block);
  auto kernel = apply_channels<Op, E, kPerSample, kPeriod>;
  const int64_t wanted = ceil_div64(w.count, rows_per_block * kGridPacks<Op>);
  int64_t row_blocks = resident_blocks(kernel, threads, sm_count) / w.ch.tiles;
  if (row_blocks > wanted) row_blocks = wanted;
  if (row_blocks < 1) row_blocks = 1;
  if (kPerSample) {  // a block's span: consecutive rows, a multiple of kGridPacks block heights
    w.stride = rows_per_block;
    const int64_t grain = rows_per_block * kGridPacks<Op>;
    w.ch.span = ceil_div64(ceil_div64(w.count, row_blocks), grain) * grain;
    if (w.ch.span < grain) w.ch.span = grain;  // no whole period (count 0): one idle block
    row_blocks = ceil_div64(w.count, w.ch.span);
    if (row_blocks < 1) row_blocks = 1;
  } else {  // coefficients held for good: a thread's packs a grid height apart
    w.stride = row_blocks * rows_per_block;
  }
  dev::launch_dependent(kernel, static_cast<unsigned>(row_blocks * w.ch.tiles), threads, 0, stream,
                        op, w);
  if constexpr (kPeriod) {
    if (plan.period_tail() > 0) {
      w.ch.tail_elems = plan.period_tail() * plan.c;
      w.ch.tail_unit = kPerSample ? (plan.n - 1) * plan.c : 0;
      dev::launch_dependent(apply_period_tail<Op, E>, 1, static_cast<unsigned>(w.ch.channel_packs),
                            0, stream, op, w);
    }
  }
}

// Enqueues op (per-sample coefficients) over a channels-layout tensor read as a flat one
// (plan.flat_packs) in E-element packs.
template <class Op, int E>
void launch_flat_walk(const Op& op, const ChannelPlan& plan, int sm_count, cudaStream_t stream) {
  ApplyWalk w{};
  w.flat = FlatWalk{};
  auto kernel = apply_flat<Op, E>;
  const int64_t numel = plan.n * plan.s * plan.c;
  w.count = numel / E;
  w.flat.tail = static_cast<int>(numel % E);
  w.flat.channels = plan.c;
  w.flat.sample_len = plan.s * plan.c;
  const int64_t wanted = ceil_div64(w.count, int64_t{kApplyBlock} * kGridPacks<Op>);
  const int64_t resident = resident_blocks(kernel, kApplyBlock, sm_count);
  const int64_t grid = wanted < 1 ? 1 : (wanted < resident ? wanted : resident);
  w.stride = grid * kApplyBlock;
  const int64_t step = w.stride * E;  // elements
  w.flat.step_c = step % plan.c;
  w.flat.step_n = step / w.flat.sample_len;
  w.flat.step_r = step % w.flat.sample_len;
  // The walk runs op.once().
  dev::launch_dependent(kernel, static_cast<unsigned>(grid), kApplyBlock, 0, stream, op, w);
  if (w.flat.tail > 0) dev::launch_dependent(apply_flat_tail<Op, E>, 1, 1, 0, stream, op, w);
}

// The elements of the widest packs the plan allows: 16 bytes (whole in a row, crossing rows, over
// periods of channels, or of the flat tensor), half a pack (rows of exactly that: S = 4 in 16
// bits, 2 in fp32), or single elements.
inline int elementwise_pack_elems(const ChannelPlan& plan, int elem_bytes) {
  const int e = 16 / elem_bytes;
  if (plan.rows_layout && plan.packs_cross_rows) return e;
  if (!plan.rows_layout && plan.flat_packs) return e;
  if (!plan.rows_layout && plan.period > 0 && plan.pack_elems > 1) return e;
  if (plan.rows_layout && plan.row_load_elems == e / 2) return e / 2;
  return plan.pack_elems == 1 ? 1 : e;
}

// Enqueues op with those packs (half packs are the rows layout's alone), over the elementwise_plan
// view of the reductions' plan for the op's coefficients.
template <class Op, bool kPerSample>
void launch_elementwise(const Op& op, const ChannelPlan& reduction_plan, int sm_count,
                        cudaStream_t stream) {
  constexpr int kE = 16 / sizeof(typename Op::Elem);
  const ChannelPlan plan =
      elementwise_plan(reduction_plan, sizeof(typename Op::Elem), kPerSample);
  const int e = elementwise_pack_elems(plan, sizeof(typename Op::Elem));
  if (plan.rows_layout) {
    if (plan.packs_cross_rows && plan.s >= kE) {
      launch_rows_walk<Op, kE, kPerSample, RowPacks::kCrossOne>(op, plan, sm_count, stream);
    } else if (plan.packs_cross_rows) {
      launch_rows_walk<Op, kE, kPerSample, RowPacks::kCrossMany>(op, plan, sm_count, stream);
    } else if (e == kE / 2) {
      launch_rows_walk<Op, kE / 2, kPerSample>(op, plan, sm_count, stream);
    } else if (e == 1) {
      launch_rows_walk<Op, 1, kPerSample>(op, plan, sm_count, stream);
    } else {
      launch_rows_walk<Op, kE, kPerSample>(op, plan, sm_count, stream);
    }
  } else if (plan.period > 0 && plan.pack_elems > 1) {  // a split period's misaligned: below
    launch_channels_walk<Op, kE, kPerSample, true>(op, plan, sm_count, stream);
  } else if (plan.flat_packs) {  // per-sample coefficients only (elementwise_plan)
    if constexpr (kPerSample) launch_flat_walk<Op, kE>(op, plan, sm_count, stream);
  } else if (e == 1) {
    launch_channels_walk<Op, 1, kPerSample>(op, plan, sm_count, stream);
  } else {
    launch_channels_walk<Op, kE, kPerSample>(op, plan, sm_count, stream);
  }
}

}  // namespace nk::cuda
