// Prints the partial reductions' split (kernels/channel_norm_plan.cpp) at the NHWC shapes of the
// benchmark sets bn_resnet50, bn_features, bn_mobilenet_v2, instance_norm and group_norm
// (bench/shape_sets.cpp), bf16 and fp32, with 16-byte aligned pointers, one line a shape, for
// bench/channel_blocks.py. Plain C++, built by that script against any tree's plan.
#include <cstdio>
#include <initializer_list>

#include "channel_norm_plan.hpp"

namespace {

void print(const char* set, nk::ChannelNorm kind, long n, long c, long hw, long groups, int elem) {
  using namespace nk::cuda;
  const nk::ChannelShape shape{kind,    n, c, hw * hw, NK_NHWC, elem == 2 ? NK_BF16 : NK_F32,
                               groups};
  const ChannelPlan p = plan_channel_norm(shape, elem, true);
  // Blocks of the partials kernel: tiles of channel packs times (slot, chunk) items.
  const long width = p.period_split ? p.period : p.c;
  const long packs = width / p.pack_elems;
  const long tiles = p.period > 0 && !p.period_split ? 1 : (packs + p.lanes - 1) / p.lanes;
  // Threads of a block that have a channel pack, averaged over the tiles (the last may be
  // narrower than lanes).
  long active = 0;
  for (long t = 0; t < tiles; ++t) {
    const long left = packs - t * p.lanes;
    active += (left < p.lanes ? left : p.lanes) * p.block_rows();
  }
  const int walk = p.period == 0 ? 0 : p.period_split ? 2 : 1;  // ChannelWalk
  // Group norm's one-read tiles take the forward (x staged) or the backward (x and dy) instead.
  const bool tiles_fwd = plan_group_tiles(shape, elem, 1).use;
  const bool tiles_bwd = plan_group_tiles(shape, elem, 2).use;
  std::printf("%s set=%s n=%ld c=%ld hw=%ld walk=%d pack=%d lanes=%d rows=%d tiles=%ld "
              "active=%.1f chunks=%ld blocks=%ld partials=%ld group_tiles_fwd=%d "
              "group_tiles_bwd=%d\n",
              elem == 2 ? "bf16" : "fp32", set, n, c, hw, walk, p.pack_elems, p.lanes,
              p.block_rows(), tiles, static_cast<double>(active) / tiles,
              static_cast<long>(p.chunks), tiles * static_cast<long>(p.slots * p.walk_chunks),
              static_cast<long>(p.partials()), tiles_fwd, tiles_bwd);
}

}  // namespace

int main() {
  using nk::ChannelNorm;
  struct Layer {
    long c, hw;
  };
  const Layer layers[] = {{64, 112}, {64, 56},   {256, 56}, {128, 28}, {512, 28},
                          {256, 14}, {1024, 14}, {512, 7},  {2048, 7}};
  struct Features {
    long n, c;  // S = 1
  };
  const Features features[] = {{65536, 512}, {16384, 2048}, {4096, 8192}, {4096, 1024}};
  const Layer mobilenet_v2[] = {{32, 112}, {16, 112}, {24, 56}, {32, 28}};
  for (int elem : {2, 4}) {
    for (long n : {256, 32})
      for (const Layer& l : layers)
        print("bn_resnet50", ChannelNorm::kBatch, n, l.c, l.hw, 1, elem);
    for (const Features& f : features)
      print("bn_features", ChannelNorm::kBatch, f.n, f.c, 1, 1, elem);
    for (const Layer& l : mobilenet_v2)
      print("bn_mobilenet_v2", ChannelNorm::kBatch, 128, l.c, l.hw, 1, elem);
    for (long c : {64, 128, 256})
      for (long hw : {256, 128, 75})
        print("instance_norm", ChannelNorm::kInstance, 8, c, hw, 1, elem);
    for (long n : {2, 8})
      for (long c : {320, 640, 1280})
        for (long hw : {64, 32, 16, 8})
          print("group_norm", ChannelNorm::kGroup, n, c, hw, 32, elem);
  }
}
