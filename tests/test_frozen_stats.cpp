// Frozen statistics files and their checks: round trip, atomic replacement, a failing save that
// leaves the old file, every truncation, every single-bit flip, foreign and newer-version files,
// trailing bytes, invalid fields behind a valid checksum, the mismatch checks naming both values,
// and batch norm inference with frozen statistics. A failing load leaves its output untouched.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include "test_support.hpp"

namespace {

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// FNV-1a, 64 bits, as the format documents (to build files with a valid checksum).
uint64_t fnv1a(const std::vector<unsigned char>& b, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

void reseal(std::vector<unsigned char>& b) {
  const uint64_t h = fnv1a(b, b.size() - 8);
  std::memcpy(b.data() + b.size() - 8, &h, 8);
}

class FrozenStatsTest : public testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/normkit_frozen_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/bn.nkstats";
    center_ = {0.5f, -1.25f, 3.0f};
    spread_ = {2.0f, 0.25f, 1.0f};
    stats_ =
        nk_frozen_stats{NK_STATS_BATCH_NORM, NK_F32,        NK_RUNNING_VAR_UNBIASED, 3, 4096, 1e-5,
                        center_.data(),      spread_.data()};
  }
  void TearDown() override {
    std::remove(path_.c_str());
    rmdir(dir_.c_str());
  }
  // Loads `path_`, expecting `status`; checks the output is untouched on failure.
  void expect_load(nk_status status, const std::string& fragment = "") {
    nk_frozen_stats out{};
    out.features = -77;
    const nk_status got = nk_frozen_stats_load(path_.c_str(), &out);
    EXPECT_EQ(got, status) << nk_last_error();
    if (got != NK_SUCCESS) {
      EXPECT_EQ(out.features, -77) << "a failing load wrote its output";
      EXPECT_EQ(out.center, nullptr);
      if (!fragment.empty()) {
        EXPECT_NE(std::string(nk_last_error()).find(fragment), std::string::npos)
            << nk_last_error();
      }
    } else {
      nk_frozen_stats_release(&out);
    }
  }
  std::string dir_, path_;
  std::vector<float> center_, spread_;
  nk_frozen_stats stats_{};
};

TEST_F(FrozenStatsTest, RoundTrip) {
  ASSERT_EQ(nk_frozen_stats_save(path_.c_str(), &stats_), NK_SUCCESS) << nk_last_error();
  EXPECT_EQ(read_file(path_).size(), 48u + 2 * 3 * 4 + 8);
  nk_frozen_stats loaded{};
  ASSERT_EQ(nk_frozen_stats_load(path_.c_str(), &loaded), NK_SUCCESS) << nk_last_error();
  EXPECT_EQ(loaded.kind, NK_STATS_BATCH_NORM);
  EXPECT_EQ(loaded.dtype, NK_F32);
  EXPECT_EQ(loaded.running_var, NK_RUNNING_VAR_UNBIASED);
  EXPECT_EQ(loaded.features, 3);
  EXPECT_EQ(loaded.samples, 4096);
  EXPECT_EQ(loaded.eps, 1e-5);
  EXPECT_EQ(std::vector<float>(loaded.center, loaded.center + 3), center_);
  EXPECT_EQ(std::vector<float>(loaded.spread, loaded.spread + 3), spread_);
  nk_frozen_stats_release(&loaded);
  EXPECT_EQ(loaded.center, nullptr);
  nk_frozen_stats_release(nullptr);
}

// The bytes at every documented offset (little-endian).
TEST_F(FrozenStatsTest, BytesFollowTheDocumentedLayout) {
  stats_.kind = NK_STATS_ROBUST;
  stats_.dtype = NK_BF16;
  stats_.running_var = NK_RUNNING_VAR_BIASED;
  stats_.samples = 0x0102030405;
  stats_.eps = 0.125;
  ASSERT_EQ(nk_frozen_stats_save(path_.c_str(), &stats_), NK_SUCCESS);
  const std::vector<unsigned char> b = read_file(path_);
  ASSERT_EQ(b.size(), 80u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data())), "NKSTATS");
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, b.data() + at, 4);
    return v;
  };
  auto i64 = [&](size_t at) {
    int64_t v;
    std::memcpy(&v, b.data() + at, 8);
    return v;
  };
  EXPECT_EQ(u32(8), 1u);
  EXPECT_EQ(u32(12), 5u);  // NK_STATS_ROBUST
  EXPECT_EQ(u32(16), 2u);  // NK_BF16
  EXPECT_EQ(u32(20), 1u);  // NK_RUNNING_VAR_BIASED
  EXPECT_EQ(i64(24), 3);
  EXPECT_EQ(i64(32), 0x0102030405);
  double eps;
  std::memcpy(&eps, b.data() + 40, 8);
  EXPECT_EQ(eps, 0.125);
  float f;
  std::memcpy(&f, b.data() + 48 + 4, 4);
  EXPECT_EQ(f, -1.25f);  // center[1]
  std::memcpy(&f, b.data() + 48 + 12 + 8, 4);
  EXPECT_EQ(f, 1.0f);  // spread[2]
  uint64_t checksum;
  std::memcpy(&checksum, b.data() + 72, 8);
  EXPECT_EQ(checksum, fnv1a(b, 72));
}

TEST_F(FrozenStatsTest, SaveRejectsInvalidFieldsAndKeepsPermissions) {
  const nk_frozen_stats good = stats_;
  struct Bad {
    const char* fragment;
    nk_status status;
    void (*spoil)(nk_frozen_stats&);
  };
  const Bad cases[] = {
      {"kind = 0", NK_ERROR_INVALID_VALUE,
       [](nk_frozen_stats& s) { s.kind = static_cast<nk_stats_kind>(0); }},
      {"dtype = 9", NK_ERROR_INVALID_VALUE,
       [](nk_frozen_stats& s) { s.dtype = static_cast<nk_dtype>(9); }},
      {"running_var = 4", NK_ERROR_INVALID_VALUE,
       [](nk_frozen_stats& s) { s.running_var = static_cast<nk_running_var>(4); }},
      {"samples = 0", NK_ERROR_INVALID_VALUE, [](nk_frozen_stats& s) { s.samples = 0; }},
      {"eps = -1", NK_ERROR_INVALID_VALUE, [](nk_frozen_stats& s) { s.eps = -1; }},
      {"stats->center is NULL", NK_ERROR_INVALID_VALUE,
       [](nk_frozen_stats& s) { s.center = nullptr; }},
      {"features = 0", NK_ERROR_BAD_SHAPE, [](nk_frozen_stats& s) { s.features = 0; }},
  };
  for (const Bad& bad : cases) {
    nk_frozen_stats s = good;
    bad.spoil(s);
    EXPECT_EQ(nk_frozen_stats_save(path_.c_str(), &s), bad.status) << bad.fragment;
    EXPECT_NE(std::string(nk_last_error()).find(bad.fragment), std::string::npos)
        << nk_last_error();
  }
  EXPECT_TRUE(read_file(path_).empty()) << "no file may appear";
  // A new file gets 0666 less the umask; a replaced one keeps its mode.
  const mode_t mask = umask(022);
  ASSERT_EQ(nk_frozen_stats_save(path_.c_str(), &good), NK_SUCCESS);
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  ASSERT_EQ(chmod(path_.c_str(), 0640), 0);
  ASSERT_EQ(nk_frozen_stats_save(path_.c_str(), &good), NK_SUCCESS);
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  umask(mask);
}

TEST_F(FrozenStatsTest, SaveReplacesAtomicallyAndFailedSaveKeepsOldFile) {
  ASSERT_EQ(nk_frozen_stats_save(path_.c_str(), &stats_), NK_SUCCESS);
  const std::vector<unsigned char> first = read_file(path_);
  center_[0] = 9.0f;
  ASSERT_EQ(nk_frozen_stats_save(path_.c_str(), &stats_), NK_SUCCESS);
  EXPECT_NE(read_file(path_), first);
  const std::vector<unsigned char> second = read_file(path_);
  // No temporary file left behind.
  EXPECT_EQ(std::system(("test $(ls " + dir_ + " | wc -l) -eq 1").c_str()), 0);
  // An invalid save (a negative variance) and an unwritable path leave the file as it was.
  spread_[1] = -1.0f;
  EXPECT_EQ(nk_frozen_stats_save(path_.c_str(), &stats_), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("spread[1] = -1"), std::string::npos)
      << nk_last_error();
  spread_[1] = 0.25f;
  const std::string missing = dir_ + "/no/such/folder/bn.nkstats";
  EXPECT_EQ(nk_frozen_stats_save(missing.c_str(), &stats_), NK_ERROR_IO);
  EXPECT_EQ(read_file(path_), second);
}

TEST_F(FrozenStatsTest, EveryTruncationIsRejected) {
  ASSERT_EQ(nk_frozen_stats_save(path_.c_str(), &stats_), NK_SUCCESS);
  const std::vector<unsigned char> full = read_file(path_);
  for (size_t size = 0; size < full.size(); ++size) {
    SCOPED_TRACE(testing::Message() << "truncated to " << size << " bytes");
    write_file(path_,
               std::vector<unsigned char>(full.begin(), full.begin() + static_cast<long>(size)));
    expect_load(NK_ERROR_FILE_FORMAT);
  }
}

TEST_F(FrozenStatsTest, EveryBitFlipIsRejected) {
  ASSERT_EQ(nk_frozen_stats_save(path_.c_str(), &stats_), NK_SUCCESS);
  const std::vector<unsigned char> full = read_file(path_);
  for (size_t byte = 0; byte < full.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      SCOPED_TRACE(testing::Message() << "bit " << bit << " of byte " << byte);
      std::vector<unsigned char> b = full;
      b[byte] ^= static_cast<unsigned char>(1u << bit);
      write_file(path_, b);
      nk_frozen_stats out{};
      out.features = -77;
      const nk_status st = nk_frozen_stats_load(path_.c_str(), &out);
      // The version field reads as a newer version for most flips; everything else is a format
      // error (magic, size, checksum).
      if (byte >= 8 && byte < 12 && !(byte == 8 && bit == 0)) {
        EXPECT_EQ(st, NK_ERROR_NOT_SUPPORTED) << nk_last_error();
      } else {
        EXPECT_EQ(st, NK_ERROR_FILE_FORMAT) << nk_last_error();
      }
      EXPECT_EQ(out.features, -77);
    }
  }
}

TEST_F(FrozenStatsTest, ForeignNewerTrailingAndInvalidFiles) {
  write_file(path_, {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13});
  expect_load(NK_ERROR_FILE_FORMAT, "not a normkit statistics file");
  ASSERT_EQ(nk_frozen_stats_save(path_.c_str(), &stats_), NK_SUCCESS);
  const std::vector<unsigned char> full = read_file(path_);
  std::vector<unsigned char> b = full;
  b[8] = 2;  // version 2, resealed: a newer normkit's file
  reseal(b);
  write_file(path_, b);
  expect_load(NK_ERROR_NOT_SUPPORTED, "version 2 was written by a newer normkit");
  b = full;
  b.insert(b.end() - 8, {0, 0, 0, 0});  // four extra bytes before the checksum
  reseal(b);
  write_file(path_, b);
  expect_load(NK_ERROR_FILE_FORMAT, "trailing bytes");
  b = full;
  b[12] = 9;  // kind 9, with a valid checksum
  reseal(b);
  write_file(path_, b);
  expect_load(NK_ERROR_FILE_FORMAT, "kind = 9");
  b = full;
  const float negative = -2.0f;  // spread[0]
  std::memcpy(b.data() + 48 + 12, &negative, 4);
  reseal(b);
  write_file(path_, b);
  expect_load(NK_ERROR_FILE_FORMAT, "spread[0] = -2");
  b = full;
  const int64_t huge = int64_t{1} << 61;  // a feature count whose byte size overflows
  std::memcpy(b.data() + 24, &huge, 8);
  reseal(b);
  write_file(path_, b);
  expect_load(NK_ERROR_FILE_FORMAT, "cannot hold");
  expect_load(NK_ERROR_FILE_FORMAT);
  for (auto [offset, value, fragment] :
       {std::tuple<size_t, uint32_t, const char*>{16, 7u, "dtype = 7"},
        {20, 3u, "running_var = 3"}}) {
    b = full;
    std::memcpy(b.data() + offset, &value, 4);
    reseal(b);
    write_file(path_, b);
    expect_load(NK_ERROR_FILE_FORMAT, fragment);
  }
  b = full;
  const double nan_eps = std::nan("");
  std::memcpy(b.data() + 40, &nan_eps, 8);
  reseal(b);
  write_file(path_, b);
  expect_load(NK_ERROR_FILE_FORMAT, "eps = nan");
  std::remove(path_.c_str());
  expect_load(NK_ERROR_IO, "cannot open");
  const std::string folder = path_;
  path_ = dir_;  // a folder is no statistics file
  expect_load(NK_ERROR_IO, "not a regular file");
  path_ = folder;
  EXPECT_EQ(nk_frozen_stats_load(nullptr, &stats_), NK_ERROR_INVALID_VALUE);
}

TEST_F(FrozenStatsTest, MismatchesNameBothValues) {
  EXPECT_EQ(nk_frozen_stats_check(&stats_, NK_STATS_BATCH_NORM, NK_F32, 3, 1e-5), NK_SUCCESS);
  EXPECT_EQ(nk_frozen_stats_check(&stats_, NK_STATS_INSTANCE_NORM, NK_F32, 3, 1e-5),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error())
                .find("kind = NK_STATS_BATCH_NORM in the frozen statistics but "
                      "NK_STATS_INSTANCE_NORM in the layer"),
            std::string::npos)
      << nk_last_error();
  EXPECT_EQ(nk_frozen_stats_check(&stats_, NK_STATS_BATCH_NORM, NK_BF16, 3, 1e-5),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error())
                .find("dtype = f32 in the frozen statistics but bf16 in the layer"),
            std::string::npos)
      << nk_last_error();
  EXPECT_EQ(nk_frozen_stats_check(&stats_, NK_STATS_BATCH_NORM, NK_F32, 64, 1e-5),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error())
                .find("features = 3 in the frozen statistics but 64 in the layer"),
            std::string::npos)
      << nk_last_error();
  EXPECT_EQ(nk_frozen_stats_check(&stats_, NK_STATS_BATCH_NORM, NK_F32, 3, 1e-3),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error())
                .find("eps = 1e-05 in the frozen statistics but 0.001 in the layer"),
            std::string::npos)
      << nk_last_error();
  EXPECT_EQ(nk_frozen_stats_check(nullptr, NK_STATS_BATCH_NORM, NK_F32, 3, 1e-5),
            NK_ERROR_INVALID_VALUE);
}

// Inference with frozen statistics equals batch norm inference with the same running buffers;
// a mismatch is refused before y is touched.
TEST_F(FrozenStatsTest, BatchNormForwardFrozen) {
  nkt::CpuContext ctx;
  nkt::Random rng;
  const nk_act_desc d{4, 3, 5, NK_NHWC, NK_F32};
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  const nkt::Buffer x(NK_F32, rng.normal(60, 1.0, 2.0));
  nkt::Buffer y1(NK_F32, 60), y2(NK_F32, 60);
  const std::vector<float> w = {1.5f, -0.5f, 2.0f}, b = {0.0f, 1.0f, -1.0f};
  ASSERT_EQ(
      nk_batch_norm_forward_frozen(ctx, &d, &p, &stats_, x.data(), w.data(), b.data(), y1.data()),
      NK_SUCCESS)
      << nk_last_error();
  ASSERT_EQ(nk_batch_norm_forward(ctx, &d, &p, x.data(), w.data(), b.data(), center_.data(),
                                  spread_.data(), nullptr, y2.data(), nullptr, nullptr),
            NK_SUCCESS);
  EXPECT_EQ(y1.bytes(), y2.bytes());
  nkt::Buffer y3(NK_F32, 60);
  y3.poison();
  const std::vector<unsigned char> poisoned = y3.bytes();
  p.eps = 1e-3;
  EXPECT_EQ(
      nk_batch_norm_forward_frozen(ctx, &d, &p, &stats_, x.data(), w.data(), b.data(), y3.data()),
      NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("nk_batch_norm_forward_frozen: eps = 1e-05"),
            std::string::npos)
      << nk_last_error();
  p.eps = 1e-5;
  p.phase = NK_TRAINING;
  EXPECT_EQ(
      nk_batch_norm_forward_frozen(ctx, &d, &p, &stats_, x.data(), w.data(), b.data(), y3.data()),
      NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(y3.bytes(), poisoned);
  p.phase = NK_INFERENCE;
  const nk_act_desc no_channels{4, 0, 5, NK_NHWC, NK_F32};
  EXPECT_EQ(nk_batch_norm_forward_frozen(ctx, &no_channels, &p, &stats_, x.data(), nullptr, nullptr,
                                         y3.data()),
            NK_ERROR_BAD_SHAPE);
  EXPECT_EQ(y3.bytes(), poisoned);
}

}  // namespace
