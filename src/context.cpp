// C entry points of the context: creation, destruction, stream and workspace.
#include "context.hpp"

#include <cstdint>
#include <memory>

#include "error.hpp"
#include "validate.hpp"
#include "workspace.hpp"

extern "C" {

nk_status nk_context_create(nk_backend backend, int device, nk_context* out) {
  return nk::guard("nk_context_create", [&] {
    nk::require_pointer(out, "out");
    if (backend != NK_BACKEND_CPU && backend != NK_BACKEND_CUDA) {
      nk::fail(NK_ERROR_INVALID_VALUE, "backend = ", static_cast<int>(backend),
               " is not an nk_backend (expected NK_BACKEND_CPU or NK_BACKEND_CUDA)");
    }
    auto ctx = std::make_unique<nk_context_s>();
    ctx->backend = backend;
    if (backend == NK_BACKEND_CUDA) nk::cuda::init_context(*ctx, device);
    *out = ctx.release();
  });
}

nk_status nk_context_destroy(nk_context ctx) {
  return nk::guard("nk_context_destroy", [&] { delete ctx; });
}

nk_status nk_context_get_backend(nk_context ctx, nk_backend* out) {
  return nk::guard("nk_context_get_backend", [&] {
    nk::require_pointer(ctx, "ctx");
    nk::require_pointer(out, "out");
    *out = ctx->backend;
  });
}

nk_status nk_context_set_stream(nk_context ctx, void* cuda_stream) {
  return nk::guard("nk_context_set_stream", [&] {
    nk::require_pointer(ctx, "ctx");
    ctx->stream = cuda_stream;
  });
}

nk_status nk_context_set_workspace(nk_context ctx, void* ptr, size_t bytes) {
  return nk::guard("nk_context_set_workspace", [&] {
    nk::require_pointer(ctx, "ctx");
    if (ptr == nullptr && bytes != 0) {
      nk::fail(NK_ERROR_INVALID_VALUE, "ptr = NULL with bytes = ", bytes,
               ": expected a buffer, or bytes = 0 to remove the workspace");
    }
    if (reinterpret_cast<uintptr_t>(ptr) % nk::kWorkspaceAlignment != 0) {
      nk::fail(NK_ERROR_INVALID_VALUE, "ptr = ", ptr, " is not aligned to ",
               nk::kWorkspaceAlignment, " bytes");
    }
    ctx->workspace = ptr;
    ctx->workspace_bytes = bytes;
  });
}

}  // extern "C"
