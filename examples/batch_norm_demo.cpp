// normkit demo: batch norm from training to inference, and why the phase must be explicit.
//
//  1. A few training steps on shifted random data (3 channels with known means and spreads):
//     the running statistics converge to the population's.
//  2. The switch to NK_INFERENCE: a single image is normalized with the frozen statistics.
//  3. What goes wrong without the switch: normalizing a batch of one with its own statistics
//     erases exactly what distinguishes the image;
//  4. and for a 2-D input normkit refuses outright.
//  5. Precise statistics: recompute the population statistics over the training data (not a
//     moving average), freeze them in a file, load them for inference, and watch a layer with a
//     different eps be refused.
//
// Uses the GPU when one is present, otherwise the CPU backend, and says which.
#include <cmath>
#include <cstdio>
#include <normkit/normkit.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#if NORMKIT_DEMO_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

// Values the context can use: host memory on the CPU backend, a device copy on the GPU.
template <class T>
class Array {
 public:
  Array(std::vector<T> values, bool on_gpu) : host_(std::move(values)), on_gpu_(on_gpu) {
#if NORMKIT_DEMO_WITH_CUDA
    if (on_gpu_) {
      cudaMalloc(reinterpret_cast<void**>(&device_), host_.size() * sizeof(T));
      cudaMemcpy(device_, host_.data(), host_.size() * sizeof(T), cudaMemcpyHostToDevice);
    }
#endif
  }
  ~Array() {
#if NORMKIT_DEMO_WITH_CUDA
    if (device_) cudaFree(device_);
#endif
  }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;

  T* data() { return on_gpu_ ? device_ : host_.data(); }
  // The current values, copied back from the GPU when there.
  const std::vector<T>& values() {
#if NORMKIT_DEMO_WITH_CUDA
    if (on_gpu_)
      cudaMemcpy(host_.data(), device_, host_.size() * sizeof(T), cudaMemcpyDeviceToHost);
#endif
    return host_;
  }

 private:
  std::vector<T> host_;
  bool on_gpu_;
  T* device_ = nullptr;
};

constexpr int kChannels = 3;
const double kTrueMean[kChannels] = {5.0, -2.0, 10.0};
const double kTrueStd[kChannels] = {2.0, 0.5, 3.0};

// An N x C x S batch (NCHW) whose channel c is Normal(kTrueMean[c] + shift * kTrueStd[c],
// kTrueStd[c]).
std::vector<float> make_batch(std::mt19937& rng, int n, int s, double shift = 0.0) {
  std::vector<float> x(static_cast<size_t>(n) * kChannels * s);
  std::normal_distribution<double> unit(0.0, 1.0);
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < kChannels; ++c)
      for (int j = 0; j < s; ++j)
        x[(static_cast<size_t>(i) * kChannels + c) * s + j] =
            static_cast<float>(kTrueMean[c] + kTrueStd[c] * (shift + unit(rng)));
  return x;
}

double channel_mean(const std::vector<float>& y, int c, int s) {
  double sum = 0;
  for (int j = 0; j < s; ++j) sum += y[static_cast<size_t>(c) * s + j];
  const double mean = sum / s;
  return std::fabs(mean) < 0.005 ? 0.0 : mean;  // print rounding noise as 0.00, not -0.00
}

// A CUDA context if a GPU is there; the CPU backend otherwise.
nk::Context choose_backend(bool& on_gpu) {
  on_gpu = false;
  try {
    nk::Context gpu = nk::Context::cuda(0);
    on_gpu = true;
    std::printf("Running on the GPU (CUDA backend).\n\n");
    return gpu;
  } catch (const nk::Error& e) {
    std::printf("No GPU: %s\n=> running on the CPU backend.\n\n", e.what());
    return nk::Context::cpu();
  }
}

}  // namespace

int main() {
  try {
    bool gpu = false;
    nk::Context ctx = choose_backend(gpu);
    std::mt19937 rng(2026);
    const int batch = 32, spatial = 16;  // 32 images of 4x4 pixels
    const size_t batch_elems = static_cast<size_t>(batch) * kChannels * spatial;
    const size_t image_elems = static_cast<size_t>(kChannels) * spatial;

    Array<float> weight(std::vector<float>(kChannels, 1.0f), gpu);
    Array<float> bias(std::vector<float>(kChannels, 0.0f), gpu);
    Array<float> running_mean(std::vector<float>(kChannels, 0.0f), gpu);
    Array<float> running_var(std::vector<float>(kChannels, 1.0f), gpu);
    Array<int64_t> batches_seen(std::vector<int64_t>(1, 0), gpu);
    Array<float> y(std::vector<float>(batch_elems), gpu);
    nk_norm_params train = nk_norm_params_default();  // PyTorch: eps 1e-5, momentum 0.1

    std::printf("1. Training: running statistics approach the population's\n");
    std::printf("   true mean %6.2f %6.2f %6.2f   true var %6.2f %6.2f %6.2f\n", kTrueMean[0],
                kTrueMean[1], kTrueMean[2], kTrueStd[0] * kTrueStd[0], kTrueStd[1] * kTrueStd[1],
                kTrueStd[2] * kTrueStd[2]);
    for (int step = 1; step <= 60; ++step) {
      Array<float> x(make_batch(rng, batch, spatial), gpu);
      nk::batch_norm_forward(ctx, nk::Shape{batch, kChannels, spatial}, train, x.data(),
                             weight.data(), bias.data(), running_mean.data(), running_var.data(),
                             batches_seen.data(), y.data(), nullptr, nullptr);
      if (step == 1 || step == 5 || step % 20 == 0) {
        const std::vector<float>& m = running_mean.values();
        const std::vector<float>& v = running_var.values();
        std::printf("   step %2d:  mean %6.2f %6.2f %6.2f        var %6.2f %6.2f %6.2f\n", step,
                    m[0], m[1], m[2], v[0], v[1], v[2]);
      }
    }
    std::printf("   num_batches_tracked = %lld\n\n",
                static_cast<long long>(batches_seen.values()[0]));

    // Two single images: one typical, one brighter by two standard deviations in every channel.
    Array<float> typical(make_batch(rng, 1, spatial, 0.0), gpu);
    Array<float> bright(make_batch(rng, 1, spatial, 2.0), gpu);
    const nk::Shape one{1, kChannels, spatial};
    const nk_act_desc one_desc{1, kChannels, spatial, NK_NCHW, NK_F32};
    Array<float> out(std::vector<float>(image_elems), gpu);
    auto report = [&](const char* label) {
      const std::vector<float>& o = out.values();
      std::printf("   %-8s image: mean of normalized channels %6.2f %6.2f %6.2f\n", label,
                  channel_mean(o, 0, spatial), channel_mean(o, 1, spatial),
                  channel_mean(o, 2, spatial));
    };

    std::printf("2. Inference (NK_INFERENCE, frozen running statistics), one image at a time:\n");
    nk_norm_params infer = train;
    infer.phase = NK_INFERENCE;
    for (auto [image, label] : {std::pair{&typical, "typical"}, std::pair{&bright, "bright"}}) {
      nk::batch_norm_forward(ctx, one, infer, image->data(), weight.data(), bias.data(),
                             running_mean.data(), running_var.data(), nullptr, out.data(), nullptr,
                             nullptr);
      report(label);
    }
    std::printf("   The bright image stands out by about +2, as it should.\n\n");

    std::printf(
        "3. The mismatch: the same single images normalized with their own (batch)\n"
        "   statistics, as a model left in training mode would do:\n");
    for (auto [image, label] : {std::pair{&typical, "typical"}, std::pair{&bright, "bright"}}) {
      nk::batch_norm_forward(ctx, one, train, image->data(), weight.data(), bias.data(), nullptr,
                             nullptr, nullptr, out.data(), nullptr, nullptr);
      report(label);
    }
    std::printf(
        "   Both come out at 0: the batch statistics erased what made the bright image\n"
        "   different. Predictions made this way differ from training's.\n\n");

    std::printf(
        "4. A batch of one 2-D sample (N=1, S=1) in training has one value per channel;\n"
        "   normkit refuses it instead of returning zeros:\n");
    Array<float> sample(std::vector<float>{5.0f, -2.0f, 10.0f}, gpu);
    Array<float> sample_out(std::vector<float>(3), gpu);
    try {
      nk::batch_norm_forward(ctx, nk::Shape{1, kChannels, 1}, train, sample.data(), nullptr,
                             nullptr, running_mean.data(), running_var.data(), batches_seen.data(),
                             sample_out.data(), nullptr, nullptr);
      std::printf("   unexpectedly accepted\n");
      return 1;
    } catch (const nk::Error& e) {
      std::printf("   %s: %s\n", nk_status_name(e.status()), e.what());
      std::printf("   (and running statistics untouched: num_batches_tracked is still %lld)\n",
                  static_cast<long long>(batches_seen.values()[0]));
    }

    std::printf(
        "\n5. Precise statistics: accumulate exact per-channel statistics over 20 training\n"
        "   batches (on the %s), freeze them in a file, load them for inference:\n",
        gpu ? "GPU" : "CPU");
    nk::Stats stats(ctx, kChannels);
    for (int i = 0; i < 20; ++i) {
      Array<float> x(make_batch(rng, batch, spatial), gpu);
      stats.add_channels(nk::Shape{batch, kChannels, spatial}, x.data());
    }
    Array<float> center_out(std::vector<float>(kChannels), gpu);
    Array<float> spread_out(std::vector<float>(kChannels), gpu);
    stats.finalize(center_out.data(), nullptr, spread_out.data());  // unbiased, as running_var
    std::vector<float> center = center_out.values(), spread = spread_out.values();
    std::printf(
        "   exact mean %6.2f %6.2f %6.2f        var %6.2f %6.2f %6.2f  (%lld values each)\n",
        center[0], center[1], center[2], spread[0], spread[1], spread[2],
        static_cast<long long>(stats.count()));
    nk_frozen_stats frozen{NK_STATS_BATCH_NORM, NK_F32,    NK_RUNNING_VAR_UNBIASED, kChannels,
                           stats.count(),       infer.eps, center.data(),           spread.data()};
    const std::string path = "normkit_demo_bn.nkstats";
    nk::check(nk_frozen_stats_save(path.c_str(), &frozen));
    nk_frozen_stats loaded{};
    nk::check(nk_frozen_stats_load(path.c_str(), &loaded));
    std::remove(path.c_str());
    Array<float> image(make_batch(rng, 1, spatial, 2.0), gpu);
    Array<float> image_out(std::vector<float>(image_elems), gpu);
    nk::check(nk_batch_norm_forward_frozen(ctx, &one_desc, &infer, &loaded, image.data(), nullptr,
                                           nullptr, image_out.data()));
    const std::vector<float>& normalized = image_out.values();
    std::printf("   saved, loaded, applied: the bright image comes out at %6.2f %6.2f %6.2f\n",
                channel_mean(normalized, 0, spatial), channel_mean(normalized, 1, spatial),
                channel_mean(normalized, 2, spatial));
    nk_norm_params other_eps = infer;
    other_eps.eps = 1e-3;
    const nk_status st = nk_batch_norm_forward_frozen(
        ctx, &one_desc, &other_eps, &loaded, image.data(), nullptr, nullptr, image_out.data());
    std::printf("   a layer with eps 1e-3 is refused: %s: %s\n", nk_status_name(st),
                nk_last_error());
    nk_frozen_stats_release(&loaded);
    return 0;
  } catch (const nk::Error& e) {
    std::fprintf(stderr, "normkit error: %s\n", e.what());
    return 1;
  }
}
