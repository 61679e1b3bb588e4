// Loads NCCL with dlopen on first use (see nccl_library.hpp).
#include "nccl_library.hpp"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include "error.hpp"

namespace nk {
namespace {

struct Loaded {
  NcclLibrary api{};
  std::string error;  // empty when loaded
};

template <class F>
bool bind(void* handle, const char* name, F& out, std::string& error) {
  out = reinterpret_cast<F>(dlsym(handle, name));
  if (out == nullptr) error = std::string("libnccl.so.2 has no symbol ") + name;
  return out != nullptr;
}

Loaded load() {
  Loaded l;
  void* handle = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    l.error = std::string("NCCL could not be loaded (") + (why ? why : "libnccl.so.2") +
              "): put libnccl.so.2 on the loader's path, e.g. LD_LIBRARY_PATH";
    return l;
  }
  bind(handle, "ncclAllGather", l.api.all_gather, l.error) &&
      bind(handle, "ncclCommCount", l.api.comm_count, l.error) &&
      bind(handle, "ncclCommCuDevice", l.api.comm_cu_device, l.error) &&
      bind(handle, "ncclGetErrorString", l.api.error_string, l.error);
  return l;  // the handle stays open for the life of the process, as the communicators do
}

}  // namespace

const NcclLibrary& nccl_library() {
  static const Loaded loaded = load();  // thread-safe, once
  if (!loaded.error.empty()) fail(NK_ERROR_NOT_SUPPORTED, loaded.error);
  return loaded.api;
}

void check_nccl(ncclResult_t result, const char* what) {
  if (result != ncclSuccess) {
    fail(NK_ERROR_CUDA, what, " failed: ", nccl_library().error_string(result));
  }
}

}  // namespace nk
