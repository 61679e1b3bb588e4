// How the batch, instance and group norm kernels split their work. Plain C++ so the plan is unit
// tested on machines without a GPU.
//
// Every statistic of the three norms is a merge of partial statistics, one per (slot, c, chunk):
// batch norm has one slot (a channel's N*S values, all samples together), instance and group norm
// one slot per sample n (its S values of channel c). A slot's values of channel c are cut into
// `chunks` pieces of `chunk_len`, each reduced by one block (or warp) into its own partial; a
// finalize then merges a statistic's partials in index order. The chunking is a function of the
// shape and the element size only, never of the SM count, the occupancy or the grid launched, so
// the reduction tree, and every output bit, is the same on every GPU; the grid only decides which
// block computes which partial. The chunk count is capped (chunk_cap), so batch norm's partials
// take at most max(C * kMaxChunks, kFewPartials) slots whatever N is.
//
// Two layouts of the reduction:
//  - rows: NCHW with S > 1 (and NHWC with C == 1, the same memory), where (n, c) is a contiguous
//    row of S elements and a slot's values of c are `seg_count` such rows (N for batch norm, 1
//    otherwise), C*S elements apart. A chunk is a range of that sequence; a warp (short chunks)
//    or a block walks it with the row and offset tracked incrementally, so short rows of batch
//    norm do not leave threads idle;
//  - channels: NHWC, and NCHW with S == 1 (then also channels-contiguous), where `lanes` threads
//    cover consecutive channel packs (as many as there are packs when C is small; else the packs
//    shared evenly over the tiles that 32 lanes would take: C = 320 in 16 bits is two tiles of 20)
//    and the block's remaining threads walk down the slot's positions (n*S + s for batch norm, s
//    otherwise) in `block_rows` rows; a chunk is a range of positions. Where C is not a multiple of
//    the 16-byte pack (C = 3, 20, 100), a pack's channels change from position to position but
//    repeat every L = lcm(C, pack) elements (L / C positions): the walk then reads the slot as rows
//    of L elements (`period`), a lane keeps one pack of that row, and the block merges the L / C
//    states of each channel in a fixed order before writing its partial. One slot (batch norm, or
//    N = 1) need not be whole periods: its partial last row of L (`period_tail()` positions) is
//    then added to the last chunk's partials after the walk. A period wider than a block (C = 1001:
//    1001 packs) is walked as rows of L channels in tiles of 32 lanes; each occurrence of a channel
//    in the row then keeps a partial of its own, so that a chunk of the walk is L / C chunks of the
//    finalize (`period_split`).
// Batch norm in the rows layout with rows shorter than a pack (S = 2, 3, 5, 6, 7 in 16-bit types,
// 3 in fp32; `columns` = S) reduces in the channels layout instead: each sample's C * S elements
// are C * S channels (columns) of one position, so 16-byte packs of the samples feed the same
// columns at every n (column_view); column (c, s) leaves its partials as a channel of that walk,
// and the finalize merges channel c's S columns chunk by chunk (partial_index). The elementwise
// passes keep the rows plan.
#pragma once

#include <cstddef>
#include <cstdint>

#include "op_args.hpp"

#ifdef __CUDACC__
#define NK_PLAN_HD __host__ __device__
#else
#define NK_PLAN_HD
#endif

namespace nk::cuda {

constexpr int kPartialBlock = 256;         // threads of the partial-reduction blocks
constexpr int64_t kMaxChunks = 128;        // chunks per (slot, c), at most (but see kFewPartials)
// Partials in all up to which the cap above is lifted: few (slot, c) with many values (batch norm
// with C <= 256 in NHWC, a single tile of channel packs) would otherwise run at most 128 blocks,
// about one per SM, too few bytes in flight to cover memory latency. 2 MiB of Welford states.
constexpr int64_t kFewPartials = 131072;
constexpr int64_t kWantedItems = 1024;     // work items the reduction aims at (fills any GPU)
constexpr int64_t kMinRowChunk = 4096;     // elements a chunk holds at least, rows layout
// Channels layout: positions (periods) a chunk gives each row of the block's threads, at least:
// two tiles of partials_channels' walk, so that a thread has the second in flight while it pushes
// the first. With one (4 positions) a block spent most of its time on its setup and merge tree
// (ncu, N32 C64 56x56 NHWC: 784 blocks, 39 % of the stalls at the tree's barriers).
constexpr int64_t kMinChannelSteps = 8;
constexpr int64_t kWarpChunk = 1024;       // rows-layout chunks up to this many elements: a warp
// Longer rows-layout chunks, up to kWarpChunkMany elements, take a warp too where there are at
// least kWarpItems of them (a warp each fills any GPU): a block's merge (shuffles, then 8 warps'
// states merged by every thread, each merge a division) cost group norm's chunks of one
// 4096-element row 81 % of the issue slots at 20 % of DRAM peak on the H200 (N8 C1280 64x64 bf16,
// 10240 chunks: 91 us), where a warp merges once per 128 elements. Fewer chunks keep their blocks,
// which spread over more SMs.
constexpr int64_t kWarpChunkMany = 4096;
constexpr int64_t kWarpItems = 8192;
constexpr int64_t kShortRow = 1024;        // rows up to this long, unaligned: a lane per row
// Channels layout: periods wider than a block are split into occurrences up to this many
// elements (the apply walk keeps a channel in an int).
constexpr int64_t kMaxSplitPeriod = int64_t{1} << 30;

struct ChannelPlan {
  bool rows_layout;     // see above
  bool warp_per_chunk;  // rows layout: a warp per chunk (else a block)
  int lanes;            // channels layout: threads across channel packs, ceil(packs / tiles)
                        // for tiles = ceil(packs / 32) (at most 32, idle lanes only in the
                        // last tile, fewer than tiles of them), or
                        // the period's packs (period / pack_elems, up to kPartialBlock; 32 for
                        // a split period)
  NK_PLAN_HD int block_rows() const {
    return kPartialBlock / lanes;
  }                    // channels layout: rows down s
  int pack_elems;      // 16 / sizeof(T) when pointers and sizes allow 16-byte access, else 1
  int row_load_elems;  // rows layout, the partial reduction's loads: pack_elems, or half of a
                       // 16-byte pack when S is a multiple of that only (S = 196 in 16 bits);
                       // short and unaligned rows: 16 / sizeof(T) (the pack between a row's
                       // ends) when the pointers allow, else 1
  bool short_rows;     // rows layout, S <= kShortRow and not a multiple of half a pack (49, 77):
                       // a lane per row (partials_short_rows), chunks of whole rows
  bool unaligned_rows;  // rows layout, S > kShortRow and not a multiple of half a pack (1031,
                        // 3025), pointers 16-byte aligned: the partials walk each row's pieces
                        // as head, whole packs and tail (partials_unaligned_rows)
  bool packs_cross_rows;  // rows layout, S % pack != 0: the elementwise passes still take
                          // 16-byte packs of the flat tensor (every pointer 16-byte aligned,
                          // S != pack / 2), a pack spanning two rows (S > pack) or several
                          // (S < pack), and the tensor's last N*C*S % pack elements one by one
  bool flat_packs;     // channels layout, C % pack != 0, every pointer 16-byte aligned, and no
                       // period walk (slots that are not whole periods, N > 1; a period wider
                       // than a block that is not whole): the elementwise passes with per-sample
                       // coefficients take 16-byte packs of the flat tensor, each element its own
                       // (sample, channel)'s coefficients, the last N*S*C % pack elements one by
                       // one (see elementwise_plan for per-channel ones)
  int64_t period;      // channels layout, C % pack != 0, pointers 16-byte aligned (or any
                       // pointers, period_split): L, the elements after which a pack's channels
                       // repeat (a multiple of C and of the pack), where each slot and chunk is
                       // whole rows of L but for period_tail(); else 0
  bool period_split;   // a period of more than kPartialBlock packs: each walked chunk leaves
                       // L / C partials per channel, one per occurrence in the row of L
                       // (chunks counts them); pack_elems 1 with misaligned pointers
  int columns;         // batch norm in the rows layout with S < pack (not half a pack) and
                       // C * S < 2^31 (the kernels' column index is 32-bit): S, and the
                       // statistics walk column_view (lanes, row_load_elems as its pack_elems,
                       // period, period_split, walk_chunks and chunk_len are its; chunks counts
                       // a channel's partials: the walk's chunks times S); column_view keeps it,
                       // so its walk's channel j reduces for channel j / columns. Else 1
  int64_t slots;       // 1 (batch norm) or n
  int64_t seg_count;   // rows of S per slot and channel: n (batch norm) or 1
  int64_t chunks;      // pieces each (slot, c)'s seg_count * S values are split into: the
                       // partials the finalize merges (period_split: walk_chunks * L / C)
  int64_t walk_chunks;  // chunks of positions the partial reduction walks per slot, chunk_len
                        // each: chunks, or chunks / (L / C) for a split period (a field, not a
                        // division in the kernels, where it cost registers)
  int64_t chunk_len;   // elements (rows layout: a multiple of 8) or positions per piece
                       // (channels layout with C % pack != 0: a multiple of L / C where the
                       // span is, whatever the pointers)
  int64_t n, c, s;

  NK_PLAN_HD int64_t span() const { return seg_count * s; }  // values of one (slot, c)
  // A period walk of one slot (only there may a slot not be whole periods): the positions
  // (< L / C) of its last, partial row of L, which ends the last chunk; else 0. A function, not
  // a field: the kernels that take the plan keep the code they had.
  NK_PLAN_HD int64_t period_tail() const {
    return period > 0 && !period_split ? span() % (period / c) : 0;
  }
  NK_PLAN_HD int64_t partials() const { return slots * c * chunks; }

  // Index of the partial of (slot, c, chunk) in the workspace. Column walks: chunk k of channel c
  // is column k % columns of the walk's chunk k / columns, what column_view files as channel
  // c * columns + k % columns of that chunk (k < chunk_cap, so 32 bits divide it: a 64-bit
  // division spilled finalize_local on sm_80).
  NK_PLAN_HD int64_t partial_index(int64_t slot, int64_t c_, int64_t chunk) const {
    if (rows_layout && columns > 1) {
      const uint32_t k = static_cast<uint32_t>(chunk), q = static_cast<uint32_t>(columns);
      return (int64_t{k / q} * c + c_) * columns + k % q;
    }
    return rows_layout ? (slot * c + c_) * chunks + chunk : (slot * chunks + chunk) * c + c_;
  }
};

// The finalize kernels' walk over a statistic's members j = first, first + step, ... of the pairs
// (m, chunk), j = m * chunks + chunk (m a channel of the statistic, or a slot): the pair of each
// member by additions, where j / chunks and j % chunks cost an int64 division each (one per
// partial merged). Divisions only at construction, in 32 bits where the operands fit (the chunks
// are capped far below 2^32, and first and step are lanes): an int64 division is a call of about
// a hundred dependent instructions, which small launches wait for.
struct MemberCursor {
  int64_t m, chunk;
  int64_t chunks, dm, dchunk;
  NK_PLAN_HD MemberCursor(int64_t first, int64_t chunks_, int64_t step) : chunks(chunks_) {
    if (first >= 0 && step >= 0 && (static_cast<uint64_t>(first) | static_cast<uint64_t>(step) |
                                    static_cast<uint64_t>(chunks_)) <= UINT32_MAX) {
      const uint32_t f = static_cast<uint32_t>(first), s = static_cast<uint32_t>(step),
                     q = static_cast<uint32_t>(chunks_);
      m = f / q, chunk = f % q, dm = s / q, dchunk = s % q;
    } else {
      m = first / chunks_, chunk = first % chunks_, dm = step / chunks_, dchunk = step % chunks_;
    }
  }
  NK_PLAN_HD void advance() {
    m += dm;
    chunk += dchunk;
    if (chunk >= chunks) {
      chunk -= chunks;
      ++m;
    }
  }
};

// How many of the members first, first + step, ... lie below `members`.
NK_PLAN_HD inline int64_t members_from(int64_t first, int64_t members, int64_t step) {
  return first < members ? (members - first + step - 1) / step : 0;
}

// The finalize of batch norm (a channel) and of group norm (a statistic (n, g), its C/G channels'
// partials): the threads that merge one unit's `partials`, a power of two from 32 to
// kBatchFinalizeBlock, the fewest that load at most `ahead` partials each, so that a unit waits on
// memory once where the block allows (batch norm with C = 64 in NHWC has 2048 partials a channel:
// 256 threads). Shape-only, so the merge tree, and every bit, is the same on every GPU.
constexpr int kBatchFinalizeBlock = 256;
NK_PLAN_HD inline int finalize_channel_lanes(int64_t partials, int ahead) {
  int lanes = 32;
  while (lanes < kBatchFinalizeBlock && partials > int64_t{lanes} * ahead) lanes *= 2;
  return lanes;
}

// Instance norm's finalize: a channel's samples side by side, w lanes a sample, the fewest (a power
// of two up to a warp) that load at most `ahead` of its chunks' partials each, so that a sample
// waits on memory once where a warp allows; `threads` a channel, a power of two from 32 to
// kBatchFinalizeBlock, enough for all N * w lanes where the block allows, else rounds of
// threads / w samples. Where a warp took a channel, instance norm N8 C128 128x128 NHWC (128
// chunks a sample) had 32 partials a lane, four waits; now 16 lanes a sample, 128 threads a
// channel: one. Shape-only, so the merge tree, and every bit, is the same on every GPU.
struct InstanceFinalizeShape {
  int sample_lanes;  // w: a power of two <= 32
  int threads;       // a power of two, 32 to kBatchFinalizeBlock, at least w
};
NK_PLAN_HD inline InstanceFinalizeShape finalize_instance_shape(int64_t samples, int64_t chunks,
                                                                int ahead) {
  int w = 1;
  while (w < 32 && chunks > int64_t{w} * ahead) w *= 2;
  int threads = 32;
  while (threads < kBatchFinalizeBlock && samples * w > threads) threads *= 2;
  return InstanceFinalizeShape{w, threads};
}

// Chunks per (slot, c) at most, for slots * c statistics' channels: kMaxChunks, or more where the
// partials stay within kFewPartials.
NK_PLAN_HD inline int64_t chunk_cap(int64_t slot_channels) {
  const int64_t few = kFewPartials / slot_channels;
  return few > kMaxChunks ? few : kMaxChunks;
}

// `vector_access`: every activation pointer is 16-byte aligned (the plan adds the size condition).
// slots, seg_count, chunks and chunk_len depend on the shape and elem_bytes only.
ChannelPlan plan_channel_norm(const ChannelShape& shape, int elem_bytes, bool vector_access);

// The statistics walk of a plan with columns > 1: the channels layout over N positions of C * S
// channels (host only; the plan's own fields say how to walk it).
ChannelPlan column_view(const ChannelPlan& plan);

// The plan the elementwise passes walk: `plan` itself, but where it has flat_packs and the
// coefficients are per channel (`per_sample` false: batch norm's, or frozen statistics'), the
// samples do not matter: the whole tensor is then walked as batch norm's one slot, in rows of the
// period L = lcm(C, pack) ending in a partial one (period_tail()) where L is at most a block of
// packs, else in single elements (a thread keeps its channel's coefficients in registers, which
// costs fewer instructions than loading each element's).
ChannelPlan elementwise_plan(const ChannelPlan& plan, int elem_bytes, bool per_sample);

// One read of x for the training forward of instance and group norm in the rows layout: each
// statistic's values, (n, c) or (n, g), are one contiguous row of L = count_per_stat() elements,
// so a block stages the row in shared memory, takes the exact two-pass statistics from it and
// writes y from it (channel_norm_resident.cuh), instead of the partials, finalize and apply
// launches that read x twice. The block stages the row's packs on the tensor's 16-byte pack
// boundaries (misaligned pointers load single elements, into the same packs); a row that is not
// whole packs (L * elem_bytes % 16 != 0) stages those that lie wholly in it, and the fewer than
// 2 * 16 / elem_bytes elements before and after them (the edges) are read and written by a thread
// each. Taken when
//  - kResidentMinBytes <= L * elem_bytes <= kResidentMaxRowBytes: shorter rows would leave too few
//    bytes in flight per block (32 blocks per SM at most). Up to kResidentMaxBytes the whole row
//    is staged: 96 KiB of shared memory is what every supported GPU (sm_80 and later, 99 KiB on
//    sm_86/89/120) grants one block, so the choice never depends on the device. Longer rows stage
//    their first kResidentMaxBytes (the head) and read the rest (the tail, at most as long as the
//    head) from memory in each of the three passes: once from DRAM, then, predicted, from L2,
//    which holds the tails of all resident blocks (at most 2 an SM x 96 KiB, about 25 MB on an
//    H200's 132 SMs, of its 50 MB L2).
// The forward takes it however few the rows: fewer rows than SMs leave SMs idle, but the split
// passes cost two launches more and a second read of x. On an H200, group norm N2 G32 (64 rows)
// went from 16-30 us to 7-17 us, rows of 5 to 160 KiB (bench/results/2026-12-04-gpu-h200-few-rows).
// The block size depends on L only, so the reduction tree, and every output bit, depends on the
// shape only, as the split path's does; which packs are staged changes no bit (each thread takes
// its packs in the same order from either place).
// The training backward (with dx) takes the same path with x and dy both staged
// (`staged_tensors` 2): rows up to half of kResidentMaxRowBytes with heads of half of
// kResidentMaxBytes each, the same block for the same L. With fewer than kResidentMinRows rows it
// takes only rows staged whole: there, rows with a tail ran slower than the split passes on the
// H200 (N2 G32 C320 64x64 bf16, 64 rows of 80 KiB: 17.6 -> 22.2 us), whole ones faster (20 KiB:
// 14.4 -> 10.4 us).
// Rows above those bounds (instance norm NCHW 256x256 in fp32, group norm NCHW C1280 G32 64x64)
// are split into `parts` of part_len consecutive elements, a block each, as the split tiles'
// (plan_instance_tiles, below): whole packs of the row (instance norm) or whole channels of S
// elements (group norm, so that a channel's gradient sums come from one block), the fewest powers
// of two up to kSplitMaxParts whose parts are at most kSplitPartMaxBytes over the staged tensors,
// doubled while rows * parts < kResidentMinRows to kSplitPortableParts at most, the last part
// keeping a unit (it may have fewer). Each part's exact two-pass statistics about the row's x0 (or
// its gradient sums) merge in rank order: one cluster a row, or two launches through the
// workspace, the same bits. Rows above 16 parts walk. Test-only knob NORMKIT_TEST_ROWS_WALK=1:
// never taken, so that the tests reach the walk's long rows at shapes a simulator runs.
constexpr int64_t kResidentMinRows = 128;
constexpr int64_t kResidentMinBytes = 4096;
constexpr int64_t kResidentMaxBytes = 96 * 1024;
constexpr int64_t kResidentMaxRowBytes = 2 * kResidentMaxBytes;
constexpr int kResidentMaxThreads = 512;
constexpr int kResidentMinThreads = 64;

struct ResidentPlan {
  bool use;
  int64_t rows;       // statistics, one block each (parts blocks where split)
  int64_t len;        // L, elements of a row
  int64_t head_len;   // elements of a part of each tensor staged (a multiple of the pack),
                      // <= part_len
  int threads;        // per block: a power of two, about 8 packs of a part each, in [64, 512]
  int parts;          // blocks a row: 1, or 2 to kSplitMaxParts
  int64_t part_len;   // elements of a part (the last may have fewer): L, or whole units of it
};
ResidentPlan plan_resident_rows(const ChannelShape& shape, int elem_bytes, int staged_tensors = 1);

// Instance norm's running update after the one-read kernels averages the N * C rows' statistics
// over n: one block up to kRunningOneBlockRows rows (128 KiB of them), a block per 32 channels
// above, where one block would read them all on one SM.
constexpr int64_t kRunningOneBlockRows = 16384;

// One read of x for the training forward of instance and group norm in the rows layout (and of x
// and dy for the training backward with dx or dz) where a statistic's row is at most a 16-byte pack
// (L = count_per_stat() <= E = 16 / elem_bytes: instance norm's S = 2 to 8 in 16-bit types, 2 to
// 4 in fp32; group norm's C/G * S likewise): a thread takes `rows_per_thread` = E / gcd(L, E)
// consecutive rows, which are L / gcd(L, E) whole packs of the tensor (lcm(L, E) elements, so every
// thread's first element is a multiple of the pack; two packs where L divides E, to spread the
// per-thread work), holds them in registers, takes each row's statistics there and writes y from
// there (channel_norm_short_rows.cuh; the backward's dx likewise,
// channel_norm_short_rows_backward.cuh): x read once in 16-byte loads where the pointers allow,
// instead of a lane per row of single loads, a finalize and an apply. The last thread may hold
// fewer rows (single elements). Each row's arithmetic depends on its L values only, so the bits
// depend neither on the pointers nor on the grid. Rows up to INT32_MAX (32-bit row arithmetic).
constexpr int kShortRowsBlock = 256;

struct ShortRowsPlan {
  bool use;
  int64_t rows;         // statistics
  int len;              // L, elements of a row (2 to E)
  int rows_per_thread;  // E / gcd(L, E), twice that where L divides E
  int64_t blocks;       // of kShortRowsBlock threads
};
ShortRowsPlan plan_short_rows(const ChannelShape& shape, int elem_bytes);

// One read of x for the training forward of instance and group norm in the rows layout (and of x
// and dy for the training backward with dx or dz) where a statistic's row is longer than a 16-byte
// pack (plan_short_rows takes up to a pack) and shorter than kResidentMinBytes, whole packs or not
// (S = 49, 196, 784 in 16-bit types; group norm's C/G * S likewise): too short for a block a row. A
// block of kRowGroupsBlock threads takes `rows_per_block` = 256 / G consecutive rows, a group of G
// lanes each, and stages them in shared memory: R * L elements from a multiple of the pack (R is a
// multiple of 8, so R * L is whole packs), copied in 16-byte packs where the pointers allow. The
// group reduces its row from there (lane l taking elements l, l + G, ...; shuffles across the
// group), and the block writes y back in 16-byte packs (channel_norm_row_groups.cuh; the backward
// likewise, channel_norm_row_groups_backward.cuh). G is the fewest lanes of 1, 2, 4, .. 32 that
// leave at most kRowGroupsMaxLaneBytes a lane (32 lanes for rows above 1 KiB, so a tensor's staged
// rows take at most 32 KiB) and whose shared loads meet at most 2-way bank conflicts
// (row_groups_bank_conflicts, counted once per L and element size and remembered: a plan is made
// at every call), else the least conflicted. A lane's elements are a chain of dependent adds in
// each pass, so a few elements a lane: in GPGPU-Sim's timing mode (RTX 3070 config) instance norm
// N32 C64 7x7 bf16 took 17104 cycles at 1 lane a row (128 bytes a lane), 10286 at 4 and 12119 at
// 32. A warp's loads of 32 / G rows L apart must not fall on the same banks (rows of 64 bf16
// elements at 1 lane each would all start on bank 0). The block stages its rows' (weight, bias)
// pairs with x, `coefs` = R * C/G of them (C/G = 1 for instance norm), so that no global load
// waits inside the walk; they are at most kRowGroupsMaxCoefs, so group norm with C/G > 256 (which
// here means S < 8) takes the split passes. A row's channels are walked by
// sub-groups of W = min(G, the largest power of two <= S) lanes, G / W channels at a time,
// `channel_steps` = ceil(S / W) elements a lane, so that its sums (backward) reduce over W lanes
// only. The reduction tree depends on L, S and the element size only. Rows up to INT32_MAX; rows
// of 4 KiB and more take plan_resident_rows.
constexpr int kRowGroupsBlock = 256;
constexpr int kRowGroupsMaxLaneBytes = 32;
constexpr int kRowGroupsMaxCoefs = 2048;  // 16 KiB of (weight, bias) pairs

// The most distinct 4-byte words one shared-memory bank serves in one warp-wide load of the row
// groups' walk (lane l of group r reading element r * L + l + k * G at step k; the first 8 steps),
// for rows of `len` elements of `elem_bytes` at `lanes` (G) lanes a row: 1 when conflict-free.
int row_groups_bank_conflicts(int64_t len, int elem_bytes, int lanes);

struct RowGroupsPlan {
  bool use;
  int64_t rows;         // statistics
  int len;              // L
  int lanes;            // G: a power of two <= 32
  int channel_lanes;    // W: a power of two <= G
  int channel_batches;  // ceil(channels of a row / (G / W))
  int channel_steps;    // ceil(S / W)
  int rows_per_block;   // R = kRowGroupsBlock / G
  int coefs;            // R * channels of a row: the (weight, bias) pairs a block stages
  int64_t blocks;       // ceil(rows / R)
};
RowGroupsPlan plan_row_groups(const ChannelShape& shape, int elem_bytes);

// One read of x for the group norm forward in NHWC (channel_norm_group_tile.cuh): a block per tile
// of k consecutive groups of one sample, the (S positions) x (k * C/G channels) elements that are
// k statistics, staged in shared memory position by position. Each position's run of the tile is
// whole 16-byte packs: k is the fewest groups whose k * C/G * elem_bytes is a multiple of 16 (1
// where C/G is a multiple of the pack; 4 for C/G = 10 in 16 bits), and a pack meets at most two
// groups. Thread t keeps pack t % P of every position it visits (P packs a position, the block a
// multiple of P and of 32), so its channels, and the groups its elements add to, are fixed: the
// block reduces each of the tile's groups from per-thread sums of its (at most) two groups in a
// fixed order. The bounds follow plan_resident_rows': a tile of 4 KiB at least, staged whole up
// to the shared memory left after the reduction scratch (kGroupTileScratchBytes), twice that at
// most (the rest, the tail, read from memory in each pass), however few the tiles. The training
// backward (with dx) takes the same tiles with x and dy both staged (`staged_tensors` 2,
// channel_norm_group_tile_backward.cuh): tiles up to kGroupTileMaxBytes with heads of half of it
// each, the same block for the same tile; fewer than kResidentMinRows tiles only when staged
// whole (as plan_resident_rows': N2 C320 32x32 bf16, 16 tiles of 80 KiB: 19.1 -> 23.1 us). Tiles
// above those bounds are split into parts as plan_instance_tiles' (below: the parts of
// ceil(S / parts) positions, each of at most kSplitPartMaxBytes over the staged tensors, a block
// each; the stable diffusion tiles of 64x64 positions, 320 KiB in 16-bit types, take 2 parts
// forward with 8 samples, and with 2 samples 8 at C320, 4 at C640, 2 at C1280), doubled for the
// blocks only while the last part keeps a position. Test-only knob NORMKIT_TEST_TILES_WALK=1:
// never taken, nor plan_instance_tiles' tiles, so that the tests reach the NHWC walk at shapes a
// simulator runs.
constexpr int64_t kGroupTileScratchBytes = 8 * 1024;
constexpr int64_t kGroupTileMaxBytes = kResidentMaxBytes - kGroupTileScratchBytes;
constexpr int64_t kGroupTileMaxPosPacks = 256;  // P at most (4 KiB of a position), for the scratch

struct GroupTilePlan {
  bool use;
  int64_t tiles;        // n * groups / groups_per_tile; blocks: tiles * parts
  int groups_per_tile;  // k
  int pos_packs;        // P: 16-byte packs of a position's run of the tile
  int64_t len;          // elements of a tile: S * k * C/G
  int64_t head_len;     // elements of a tile staged per tensor (its first packs, position by
                        // position)
  int threads;          // per block: a multiple of 32 and of P, about 8 packs each (instance
                        // tiles: over the staged tensors), <= 512
  int parts;            // blocks a tile (split tiles; else 1): a part each, a cluster
  int64_t part_positions;  // positions of a part (the last may have fewer): S, or ceil(S / parts)
};
GroupTilePlan plan_group_tiles(const ChannelShape& shape, int elem_bytes, int staged_tensors = 1);

// One read of x for the instance norm training forward in NHWC (channel_norm_instance_tile.cuh):
// the same tiles with each channel a group (k = E channels, one 16-byte pack a position, P = 1),
// where C is whole packs. Every element of a thread's pack is a statistic of its own, so the block
// reduces E sums a thread (dev::block_sum) where group norm's reduces two. The bounds are
// plan_group_tiles' (a tile of S * 16 bytes: forward 4 KiB to twice kGroupTileMaxBytes; the
// training backward, x and dy staged (`staged_tensors` 2, channel_norm_instance_tile_backward.cuh),
// to kGroupTileMaxBytes with heads of half of it each, fewer than kResidentMinRows tiles only when
// staged whole). The threads take about 8 packs each over the staged tensors, so the backward's
// block has twice the forward's threads (to 512): in GPGPU-Sim's timing mode (RTX 3070 config),
// IN N2 C64 32x32 NHWC bf16's backward took 24398 cycles with the forward's 128 threads, 22074
// with 256. (Group norm's tiles keep the forward's block: twice the threads took its N2 C320 16x16
// backward from 24654 to 28606 cycles, its reductions growing with the block.)
//
// A tile beyond that bound is split (channel_norm_split_tile.cuh, and the training backward's
// channel_norm_split_tile_backward.cuh): `parts` blocks a tile, each taking part_positions =
// ceil(S / parts) consecutive positions, parts the fewest powers of two whose parts are at most
// kSplitPartMaxBytes (over the staged tensors), at most kSplitMaxParts, then doubled while the
// blocks are fewer than kResidentMinRows, to kSplitPortableParts at most; every part keeps a
// position (the last may have fewer). Each block takes its part's exact two-pass statistics,
// and the parts' merge in rank order (Chan's formula) gives the tile's. On GPUs with thread block
// clusters the parts are one cluster that exchanges them in distributed shared memory (x read
// once); elsewhere two launches exchange them through the workspace (x read twice), with the same
// bits. The parts depend on the shape only; the staged head (head_len: what every GPU grants,
// kGroupTileMaxBytes) may grow on the device to what it grants (the rest is reread, the same bits).
// 16 parts are a non-portable cluster (sm_90 holds 16 blocks a cluster where the kernel allows it,
// cudaFuncAttributeNonPortableClusterSizeAllowed): taken only where a tile needs them (above 8
// times kSplitPartMaxBytes, 1.75 MiB of x, or of x and dy: BN N256 C128 28x28 NHWC's forward,
// N32 C64 56x56's backward); a device that cannot hold such a cluster runs the two launches.
constexpr int kSplitMaxParts = 16;
constexpr int kSplitPortableParts = 8;  // a portable cluster
// What an sm_90 block stages whole (its 227 KiB opt-in limit less the scratch).
constexpr int64_t kSplitPartMaxBytes = 227 * 1024 - kGroupTileScratchBytes;
GroupTilePlan plan_instance_tiles(const ChannelShape& shape, int elem_bytes,
                                  int staged_tensors = 1);

// One read of x for batch norm's training forward in NCHW with S > 1 (channel_norm_batch_tile.cuh):
// channel c's values are N runs of S contiguous elements, C * S apart, so a block per channel
// stages them all in shared memory, takes the channel's exact two-pass statistics from there,
// blends them into the running buffers and writes y from there, in place of the statistics walk,
// finalize and apply launches that read x twice. Each run is staged as the seg_packs = Q 16-byte
// packs of the tensor that cover it wherever it starts (Q = S / E where E | S, so every run starts
// on a pack; else (S + 2E - 2) / E, E = 16 / elem_bytes), its elements past either end masked out.
// Taken when the tile, N * Q * 16 bytes, is at most twice kResidentMaxBytes: its first
// kResidentMaxBytes (what every supported GPU grants a block, as plan_resident_rows': the choice
// never depends on the device) are staged, the rest (the tail) is read from memory in each pass,
// predicted from L2, which the first pass just filled. With fewer than kResidentMinRows channels
// only tiles of at most half of kResidentMaxBytes, staged whole: fewer blocks than SMs each
// staging a large tile would serialize what the walk spreads over the whole GPU. The training
// backward (channel_norm_batch_tile_backward.cuh) stages x and dy (`staged_tensors` 2): half
// those bounds for each, and threads of about 8 packs over both tensors, twice the forward's (to
// 512), as the instance tiles' (timing mode: BN N16 C64 14x14 NCHW bf16's backward 22382 cycles
// with the forward's 64 threads, 16787 with 128). The block depends on the shape only, and a
// pack's values are the same from either place, so every output bit does.
// A tile above those bounds is split by samples (channel_norm_batch_tile.cuh's SplitStep, and the
// training backward's, channel_norm_batch_tile_backward.cuh): `parts` blocks a channel, each taking
// part_runs = ceil(N / parts) consecutive runs (the last may have fewer, at least one), parts the
// fewest powers of two up to kSplitMaxParts whose parts are at most kSplitPartMaxBytes over the
// staged tensors, then doubled while C * parts < kResidentMinRows, to kSplitPortableParts at most,
// as plan_instance_tiles' parts: each block's exact statistics of its runs merge in rank order (one
// cluster a channel, or two launches through the workspace, the same bits); head_packs is then a
// part's (and may grow on the device, batch_split_head_packs). Test-only knob
// NORMKIT_TEST_BATCH_WALK=1: never taken, so that the tests reach batch norm's NCHW walk at small
// shapes.
struct BatchTilePlan {
  bool use;
  int seg_packs;        // Q: packs staged per sample
  int64_t packs;        // N * Q: packs of a channel's tile
  int64_t head_packs;   // a block's first packs staged (of each staged tensor): all of its tile
                        // or part, or kResidentMaxBytes / staged_tensors of them
  int threads;          // per block: about 8 packs each (over the staged tensors) in whole
                        // warps, in [64, 512]
  uint32_t slot_magic;  // batch_tile_run's multiplier for Q
  int parts;            // blocks a channel (1: a block the tile)
  int part_runs;        // runs (samples) a part: N, or ceil(N / parts)
};
BatchTilePlan plan_batch_tiles(const ChannelShape& shape, int elem_bytes, int staged_tensors = 1);

// The run (sample) of slot q of a batch tile or part (slots counted from the block's first run),
// q / Q, as one multiply-high: magic = ceil(2^31 / Q) and (2 q magic) >> 32. Exact for q, Q <=
// kBatchTileMaxPacks (< 2^14): 2 magic exceeds 2^32 / Q by less than 2, so the quotient exceeds
// q / Q by less than q / 2^31 < 2^-17, less than the 1 / Q (more than 2^-14) that its fraction
// lacks of the next integer. A block's slots: a whole tile's (twice kResidentMaxBytes at most) or
// a part's (kSplitPartMaxBytes at most).
constexpr int64_t kBatchTileMaxPacks = kSplitPartMaxBytes / 16;
static_assert(kBatchTileMaxPacks >= 2 * kResidentMaxBytes / 16 && kBatchTileMaxPacks < 16384,
              "batch_tile_run's bound");
NK_PLAN_HD inline int batch_tile_run(int q, uint32_t magic) {
  return static_cast<int>((static_cast<uint64_t>(q) * 2 * magic) >> 32);
}

// The shape plan_instance_tiles is asked about for `shape`: batch norm in the channels layout
// (NHWC, or NCHW with S = 1: the same memory) as instance norm of one sample of N * S positions,
// whose statistic per channel is batch norm's, over the same values at the same addresses (and
// whose running update, a mean over one sample, is batch norm's: unbiased with N * S - 1); any
// other shape as it is.
ChannelShape instance_tile_shape(const ChannelShape& shape);

}  // namespace nk::cuda
