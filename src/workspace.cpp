#include "workspace.hpp"

#include <new>

#include "error.hpp"

namespace nk {

void* context_workspace(const nk_context_s& ctx, size_t bytes) {
  if (ctx.workspace != nullptr && ctx.workspace_bytes < bytes) {
    fail(NK_ERROR_WORKSPACE, "the context's workspace has ", ctx.workspace_bytes,
         " bytes and this call needs ", bytes,
         " (ask the op's *_workspace_size query and set a larger workspace)");
  }
  return ctx.workspace;
}

HostScratch::HostScratch(const nk_context_s& ctx, size_t bytes) {
  data_ = context_workspace(ctx, bytes);
  if (data_ != nullptr) return;
  if (bytes == 0) return;
  owned_.reset(new (std::nothrow) unsigned char[bytes]);
  if (!owned_) {
    fail(NK_ERROR_OUT_OF_MEMORY, "could not allocate ", bytes,
         " bytes of host scratch memory (set a workspace on the context to avoid allocation)");
  }
  data_ = owned_.get();
}

}  // namespace nk
