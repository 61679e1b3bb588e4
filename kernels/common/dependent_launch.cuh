// Programmatic dependent launch (compute capability 9.0 and later): the kernels of one call
// (channel norms: statistics, finalize, apply, counter, or a one-read tile and the counter; row
// norms: the row kernel and the weight-gradient columns, or a split row's two passes) are launched
// so that the next one may be scheduled while the one before it is still running, which hides most
// of a launch's latency on the small shapes, where those latencies are most of the call.
//
// The rule that keeps this exactly stream-ordered: every kernel launched with launch_dependent
// calls enter_chain() before it touches global memory, in every thread, before any return.
// griddepcontrol.wait returns only when the grids this one depends on have completed and their
// writes are visible; so a kernel's reads and writes still follow every earlier kernel's (and,
// the grids being chained, every earlier operation of the stream). launch_dependents then lets the
// next kernel's blocks be scheduled at once; they wait in turn. Code compiled before sm_90 has
// neither (a device before 9.0, or a build with none of the device's architectures: see
// compiled_arch.hpp), and its kernels are launched plainly; after a kernel that never releases its
// dependents (a plain one, another library's) the next kernel starts once its blocks have exited.
// tests/test_dependent_launch.cpp checks the rule on the sources.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "compiled_arch.hpp"

namespace nk::dev {

// First statement of every kernel launched by launch_dependent (see above).
__device__ __forceinline__ void enter_chain() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether launches may overlap the kernel before them: only where the code the device runs waits
// (cuda::compiled_for_sm90). The test-only knob NORMKIT_TEST_SERIAL_LAUNCH=1, read once,
// launches every kernel plainly: no bit depends on it, and it gives the benchmarks their baseline.
inline bool dependent_launch_allowed() {
  static const bool allowed = [] {
    const char* knob = std::getenv("NORMKIT_TEST_SERIAL_LAUNCH");
    return knob == nullptr || std::strcmp(knob, "1") != 0;
  }();
  return allowed && cuda::compiled_for_sm90();
}

// Enqueues kernel<<<grid, block, shared_bytes, stream>>>(args...) allowing programmatic stream
// serialization; the caller checks cudaGetLastError as after <<<>>>.
template <class... Params, class... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                      cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = dependent_launch_allowed() ? 1 : 0;
  cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace nk::dev
