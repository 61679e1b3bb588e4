// How the batch, instance and group norm kernels split their work. Plain C++ so the plan is unit
// tested on machines without a GPU.
//
// Every statistic of the three norms is a merge of per-(n, c) partial statistics over S, so the
// kernels first reduce each (n, c)'s S values, in `chunks` pieces when there are too few (n, c)
// to fill the GPU, into partials; a one-block finalize then merges them per statistic in a fixed
// order. Two layouts of the reduction:
//  - rows: NCHW with S > 1, where each (n, c) is a contiguous row of S elements; a warp per row
//    when the row is short, else a block per (row, chunk);
//  - channels: NHWC, and NCHW with S == 1 (then also channels-contiguous), where lanes cover 32
//    consecutive channel packs and the block's 8 warps walk down s.
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
constexpr int kChannelLanes = 32;   // channels layout: packs per block row
constexpr int kChannelRows = 8;     // channels layout: s-rows per block

struct ChannelPlan {
  bool rows_layout;      // see above
  bool warp_per_row;     // rows layout: a warp per (n, c) row
  int pack_elems;        // 16 / sizeof(T) when pointers and sizes allow 16-byte access, else 1
  int64_t chunks;        // pieces each (n, c)'s S values are split into
  int64_t chunk_len;     // S values per piece (a multiple of pack_elems in the rows layout)
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
