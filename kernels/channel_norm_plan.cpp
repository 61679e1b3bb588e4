#include "channel_norm_plan.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace nk::cuda {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t min3(int64_t a, int64_t b, int64_t c) { return a < b ? (a < c ? a : c) : (b < c ? b : c); }
int64_t gcd(int64_t a, int64_t b) { return b == 0 ? a : gcd(b, a % b); }

// Whether the test-only knob `name` (NORMKIT_TEST_*_WALK) is set to 1: a one-read path declines,
// so that tests reach the walk at shapes a simulator runs. Read at each call.
bool walk_knob(const char* name) {
  const char* knob = std::getenv(name);
  return knob != nullptr && std::strcmp(knob, "1") == 0;
}

// Whether `parts` parts of ceil(s / parts) positions each leave the last at least one (49
// positions are 8 parts of 7 with the last empty; 225 are 16 of 15 likewise).
bool last_part_keeps_positions(int64_t s, int64_t parts) {
  return (parts - 1) * ceil_div(s, parts) < s;
}

// The channels walk's lanes for `packs` channel packs: tiles of at most 32 lanes, as many tiles
// as 32-lane ones would take, the packs shared out evenly (C = 320 in 16 bits: 40 packs, two
// tiles of 20 lanes and 12 rows; tiles of 32 left 24 of the second's lanes, 192 of its 256
// threads, idle). Within one tile: a lane a pack.
int64_t tile_lanes(int64_t packs) { return ceil_div(packs, ceil_div(packs, 32)); }

// The block of the instance and batch tiles for `packs` packs over the staged tensors: about 8
// packs a thread, in whole warps, within [kResidentMinThreads, kResidentMaxThreads].
int tile_block(int64_t packs) {
  const int64_t want = ceil_div(ceil_div(packs, 8), 32) * 32;
  return static_cast<int>(want < kResidentMinThreads   ? kResidentMinThreads
                          : want > kResidentMaxThreads ? kResidentMaxThreads
                                                       : want);
}

// Instance or group norm with each statistic one contiguous row (NCHW, or NHWC with C == 1, and
// S > 1), not empty: the layout of the three one-read row paths.
bool one_read_rows_layout(const ChannelShape& shape) {
  const bool rows_layout = shape.s > 1 && (shape.layout == NK_NCHW || shape.c == 1);
  return shape.kind != ChannelNorm::kBatch && rows_layout && shape.numel() != 0;
}

// The plan of plan_channel_norm for `shape`, whose channels are `columns` columns of each channel
// of the caller's (1 but for column_view's): chunks are capped by the caller's channels.
ChannelPlan plan_walk(const ChannelShape& shape, int elem_bytes, bool vector_access,
                      int64_t columns);

}  // namespace

ChannelPlan plan_channel_norm(const ChannelShape& shape, int elem_bytes, bool vector_access) {
  ChannelPlan p = plan_walk(shape, elem_bytes, vector_access, 1);
  // Batch norm's short rows that are shorter than a pack (short_rows: not half a pack, and a
  // non-empty tensor): the elementwise passes keep the rows plan; the statistics take each
  // sample's C * S elements as the channels of the channels layout, with S times fewer chunks at
  // most, so the partials stay within batch norm's bound by C.
  const bool columns = shape.kind == ChannelNorm::kBatch && p.short_rows &&
                       shape.s < 16 / elem_bytes &&
                       shape.c * shape.s <= INT32_MAX;  // the kernels' column index
  if (!columns) return p;
  ChannelShape wide = shape;
  wide.c = shape.c * shape.s;
  wide.s = 1;
  wide.layout = NK_NHWC;
  const ChannelPlan v = plan_walk(wide, elem_bytes, vector_access, shape.s);
  p.columns = static_cast<int>(shape.s);
  p.short_rows = false;
  p.warp_per_chunk = false;
  p.row_load_elems = v.pack_elems;
  p.lanes = v.lanes;
  p.period = v.period;
  p.period_split = v.period_split;
  p.chunk_len = v.chunk_len;
  p.walk_chunks = v.walk_chunks;
  p.chunks = v.chunks * shape.s;
  return p;
}

ChannelPlan column_view(const ChannelPlan& plan) {
  ChannelPlan v = plan;
  v.rows_layout = false;
  v.c = plan.c * plan.columns;
  v.s = 1;
  v.chunks = plan.chunks / plan.columns;
  v.pack_elems = plan.row_load_elems;
  v.packs_cross_rows = false;
  v.flat_packs = false;
  return v;
}

namespace {

ChannelPlan plan_walk(const ChannelShape& shape, int elem_bytes, bool vector_access,
                      int64_t columns) {
  ChannelPlan p{};
  p.columns = 1;
  p.n = shape.n;
  p.c = shape.c;
  p.s = shape.s;
  const bool batch = shape.kind == ChannelNorm::kBatch;
  p.slots = batch ? 1 : shape.n;
  p.seg_count = batch ? shape.n : 1;
  p.rows_layout = shape.s > 1 && (shape.layout == NK_NCHW || shape.c == 1);
  p.lanes = 32;
  const int e = 16 / elem_bytes;
  // 16-byte packs never straddle a row (rows layout) or run past the channels (channels layout).
  p.pack_elems = vector_access && (p.rows_layout ? shape.s % e == 0 : shape.c % e == 0) ? e : 1;
  // Rows that are a multiple of half a pack still take 8-byte (or 4-byte) loads in the statistics
  // pass, where a load per element would cost more instructions than the bytes allow.
  p.row_load_elems = p.pack_elems;
  if (p.rows_layout && vector_access && p.pack_elems == 1 && shape.s % (e / 2) == 0) {
    p.row_load_elems = e / 2;
  }
  // Short rows that neither fit 16-byte nor half packs: a lane walks each row alone (its ends
  // element by element), which costs no bookkeeping per element. Shape-only: the pointers decide
  // the loads, not the chunks.
  p.short_rows = p.rows_layout && shape.s % (e / 2) != 0 && shape.s <= kShortRow;
  if (p.short_rows) p.row_load_elems = vector_access ? e : 1;
  // Longer such rows keep the chunks below; with aligned pointers their partials load 16-byte
  // packs between each row's ends.
  p.unaligned_rows =
      p.rows_layout && vector_access && shape.s % (e / 2) != 0 && shape.s > kShortRow;
  if (p.unaligned_rows) p.row_load_elems = e;
  // The elementwise passes need no pack to stay in a row: each element of one that spans two (or,
  // S < e, several) takes its own row's coefficients; the tensor's last numel % e elements are
  // one thread's, element by element. Rows of exactly half a pack keep their half packs, which
  // need no per-element row.
  p.packs_cross_rows = p.rows_layout && vector_access && shape.s % e != 0 && shape.s != e / 2;
  const int64_t span = p.span();
  if (shape.numel() == 0) {  // an empty batch: nothing to reduce, one empty chunk per (slot, c)
    p.short_rows = false;
    p.unaligned_rows = false;
    p.packs_cross_rows = false;
    p.row_load_elems = p.pack_elems;
    p.chunks = 1;
    p.walk_chunks = 1;
    p.chunk_len = 1;
    p.warp_per_chunk = true;
    return p;
  }
  // slots * c >= 1 here; column walks keep the partials within those of their caller's channels.
  const int64_t cap = chunk_cap(p.slots * shape.c / columns) / columns;
  if (p.short_rows) {
    // Chunks of whole rows (a lane never splits one), as many as the rule below would cut.
    const int64_t wanted = ceil_div(kWantedItems, p.slots * shape.c);
    int64_t chunks = min3(wanted, ceil_div(span, kMinRowChunk), cap);
    if (chunks < 1) chunks = 1;
    const int64_t chunk_rows = ceil_div(p.seg_count, chunks);
    p.chunk_len = chunk_rows * shape.s;
    p.chunks = ceil_div(p.seg_count, chunk_rows);
    p.warp_per_chunk = p.seg_count > 1;  // batch norm: a warp per chunk; else a lane
  } else if (p.rows_layout) {
    const int64_t wanted = ceil_div(kWantedItems, p.slots * shape.c);
    p.chunks = min3(wanted, ceil_div(span, kMinRowChunk), cap);
    if (p.chunks < 1) p.chunks = 1;
    // Chunk boundaries on multiples of 8 elements: of every pack size, so packs never straddle.
    p.chunk_len = ceil_div(ceil_div(span, p.chunks), 8) * 8;
    p.chunks = ceil_div(span, p.chunk_len);  // no empty trailing chunk
    const bool many = p.chunk_len <= kWarpChunkMany && p.partials() >= kWarpItems;
    // Unaligned rows always take partials_unaligned_rows, a block per chunk.
    p.warp_per_chunk = (p.chunk_len <= kWarpChunk || many) && !p.unaligned_rows;
  } else {
    p.warp_per_chunk = false;
    const int64_t packs = ceil_div(shape.c, p.pack_elems);
    p.lanes = static_cast<int>(tile_lanes(packs));  // the packs evenly over the tiles
    // Tiles and rows counted in 16-byte packs, whatever the pointers allow, so the chunks stay
    // the same.
    const int64_t packs16 = ceil_div(shape.c, e);
    // C % e != 0: chunks of whole periods (L / C positions) where the span is (shape only), so
    // that aligned pointers can take 16-byte packs whose channels repeat from period to period;
    // one slot starts at element 0 whatever it holds, so there (a period of at most a block) the
    // last chunk may end in a partial period, which a small launch adds after the walk.
    // A period of at most a block of packs is walked by one block, which merges each channel's
    // L / C states; a wider one (split) is walked like L channels, in tiles of 32 lanes, and
    // leaves a partial per occurrence of a channel in the period (what the finalize merges as
    // L / C chunks), whatever the pointers: misaligned ones load single elements of the same
    // rows, so the bits do not depend on them.
    const int64_t period = shape.c / gcd(shape.c, e) * e;
    const int64_t per = period / shape.c;  // positions per period
    const bool whole = shape.c % e != 0 && span % per == 0;
    const bool one_slot_tail =
        shape.c % e != 0 && span % per != 0 && p.slots == 1 && period / e <= kPartialBlock;
    const bool periodic = (whole && period / e <= kPartialBlock) || one_slot_tail;
    const bool split = whole && !periodic && period <= kMaxSplitPeriod;
    // A chunk gives each row of the block's threads at least kMinChannelSteps positions (periods)
    // to walk, a whole tile of loads in flight before the block's merge. The rows are those of
    // 16-byte packs whatever the pointers, so the chunks stay shape-only.
    const int64_t width_packs = split ? period / e : packs16;  // 16-byte packs of a walked row
    const int64_t pack_lanes = periodic ? period / e : split ? 32 : tile_lanes(width_packs);
    const int64_t min_chunk =
        kPartialBlock / pack_lanes * kMinChannelSteps * (periodic || split ? per : 1);
    const int64_t wanted = ceil_div(kWantedItems, p.slots * ceil_div(width_packs, 32));
    p.chunks = min3(wanted, ceil_div(span, min_chunk), split ? cap / per : cap);
    if (p.chunks < 1) p.chunks = 1;
    p.chunk_len = ceil_div(span, p.chunks);
    if (periodic || split) p.chunk_len = ceil_div(p.chunk_len, per) * per;
    p.chunks = ceil_div(span, p.chunk_len);
    if (periodic && vector_access) {
      p.period = period;
      p.pack_elems = e;
      p.row_load_elems = e;
      p.lanes = static_cast<int>(period / e);  // the whole period in one block
    }
    // No period walk: the elementwise passes still take packs of the flat tensor.
    p.flat_packs = vector_access && shape.c % e != 0 && !periodic && !split;
    if (split) {
      p.period = period;
      p.period_split = true;
      p.pack_elems = vector_access ? e : 1;
      p.row_load_elems = p.pack_elems;
      p.lanes = 32;
      p.walk_chunks = p.chunks;
      p.chunks *= per;  // partials per (slot, c): one per chunk and occurrence
    }
  }
  if (!p.period_split) p.walk_chunks = p.chunks;
  return p;
}

}  // namespace

ChannelPlan elementwise_plan(const ChannelPlan& plan, int elem_bytes, bool per_sample) {
  if (!plan.flat_packs || per_sample) return plan;
  ChannelPlan p = plan;
  p.flat_packs = false;
  const int64_t e = 16 / elem_bytes, period = plan.c / gcd(plan.c, e) * e;
  if (period / e > kPartialBlock) return p;
  p.slots = 1;
  p.seg_count = plan.n;
  p.period = period;
  p.period_split = false;
  p.pack_elems = static_cast<int>(e);
  p.row_load_elems = static_cast<int>(e);
  p.lanes = static_cast<int>(period / e);
  return p;
}

ResidentPlan plan_resident_rows(const ChannelShape& shape, int elem_bytes, int staged_tensors) {
  ResidentPlan r{};
  if (!one_read_rows_layout(shape)) return r;
  if (walk_knob("NORMKIT_TEST_ROWS_WALK")) return r;
  r.rows = shape.num_stats();
  r.len = shape.count_per_stat();
  const int64_t bytes = r.len * elem_bytes;
  const int64_t staged_limit = kResidentMaxBytes / staged_tensors;  // bytes a tensor's row stages
  const int64_t row_limit = kResidentMaxRowBytes / staged_tensors;
  const bool few_rows = staged_tensors > 1 && r.rows < kResidentMinRows;  // see the header
  if (bytes < kResidentMinBytes || r.rows > INT32_MAX) return r;
  int64_t parts = 1, part_len = r.len;
  if (bytes > (few_rows ? staged_limit : row_limit)) {  // split (see the header)
    // Units a part takes whole: a pack (instance norm) or a channel's S elements (group norm).
    const int64_t channels = shape.kind == ChannelNorm::kGroup ? shape.c / shape.groups : 1;
    const int64_t unit = channels > 1 ? shape.s : 16 / elem_bytes, units = ceil_div(r.len, unit);
    const int64_t part_limit = kSplitPartMaxBytes / staged_tensors;
    parts = 2;
    while (parts <= kSplitMaxParts && ceil_div(units, parts) * unit * elem_bytes > part_limit) {
      parts *= 2;
    }
    while (parts < kSplitPortableParts && r.rows * parts < kResidentMinRows &&
           last_part_keeps_positions(units, 2 * parts)) {
      parts *= 2;
    }
    part_len = ceil_div(units, parts) * unit;
    if (parts > kSplitMaxParts || !last_part_keeps_positions(units, parts) ||
        part_len * elem_bytes > part_limit || r.rows * parts > INT32_MAX) {
      return r;
    }
  }
  r.use = true;
  r.parts = static_cast<int>(parts);
  r.part_len = part_len;
  const int64_t part_bytes = part_len * elem_bytes, packs = part_bytes / 16;
  int threads = kResidentMinThreads;
  while (threads < kResidentMaxThreads && threads * 8 < packs) threads *= 2;
  r.threads = threads;
  r.head_len = part_bytes <= staged_limit ? part_len : staged_limit / elem_bytes;
  return r;
}

ShortRowsPlan plan_short_rows(const ChannelShape& shape, int elem_bytes) {
  ShortRowsPlan r{};
  if (!one_read_rows_layout(shape)) return r;
  const int64_t e = 16 / elem_bytes, len = shape.count_per_stat();
  r.rows = shape.num_stats();
  r.use = len <= e && r.rows <= INT32_MAX;
  if (!r.use) return r;
  r.len = static_cast<int>(len);
  const int64_t g = gcd(e, len);
  r.rows_per_thread = static_cast<int>((len == g ? 2 : 1) * e / g);  // two packs where L | E
  const int64_t threads = (r.rows + r.rows_per_thread - 1) / r.rows_per_thread;
  r.blocks = (threads + kShortRowsBlock - 1) / kShortRowsBlock;
  return r;
}

int row_groups_bank_conflicts(int64_t len, int elem_bytes, int lanes) {
  int worst = 1;
  for (int64_t step = 0; step < 8; ++step) {
    int64_t words[32];
    int per_bank[32] = {};
    for (int lane = 0; lane < 32; ++lane) {
      const int64_t element = lane / lanes * len + lane % lanes + step * lanes;
      words[lane] = element * elem_bytes / 4;
      bool seen = false;  // lanes reading the same word share it
      for (int other = 0; other < lane && !seen; ++other) seen = words[other] == words[lane];
      if (!seen) ++per_bank[words[lane] % 32];
    }
    for (int bank = 0; bank < 32; ++bank) worst = per_bank[bank] > worst ? per_bank[bank] : worst;
  }
  return worst;
}

namespace {

// The fewest lanes that leave at most kRowGroupsMaxLaneBytes a lane (32 where none of them does)
// and meet at most 2-way bank conflicts; else the least conflicted.
int count_row_group_lanes(int64_t len, int elem_bytes) {
  const int64_t max_per_lane = kRowGroupsMaxLaneBytes / elem_bytes;
  int lanes = 0, least = 0;
  for (int g = 1; g <= 32; g *= 2) {
    if (g * max_per_lane < len && g < 32) continue;
    const int degree = row_groups_bank_conflicts(len, elem_bytes, g);
    if (lanes == 0 || degree < least) {
      lanes = g;
      least = degree;
    }
    if (degree <= 2) break;
  }
  return lanes;
}

// count_row_group_lanes, remembered: its bank counts take microseconds of a host core, and a
// plan is made at every call (and workspace query). Rows of 16-bit and 32-bit elements below
// kResidentMinBytes; a slot holds 0 until its count is stored (threads that race store the same
// value).
int row_group_lanes(int64_t len, int elem_bytes) {
  constexpr int64_t kSlots = kResidentMinBytes / 2;
  static std::atomic<signed char> memo[2][kSlots];  // [elem_bytes == 4][len]
  if ((elem_bytes != 2 && elem_bytes != 4) || len >= kSlots) {
    return count_row_group_lanes(len, elem_bytes);
  }
  std::atomic<signed char>& slot = memo[elem_bytes == 4][len];
  int lanes = slot.load(std::memory_order_relaxed);
  if (lanes == 0) {
    lanes = count_row_group_lanes(len, elem_bytes);
    slot.store(static_cast<signed char>(lanes), std::memory_order_relaxed);
  }
  return lanes;
}

}  // namespace

RowGroupsPlan plan_row_groups(const ChannelShape& shape, int elem_bytes) {
  RowGroupsPlan r{};
  if (!one_read_rows_layout(shape)) return r;
  const int64_t e = 16 / elem_bytes, len = shape.count_per_stat();
  r.rows = shape.num_stats();
  r.use = len > e && len * elem_bytes < kResidentMinBytes && r.rows <= INT32_MAX;
  if (!r.use) return r;
  r.len = static_cast<int>(len);
  const int64_t s = shape.kind == ChannelNorm::kInstance ? len : shape.s;
  const int64_t channels = len / s;
  const int lanes = row_group_lanes(len, elem_bytes);
  const int rows_per_block = kRowGroupsBlock / lanes;
  // The block's coefficient pairs: at most 8192 / (elem_bytes * S) below 32 lanes (32 bytes a
  // lane), so only rows above 1 KiB with more than 256 channels can exceed the bound.
  r.use = rows_per_block * channels <= kRowGroupsMaxCoefs;
  if (!r.use) return r;
  int w = 1;
  while (w * 2 <= lanes && w * 2 <= s) w *= 2;
  r.lanes = lanes;
  r.channel_lanes = w;
  r.channel_batches = static_cast<int>((channels + lanes / w - 1) / (lanes / w));
  r.channel_steps = static_cast<int>((s + w - 1) / w);
  r.rows_per_block = rows_per_block;
  r.coefs = static_cast<int>(rows_per_block * channels);
  r.blocks = (r.rows + r.rows_per_block - 1) / r.rows_per_block;
  return r;
}

GroupTilePlan plan_group_tiles(const ChannelShape& shape, int elem_bytes, int staged_tensors) {
  GroupTilePlan t{};
  const bool channels_layout = shape.layout == NK_NHWC && shape.c > 1;
  if (shape.kind != ChannelNorm::kGroup || !channels_layout || shape.numel() == 0) return t;
  if (walk_knob("NORMKIT_TEST_TILES_WALK")) return t;
  const int64_t cpg = shape.c / shape.groups, e = 16 / elem_bytes;
  const int64_t k = 16 / gcd(16, cpg * elem_bytes);
  const int64_t pos_packs = k * cpg * elem_bytes / 16;
  if (shape.groups % k != 0 || pos_packs > kGroupTileMaxPosPacks) return t;
  // A pack meets at most two groups: the kernel keeps two sums a thread.
  for (int64_t j = 0; j < pos_packs; ++j) {
    if ((j * e + e - 1) / cpg - j * e / cpg > 1) return t;
  }
  const int64_t step = 32 / gcd(32, pos_packs) * pos_packs;  // lcm(32, P)
  const int64_t len = shape.s * k * cpg, bytes = len * elem_bytes;
  const int64_t tiles = shape.n * (shape.groups / k);
  const int64_t staged_limit = kGroupTileMaxBytes / staged_tensors;  // bytes a tensor stages
  const bool few_tiles = staged_tensors > 1 && tiles < kResidentMinRows;  // see the header
  const int64_t position_bytes = pos_packs * 16;
  int64_t part_limit = few_tiles ? staged_limit : 2 * staged_limit, parts = 1;
  if (bytes > part_limit) {  // split (see the header)
    part_limit = kSplitPartMaxBytes / staged_tensors;
    parts = 2;
    while (parts <= kSplitMaxParts && ceil_div(shape.s, parts) * position_bytes > part_limit) {
      parts *= 2;
    }
    // Doubled only while every part keeps a position (a tile of 49 positions of 4 KiB is 2 parts
    // of 25 or 4 of 13, not 8 of 7 with the last empty).
    while (parts < kSplitPortableParts && tiles * parts < kResidentMinRows &&
           last_part_keeps_positions(shape.s, 2 * parts)) {
      parts *= 2;
    }
  }
  const int64_t positions = ceil_div(shape.s, parts), part_bytes = positions * position_bytes;
  t.use = step <= kResidentMaxThreads && bytes >= kResidentMinBytes && parts <= kSplitMaxParts &&
          last_part_keeps_positions(shape.s, parts) && part_bytes <= part_limit &&
          tiles * parts <= INT32_MAX;
  if (!t.use) return t;
  t.tiles = tiles;
  t.groups_per_tile = static_cast<int>(k);
  t.pos_packs = static_cast<int>(pos_packs);
  t.len = len;
  t.head_len = part_bytes <= staged_limit ? positions * k * cpg : staged_limit / elem_bytes;
  // About 8 packs a thread of its part, as the rows' blocks, in whole multiples of lcm(32, P).
  int64_t want = ceil_div(part_bytes / 16, 8);
  want = want < kResidentMinThreads ? kResidentMinThreads : want;
  int64_t threads = ceil_div(want, step) * step;
  while (threads > kResidentMaxThreads) threads -= step;
  t.threads = static_cast<int>(threads);
  t.parts = static_cast<int>(parts);
  t.part_positions = positions;
  return t;
}

GroupTilePlan plan_instance_tiles(const ChannelShape& shape, int elem_bytes, int staged_tensors) {
  GroupTilePlan t{};
  const int64_t e = 16 / elem_bytes;
  const bool channels_layout = shape.layout == NK_NHWC && shape.c > 1;
  if (shape.kind != ChannelNorm::kInstance || !channels_layout || shape.c % e != 0 ||
      shape.numel() == 0) {
    return t;
  }
  if (walk_knob("NORMKIT_TEST_TILES_WALK")) return t;
  const int64_t bytes = shape.s * 16, tiles = shape.n * (shape.c / e);
  const int64_t staged_limit = kGroupTileMaxBytes / staged_tensors;  // bytes a tensor stages
  const bool few_tiles = staged_tensors > 1 && tiles < kResidentMinRows;  // as plan_group_tiles
  int64_t part_limit = few_tiles ? staged_limit : 2 * staged_limit, parts = 1;
  if (bytes > part_limit) {  // split (see the header)
    part_limit = kSplitPartMaxBytes / staged_tensors;
    parts = 2;
    while (parts <= kSplitMaxParts && ceil_div(shape.s, parts) * 16 > part_limit) parts *= 2;
    while (parts < kSplitPortableParts && tiles * parts < kResidentMinRows) parts *= 2;
  }
  const int64_t positions = ceil_div(shape.s, parts), part_bytes = positions * 16;
  t.use = bytes >= kResidentMinBytes && parts <= kSplitMaxParts &&
          last_part_keeps_positions(shape.s, parts) && part_bytes <= part_limit &&
          tiles * parts <= INT32_MAX;
  if (!t.use) return t;
  t.tiles = tiles;
  t.groups_per_tile = static_cast<int>(e);
  t.pos_packs = 1;
  t.len = shape.s * e;
  t.head_len = part_bytes <= staged_limit ? positions * e : staged_limit / elem_bytes;
  t.threads = tile_block(positions * staged_tensors);  // a pack a position (see the header)
  t.parts = static_cast<int>(parts);
  t.part_positions = positions;
  return t;
}

BatchTilePlan plan_batch_tiles(const ChannelShape& shape, int elem_bytes, int staged_tensors) {
  BatchTilePlan t{};
  if (shape.kind != ChannelNorm::kBatch || shape.layout != NK_NCHW || shape.s <= 1 ||
      shape.numel() == 0 || shape.c > INT32_MAX) {
    return t;
  }
  if (walk_knob("NORMKIT_TEST_BATCH_WALK")) return t;
  const int64_t e = 16 / elem_bytes;
  const int64_t seg_packs = shape.s % e == 0 ? shape.s / e : (shape.s + 2 * e - 2) / e;
  const int64_t packs = shape.n * seg_packs, bytes = packs * 16;
  const bool few = shape.c < kResidentMinRows;
  const int64_t staged_limit = (few ? kResidentMaxBytes / 2 : kResidentMaxBytes) / staged_tensors;
  int64_t parts = 1, runs = shape.n;
  if (bytes > (few ? staged_limit : 2 * staged_limit)) {  // split by samples (see the header)
    const int64_t part_limit = kSplitPartMaxBytes / staged_tensors;
    parts = 2;
    while (parts <= kSplitMaxParts && ceil_div(shape.n, parts) * seg_packs * 16 > part_limit) {
      parts *= 2;
    }
    while (parts < kSplitPortableParts && shape.c * parts < kResidentMinRows &&
           last_part_keeps_positions(shape.n, 2 * parts)) {
      parts *= 2;
    }
    runs = ceil_div(shape.n, parts);
    t.use = parts <= kSplitMaxParts && last_part_keeps_positions(shape.n, parts) &&
            runs * seg_packs * 16 <= part_limit && shape.c * parts <= INT32_MAX;
  } else {
    t.use = true;
  }
  if (!t.use) return t;
  const int64_t part_packs = runs * seg_packs, part_bytes = part_packs * 16;
  t.seg_packs = static_cast<int>(seg_packs);
  t.packs = packs;
  t.parts = static_cast<int>(parts);
  t.part_runs = static_cast<int>(runs);
  t.head_packs = part_bytes <= staged_limit ? part_packs : staged_limit / 16;
  t.slot_magic = static_cast<uint32_t>(((int64_t{1} << 31) + seg_packs - 1) / seg_packs);
  t.threads = tile_block(part_packs * staged_tensors);  // see the header
  return t;
}

ChannelShape instance_tile_shape(const ChannelShape& shape) {
  const bool channels_layout = shape.layout == NK_NHWC || shape.s == 1;
  if (shape.kind != ChannelNorm::kBatch || !channels_layout) return shape;
  return ChannelShape{ChannelNorm::kInstance, 1, shape.c, shape.n * shape.s, NK_NHWC, shape.dtype,
                      1};
}

}  // namespace nk::cuda
