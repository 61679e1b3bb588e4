// GPU test support: a CUDA context that skips the test (with the reason) where normkit has no CUDA
// backend or no device is present (after the test's path asserts, NKT_REQUIRE_DEVICE, in fixtures
// that have them), device buffers that mirror nkt::Buffer, and the shape-set size
// (NORMKIT_GPU_TESTS=reduced keeps compute-sanitizer runs short).
#pragma once

#include <normkit/normkit.h>

#include <cstdint>
#include <optional>
#include <string>

#include "test_support.hpp"

namespace nkt {

// Device memory holding `count` elements of `dtype`; poisoned (all bytes 0xFF: NaN) on creation.
// Uploads and poisoning complete before they return.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(nk_dtype dtype, int64_t count, int64_t offset_elems = 0);
  explicit DeviceBuffer(const Buffer& host, int64_t offset_elems = 0);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // The element pointer (after `offset_elems` elements: a misaligned view when odd).
  void* data() const { return data_; }
  float* f32() const { return static_cast<float*>(data_); }
  void upload(const Buffer& host);
  Buffer download() const;
  void poison();

 private:
  nk_dtype dtype_ = NK_F32;
  int64_t count_ = 0;
  void* base_ = nullptr;
  void* data_ = nullptr;
};

// Fixture base: a CUDA context on device 0, or a skipped test saying why there is none.
class GpuTest : public testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  void synchronize();  // waits for the context's stream; fails the test on a CUDA error
  // Set by fixtures whose tests first assert which kernel path their shapes take (pure functions
  // of the shape, kernels/channel_norm_plan.hpp): without a device, SetUp then leaves gpu_ null
  // and the test runs up to NKT_REQUIRE_DEVICE(), which skips it. So machines without a GPU (CI)
  // check those asserts too; a plan change that moves a test's shape off the path it is meant to
  // reach fails there, not only where GPU tests run.
  bool paths_before_device_ = false;
  std::string no_device_;  // why SetUp made no context
  nk_context gpu_ = nullptr;
  CpuContext cpu_;
  Random rng_;
};

// In a test of a GpuTest fixture with paths_before_device_: skips the test, saying why, where
// there is no CUDA context. Every such test calls it before its first use of the device (a test
// that does not fails without a device: its calls on a null context return errors).
#define NKT_REQUIRE_DEVICE()                                               \
  do {                                                                     \
    if (gpu_ == nullptr) GTEST_SKIP() << "no CUDA device: " << no_device_; \
  } while (0)

// True when NORMKIT_GPU_TESTS=reduced (sanitizer runs and the simulated-GPU lane).
bool reduced_gpu_tests();

// A CUDA context on device 0 whose persistent grids are sized as if the device had at most
// `sms` multiprocessors (NORMKIT_TEST_SM_LIMIT): small shapes then reach the grid-stride loops,
// and results can be compared across grid sizes. The caller destroys it.
nk_context context_with_sm_limit(int sms);

// The shared memory the row norms stage rows within on every GPU (the library's cap, 99 KB:
// kernels/shared_memory_limit.hpp): the row-norm tests set it as their limit (below), so that the
// simulated lane, whose device reports none, reaches the staged paths every GPU takes.
constexpr int64_t kStagingSharedLimit = 101376;

// Sets the environment variable `name` to `value` for its lifetime (the library reads its
// test-only knobs at each call), then restores what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, previous_;
  bool had_previous_ = false;
};

// Sets NORMKIT_TEST_SHARED_LIMIT for its lifetime: the device's opt-in shared memory is taken as
// at most `bytes` (exactly `bytes` on GPGPU-Sim, which reports no opt-in limit and has none in its
// functional mode). The row norms then stage rows within it (capped at 99 KiB on every GPU), so a
// test can reach the staged paths and force their fallbacks; the channel norms' split parts stage
// heads as large as it allows. 0 bounds nothing (the device's own limit).
class ScopedSharedLimit : public ScopedEnv {
 public:
  explicit ScopedSharedLimit(int64_t bytes)
      : ScopedEnv("NORMKIT_TEST_SHARED_LIMIT", std::to_string(bytes)) {}
};

// The opt-in shared memory of a block on an H100 or H200 (227 KiB): with ScopedSharedLimit, the
// heads those GPUs stage in the channel norms' split parts, which the simulator (reporting none)
// would otherwise never run.
constexpr int64_t kHopperSharedOptin = 227 * 1024;

// Sets NORMKIT_TEST_RESIDENT_HEAD for its lifetime: the channel norms' one-read forward and
// backward stage at most `bytes` of each row of each tensor and read the rest from memory in each
// pass (kernels/channel_norm_resident.cuh), so short rows reach the loops of long ones.
class ScopedResidentHead : public ScopedEnv {
 public:
  explicit ScopedResidentHead(int64_t bytes)
      : ScopedEnv("NORMKIT_TEST_RESIDENT_HEAD", std::to_string(bytes)) {}
};

// Sets NORMKIT_TEST_BATCH_WALK=1 for its lifetime: batch norm's NCHW training forward and
// backward take the walk (partials, finalize, then y or dx) even where a block holds a channel
// (plan_batch_tiles), so the tests of the walk reach it at small shapes.
class ScopedBatchWalk : public ScopedEnv {
 public:
  ScopedBatchWalk() : ScopedEnv("NORMKIT_TEST_BATCH_WALK", "1") {}
};

// Sets NORMKIT_TEST_ROWS_WALK=1 for its lifetime: instance and group norm's NCHW rows take the
// walk even where blocks (or a row's parts) hold them (plan_resident_rows), so the tests of the
// walk's long rows reach it at shapes far below those that rows in parts leave to it (over 16
// parts: about 3.6 MB a row forward, half that backward).
class ScopedRowsWalk : public ScopedEnv {
 public:
  ScopedRowsWalk() : ScopedEnv("NORMKIT_TEST_ROWS_WALK", "1") {}
};

// Sets NORMKIT_TEST_TILES_WALK=1 for its lifetime: group and instance norm in NHWC (batch norm too,
// as one sample's instance norm) take the walk even where tiles (or a tile's parts) hold them
// (plan_group_tiles, plan_instance_tiles), so the tests of the walk reach it at shapes a simulator
// runs.
class ScopedTilesWalk : public ScopedEnv {
 public:
  ScopedTilesWalk() : ScopedEnv("NORMKIT_TEST_TILES_WALK", "1") {}
};

// Sets NORMKIT_TEST_NO_CLUSTERS=1 for its lifetime: the kernels that would run as thread block
// clusters take their two-launch form (kernels/common/cluster.cuh), which gives the same bits.
class ScopedNoClusters : public ScopedEnv {
 public:
  ScopedNoClusters() : ScopedEnv("NORMKIT_TEST_NO_CLUSTERS", "1") {}
};

// The forms a split test runs its parts in: 0, clusters where the device has them; 1, two launches
// (ScopedNoClusters); 2, clusters with an H100's opt-in shared memory (ScopedSharedLimit with
// kHopperSharedOptin: the parts' heads those GPUs stage, where the plan's head is shorter than a
// part; a simulator, reporting no opt-in limit, stages only the plan's). ScopedSplitForm sets the
// knobs of one form for its lifetime.
constexpr int kSplitForms = 3;
constexpr const char* kSplitFormNames[kSplitForms] = {
    "clusters where the device has them", "two launches",
    "clusters with an H100's opt-in shared memory"};

class ScopedSplitForm {
 public:
  explicit ScopedSplitForm(int form) {
    if (form == 1) no_clusters_.emplace();
    if (form == 2) optin_.emplace(kHopperSharedOptin);
  }

 private:
  std::optional<ScopedNoClusters> no_clusters_;
  std::optional<ScopedSharedLimit> optin_;
};

// Whether the device launches thread block clusters (compute capability 9.0 and later).
bool device_has_clusters();

// Empty on a real GPU; on a simulated one (GPGPU-Sim, which has no stream capture or graphs) the
// reason a test of CUDA graphs skips. Call from a GpuTest after SetUp found a device.
std::string graphs_unsupported_reason();

}  // namespace nkt
