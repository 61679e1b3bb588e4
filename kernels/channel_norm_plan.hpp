// How the batch, instance and group norm kernels split their work. Plain C++ so the plan is unit
// tested on machines without a GPU.
//
// Every statistic of the three norms is a merge of per-(n, c) partial statistics over S, so the
// kernels first reduce each (n, c)'s S values, in `chunks` pieces when there are too few (n, c)
// to fill the GPU, into partials; a one-block finalize then merges them per statistic in a fixed
// order. Two layouts of the reduction:
//  - rows: NCHW with S > 1 (and NHWC with C == 1, the same memory), where each (n, c) is a
//    contiguous row of S elements; a warp per row when the row is short, else a block per
//    (row, chunk);
//  - channels: NHWC, and NCHW with S == 1 (then also channels-contiguous), where `lanes` threads
//    cover consecutive channel packs (up to 32; fewer when C is small) and the block's remaining
//    threads walk down s in `block_rows` rows.
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

constexpr int kPartialBlock = 256;  // threads of the partial-reduction blocks

struct ChannelPlan {
  bool rows_layout;   // see above
  bool warp_per_row;  // rows layout: a warp per (n, c) row
  int lanes;          // channels layout: threads across channel packs, a power of two <= 32
  int block_rows() const { return kPartialBlock / lanes; }  // channels layout: rows down s
  int pack_elems;            // 16 / sizeof(T) when pointers and sizes allow 16-byte access, else 1
  int64_t chunks;            // pieces each (n, c)'s S values are split into
  int64_t chunk_len;         // S values per piece (a multiple of pack_elems in the rows layout)
  int64_t partials() const;  // n * c * chunks
  int64_t n, c, s;

  // Index of the partial of (n, c, chunk) in the workspace.
  NK_PLAN_HD int64_t partial_index(int64_t n_, int64_t c_, int64_t chunk) const {
    return rows_layout ? (n_ * c + c_) * chunks + chunk : (n_ * chunks + chunk) * c + c_;
  }
};

// `vector_access`: every activation pointer is 16-byte aligned (the plan adds the size condition).
ChannelPlan plan_channel_norm(const ChannelShape& shape, int elem_bytes, bool vector_access,
                              int sm_count);

}  // namespace nk::cuda
