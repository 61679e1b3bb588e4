// The running statistics' device rules, shared by the kernels that update them: the counter rule of
// num_batches_tracked (normkit.h) and the blend of a channel's batch statistics into its running
// mean and variance.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace nk::cuda {

// A counter that is negative, or at INT64_MAX where the increment would overflow, is not advanced,
// and the running statistics it would weigh are left as they were, so a bad counter never writes
// NaN (1 / 0) or a negative momentum.
__device__ __forceinline__ bool counter_can_advance(int64_t tracked) {
  return tracked >= 0 && tracked < INT64_MAX;
}

// Advances a counter (nullable) that can advance.
__device__ __forceinline__ void advance_counter_once(int64_t* num_batches_tracked) {
  if (num_batches_tracked == nullptr) return;
  const int64_t tracked = *num_batches_tracked;
  if (counter_can_advance(tracked)) *num_batches_tracked = tracked + 1;
}

// The running buffers of a kernel that blends whole statistics into them itself. The counter is
// read, never advanced, here: a later launch advances it, after every block has read it.
struct RunningBlend {
  float* mean;  // [C], nullable: no running statistics
  float* var;   // [C]
  const int64_t* num_batches_tracked;  // nullable
  float momentum;
  bool cumulative;

  // The counter's value (0 without one), for weight(tracked): a kernel can load it ahead.
  __device__ int64_t tracked() const { return num_batches_tracked ? *num_batches_tracked : 0; }
  // The batch's weight at counter value `tracked`: the momentum, or 1 / (count + 1); -1 when the
  // counter cannot advance (or there are no running buffers), which leaves them as they are.
  __device__ float weight(int64_t tracked) const {
    if (mean == nullptr || !counter_can_advance(tracked)) return -1.0f;
    return cumulative ? 1.0f / static_cast<float>(tracked + 1) : momentum;
  }
  // Channel c's running mean and variance as they are: a kernel loads them (and tracked()) before
  // its statistics, so that the blend after them is stores only, not loads waiting behind stores.
  __device__ float2 load(int64_t c) const { return make_float2(mean[c], var[c]); }
  // Channel c's running mean and variance from their old values (load) and the batch's, weighed by
  // m = weight() >= 0.
  __device__ void blend(int64_t c, float m, float2 old, float batch_mean, float batch_var) const {
    mean[c] = (1.0f - m) * old.x + m * batch_mean;
    var[c] = (1.0f - m) * old.y + m * batch_var;
  }
};

}  // namespace nk::cuda
