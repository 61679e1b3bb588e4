// Synchronized batch norm on the CPU: the local and global halves of the two-phase API in
// normkit.h. Local statistics and sums are fp64 reductions of this shard; the merge is Chan's in
// rank order, so every rank that merges the same partials gets the same bits; the global forward
// is the ordinary training forward with the merged statistics (cpu::forward_global).
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

ChannelShape batch_shape(const nk_act_desc* desc) {
  return channel_shape(ChannelNorm::kBatch, desc, 1);
}

}  // namespace
}  // namespace nk

extern "C" {

nk_status nk_batch_norm_local_stats(nk_context ctx, const nk_act_desc* desc, const void* x,
                                    int64_t* count, float* mean, float* m2) {
  return nk::guard("nk_batch_norm_local_stats", [&] {
    nk::require_cpu_context(ctx, "synchronized batch norm");
    const nk::ChannelShape s = nk::batch_shape(desc);
    nk::require_elements(x, s.dtype, "x");
    nk::require_pointer(count, "count");
    nk::require_pointer(mean, "mean");
    nk::require_pointer(m2, "m2");
    const int64_t elem = static_cast<int64_t>(nk::dtype_size(s.dtype)), per_channel = s.c * 4;
    nk::check_buffers({{x, s.numel() * elem, "x", false, elem},
                       {count, 8, "count", true, 8},
                       {mean, per_channel, "mean", true, 4},
                       {m2, per_channel, "m2", true, 4}},
                      nk::Span{ctx->workspace, ctx->workspace_bytes});
    std::vector<nk::cpu::Welford> st(static_cast<size_t>(s.c));
    nk::dispatch_dtype(s.dtype, [&](auto tag) {
      const auto* v = static_cast<const decltype(tag)*>(x);
      nk::cpu::for_each_element(
          s, [&](int64_t i, int64_t c, int64_t) { st[c].push(nk::to_double(v[i])); });
    });
    *count = s.n * s.s;
    for (int64_t c = 0; c < s.c; ++c) {
      mean[c] = static_cast<float>(st[c].mean);
      m2[c] = static_cast<float>(st[c].m2);
    }
  });
}

nk_status nk_batch_norm_merge_stats(nk_context ctx, int64_t ranks, int64_t channels,
                                    const int64_t* counts, const float* means, const float* m2s,
                                    int64_t* total_count, float* mean, float* m2) {
  return nk::guard("nk_batch_norm_merge_stats", [&] {
    nk::require_cpu_context(ctx, "synchronized batch norm");
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
    int64_t entries = 0;
    if (__builtin_mul_overflow(ranks, channels, &entries) || entries > (INT64_MAX >> 3)) {
      nk::fail(NK_ERROR_BAD_SHAPE, "ranks x channels = ", ranks, " x ", channels,
               " overflows int64");
    }
    nk::check_buffers({{counts, ranks * 8, "counts", false, 8},
                       {means, entries * 4, "means", false, 4},
                       {m2s, entries * 4, "m2s", false, 4},
                       {total_count, 8, "total_count", true, 8},
                       {mean, channels * 4, "mean", true, 4},
                       {m2, channels * 4, "m2", true, 4}},
                      nk::Span{ctx->workspace, ctx->workspace_bytes});
    int64_t total = 0;
    for (int64_t r = 0; r < ranks; ++r) {
      if (counts[r] < 0) {
        nk::fail(NK_ERROR_INVALID_VALUE, "counts[", r, "] = ", counts[r], ": expected >= 0");
      }
      if (__builtin_add_overflow(total, counts[r], &total)) {
        nk::fail(NK_ERROR_INVALID_VALUE, "the counts add up past int64 at counts[", r,
                 "] = ", counts[r]);
      }
    }
    if (total == 0)
      nk::fail(NK_ERROR_INVALID_VALUE, "every rank has 0 samples: no statistics to merge");
    std::vector<nk::cpu::Welford> merged(static_cast<size_t>(channels));
    for (int64_t r = 0; r < ranks; ++r) {  // rank order; empty ranks add nothing
      for (int64_t c = 0; c < channels; ++c) {
        merged[c].merge(
            nk::cpu::Welford{counts[r], means[r * channels + c], m2s[r * channels + c]});
      }
    }
    *total_count = total;
    for (int64_t c = 0; c < channels; ++c) {
      mean[c] = static_cast<float>(merged[c].mean);
      m2[c] = static_cast<float>(merged[c].m2);
    }
  });
}

nk_status nk_batch_norm_forward_global(nk_context ctx, const nk_act_desc* desc,
                                       const nk_norm_params* params, int64_t global_count,
                                       const float* global_mean, const float* global_m2,
                                       const void* x, const float* weight, const float* bias,
                                       float* running_mean, float* running_var,
                                       int64_t* num_batches_tracked, void* y, float* save_mean,
                                       float* save_invstd) {
  return nk::guard("nk_batch_norm_forward_global", [&] {
    nk::require_cpu_context(ctx, "synchronized batch norm");
    nk::require_pointer(params, "params");
    nk::require_pointer(global_mean, "global_mean");
    nk::require_pointer(global_m2, "global_m2");
    const nk::ChannelForwardArgs a{
        nk::batch_shape(desc), *params, x,         weight,     bias, running_mean, running_var,
        num_batches_tracked,   y,       save_mean, save_invstd};
    const nk::Span workspace{ctx->workspace, ctx->workspace_bytes};
    nk::validate_global(a, workspace, global_count);
    // The global statistics are read while the outputs and the workspace are written.
    const int64_t per_channel = a.shape.c * 4;
    nk::check_buffers(
        {{global_mean, per_channel, "global_mean", false, 4},
         {global_m2, per_channel, "global_m2", false, 4},
         {y, a.shape.numel() * static_cast<int64_t>(nk::dtype_size(a.shape.dtype)), "y", true, 1},
         {running_mean, per_channel, "running_mean", true, 4},
         {running_var, per_channel, "running_var", true, 4},
         {num_batches_tracked, 8, "num_batches_tracked", true, 8},
         {save_mean, per_channel, "save_mean", true, 4},
         {save_invstd, per_channel, "save_invstd", true, 4}},
        workspace);
    nk::cpu::forward_global(*ctx, a, global_count, global_mean, global_m2);
  });
}

nk_status nk_batch_norm_backward_local_sums(nk_context ctx, const nk_act_desc* desc, const void* x,
                                            const void* dy, const float* save_mean,
                                            const float* save_invstd, float* sum_dy,
                                            float* sum_dy_xhat) {
  return nk::guard("nk_batch_norm_backward_local_sums", [&] {
    nk::require_cpu_context(ctx, "synchronized batch norm");
    const nk::ChannelShape s = nk::batch_shape(desc);
    nk::require_elements(x, s.dtype, "x");
    nk::require_elements(dy, s.dtype, "dy");
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
                      nk::Span{ctx->workspace, ctx->workspace_bytes});
    std::vector<double> d(static_cast<size_t>(s.c), 0.0), dx(static_cast<size_t>(s.c), 0.0);
    nk::dispatch_dtype(s.dtype, [&](auto tag) {
      const auto* xv = static_cast<const decltype(tag)*>(x);
      const auto* g = static_cast<const decltype(tag)*>(dy);
      nk::cpu::for_each_element(s, [&](int64_t i, int64_t c, int64_t) {
        const double grad = nk::to_double(g[i]);
        d[c] += grad;
        dx[c] += grad * (nk::to_double(xv[i]) - save_mean[c]) * save_invstd[c];
      });
    });
    for (int64_t c = 0; c < s.c; ++c) {
      sum_dy[c] = static_cast<float>(d[c]);
      sum_dy_xhat[c] = static_cast<float>(dx[c]);
    }
  });
}

nk_status nk_batch_norm_backward_global(nk_context ctx, const nk_act_desc* desc,
                                        int64_t global_count, const float* sum_dy,
                                        const float* sum_dy_xhat, const void* x, const void* dy,
                                        const float* weight, const float* save_mean,
                                        const float* save_invstd, void* dx) {
  return nk::guard("nk_batch_norm_backward_global", [&] {
    nk::require_cpu_context(ctx, "synchronized batch norm");
    nk::require_pointer(sum_dy, "sum_dy");
    nk::require_pointer(sum_dy_xhat, "sum_dy_xhat");
    nk::require_pointer(dx, "dx");
    const nk::ChannelBackwardArgs a{nk::batch_shape(desc), NK_TRAINING, 0.0, x, dy, weight,
                                    nullptr, nullptr, save_mean, save_invstd, dx, nullptr,
                                    nullptr};
    const nk::Span workspace{ctx->workspace, ctx->workspace_bytes};
    nk::validate_buffers(a, workspace);
    nk::check_buffers({{sum_dy, a.shape.c * 4, "sum_dy", false, 4},
                       {sum_dy_xhat, a.shape.c * 4, "sum_dy_xhat", false, 4},
                       {dx, a.shape.numel() * static_cast<int64_t>(nk::dtype_size(a.shape.dtype)),
                        "dx", true, 1}},
                      workspace);
    if (global_count < a.shape.count_per_stat() || global_count < 1) {
      nk::fail(NK_ERROR_INVALID_VALUE, "global_count = ", global_count,
               ": expected >= this shard's ", a.shape.count_per_stat(), " values per channel");
    }
    const auto count = static_cast<double>(global_count);
    nk::dispatch_dtype(a.shape.dtype, [&](auto tag) {
      using T = decltype(tag);
      const T* xv = static_cast<const T*>(x);
      const T* g = static_cast<const T*>(dy);
      T* out = static_cast<T*>(dx);
      nk::cpu::for_each_element(a.shape, [&](int64_t i, int64_t c, int64_t) {
        const double invstd = save_invstd[c], w = weight ? weight[c] : 1.0;
        const double xhat = (nk::to_double(xv[i]) - save_mean[c]) * invstd;
        out[i] = nk::from_double<T>(
            w * invstd * (nk::to_double(g[i]) - sum_dy[c] / count - xhat * sum_dy_xhat[c] / count));
      });
    });
  });
}

}  // extern "C"
