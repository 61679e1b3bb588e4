// Shapes on which instance and group norm training read x once (kernels/channel_norm_plan.hpp,
// plan_resident_rows), for the GPU tests of the plain and fused forwards and backwards (the
// backward stages x and dy, so it takes rows up to half the forward's): the smallest rows the path
// takes (4 KiB; 128 rows, and 2 or 3 rows, fewer than any GPU's SMs), group norm with S a multiple
// of the 16-byte pack (coefficients per pack) and not (per element), and rows that are not whole
// packs (each row's packs start at one of the E offsets from its first element; the elements
// before and after them are its edges). Tests assert takes_resident_rows, so a change of the
// plan's thresholds cannot move them off the path unnoticed. Group norm's tiles in NHWC
// (plan_group_tiles), instance norm's (plan_instance_tiles, batch norm's too) and batch norm's in
// NCHW (plan_batch_tiles) likewise.
#pragma once

#include <normkit/normkit.h>

#include <cstdint>
#include <vector>

#include "channel_norm_plan.hpp"
#include "test_support.hpp"

namespace nkt {

// The plan_resident_rows plan of shape k in dtype, and whether it takes the path; staged_tensors:
// 1 for the forward (x), 2 for the training backward (x and dy).
inline nk::cuda::ResidentPlan resident_plan(const ChannelCase& k, nk_dtype dtype,
                                            int staged_tensors = 1) {
  const nk::ChannelNorm kind = k.family == Family::kBatch      ? nk::ChannelNorm::kBatch
                               : k.family == Family::kInstance ? nk::ChannelNorm::kInstance
                                                               : nk::ChannelNorm::kGroup;
  const nk::ChannelShape shape{kind, k.n, k.c, k.s, k.layout, dtype, k.groups};
  return nk::cuda::plan_resident_rows(shape, static_cast<int>(elem_size(dtype)), staged_tensors);
}

inline bool takes_resident_rows(const ChannelCase& k, nk_dtype dtype, int staged_tensors = 1) {
  return resident_plan(k, dtype, staged_tensors).use;
}

// NCHW shapes of family f (instance or group norm) that take the path in dtype.
inline std::vector<ChannelCase> resident_row_shapes(Family f, nk_dtype dtype) {
  const int64_t elem = static_cast<int64_t>(elem_size(dtype));
  // Rows of S = 2051 (bf16) or 1025 (fp32): 4102 or 4100 bytes, row r's packs from element
  // (-r S) mod E on, every offset in turn.
  const int64_t odd = elem == 2 ? 2051 : 1025;
  if (f == Family::kInstance) {
    return {{f, 2, 64, 4096 / elem, NK_NCHW, 1},
            {f, 1, 3, 4096 / elem, NK_NCHW, 1},
            {f, 2, 64, odd, NK_NCHW, 1}};
  }
  // 16 groups of 4 channels: rows of 4 * S elements; S = 512 or 258 (fp32: 256 or 258). 16 groups
  // of 3 channels of 683 (bf16, 4098 bytes) or 345 (fp32, 4140 bytes): not whole packs. 2 groups
  // of 8 channels in one sample: 2 rows.
  const int64_t per_pack = 1024 / elem, per_element = 16 / elem == 8 ? 514 : 258;
  const int64_t three = elem == 2 ? 683 : 345;
  return {{f, 8, 64, per_pack, NK_NCHW, 16},
          {f, 8, 64, per_element, NK_NCHW, 16},
          {f, 8, 48, three, NK_NCHW, 16},
          {f, 1, 16, 512 / elem, NK_NCHW, 2}};
}

// Group norm in NHWC reads x once where a tile of whole groups fits a block (plan_group_tiles):
// whether shape k takes it in dtype (staged_tensors 2: the training backward's x and dy).
inline bool takes_group_tiles(const ChannelCase& k, nk_dtype dtype, int staged_tensors = 1) {
  const nk::ChannelShape shape{nk::ChannelNorm::kGroup, k.n, k.c, k.s, k.layout, dtype, k.groups};
  return nk::cuda::plan_group_tiles(shape, static_cast<int>(elem_size(dtype)), staged_tensors).use;
}

// NHWC group norm shapes that take the tiles in dtype, about 4 KiB a tile and 128 tiles (and 8,
// fewer than any GPU's SMs): a group a tile whose positions are one pack (C/G = 8 in 16 bits, 4 in
// fp32), and several groups a tile whose packs meet two groups, five packs a position (C/G = 10:
// 4 groups in 16 bits, 2 in fp32), so that the block (160 threads) is not a power of two.
inline std::vector<ChannelCase> group_tile_shapes(nk_dtype dtype) {
  const Family f = Family::kGroup;
  if (elem_size(dtype) == 2) {
    return {
        {f, 4, 256, 256, NK_NHWC, 32}, {f, 1, 64, 256, NK_NHWC, 8}, {f, 16, 320, 52, NK_NHWC, 32}};
  }
  return {{f, 4, 128, 256, NK_NHWC, 32}, {f, 1, 32, 256, NK_NHWC, 8}, {f, 8, 320, 52, NK_NHWC, 32}};
}

// Instance norm in NHWC reads x once where a tile of a pack of channels fits a block
// (plan_instance_tiles), and batch norm in NHWC or with S = 1 as the instance norm of one sample
// of N * S positions (instance_tile_shape): the plan of shape k in dtype (staged_tensors 2: the
// training backward's x and dy).
inline nk::cuda::GroupTilePlan instance_tile_plan(const ChannelCase& k, nk_dtype dtype,
                                                  int staged_tensors = 1) {
  const nk::ChannelNorm kind =
      k.family == Family::kBatch ? nk::ChannelNorm::kBatch : nk::ChannelNorm::kInstance;
  const nk::ChannelShape shape{kind, k.n, k.c, k.s, k.layout, dtype, 1};
  return nk::cuda::plan_instance_tiles(nk::cuda::instance_tile_shape(shape),
                                       static_cast<int>(elem_size(dtype)), staged_tensors);
}

inline bool takes_instance_tiles(const ChannelCase& k, nk_dtype dtype, int staged_tensors = 1) {
  return k.family != Family::kGroup && instance_tile_plan(k, dtype, staged_tensors).use;
}

// Shapes of family f (instance or batch norm) that take the tiles in dtype. Instance norm in NHWC:
// the smallest tile (S = 256 positions of 16 bytes, 4 KiB) 128 times, and 2 and 9 tiles (fewer
// than any GPU's SMs) of 300 and 1000 positions, whose blocks (64 and 128 threads) do not divide
// them. Batch norm: the smallest tile (N * S = 4 * 64) 16 times, 2 tiles of 3 * 100 positions, and
// N x C input (NCHW, S = 1) of 1000 rows in 3 tiles.
inline std::vector<ChannelCase> instance_tile_shapes(Family f, nk_dtype dtype) {
  const int64_t e = 16 / static_cast<int64_t>(elem_size(dtype));
  if (f == Family::kBatch) {
    return {{f, 4, 16 * e, 64, NK_NHWC, 1},
            {f, 3, 2 * e, 100, NK_NHWC, 1},
            {f, 1000, 3 * e, 1, NK_NCHW, 1}};
  }
  return {{f, 8, 16 * e, 256, NK_NHWC, 1},
          {f, 1, 2 * e, 300, NK_NHWC, 1},
          {f, 3, 3 * e, 1000, NK_NHWC, 1}};
}

// Shapes of family f whose forward tiles exceed a block and are split: instance norm
// (plan_instance_tiles' parts), 2 samples of 2 packs of channels over 12001 positions (4 tiles:
// 8 parts of 1501 positions, the last of 1494); batch norm, 3 samples of 4001 positions as one of
// 12003 (2 tiles: 8 parts, the last of 1496). Group norm (plan_group_tiles' parts, forward and
// backward alike): 2 samples of 8 groups of C/G = 10 over 2301 positions (4 groups a tile in 16
// bits, 2 in fp32: five packs a position, packs meeting two groups; 4 or 8 tiles of 8 parts of
// 288 positions, the last of 285), and one group of 256 packs a position (2048 channels in 16
// bits, 1024 in fp32) over 49 positions (one tile of 4 parts of 13, the last of 10: in 8 parts
// the last would have none).
inline std::vector<ChannelCase> split_tile_shapes(Family f, nk_dtype dtype) {
  const int64_t e = 16 / static_cast<int64_t>(elem_size(dtype));
  if (f == Family::kBatch) return {{f, 3, 2 * e, 4001, NK_NHWC, 1}};
  if (f == Family::kGroup) {
    return {{f, 2, 80, 2301, NK_NHWC, 8}, {f, 1, 256 * e, 49, NK_NHWC, 1}};
  }
  return {{f, 2, 2 * e, 12001, NK_NHWC, 1}};
}

// Shapes of family f whose tiles exceed 8 parts of 219 KiB and take 16 (a non-portable cluster),
// one pack of channels a tile: `forward` above 8 x 219 KiB of x, `backward` above 8 x 219 KiB of
// x and dy (its forward takes 8). Batch norm: 4 samples of 28033 positions (112132 as one sample:
// 16 parts of 7009, the last of 6997), backward 4 of 14017 (56068: 16 of 3505, the last of 3493).
// Instance norm: one sample of 112129 positions (16 parts of 7009, the last of 6994), backward of
// 56065 (16 of 3505, the last of 3490). Group norm: one group of 256 packs a position over 433
// positions (16 parts of 28, the last of 13), backward over 226 (16 of 15, the last of 1).
struct SixteenPartShapes {
  ChannelCase forward, backward;
};
inline SixteenPartShapes sixteen_part_shapes(Family f, nk_dtype dtype) {
  const int64_t e = 16 / static_cast<int64_t>(elem_size(dtype));
  if (f == Family::kBatch) return {{f, 4, e, 28033, NK_NHWC, 1}, {f, 4, e, 14017, NK_NHWC, 1}};
  if (f == Family::kGroup) {
    return {{f, 1, 256 * e, 433, NK_NHWC, 1}, {f, 1, 256 * e, 226, NK_NHWC, 1}};
  }
  return {{f, 1, e, 112129, NK_NHWC, 1}, {f, 1, e, 56065, NK_NHWC, 1}};
}

// The plan of a split tile shape (split_tile_shapes) in dtype: plan_group_tiles' for group norm,
// else instance_tile_plan's (staged_tensors 2: the training backward's x and dy).
inline nk::cuda::GroupTilePlan split_tile_plan(const ChannelCase& k, nk_dtype dtype,
                                               int staged_tensors = 1) {
  if (k.family != Family::kGroup) return instance_tile_plan(k, dtype, staged_tensors);
  const nk::ChannelShape shape{nk::ChannelNorm::kGroup, k.n, k.c, k.s, k.layout, dtype, k.groups};
  return nk::cuda::plan_group_tiles(shape, static_cast<int>(elem_size(dtype)), staged_tensors);
}

// Batch norm in NCHW with S > 1 reads x once where a channel's runs fit a block
// (plan_batch_tiles): the plan of shape k in dtype, and whether it takes the tiles
// (staged_tensors 2: the training backward's x and dy).
inline nk::cuda::BatchTilePlan batch_tile_plan(const ChannelCase& k, nk_dtype dtype,
                                               int staged_tensors = 1) {
  const nk::ChannelShape shape{nk::ChannelNorm::kBatch, k.n, k.c, k.s, k.layout, dtype, 1};
  return nk::cuda::plan_batch_tiles(shape, static_cast<int>(elem_size(dtype)), staged_tensors);
}

inline bool takes_batch_tiles(const ChannelCase& k, nk_dtype dtype, int staged_tensors = 1) {
  return k.family == Family::kBatch && batch_tile_plan(k, dtype, staged_tensors).use;
}

// Batch norm NCHW shapes that take the tiles, forward and backward: runs of 49 in 3 channels
// (C * S not whole packs, so each run starts at another offset of its pack, and the tensor ends
// inside a pack), 20 samples so that a thread's slots step across runs; runs of 16 (whole packs,
// whole mask bytes) in 130 channels; one sample of runs of 196 (whole packs in fp32, not in 16
// bits) in 5 channels; runs of 3, shorter than a pack in every dtype (no pack wholly in a run: in
// place, every element read alone), in 5 channels of 6 samples.
inline std::vector<ChannelCase> batch_tile_shapes() {
  const Family f = Family::kBatch;
  return {{f, 20, 3, 49, NK_NCHW, 1},
          {f, 8, 130, 16, NK_NCHW, 1},
          {f, 1, 5, 196, NK_NCHW, 1},
          {f, 6, 5, 3, NK_NCHW, 1}};
}

// Batch norm NCHW shapes whose channel tiles exceed a block and are split by samples
// (plan_batch_tiles' parts): [0] 20 runs of 1601 (not whole packs: each run starts at another
// offset of its pack) in 3 channels, above 48 KiB a channel (24 of each of x and dy): 2 parts fit,
// doubled to 4 of 5 runs for the blocks (8 would leave the last none), forward and backward;
// [1] one channel of 16 runs of 120000 bytes (30000 fp32 elements, 60000 in 16 bits): the
// forward's 16 parts of one run (the backward walks: a run above 109.5 KiB of each); [2] 16 runs
// of 60000 bytes: the backward's 16 parts of one run (the forward's 8 of two).
inline std::vector<ChannelCase> batch_split_shapes(nk_dtype dtype) {
  const Family f = Family::kBatch;
  const int64_t e = 16 / static_cast<int64_t>(elem_size(dtype));
  return {{f, 20, 3, 1601, NK_NCHW, 1},
          {f, 16, 1, 7500 * e, NK_NCHW, 1},
          {f, 16, 1, 3750 * e, NK_NCHW, 1}};
}

// NCHW rows above a block, split into parts (plan_resident_rows' parts), with the parts each
// shape takes: `forward` for the forward (rows above 192 KiB), `backward` for the training
// backward (above 48 KiB of each of x and dy, fewer than 128 rows). Instance norm: two rows of
// 196610 bytes (bf16 S = 98305, fp32 49153: not whole packs, so the second row and every part
// start inside a pack), 8 parts of 1537 packs (2 fit; doubled for the blocks); backward, two rows
// of 49158 or 49164 bytes, 8 parts of 385 packs. Group norm forward: 2 channels of 98310 or
// 98316 bytes a row (S not whole packs: coefficients per element), a channel a part; 4 channels
// of 49168 bytes (S whole packs), 2 parts fit, doubled to 4. Backward: 4 channels of 12304 bytes,
// 4 parts; 3 channels of 16390 or 16396 bytes (S not whole packs), 2 parts of 2 and 1.
struct SplitRowShapes {
  std::vector<ChannelCase> forward, backward;
  std::vector<int> forward_parts, backward_parts;
};
inline SplitRowShapes split_row_shapes(Family f, nk_dtype dtype) {
  const bool fp32 = elem_size(dtype) == 4;
  if (f == Family::kInstance) {
    return {{{f, 1, 2, fp32 ? 49153 : 98305, NK_NCHW, 1}},
            {{f, 1, 2, fp32 ? 12291 : 24579, NK_NCHW, 1}},
            {8},
            {8}};
  }
  return {
      {{f, 1, 4, fp32 ? 24579 : 49155, NK_NCHW, 2}, {f, 1, 8, fp32 ? 12292 : 24584, NK_NCHW, 2}},
      {{f, 1, 8, fp32 ? 3076 : 6152, NK_NCHW, 2}, {f, 1, 6, fp32 ? 4099 : 8195, NK_NCHW, 2}},
      {2, 4},
      {4, 2}};
}

// Shapes of family f in layout whose one-read plan makes the largest parts there are: 8 parts (a
// portable cluster) of kSplitPartMaxBytes (219 KiB) of x forward, half that of each of x and dy
// backward, so that on an H100 or H200 each part is staged whole in what a block may opt in to
// (split tiles: exactly the 227 KiB of those GPUs, with their 8 KiB of scratch). NHWC, one tile:
// batch norm 4 samples of 28032 positions (backward 14016), instance norm one sample of 112128
// (56064), a pack of channels each; group norm one group of 64 packs a position (backward 32) over
// 1752 positions. NCHW: batch norm one channel of 8 runs of 14016 packs (backward 7008), instance
// norm one row of 112128 packs (56064), group norm one group of 8 channels of 14016 packs (7008).
struct LargestPartShapes {
  ChannelCase forward, backward;
};
inline LargestPartShapes largest_part_shapes(Family f, nk_layout layout, nk_dtype dtype) {
  const int64_t e = 16 / static_cast<int64_t>(elem_size(dtype));
  if (layout == NK_NHWC) {
    if (f == Family::kBatch) return {{f, 4, e, 28032, layout, 1}, {f, 4, e, 14016, layout, 1}};
    if (f == Family::kGroup) {
      return {{f, 1, 64 * e, 1752, layout, 1}, {f, 1, 32 * e, 1752, layout, 1}};
    }
    return {{f, 1, e, 112128, layout, 1}, {f, 1, e, 56064, layout, 1}};
  }
  if (f == Family::kBatch) return {{f, 8, 1, 14016 * e, layout, 1}, {f, 8, 1, 7008 * e, layout, 1}};
  if (f == Family::kGroup) return {{f, 1, 8, 14016 * e, layout, 1}, {f, 1, 8, 7008 * e, layout, 1}};
  return {{f, 1, 1, 112128 * e, layout, 1}, {f, 1, 1, 56064 * e, layout, 1}};
}

// Whether a split part's staged head (the plan's: what every GPU grants) is shorter than the part,
// so that a GPU with more opt-in shared memory stages more of it (part_head_packs in
// kernels/channel_norm_split_parts.cuh): with ScopedSharedLimit(kHopperSharedOptin), the whole part
// (no part the plan makes is larger). A group or instance tile's part, and a batch norm channel's.
inline bool part_head_short(const nk::cuda::GroupTilePlan& g, nk_dtype dtype) {
  return g.head_len * static_cast<int64_t>(elem_size(dtype)) < g.part_positions * g.pos_packs * 16;
}
inline bool part_head_short(const nk::cuda::BatchTilePlan& b) {
  return b.head_packs < int64_t{b.part_runs} * b.seg_packs;
}

// The parts of shape k's one-read plan in dtype (0 where it takes another path): NHWC tiles
// (split_tile_plan), batch norm's NCHW channels (batch_tile_plan) or NCHW rows (resident_plan),
// with a part's bytes of each staged tensor and whether the plan's head is shorter
// (part_head_short; rows: the head against the part's whole packs).
struct SplitParts {
  int parts;
  int64_t bytes;
  bool head_short;
};
inline SplitParts split_parts(const ChannelCase& k, nk_dtype dtype, int staged_tensors) {
  const int64_t elem = static_cast<int64_t>(elem_size(dtype));
  if (k.layout == NK_NHWC) {
    const nk::cuda::GroupTilePlan g = split_tile_plan(k, dtype, staged_tensors);
    return {g.use ? g.parts : 0, g.part_positions * g.pos_packs * 16, part_head_short(g, dtype)};
  }
  if (k.family == Family::kBatch) {
    const nk::cuda::BatchTilePlan b = batch_tile_plan(k, dtype, staged_tensors);
    return {b.use ? b.parts : 0, int64_t{b.part_runs} * b.seg_packs * 16, part_head_short(b)};
  }
  const nk::cuda::ResidentPlan r = resident_plan(k, dtype, staged_tensors);
  const int64_t bytes = r.part_len * elem / 16 * 16;
  return {r.use ? r.parts : 0, bytes, r.head_len * elem < bytes};
}

}  // namespace nkt
