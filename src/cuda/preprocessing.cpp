// The CUDA backend's preprocessing normalizers: no kernels yet, every call refuses with
// NK_ERROR_NOT_SUPPORTED after validation.
#include "../backend.hpp"
#include "../error.hpp"

namespace nk::cuda {

[[noreturn]] static void no_kernels(const char* op) {
  fail(NK_ERROR_NOT_SUPPORTED, "the CUDA backend has no kernels for ", op, " yet");
}

void run(const nk_context_s&, const QuantileArgs&) { no_kernels("quantiles"); }
void run(const nk_context_s&, const ScaleArgs&) { no_kernels("column scaling"); }
void run(const nk_context_s&, const L2NormalizeArgs&) { no_kernels("L2 normalization"); }

}  // namespace nk::cuda
