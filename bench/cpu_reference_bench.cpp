// Throughput of the CPU reference backend (the backend a GPU-less CI runs): forward and backward
// of batch norm (both layouts) and layer norm in fp32. Reports bytes moved at the minimum the op
// needs (read x [and dy], write y or dx) per second, as the GPU benchmarks will.
#include <benchmark/benchmark.h>
#include <normkit/normkit.h>

#include <cstdint>
#include <vector>

namespace {

struct Ctx {
  nk_context ctx = nullptr;
  Ctx() { nk_context_create(NK_BACKEND_CPU, 0, &ctx); }
  ~Ctx() { nk_context_destroy(ctx); }
};

void report(benchmark::State& state, nk_status st, int64_t bytes_per_iter) {
  if (st != NK_SUCCESS) state.SkipWithError(nk_last_error());
  state.SetBytesProcessed(state.iterations() * bytes_per_iter);
}

void BatchNormForwardTraining(benchmark::State& state) {
  Ctx c;
  const nk_act_desc d{state.range(0), state.range(1), state.range(2),
                      static_cast<nk_layout>(state.range(3)), NK_F32};
  const int64_t numel = d.n * d.c * d.spatial;
  std::vector<float> x(static_cast<size_t>(numel), 1.5f), y(x.size());
  std::vector<float> rm(static_cast<size_t>(d.c), 0.f), rv(rm.size(), 1.f), mean(rm.size()),
      invstd(rm.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) * 0.01f;
  const nk_norm_params p = nk_norm_params_default();
  nk_status st = NK_SUCCESS;
  for (auto _ : state) {
    st = nk_batch_norm_forward(c.ctx, &d, &p, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                               nullptr, y.data(), mean.data(), invstd.data());
    benchmark::DoNotOptimize(y.data());
  }
  report(state, st, 2 * numel * 4);
}

void BatchNormBackwardTraining(benchmark::State& state) {
  Ctx c;
  const nk_act_desc d{state.range(0), state.range(1), state.range(2),
                      static_cast<nk_layout>(state.range(3)), NK_F32};
  const int64_t numel = d.n * d.c * d.spatial;
  std::vector<float> x(static_cast<size_t>(numel)), dy(x.size()), dx(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = dy[x.size() - 1 - i] = static_cast<float>(i % 89) * 0.01f;
  std::vector<float> mean(static_cast<size_t>(d.c), 0.4f), invstd(mean.size(), 2.f),
      dw(mean.size()), db(mean.size());
  const nk_norm_params p = nk_norm_params_default();
  nk_status st = NK_SUCCESS;
  for (auto _ : state) {
    st = nk_batch_norm_backward(c.ctx, &d, &p, x.data(), dy.data(), nullptr, nullptr, nullptr,
                                mean.data(), invstd.data(), dx.data(), dw.data(), db.data());
    benchmark::DoNotOptimize(dx.data());
  }
  report(state, st, 3 * numel * 4);
}

void LayerNormForward(benchmark::State& state) {
  Ctx c;
  const nk_row_desc d{state.range(0), state.range(1), NK_F32, NK_F32};
  std::vector<float> x(static_cast<size_t>(d.rows * d.cols)), y(x.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 101) * 0.02f;
  std::vector<float> mean(static_cast<size_t>(d.rows)), rstd(mean.size());
  nk_status st = NK_SUCCESS;
  for (auto _ : state) {
    st = nk_layer_norm_forward(c.ctx, &d, 1e-5, x.data(), nullptr, nullptr, y.data(), mean.data(),
                               rstd.data());
    benchmark::DoNotOptimize(y.data());
  }
  report(state, st, 2 * d.rows * d.cols * 4);
}

void LayerNormBackward(benchmark::State& state) {
  Ctx c;
  const nk_row_desc d{state.range(0), state.range(1), NK_F32, NK_F32};
  std::vector<float> x(static_cast<size_t>(d.rows * d.cols)), dy(x.size()), dx(x.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = dy[i] = static_cast<float>(i % 101) * 0.02f;
  std::vector<float> mean(static_cast<size_t>(d.rows), 1.f), rstd(mean.size(), 1.f);
  std::vector<float> w(static_cast<size_t>(d.cols), 1.f), dw(w.size()), db(w.size());
  nk_status st = NK_SUCCESS;
  for (auto _ : state) {
    st = nk_layer_norm_backward(c.ctx, &d, x.data(), dy.data(), w.data(), mean.data(), rstd.data(),
                                dx.data(), dw.data(), db.data());
    benchmark::DoNotOptimize(dx.data());
  }
  report(state, st, 3 * d.rows * d.cols * 4);
}

// N, C, S, layout (0 NCHW, 1 NHWC): a ResNet-like layer at batch 8.
BENCHMARK(BatchNormForwardTraining)
    ->Args({8, 64, 56 * 56, 0})
    ->Args({8, 64, 56 * 56, 1})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BatchNormBackwardTraining)
    ->Args({8, 64, 56 * 56, 0})
    ->Args({8, 64, 56 * 56, 1})
    ->Unit(benchmark::kMillisecond);
// rows, cols: a transformer activation.
BENCHMARK(LayerNormForward)->Args({2048, 1024})->Unit(benchmark::kMillisecond);
BENCHMARK(LayerNormBackward)->Args({2048, 1024})->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
