// Host time of plan_row_groups per call, for the row lengths of the issue (S = 49, 784), the
// instance norm 8 x 8 rows (64: the bank count tries five lane counts) and group norm's 10
// channels of 8 x 8 (L = 640): each shape planned 20000 times in a row.
#include <chrono>
#include <cstdio>

#include "channel_norm_plan.hpp"

int main() {
  using namespace nk::cuda;
  const nk::ChannelShape shapes[] = {
      {nk::ChannelNorm::kInstance, 32, 256, 49, NK_NCHW, NK_BF16, 1},
      {nk::ChannelNorm::kInstance, 32, 256, 784, NK_NCHW, NK_BF16, 1},
      {nk::ChannelNorm::kInstance, 32, 256, 64, NK_NCHW, NK_BF16, 1},
      {nk::ChannelNorm::kGroup, 8, 320, 64, NK_NCHW, NK_BF16, 32}};
  for (const auto& s : shapes) {
    const int reps = 20000;
    long sink = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) sink += plan_row_groups(s, 2).lanes;
    auto t1 = std::chrono::steady_clock::now();
    std::printf("S=%ld L=%ld: %.2f us per plan (lanes %ld)\n", (long)s.s, (long)s.count_per_stat(),
                std::chrono::duration<double, std::micro>(t1 - t0).count() / reps, sink / reps);
  }
}
