#include "suite.hpp"

#include <cuda_profiler_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "bench_error.hpp"
#include "case_buffers.hpp"
#include "normkit_ops.hpp"
#include "timing.hpp"

namespace nkb {

const char* const kCopyKernelName = "copy/kernel_16B/1GiB";
const char* const kCopyMemcpyName = "copy/memcpy_d2d/1GiB";

namespace {

std::string fixed(double v, int decimals) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", decimals, v);
  return text;
}

}  // namespace

benchmark::internal::Benchmark* configure_benchmark(benchmark::internal::Benchmark* b) {
  return b->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
}

Settings settings_from_environment() {
  Settings s;
  if (const char* env = std::getenv("NORMKIT_BENCH_SAMPLES")) {
    const long v = std::strtol(env, nullptr, 10);
    if (v >= 5 && v <= 100000) s.samples = static_cast<int>(v);
  }
  if (const char* env = std::getenv("NORMKIT_BENCH_PROFILE")) {
    s.profile_first_call = std::strcmp(env, "1") == 0;
  }
  return s;
}

void register_cases(const std::vector<Case>& cases, const CaseBody& body) {
  for (const Case& c : cases) {
    configure_benchmark(benchmark::RegisterBenchmark(
        c.name().c_str(), [body, c](benchmark::State& state) { body(state, c); }));
  }
}

Suite::Suite(int device, const Settings& settings) : device_(device), settings_(settings) {
  try {
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check_nk(nk_context_create(NK_BACKEND_CUDA, device, &ctx_), "nk_context_create");
    check_nk(nk_context_set_stream(ctx_, stream_), "nk_context_set_stream");
    int l2_bytes = 0, sm_count = 0;
    check_cuda(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device), "L2 size");
    check_cuda(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device),
               "multiprocessor count");
    flush_ = std::make_unique<L2Flush>(static_cast<size_t>(l2_bytes), sm_count);
    int block_bytes = 0;
    check_cuda(cudaDeviceGetAttribute(&block_bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                      device),
               "shared memory per block");
    on_chip_ = OnChip{l2_bytes, block_bytes};
    cudnn_ = std::make_unique<CudnnBaseline>(stream_);
    Timer timer(stream_, *flush_);
    copy_ = measure_copy_bandwidth(timer, stream_, settings_.samples);
    // Read now, right after 2 x `samples` 1 GiB copies, the current clocks are those under load.
    device_facts_ = describe_device(device);
  } catch (...) {
    cudnn_.reset();
    flush_.reset();
    if (ctx_ != nullptr) nk_context_destroy(ctx_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    throw;
  }
}

Suite::~Suite() {
  cudnn_.reset();
  flush_.reset();
  nk_context_destroy(ctx_);
  cudaStreamDestroy(stream_);
}

ContextEntries Suite::context() const {
  ContextEntries e = device_facts_;
  e.emplace_back("cudnn_version", cudnn_->version());
  e.emplace_back("copy_kernel_GB_per_s", fixed(copy_.kernel_gb_per_s(), 1));
  e.emplace_back("copy_memcpy_GB_per_s", fixed(copy_.memcpy_gb_per_s(), 1));
  e.emplace_back("copy_reference_GB_per_s", fixed(copy_.reference_gb_per_s(), 1));
  e.emplace_back("copy_bytes_counted",
                 std::to_string(copy_.bytes) + " (1 GiB read + 1 GiB written)");
  e.emplace_back("timing", "median of " + std::to_string(settings_.samples) +
                               " timed launches per op, " + std::to_string(settings_.warmup) +
                               " warm-up rounds, L2 flushed (" +
                               std::to_string(flush_->bytes() >> 20) +
                               " MiB written and read back) before each; small set: median of " +
                               std::to_string(settings_.samples) + " samples of " +
                               std::to_string(settings_.calls_per_sample) + " back-to-back calls");
  e.emplace_back("bytes_counted",
                 "forward: x read + y written; backward: x, dy read + dx written; fused_rows: "
                 "+ residual read and h written (forward), + dh_extra read and dresidual written "
                 "(backward) with the residual add, fp8 y one byte an element; fused_channels: "
                 "+ z read (forward) and dz written (backward) with the residual add, + the ReLU "
                 "mask (4 * ceil(elements / 32) bytes) written by a training forward and read by "
                 "the backward");
  e.emplace_back("bytes_counted_s5",
                 "bytes_s5 and frac_of_copy_s5: DESIGN.md section 5's count, the one above plus, "
                 "for batch, instance and group norm, x (training forward) or x and dy "
                 "(backward) once more where they exceed the L2 (" +
                     std::to_string(on_chip_.l2_bytes) +
                     " bytes) and one statistic's share of them exceeds one block's shared "
                     "memory (" +
                     std::to_string(on_chip_.block_bytes) + " bytes)");
  e.emplace_back("cuda_device_ordinal", std::to_string(device_));
  e.emplace_back("normkit_version", std::to_string(nk_version()));
  e.emplace_back("normkit_commit", normkit_commit());
  return e;
}

void Suite::register_copy_benchmarks() {
  const auto entry = [this](const char* name, double seconds) {
    configure_benchmark(
        benchmark::RegisterBenchmark(name, [this, seconds](benchmark::State& state) {
          for (auto _ : state) state.SetIterationTime(seconds);
          const double gb_per_s = 1e-9 * static_cast<double>(copy_.bytes) / seconds;
          state.counters["bytes"] = static_cast<double>(copy_.bytes);
          state.counters["GB_per_s"] = gb_per_s;
          state.counters["frac_of_copy"] = gb_per_s / copy_.reference_gb_per_s();
          state.SetLabel("start-up measurement, the reference of frac_of_copy");
        }));
  };
  entry(kCopyKernelName, copy_.kernel_seconds);
  entry(kCopyMemcpyName, copy_.memcpy_seconds);
}

void Suite::run_case(benchmark::State& state, const Case& c) {
  try {
    measure(state, c);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void Suite::measure(benchmark::State& state, const Case& c) {
  CaseBuffers buffers = make_case_buffers(c, stream_);
  const ContextWorkspace workspace(ctx_, c);
  normkit_prepare(ctx_, c, buffers, stream_);
  std::vector<Launch> launches{normkit_launch(ctx_, c, buffers)};
  // One untimed normkit call first, so that a failure is reported as normkit's.
  if (settings_.profile_first_call) check_cuda(cudaProfilerStart(), "cudaProfilerStart");
  launches[0]();
  check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize after normkit's first call");
  if (settings_.profile_first_call) check_cuda(cudaProfilerStop(), "cudaProfilerStop");
  const BaselineCase baseline = cudnn_->prepare(c, buffers);
  if (baseline.launch) launches.push_back(baseline.launch);

  Timer timer(stream_, *flush_);
  const std::vector<Samples> samples =
      c.launch_bound ? timer.back_to_back(launches, settings_.calls_per_sample, settings_.samples,
                                          settings_.warmup)
                     : timer.cold(launches, settings_.samples, settings_.warmup);
  const double seconds = samples[0].median();
  if (!(seconds > 0)) throw BenchError("normkit's median time is 0: below the timer's resolution");
  for (auto _ : state) state.SetIterationTime(seconds);

  const double bytes = static_cast<double>(c.minimal_bytes());
  const double gb_per_s = 1e-9 * bytes / seconds;
  state.counters["bytes"] = bytes;
  state.counters["GB_per_s"] = gb_per_s;
  state.counters["frac_of_copy"] = gb_per_s / copy_.reference_gb_per_s();
  const double s5_bytes = static_cast<double>(c.section5_bytes(on_chip_));
  state.counters["bytes_s5"] = s5_bytes;
  state.counters["frac_of_copy_s5"] = 1e-9 * s5_bytes / seconds / copy_.reference_gb_per_s();
  // The spread of normkit's samples, (p90 - p10) / median: a large value flags a noisy case.
  state.counters["spread"] = (samples[0].quantile(0.9) - samples[0].quantile(0.1)) / seconds;
  if (c.launch_bound) state.counters["us_per_call"] = 1e6 * seconds;
  if (samples.size() > 1 && samples[1].median() > 0) {
    const double cudnn_seconds = samples[1].median();
    state.counters["cudnn_GB_per_s"] = 1e-9 * bytes / cudnn_seconds;
    state.counters["vs_cudnn"] = cudnn_seconds / seconds;
    if (c.launch_bound) state.counters["cudnn_us_per_call"] = 1e6 * cudnn_seconds;
  }
  state.SetLabel(baseline.note);
}

}  // namespace nkb
