// Benchmark input data, made on the device: values uniform in [lo, hi) from a hash of the element
// index and a seed. Deterministic and stateless, so large buffers fill at memory speed.
#pragma once

#include <cuda_runtime_api.h>
#include <normkit/normkit.h>

#include <cstdint>

namespace nkb {

// Enqueues the fill of `count` elements of `dtype` at `ptr` on `stream`; throws BenchError when
// the launch fails.
void fill_uniform(void* ptr, nk_dtype dtype, int64_t count, float lo, float hi, uint32_t seed,
                  cudaStream_t stream);

}  // namespace nkb
