// How much dynamic shared memory one block of a kernel may opt in to on the current device: the
// row norms stage whole rows there (row_norm_tiling.hpp) when they fit, and fall back to the
// generic path where they do not. Plain C++: included by host code compiled without nvcc.
#pragma once

namespace nk::cuda {

// Bytes of dynamic plus static shared memory a staged row's block may use after
// cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize): device_shared_optin(),
// capped at kPortableSharedLimit. Every supported GPU grants at least that much, so which rows are
// staged, and so the bits of every output, do not depend on the GPU model (an H100's 227 KB would
// stage longer rows than an A100's 163 KB or an RTX's 99 KB, with different rounding).
// Throws nk::Error(NK_ERROR_CUDA) when the device cannot be queried.
int dynamic_shared_limit();

// The device's own opt-in limit (cudaDevAttrMaxSharedMemoryPerBlockOptin, cached), uncapped, or 0
// when it reports none: for what only speed depends on (a staged head whose rest is reread with
// the same bits). Test-only knob NORMKIT_TEST_SHARED_LIMIT=<bytes>: the limit is at most that, and
// exactly that on a device that reports none (GPGPU-Sim, whose runtime does not implement the
// attribute and whose functional mode has no limit), so the simulated lane reaches the staged
// paths (rows, and the heads an H100 stages) and tests can force their fallbacks. Throws
// nk::Error(NK_ERROR_CUDA) when the device cannot be queried.
int device_shared_optin();

// What sm_86, sm_89 and sm_120 grant one block, the least of the GPUs normkit builds for (sm_80
// and later).
constexpr int kPortableSharedLimit = 99 * 1024;

// Blocks that need more dynamic shared memory than this must opt in (CUDA's default limit).
constexpr int kDefaultDynamicShared = 48 * 1024;

}  // namespace nk::cuda
