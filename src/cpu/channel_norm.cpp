// CPU reference of batch, instance and group norm, forward and backward, plain and fused (an
// activation after the norm, a residual z added before it). One implementation serves the three:
// they differ only in which statistic an element (n, c, s) belongs to (c; n*C + c;
// n*G + c/(C/G)). Elements are visited in memory order for either layout; statistics are fp64
// Welford states, every sum is fp64, and each value is rounded once, when stored. The fused forms
// share the plain code path: the forward ends each element with u = v (+ z), y = act(u), which is
// v itself for the plain calls; the backward takes du = dy * act'(u) where the plain one takes dy,
// recomputing it per element in each pass (never stored for the whole tensor), so the scratch is
// the plain op's. Scratch memory comes from the context's workspace or one allocation made before
// anything is written.
#include <cmath>
#include <cstring>
#include <new>

#include "../backend.hpp"
#include "../dtype.hpp"
#include "../workspace.hpp"
#include "activation.hpp"
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

// Stores element i of the output from v, the norm's affine output: u = v (+ z_i), y_i = act(u)
// rounded once, and u > 0 as the mask bit. Without a fusion y_i is v rounded, as the plain calls
// store it. z_i is read before y_i is written (y may be z).
template <class T>
class Output {
 public:
  explicit Output(const ChannelForwardArgs& a)
      : y_(static_cast<T*>(a.y)),
        z_(static_cast<const T*>(a.z)),
        mask_(a.relu_mask),
        act_(a.fusion.activation) {
    if (mask_) std::memset(mask_, 0, static_cast<size_t>(relu_mask_bytes(a.shape)));
  }
  void store(int64_t i, double v) const {
    const double u = z_ ? v + to_double(z_[i]) : v;
    y_[i] = from_double<T>(activate(act_, u));
    if (mask_ && u > 0) set_mask_bit(mask_, i);
  }

 private:
  T* y_;
  const T* z_;
  uint32_t* mask_;
  nk_activation act_;
};

// y, the saved statistics and the running update from the statistics in w.stats.
template <class T>
void apply_training(const ChannelForwardArgs& a, const ForwardScratch& w) {
  const ChannelShape& s = a.shape;
  const T* x = static_cast<const T*>(a.x);
  const Output<T> out(a);
  for (int64_t k = 0; k < s.num_stats(); ++k) {
    w.invstd[k] = 1.0 / std::sqrt(w.stats[k].biased_var() + a.params.eps);
  }
  for_each_element(s, [&](int64_t i, int64_t c, int64_t k) {
    const double xhat = (to_double(x[i]) - w.stats[k].mean) * w.invstd[k];
    out.store(i, xhat * weight_at(a.weight, c) + bias_at(a.bias, c));
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
  const Output<T> out(a);
  for (int64_t c = 0; c < a.shape.c; ++c) {
    w.scale[c] = weight_at(a.weight, c) / std::sqrt(a.running_var[c] + a.params.eps);
    w.shift[c] = bias_at(a.bias, c) - a.running_mean[c] * w.scale[c];
  }
  for_each_element(a.shape, [&](int64_t i, int64_t c, int64_t) {
    out.store(i, to_double(x[i]) * w.scale[c] + w.shift[c]);
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

// du_i = dy_i * act'(u_i), the gradient that reaches the norm's output; dy_i itself without an
// activation. ReLU reads act'(u) from the forward's mask or its y; SiLU recomputes u from xhat
// (the caller's, from the statistics the phase uses), weight, bias and z.
template <class T>
class OutputGradient {
 public:
  explicit OutputGradient(const ChannelBackwardArgs& a)
      : a_(a),
        dy_(static_cast<const T*>(a.dy)),
        y_(static_cast<const T*>(a.y)),
        z_(static_cast<const T*>(a.z)) {}
  double at(int64_t i, int64_t c, double xhat) const {
    const double d = to_double(dy_[i]);
    switch (a_.fusion.activation) {
      case NK_ACTIVATION_RELU: {
        const bool active = a_.relu_mask ? mask_bit(a_.relu_mask, i) : to_double(y_[i]) > 0;
        return active ? d : 0.0;
      }
      case NK_ACTIVATION_SILU: {
        double u = xhat * weight_at(a_.weight, c) + bias_at(a_.bias, c);
        if (z_) u += to_double(z_[i]);
        return d * silu_slope(u);
      }
      case NK_ACTIVATION_IDENTITY:
        break;
    }
    return d;
  }

 private:
  const ChannelBackwardArgs& a_;
  const T* dy_;
  const T* y_;
  const T* z_;
};

template <class T>
void backward(const ChannelBackwardArgs& a, const BackwardScratch& w) {
  const ChannelShape& s = a.shape;
  const bool training = a.phase == NK_TRAINING;
  const T* x = static_cast<const T*>(a.x);
  const OutputGradient<T> grad_out(a);
  T* dx = static_cast<T*>(a.dx);
  T* dz = static_cast<T*>(a.dz);
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
    const double d = grad_out.at(i, c, xhat);
    if (training) {
      const double g = d * weight_at(a.weight, c);
      w.sum_g[k] += g;
      w.sum_gx[k] += g * xhat;
    }
    w.sum_dy[c] += d;
    w.sum_dyx[c] += d * xhat;
  });
  if (dx || dz) {
    // dy_i is read (for du_i) before dx_i or dz_i is written: either may be dy.
    const auto count = static_cast<double>(s.count_per_stat());
    for_each_element(s, [&](int64_t i, int64_t c, int64_t k) {
      const int64_t j = stat(c, k);
      const double xhat = (to_double(x[i]) - w.mean[j]) * w.invstd[j];
      const double du = grad_out.at(i, c, xhat);
      const double g = du * weight_at(a.weight, c);
      double grad = g * w.invstd[j];
      if (training) grad = w.invstd[j] * (g - w.sum_g[k] / count - xhat * w.sum_gx[k] / count);
      if (dx) dx[i] = from_double<T>(grad);
      if (dz) dz[i] = from_double<T>(du);
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
