// Which split test shapes stage more than the plan's head of a part on a device with 227 KiB of
// opt-in shared memory (part_head_packs in kernels/channel_norm_split_parts.cuh): what the tests'
// H100 runs (NORMKIT_TEST_SHARED_LIMIT) change in a simulator, which reports no opt-in limit.
// Scratch bytes as the kernels' (split tiles 8192; rows and batch tiles 144 forward, 288 backward,
// which decide only the "head at 227 KiB" column, never "grows").
#include <cstdio>
#include "resident_rows_cases.hpp"
namespace nkt {
size_t elem_size(nk_dtype dtype) { return dtype == NK_F32 ? 4 : 2; }  // tests/test_support.cpp's
}  // namespace nkt
using namespace nkt;
static const char* fam(Family f) { return f == Family::kBatch ? "batch" : f == Family::kInstance ? "instance" : "group"; }
static const char* dt(nk_dtype d) { return d == NK_F32 ? "f32" : d == NK_BF16 ? "bf16" : "f16"; }
static void row(const char* test, const ChannelCase& k, nk_dtype d, int staged, int64_t part, int64_t head, int64_t scratch) {
  const int64_t granted = (227 * 1024 - scratch) / staged / 16 * 16;
  int64_t h100 = head;
  if (granted > head) h100 = part < granted ? part : granted;
  std::printf("| %s | %s %s | n%lld c%lld s%lld g%lld | %d | %lld | %lld | %lld | %s |\n", test, fam(k.family), dt(d),
              (long long)k.n, (long long)k.c, (long long)k.s, (long long)k.groups, staged, (long long)part,
              (long long)head, (long long)h100, h100 > head ? "yes" : "no");
}
int main() {
  std::printf("| test | case | shape | staged tensors | part bytes | plan head bytes | head at 227 KiB | grows |\n|---|---|---|---|---|---|---|---|\n");
  for (nk_dtype d : {NK_F32, NK_BF16, NK_F16}) {
    const int64_t e = elem_size(d);
    for (Family f : {Family::kBatch, Family::kInstance, Family::kGroup}) {
      for (const ChannelCase& k : split_tile_shapes(f, d)) {
        for (int st : {1, 2}) {
          auto g = split_tile_plan(k, d, st);
          if (!g.use || g.parts < 2) continue;
          row(st == 1 ? "SplitTiles fwd" : "SplitTiles bwd", k, d, st, g.part_positions * g.pos_packs * 16, g.head_len * e, 8192);
        }
      }
      if (f != Family::kBatch) {
        auto sr = split_row_shapes(f, d);
        for (const ChannelCase& k : sr.forward) { auto r = resident_plan(k, d, 1); if (r.use && r.parts > 1) row("SplitRows fwd", k, d, 1, r.part_len * e / 16 * 16, r.head_len * e, 144); }
        for (const ChannelCase& k : sr.backward) { auto r = resident_plan(k, d, 2); if (r.use && r.parts > 1) row("SplitRows bwd", k, d, 2, r.part_len * e / 16 * 16, r.head_len * e, 288); }
      }
      if (f == Family::kBatch) {
        for (const ChannelCase& k : batch_split_shapes(d)) {
          for (int st : {1, 2}) {
            auto b = batch_tile_plan(k, d, st);
            if (!b.use || b.parts < 2) continue;
            row(st == 1 ? "BatchTilesSplit fwd" : "BatchTilesSplit bwd", k, d, st, int64_t{b.part_runs} * b.seg_packs * 16, b.head_packs * 16, st == 1 ? 144 : 288);
          }
        }
      }
      auto s16 = sixteen_part_shapes(f, d);
      { auto g = split_tile_plan(s16.forward, d, 1); row("SixteenParts fwd", s16.forward, d, 1, g.part_positions * g.pos_packs * 16, g.head_len * e, 8192); }
      { auto g = split_tile_plan(s16.backward, d, 2); row("SixteenParts bwd", s16.backward, d, 2, g.part_positions * g.pos_packs * 16, g.head_len * e, 8192); }
    }
  }
}
