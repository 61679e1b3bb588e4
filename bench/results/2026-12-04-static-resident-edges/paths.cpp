// Which one-read path (or the split passes) each NCHW instance and group norm shape of the
// benchmark sets takes in training, forward (x staged once) and backward (x and dy staged).
#include <cstdio>
#include <initializer_list>

#include "channel_norm_plan.hpp"

namespace {

const char* path(const nk::ChannelShape& s, int elem, int staged) {
  using namespace nk::cuda;
  if (plan_resident_rows(s, elem, staged).use) return "resident rows";
  if (plan_short_rows(s, elem).use) return "rows in registers";
  if (plan_row_groups(s, elem).use) return "row groups";
  return "split passes";
}

void print(const char* set, nk::ChannelNorm kind, long n, long c, long hw, long groups, int elem) {
  const nk::ChannelShape s{kind, n, c, hw * hw, NK_NCHW, elem == 2 ? NK_BF16 : NK_F32, groups};
  const long len = s.count_per_stat();
  std::printf("| %s | %s | %ld | %ld | %ldx%ld | %ld | %ld B | %s | %s |\n", set,
              elem == 2 ? "bf16" : "fp32", n, c, hw, hw,
              n * (kind == nk::ChannelNorm::kGroup ? groups : c), len * elem, path(s, elem, 1),
              path(s, elem, 2));
}

}  // namespace

int main() {
  using nk::ChannelNorm;
  std::printf("| set | dtype | N | C | H x W | rows | row | forward | backward |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int elem : {2, 4}) {
    for (long c : {64, 128, 256})
      for (long hw : {256, 128, 75})
        print("instance_norm", ChannelNorm::kInstance, 8, c, hw, 1, elem);
    for (long n : {2, 8})
      for (long c : {320, 640, 1280})
        for (long hw : {64, 32, 16, 8})
          print("group_norm", ChannelNorm::kGroup, n, c, hw, 32, elem);
  }
  // The shapes: S = 49, 196, 784 (ResNet's 7x7, 14x14, 28x28) of instance norm.
  for (int elem : {2, 4})
    for (long hw : {7, 14, 28, 56}) print("issue", ChannelNorm::kInstance, 32, 256, hw, 1, elem);
  return 0;
}
