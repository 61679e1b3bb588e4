// The C shim of the preprocessing normalizers: exact per-column quantiles, scaling with frozen
// per-column parameters (z-score, min-max, robust) with an explicit zero-spread behaviour, and L2
// normalization of rows. Validation, then what both backends must agree on bit for bit is resolved
// here on the host (quantile positions; each column's center and inverse spread), then the
// context's backend runs. Pointer and overlap checks are those of the row norms (y == x allowed).
#include "preprocessing.hpp"  // kernels/preprocessing.hpp (plain C++): the CUDA path's row limit

#include <normkit/normkit.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "backend.hpp"
#include "context.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "frozen_stats.hpp"
#include "validate.hpp"

namespace nk {
namespace {

// Null, alignment and overlap checks of x -> y (y == x allowed), as for the row norms.
void validate_map(const nk_context_s& ctx, const RowShape& s, const void* x, void* y) {
  RowForwardArgs a{};
  a.shape = s;
  a.x = x;
  a.y = y;
  validate(a, ctx);
}

}  // namespace
}  // namespace nk

extern "C" {

nk_status nk_quantiles_columns(nk_context ctx, const nk_row_desc* desc, const void* x,
                               const double* q, int64_t nq, float* out) {
  return nk::guard("nk_quantiles_columns", [&] {
    nk::require_pointer(ctx, "ctx");
    const nk::RowShape s = nk::columns_shape(desc);
    nk::require_elements(x, s.dtype, "x");
    nk::require_pointer(q, "q");
    nk::require_pointer(out, "out");
    if (nq < 1) nk::fail(NK_ERROR_INVALID_VALUE, "nq = ", nq, ": expected >= 1");
    const int64_t outputs = nk::checked_count({nq, s.cols}, "out (nq x cols)");
    const int64_t elem = static_cast<int64_t>(nk::dtype_size(s.dtype));
    nk::check_buffers({{x, s.rows * s.cols * elem, "x", false, elem},
                       {q, nq * 8, "q", false, 8},
                       {out, outputs * 4, "out", true, 4}},
                      nk::Span{ctx->workspace, ctx->workspace_bytes});
    std::vector<nk::QuantilePosition> positions(static_cast<size_t>(nq));
    for (int64_t i = 0; i < nq; ++i) {
      if (!(q[i] >= 0.0 && q[i] <= 1.0)) {
        nk::fail(NK_ERROR_INVALID_VALUE, "q[", i, "] = ", q[i], ": expected a value in [0, 1]");
      }
      positions[i] = nk::quantile_position(q[i], s.rows);
    }
    // The GPU sorts each column within one segmented sort, whose offsets are int.
    if (ctx->backend == NK_BACKEND_CUDA && s.rows > nk::cuda::kMaxQuantileRows) {
      nk::fail(NK_ERROR_NOT_SUPPORTED, "desc->rows = ", s.rows,
               ": the CUDA backend sorts columns of at most 2^31 - 1 rows (use a CPU context)");
    }
    nk::run(*ctx, nk::QuantileArgs{s, x, positions.data(), nq, out});
  });
}

nk_status nk_scale_columns(nk_context ctx, const nk_row_desc* desc, const nk_frozen_stats* stats,
                           nk_zero_spread zero_spread, const void* x, void* y) {
  return nk::guard("nk_scale_columns", [&] {
    nk::require_pointer(ctx, "ctx");
    const nk::RowShape s = nk::columns_shape(desc);
    nk::require_pointer(stats, "stats");
    if (stats->kind != NK_STATS_STANDARDIZE && stats->kind != NK_STATS_MIN_MAX &&
        stats->kind != NK_STATS_ROBUST) {
      const char* name = nk::kind_name(stats->kind);
      nk::fail(
          NK_ERROR_INVALID_VALUE, "stats->kind = ", name ? name : "(unknown)",
          ": nk_scale_columns takes NK_STATS_STANDARDIZE, NK_STATS_MIN_MAX or NK_STATS_ROBUST");
    }
    nk::check_frozen(stats, stats->kind, s.dtype, s.cols, stats->eps);
    if (zero_spread != NK_ZERO_SPREAD_ERROR && zero_spread != NK_ZERO_SPREAD_ZERO) {
      nk::fail(NK_ERROR_INVALID_VALUE, "zero_spread = ", static_cast<int>(zero_spread),
               " is not an nk_zero_spread");
    }
    nk::validate_map(*ctx, s, x, y);
    nk::check_buffers(
        {{stats->center, s.cols * 4, "stats->center", false, 4},
         {stats->spread, s.cols * 4, "stats->spread", false, 4},
         {y, s.rows * s.cols * static_cast<int64_t>(nk::dtype_size(s.dtype)), "y", true, 1}},
        nk::Span{ctx->workspace, ctx->workspace_bytes});
    // Per column: y = (x - center) * inverse, inverse 0 for a zero spread in NK_ZERO_SPREAD_ZERO.
    // Both backends take these fp64 values, so they agree bit for bit.
    std::vector<double> columns(static_cast<size_t>(2 * s.cols));
    for (int64_t j = 0; j < s.cols; ++j) {
      const double spread = stats->spread[j];
      const double scale = stats->kind == NK_STATS_STANDARDIZE ? std::sqrt(spread) : spread;
      if (scale == 0 && zero_spread == NK_ZERO_SPREAD_ERROR) {
        nk::fail(NK_ERROR_INVALID_VALUE, "stats->spread[", j, "] = 0: feature ", j,
                 " has no spread (pass NK_ZERO_SPREAD_ZERO to output 0 for it)");
      }
      columns[2 * j] = stats->center[j];
      columns[2 * j + 1] = scale == 0 ? 0.0 : 1.0 / scale;
    }
    nk::run(*ctx, nk::ScaleArgs{s, x, y, columns.data()});
  });
}

nk_status nk_l2_normalize_rows(nk_context ctx, const nk_row_desc* desc, double eps, const void* x,
                               void* y) {
  return nk::guard("nk_l2_normalize_rows", [&] {
    nk::require_pointer(ctx, "ctx");
    const nk::RowShape s = nk::columns_shape(desc);
    if (!std::isfinite(eps) || eps <= 0) {
      nk::fail(NK_ERROR_INVALID_VALUE, "eps = ", eps, ": expected a finite value > 0");
    }
    nk::validate_map(*ctx, s, x, y);
    nk::run(*ctx, nk::L2NormalizeArgs{s, eps, x, y});
  });
}

}  // extern "C"
