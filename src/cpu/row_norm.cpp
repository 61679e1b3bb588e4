// CPU reference of layer norm and RMS norm, forward and backward, plain and fused (a residual add
// before the norm, a zero-centred weight, an fp8 output): one row at a time, statistics in fp64
// (Welford for layer norm, a plain sum of squares for RMS norm, which has no centring to cancel),
// each value rounded once when stored. With a residual, h = x + residual + bias_in is rounded to
// the dtype (as it is stored) and that value is normalized; it is recomputed where needed rather
// than buffered, so the forward needs no scratch. fp8 outputs are y * scale rounded by encode_fp8
// from the fp64 value. The backward's column sums (dweight, dbias, and dbias_in: the sum of dh as
// stored) live in fp64 scratch from the context's workspace or one allocation made before anything
// is written.
#include <cmath>
#include <cstdint>
#include <limits>

#include "../backend.hpp"
#include "../dtype.hpp"
#include "../fp8.hpp"
#include "../workspace.hpp"
#include "welford.hpp"

namespace nk::cpu {
namespace {

template <class W>
double param_at(const void* p, int64_t j, double absent) {
  return p ? to_double(static_cast<const W*>(p)[j]) : absent;
}

// gamma_j of a weight form: weight, 1 + weight (zero-centred), or 1 without a weight.
template <class W>
double gamma_at(const RowFusion& f, const void* weight, int64_t j) {
  if (weight == nullptr) return 1.0;
  return param_at<W>(weight, j, 1.0) + (f.zero_centered ? 1.0 : 0.0);
}

template <class T, class W>
void forward(const RowForwardArgs& a) {
  const RowShape& s = a.shape;
  const RowFusion& f = a.fusion;
  const bool e5m2 = f.output == NK_OUTPUT_FP8_E5M2;
  const double scale = f.fp8() ? static_cast<double>(*a.y_scale) : 1.0;
  double amax = 0.0;
  for (int64_t r = 0; r < s.rows; ++r) {
    const T* x = static_cast<const T*>(a.x) + r * s.cols;
    const T* res = f.residual ? static_cast<const T*>(a.residual) + r * s.cols : nullptr;
    // The normalized input: x, or x + residual + bias_in rounded once to the dtype, as h is stored.
    auto h = [&](int64_t j) {
      if (!res) return to_double(x[j]);
      const double sum = to_double(x[j]) + to_double(res[j]) + param_at<W>(a.bias_in, j, 0.0);
      return to_double(from_double<T>(sum));
    };
    double mean = 0, var = 0;
    if (s.rms) {
      for (int64_t j = 0; j < s.cols; ++j) var += h(j) * h(j);
      var /= static_cast<double>(s.cols);  // mean of squares
    } else {
      Welford st;
      for (int64_t j = 0; j < s.cols; ++j) st.push(h(j));
      mean = st.mean;
      var = st.biased_var();
    }
    const double rstd = 1.0 / std::sqrt(var + a.eps);
    for (int64_t j = 0; j < s.cols; ++j) {
      const double hj = h(j);
      if (a.h) static_cast<T*>(a.h)[r * s.cols + j] = from_double<T>(hj);
      const double y =
          (hj - mean) * rstd * gamma_at<W>(f, a.weight, j) + param_at<W>(a.bias, j, 0.0);
      if (f.fp8()) {
        // NaN wins the maximum, whatever the order.
        amax = std::isnan(amax) || std::isnan(y) ? std::numeric_limits<double>::quiet_NaN()
                                                 : std::fmax(amax, std::fabs(y));
        static_cast<uint8_t*>(a.y)[r * s.cols + j] = encode_fp8(y * scale, e5m2);
      } else {
        static_cast<T*>(a.y)[r * s.cols + j] = from_double<T>(y);
      }
    }
    if (a.save_mean) a.save_mean[r] = static_cast<float>(mean);
    if (a.save_rstd) a.save_rstd[r] = static_cast<float>(rstd);
  }
  if (a.y_amax) *a.y_amax = static_cast<float>(amax);
}

struct BackwardScratch {
  double* sum_dy;   // [cols]
  double* sum_dyx;  // [cols], sum of dy * xhat
  double* sum_dh;   // [cols], sum of dh as stored (dbias_in); the fused residual form only
};

BackwardScratch carve(const RowBackwardArgs& a, Carver& carver) {
  BackwardScratch w{};
  w.sum_dy = carver.take<double>(a.shape.cols);
  w.sum_dyx = carver.take<double>(a.shape.cols);
  if (a.fusion.residual) w.sum_dh = carver.take<double>(a.shape.cols);
  return w;
}

template <class T, class W>
void backward(const RowBackwardArgs& a, const BackwardScratch& w) {
  const RowShape& s = a.shape;
  const RowFusion& f = a.fusion;
  const auto cols = static_cast<double>(s.cols);
  for (int64_t j = 0; j < s.cols; ++j) {
    w.sum_dy[j] = w.sum_dyx[j] = 0;
    if (w.sum_dh) w.sum_dh[j] = 0;
  }
  for (int64_t r = 0; r < s.rows; ++r) {
    const T* x = static_cast<const T*>(a.x) + r * s.cols;
    const T* dy = static_cast<const T*>(a.dy) + r * s.cols;
    const double mean = s.rms ? 0.0 : a.save_mean[r];
    const double rstd = a.save_rstd[r];
    double sum_g = 0, sum_gx = 0;  // g = dy * gamma
    for (int64_t j = 0; j < s.cols; ++j) {
      const double xhat = (to_double(x[j]) - mean) * rstd, d = to_double(dy[j]);
      const double g = d * gamma_at<W>(f, a.weight, j);
      sum_g += g;
      sum_gx += g * xhat;
      w.sum_dy[j] += d;
      w.sum_dyx[j] += d * xhat;
    }
    if (!a.dx && !a.dresidual) continue;
    const T* extra = a.dh_extra ? static_cast<const T*>(a.dh_extra) + r * s.cols : nullptr;
    const double mean_g = s.rms ? 0.0 : sum_g / cols;  // RMS norm has no centring term
    for (int64_t j = 0; j < s.cols; ++j) {
      const double xhat = (to_double(x[j]) - mean) * rstd;
      const double g = to_double(dy[j]) * gamma_at<W>(f, a.weight, j);
      double dh = rstd * (g - mean_g - xhat * sum_gx / cols);
      if (extra) dh += to_double(extra[j]);
      const T stored = from_double<T>(dh);
      if (a.dx) static_cast<T*>(a.dx)[r * s.cols + j] = stored;
      if (a.dresidual) static_cast<T*>(a.dresidual)[r * s.cols + j] = stored;
      if (a.dbias_in) w.sum_dh[j] += to_double(stored);
    }
  }
  for (int64_t j = 0; j < s.cols; ++j) {
    if (a.dweight) static_cast<W*>(a.dweight)[j] = from_double<W>(w.sum_dyx[j]);
    if (a.dbias) static_cast<W*>(a.dbias)[j] = from_double<W>(w.sum_dy[j]);
    if (a.dbias_in) static_cast<W*>(a.dbias_in)[j] = from_double<W>(w.sum_dh[j]);
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
