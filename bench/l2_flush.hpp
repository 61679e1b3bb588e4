// Empties the L2 cache between timed launches, so that every timed launch reads its inputs from
// device memory (H100's L2 holds 50 MB, H200's 60 MB: most benchmark inputs would otherwise be
// partly cached from the previous launch).
//
// A flush writes a scratch buffer of at least 256 MiB (and 4x the L2 size) with cudaMemsetAsync,
// which evicts everything, then reads it back with a streaming kernel. The read-back matters:
// after the write alone, L2 is full of dirty lines, and the next (timed) kernel would pay for
// writing them back to memory as it evicts them. After the read-back, L2 holds only clean lines of
// the scratch buffer, which cost nothing to evict. Both run outside the timed region, and they
// keep the GPU busy while the host enqueues the timed launch, so no host gap is timed either.
#pragma once

#include <cuda_runtime_api.h>

#include "device_memory.hpp"

namespace nkb {

class L2Flush {
 public:
  // l2_bytes: the device's L2 size. Throws BenchError when the scratch buffer cannot be had.
  L2Flush(size_t l2_bytes, int sm_count);
  // Enqueues one flush on `stream`; throws BenchError when a call fails.
  void enqueue(cudaStream_t stream);
  size_t bytes() const { return scratch_.bytes(); }

 private:
  DeviceMemory scratch_;
  DeviceMemory sink_;  // where the read-back kernel could store, so it is not optimized away
  int blocks_;
};

}  // namespace nkb
