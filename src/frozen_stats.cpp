// Frozen statistics files (format in normkit.h): explicit little-endian encoding, a 64-bit FNV-1a
// checksum (a change to any single byte always changes it: each step of the hash is a bijection
// of its state), atomic saves (temporary file in the same folder, fsync, rename), and loads that
// check, in order: magic, version, size against the feature count, checksum, then every field, so
// each failure says what it found. The mismatch checks name both values.
#include "frozen_stats.hpp"

#include <fcntl.h>
#include <normkit/normkit.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "validate.hpp"

namespace nk {
namespace {

constexpr char kMagic[8] = {'N', 'K', 'S', 'T', 'A', 'T', 'S', '\0'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 48, kChecksumBytes = 8;

}  // namespace

const char* kind_name(int64_t kind) {
  switch (kind) {
    case NK_STATS_BATCH_NORM:
      return "NK_STATS_BATCH_NORM";
    case NK_STATS_INSTANCE_NORM:
      return "NK_STATS_INSTANCE_NORM";
    case NK_STATS_STANDARDIZE:
      return "NK_STATS_STANDARDIZE";
    case NK_STATS_MIN_MAX:
      return "NK_STATS_MIN_MAX";
    case NK_STATS_ROBUST:
      return "NK_STATS_ROBUST";
  }
  return nullptr;
}

namespace {

uint64_t fnv1a(const unsigned char* p, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

template <class T>
void put(std::vector<unsigned char>& out, T value) {
  unsigned char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // normkit's targets are little-endian
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

template <class T>
T get(const unsigned char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// The fields every nk_frozen_stats must have, with `where` naming the source in messages.
void check_fields(nk_status status, const char* where, int64_t kind, int64_t dtype,
                  int64_t convention, int64_t features, int64_t samples, double eps,
                  const float* center, const float* spread) {
  if (!kind_name(kind)) fail(status, where, "kind = ", kind, " is not an nk_stats_kind");
  if (!is_valid(static_cast<nk_dtype>(dtype)))
    fail(status, where, "dtype = ", dtype, " is not an nk_dtype");
  if (convention != NK_RUNNING_VAR_UNBIASED && convention != NK_RUNNING_VAR_BIASED) {
    fail(status, where, "running_var = ", convention, " is not an nk_running_var");
  }
  if (features < 1) fail(status, where, "features = ", features, ": expected >= 1");
  if (samples < 1) fail(status, where, "samples = ", samples, ": expected >= 1");
  if (!std::isfinite(eps) || eps < 0)
    fail(status, where, "eps = ", eps, ": expected a finite value >= 0");
  for (int64_t i = 0; i < features; ++i) {
    if (!std::isfinite(center[i]))
      fail(status, where, "center[", i, "] = ", center[i], " is not finite");
    if (!std::isfinite(spread[i]) || spread[i] < 0) {
      fail(status, where, "spread[", i, "] = ", spread[i], ": a variance must be finite and >= 0");
    }
  }
}

std::vector<unsigned char> encode(const nk_frozen_stats& s) {
  std::vector<unsigned char> out(kMagic, kMagic + sizeof(kMagic));
  put<uint32_t>(out, kVersion);
  put<uint32_t>(out, static_cast<uint32_t>(s.kind));
  put<uint32_t>(out, static_cast<uint32_t>(s.dtype));
  put<uint32_t>(out, static_cast<uint32_t>(s.running_var));
  put<int64_t>(out, s.features);
  put<int64_t>(out, s.samples);
  put<double>(out, s.eps);
  for (int64_t i = 0; i < s.features; ++i) put<float>(out, s.center[i]);
  for (int64_t i = 0; i < s.features; ++i) put<float>(out, s.spread[i]);
  put<uint64_t>(out, fnv1a(out.data(), out.size()));
  return out;
}

// Writes all bytes to a new temporary file beside `path`, flushes it to disk, renames it over
// `path`. On any failure the temporary file is removed and `path` is untouched.
void write_atomically(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = mkstemp(tmp.data());
  if (fd < 0)
    fail(NK_ERROR_IO, "cannot create a temporary file beside ", path, ": ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  const int saved = errno;
  const bool ok = done == bytes.size() && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = ok ? errno : saved;
    std::remove(tmp.c_str());
    fail(NK_ERROR_IO, "cannot write ", path, ": ", std::strerror(err));
  }
}

std::vector<unsigned char> read_all(const char* path) {
  std::FILE* f = std::fopen(path, "rb");
  if (!f) fail(NK_ERROR_IO, "cannot open ", path, ": ", std::strerror(errno));
  std::vector<unsigned char> bytes;
  unsigned char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0)
    bytes.insert(bytes.end(), buffer, buffer + n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) fail(NK_ERROR_IO, "cannot read ", path);
  return bytes;
}

}  // namespace

// The frozen statistics must be for this kind of layer, dtype, feature count and eps.
void check_frozen(const nk_frozen_stats* stats, nk_stats_kind kind, nk_dtype dtype,
                  int64_t features, double eps) {
  require_pointer(stats, "stats");
  if (stats->kind != kind) {
    const char* have = kind_name(stats->kind);
    const char* want = kind_name(kind);
    fail(NK_ERROR_INVALID_VALUE, "kind = ", have ? have : "(unknown)",
         " in the frozen statistics but ", want ? want : "(unknown)", " in the layer");
  }
  if (stats->dtype != dtype) {
    fail(NK_ERROR_INVALID_VALUE, "dtype = ", dtype_name(stats->dtype),
         " in the frozen statistics but ", dtype_name(dtype), " in the layer");
  }
  if (stats->features != features) {
    fail(NK_ERROR_INVALID_VALUE, "features = ", stats->features, " in the frozen statistics but ",
         features, " in the layer");
  }
  if (stats->eps != eps) {
    fail(NK_ERROR_INVALID_VALUE, "eps = ", stats->eps, " in the frozen statistics but ", eps,
         " in the layer");
  }
  require_pointer(stats->center, "stats->center");
  require_pointer(stats->spread, "stats->spread");
}

}  // namespace nk

extern "C" {

nk_status nk_frozen_stats_save(const char* path, const nk_frozen_stats* stats) {
  return nk::guard("nk_frozen_stats_save", [&] {
    nk::require_pointer(path, "path");
    nk::require_pointer(stats, "stats");
    if (stats->features < 1) {
      nk::fail(NK_ERROR_BAD_SHAPE, "stats->features = ", stats->features, ": expected >= 1");
    }
    nk::require_pointer(stats->center, "stats->center");
    nk::require_pointer(stats->spread, "stats->spread");
    nk::check_fields(NK_ERROR_INVALID_VALUE, "stats->", stats->kind, stats->dtype,
                     stats->running_var, stats->features, stats->samples, stats->eps, stats->center,
                     stats->spread);
    nk::write_atomically(path, nk::encode(*stats));
  });
}

nk_status nk_frozen_stats_load(const char* path, nk_frozen_stats* stats) {
  return nk::guard("nk_frozen_stats_load", [&] {
    nk::require_pointer(path, "path");
    nk::require_pointer(stats, "stats");
    const std::vector<unsigned char> b = nk::read_all(path);
    const std::string where = std::string(path) + ": ";
    const size_t size = b.size();
    if (size < sizeof(nk::kMagic) || std::memcmp(b.data(), nk::kMagic, sizeof(nk::kMagic)) != 0) {
      nk::fail(NK_ERROR_FILE_FORMAT, where, "not a normkit statistics file (",
               size < sizeof(nk::kMagic) ? "too short for the magic" : "wrong magic", ", ", size,
               " bytes)");
    }
    if (size < 12) nk::fail(NK_ERROR_FILE_FORMAT, where, "truncated: ", size, " bytes");
    const uint32_t version = nk::get<uint32_t>(b.data() + 8);
    if (version > nk::kVersion) {
      nk::fail(NK_ERROR_NOT_SUPPORTED, where, "format version ", version,
               " was written by a newer normkit; this one reads version ", nk::kVersion);
    }
    if (version == 0) nk::fail(NK_ERROR_FILE_FORMAT, where, "format version 0 does not exist");
    const size_t minimum = nk::kHeaderBytes + nk::kChecksumBytes;
    if (size < minimum) {
      nk::fail(NK_ERROR_FILE_FORMAT, where, "truncated: ", size, " bytes, a header alone takes ",
               minimum);
    }
    const int64_t features = nk::get<int64_t>(b.data() + 24);
    if (features < 1)
      nk::fail(NK_ERROR_FILE_FORMAT, where, "features = ", features, ": expected >= 1");
    // Compared as a count first: 8 * features could overflow for a corrupted count.
    const uint64_t room = (size - minimum) / 8;
    if (static_cast<uint64_t>(features) > room) {
      nk::fail(NK_ERROR_FILE_FORMAT, where, "truncated: ", size, " bytes cannot hold ", features,
               " features");
    }
    if (size != minimum + 8 * static_cast<uint64_t>(features)) {
      nk::fail(NK_ERROR_FILE_FORMAT, where, "trailing bytes: ", size, " bytes where ", features,
               " features take ", minimum + 8 * static_cast<uint64_t>(features));
    }
    const uint64_t stored = nk::get<uint64_t>(b.data() + size - 8);
    if (stored != nk::fnv1a(b.data(), size - 8)) {
      nk::fail(NK_ERROR_FILE_FORMAT, where, "checksum mismatch: the file is corrupted");
    }
    std::vector<float> center(static_cast<size_t>(features)), spread(static_cast<size_t>(features));
    std::memcpy(center.data(), b.data() + nk::kHeaderBytes, 4 * static_cast<size_t>(features));
    std::memcpy(spread.data(), b.data() + nk::kHeaderBytes + 4 * features,
                4 * static_cast<size_t>(features));
    const int64_t samples = nk::get<int64_t>(b.data() + 32);
    const double eps = nk::get<double>(b.data() + 40);
    nk::check_fields(NK_ERROR_FILE_FORMAT, where.c_str(), nk::get<uint32_t>(b.data() + 12),
                     nk::get<uint32_t>(b.data() + 16), nk::get<uint32_t>(b.data() + 20), features,
                     samples, eps, center.data(), spread.data());
    auto* c = static_cast<float*>(std::malloc(center.size() * sizeof(float)));
    auto* s = static_cast<float*>(std::malloc(spread.size() * sizeof(float)));
    if (!c || !s) {
      std::free(c);
      std::free(s);
      nk::fail(NK_ERROR_OUT_OF_MEMORY, "cannot allocate ", features, " features");
    }
    std::memcpy(c, center.data(), center.size() * sizeof(float));
    std::memcpy(s, spread.data(), spread.size() * sizeof(float));
    *stats = nk_frozen_stats{static_cast<nk_stats_kind>(nk::get<uint32_t>(b.data() + 12)),
                             static_cast<nk_dtype>(nk::get<uint32_t>(b.data() + 16)),
                             static_cast<nk_running_var>(nk::get<uint32_t>(b.data() + 20)),
                             features,
                             samples,
                             eps,
                             c,
                             s};
  });
}

void nk_frozen_stats_release(nk_frozen_stats* stats) {
  if (!stats) return;
  std::free(stats->center);
  std::free(stats->spread);
  stats->center = stats->spread = nullptr;
}

nk_status nk_frozen_stats_check(const nk_frozen_stats* stats, nk_stats_kind kind, nk_dtype dtype,
                                int64_t features, double eps) {
  return nk::guard("nk_frozen_stats_check",
                   [&] { nk::check_frozen(stats, kind, dtype, features, eps); });
}

nk_status nk_batch_norm_forward_frozen(nk_context ctx, const nk_act_desc* desc,
                                       const nk_norm_params* params, const nk_frozen_stats* stats,
                                       const void* x, const float* weight, const float* bias,
                                       void* y) {
  return nk::guard("nk_batch_norm_forward_frozen", [&] {
    nk::require_cpu_context(ctx, "batch norm with frozen statistics (host arrays)");
    nk::require_pointer(desc, "desc");
    nk::require_pointer(params, "params");
    if (params->phase != NK_INFERENCE) {
      nk::fail(NK_ERROR_INVALID_VALUE, "params->phase must be NK_INFERENCE with frozen statistics");
    }
    nk::check_frozen(stats, NK_STATS_BATCH_NORM, desc->dtype, desc->c, params->eps);
    nk::ChannelForwardArgs a{};
    a.shape = nk::channel_shape(nk::ChannelNorm::kBatch, desc, 1);
    a.params = *params;
    a.x = x;
    a.weight = weight;
    a.bias = bias;
    a.running_mean = stats->center;  // read only in inference
    a.running_var = stats->spread;
    a.y = y;
    nk::validate(a, nk::Span{ctx->workspace, ctx->workspace_bytes});
    nk::run(*ctx, a);
  });
}

}  // extern "C"
