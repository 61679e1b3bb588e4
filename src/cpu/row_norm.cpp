// CPU reference of layer norm and RMS norm, forward and backward: one row at a time, statistics
// in fp64 (Welford for layer norm, a plain sum of squares for RMS norm, which has no centring to
// cancel), each value rounded once when stored. The backward's column sums (dweight, dbias) live in
// fp64 scratch from the context's workspace or one allocation made before anything is written.
#include <cmath>

#include "../backend.hpp"
#include "../dtype.hpp"
#include "../workspace.hpp"
#include "welford.hpp"

namespace nk::cpu {
namespace {

template <class W>
double param_at(const void* p, int64_t j, double absent) {
  return p ? to_double(static_cast<const W*>(p)[j]) : absent;
}

template <class T, class W>
void forward(const RowForwardArgs& a) {
  const RowShape& s = a.shape;
  for (int64_t r = 0; r < s.rows; ++r) {
    const T* x = static_cast<const T*>(a.x) + r * s.cols;
    T* y = static_cast<T*>(a.y) + r * s.cols;
    double mean = 0, var = 0;
    if (s.rms) {
      for (int64_t j = 0; j < s.cols; ++j) var += to_double(x[j]) * to_double(x[j]);
      var /= static_cast<double>(s.cols);  // mean of squares
    } else {
      Welford st;
      for (int64_t j = 0; j < s.cols; ++j) st.push(to_double(x[j]));
      mean = st.mean;
      var = st.biased_var();
    }
    const double rstd = 1.0 / std::sqrt(var + a.eps);
    for (int64_t j = 0; j < s.cols; ++j) {
      const double xhat = (to_double(x[j]) - mean) * rstd;
      y[j] = from_double<T>(xhat * param_at<W>(a.weight, j, 1.0) + param_at<W>(a.bias, j, 0.0));
    }
    if (a.save_mean) a.save_mean[r] = static_cast<float>(mean);
    if (a.save_rstd) a.save_rstd[r] = static_cast<float>(rstd);
  }
}

struct BackwardScratch {
  double* sum_dy;   // [cols]
  double* sum_dyx;  // [cols], sum of dy * xhat
};

BackwardScratch carve(const RowBackwardArgs& a, Carver& carver) {
  BackwardScratch w{};
  w.sum_dy = carver.take<double>(a.shape.cols);
  w.sum_dyx = carver.take<double>(a.shape.cols);
  return w;
}

template <class T, class W>
void backward(const RowBackwardArgs& a, const BackwardScratch& w) {
  const RowShape& s = a.shape;
  const auto cols = static_cast<double>(s.cols);
  for (int64_t j = 0; j < s.cols; ++j) w.sum_dy[j] = w.sum_dyx[j] = 0;
  for (int64_t r = 0; r < s.rows; ++r) {
    const T* x = static_cast<const T*>(a.x) + r * s.cols;
    const T* dy = static_cast<const T*>(a.dy) + r * s.cols;
    const double mean = s.rms ? 0.0 : a.save_mean[r];
    const double rstd = a.save_rstd[r];
    double sum_g = 0, sum_gx = 0;  // g = dy * weight
    for (int64_t j = 0; j < s.cols; ++j) {
      const double xhat = (to_double(x[j]) - mean) * rstd, d = to_double(dy[j]);
      const double g = d * param_at<W>(a.weight, j, 1.0);
      sum_g += g;
      sum_gx += g * xhat;
      w.sum_dy[j] += d;
      w.sum_dyx[j] += d * xhat;
    }
    if (!a.dx) continue;
    T* dx = static_cast<T*>(a.dx) + r * s.cols;
    const double mean_g = s.rms ? 0.0 : sum_g / cols;  // RMS norm has no centring term
    for (int64_t j = 0; j < s.cols; ++j) {
      const double xhat = (to_double(x[j]) - mean) * rstd;
      const double g = to_double(dy[j]) * param_at<W>(a.weight, j, 1.0);
      dx[j] = from_double<T>(rstd * (g - mean_g - xhat * sum_gx / cols));
    }
  }
  for (int64_t j = 0; j < s.cols; ++j) {
    if (a.dweight) static_cast<W*>(a.dweight)[j] = from_double<W>(w.sum_dyx[j]);
    if (a.dbias) static_cast<W*>(a.dbias)[j] = from_double<W>(w.sum_dy[j]);
  }
}

// Calls body(T{}, W{}) for the activation and parameter storage types.
template <class Body>
void dispatch(const RowShape& s, Body&& body) {
  dispatch_dtype(s.dtype,
                 [&](auto t) { dispatch_dtype(s.weight_dtype, [&](auto w) { body(t, w); }); });
}

}  // namespace

size_t workspace_size(const nk_context_s&, const RowForwardArgs&) { return 0; }

size_t workspace_size(const nk_context_s&, const RowBackwardArgs& a) {
  Carver carver;
  carve(a, carver);
  return carver.bytes();
}

void run(const nk_context_s&, const RowForwardArgs& a) {
  dispatch(a.shape, [&](auto t, auto w) { forward<decltype(t), decltype(w)>(a); });
}

void run(const nk_context_s& ctx, const RowBackwardArgs& a) {
  HostScratch memory(ctx, workspace_size(ctx, a));
  Carver carver(memory.data());
  const BackwardScratch w = carve(a, carver);
  dispatch(a.shape, [&](auto t, auto wt) { backward<decltype(t), decltype(wt)>(a, w); });
}

}  // namespace nk::cpu
