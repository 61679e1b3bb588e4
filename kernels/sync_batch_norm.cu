// Synchronized batch norm's per-rank merges (see sync_batch_norm.hpp). A thread per channel walks
// the ranks in order in fp64, so the result does not depend on how many ranks there are beyond
// their values, and the thread of channel 0 also writes the total count.
#include <cuda_runtime.h>

#include <cmath>

#include "common/check.cuh"
#include "sync_batch_norm.hpp"

namespace nk::cuda {
namespace {

// The total count of every rank, or -1 when a count is negative.
__device__ int64_t total_of(const RankPartials& in) {
  int64_t total = 0;
  for (int64_t r = 0; r < in.ranks; ++r) {
    const int64_t n = in.counts[r * in.count_stride];
    if (n < 0) return -1;
    total += n;
  }
  return total;
}

__global__ void __launch_bounds__(256)
    merge_stats_kernel(RankPartials in, int64_t* total_count, float* mean, float* m2) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= in.channels) return;
  const int64_t total = total_of(in);
  if (c == 0) *total_count = total;
  if (total < 0) {
    mean[c] = NAN;
    m2[c] = NAN;
    return;
  }
  int64_t count = 0;
  double mu = 0.0, sq = 0.0;
  for (int64_t r = 0; r < in.ranks; ++r) {
    const int64_t n = in.counts[r * in.count_stride];
    if (n == 0) continue;  // an empty rank: whatever its slots hold is not read
    const int64_t merged = count + n;
    const double delta = static_cast<double>(in.first[r * in.stride + c]) - mu;
    const double share = static_cast<double>(n) / static_cast<double>(merged);
    mu += delta * share;
    sq += static_cast<double>(in.second[r * in.stride + c]) +
          delta * delta * static_cast<double>(count) * share;
    count = merged;
  }
  mean[c] = static_cast<float>(mu);
  m2[c] = static_cast<float>(sq);
}

__global__ void __launch_bounds__(256)
    sum_kernel(RankPartials in, int64_t* total_count, float* sum_first, float* sum_second,
               float* copy_first, float* copy_second) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= in.channels) return;
  const int64_t total = total_of(in);
  if (c == 0) *total_count = total;
  double a = 0.0, b = 0.0;
  for (int64_t r = 0; r < in.ranks; ++r) {
    if (in.counts[r * in.count_stride] == 0) continue;
    a += in.first[r * in.stride + c];
    b += in.second[r * in.stride + c];
  }
  const float fa = total < 0 ? NAN : static_cast<float>(a);
  const float fb = total < 0 ? NAN : static_cast<float>(b);
  sum_first[c] = fa;
  sum_second[c] = fb;
  if (copy_first) copy_first[c] = fa;
  if (copy_second) copy_second[c] = fb;
}

__global__ void store_count_kernel(int64_t* p, int64_t value) { *p = value; }

unsigned blocks_for(int64_t channels) { return static_cast<unsigned>((channels + 255) / 256); }

}  // namespace

void merge_rank_stats(const RankPartials& in, int64_t* total_count, float* mean, float* m2,
                      void* stream) {
  merge_stats_kernel<<<blocks_for(in.channels), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      in, total_count, mean, m2);
  dev::check_cuda(cudaGetLastError(), "synchronized batch norm merge launch");
}

void sum_rank_sums(const RankPartials& in, int64_t* total_count, float* sum_first,
                   float* sum_second, float* copy_first, float* copy_second, void* stream) {
  sum_kernel<<<blocks_for(in.channels), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      in, total_count, sum_first, sum_second, copy_first, copy_second);
  dev::check_cuda(cudaGetLastError(), "synchronized batch norm sum launch");
}

void store_count(int64_t* p, int64_t value, void* stream) {
  store_count_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(p, value);
  dev::check_cuda(cudaGetLastError(), "synchronized batch norm count launch");
}

}  // namespace nk::cuda
