// Launchers of the statistics accumulator's kernels (statistics.cu), callable from host code
// compiled without nvcc. The accumulator's state lives on the device in fp64, a value per feature;
// the sample count is the same for every feature and is kept by the host, which knows it from the
// shapes, so no call waits for the GPU.
#pragma once

#include <cstddef>
#include <cstdint>

#include "launch.hpp"
#include "op_args.hpp"

namespace nk::cuda {

struct StatsState {
  int64_t features;
  double* mean;  // [features] each: device memory
  double* m2;
  double* min;
  double* max;
};

// Device bytes for a state of `features` features, laid out by stats_state().
size_t stats_state_bytes(int64_t features);
StatsState stats_state(void* memory, int64_t features);

// Back to no samples (min +inf, max -inf).
void stats_clear(const StatsState& st, void* stream);

// Adds a batch (one feature per channel of an N x C x S tensor, C == features) to a state that has
// seen `count` samples per feature. Scratch: stats_add_workspace_size bytes at launch.workspace.
size_t stats_add_workspace_size(const ChannelShape& s);
void stats_add(const StatsState& st, int64_t count, const ChannelShape& s, const void* x,
               const Launch& launch);

// into (into_count samples) += from (from_count samples), Chan's merge in fp64.
void stats_merge(const StatsState& into, int64_t into_count, const StatsState& from,
                 int64_t from_count, void* stream);

// fp32 outputs, each nullable: mean, m2 / count, m2 / (count - 1); min and max.
void stats_finalize(const StatsState& st, int64_t count, float* mean, float* var,
                    float* var_unbiased, void* stream);
void stats_min_max(const StatsState& st, float* min, float* max, void* stream);

}  // namespace nk::cuda
