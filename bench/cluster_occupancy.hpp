// How many thread block clusters of the split tiles' shape the device holds at once: the A of the
// predictions for clusters (bench/results/2026-12-06-static-sixteen-parts/predict.py), which the
// occupancy API answers only on the GPU itself.
#pragma once

#include <cstddef>
#include <string>

namespace nkb {

// cudaOccupancyMaxActiveClusters for clusters of `cluster_ctas` blocks of `threads` threads with
// `shared_bytes` of dynamic shared memory each (above 8 blocks, a non-portable size), as text, or
// "n/a (why)" where the device has no clusters or refuses the size.
std::string resident_clusters(unsigned cluster_ctas, int threads, size_t shared_bytes);

}  // namespace nkb
