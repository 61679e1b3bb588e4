// The exchange-side kernels of synchronized batch norm: what every rank computes, identically,
// from the partials all ranks gathered. Callable from host code compiled without nvcc.
#pragma once

#include <cstdint>

namespace nk::cuda {

// Every rank's partials, in device memory: rank r's count at counts[r * count_stride] and its
// per-channel values at first[r * stride + c] and second[r * stride + c]. The strides let the
// public API's separate arrays and the NCCL path's packed per-rank records share one kernel.
struct RankPartials {
  const int64_t* counts;
  int64_t count_stride;
  const float* first;
  const float* second;
  int64_t stride;
  int64_t ranks, channels;
};

// Chan's merge of (count, mean, m2) in rank order, in fp64: every rank gets the same bits, and
// ranks with count 0 add nothing. A negative count makes total_count -1 and every output NaN
// (device memory cannot be checked without waiting for the GPU).
void merge_rank_stats(const RankPartials& in, int64_t* total_count, float* mean, float* m2,
                      void* stream);

// Sums of (count, sum dy, sum dy * x-hat) in rank order, in fp64; the same rule for negative
// counts. sum_first / sum_second may be written alongside to copies (nullable), e.g. dbias and
// dweight.
void sum_rank_sums(const RankPartials& in, int64_t* total_count, float* sum_first,
                   float* sum_second, float* copy_first, float* copy_second, void* stream);

// *p = value, on the stream.
void store_count(int64_t* p, int64_t value, void* stream);

}  // namespace nk::cuda
