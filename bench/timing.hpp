// Timing with CUDA events on the benchmark stream. A "launch" enqueues one call of an op (normkit's
// or cuDNN's) on that stream and throws BenchError when the call fails.
//
// Two methods, both reporting the median of many samples (a median ignores the odd sample that a
// clock change or another process stretched, where a mean would not):
//  - cold: each sample times one launch, with the L2 cache flushed before it (l2_flush.hpp), so
//    inputs come from device memory. When several launches are compared (normkit and cuDNN), they
//    alternate within each round, so slow drifts (clocks, temperature) affect both alike.
//  - back_to_back: each sample times `calls` consecutive launches with nothing in between; the
//    sample is divided by `calls`. For launch-bound cases, where the host's enqueue cost and the
//    kernel's fixed latency are what is measured and the inputs stay in L2, as in real use.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <vector>

#include "l2_flush.hpp"

namespace nkb {

using Launch = std::function<void()>;

// Seconds per launch, one entry per sample.
struct Samples {
  std::vector<double> seconds;
  double quantile(double q) const;  // nearest rank, q in [0, 1]
  double median() const { return quantile(0.5); }
};

class Timer {
 public:
  Timer(cudaStream_t stream, L2Flush& flush) : stream_(stream), flush_(flush) {}

  // One Samples per launch, in the order given. `warmup` untimed rounds come first.
  std::vector<Samples> cold(const std::vector<Launch>& launches, int samples, int warmup);
  std::vector<Samples> back_to_back(const std::vector<Launch>& launches, int calls, int samples,
                                    int warmup);

 private:
  cudaStream_t stream_;
  L2Flush& flush_;
};

}  // namespace nkb
