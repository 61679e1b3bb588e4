// Prints the statistics pass's split (kernels/channel_norm_plan.cpp) of batch norm at the
// bn_resnet50 shapes in NHWC, bf16 and fp32, with 16-byte aligned pointers, one line a shape, for
// bench/channel_blocks.py. Plain C++, built by that script against any tree's plan.
#include <cstdio>
#include <initializer_list>

#include "channel_norm_plan.hpp"

int main() {
  using namespace nk::cuda;
  struct Layer {
    long c, hw;
  };
  const Layer layers[] = {{64, 112}, {64, 56},   {256, 56}, {128, 28}, {512, 28},
                          {256, 14}, {1024, 14}, {512, 7},  {2048, 7}};
  for (int elem : {2, 4}) {
    for (long n : {256, 32}) {
      for (const Layer& l : layers) {
        const nk::ChannelShape shape{nk::ChannelNorm::kBatch, n, l.c, l.hw * l.hw, NK_NHWC,
                                     elem == 2 ? NK_BF16 : NK_F32, 1};
        const ChannelPlan p = plan_channel_norm(shape, elem, true);
        // Blocks of the partials kernel: tiles of channel packs times (slot, chunk) items.
        const long tiles = p.period > 0 ? 1 : (p.c / p.pack_elems + p.lanes - 1) / p.lanes;
        std::printf("%s n=%ld c=%ld hw=%ld lanes=%d tiles=%ld chunks=%ld blocks=%ld partials=%ld\n",
                    elem == 2 ? "bf16" : "fp32", n, l.c, l.hw, p.lanes, tiles,
                    static_cast<long>(p.chunks), tiles * static_cast<long>(p.slots * p.chunks),
                    static_cast<long>(p.partials()));
      }
    }
  }
}
