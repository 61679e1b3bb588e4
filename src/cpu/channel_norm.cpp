// CPU reference of batch, instance and group norm, forward and backward. One implementation serves
// the three: they differ only in which statistic an element (n, c, s) belongs to (c; n*C + c;
// n*G + c/(C/G)). Elements are visited in memory order for either layout; statistics are fp64
// Welford states, every sum is fp64, and each value is rounded once, when stored. Scratch memory
// comes from the context's workspace or one allocation made before anything is written.
#include <cmath>
#include <new>

#include "../backend.hpp"
#include "../dtype.hpp"
#include "../workspace.hpp"
#include "elements.hpp"
#include "welford.hpp"

namespace nk::cpu {
namespace {

double weight_at(const float* weight, int64_t c) { return weight ? weight[c] : 1.0; }
double bias_at(const float* bias, int64_t c) { return bias ? bias[c] : 0.0; }

struct ForwardScratch {
  Welford* stats;  // training: [num_stats]
  double* invstd;  // training: [num_stats]
  double* scale;   // inference: [C]
  double* shift;   // inference: [C]
};

ForwardScratch carve(const ChannelForwardArgs& a, Carver& carver) {
  ForwardScratch w{};
  if (a.params.phase == NK_TRAINING) {
    w.stats = carver.take<Welford>(a.shape.num_stats());
    w.invstd = carver.take<double>(a.shape.num_stats());
  } else {
    w.scale = carver.take<double>(a.shape.c);
    w.shift = carver.take<double>(a.shape.c);
  }
  return w;
}

// Running statistics after a training step (PyTorch's order: the counter first, then momentum).
// Instance norm averages its per-instance statistics over the batch, channel by channel.
void update_running(const ChannelForwardArgs& a, const Welford* stats) {
  const ChannelShape& s = a.shape;
  if (a.num_batches_tracked) ++*a.num_batches_tracked;
  if (!a.running_mean) return;
  const double m = a.params.momentum_mode == NK_MOMENTUM_CUMULATIVE
                       ? 1.0 / static_cast<double>(*a.num_batches_tracked)
                       : a.params.momentum;
  const bool unbiased = a.params.running_var == NK_RUNNING_VAR_UNBIASED;
  const int64_t instances = s.kind == ChannelNorm::kInstance ? s.n : 1;
  for (int64_t c = 0; c < s.c; ++c) {
    double mean = 0, var = 0;
    for (int64_t n = 0; n < instances; ++n) {
      // The statistic's own count: the shard's, or the global batch's in synchronized batch norm.
      const Welford& st = stats[s.kind == ChannelNorm::kInstance ? n * s.c + c : c];
      const auto count = static_cast<double>(st.count);
      mean += st.mean;
      var += st.biased_var() * (unbiased ? count / (count - 1) : 1.0);
    }
    mean /= static_cast<double>(instances);
    var /= static_cast<double>(instances);
    a.running_mean[c] = static_cast<float>((1 - m) * a.running_mean[c] + m * mean);
    a.running_var[c] = static_cast<float>((1 - m) * a.running_var[c] + m * var);
  }
}

// y, the saved statistics and the running update from the statistics in w.stats.
template <class T>
void apply_training(const ChannelForwardArgs& a, const ForwardScratch& w) {
  const ChannelShape& s = a.shape;
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  for (int64_t k = 0; k < s.num_stats(); ++k) {
    w.invstd[k] = 1.0 / std::sqrt(w.stats[k].biased_var() + a.params.eps);
  }
  for_each_element(s, [&](int64_t i, int64_t c, int64_t k) {
    const double xhat = (to_double(x[i]) - w.stats[k].mean) * w.invstd[k];
    y[i] = from_double<T>(xhat * weight_at(a.weight, c) + bias_at(a.bias, c));
  });
  for (int64_t k = 0; k < s.num_stats(); ++k) {
    if (a.save_mean) a.save_mean[k] = static_cast<float>(w.stats[k].mean);
    if (a.save_invstd) a.save_invstd[k] = static_cast<float>(w.invstd[k]);
  }
  update_running(a, w.stats);
}

template <class T>
void forward_training(const ChannelForwardArgs& a, const ForwardScratch& w) {
  const T* x = static_cast<const T*>(a.x);
  for (int64_t k = 0; k < a.shape.num_stats(); ++k) new (&w.stats[k]) Welford();
  for_each_element(a.shape,
                   [&](int64_t i, int64_t, int64_t k) { w.stats[k].push(to_double(x[i])); });
  apply_training<T>(a, w);
}

// Frozen statistics fold into one scale and shift per channel.
template <class T>
void forward_inference(const ChannelForwardArgs& a, const ForwardScratch& w) {
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  for (int64_t c = 0; c < a.shape.c; ++c) {
    w.scale[c] = weight_at(a.weight, c) / std::sqrt(a.running_var[c] + a.params.eps);
    w.shift[c] = bias_at(a.bias, c) - a.running_mean[c] * w.scale[c];
  }
  for_each_element(a.shape, [&](int64_t i, int64_t c, int64_t) {
    y[i] = from_double<T>(to_double(x[i]) * w.scale[c] + w.shift[c]);
  });
}

struct BackwardScratch {
  double* mean;     // per stat (training) or per channel (inference)
  double* invstd;   // same
  double* sum_g;    // training: per stat, sum of g = dy * weight
  double* sum_gx;   // training: per stat, sum of g * xhat
  double* sum_dy;   // per channel
  double* sum_dyx;  // per channel, sum of dy * xhat
};

BackwardScratch carve(const ChannelBackwardArgs& a, Carver& carver) {
  const bool training = a.phase == NK_TRAINING;
  const int64_t stats = training ? a.shape.num_stats() : a.shape.c;
  BackwardScratch w{};
  w.mean = carver.take<double>(stats);
  w.invstd = carver.take<double>(stats);
  if (training) {
    w.sum_g = carver.take<double>(stats);
    w.sum_gx = carver.take<double>(stats);
  }
  w.sum_dy = carver.take<double>(a.shape.c);
  w.sum_dyx = carver.take<double>(a.shape.c);
  return w;
}

template <class T>
void backward(const ChannelBackwardArgs& a, const BackwardScratch& w) {
  const ChannelShape& s = a.shape;
  const bool training = a.phase == NK_TRAINING;
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);
  T* dx = static_cast<T*>(a.dx);
  const int64_t stats = training ? s.num_stats() : s.c;
  for (int64_t k = 0; k < stats; ++k) {
    w.mean[k] = training ? a.save_mean[k] : a.running_mean[k];
    w.invstd[k] = training ? a.save_invstd[k] : 1.0 / std::sqrt(a.running_var[k] + a.eps);
    if (training) w.sum_g[k] = w.sum_gx[k] = 0;
  }
  for (int64_t c = 0; c < s.c; ++c) w.sum_dy[c] = w.sum_dyx[c] = 0;
  // In inference the statistics are per channel: index them by c instead of the stat.
  auto stat = [&](int64_t c, int64_t k) { return training ? k : c; };

  for_each_element(s, [&](int64_t i, int64_t c, int64_t k) {
    const int64_t j = stat(c, k);
    const double xhat = (to_double(x[i]) - w.mean[j]) * w.invstd[j];
    const double d = to_double(dy[i]);
    if (training) {
      const double g = d * weight_at(a.weight, c);
      w.sum_g[k] += g;
      w.sum_gx[k] += g * xhat;
    }
    w.sum_dy[c] += d;
    w.sum_dyx[c] += d * xhat;
  });
  if (dx) {
    const auto count = static_cast<double>(s.count_per_stat());
    for_each_element(s, [&](int64_t i, int64_t c, int64_t k) {
      const int64_t j = stat(c, k);
      const double g = to_double(dy[i]) * weight_at(a.weight, c);
      double grad = g * w.invstd[j];
      if (training) {
        const double xhat = (to_double(x[i]) - w.mean[j]) * w.invstd[j];
        grad = w.invstd[j] * (g - w.sum_g[k] / count - xhat * w.sum_gx[k] / count);
      }
      dx[i] = from_double<T>(grad);
    });
  }
  for (int64_t c = 0; c < s.c; ++c) {
    if (a.dweight) a.dweight[c] = static_cast<float>(w.sum_dyx[c]);
    if (a.dbias) a.dbias[c] = static_cast<float>(w.sum_dy[c]);
  }
}

}  // namespace

size_t workspace_size(const nk_context_s&, const ChannelForwardArgs& a) {
  Carver carver;
  carve(a, carver);
  return carver.bytes();
}

size_t workspace_size(const nk_context_s&, const ChannelBackwardArgs& a) {
  Carver carver;
  carve(a, carver);
  return carver.bytes();
}

void run(const nk_context_s& ctx, const ChannelForwardArgs& a) {
  HostScratch memory(ctx, workspace_size(ctx, a));
  Carver carver(memory.data());
  const ForwardScratch w = carve(a, carver);
  dispatch_dtype(a.shape.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.params.phase == NK_TRAINING) {
      forward_training<T>(a, w);
    } else {
      forward_inference<T>(a, w);
    }
  });
}

void forward_global(const nk_context_s& ctx, const ChannelForwardArgs& a, int64_t count,
                    const float* mean, const float* m2) {
  HostScratch memory(ctx, workspace_size(ctx, a));
  Carver carver(memory.data());
  const ForwardScratch w = carve(a, carver);
  for (int64_t c = 0; c < a.shape.c; ++c) new (&w.stats[c]) Welford{count, mean[c], m2[c]};
  dispatch_dtype(a.shape.dtype, [&](auto tag) { apply_training<decltype(tag)>(a, w); });
}

void run(const nk_context_s& ctx, const ChannelBackwardArgs& a) {
  HostScratch memory(ctx, workspace_size(ctx, a));
  Carver carver(memory.data());
  const BackwardScratch w = carve(a, carver);
  dispatch_dtype(a.shape.dtype, [&](auto tag) { backward<decltype(tag)>(a, w); });
}

}  // namespace nk::cpu
