// The thread-local last-error message and the library-level C entry points.
#include "error.hpp"

#include <charconv>
#include <cstring>

namespace nk {
namespace {
// A fixed buffer: recording an error must not allocate (it runs after bad_alloc too).
thread_local char last_error[1024] = "";
// std::to_chars without a format or precision gives the shortest form that round-trips.
template <class Real>
std::string shortest(Real value) {
  char text[64];
  const std::to_chars_result r = std::to_chars(text, text + sizeof(text), value);
  return r.ec == std::errc() ? std::string(text, r.ptr) : std::string("(unprintable)");
}

}  // namespace

std::string round_trip(double value) { return shortest(value); }
std::string round_trip(float value) { return shortest(value); }

void set_last_error(const char* function, const char* message) noexcept {
  size_t used = 0;
  for (const char* part : {function, ": ", message}) {
    size_t len = std::strlen(part);
    size_t room = sizeof(last_error) - 1 - used;
    if (len > room) len = room;
    std::memcpy(last_error + used, part, len);
    used += len;
  }
  last_error[used] = '\0';
}

}  // namespace nk

extern "C" {

int nk_version(void) {
  return 10000 * NK_VERSION_MAJOR + 100 * NK_VERSION_MINOR + NK_VERSION_PATCH;
}

const char* nk_status_name(nk_status status) {
  switch (status) {
    case NK_SUCCESS:
      return "NK_SUCCESS";
    case NK_ERROR_INVALID_VALUE:
      return "NK_ERROR_INVALID_VALUE";
    case NK_ERROR_BAD_SHAPE:
      return "NK_ERROR_BAD_SHAPE";
    case NK_ERROR_NOT_SUPPORTED:
      return "NK_ERROR_NOT_SUPPORTED";
    case NK_ERROR_WORKSPACE:
      return "NK_ERROR_WORKSPACE";
    case NK_ERROR_CUDA:
      return "NK_ERROR_CUDA";
    case NK_ERROR_OUT_OF_MEMORY:
      return "NK_ERROR_OUT_OF_MEMORY";
    case NK_ERROR_INTERNAL:
      return "NK_ERROR_INTERNAL";
    case NK_ERROR_IO:
      return "NK_ERROR_IO";
    case NK_ERROR_FILE_FORMAT:
      return "NK_ERROR_FILE_FORMAT";
  }
  return "NK_UNKNOWN_STATUS";
}

const char* nk_last_error(void) { return nk::last_error; }

nk_norm_params nk_norm_params_default(void) {
  nk_norm_params p;
  p.phase = NK_TRAINING;
  p.eps = 1e-5;
  p.momentum = 0.1;
  p.momentum_mode = NK_MOMENTUM_EXPONENTIAL;
  p.running_var = NK_RUNNING_VAR_UNBIASED;
  return p;
}

}  // extern "C"
