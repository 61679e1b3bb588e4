#include "row_norm_tiling.hpp"

#include <initializer_list>

namespace nk::cuda {
namespace {

constexpr int kSubWarpBlock = 128;  // threads per block when several rows share a block
constexpr int kGenericBlock = 512;

int next_pow2(int64_t v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

}  // namespace

RowTiling choose_row_tiling(int64_t cols, int elem_bytes, bool vector_access, bool backward) {
  const int e = vector_access ? 16 / elem_bytes : 1;
  const int max_elems = backward ? 16 : 64;
  const int64_t packs = (cols + e - 1) / e;
  auto allowed = [&](int p) { return vector_access ? p * e <= max_elems : p == 8; };

  // A lane group per row: the fewest packs per thread that fit the row in 32 lanes.
  for (int p : {1, 2, 4, 8}) {
    if (!allowed(p)) continue;
    const int64_t threads = (packs + p - 1) / p;
    if (threads <= 32) return RowTiling{true, e, p, next_pow2(threads), kSubWarpBlock};
  }
  // A block per row: about four packs per thread in flight, within the register budget.
  for (int p : {4, 8, 2, 1}) {
    if (!allowed(p)) continue;
    const int64_t threads = ((packs + p - 1) / p + 31) / 32 * 32;
    if (threads <= max_block_threads(p * e, backward)) {
      return RowTiling{true, e, p, static_cast<int>(threads), static_cast<int>(threads)};
    }
  }
  return RowTiling{false, e, 0, 0, kGenericBlock};
}

}  // namespace nk::cuda
