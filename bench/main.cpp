// normkit_bench: normkit's GPU benchmark suite (Google Benchmark). Every norm op, forward and
// backward, on named shape sets (shape_sets.hpp), reported as achieved bandwidth, as a fraction
// of the copy bandwidth measured in the same run, and as a ratio to cuDNN where cuDNN has the
// case. See README, "Benchmarks", for how to run it and read it.
//
// Without a visible CUDA device it prints one line to stderr and exits with status 0 (CI
// machines have no GPU); with --benchmark_list_tests it still lists the benchmark names.
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "shape_sets.hpp"
#include "suite.hpp"

namespace {

// True when argv asks Google Benchmark to list the benchmarks instead of running them. Read
// before benchmark::Initialize, which consumes the flags.
bool listing_requested(int argc, char** argv) {
  constexpr const char* kFlag = "--benchmark_list_tests";
  const size_t length = std::strlen(kFlag);
  bool listing = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], kFlag, length) != 0) continue;
    const char* value = argv[i] + length;
    listing = value[0] == '\0' || std::strcmp(value, "=true") == 0 ||
              std::strcmp(value, "=1") == 0 || std::strcmp(value, "=yes") == 0;
  }
  return listing;
}

// The reason no device can be used, or "" when device 0 is there.
std::string missing_device_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(err);
  }
  return count > 0 ? "" : "0 devices";
}

}  // namespace

int main(int argc, char** argv) {
  const bool listing = listing_requested(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  const std::string missing = missing_device_reason();
  if (!missing.empty()) {
    std::fprintf(stderr, "normkit_bench: no CUDA device is visible (%s); nothing to measure\n",
                 missing.c_str());
    if (listing) {  // the names need no GPU
      for (const char* name : {nkb::kCopyKernelName, nkb::kCopyMemcpyName}) {
        nkb::configure_benchmark(benchmark::RegisterBenchmark(name, [](benchmark::State&) {}));
      }
      nkb::register_cases(nkb::all_cases(), [](benchmark::State&, const nkb::Case&) {});
      benchmark::RunSpecifiedBenchmarks();
    }
    benchmark::Shutdown();
    return 0;
  }

  try {
    // CUDA_VISIBLE_DEVICES picks the GPU: the suite always runs on ordinal 0.
    nkb::Suite suite(0, nkb::settings_from_environment());
    nkb::add_to_benchmark_context(suite.context());
    suite.register_copy_benchmarks();
    nkb::register_cases(nkb::all_cases(), [&suite](benchmark::State& state, const nkb::Case& c) {
      suite.run_case(state, c);
    });
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "normkit_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
