// The benchmark suite on one GPU: the stream, normkit's context, the L2 flush, the cuDNN baseline
// and the copy-bandwidth reference, set up once; and the body that measures one case.
//
// Each case is one Google Benchmark iteration with manual time: inside it, normkit (and cuDNN,
// where it has the case) is launched `samples` times (timing.hpp: L2 flushed before each launch,
// the two alternating), and the iteration's time is set to normkit's MEDIAN. Google Benchmark's
// "Time" column is therefore the median time of one call; its "CPU" column is the host time of
// the whole measurement and means nothing here.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>
#include <normkit/normkit.h>

#include <functional>
#include <memory>
#include <vector>

#include "bench_case.hpp"
#include "copy_bandwidth.hpp"
#include "cudnn_baseline.hpp"
#include "l2_flush.hpp"
#include "run_context.hpp"

namespace nkb {

struct Settings {
  int samples = 50;            // timed launches per case (per op)
  int warmup = 3;              // untimed rounds first
  int calls_per_sample = 100;  // launch-bound cases: back-to-back calls per timed sample
  // normkit's first, untimed call of each case runs between cudaProfilerStart and
  // cudaProfilerStop, so that `ncu --profile-from-start off` profiles that call's kernels and
  // nothing else (no fills, L2 flushes, copies or cuDNN).
  bool profile_first_call = false;
};

// NORMKIT_BENCH_SAMPLES overrides the sample count (at least 5); NORMKIT_BENCH_PROFILE=1 sets
// profile_first_call.
Settings settings_from_environment();

using CaseBody = std::function<void(benchmark::State&, const Case&)>;

// Every benchmark of the suite: manual time, one iteration (the samples are taken inside it),
// microseconds. Google Benchmark appends "/iterations:1/manual_time" to the names.
benchmark::internal::Benchmark* configure_benchmark(benchmark::internal::Benchmark* b);

// Registers one benchmark per case, named Case::name(), with manual time and one iteration.
void register_cases(const std::vector<Case>& cases, const CaseBody& body);

// The names of the two copy-bandwidth entries.
extern const char* const kCopyKernelName;
extern const char* const kCopyMemcpyName;

class Suite {
 public:
  // Sets everything up on CUDA device `device` and measures the copy bandwidth. Throws
  // BenchError when the device cannot be used.
  Suite(int device, const Settings& settings);
  ~Suite();
  Suite(const Suite&) = delete;
  Suite& operator=(const Suite&) = delete;

  // Device facts, versions, copy bandwidths, timing method, commit.
  ContextEntries context() const;
  // Registers the two copy entries, reporting the start-up measurement.
  void register_copy_benchmarks();
  // Measures one case into `state` (errors become state.SkipWithError).
  void run_case(benchmark::State& state, const Case& c);

 private:
  void measure(benchmark::State& state, const Case& c);

  int device_;
  Settings settings_;
  cudaStream_t stream_ = nullptr;
  nk_context ctx_ = nullptr;
  std::unique_ptr<L2Flush> flush_;
  std::unique_ptr<CudnnBaseline> cudnn_;
  CopyBandwidth copy_;
  OnChip on_chip_;  // what DESIGN.md section 5's byte count keeps close (bench_case.hpp)
  ContextEntries device_facts_;
};

}  // namespace nkb
