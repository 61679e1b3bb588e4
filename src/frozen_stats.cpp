// Frozen statistics files (format in normkit.h): explicit little-endian encoding, a 64-bit FNV-1a
// checksum (a change to any single byte always changes it: each step of the hash is a bijection
// of its state), atomic saves (temporary file in the same folder, fsync, rename), and loads that
// check, in order: magic, version, size against the feature count, checksum, then every field, so
// each failure says what it found. The mismatch checks name both values.
#include "frozen_stats.hpp"

#include <fcntl.h>
#include <normkit/normkit.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
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
// `path` and flushes the folder, so `path` names either the old file or the new one, complete. The
// new file gets the old one's permissions, or 0666 less the umask (as any newly created file). On
// a failure the temporary file is removed and the message names the step that failed.
void write_atomically(const std::string& path, const std::vector<unsigned char>& bytes) {
  static std::atomic<unsigned> serial{0};
  struct stat old {};
  const bool replacing = ::stat(path.c_str(), &old) == 0 && S_ISREG(old.st_mode);
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 64 && fd < 0; ++attempt) {
    tmp = cat(path, ".tmp.", ::getpid(), ".", serial++);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    fail(NK_ERROR_IO, "cannot create a temporary file beside ", path, ": ", std::strerror(errno));
  }
  auto give_up = [&](const char* step, int err) {
    if (fd >= 0) ::close(fd);
    std::remove(tmp.c_str());
    fail(NK_ERROR_IO, "cannot write ", path, " (", step, "): ", std::strerror(err));
  };
  if (replacing && ::fchmod(fd, old.st_mode & 07777) != 0) give_up("fchmod", errno);
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) give_up("write", n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) give_up("fsync", errno);
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) give_up("close", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) give_up("rename", errno);
  // The rename itself is durable once the folder is flushed.
  const size_t slash = path.find_last_of('/');
  const std::string folder = slash == std::string::npos ? "."
                             : slash == 0               ? "/"
                                                        : path.substr(0, slash);
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

// An open statistics file: its size, and its first bytes (up to the header).
struct OpenFile {
  std::FILE* f = nullptr;
  size_t size = 0;
  std::vector<unsigned char> head;
  ~OpenFile() {
    if (f) std::fclose(f);
  }
};

// Opens a regular file and reads at most the header: the rest is read only once the header and
// the file size agree, so a huge or foreign file is refused after a few bytes.
void open_stats_file(const char* path, OpenFile& file) {
  file.f = std::fopen(path, "rb");
  if (!file.f) fail(NK_ERROR_IO, "cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(::fileno(file.f), &st) != 0)
    fail(NK_ERROR_IO, "cannot stat ", path, ": ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(NK_ERROR_IO, path, " is not a regular file");
  file.size = static_cast<size_t>(st.st_size);
  file.head.resize(file.size < kHeaderBytes ? file.size : kHeaderBytes);
  if (std::fread(file.head.data(), 1, file.head.size(), file.f) != file.head.size()) {
    fail(NK_ERROR_IO, "cannot read ", path);
  }
}

}  // namespace

// The frozen statistics must be valid, and for this kind of layer, dtype, feature count and eps.
void check_frozen(const nk_frozen_stats* stats, nk_stats_kind kind, nk_dtype dtype,
                  int64_t features, double eps) {
  require_pointer(stats, "stats");
  require_pointer(stats->center, "stats->center");
  require_pointer(stats->spread, "stats->spread");
  check_fields(NK_ERROR_INVALID_VALUE, "stats->", stats->kind, stats->dtype, stats->running_var,
               stats->features, stats->samples, stats->eps, stats->center, stats->spread);
  if (stats->kind != kind) {
    const char* want = kind_name(kind);
    fail(NK_ERROR_INVALID_VALUE, "kind = ", kind_name(stats->kind),
         " in the frozen statistics but ",
         want ? want : cat("unknown (", static_cast<int>(kind), ")"), " in the layer");
  }
  if (stats->dtype != dtype) {
    fail(NK_ERROR_INVALID_VALUE, "dtype = ", dtype_name(stats->dtype),
         " in the frozen statistics but ",
         is_valid(dtype) ? std::string(dtype_name(dtype))
                         : cat("unknown (", static_cast<int>(dtype), ")"),
         " in the layer");
  }
  if (stats->features != features) {
    fail(NK_ERROR_INVALID_VALUE, "features = ", stats->features, " in the frozen statistics but ",
         features, " in the layer");
  }
  if (stats->eps != eps) {
    fail(NK_ERROR_INVALID_VALUE, "eps = ", stats->eps, " in the frozen statistics but ", eps,
         " in the layer");
  }
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
    nk::OpenFile file;
    nk::open_stats_file(path, file);
    std::vector<unsigned char>& b = file.head;
    const std::string where = std::string(path) + ": ";
    const size_t size = file.size;
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
    b.resize(size);  // the header and the size agree: read the rest
    if (std::fread(b.data() + nk::kHeaderBytes, 1, size - nk::kHeaderBytes, file.f) !=
        size - nk::kHeaderBytes) {
      nk::fail(NK_ERROR_IO, where, "cannot read the ", size, " bytes the file had when opened");
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
    nk::require_pointer(ctx, "ctx");
    nk::require_pointer(desc, "desc");
    nk::validate_params(params, nk::ChannelNorm::kBatch);
    if (params->phase != NK_INFERENCE) {
      nk::fail(NK_ERROR_INVALID_VALUE,
               "params->phase = NK_TRAINING: expected NK_INFERENCE (frozen statistics are for "
               "inference)");
    }
    const nk::ChannelShape shape = nk::channel_shape(nk::ChannelNorm::kBatch, desc, 1);
    nk::check_frozen(stats, NK_STATS_BATCH_NORM, shape.dtype, shape.c, params->eps);
    nk::ChannelForwardArgs a{};
    a.shape = shape;
    a.params = *params;
    a.x = x;
    a.weight = weight;
    a.bias = bias;
    a.running_mean = stats->center;  // read only in inference
    a.running_var = stats->spread;
    a.y = y;
    nk::validate(a, *ctx);
    if (ctx->backend == NK_BACKEND_CUDA) {
      nk::cuda::run_with_host_running_stats(*ctx, a);
    } else {
      nk::run(*ctx, a);
    }
  });
}

}  // extern "C"
