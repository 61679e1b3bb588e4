// Copy-bandwidth reference (see copy_bandwidth.hpp).
#include "bench_error.hpp"
#include "copy_bandwidth.hpp"
#include "device_memory.hpp"

namespace nkb {
namespace {

// Copies n 16-byte words, grid-stride; each thread issues four independent loads before its four
// stores, so that enough bytes are in flight to saturate memory with a grid of resident blocks.
__global__ void copy_16_bytes(const uint4* __restrict__ in, uint4* __restrict__ out, size_t n) {
  const size_t stride = size_t{gridDim.x} * blockDim.x;
  size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = in[i], b = in[i + stride], c = in[i + 2 * stride], d = in[i + 3 * stride];
    out[i] = a;
    out[i + stride] = b;
    out[i + 2 * stride] = c;
    out[i + 3 * stride] = d;
  }
  for (; i < n; i += stride) out[i] = in[i];
}

}  // namespace

CopyBandwidth measure_copy_bandwidth(Timer& timer, cudaStream_t stream, int samples) {
  constexpr size_t kBytes = size_t{1} << 30;
  constexpr int kThreads = 256;
  DeviceMemory src(kBytes), dst(kBytes);
  check_cuda(cudaMemsetAsync(src.get(), 1, kBytes, stream), "cudaMemsetAsync");

  int device = 0, sm_count = 0, blocks_per_sm = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device),
             "cudaDeviceGetAttribute(multiprocessor count)");
  check_cuda(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, copy_16_bytes, kThreads, 0),
      "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  const int blocks = sm_count * (blocks_per_sm > 0 ? blocks_per_sm : 1);

  const Launch kernel_copy = [&] {
    copy_16_bytes<<<blocks, kThreads, 0, stream>>>(src.as<const uint4>(), dst.as<uint4>(),
                                                   kBytes / 16);
    check_cuda(cudaGetLastError(), "copy kernel launch");
  };
  const Launch runtime_copy = [&] {
    check_cuda(cudaMemcpyAsync(dst.get(), src.get(), kBytes, cudaMemcpyDeviceToDevice, stream),
               "cudaMemcpyAsync");
  };
  const std::vector<Samples> s = timer.cold({kernel_copy, runtime_copy}, samples, 2);
  CopyBandwidth result;
  result.bytes = 2 * static_cast<int64_t>(kBytes);
  result.kernel_seconds = s[0].median();
  result.memcpy_seconds = s[1].median();
  return result;
}

}  // namespace nkb
