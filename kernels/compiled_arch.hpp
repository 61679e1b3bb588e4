// The architecture the library's device code was compiled for, as the current device runs it.
// sm_90's instructions (thread block clusters, the dependent launches' griddepcontrol) exist in a
// kernel only where it was compiled for compute capability 9.0 or later; a 9.0 device runs older
// code when the build named none of its architectures (CMAKE_CUDA_ARCHITECTURES=80: the driver
// compiles the compute_80 PTX), and there the cluster helpers trap and enter_chain() is empty. So
// whether to launch clusters or dependent launches is asked of the code, not of the device alone.
// Plain C++: included by host code compiled without nvcc.
#pragma once

namespace nk::cuda {

// The virtual architecture (cudaFuncAttributes::ptxVersion: 80, 90, ...) of the library's code
// on the current device, queried once per device and process; 0 where it cannot be queried (the
// CUDA error is cleared). Every kernel file is compiled for the same architectures, so the
// probe kernel of compiled_arch.cu answers for all.
int compiled_arch();

// Whether the code the current device runs has sm_90's cluster and dependent-launch instructions.
inline bool compiled_for_sm90() { return compiled_arch() >= 90; }

}  // namespace nk::cuda
