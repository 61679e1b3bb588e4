// Synchronized batch norm: the C entry points of the two-phase API in normkit.h and of its NCCL
// path. Validation is shared; the CPU backend computes here (fp64 reductions of the shard, Chan's
// merge in rank order, so every rank that merges the same partials gets the same bits, and the
// ordinary training forward with the merged statistics); the CUDA backend runs
// src/cuda/sync_batch_norm.cpp. Counts live in the context's memory like every other argument: the
// CPU backend reads and checks them, the CUDA backend leaves them on the device (see normkit.h for
// what the device does with an invalid one).
#include <normkit/normkit.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "backend.hpp"
#include "cpu/elements.hpp"
#include "cpu/welford.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "validate.hpp"

namespace nk {
namespace {

nk_context_s& require_context(nk_context ctx) {
  require_pointer(ctx, "ctx");
  return *ctx;
}

bool on_gpu(const nk_context_s& ctx) { return ctx.backend == NK_BACKEND_CUDA; }

Span workspace_of(const nk_context_s& ctx) { return Span{ctx.workspace, ctx.workspace_bytes}; }

int64_t act_bytes(const ChannelShape& s) {
  return s.numel() * static_cast<int64_t>(dtype_size(s.dtype));
}

// The global count a CPU call reads from host memory, checked against this shard.
int64_t host_count(const int64_t* global_count, const ChannelShape& s, int64_t minimum) {
  const int64_t count = *global_count;
  if (count < minimum || count < s.count_per_stat()) {
    fail(NK_ERROR_INVALID_VALUE, "*global_count = ", count, ": expected >= ", minimum,
         " and >= this shard's ", s.count_per_stat(), " values per channel");
  }
  return count;
}

void local_stats_cpu(const ChannelShape& s, const void* x, int64_t* count, float* mean, float* m2) {
  std::vector<cpu::Welford> st(static_cast<size_t>(s.c));
  dispatch_dtype(s.dtype, [&](auto tag) {
    const auto* v = static_cast<const decltype(tag)*>(x);
    cpu::for_each_element(s, [&](int64_t i, int64_t c, int64_t) { st[c].push(to_double(v[i])); });
  });
  *count = s.n * s.s;
  for (int64_t c = 0; c < s.c; ++c) {
    mean[c] = static_cast<float>(st[c].mean);
    m2[c] = static_cast<float>(st[c].m2);
  }
}

void merge_stats_cpu(int64_t ranks, int64_t channels, const int64_t* counts, const float* means,
                     const float* m2s, int64_t* total_count, float* mean, float* m2) {
  int64_t total = 0;
  for (int64_t r = 0; r < ranks; ++r) {
    if (counts[r] < 0) {
      fail(NK_ERROR_INVALID_VALUE, "counts[", r, "] = ", counts[r], ": expected >= 0");
    }
    if (__builtin_add_overflow(total, counts[r], &total)) {
      fail(NK_ERROR_INVALID_VALUE, "the counts add up past int64 at counts[", r, "] = ", counts[r]);
    }
  }
  if (total == 0) fail(NK_ERROR_INVALID_VALUE, "every rank has 0 samples: no statistics to merge");
  std::vector<cpu::Welford> merged(static_cast<size_t>(channels));
  for (int64_t r = 0; r < ranks; ++r) {  // rank order; empty ranks add nothing
    for (int64_t c = 0; c < channels; ++c) {
      merged[c].merge(cpu::Welford{counts[r], means[r * channels + c], m2s[r * channels + c]});
    }
  }
  *total_count = total;
  for (int64_t c = 0; c < channels; ++c) {
    mean[c] = static_cast<float>(merged[c].mean);
    m2[c] = static_cast<float>(merged[c].m2);
  }
}

void local_sums_cpu(const ChannelShape& s, const void* x, const void* dy, const float* save_mean,
                    const float* save_invstd, float* sum_dy, float* sum_dy_xhat) {
  std::vector<double> d(static_cast<size_t>(s.c), 0.0), dx(static_cast<size_t>(s.c), 0.0);
  dispatch_dtype(s.dtype, [&](auto tag) {
    const auto* xv = static_cast<const decltype(tag)*>(x);
    const auto* g = static_cast<const decltype(tag)*>(dy);
    cpu::for_each_element(s, [&](int64_t i, int64_t c, int64_t) {
      const double grad = to_double(g[i]);
      d[c] += grad;
      dx[c] += grad * (to_double(xv[i]) - save_mean[c]) * save_invstd[c];
    });
  });
  for (int64_t c = 0; c < s.c; ++c) {
    sum_dy[c] = static_cast<float>(d[c]);
    sum_dy_xhat[c] = static_cast<float>(dx[c]);
  }
}

void backward_global_cpu(const ChannelBackwardArgs& a, int64_t global_count, const float* sum_dy,
                         const float* sum_dy_xhat) {
  const auto count = static_cast<double>(global_count);
  dispatch_dtype(a.shape.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* xv = static_cast<const T*>(a.x);
    const T* g = static_cast<const T*>(a.dy);
    T* out = static_cast<T*>(a.dx);
    cpu::for_each_element(a.shape, [&](int64_t i, int64_t c, int64_t) {
      const double invstd = a.save_invstd[c], w = a.weight ? a.weight[c] : 1.0;
      const double xhat = (to_double(xv[i]) - a.save_mean[c]) * invstd;
      out[i] = from_double<T>(
          w * invstd * (to_double(g[i]) - sum_dy[c] / count - xhat * sum_dy_xhat[c] / count));
    });
  });
}

// The forward arguments of a shard, checked (everything but the global statistics).
ChannelForwardArgs forward_args(const nk_context_s& ctx, const ChannelShape& shape,
                                const nk_norm_params* params, const void* x, const float* weight,
                                const float* bias, float* running_mean, float* running_var,
                                int64_t* num_batches_tracked, void* y, float* save_mean,
                                float* save_invstd) {
  require_pointer(params, "params");
  const ChannelForwardArgs a{shape, *params,      x,           weight,
                             bias,  running_mean, running_var, num_batches_tracked,
                             y,     save_mean,    save_invstd, ChannelFusion{},
                             nullptr, nullptr};
  validate_global(a, ctx);
  return a;
}

// The backward arguments of a shard, checked: training with the saved statistics.
ChannelBackwardArgs backward_args(const nk_context_s& ctx, const ChannelShape& shape, const void* x,
                                  const void* dy, const float* weight, const float* save_mean,
                                  const float* save_invstd, void* dx, float* dweight,
                                  float* dbias) {
  const ChannelBackwardArgs a{shape,   NK_TRAINING, 0.0,         x,  dy,      weight, nullptr,
                              nullptr, save_mean,   save_invstd, dx, dweight, dbias,
                              ChannelFusion{}, nullptr, nullptr, nullptr, nullptr, nullptr};
  validate_buffers(a, workspace_of(ctx));
  return a;
}

}  // namespace
}  // namespace nk

extern "C" {

nk_status nk_batch_norm_local_stats(nk_context ctx, const nk_act_desc* desc, const void* x,
                                    int64_t* count, float* mean, float* m2) {
  return nk::guard("nk_batch_norm_local_stats", [&] {
    const nk_context_s& c = nk::require_context(ctx);
    const nk::ChannelShape s = nk::shard_shape(desc);
    if (s.numel() > 0) nk::require_elements(x, s.dtype, "x");
    nk::require_pointer(count, "count");
    nk::require_pointer(mean, "mean");
    nk::require_pointer(m2, "m2");
    const int64_t elem = static_cast<int64_t>(nk::dtype_size(s.dtype)), per_channel = s.c * 4;
    nk::check_buffers({{x, s.numel() * elem, "x", false, elem},
                       {count, 8, "count", true, 8},
                       {mean, per_channel, "mean", true, 4},
                       {m2, per_channel, "m2", true, 4}},
                      nk::workspace_of(c));
    if (nk::on_gpu(c)) {
      nk::cuda::sync_local_stats(c, s, x, count, mean, m2);
    } else {
      nk::local_stats_cpu(s, x, count, mean, m2);
    }
  });
}

nk_status nk_batch_norm_merge_stats(nk_context ctx, int64_t ranks, int64_t channels,
                                    const int64_t* counts, const float* means, const float* m2s,
                                    int64_t* total_count, float* mean, float* m2) {
  return nk::guard("nk_batch_norm_merge_stats", [&] {
    const nk_context_s& c = nk::require_context(ctx);
    if (ranks < 1) nk::fail(NK_ERROR_BAD_SHAPE, "ranks = ", ranks, ": expected >= 1");
    if (channels < 1) nk::fail(NK_ERROR_BAD_SHAPE, "channels = ", channels, ": expected >= 1");
    for (auto [p, name] : {std::pair<const void*, const char*>{counts, "counts"},
                           {means, "means"},
                           {m2s, "m2s"},
                           {total_count, "total_count"},
                           {mean, "mean"},
                           {m2, "m2"}}) {
      nk::require_pointer(p, name);
    }
    const int64_t entries =
        nk::checked_count({ranks, channels}, "means and m2s (ranks x channels)");
    nk::check_buffers({{counts, ranks * 8, "counts", false, 8},
                       {means, entries * 4, "means", false, 4},
                       {m2s, entries * 4, "m2s", false, 4},
                       {total_count, 8, "total_count", true, 8},
                       {mean, channels * 4, "mean", true, 4},
                       {m2, channels * 4, "m2", true, 4}},
                      nk::workspace_of(c));
    if (nk::on_gpu(c)) {
      nk::cuda::sync_merge_stats(c, ranks, channels, counts, means, m2s, total_count, mean, m2);
    } else {
      nk::merge_stats_cpu(ranks, channels, counts, means, m2s, total_count, mean, m2);
    }
  });
}

nk_status nk_batch_norm_forward_global(nk_context ctx, const nk_act_desc* desc,
                                       const nk_norm_params* params, const int64_t* global_count,
                                       const float* global_mean, const float* global_m2,
                                       const void* x, const float* weight, const float* bias,
                                       float* running_mean, float* running_var,
                                       int64_t* num_batches_tracked, void* y, float* save_mean,
                                       float* save_invstd) {
  return nk::guard("nk_batch_norm_forward_global", [&] {
    const nk_context_s& c = nk::require_context(ctx);
    nk::require_pointer(global_count, "global_count");
    nk::require_pointer(global_mean, "global_mean");
    nk::require_pointer(global_m2, "global_m2");
    const nk::ChannelForwardArgs a =
        nk::forward_args(c, nk::shard_shape(desc), params, x, weight, bias, running_mean,
                         running_var, num_batches_tracked, y, save_mean, save_invstd);
    // The global statistics are read while the outputs and the workspace are written.
    const int64_t per_channel = a.shape.c * 4;
    nk::check_buffers({{global_count, 8, "global_count", false, 8},
                       {global_mean, per_channel, "global_mean", false, 4},
                       {global_m2, per_channel, "global_m2", false, 4},
                       {y, nk::act_bytes(a.shape), "y", true, 1},
                       {running_mean, per_channel, "running_mean", true, 4},
                       {running_var, per_channel, "running_var", true, 4},
                       {num_batches_tracked, 8, "num_batches_tracked", true, 8},
                       {save_mean, per_channel, "save_mean", true, 4},
                       {save_invstd, per_channel, "save_invstd", true, 4}},
                      nk::workspace_of(c));
    if (nk::on_gpu(c)) {
      nk::cuda::sync_forward_global(c, a, global_count, global_mean, global_m2);
    } else {
      const int64_t count = nk::host_count(global_count, a.shape, 2);
      nk::cpu::forward_global(c, a, count, global_mean, global_m2);
    }
  });
}

nk_status nk_batch_norm_backward_local_sums(nk_context ctx, const nk_act_desc* desc, const void* x,
                                            const void* dy, const float* save_mean,
                                            const float* save_invstd, float* sum_dy,
                                            float* sum_dy_xhat) {
  return nk::guard("nk_batch_norm_backward_local_sums", [&] {
    const nk_context_s& c = nk::require_context(ctx);
    const nk::ChannelShape s = nk::shard_shape(desc);
    if (s.numel() > 0) {
      nk::require_elements(x, s.dtype, "x");
      nk::require_elements(dy, s.dtype, "dy");
    }
    for (auto [p, name] : {std::pair<const void*, const char*>{save_mean, "save_mean"},
                           {save_invstd, "save_invstd"},
                           {sum_dy, "sum_dy"},
                           {sum_dy_xhat, "sum_dy_xhat"}}) {
      nk::require_pointer(p, name);
    }
    const int64_t elem = static_cast<int64_t>(nk::dtype_size(s.dtype)), per_channel = s.c * 4;
    nk::check_buffers({{x, s.numel() * elem, "x", false, elem},
                       {dy, s.numel() * elem, "dy", false, elem},
                       {save_mean, per_channel, "save_mean", false, 4},
                       {save_invstd, per_channel, "save_invstd", false, 4},
                       {sum_dy, per_channel, "sum_dy", true, 4},
                       {sum_dy_xhat, per_channel, "sum_dy_xhat", true, 4}},
                      nk::workspace_of(c));
    if (nk::on_gpu(c) && s.n == 0) {
      nk::cuda::sync_zero_sums(c, s.c, sum_dy, sum_dy_xhat);
    } else if (nk::on_gpu(c)) {
      // The training backward's dbias and dweight are exactly these sums.
      const nk::ChannelBackwardArgs a{s,       NK_TRAINING, 0.0,     x,         dy,
                                      nullptr, nullptr,     nullptr, save_mean, save_invstd,
                                      nullptr, sum_dy_xhat, sum_dy,
                                      nk::ChannelFusion{}, nullptr, nullptr, nullptr, nullptr,
                                      nullptr};
      nk::run(c, a);
    } else {
      nk::local_sums_cpu(s, x, dy, save_mean, save_invstd, sum_dy, sum_dy_xhat);
    }
  });
}

nk_status nk_batch_norm_backward_global(nk_context ctx, const nk_act_desc* desc,
                                        const int64_t* global_count, const float* sum_dy,
                                        const float* sum_dy_xhat, const void* x, const void* dy,
                                        const float* weight, const float* save_mean,
                                        const float* save_invstd, void* dx) {
  return nk::guard("nk_batch_norm_backward_global", [&] {
    const nk_context_s& c = nk::require_context(ctx);
    nk::require_pointer(global_count, "global_count");
    nk::require_pointer(sum_dy, "sum_dy");
    nk::require_pointer(sum_dy_xhat, "sum_dy_xhat");
    nk::require_pointer(dx, "dx");
    const nk::ChannelBackwardArgs a = nk::backward_args(
        c, nk::shard_shape(desc), x, dy, weight, save_mean, save_invstd, dx, nullptr, nullptr);
    nk::check_buffers({{global_count, 8, "global_count", false, 8},
                       {sum_dy, a.shape.c * 4, "sum_dy", false, 4},
                       {sum_dy_xhat, a.shape.c * 4, "sum_dy_xhat", false, 4},
                       {dx, nk::act_bytes(a.shape), "dx", true, 1}},
                      nk::workspace_of(c));
    if (nk::on_gpu(c)) {
      nk::cuda::sync_backward_global(c, a, global_count, sum_dy, sum_dy_xhat);
    } else {
      nk::backward_global_cpu(a, nk::host_count(global_count, a.shape, 1), sum_dy, sum_dy_xhat);
    }
  });
}

nk_status nk_sync_batch_norm_forward_workspace_size(nk_context ctx, void* nccl_comm,
                                                    const nk_act_desc* desc,
                                                    const nk_norm_params* params, size_t* bytes) {
  return nk::guard("nk_sync_batch_norm_forward_workspace_size", [&] {
    const nk_context_s& c = nk::require_context(ctx);
    nk::require_pointer(nccl_comm, "nccl_comm");
    nk::require_pointer(bytes, "bytes");
    const nk::ChannelShape s = nk::shard_shape(desc);
    nk::validate_global_params(params);  // not read: the size depends on the shape alone
    if (!nk::on_gpu(c)) {
      nk::fail(NK_ERROR_NOT_SUPPORTED, "the NCCL path runs on CUDA contexts only");
    }
    *bytes = nk::cuda::nccl_forward_workspace_size(c, nccl_comm, s);
  });
}

nk_status nk_sync_batch_norm_forward(nk_context ctx, void* nccl_comm, const nk_act_desc* desc,
                                     const nk_norm_params* params, const void* x,
                                     const float* weight, const float* bias, float* running_mean,
                                     float* running_var, int64_t* num_batches_tracked, void* y,
                                     float* save_mean, float* save_invstd) {
  return nk::guard("nk_sync_batch_norm_forward", [&] {
    const nk_context_s& c = nk::require_context(ctx);
    nk::require_pointer(nccl_comm, "nccl_comm");
    const nk::ChannelForwardArgs a =
        nk::forward_args(c, nk::shard_shape(desc), params, x, weight, bias, running_mean,
                         running_var, num_batches_tracked, y, save_mean, save_invstd);
    if (!nk::on_gpu(c)) {
      nk::fail(NK_ERROR_NOT_SUPPORTED, "the NCCL path runs on CUDA contexts only");
    }
    nk::cuda::nccl_forward(c, nccl_comm, a);
  });
}

nk_status nk_sync_batch_norm_backward_workspace_size(nk_context ctx, void* nccl_comm,
                                                     const nk_act_desc* desc, size_t* bytes) {
  return nk::guard("nk_sync_batch_norm_backward_workspace_size", [&] {
    const nk_context_s& c = nk::require_context(ctx);
    nk::require_pointer(nccl_comm, "nccl_comm");
    nk::require_pointer(bytes, "bytes");
    const nk::ChannelShape s = nk::shard_shape(desc);
    if (!nk::on_gpu(c)) {
      nk::fail(NK_ERROR_NOT_SUPPORTED, "the NCCL path runs on CUDA contexts only");
    }
    const nk::ChannelBackwardArgs a{s,       NK_TRAINING, 0.0,     nullptr, nullptr,
                                    nullptr, nullptr,     nullptr, nullptr, nullptr,
                                    nullptr, nullptr,     nullptr, nk::ChannelFusion{},
                                    nullptr, nullptr,     nullptr, nullptr, nullptr};
    *bytes = nk::cuda::nccl_backward_workspace_size(c, nccl_comm, a);
  });
}

nk_status nk_sync_batch_norm_backward(nk_context ctx, void* nccl_comm, const nk_act_desc* desc,
                                      const void* x, const void* dy, const float* weight,
                                      const float* save_mean, const float* save_invstd, void* dx,
                                      float* dweight, float* dbias) {
  return nk::guard("nk_sync_batch_norm_backward", [&] {
    const nk_context_s& c = nk::require_context(ctx);
    nk::require_pointer(nccl_comm, "nccl_comm");
    const nk::ChannelBackwardArgs a = nk::backward_args(c, nk::shard_shape(desc), x, dy, weight,
                                                        save_mean, save_invstd, dx, dweight, dbias);
    if (!nk::on_gpu(c)) {
      nk::fail(NK_ERROR_NOT_SUPPORTED, "the NCCL path runs on CUDA contexts only");
    }
    nk::cuda::nccl_backward(c, nccl_comm, a);
  });
}

}  // extern "C"
