// A downstream C++ program: batch norm training step then inference through the C++ API.
#include <cmath>
#include <cstdio>
#include <normkit/normkit.hpp>
#include <vector>

int main() {
  nk::Context ctx = nk::Context::cpu();
  const nk::Shape shape{4, 1, 1, NK_NCHW};
  std::vector<float> x = {1, 2, 3, 4}, y(4), running_mean = {0}, running_var = {1};
  nk_norm_params p = nk_norm_params_default();
  p.momentum = 1.0;  // running statistics become this batch's: mean 2.5, unbiased var 5/3
  nk::batch_norm_forward(ctx, shape, p, x.data(), nullptr, nullptr, running_mean.data(),
                         running_var.data(), nullptr, y.data(), nullptr, nullptr);
  p.phase = NK_INFERENCE;
  nk::batch_norm_forward(ctx, shape, p, x.data(), nullptr, nullptr, running_mean.data(),
                         running_var.data(), nullptr, y.data(), nullptr, nullptr);
  const double expected = (4 - 2.5) / std::sqrt(5.0 / 3 + 1e-5);
  if (std::fabs(y[3] - expected) > 1e-5) {
    std::printf("normkit consumer: y[3] = %f, expected %f\n", y[3], expected);
    return 1;
  }
  std::printf("normkit %d consumer (find_package) passed\n", nk::version());
  return 0;
}
