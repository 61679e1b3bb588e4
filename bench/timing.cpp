#include "timing.hpp"

#include <algorithm>
#include <cmath>

#include "bench_error.hpp"

namespace nkb {
namespace {

// A start/stop pair of CUDA events, destroyed with the object.
class EventPair {
 public:
  EventPair() {
    check_cuda(cudaEventCreate(&start_), "cudaEventCreate");
    const cudaError_t err = cudaEventCreate(&stop_);
    if (err != cudaSuccess) cudaEventDestroy(start_);
    check_cuda(err, "cudaEventCreate");
  }
  ~EventPair() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;

  void record_start(cudaStream_t s) { check_cuda(cudaEventRecord(start_, s), "cudaEventRecord"); }
  void record_stop(cudaStream_t s) { check_cuda(cudaEventRecord(stop_, s), "cudaEventRecord"); }
  void synchronize() { check_cuda(cudaEventSynchronize(stop_), "cudaEventSynchronize"); }
  double seconds() const {
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    return 1e-3 * static_cast<double>(ms);
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Runs `rounds` rounds of timed launches: in each, every launch gets its own event pair around
// `body(launch)`, preceded by `before()`; the round waits for its last event. Rounds below zero
// are warm-ups and are not recorded.
template <class Before, class Body>
std::vector<Samples> run_rounds(cudaStream_t stream, const std::vector<Launch>& launches,
                                int samples, int warmup, double divisor, Before before, Body body) {
  std::vector<EventPair> events(launches.size());
  std::vector<Samples> result(launches.size());
  for (Samples& s : result) s.seconds.reserve(static_cast<size_t>(samples));
  for (int round = -warmup; round < samples; ++round) {
    for (size_t i = 0; i < launches.size(); ++i) {
      before();
      events[i].record_start(stream);
      body(launches[i]);
      events[i].record_stop(stream);
    }
    events.back().synchronize();  // the stream is in order: every pair of the round is done
    if (round < 0) continue;
    for (size_t i = 0; i < launches.size(); ++i) {
      result[i].seconds.push_back(events[i].seconds() / divisor);
    }
  }
  return result;
}

}  // namespace

double Samples::quantile(double q) const {
  if (seconds.empty()) return 0;
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  const double rank = std::round(q * static_cast<double>(sorted.size() - 1));
  return sorted[static_cast<size_t>(rank)];
}

std::vector<Samples> Timer::cold(const std::vector<Launch>& launches, int samples, int warmup) {
  if (launches.empty()) return {};
  return run_rounds(
      stream_, launches, samples, warmup, 1.0, [this] { flush_.enqueue(stream_); },
      [](const Launch& launch) { launch(); });
}

std::vector<Samples> Timer::back_to_back(const std::vector<Launch>& launches, int calls,
                                         int samples, int warmup) {
  if (launches.empty()) return {};
  return run_rounds(
      stream_, launches, samples, warmup, static_cast<double>(calls), [] {},
      [calls](const Launch& launch) {
        for (int k = 0; k < calls; ++k) launch();
      });
}

}  // namespace nkb
