// Scratch memory of an op. One function per op lays its scratch out through a Carver: called with
// no base it only measures (the *_workspace_size queries), called with a base it hands out the
// same sub-buffers, so the size query and the op can never disagree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "context.hpp"

namespace nk {

constexpr size_t kWorkspaceAlignment = 256;

inline size_t align_up(size_t bytes) {
  return (bytes + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
}

class Carver {
 public:
  explicit Carver(void* base = nullptr) : base_(static_cast<unsigned char*>(base)) {}

  // `count` elements of T, aligned to kWorkspaceAlignment; nullptr while measuring.
  template <class T>
  T* take(int64_t count) {
    size_t at = offset_;
    offset_ += align_up(static_cast<size_t>(count) * sizeof(T));
    return base_ ? reinterpret_cast<T*>(base_ + at) : nullptr;
  }
  size_t bytes() const { return offset_; }

 private:
  unsigned char* base_;
  size_t offset_ = 0;
};

// The context's workspace when one is set and holds `bytes` (NK_ERROR_WORKSPACE when it is too
// small); nullptr when none is set, and the op allocates its own.
void* context_workspace(const nk_context_s& ctx, size_t bytes);

// Host scratch of `bytes` bytes: the context's workspace when one is set (NK_ERROR_WORKSPACE if it
// is too small), otherwise an allocation owned by this object (NK_ERROR_OUT_OF_MEMORY on failure).
class HostScratch {
 public:
  HostScratch(const nk_context_s& ctx, size_t bytes);
  void* data() const { return data_; }

 private:
  std::unique_ptr<unsigned char[]> owned_;
  void* data_ = nullptr;
};

}  // namespace nk
