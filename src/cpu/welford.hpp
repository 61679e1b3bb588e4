// Welford's running mean and sum of squared deviations in fp64: numerically stable where
// E[x^2] - E[x]^2 cancels catastrophically (|mean| >> std).
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
};

}  // namespace nk::cpu
