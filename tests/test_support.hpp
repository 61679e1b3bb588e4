// Shared test helpers: typed host buffers in any nk_dtype, fresh random data (the seed is printed
// on failure), poisoning, per-dtype tolerances, element-by-element comparison, and naive fp64
// references written independently of the library (two-pass statistics, index arithmetic from
// first principles) for the forward passes.
#pragma once

#include <gtest/gtest.h>
#include <normkit/normkit.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace nkt {

// Bytes of one element of dtype.
size_t elem_size(nk_dtype dtype);
const char* name(nk_dtype dtype);

// Host storage of `count` elements of `dtype`, read and written as doubles (fp16/bf16 rounded to
// nearest even on write).
class Buffer {
 public:
  Buffer() = default;
  Buffer(nk_dtype dtype, int64_t count)
      : dtype_(dtype), count_(count), bytes_(count * elem_size(dtype)) {}
  Buffer(nk_dtype dtype, const std::vector<double>& values);

  nk_dtype dtype() const { return dtype_; }
  int64_t size() const { return count_; }
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }
  float* f32() { return reinterpret_cast<float*>(bytes_.data()); }
  const std::vector<unsigned char>& bytes() const { return bytes_; }

  double get(int64_t i) const;
  void set(int64_t i, double v);
  std::vector<double> values() const;
  // Every byte 0xFF: NaN in f32, f16 and bf16.
  void poison() { std::memset(bytes_.data(), 0xFF, bytes_.size()); }

 private:
  nk_dtype dtype_ = NK_F32;
  int64_t count_ = 0;
  std::vector<unsigned char> bytes_;
};

// A new seed per call (from std::random_device), recorded in the test's output.
uint64_t fresh_seed();

// Normal(mean, stddev) values from a generator seeded once per test by fresh_seed().
class Random {
 public:
  Random();
  uint64_t seed() const { return seed_; }
  std::vector<double> normal(int64_t count, double mean = 0.0, double stddev = 1.0);
  std::vector<double> uniform(int64_t count, double lo, double hi);
  int64_t integer(int64_t lo, int64_t hi);  // uniform in [lo, hi]

 private:
  uint64_t seed_;
  std::mt19937_64 engine_;
};

// `value` moved `steps` representable values up (steps > 0) or down (steps < 0).
double ulps_from(double value, int steps);
float ulps_from(float value, int steps);

// The number a message shows right after the first `prefix`, read back with strtod (strtof for
// float_after), so that a test can check it reads back as exactly the value passed. NaN, and a
// test failure, when the prefix or the number is missing.
double number_after(const std::string& message, const std::string& prefix);
float float_after(const std::string& message, const std::string& prefix);

// Values rounded to what `dtype` stores (the inputs the library actually sees).
std::vector<double> rounded(const std::vector<double>& values, nk_dtype dtype);

// Tolerance |actual - expected| <= atol + rtol * |expected| for outputs stored in dtype.
struct Tolerance {
  double atol, rtol;
};
Tolerance output_tolerance(nk_dtype dtype);

// Checks every element, reports the first failures with index and values. Returns true if all
// passed. NaN in actual never passes.
bool expect_close(const std::vector<double>& actual, const std::vector<double>& expected,
                  Tolerance tol, const std::string& what);

// A CPU context that is destroyed at scope exit.
class CpuContext {
 public:
  CpuContext();
  ~CpuContext();
  CpuContext(const CpuContext&) = delete;
  CpuContext& operator=(const CpuContext&) = delete;
  nk_context get() const { return ctx_; }
  operator nk_context() const { return ctx_; }

 private:
  nk_context ctx_ = nullptr;
};

// ---- naive fp64 references -------------------------------------------------------------------

enum class Family { kBatch, kInstance, kGroup };

struct ChannelCase {
  Family family;
  int64_t n, c, s;
  nk_layout layout;
  int64_t groups = 1;  // group norm only
};

// Index of element (n, c, s) in the layout.
int64_t act_index(const ChannelCase& k, int64_t n, int64_t c, int64_t s);
// Number of statistics and index of the statistic of (n, c).
int64_t num_stats(const ChannelCase& k);
int64_t stat_index(const ChannelCase& k, int64_t n, int64_t c);

struct ChannelForwardRef {
  std::vector<double> y, mean, invstd, var;  // per stat: mean, invstd, biased var
};

// Training forward with the batch's statistics (two-pass mean and variance).
ChannelForwardRef channel_forward_training(const ChannelCase& k, const std::vector<double>& x,
                                           const std::vector<double>* weight,
                                           const std::vector<double>* bias, double eps);

// Inference forward with given per-channel running statistics.
std::vector<double> channel_forward_inference(const ChannelCase& k, const std::vector<double>& x,
                                              const std::vector<double>* weight,
                                              const std::vector<double>* bias,
                                              const std::vector<double>& running_mean,
                                              const std::vector<double>& running_var, double eps);

struct RowForwardRef {
  std::vector<double> y, mean, rstd;
};

// Layer norm (rms = false) or RMS norm (rms = true) forward, per row.
RowForwardRef row_forward(bool rms, int64_t rows, int64_t cols, const std::vector<double>& x,
                          const std::vector<double>* weight, const std::vector<double>* bias,
                          double eps);

// Central finite difference of f at v[i] (v restored afterwards), step h * (1 + |v[i]|).
template <class F>
double finite_difference(F&& f, std::vector<double>& v, size_t i, double h = 1e-5) {
  const double saved = v[i], step = h * (1.0 + std::abs(saved));
  v[i] = saved + step;
  const double up = f();
  v[i] = saved - step;
  const double down = f();
  v[i] = saved;
  return (up - down) / (2 * step);
}

// sum_i a_i * b_i
double dot(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace nkt
