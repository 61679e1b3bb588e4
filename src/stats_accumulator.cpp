// The statistics accumulator (nk_stats_*): per-feature count, mean and m2 in fp64, and the minimum
// and maximum, on the backend of the context it was created with: host vectors on the CPU, device
// memory on CUDA (src/cuda/statistics.cpp; the count, the same for every feature, stays on the
// host there, so no call waits for the GPU).
// A batch is reduced to per-feature Welford states first and then merged into the accumulator
// (Chan), so a failing call, or one that throws while reducing, leaves the accumulator as it was.
// A columns batch (rows x cols) is the channels batch N = rows, C = cols, S = 1, NHWC.
#include <normkit/normkit.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "backend.hpp"
#include "context.hpp"
#include "cpu/elements.hpp"
#include "cpu/welford.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "validate.hpp"

struct nk_stats_s {
  nk_stats_s(nk_context context, int64_t feature_count) : ctx(context), features(feature_count) {}
  nk_stats_s(const nk_stats_s&) = delete;
  nk_stats_s& operator=(const nk_stats_s&) = delete;

  nk_context ctx;  // the backend, device and stream every call runs with (not owned)
  int64_t features;
  int64_t count = 0;                    // samples per feature, the same for every feature
  std::vector<nk::cpu::Welford> state;  // CPU: [features]
  std::vector<double> min, max;         // CPU: [features]; +inf and -inf before any sample
  void* device = nullptr;               // CUDA: the state in device memory

  bool on_gpu() const { return ctx->backend == NK_BACKEND_CUDA; }
  void clear() {
    count = 0;
    if (on_gpu()) {
      if (device == nullptr) {
        device = nk::cuda::stats_allocate(*ctx, features);
      } else {
        nk::cuda::stats_reset(*ctx, device, features);
      }
      return;
    }
    state.assign(static_cast<size_t>(features), nk::cpu::Welford{});
    min.assign(static_cast<size_t>(features), std::numeric_limits<double>::infinity());
    max.assign(static_cast<size_t>(features), -std::numeric_limits<double>::infinity());
  }
  ~nk_stats_s() {
    if (device) nk::cuda::stats_release(ctx->device, device);  // the context outlives us
  }
};

namespace nk {
namespace {

nk_stats_s& require_stats(nk_stats stats) {
  require_pointer(stats, "stats");
  return *stats;
}

// min and max that propagate NaN, as the mean and the variance do.
double lower(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b); }
double higher(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b); }

void merge_into(nk_stats_s& into, const nk_stats_s& from) {
  if (into.on_gpu()) {
    cuda::stats_merge(*into.ctx, into.device, into.count, from.device, from.count, into.features);
    into.count += from.count;
    return;
  }
  into.count += from.count;
  for (int64_t c = 0; c < into.features; ++c) {
    into.state[c].merge(from.state[c]);
    into.min[c] = lower(into.min[c], from.min[c]);
    into.max[c] = higher(into.max[c], from.max[c]);
  }
}

void add_batch(nk_stats_s& st, const ChannelShape& shape, const void* x) {
  if (shape.c != st.features) {
    fail(NK_ERROR_BAD_SHAPE, "the batch has ", shape.c, " features but the accumulator ",
         st.features);
  }
  require_elements(x, shape.dtype, "x");
  const int64_t added = shape.n * shape.s;
  if (st.count > INT64_MAX - added) {
    fail(NK_ERROR_INVALID_VALUE, "the accumulator's count ", st.count, " plus ", added,
         " samples overflows int64");
  }
  if (st.on_gpu()) {
    const nk_context_s& ctx = *st.ctx;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(dtype_size(shape.dtype));
    check_buffers({{x, bytes, "x", false, static_cast<int64_t>(dtype_size(shape.dtype))}},
                  Span{ctx.workspace, ctx.workspace_bytes});
    cuda::stats_add(ctx, st.device, st.features, st.count, shape, x);
    st.count += added;
    return;
  }
  nk_stats_s batch(st.ctx, st.features);
  batch.clear();
  dispatch_dtype(shape.dtype, [&](auto tag) {
    const auto* v = static_cast<const decltype(tag)*>(x);
    cpu::for_each_element(shape, [&](int64_t i, int64_t c, int64_t) {
      const double value = to_double(v[i]);
      batch.state[c].push(value);
      batch.min[c] = lower(batch.min[c], value);
      batch.max[c] = higher(batch.max[c], value);
    });
  });
  batch.count = added;
  merge_into(st, batch);
}

}  // namespace
}  // namespace nk

extern "C" {

nk_status nk_stats_create(nk_context ctx, int64_t features, nk_stats* out) {
  return nk::guard("nk_stats_create", [&] {
    nk::require_pointer(ctx, "ctx");
    nk::require_pointer(out, "out");
    if (features < 1) nk::fail(NK_ERROR_BAD_SHAPE, "features = ", features, ": expected >= 1");
    if (features > (INT64_MAX >> 6)) {
      nk::fail(NK_ERROR_BAD_SHAPE, "features = ", features, ": too many to hold");
    }
    auto st = std::make_unique<nk_stats_s>(ctx, features);
    st->clear();
    *out = st.release();
  });
}

nk_status nk_stats_destroy(nk_stats stats) {
  return nk::guard("nk_stats_destroy", [&] { delete stats; });
}

nk_status nk_stats_reset(nk_stats stats) {
  return nk::guard("nk_stats_reset", [&] { nk::require_stats(stats).clear(); });
}

nk_status nk_stats_add_channels(nk_stats stats, const nk_act_desc* desc, const void* x) {
  return nk::guard("nk_stats_add_channels", [&] {
    nk_stats_s& st = nk::require_stats(stats);
    nk::add_batch(st, nk::channel_shape(nk::ChannelNorm::kBatch, desc, 1), x);
  });
}

nk_status nk_stats_add_columns(nk_stats stats, const nk_row_desc* desc, const void* x) {
  return nk::guard("nk_stats_add_columns", [&] {
    nk_stats_s& st = nk::require_stats(stats);
    const nk::RowShape r = nk::columns_shape(desc);  // the weight dtype plays no part here
    nk::add_batch(
        st, nk::ChannelShape{nk::ChannelNorm::kBatch, r.rows, r.cols, 1, NK_NHWC, r.dtype, 1}, x);
  });
}

nk_status nk_stats_merge(nk_stats into, nk_stats from) {
  return nk::guard("nk_stats_merge", [&] {
    nk::require_pointer(into, "into");
    nk::require_pointer(from, "from");
    nk_stats_s& a = *into;
    if (into == from)
      nk::fail(NK_ERROR_INVALID_VALUE, "into == from: merge needs two accumulators");
    if (a.features != from->features) {
      nk::fail(NK_ERROR_BAD_SHAPE, "into has ", a.features, " features but from ", from->features);
    }
    if (a.on_gpu() != from->on_gpu() || (a.on_gpu() && a.ctx->device != from->ctx->device)) {
      nk::fail(NK_ERROR_INVALID_VALUE, "into and from live on different backends or devices: ",
               "merge accumulators created on the same one");
    }
    if (a.count > INT64_MAX - from->count) {
      nk::fail(NK_ERROR_INVALID_VALUE, "the merged count overflows int64");
    }
    nk::merge_into(a, *from);
  });
}

nk_status nk_stats_count(nk_stats stats, int64_t* count) {
  return nk::guard("nk_stats_count", [&] {
    nk_stats_s& st = nk::require_stats(stats);
    nk::require_pointer(count, "count");
    *count = st.count;
  });
}

nk_status nk_stats_finalize(nk_stats stats, float* mean, float* var, float* var_unbiased) {
  return nk::guard("nk_stats_finalize", [&] {
    nk_stats_s& st = nk::require_stats(stats);
    const int64_t bytes = st.features * 4;
    nk::check_buffers({{mean, bytes, "mean", true, 4},
                       {var, bytes, "var", true, 4},
                       {var_unbiased, bytes, "var_unbiased", true, 4}},
                      nk::Span{nullptr, 0});
    const int64_t count = st.count;
    if (count < 1) nk::fail(NK_ERROR_INVALID_VALUE, "the accumulator has no samples yet");
    if (var_unbiased && count < 2) {
      nk::fail(NK_ERROR_INVALID_VALUE,
               "var_unbiased needs at least 2 samples per feature, the accumulator has 1");
    }
    if (st.on_gpu()) {
      nk::cuda::stats_finalize(*st.ctx, st.device, st.features, count, mean, var, var_unbiased);
      return;
    }
    for (int64_t c = 0; c < st.features; ++c) {
      const nk::cpu::Welford& w = st.state[c];
      if (mean) mean[c] = static_cast<float>(w.mean);
      if (var) var[c] = static_cast<float>(w.biased_var());
      if (var_unbiased) var_unbiased[c] = static_cast<float>(w.m2 / static_cast<double>(count - 1));
    }
  });
}

nk_status nk_stats_min_max(nk_stats stats, float* min, float* max) {
  return nk::guard("nk_stats_min_max", [&] {
    nk_stats_s& st = nk::require_stats(stats);
    nk::check_buffers(
        {{min, st.features * 4, "min", true, 4}, {max, st.features * 4, "max", true, 4}},
        nk::Span{nullptr, 0});
    if (st.count < 1) nk::fail(NK_ERROR_INVALID_VALUE, "the accumulator has no samples yet");
    if (st.on_gpu()) {
      nk::cuda::stats_min_max(*st.ctx, st.device, st.features, min, max);
      return;
    }
    for (int64_t c = 0; c < st.features; ++c) {
      if (min) min[c] = static_cast<float>(st.min[c]);
      if (max) max[c] = static_cast<float>(st.max[c]);
    }
  });
}

}  // extern "C"
