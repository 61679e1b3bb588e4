#include "channel_norm_plan.hpp"

namespace nk::cuda {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int64_t kWarpRowPacks = 128;     // rows of up to 4 packs per lane take a warp
constexpr int64_t kMinRowChunk = 4096;     // elements a block reduces at least, rows layout
constexpr int64_t kMinChannelChunk = 256;  // s-rows a block walks at least, channels layout
constexpr int64_t kBlocksPerSm = 4;        // partial blocks wanted per SM

}  // namespace

int64_t ChannelPlan::partials() const { return n * c * chunks; }

ChannelPlan plan_channel_norm(const ChannelShape& shape, int elem_bytes, bool vector_access,
                              int sm_count) {
  ChannelPlan p{};
  p.n = shape.n;
  p.c = shape.c;
  p.s = shape.s;
  p.rows_layout = shape.s > 1 && (shape.layout == NK_NCHW || shape.c == 1);
  p.lanes = 32;
  const int e = 16 / elem_bytes;
  // 16-byte packs never straddle a row (rows layout) or run past the channels (channels layout).
  p.pack_elems = vector_access && (p.rows_layout ? shape.s % e == 0 : shape.c % e == 0) ? e : 1;
  const int64_t wanted_blocks = kBlocksPerSm * sm_count;
  if (p.rows_layout) {
    const int64_t rows = shape.n * shape.c, packs = ceil_div(shape.s, p.pack_elems);
    p.warp_per_row = packs <= kWarpRowPacks;
    p.chunks = 1;
    if (!p.warp_per_row && rows < wanted_blocks) {
      const int64_t by_work = ceil_div(shape.s, kMinRowChunk);
      const int64_t by_blocks = ceil_div(wanted_blocks, rows);
      p.chunks = by_blocks < by_work ? by_blocks : by_work;
    }
    p.chunk_len = ceil_div(ceil_div(shape.s, p.chunks), p.pack_elems) * p.pack_elems;
    p.chunks = ceil_div(shape.s, p.chunk_len);  // no empty trailing chunk
  } else {
    p.warp_per_row = false;
    const int64_t packs = ceil_div(shape.c, p.pack_elems);
    p.lanes = 1;
    while (p.lanes < 32 && p.lanes < packs) p.lanes *= 2;
    const int64_t tiles = ceil_div(packs, p.lanes) * shape.n;
    p.chunks = 1;
    if (tiles < wanted_blocks) {
      const int64_t by_work = ceil_div(shape.s, kMinChannelChunk);
      const int64_t by_blocks = ceil_div(wanted_blocks, tiles);
      p.chunks = by_blocks < by_work ? by_blocks : by_work;
    }
    p.chunk_len = ceil_div(shape.s, p.chunks);
    p.chunks = ceil_div(shape.s, p.chunk_len);
  }
  return p;
}

}  // namespace nk::cuda
