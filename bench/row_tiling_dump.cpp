// Prints the forward and backward tiling (kernels/row_norm_tiling.cpp) of typical widths: bf16 and
// fp32 rows with 16-byte packs and the portable staging limit (99 KB), one line a width, for
// bench/row_occupancy.py. Plain C++, built by that script against any tree's tiling.
#include <cstdio>
#include <initializer_list>

#include "row_norm_tiling.hpp"
#include "shared_memory_limit.hpp"

int main() {
  using namespace nk::cuda;
  const long widths[] = {128,  256,  512,  768,   1024,  1536,  2048, 3072,
                         4096, 5120, 6144, 8192,  12288, 16384, 32768, 65536};
  for (int elem : {2, 4}) {
    for (long d : widths) {
      const RowTiling f = choose_row_tiling(d, elem, true, kPortableSharedLimit);
      const RowTiling b = choose_backward_tiling(d, elem, true, kPortableSharedLimit);
      auto path = [](const RowTiling& t) {
        return t.staged ? "staged" : t.in_registers ? "regs" : "generic";
      };
      std::printf("%s %ld fwd %s P=%d tpr=%d block=%d | bwd %s P=%d tpr=%d block=%d\n",
                  elem == 2 ? "bf16" : "fp32", d, path(f), f.packs_per_thread, f.threads_per_row,
                  f.block_threads, path(b), b.packs_per_thread, b.threads_per_row, b.block_threads);
    }
  }
}
