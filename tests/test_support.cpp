#include "test_support.hpp"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "dtype.hpp"  // the library's conversions, compiled into the tests (tested in test_dtype)

namespace nkt {

size_t elem_size(nk_dtype dtype) { return dtype == NK_F32 ? 4 : 2; }

const char* name(nk_dtype dtype) {
  return dtype == NK_F32 ? "f32" : dtype == NK_F16 ? "f16" : dtype == NK_BF16 ? "bf16" : "?";
}

Buffer::Buffer(nk_dtype dtype, const std::vector<double>& values)
    : Buffer(dtype, static_cast<int64_t>(values.size())) {
  for (size_t i = 0; i < values.size(); ++i) set(static_cast<int64_t>(i), values[i]);
}

double Buffer::get(int64_t i) const {
  const unsigned char* p = bytes_.data() + i * elem_size(dtype_);
  if (dtype_ == NK_F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return dtype_ == NK_F16 ? nk::half_to_float(h) : nk::bf16_to_float(h);
}

void Buffer::set(int64_t i, double v) {
  unsigned char* p = bytes_.data() + i * elem_size(dtype_);
  if (dtype_ == NK_F32) {
    float f = static_cast<float>(v);
    std::memcpy(p, &f, 4);
    return;
  }
  uint16_t h = dtype_ == NK_F16 ? nk::half_from_double(v) : nk::bf16_from_double(v);
  std::memcpy(p, &h, 2);
}

std::vector<double> Buffer::values() const {
  std::vector<double> out(static_cast<size_t>(count_));
  for (int64_t i = 0; i < count_; ++i) out[static_cast<size_t>(i)] = get(i);
  return out;
}

uint64_t fresh_seed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

Random::Random() : seed_(fresh_seed()), engine_(seed_) {
  ::testing::Test::RecordProperty("seed", std::to_string(seed_));
  std::printf("[ seed     ] %llu\n", static_cast<unsigned long long>(seed_));
}

std::vector<double> Random::normal(int64_t count, double mean, double stddev) {
  std::normal_distribution<double> dist(mean, stddev);
  std::vector<double> out(static_cast<size_t>(count));
  for (double& v : out) v = dist(engine_);
  return out;
}

std::vector<double> Random::uniform(int64_t count, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> out(static_cast<size_t>(count));
  for (double& v : out) v = dist(engine_);
  return out;
}

int64_t Random::integer(int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(engine_);
}

double ulps_from(double value, int steps) {
  for (; steps > 0; --steps) value = std::nextafter(value, HUGE_VAL);
  for (; steps < 0; ++steps) value = std::nextafter(value, -HUGE_VAL);
  return value;
}

float ulps_from(float value, int steps) {
  for (; steps > 0; --steps) value = std::nextafter(value, HUGE_VALF);
  for (; steps < 0; ++steps) value = std::nextafter(value, -HUGE_VALF);
  return value;
}

namespace {

template <class Real, class Parse>
Real read_after(const std::string& message, const std::string& prefix, Parse parse) {
  const size_t at = message.find(prefix);
  if (at == std::string::npos) {
    ADD_FAILURE() << "no \"" << prefix << "\" in: " << message;
    return std::numeric_limits<Real>::quiet_NaN();
  }
  const char* begin = message.c_str() + at + prefix.size();
  char* end = nullptr;
  const Real value = parse(begin, &end);
  if (end == begin) {
    ADD_FAILURE() << "no number after \"" << prefix << "\" in: " << message;
    return std::numeric_limits<Real>::quiet_NaN();
  }
  return value;
}

}  // namespace

double number_after(const std::string& message, const std::string& prefix) {
  return read_after<double>(message, prefix,
                            [](const char* s, char** end) { return std::strtod(s, end); });
}

float float_after(const std::string& message, const std::string& prefix) {
  return read_after<float>(message, prefix,
                           [](const char* s, char** end) { return std::strtof(s, end); });
}

std::vector<double> rounded(const std::vector<double>& values, nk_dtype dtype) {
  return Buffer(dtype, values).values();
}

Tolerance output_tolerance(nk_dtype dtype) {
  // fp32: a few ulps of accumulated error; fp16 / bf16: one rounding of the output (2^-11, 2^-8
  // relative) with a factor 2 of slack.
  switch (dtype) {
    case NK_F16:
      return {1e-3, 1e-3};
    case NK_BF16:
      return {8e-3, 8e-3};
    default:
      return {2e-5, 2e-5};
  }
}

bool expect_close(const std::vector<double>& actual, const std::vector<double>& expected,
                  Tolerance tol, const std::string& what) {
  EXPECT_EQ(actual.size(), expected.size()) << what;
  if (actual.size() != expected.size()) return false;
  int failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double bound = tol.atol + tol.rtol * std::abs(expected[i]);
    if (!(std::abs(actual[i] - expected[i]) <= bound)) {
      if (++failures <= 5) {
        ADD_FAILURE() << what << "[" << i << "] = " << actual[i] << ", expected " << expected[i]
                      << " (bound " << bound << ")";
      }
    }
  }
  if (failures > 5) ADD_FAILURE() << what << ": " << failures << " elements out of bounds in all";
  return failures == 0;
}

CpuContext::CpuContext() {
  nk_status st = nk_context_create(NK_BACKEND_CPU, 0, &ctx_);
  if (st != NK_SUCCESS) ADD_FAILURE() << "nk_context_create(CPU): " << nk_last_error();
}

CpuContext::~CpuContext() { nk_context_destroy(ctx_); }

// ---- references ---------------------------------------------------------------------------------

int64_t act_index(const ChannelCase& k, int64_t n, int64_t c, int64_t s) {
  return k.layout == NK_NCHW ? (n * k.c + c) * k.s + s : (n * k.s + s) * k.c + c;
}

int64_t num_stats(const ChannelCase& k) {
  switch (k.family) {
    case Family::kBatch:
      return k.c;
    case Family::kInstance:
      return k.n * k.c;
    case Family::kGroup:
      return k.n * k.groups;
  }
  return 0;
}

int64_t stat_index(const ChannelCase& k, int64_t n, int64_t c) {
  switch (k.family) {
    case Family::kBatch:
      return c;
    case Family::kInstance:
      return n * k.c + c;
    case Family::kGroup:
      return n * k.groups + c / (k.c / k.groups);
  }
  return 0;
}

namespace {
double at(const std::vector<double>* v, int64_t i, double absent) {
  return v ? (*v)[static_cast<size_t>(i)] : absent;
}

// Calls f(n, c, s) for every element.
template <class F>
void for_all(const ChannelCase& k, F&& f) {
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t c = 0; c < k.c; ++c)
      for (int64_t s = 0; s < k.s; ++s) f(n, c, s);
}
}  // namespace

ChannelForwardRef channel_forward_training(const ChannelCase& k, const std::vector<double>& x,
                                           const std::vector<double>* weight,
                                           const std::vector<double>* bias, double eps) {
  const auto stats = static_cast<size_t>(num_stats(k));
  std::vector<double> sum(stats, 0.0), sq(stats, 0.0), count(stats, 0.0);
  for_all(k, [&](int64_t n, int64_t c, int64_t s) {
    const auto j = static_cast<size_t>(stat_index(k, n, c));
    sum[j] += x[static_cast<size_t>(act_index(k, n, c, s))];
    count[j] += 1;
  });
  ChannelForwardRef r;
  r.mean.resize(stats);
  for (size_t j = 0; j < stats; ++j) r.mean[j] = sum[j] / count[j];
  for_all(k, [&](int64_t n, int64_t c, int64_t s) {
    const auto j = static_cast<size_t>(stat_index(k, n, c));
    const double d = x[static_cast<size_t>(act_index(k, n, c, s))] - r.mean[j];
    sq[j] += d * d;
  });
  r.var.resize(stats);
  r.invstd.resize(stats);
  for (size_t j = 0; j < stats; ++j) {
    r.var[j] = sq[j] / count[j];
    r.invstd[j] = 1.0 / std::sqrt(r.var[j] + eps);
  }
  r.y.resize(x.size());
  for_all(k, [&](int64_t n, int64_t c, int64_t s) {
    const auto i = static_cast<size_t>(act_index(k, n, c, s));
    const auto j = static_cast<size_t>(stat_index(k, n, c));
    r.y[i] = (x[i] - r.mean[j]) * r.invstd[j] * at(weight, c, 1.0) + at(bias, c, 0.0);
  });
  return r;
}

std::vector<double> channel_forward_inference(const ChannelCase& k, const std::vector<double>& x,
                                              const std::vector<double>* weight,
                                              const std::vector<double>* bias,
                                              const std::vector<double>& running_mean,
                                              const std::vector<double>& running_var, double eps) {
  std::vector<double> y(x.size());
  for_all(k, [&](int64_t n, int64_t c, int64_t s) {
    const auto i = static_cast<size_t>(act_index(k, n, c, s));
    const auto cc = static_cast<size_t>(c);
    y[i] = (x[i] - running_mean[cc]) / std::sqrt(running_var[cc] + eps) * at(weight, c, 1.0) +
           at(bias, c, 0.0);
  });
  return y;
}

RowForwardRef row_forward(bool rms, int64_t rows, int64_t cols, const std::vector<double>& x,
                          const std::vector<double>* weight, const std::vector<double>* bias,
                          double eps) {
  RowForwardRef r;
  r.y.resize(x.size());
  for (int64_t row = 0; row < rows; ++row) {
    const double* xr = x.data() + row * cols;
    double mean = 0;
    if (!rms) {
      for (int64_t j = 0; j < cols; ++j) mean += xr[j];
      mean /= static_cast<double>(cols);
    }
    double sq = 0;
    for (int64_t j = 0; j < cols; ++j) sq += (xr[j] - mean) * (xr[j] - mean);
    const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(cols) + eps);
    for (int64_t j = 0; j < cols; ++j) {
      r.y[static_cast<size_t>(row * cols + j)] =
          (xr[j] - mean) * rstd * at(weight, j, 1.0) + at(bias, j, 0.0);
    }
    r.mean.push_back(mean);
    r.rstd.push_back(rstd);
  }
  return r;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace nkt
