// The CUDA backend's ops. No kernels exist yet: every op and its workspace query refuses with
// NK_ERROR_NOT_SUPPORTED, naming the op, so callers can fall back to a CPU context.
#include "../backend.hpp"
#include "../error.hpp"

namespace nk::cuda {
namespace {

[[noreturn]] void no_kernels(const char* family, const char* direction) {
  fail(NK_ERROR_NOT_SUPPORTED, "the CUDA backend has no kernels for ", family, " ", direction,
       " yet; run it on a CPU context (NK_BACKEND_CPU)");
}

}  // namespace

size_t workspace_size(const ChannelForwardArgs& a) {
  no_kernels(family_name(a.shape.kind), "forward");
}
size_t workspace_size(const ChannelBackwardArgs& a) {
  no_kernels(family_name(a.shape.kind), "backward");
}
size_t workspace_size(const RowForwardArgs& a) { no_kernels(family_name(a.shape), "forward"); }
size_t workspace_size(const RowBackwardArgs& a) { no_kernels(family_name(a.shape), "backward"); }

void run(const nk_context_s&, const ChannelForwardArgs& a) {
  no_kernels(family_name(a.shape.kind), "forward");
}
void run(const nk_context_s&, const ChannelBackwardArgs& a) {
  no_kernels(family_name(a.shape.kind), "backward");
}
void run(const nk_context_s&, const RowForwardArgs& a) {
  no_kernels(family_name(a.shape), "forward");
}
void run(const nk_context_s&, const RowBackwardArgs& a) {
  no_kernels(family_name(a.shape), "backward");
}

}  // namespace nk::cuda
