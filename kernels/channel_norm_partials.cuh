// Partial reductions of batch, instance and group norm, one per (slot, c, chunk) of
// channel_norm_plan.hpp, each written to its own slot. An Op supplies the state and what one
// element adds to it:
//   using State; static constexpr bool kReadsDy;
//   State identity() const; State merge(State lower, State higher) const;
//   Local local(int64_t n, int64_t c) const;   // per-(n, c) context, with
//   template <int K> void Local::push(State&, const float (&x)[K], const float (&dy)[K]) const;
//   template <int K> void Local::push_some(State&, const float (&x)[K], const float (&dy)[K],
//                                          const bool (&use)[K]) const;  // the flagged values
//   static constexpr bool kWelfordLanes;  // State is dev::Welford of x - Local::shift (float
//                                         // shift): a channels walk keeps WalkStates' lanes,
//                                         // and takes its pack's locals at once from
//   template <int E, bool kWrap> void locals(int64_t n, int64_t c, Local (&out)[E]) const;
//                                         // local(n, c + i), i < E (kWrap: back to channel 0
//                                         // at C, as a period's elements do)
//   static constexpr bool kFold, kAux;   // the backward's fused forms (else both false):
//   template <int E> void load_aux(int64_t i, float (&aux)[E]) const;  // kAux: at element i
//   template <int K> void Local::fold(const float (&x)[K], float (&dy)[K],
//                                     const float (&aux)[K]) const;     // kFold: dy := du
// local(n, c) is called with the slot as n: batch norm's one slot covers every n, so there its
// context must not depend on n (it is per channel). The forward reduces Welford states of x; the
// backward sums dy and dy * x-hat. A thread hands push a tile of K values of one (n, c) at once
// (several packs, loaded before any is used): the Welford state then pays its division and merge
// once per tile instead of once per value, and the tile's loads are in flight together; a channels
// walk of Welford states (kWelfordLanes) pushes value by value, its E channels sharing one count
// and reciprocal (WalkStates). Partials
// are merged in a fixed order (block_merge, or a fixed tree over the rows) and the chunks depend
// on the shape only, so results repeat bit for bit on any GPU and with any grid. The grid
// (persistent, grid-stride) is sized from the SM count: it decides only which block computes
// which partial.
#pragma once

#include <cstdint>
#include <utility>

#include "channel_norm_plan.hpp"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "common/welford.cuh"

namespace nk::cuda {

// The statistic that (n, c) belongs to: c (batch), n*C + c (instance), n*G + c/(C/G) (group).
__device__ __forceinline__ int64_t stat_index(ChannelNorm kind, int64_t n, int64_t c,
                                              int64_t channels, int64_t groups) {
  return kind == ChannelNorm::kBatch      ? c
         : kind == ChannelNorm::kInstance ? n * channels + c
                                          : n * groups + c / (channels / groups);
}

// Rows layout (NCHW, S > 1): a warp (short chunks) or a block per partial (slot, c, chunk) of a
// persistent grid-stride loop; its threads stride over the chunk's packs, tracking the row and the
// offset in it incrementally (no division per element), then merge once in a fixed tree.
template <class Op, class T, int E, bool kWarpPerChunk>
__global__ void __launch_bounds__(kPartialBlock)
    partials_rows(Op op, const T* x, const T* dy, ChannelPlan plan, typename Op::State* out) {
  dev::enter_chain();
  using State = typename Op::State;
  constexpr int kGroup = kWarpPerChunk ? 32 : kPartialBlock;  // threads per partial
  constexpr int kGroups = kPartialBlock / kGroup;
  // Loads per tile: 8 or 16 values; one 16-byte pack when an activation's derivative is folded in
  // (its per-value work would otherwise need more registers than the block's budget).
  constexpr int kTile = E >= 4 ? (Op::kFold ? 1 : 2) : 8 / E;
  __shared__ State scratch[32];
  auto merge = [&](State a, State b) { return op.merge(a, b); };
  const int t = threadIdx.x % kGroup;
  const int64_t seg_packs = plan.s / E, seg_stride = plan.c * plan.s;
  const int64_t span_packs = plan.span() / E, chunk_packs = plan.chunk_len / E;
  // A step of kGroup packs advances q rows and r packs (then one more row on wrap-around).
  const int64_t q = kGroup / seg_packs, r = kGroup % seg_packs;
  const int64_t step = q * seg_stride + r * E, wrap = seg_stride - seg_packs * E;
  const int64_t items = plan.partials();
  for (int64_t item = blockIdx.x * int64_t{kGroups} + threadIdx.x / kGroup; item < items;
       item += int64_t{gridDim.x} * kGroups) {
    const int64_t sc = item / plan.chunks, chunk = item % plan.chunks;  // sc = slot * C + c
    const int64_t begin = chunk * chunk_packs;
    const int64_t end = begin + chunk_packs < span_packs ? begin + chunk_packs : span_packs;
    // Row i of (slot, c) starts at (slot * C + c) * S + i * C * S: batch norm's slot 0 holds
    // every sample's row of c, instance and group norm's slot n the one row of (n, c).
    const T* xs = x + sc * plan.s;
    const T* ds = Op::kReadsDy ? dy + sc * plan.s : nullptr;
    const auto local = op.local(sc / plan.c, sc % plan.c);
    State st = op.identity();
    int64_t m = begin + t, off = m % seg_packs, at = m / seg_packs * seg_stride + off * E;
    // The thread's next pack (and dy's, and aux's), then a step past it: the element offset moves
    // by a constant, plus one row when the offset in the row wraps (no multiply per pack).
    auto load_pack = [&](float(&xv)[E], float(&dv)[E], float(&av)[E]) {
      dev::load_elements<T, E>(xs + at, xv);
      if constexpr (Op::kReadsDy) dev::load_elements<T, E>(ds + at, dv);
      if constexpr (Op::kAux) op.template load_aux<E>(sc * plan.s + at, av);
      off += r;
      at += step;
      if (off >= seg_packs) {
        off -= seg_packs;
        at += wrap;
      }
    };
    for (; m + (kTile - 1) * kGroup < end; m += kTile * kGroup) {  // whole tiles
      float xv[kTile * E], dv[kTile * E] = {}, av[kTile * E] = {};
#pragma unroll
      for (int u = 0; u < kTile; ++u) {
        float xp[E], dp[E] = {}, ap[E] = {};
        load_pack(xp, dp, ap);
#pragma unroll
        for (int i = 0; i < E; ++i)
          xv[u * E + i] = xp[i], dv[u * E + i] = dp[i], av[u * E + i] = ap[i];
      }
      if constexpr (Op::kFold) local.fold(xv, dv, av);
      local.push(st, xv, dv);
    }
    for (; m < end; m += kGroup) {  // the last packs, one at a time
      float xv[E], dv[E] = {}, av[E] = {};
      load_pack(xv, dv, av);
      if constexpr (Op::kFold) local.fold(xv, dv, av);
      local.push(st, xv, dv);
    }
    if constexpr (kWarpPerChunk) {
      st = dev::warp_merge(st, t, 32, merge);
    } else {
      st = dev::block_merge(st, scratch, op.identity(), merge);
    }
    if (t == 0) out[item] = st;  // item == partial_index(slot, c, chunk)
  }
}

// A row's end: the `count` (< E) elements from element i, as one masked tile of single loads.
template <class Op, class T, int E, class Local>
__device__ __forceinline__ void push_row_end(const Op& op, const Local& local,
                                             typename Op::State& st, const T* x, const T* dy,
                                             int64_t i, int64_t count) {
  float xv[E], dv[E] = {}, av[E] = {};
  bool use[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    use[e] = e < count;
    xv[e] = use[e] ? dev::to_float(x[i + e]) : 0.0f;
    if constexpr (Op::kReadsDy) dv[e] = use[e] ? dev::to_float(dy[i + e]) : 0.0f;
    if constexpr (Op::kAux) {
      float a1[1] = {0.0f};
      if (use[e]) op.template load_aux<1>(i + e, a1);
      av[e] = a1[0];
    }
  }
  if constexpr (Op::kFold) local.fold(xv, dv, av);
  local.push_some(st, xv, dv, use);
}

// Rows layout, short rows whose starts are not pack-aligned (S = 49, 77, ...; plan.short_rows):
// a lane reduces whole rows, walking each one alone: its head up to a pack boundary and its tail
// as masked tiles of single loads, whole packs between them (16-byte loads when the pointers
// allow, else E single loads). No lane crosses a row, so no pack straddles one and no
// per-element bookkeeping is needed; all lanes of a batch-norm warp share a misalignment when
// C * S is a multiple of the pack.
//  - kLanePerItem (instance and group norm: a partial is one row): a lane per partial;
//  - else (batch norm: a partial is chunk_len / S rows of channel c): a warp per partial, lane l
//    taking rows l, l + 32, ..., then a fixed butterfly across the lanes.
template <class Op, class T, int E, bool kAligned, bool kLanePerItem>
__global__ void __launch_bounds__(kPartialBlock)
    partials_short_rows(Op op, const T* x, const T* dy, ChannelPlan plan, typename Op::State* out) {
  dev::enter_chain();
  using State = typename Op::State;
  constexpr int kGroup = kLanePerItem ? 1 : 32;  // lanes per partial
  constexpr int kGroups = kPartialBlock / kGroup;
  auto merge = [&](State a, State b) { return op.merge(a, b); };
  const int t = threadIdx.x % kGroup;
  const int64_t seg_stride = plan.c * plan.s, chunk_rows = plan.chunk_len / plan.s;
  const int64_t items = plan.partials();
  // The whole grid loops the same number of times, so the warps' butterflies stay converged.
  const int64_t per_turn = int64_t{gridDim.x} * kGroups;
  const int64_t first = blockIdx.x * int64_t{kGroups} + threadIdx.x / kGroup;
  for (int64_t turn = 0; turn * per_turn < items; ++turn) {
    const int64_t item = first + turn * per_turn;
    State st = op.identity();
    if (item < items) {
      const int64_t sc = item / plan.chunks, chunk = item % plan.chunks;  // sc = slot * C + c
      const int64_t r0 = chunk * chunk_rows;
      const int64_t r1 = r0 + chunk_rows < plan.seg_count ? r0 + chunk_rows : plan.seg_count;
      const auto local = op.local(sc / plan.c, sc % plan.c);
      for (int64_t r = r0 + t; r < r1; r += kGroup) {
        const int64_t base = sc * plan.s + r * seg_stride;
        // Elements before the first pack boundary (none when the pointers rule packs out).
        const int64_t lead = kAligned ? (E - base % E) % E : 0;
        const int64_t head = lead < plan.s ? lead : plan.s;
        const int64_t packs = (plan.s - head) / E;
        if (head > 0) push_row_end<Op, T, E>(op, local, st, x, dy, base, head);
        const T* xp = x + base + head;
        const T* dp = Op::kReadsDy ? dy + base + head : nullptr;
#pragma unroll 1
        for (int64_t k = 0; k < packs; ++k) {
          float xv[E], dv[E] = {}, av[E] = {};
          if constexpr (kAligned) {
            dev::load_elements<T, E>(xp + k * E, xv);
            if constexpr (Op::kReadsDy) dev::load_elements<T, E>(dp + k * E, dv);
            if constexpr (Op::kAux) op.template load_aux<E>(base + head + k * E, av);
          } else {
#pragma unroll
            for (int i = 0; i < E; ++i) {
              xv[i] = dev::to_float(xp[k * E + i]);
              if constexpr (Op::kReadsDy) dv[i] = dev::to_float(dp[k * E + i]);
              if constexpr (Op::kAux) {
                float a1[1];
                op.template load_aux<1>(base + head + k * E + i, a1);
                av[i] = a1[0];
              }
            }
          }
          if constexpr (Op::kFold) local.fold(xv, dv, av);
          local.push(st, xv, dv);
        }
        const int64_t tail = plan.s - head - packs * E;
        if (tail > 0) push_row_end<Op, T, E>(op, local, st, x, dy, base + head + packs * E, tail);
      }
    }
    if constexpr (!kLanePerItem) st = dev::warp_merge(st, t, 32, merge);
    if (item < items && t == 0) out[item] = st;  // item == partial_index(slot, c, chunk)
  }
}

// Rows layout, long rows that are not whole half packs (S > kShortRow: 1031, 3025, 5329;
// plan.unaligned_rows) with 16-byte aligned pointers: a block per partial of a persistent
// grid-stride loop. Its chunk meets rows in pieces (the part of one row inside the chunk), each
// a head up to the first 16-byte boundary, whole packs, and a tail. The threads stride over the
// chunk's whole packs piece after piece, a cursor carrying each thread from a piece to the next
// (so no thread idles at a row's end and no pack straddles two rows), then take the pieces' ends
// as masked tiles, a piece per thread. Where a piece's packs start depends on the element index
// only (the pointers are 16-byte aligned), so the reduction tree is the shape's.
template <class Op, class T, int E>
__global__ void __launch_bounds__(kPartialBlock, 2)
    partials_unaligned_rows(Op op, const T* x, const T* dy, ChannelPlan plan,
                            typename Op::State* out) {
  dev::enter_chain();
  using State = typename Op::State;
  // Packs per tile, as partials_rows takes them.
  constexpr int kTile = Op::kFold ? 1 : 2;
  __shared__ State scratch[32];
  auto merge = [&](State a, State b) { return op.merge(a, b); };
  const int64_t seg_stride = plan.c * plan.s, span = plan.span();
  const int64_t items = plan.partials();
  struct Piece {
    int64_t at;     // element index of the piece's first element
    int64_t head;   // elements before the first 16-byte boundary (or the whole piece)
    int64_t packs;  // whole packs after them
    int64_t tail;   // elements after the packs
  };
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t sc = item / plan.chunks, chunk = item % plan.chunks;  // sc = slot * C + c
    const int64_t begin = chunk * plan.chunk_len;
    const int64_t end = begin + plan.chunk_len < span ? begin + plan.chunk_len : span;
    const int64_t r0 = begin / plan.s, r_end = (end - 1) / plan.s + 1;  // rows [r0, r_end)
    const auto local = op.local(sc / plan.c, sc % plan.c);
    // The piece of row r that starts at element `at` of the tensor (row r's start, or `begin`'s
    // element for row r0) and holds `len` elements.
    auto piece = [](int64_t at, int64_t len) {
      int64_t head = -at & (E - 1);
      if (head > len) head = len;
      const int64_t packs = static_cast<uint64_t>(len - head) / E;
      return Piece{at, head, packs, len - head - packs * E};
    };
    const int64_t first_at = sc * plan.s + r0 * seg_stride + (begin - r0 * plan.s);
    const int64_t first_len = (end < (r0 + 1) * plan.s ? end : (r0 + 1) * plan.s) - begin;
    State st = op.identity();
    // The thread's cursor: pack k of row r's piece, whose `packs` whole packs start at element
    // packs_at (r == r_end: no packs left); row_at is row r's element 0 and left the chunk's
    // elements from there on, so the next row's piece costs additions only.
    int64_t r = r0, k = threadIdx.x;
    int64_t row_at = sc * plan.s + r0 * seg_stride, left = end - r0 * plan.s;
    const Piece p0 = piece(first_at, first_len);
    int64_t packs_at = p0.at + p0.head, packs = p0.packs;
    auto settle = [&] {
      while (r < r_end && k >= packs) {
        k -= packs;
        if (++r < r_end) {
          row_at += seg_stride;
          left -= plan.s;
          const Piece p = piece(row_at, left < plan.s ? left : plan.s);
          packs_at = p.at + p.head;
          packs = p.packs;
        }
      }
    };
    settle();
    for (;;) {
      float xv[kTile * E], dv[kTile * E] = {}, av[kTile * E] = {};
      int got = 0;
#pragma unroll
      for (int u = 0; u < kTile; ++u) {
        if (r < r_end) {
          const int64_t i = packs_at + k * E;
          float xp[E], dp[E] = {}, ap[E] = {};
          // load_floats, not load_elements: with the word split, ptxas gave the bf16 gradient
          // sums 84 registers where they take 80, 2 resident blocks where they have 3.
          dev::load_floats<T, E>(x + i, xp);
          if constexpr (Op::kReadsDy) dev::load_floats<T, E>(dy + i, dp);
          if constexpr (Op::kAux) op.template load_aux<E>(i, ap);
#pragma unroll
          for (int e = 0; e < E; ++e) {
            xv[u * E + e] = xp[e];
            dv[u * E + e] = dp[e];
            av[u * E + e] = ap[e];
          }
          ++got;
          k += kPartialBlock;
          settle();
        }
      }
      if (got == kTile) {
        if constexpr (Op::kFold) local.fold(xv, dv, av);
        local.push(st, xv, dv);
        continue;
      }
      if (got > 0) {  // kTile == 2: the first pack alone
        float xs[E], ds[E], as[E];
#pragma unroll
        for (int e = 0; e < E; ++e) xs[e] = xv[e], ds[e] = dv[e], as[e] = av[e];
        if constexpr (Op::kFold) local.fold(xs, ds, as);
        local.push(st, xs, ds);
      }
      break;
    }
    // The pieces' heads and tails.
    for (int64_t q = r0 + threadIdx.x; q < r_end; q += kPartialBlock) {
      const int64_t q_end = end - q * plan.s < plan.s ? end : (q + 1) * plan.s;  // in the slot
      const Piece w = q == r0 ? piece(first_at, first_len)
                              : piece(sc * plan.s + q * seg_stride, q_end - q * plan.s);
      const int64_t tail_at = w.at + w.head + w.packs * E;
      if (w.head > 0) push_row_end<Op, T, E>(op, local, st, x, dy, w.at, w.head);
      if (w.tail > 0) push_row_end<Op, T, E>(op, local, st, x, dy, tail_at, w.tail);
    }
    st = dev::block_merge(st, scratch, op.identity(), merge);
    if (threadIdx.x == 0) out[item] = st;  // item == partial_index(slot, c, chunk)
  }
}

// The channel of column j of a column walk (column_view: fewer than 2^31 columns), in 32 bits: a
// 64-bit division there spilled registers of the gradient sums.
__device__ __forceinline__ int64_t column_channel(int64_t j, int columns) {
  return static_cast<uint32_t>(j) / static_cast<uint32_t>(columns);
}

// Channels layout (NHWC, S == 1, or column_view's columns of batch norm's short NCHW rows): the
// block's threads as plan.block_rows() rows of plan.lanes lanes (lanes = the channel packs, or a
// tile's even share of them, at most 32: a block leaves fewer than lanes threads of the 256 idle,
// and only the last tile lanes without a pack, fewer than the tiles); lane tx owns channel pack
// blockIdx.x * lanes + tx, row ty walks positions p = ty, ty + rows, ... of one (slot, chunk) item
// (p = n * S + s for batch norm's one slot, s for sample n's slot); the rows are then merged as a
// fixed-order tree in shared memory.
// kWalk kPeriod (plan.period = L, C % E != 0): the same walk over rows of L elements (L / C
// positions each, one block wide), where element i of a row is channel i % C; the row's L / C
// states of a channel are then merged in index order, so the partials are per channel as without
// it; one slot's partial last row (plan.period_tail()) is added to the last chunk's partials after
// it (partials_period_tail).
// kSplitPeriod (plan.period_split, L wider than a block): rows of L elements walked in tiles
// of lanes packs, as if they were L channels; element i's state is the partial of channel i % C
// for occurrence i / C, which plan.partial_index files as chunk chunk * L / C + i / C.
enum class ChannelWalk { kChannels, kPeriod, kSplitPeriod };

// A thread's E states over a channels walk, each tile of K positions (K values a channel) pushed
// onto all of them: by default a state per element, each pushed on its own (after Op's fold); an
// Op whose state is the Welford state of x - Local::shift (kWelfordLanes) keeps
// dev::WelfordLanes, pushed value by value with one count for the E: 2E + 1 registers of state
// and none for the tile's values once converted, so that more threads fit on an SM.
template <class Op, int E, bool kLanes = Op::kWelfordLanes>
struct WalkStates {
  using State = typename Op::State;
  using Local = decltype(std::declval<Op>().local(0, 0));
  State st[E];
  __device__ explicit WalkStates(const Op& op) {
#pragma unroll
    for (int i = 0; i < E; ++i) st[i] = op.identity();
  }
  template <int K>
  __device__ void push(const Local (&local)[E], const float (&xp)[K][E], const float (&dp)[K][E],
                       const float (&ap)[K][E]) {
#pragma unroll
    for (int i = 0; i < E; ++i) {
      float xv[K], dv[K], av[K];
#pragma unroll
      for (int u = 0; u < K; ++u) xv[u] = xp[u][i], dv[u] = dp[u][i], av[u] = ap[u][i];
      if constexpr (Op::kFold) local[i].fold(xv, dv, av);
      local[i].push(st[i], xv, dv);
    }
  }
  __device__ State get(int i) const { return st[i]; }
};

template <class Op, int E>
struct WalkStates<Op, E, true> {
  using Local = decltype(std::declval<Op>().local(0, 0));
  dev::WelfordLanes<E> lanes;
  __device__ explicit WalkStates(const Op&) : lanes(dev::welford_lanes_empty<E>()) {}
  template <int K>
  __device__ void push(const Local (&local)[E], const float (&xp)[K][E], const float (&)[K][E],
                       const float (&)[K][E]) {
#pragma unroll
    for (int u = 0; u < K; ++u) {
      float v[E];
#pragma unroll
      for (int i = 0; i < E; ++i) v[i] = xp[u][i] - local[i].shift;
      dev::welford_lanes_push<E>(lanes, v);
    }
  }
  __device__ dev::Welford get(int i) const { return dev::welford_lane(lanes, i); }
};

// The block's states in shared memory for the tree over its rows, element i's of the threads side
// by side, so that a warp's accesses to one element are consecutive words: thread-major
// ([thread][E]) put the lanes E states apart, on the same banks (a 16- or 32-way conflict at every
// access of the tree; the forward's 16-byte Welford states spent more shared-memory cycles there
// than the walk took to load x). By default the Op's states, merged by Op::merge.
template <class Op, int E, bool kLanes = Op::kWelfordLanes>
struct WalkTree {
  using State = typename Op::State;
  State s[E][kPartialBlock];
  __device__ void put(int t, const WalkStates<Op, E>& st) {
#pragma unroll
    for (int i = 0; i < E; ++i) s[i][t] = st.get(i);
  }
  __device__ void merge(const Op& op, int t, int u) {  // t's states := merge(t's, u's)
#pragma unroll
    for (int i = 0; i < E; ++i) s[i][t] = op.merge(s[i][t], s[i][u]);
  }
  __device__ State get(int i, int t) const { return s[i][t]; }
};

// Welford lanes (Op::merge is dev::welford_merge_approx): a thread's E states share their count,
// and so do the pair a merge joins, so b's share of the merged count is taken once for the E
// lanes (one int64 -> float conversion and one reciprocal a pair, where a merge per state took E)
// and each lane only combines its mean and m2: the same arithmetic, so the same bits, as
// welford_merge_approx state by state. 8E + 8 bytes a thread, where the states took 16E.
template <class Op, int E>
struct WalkTree<Op, E, true> {
  int64_t count[kPartialBlock];
  float mean[E][kPartialBlock];
  float m2[E][kPartialBlock];
  __device__ void put(int t, const WalkStates<Op, E>& st) {
    const dev::Welford first = st.get(0);
    count[t] = first.count;
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const dev::Welford w = st.get(i);
      mean[i][t] = w.mean;
      m2[i][t] = w.m2;
    }
  }
  __device__ void merge(const Op&, int t, int u) {
    const int64_t b = count[u];
    if (b == 0) return;  // welford_merge_approx's empty b
    const int64_t a = count[t];
    const float merged = static_cast<float>(a + b), b_count = static_cast<float>(b);
    const float share = dev::welford_share(merged, b_count, a == 0);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      dev::welford_combine(mean[i][t], m2[i][t], mean[i][u], m2[i][u], merged - b_count, share);
    }
    count[t] = a + b;
  }
  __device__ dev::Welford get(int i, int t) const {
    return dev::Welford{count[t], mean[i][t], m2[i][t]};
  }
};

template <class Op, class T, int E, ChannelWalk kWalk>
__global__ void __launch_bounds__(kPartialBlock)
    partials_channels(Op op, const T* x, const T* dy, ChannelPlan plan, typename Op::State* out) {
  dev::enter_chain();
  using State = typename Op::State;
  constexpr bool kPeriodic = kWalk != ChannelWalk::kChannels;
  constexpr int kTile = 4;  // positions (kPeriodic: rows of L) per tile
  __shared__ WalkTree<Op, E> tree;
  const int lanes = plan.lanes, rows = plan.block_rows();
  const int tx = threadIdx.x % lanes, ty = threadIdx.x / lanes;
  const int64_t pack = int64_t{blockIdx.x} * lanes + tx;
  const int64_t width = kPeriodic ? plan.period : plan.c;    // elements per walked row
  const int64_t per = kPeriodic ? plan.period / plan.c : 1;  // positions per walked row
  const bool valid = pack * E < width && ty < rows;
  const int64_t c_first = kPeriodic ? pack * E % plan.c : pack * E;  // of its first element
  // The tree's first step folds rows [top, rows) onto [0, rows - top); then it halves.
  int top = 1;
  while (top * 2 < rows) top *= 2;
  const int64_t chunks = plan.walk_chunks;
  const int64_t items = plan.slots * chunks, span = plan.span() / per;
  for (int64_t item = blockIdx.y; item < items; item += gridDim.y) {
    const int64_t slot = item / chunks, chunk = item % chunks;
    const int64_t p_begin = chunk * (plan.chunk_len / per);
    const int64_t p_end =
        p_begin + plan.chunk_len / per < span ? p_begin + plan.chunk_len / per : span;
    WalkStates<Op, E> st(op);
    if (valid) {
      decltype(op.local(0, 0)) local[E];
      // Per item, so nothing of this is per element (stepping the channel with a wrap inside the
      // walk took the SiLU gradient sums from 128 to 221 registers): each element's channel
      // stepped from the first one's, back to 0 where a period wraps (Op::locals); a column
      // walk's (see column_view) advances every plan.columns columns.
      auto step_locals = [&] {
        int64_t col = c_first, ch = c_first;
        int q = 0;
        if (plan.columns > 1) {
          ch = column_channel(c_first, plan.columns);
          q = static_cast<int>(c_first - ch * plan.columns);
        }
#pragma unroll
        for (int i = 0; i < E; ++i) {
          local[i] = op.local(slot, ch);
          if (kPeriodic && ++col == plan.c) {
            col = 0, ch = 0, q = 0;
          } else if (++q == plan.columns) {
            q = 0, ++ch;
          }
        }
      };
      // The statistics' Op steps the statistic too (Op::locals); the gradient sums keep the
      // loop above: with both forms in the kernel, the sums that take act' from y spilled 8 to
      // 12 bytes (bf16 and fp16) at their 128 registers.
      if constexpr (Op::kWelfordLanes) {
        if (plan.columns > 1) {
          step_locals();
        } else {
          op.template locals<E, kPeriodic>(slot, c_first, local);
        }
      } else {
        step_locals();
      }
      // Tiles of kTile positions: each channel of the pack gets kTile values per push.
      auto load = [&](int64_t pos, float(&xv)[E], float(&dv)[E], float(&av)[E]) {
        const int64_t at = (slot * span + pos) * width + pack * E;
        dev::load_elements<T, E>(x + at, xv);
        if constexpr (Op::kReadsDy) dev::load_elements<T, E>(dy + at, dv);
        if constexpr (Op::kAux) op.template load_aux<E>(at, av);
      };
      int64_t pos = p_begin + ty;
      // The forward's walk was bound by waiting on its loads (ncu, N256 C64 56x56 NHWC: 54 % of
      // the stalls, 4 packs a thread in flight and none while it pushed them): the next tile is
      // fetched into L2 meanwhile, so that its loads find it there (only the first waits on
      // DRAM). Loading it into registers instead was moved back after the pushes by the
      // compiler. Channel walks only: in the period walks, the prefetch's registers made their
      // setup spill one around its 64-bit division.
      constexpr bool kPrefetch = Op::kWelfordLanes && kWalk == ChannelWalk::kChannels;
      for (; pos + (kTile - 1) * rows < p_end; pos += kTile * rows) {
        float xp[kTile][E], dp[kTile][E] = {}, ap[kTile][E] = {};
        if constexpr (kPrefetch) {
          // Loads and prefetches from one pointer a tile: its packs are rows * width apart.
          const T* tile = x + (slot * span + pos) * width + pack * E;
          const int64_t row_step = rows * width;
          if (pos + (2 * kTile - 1) * rows < p_end) {
#pragma unroll
            for (int u = 0; u < kTile; ++u) dev::prefetch_l2(tile + (kTile + u) * row_step);
          }
#pragma unroll
          for (int u = 0; u < kTile; ++u) dev::load_elements<T, E>(tile + u * row_step, xp[u]);
        } else {
#pragma unroll
          for (int u = 0; u < kTile; ++u) load(pos + u * rows, xp[u], dp[u], ap[u]);
        }
        st.push(local, xp, dp, ap);
      }
      for (; pos < p_end; pos += rows) {  // the last positions, one at a time
        float xp[1][E], dp[1][E] = {}, ap[1][E] = {};
        load(pos, xp[0], dp[0], ap[0]);
        st.push(local, xp, dp, ap);
      }
    }
    tree.put(threadIdx.x, st);
    __syncthreads();
    for (int stride = rows > 1 ? top : 0; stride > 0; stride /= 2) {
      if (ty < stride && ty + stride < rows)
        tree.merge(op, threadIdx.x, threadIdx.x + stride * lanes);
      __syncthreads();
    }
    if constexpr (kWalk == ChannelWalk::kPeriod) {
      // Row 0 holds the block's states of the L elements of a row, element j as state j % E of
      // thread j / E: channel c's are c, c + C, ..., merged in that order.
      for (int64_t c = threadIdx.x; c < plan.c; c += blockDim.x) {
        State merged = tree.get(c % E, c / E);
        for (int64_t j = c + plan.c; j < width; j += plan.c)
          merged = op.merge(merged, tree.get(j % E, j / E));
        out[item * plan.c + c] = merged;  // partial_index
      }
    } else if (ty == 0 && valid) {
#pragma unroll
      for (int i = 0; i < E; ++i)  // partial_index (kSplitPeriod: an occurrence's chunk)
        out[item * width + pack * E + i] = tree.get(i, tx);
    }
    __syncthreads();
  }
}

// The partial last row of a one-slot period walk (plan.period_tail() positions, the tensor's last
// period_tail * C elements), which ends the last chunk: thread c pushes channel c's values, in
// order, one by one, onto the partial that the walk left for that chunk. A launch of its own,
// stream-ordered after the walk: inside partials_channels this took the gradient sums of the
// ReLU mask from 98 to 165 registers.
template <class Op, class T>
__global__ void __launch_bounds__(kPartialBlock)
    partials_period_tail(Op op, const T* x, const T* dy, ChannelPlan plan,
                         typename Op::State* out) {
  dev::enter_chain();
  const int64_t end = plan.span() * plan.c;  // one slot: the tensor's end
  const int64_t base = end - plan.period_tail() * plan.c;  // the partial row's element 0
  for (int64_t c = threadIdx.x; c < plan.c; c += blockDim.x) {
    const auto local = op.local(0, plan.columns > 1 ? column_channel(c, plan.columns) : c);
    const int64_t item = plan.partial_index(0, c, plan.chunks - 1);
    typename Op::State st = out[item];
    for (int64_t at = base + c; at < end; at += plan.c) {
      float xv[1] = {dev::to_float(x[at])}, dv[1] = {0.0f}, av[1] = {0.0f};
      if constexpr (Op::kReadsDy) dv[0] = dev::to_float(dy[at]);
      if constexpr (Op::kAux) op.template load_aux<1>(at, av);
      if constexpr (Op::kFold) local.fold(xv, dv, av);
      local.push(st, xv, dv);
    }
    out[item] = st;
  }
}

// Launches the partial reduction the plan asks for.
template <class Op, class T>
void launch_partials(const Op& op, const T* x, const T* dy, const ChannelPlan& plan, int sm_count,
                     typename Op::State* out, cudaStream_t stream) {
  constexpr int kE = 16 / sizeof(T);
  if (plan.rows_layout && plan.columns > 1) {  // batch norm's short rows: the channels walk
    launch_partials(op, x, dy, column_view(plan), sm_count, out, stream);
    return;
  }
  const int64_t cap = int64_t{sm_count} * 16;  // persistent grids: enough blocks to fill the GPU
  auto blocks = [&](int64_t want) { return static_cast<unsigned>(want < cap ? want : cap); };
  if (plan.rows_layout && plan.short_rows) {
    const int64_t items = plan.partials();
    const bool aligned = plan.row_load_elems > 1;  // the pointers allow 16-byte loads
    if (plan.seg_count == 1) {                     // instance and group norm: a lane per partial
      const unsigned grid = blocks((items + kPartialBlock - 1) / kPartialBlock);
      if (aligned) {
        dev::launch_dependent(partials_short_rows<Op, T, kE, true, true>, grid, kPartialBlock, 0,
                              stream, op, x, dy, plan, out);
      } else {
        dev::launch_dependent(partials_short_rows<Op, T, kE, false, true>, grid, kPartialBlock, 0,
                              stream, op, x, dy, plan, out);
      }
    } else {  // batch norm: a warp per partial
      const unsigned grid = blocks((items + 7) / 8);
      if (aligned) {
        dev::launch_dependent(partials_short_rows<Op, T, kE, true, false>, grid, kPartialBlock, 0,
                              stream, op, x, dy, plan, out);
      } else {
        dev::launch_dependent(partials_short_rows<Op, T, kE, false, false>, grid, kPartialBlock, 0,
                              stream, op, x, dy, plan, out);
      }
    }
  } else if (plan.rows_layout && plan.unaligned_rows) {
    const unsigned grid = blocks(plan.partials());
    dev::launch_dependent(partials_unaligned_rows<Op, T, kE>, grid, kPartialBlock, 0, stream, op, x,
                          dy, plan, out);
  } else if (plan.rows_layout) {
    const int64_t items = plan.partials();
    const unsigned grid = plan.warp_per_chunk ? blocks((items + 7) / 8) : blocks(items);
    if (plan.row_load_elems == 1) {
      if (plan.warp_per_chunk) {
        dev::launch_dependent(partials_rows<Op, T, 1, true>, grid, kPartialBlock, 0, stream, op, x,
                              dy, plan, out);
      } else {
        dev::launch_dependent(partials_rows<Op, T, 1, false>, grid, kPartialBlock, 0, stream, op, x,
                              dy, plan, out);
      }
    } else if (plan.row_load_elems == kE / 2) {
      if (plan.warp_per_chunk) {
        dev::launch_dependent(partials_rows<Op, T, kE / 2, true>, grid, kPartialBlock, 0, stream,
                              op, x, dy, plan, out);
      } else {
        dev::launch_dependent(partials_rows<Op, T, kE / 2, false>, grid, kPartialBlock, 0, stream,
                              op, x, dy, plan, out);
      }
    } else if (plan.warp_per_chunk) {
      dev::launch_dependent(partials_rows<Op, T, kE, true>, grid, kPartialBlock, 0, stream, op, x,
                            dy, plan, out);
    } else {
      dev::launch_dependent(partials_rows<Op, T, kE, false>, grid, kPartialBlock, 0, stream, op, x,
                            dy, plan, out);
    }
  } else {
    using W = ChannelWalk;
    const int64_t width = plan.period_split ? plan.period : plan.c;  // elements of a walked row
    const int64_t tiles = plan.period > 0 && !plan.period_split
                              ? 1
                              : (width / plan.pack_elems + plan.lanes - 1) / plan.lanes;
    const int64_t items = plan.slots * plan.walk_chunks;
    const dim3 grid(static_cast<unsigned>(tiles),
                    static_cast<unsigned>(items < 65535 ? items : 65535));
    if (plan.period_split && plan.pack_elems == 1) {
      dev::launch_dependent(partials_channels<Op, T, 1, W::kSplitPeriod>, grid, kPartialBlock, 0,
                            stream, op, x, dy, plan, out);
    } else if (plan.period_split) {
      dev::launch_dependent(partials_channels<Op, T, kE, W::kSplitPeriod>, grid, kPartialBlock, 0,
                            stream, op, x, dy, plan, out);
    } else if (plan.period > 0) {
      dev::launch_dependent(partials_channels<Op, T, kE, W::kPeriod>, grid, kPartialBlock, 0,
                            stream, op, x, dy, plan, out);
      if (plan.period_tail() > 0) {
        dev::launch_dependent(partials_period_tail<Op, T>, 1, kPartialBlock, 0, stream, op, x, dy,
                              plan, out);
      }
    } else if (plan.pack_elems == 1) {
      dev::launch_dependent(partials_channels<Op, T, 1, W::kChannels>, grid, kPartialBlock, 0,
                            stream, op, x, dy, plan, out);
    } else {
      dev::launch_dependent(partials_channels<Op, T, kE, W::kChannels>, grid, kPartialBlock, 0,
                            stream, op, x, dy, plan, out);
    }
  }
}

// The finalize kernels' fold over a statistic's partials: members j = first, first + step, ...
// below `members` of the pairs (m, chunk) = (j / chunks, j % chunks) (MemberCursor), kAhead loads
// in flight; load(m, chunk) reads member j's value. The order of the folds is the plain loop's.
template <int kAhead, class Acc, class Load, class Fold>
__device__ __forceinline__ Acc fold_members(Acc acc, int64_t first, int64_t members,
                                            int64_t chunks, int64_t step, Load load, Fold fold) {
  MemberCursor at(first, chunks, step);
  auto next = [&] {
    const auto v = load(at.m, at.chunk);
    at.advance();
    return v;
  };
  return dev::fold_ahead<kAhead>(acc, members_from(first, members, step), next, fold);
}

}  // namespace nk::cuda
