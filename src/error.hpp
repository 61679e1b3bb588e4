// Errors inside normkit are C++ exceptions carrying an nk_status; the C shim (guard) is the only
// place they are caught, turned into a status and a thread-local message. Nothing thrown here ever
// crosses the C API.
#pragma once

#include <normkit/normkit.h>

#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace nk {

class Error : public std::exception {
 public:
  Error(nk_status status, std::string message) : status_(status), message_(std::move(message)) {}
  nk_status status() const noexcept { return status_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  nk_status status_;
  std::string message_;
};

// The shortest decimal form of `value` that reads back (strtod, strtof) as exactly `value`, so a
// message never shows a rejected number as one it would accept ("1.0000001", not "1"). inf, -inf
// and nan print as such.
std::string round_trip(double value);
std::string round_trip(float value);

// What cat() streams for one part: floating-point values through round_trip, all else as is.
template <class Part>
decltype(auto) message_part(const Part& part) {
  if constexpr (std::is_floating_point_v<Part>) {
    return round_trip(part);
  } else {
    return (part);
  }
}

// Concatenates anything streamable into one message. Every float and double goes through
// round_trip, so no message can print one with the stream's default 6 digits.
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << message_part(parts));
  return out.str();
}

template <class... Parts>
[[noreturn]] void fail(nk_status status, const Parts&... parts) {
  throw Error(status, cat(parts...));
}

// Records "<function>: <message>" as this thread's last error.
void set_last_error(const char* function, const char* message) noexcept;

// Runs body, mapping every exception to a status and a message prefixed by the function name.
template <class Body>
nk_status guard(const char* function, Body&& body) noexcept {
  try {
    body();
    return NK_SUCCESS;
  } catch (const Error& e) {
    set_last_error(function, e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_last_error(function, "out of host memory");
    return NK_ERROR_OUT_OF_MEMORY;
  } catch (const std::length_error&) {  // a container asked for more than it can ever hold
    set_last_error(function, "out of host memory (a size beyond what can be allocated)");
    return NK_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(function, e.what());
    return NK_ERROR_INTERNAL;
  } catch (...) {
    set_last_error(function, "unknown internal error");
    return NK_ERROR_INTERNAL;
  }
}

}  // namespace nk
