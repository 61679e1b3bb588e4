// L2 flush between timed launches (see l2_flush.hpp).
#include <algorithm>

#include "bench_error.hpp"
#include "l2_flush.hpp"

namespace nkb {
namespace {

// Reads n 16-byte words, grid-stride, and xors them together; stores the result only when it
// equals a value the memset never produces, which keeps the loads without writing anything.
__global__ void read_back(const uint4* in, size_t n, unsigned* sink) {
  unsigned acc = 0;
  const size_t stride = size_t{gridDim.x} * blockDim.x;
  for (size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint4 v = in[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x5a5a5a5au) *sink = acc;
}

}  // namespace

L2Flush::L2Flush(size_t l2_bytes, int sm_count)
    : scratch_(std::max(size_t{256} << 20, 4 * l2_bytes)),
      sink_(sizeof(unsigned)),
      blocks_(std::max(sm_count, 1) * 4) {}

void L2Flush::enqueue(cudaStream_t stream) {
  check_cuda(cudaMemsetAsync(scratch_.get(), 0, scratch_.bytes(), stream), "L2 flush memset");
  read_back<<<blocks_, 512, 0, stream>>>(scratch_.as<const uint4>(), scratch_.bytes() / 16,
                                         sink_.as<unsigned>());
  check_cuda(cudaGetLastError(), "L2 flush read-back launch");
}

}  // namespace nkb
