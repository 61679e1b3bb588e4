// The statistics walk of batch norm's NCHW rows shorter than a pack at a few shapes: the plan
// before (889b7c2: a lane per row) and after (column_view). Built against either tree's plan:
//   g++ -std=c++17 [-DNK_COLUMN_VIEW] -I include -I src -I kernels plan_dump.cpp \
//       kernels/channel_norm_plan.cpp
#include <cstdio>
#include <initializer_list>

#include "channel_norm_plan.hpp"

int main() {
  using namespace nk::cuda;
  struct Shape {
    long n, c, s;
  };
  for (int elem : {2, 4}) {
    for (const Shape& k : {Shape{256, 64, 3}, Shape{256, 512, 2}, Shape{32, 1024, 7},
                           Shape{4096, 3, 5}, Shape{65536, 64, 3}}) {
      const nk::ChannelShape shape{nk::ChannelNorm::kBatch, k.n, k.c, k.s, NK_NCHW,
                                   elem == 2 ? NK_BF16 : NK_F32, 1};
      const ChannelPlan p = plan_channel_norm(shape, elem, true);
      std::printf("%s n=%ld c=%ld s=%ld: short_rows=%d chunks=%ld partials=%ld",
                  elem == 2 ? "bf16" : "fp32", k.n, k.c, k.s, p.short_rows ? 1 : 0,
                  static_cast<long>(p.chunks), static_cast<long>(p.partials()));
      if (p.short_rows) {  // a lane per row: warps of 32 lanes, 8 a block, one per partial
        std::printf(" | rows a partial=%ld, blocks=%ld", static_cast<long>(p.chunk_len / p.s),
                    static_cast<long>((p.partials() + 7) / 8));
      }
#ifdef NK_COLUMN_VIEW  // the tree after the change
      if (p.columns > 1) {
        const ChannelPlan v = column_view(p);
        const long width = v.period_split ? v.period : v.c;
        const long tiles =
            v.period > 0 && !v.period_split ? 1 : (width / v.pack_elems + v.lanes - 1) / v.lanes;
        std::printf(" | columns=%d, view: c=%ld lanes=%d rows=%d period=%ld split=%d chunk=%ld positions,"
                    " blocks=%ld",
                    p.columns, static_cast<long>(v.c), v.lanes, v.block_rows(), static_cast<long>(v.period),
                    v.period_split ? 1 : 0, static_cast<long>(v.chunk_len),
                    tiles * static_cast<long>(v.walk_chunks));
      }
#endif
      std::printf("\n");
    }
  }
  return 0;
}
