// Welford's running mean and sum of squared deviations in fp64, with Chan's merge of two states:
// numerically stable where E[x^2] - E[x]^2 cancels catastrophically (|mean| >> std).
#pragma once

#include <cstdint>

namespace nk::cpu {

struct Welford {
  int64_t count = 0;
  double mean = 0.0;
  double m2 = 0.0;  // sum of (x - mean)^2

  void push(double x) {
    ++count;
    double delta = x - mean;
    mean += delta / static_cast<double>(count);
    m2 += delta * (x - mean);
  }
  double biased_var() const { return m2 / static_cast<double>(count); }

  // Chan's merge: afterwards this state describes both sample sets.
  void merge(const Welford& other) {
    if (other.count == 0) return;
    const int64_t total = count + other.count;
    const double delta = other.mean - mean, share = static_cast<double>(other.count) / total;
    mean += delta * share;
    m2 += other.m2 + delta * delta * static_cast<double>(count) * share;
    count = total;
  }
};

}  // namespace nk::cpu
