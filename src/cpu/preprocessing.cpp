// CPU reference of the preprocessing normalizers: exact per-column quantiles (a sorted fp64 copy of
// each column, numpy's linear interpolation at the host-computed positions), scaling with frozen
// per-column parameters, and L2 normalization of rows. Arithmetic in fp64, each output rounded
// once.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../backend.hpp"
#include "../dtype.hpp"

namespace nk::cpu {

void run(const nk_context_s&, const QuantileArgs& a) {
  const RowShape& s = a.shape;
  std::vector<float> result(static_cast<size_t>(a.nq * s.cols));
  std::vector<double> column(static_cast<size_t>(s.rows));
  dispatch_dtype(s.dtype, [&](auto tag) {
    const auto* v = static_cast<const decltype(tag)*>(a.x);
    for (int64_t j = 0; j < s.cols; ++j) {
      bool nan = false;
      for (int64_t r = 0; r < s.rows; ++r) {
        column[r] = to_double(v[r * s.cols + j]);
        nan = nan || std::isnan(column[r]);
      }
      if (!nan) std::sort(column.begin(), column.end());
      for (int64_t i = 0; i < a.nq; ++i) {
        const auto [lo, frac] = a.positions[i];  // frac 0: the order statistic itself
        const int64_t hi = std::min(lo + 1, s.rows - 1);
        const double value = frac == 0 ? column[lo] : column[lo] + frac * (column[hi] - column[lo]);
        result[i * s.cols + j] = nan ? NAN : static_cast<float>(value);
      }
    }
  });
  std::copy(result.begin(), result.end(), a.out);
}

void run(const nk_context_s&, const ScaleArgs& a) {
  const RowShape& s = a.shape;
  dispatch_dtype(s.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t j = 0; j < s.cols; ++j) {
        const int64_t i = r * s.cols + j;
        y[i] = from_double<T>((to_double(x[i]) - a.columns[2 * j]) * a.columns[2 * j + 1]);
      }
    }
  });
}

void run(const nk_context_s&, const L2NormalizeArgs& a) {
  const RowShape& s = a.shape;
  dispatch_dtype(s.dtype, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t r = 0; r < s.rows; ++r) {
      const T* x = static_cast<const T*>(a.x) + r * s.cols;
      T* y = static_cast<T*>(a.y) + r * s.cols;
      double squares = 0;
      for (int64_t j = 0; j < s.cols; ++j) squares += to_double(x[j]) * to_double(x[j]);
      const double scale = 1.0 / std::max(std::sqrt(squares), a.eps);
      for (int64_t j = 0; j < s.cols; ++j) y[j] = from_double<T>(to_double(x[j]) * scale);
    }
  });
}

}  // namespace nk::cpu
