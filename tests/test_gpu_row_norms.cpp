// Layer norm and RMS norm on the CUDA backend, checked against the CPU backend (itself checked
// against closed forms and finite differences) on fresh random data: every dtype x weight dtype x
// affine option x a spread of D and row counts, large-offset data, misaligned pointers (the
// scalar path), bitwise determinism, forward + backward captured in a CUDA graph with a workspace,
// and a tensor of more than 2^31 elements. Device outputs are poisoned (NaN) before every call and
// every element is compared. Skipped, with the reason, without a CUDA device.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#if NORMKIT_TEST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "gpu_support.hpp"
#include "test_support.hpp"

namespace nkt {
namespace {

struct RowCase {
  bool rms;
  nk_dtype dtype;
  nk_dtype weight_dtype;
  int affine;  // 0: none, 1: weight, 2: weight and bias (layer norm only)
};

std::string case_name(const testing::TestParamInfo<RowCase>& info) {
  const RowCase& c = info.param;
  static const char* affine[] = {"plain", "weight", "weight_bias"};
  return std::string(c.rms ? "rms_" : "layer_") + name(c.dtype) + "_w" + name(c.weight_dtype) +
         "_" + affine[c.affine];
}

std::vector<RowCase> all_cases() {
  std::vector<RowCase> out;
  for (bool rms : {false, true})
    for (nk_dtype t : {NK_F32, NK_F16, NK_BF16})
      for (nk_dtype w : {NK_F32, NK_F16, NK_BF16}) {
        if (w != NK_F32 && w != t) continue;  // parameters are fp32 or the dtype of x
        for (int affine = 0; affine <= (rms ? 1 : 2); ++affine) out.push_back({rms, t, w, affine});
      }
  return out;
}

// The reduced set (sanitizers, the simulated-GPU lane) keeps one width per path: lane groups (1,
// 17, 128), warps per row (1000, 4096: the forward's largest register rows in 16-bit types, 512
// threads; the backward's 1024-thread rows at 8192; its rows of 6 warps, five a block of 960
// threads: 768 in fp32, 1536 in 16-bit types and in fp32 with two packs a thread), rows staged in
// shared memory (backward 6144: 768 threads of a register row, staged in blocks of 512; 8200 and,
// bf16, 16384 in blocks of 1024; forward 8192, fp32 from 4096), few long rows split across blocks
// (forward 16392 and 20000 at 1 and 5 rows; backward 16392, dx split and dweight/dbias from the
// generic column pass), the generic path (backward fp32 16384; forward 16390, single-element
// packs). The fixture sets the staging limit the library caps every GPU at (kStagingSharedLimit,
// 99 KB).
std::vector<int64_t> widths(bool backward = false) {
  if (reduced_gpu_tests() && backward) {
    return {1, 17, 128, 768, 1000, 1536, 4096, 6144, 8192, 8200, 16384, 16392};
  }
  if (reduced_gpu_tests()) return {1, 17, 128, 1000, 4096, 8192, 16390, 16392, 20000};
  // The issue's widths, plus ones that reach every kernel instantiation: 256 and 512 (a full lane
  // group and two warps a row in 16-bit types), 4096 (the forward's largest register rows, 512
  // threads of 16-bit packs; staged past it, fp32 past 2048), 3000 and 6144 (the backward's
  // register rows of 768 threads, fp32 at 3000, staged in blocks of 512), 8192 and 8200 (the
  // backward's largest register rows and its staged ones in blocks of 1024), 16384, 16392 (the
  // backward's staged and generic), 65536 and 131072 (past 99 KB: generic), 16390
  // (single-element: generic).
  return {1,    3,    17,    127,   128,   256,   512,   768,   1000,  1024,  2048,  3000,
          4096, 6144, 8192, 8200, 12288, 16384, 16390, 16392, 20000, 65536, 131072};
}

// One row, an odd count, and many rows (up to 2^21 elements in all); past 16384 columns also 130
// rows, beyond the forward's split (fewer than 128 rows), so that its staged and generic paths run.
std::vector<int64_t> row_counts(int64_t cols) {
  if (reduced_gpu_tests()) return {1, 5};
  std::vector<int64_t> rows{1, 7, std::clamp<int64_t>((int64_t{1} << 21) / cols, 9, 8192)};
  if (cols > 16384) rows.push_back(130);
  return rows;
}

// GPU (fp32 accumulation) against the CPU (fp64): both round once to the dtype, so outputs may
// differ by one unit in the last place of the dtype on top of fp32 arithmetic.
Tolerance gpu_tolerance(nk_dtype dtype) {
  const Tolerance t = output_tolerance(dtype);
  return dtype == NK_F32 ? Tolerance{1e-5, 1e-5} : Tolerance{2 * t.atol, 2 * t.rtol};
}

// The reduced set runs the structural checks (misaligned pointers, in place, optional outputs,
// repeated calls, many rows) only with every affine input present: they reach every pointer and
// path then, and ForwardMatchesCpu/BackwardMatchesCpu cover each affine option on every path.
bool skip_in_reduced_set(const RowCase& c) {
  return reduced_gpu_tests() && c.affine != (c.rms ? 1 : 2);
}
constexpr const char* kStructuralSkip =
    "reduced set: structural checks run with every affine input present";

nk_status forward(nk_context ctx, bool rms, const nk_row_desc& d, double eps, const void* x,
                  const void* w, const void* b, void* y, float* mean, float* rstd) {
  return rms ? nk_rms_norm_forward(ctx, &d, eps, x, w, y, rstd)
             : nk_layer_norm_forward(ctx, &d, eps, x, w, b, y, mean, rstd);
}

nk_status backward(nk_context ctx, bool rms, const nk_row_desc& d, const void* x, const void* dy,
                   const void* w, const float* mean, const float* rstd, void* dx, void* dw,
                   void* db) {
  return rms ? nk_rms_norm_backward(ctx, &d, x, dy, w, rstd, dx, dw)
             : nk_layer_norm_backward(ctx, &d, x, dy, w, mean, rstd, dx, dw, db);
}

// Elements by which each device pointer is moved off 16-byte alignment (0: aligned).
struct Misalign {
  int64_t x = 0, y = 0, weight = 0, bias = 0, dy = 0, dx = 0;
};

class GpuRowNorm : public GpuTest, public testing::WithParamInterface<RowCase> {
 protected:
  ScopedSharedLimit shared_limit_{kStagingSharedLimit};

  // Host inputs of one case.
  struct Inputs {
    nk_row_desc desc;
    Buffer x, dy, weight, bias;
  };
  Inputs make(int64_t rows, int64_t cols, double mean = 0.5, double stddev = 2.0) {
    const RowCase c = GetParam();
    return Inputs{nk_row_desc{rows, cols, c.dtype, c.weight_dtype},
                  Buffer(c.dtype, rng_.normal(rows * cols, mean, stddev)),
                  Buffer(c.dtype, rng_.normal(rows * cols)),
                  Buffer(c.weight_dtype, rng_.normal(cols, 1.0, 0.5)),
                  Buffer(c.weight_dtype, rng_.normal(cols))};
  }

  // Forward on both backends.
  void check_forward(const Inputs& in, const Misalign& m, Tolerance y_tol) {
    const RowCase c = GetParam();
    const int64_t rows = in.desc.rows, n = rows * in.desc.cols;
    const void* w = c.affine >= 1 ? in.weight.data() : nullptr;
    const void* b = c.affine >= 2 ? in.bias.data() : nullptr;
    Buffer y_ref(c.dtype, n);
    std::vector<float> mean_ref(rows), rstd_ref(rows);
    ASSERT_EQ(forward(cpu_, c.rms, in.desc, 1e-5, in.x.data(), w, b, y_ref.data(), mean_ref.data(),
                      rstd_ref.data()),
              NK_SUCCESS)
        << nk_last_error();

    DeviceBuffer x(in.x, m.x), weight(in.weight, m.weight), bias(in.bias, m.bias);
    DeviceBuffer y(c.dtype, n, m.y), mean(NK_F32, rows), rstd(NK_F32, rows);
    ASSERT_EQ(forward(gpu_, c.rms, in.desc, 1e-5, x.data(), w ? weight.data() : nullptr,
                      b ? bias.data() : nullptr, y.data(), mean.f32(), rstd.f32()),
              NK_SUCCESS)
        << nk_last_error();
    expect_close(y.download().values(), y_ref.values(), y_tol, "y");
    expect_close(rstd.download().values(), std::vector<double>(rstd_ref.begin(), rstd_ref.end()),
                 {0, 1e-5}, "save_rstd");
    if (!c.rms) {
      // fp32 mean: one rounding of a value near |mean| plus fp32 sums of the shifted row.
      expect_close(mean.download().values(), std::vector<double>(mean_ref.begin(), mean_ref.end()),
                   {1e-5, 1e-6}, "save_mean");
    }
  }

  // Backward on both backends from the same saved statistics (the CPU forward's).
  void check_backward(const Inputs& in, const Misalign& m) {
    const RowCase c = GetParam();
    const int64_t rows = in.desc.rows, cols = in.desc.cols, n = rows * cols;
    const void* w = c.affine >= 1 ? in.weight.data() : nullptr;
    Buffer y(c.dtype, n);
    std::vector<float> mean(rows), rstd(rows);
    ASSERT_EQ(forward(cpu_, c.rms, in.desc, 1e-5, in.x.data(), w, nullptr, y.data(), mean.data(),
                      rstd.data()),
              NK_SUCCESS);
    Buffer dx_ref(c.dtype, n), dw_ref(c.weight_dtype, cols), db_ref(c.weight_dtype, cols);
    ASSERT_EQ(backward(cpu_, c.rms, in.desc, in.x.data(), in.dy.data(), w, mean.data(), rstd.data(),
                       dx_ref.data(), dw_ref.data(), db_ref.data()),
              NK_SUCCESS)
        << nk_last_error();

    DeviceBuffer x(in.x, m.x), dy(in.dy, m.dy), weight(in.weight, m.weight);
    DeviceBuffer mean_d(Buffer(NK_F32, std::vector<double>(mean.begin(), mean.end())));
    DeviceBuffer rstd_d(Buffer(NK_F32, std::vector<double>(rstd.begin(), rstd.end())));
    DeviceBuffer dx(c.dtype, n, m.dx), dw(c.weight_dtype, cols), db(c.weight_dtype, cols);
    ASSERT_EQ(backward(gpu_, c.rms, in.desc, x.data(), dy.data(), w ? weight.data() : nullptr,
                       mean_d.f32(), rstd_d.f32(), dx.data(), dw.data(), db.data()),
              NK_SUCCESS)
        << nk_last_error();

    // Error scales: dx is a difference of terms of size rstd * |dy * w|; a column sum's error
    // scales with the sum of its terms' magnitudes.
    const std::vector<double> xv = in.x.values(), dyv = in.dy.values(), wv = in.weight.values();
    double dx_scale = 0;
    std::vector<double> col_scale(cols, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        const double d = dyv[r * cols + j], wj = w ? wv[j] : 1.0;
        const double xhat = (xv[r * cols + j] - (c.rms ? 0.0 : mean[r])) * rstd[r];
        dx_scale = std::max(dx_scale, std::abs(d * wj) * rstd[r]);
        col_scale[j] += std::abs(d) * (1 + std::abs(xhat));
      }
    }
    const Tolerance t = gpu_tolerance(c.dtype);
    expect_close(dx.download().values(), dx_ref.values(), {t.atol * dx_scale * 4, t.rtol}, "dx");
    const Tolerance tw = gpu_tolerance(c.weight_dtype);
    const std::vector<double> dw_gpu = dw.download().values(), dw_cpu = dw_ref.values();
    const std::vector<double> db_gpu = db.download().values(), db_cpu = db_ref.values();
    int failures = 0;
    for (int64_t j = 0; j < cols && failures < 5; ++j) {
      const double bound_w = 1e-5 * col_scale[j] + tw.rtol * std::abs(dw_cpu[j]);
      const double bound_b = 1e-5 * col_scale[j] + tw.rtol * std::abs(db_cpu[j]);
      if (!(std::abs(dw_gpu[j] - dw_cpu[j]) <= bound_w)) {
        ++failures;
        ADD_FAILURE() << "dweight[" << j << "] = " << dw_gpu[j] << ", CPU " << dw_cpu[j];
      }
      if (!c.rms && !(std::abs(db_gpu[j] - db_cpu[j]) <= bound_b)) {
        ++failures;
        ADD_FAILURE() << "dbias[" << j << "] = " << db_gpu[j] << ", CPU " << db_cpu[j];
      }
    }
  }
};

TEST_P(GpuRowNorm, ForwardMatchesCpu) {
  for (int64_t cols : widths()) {
    for (int64_t rows : row_counts(cols)) {
      SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
      check_forward(make(rows, cols), {}, gpu_tolerance(GetParam().dtype));
    }
  }
}

TEST_P(GpuRowNorm, BackwardMatchesCpu) {
  for (int64_t cols : widths(true)) {
    for (int64_t rows : row_counts(cols)) {
      SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
      check_backward(make(rows, cols), {});
    }
  }
}

// Where the opt-in shared memory is too small for a row, the staged widths take the generic path
// and still match the CPU: 32 KB (nothing past the register path fits: bf16 8200 needs 16 KB in
// the forward, 32 KB and the reserve in the backward) and 99 KB (the library's cap: fp32 16384 in
// the backward needs 128 KB); the backward's 6144 in fp32 (48 KB) stays a register row of 768
// threads at 32 KB, and bf16 (24 KB) is staged at both limits. The forward of three rows past
// 16384 columns is split across blocks, which needs no shared memory, whatever the limit.
TEST_P(GpuRowNorm, StagedWidthsFallBackWhereSharedMemoryIsShort) {
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const RowCase c = GetParam();
  for (int64_t limit : {int64_t{32768}, int64_t{101376}}) {
    ScopedSharedLimit shared(limit);
    for (int64_t cols :
         {int64_t{6144}, int64_t{8200}, int64_t{16384}, int64_t{16392}, int64_t{20000}}) {
      SCOPED_TRACE(testing::Message() << "limit=" << limit << " cols=" << cols);
      const Inputs in = make(3, cols);
      check_forward(in, {}, gpu_tolerance(c.dtype));
      check_backward(in, {});
    }
  }
}

// One pointer at a time one element off 16-byte alignment: each must send the call to the
// single-element path on its own.
TEST_P(GpuRowNorm, EachMisalignedPointerTakesTheScalarPath) {
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const std::vector<int64_t> cols_list = reduced_gpu_tests()
                                             ? std::vector<int64_t>{128, 4096, 8200}
                                             : std::vector<int64_t>{128, 1024, 4096, 20000};
  for (int64_t cols : cols_list) {
    const Inputs in = make(reduced_gpu_tests() ? 3 : 5, cols);
    for (int which = 0; which < 6; ++which) {
      Misalign m;
      int64_t* fields[] = {&m.x, &m.y, &m.weight, &m.bias, &m.dy, &m.dx};
      *fields[which] = 1;
      SCOPED_TRACE(testing::Message() << "cols=" << cols << " misaligned pointer #" << which);
      if (which <= 3) check_forward(in, m, gpu_tolerance(GetParam().dtype));
      if (which != 1 && which != 3) check_backward(in, m);
    }
  }
}

// More rows than the persistent grid holds at once, so blocks loop and reuse shared memory:
// lane groups (128 columns) and a block per row (4096). The reduced set sizes the grid for one SM
// so that a few hundred rows loop.
TEST_P(GpuRowNorm, ManyRowsPerBlock) {
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const bool reduced = reduced_gpu_tests();
  nk_context limited = reduced ? context_with_sm_limit(1) : nullptr;
  if (reduced) {
    ASSERT_NE(limited, nullptr);
    std::swap(gpu_, limited);
  }
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      reduced ? std::vector<std::pair<int64_t, int64_t>>{{700, 128}, {40, 4096}}
              : std::vector<std::pair<int64_t, int64_t>>{{40000, 128}, {2500, 4096}};
  for (auto [rows, cols] : shapes) {
    SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
    const Inputs in = make(rows, cols);
    check_forward(in, {}, gpu_tolerance(GetParam().dtype));
    check_backward(in, {});
  }
  if (reduced) {
    std::swap(gpu_, limited);
    nk_context_destroy(limited);
  }
}

// y == x and dx == dy give the same bytes as separate buffers, on every path.
TEST_P(GpuRowNorm, InPlaceMatchesOutOfPlace) {
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const RowCase c = GetParam();
  // 8200: the staged backward; 16392: the split forward and backward (dx split, dweight and dbias
  // from the generic column pass); 65536: the same, in more slices.
  std::vector<int64_t> cols_list{128, 4096, 8200, 16392};
  if (!reduced_gpu_tests()) cols_list.push_back(65536);
  for (int64_t cols : cols_list) {
    SCOPED_TRACE(testing::Message() << "cols=" << cols);
    const int64_t rows = reduced_gpu_tests() ? 3 : 9, n = rows * cols;
    const Inputs in = make(rows, cols);
    DeviceBuffer x(in.x), dy(in.dy), weight(in.weight), bias(in.bias);
    DeviceBuffer y(c.dtype, n), mean(NK_F32, rows), rstd(NK_F32, rows), dx(c.dtype, n);
    const void* w = c.affine ? weight.data() : nullptr;
    const void* b = c.affine >= 2 ? bias.data() : nullptr;
    ASSERT_EQ(forward(gpu_, c.rms, in.desc, 1e-5, x.data(), w, b, y.data(), mean.f32(), rstd.f32()),
              NK_SUCCESS);
    DeviceBuffer inplace(in.x);
    ASSERT_EQ(
        forward(gpu_, c.rms, in.desc, 1e-5, inplace.data(), w, b, inplace.data(), nullptr, nullptr),
        NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(inplace.download().bytes(), y.download().bytes()) << "forward with y == x";
    // dweight and dbias too: they are sums over dy, which an in-place dx overwrites.
    DeviceBuffer dw(c.weight_dtype, cols), db(c.weight_dtype, cols);
    DeviceBuffer dw_inplace(c.weight_dtype, cols), db_inplace(c.weight_dtype, cols);
    void* db_out = c.rms ? nullptr : db.data();
    void* db_inplace_out = c.rms ? nullptr : db_inplace.data();
    ASSERT_EQ(backward(gpu_, c.rms, in.desc, x.data(), dy.data(), w, mean.f32(), rstd.f32(),
                       dx.data(), dw.data(), db_out),
              NK_SUCCESS);
    DeviceBuffer dinplace(in.dy);
    ASSERT_EQ(backward(gpu_, c.rms, in.desc, x.data(), dinplace.data(), w, mean.f32(), rstd.f32(),
                       dinplace.data(), dw_inplace.data(), db_inplace_out),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(dinplace.download().bytes(), dx.download().bytes()) << "backward with dx == dy";
    EXPECT_EQ(dw_inplace.download().bytes(), dw.download().bytes()) << "dweight with dx == dy";
    if (!c.rms) {
      EXPECT_EQ(db_inplace.download().bytes(), db.download().bytes()) << "dbias with dx == dy";
    }
    for (double v : dw.download().values()) ASSERT_FALSE(std::isnan(v)) << "dweight not written";
  }
}

// Each gradient output alone (and none) writes only itself, with the bytes of the full call.
TEST_P(GpuRowNorm, EachGradientOutputIsOptional) {
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const RowCase c = GetParam();
  const std::vector<int64_t> cols_list = reduced_gpu_tests()
                                             ? std::vector<int64_t>{256, 4096, 8200}
                                             : std::vector<int64_t>{256, 8192, 65536};
  for (int64_t cols : cols_list) {
    SCOPED_TRACE(testing::Message() << "cols=" << cols);
    const int64_t rows = reduced_gpu_tests() ? 5 : 33, n = rows * cols;
    const Inputs in = make(rows, cols);
    DeviceBuffer x(in.x), dy(in.dy), weight(in.weight), y(c.dtype, n), mean(NK_F32, rows),
        rstd(NK_F32, rows);
    const void* w = c.affine ? weight.data() : nullptr;
    ASSERT_EQ(
        forward(gpu_, c.rms, in.desc, 1e-5, x.data(), w, nullptr, y.data(), mean.f32(), rstd.f32()),
        NK_SUCCESS);
    DeviceBuffer dx_all(c.dtype, n), dw_all(c.weight_dtype, cols), db_all(c.weight_dtype, cols);
    ASSERT_EQ(backward(gpu_, c.rms, in.desc, x.data(), dy.data(), w, mean.f32(), rstd.f32(),
                       dx_all.data(), dw_all.data(), db_all.data()),
              NK_SUCCESS);
    const Buffer dx_ref = dx_all.download(), dw_ref = dw_all.download(), db_ref = db_all.download();
    for (int mask = 0; mask < 8; ++mask) {
      if (c.rms && (mask & 4)) continue;  // RMS norm has no dbias
      SCOPED_TRACE(testing::Message() << "outputs mask " << mask);
      DeviceBuffer dx(c.dtype, n), dw(c.weight_dtype, cols), db(c.weight_dtype, cols);
      const Buffer poisoned_dx = dx.download(), poisoned_dw = dw.download();
      ASSERT_EQ(backward(gpu_, c.rms, in.desc, x.data(), dy.data(), w, mean.f32(), rstd.f32(),
                         mask & 1 ? dx.data() : nullptr, mask & 2 ? dw.data() : nullptr,
                         mask & 4 ? db.data() : nullptr),
                NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(dx.download().bytes(), (mask & 1 ? dx_ref : poisoned_dx).bytes());
      EXPECT_EQ(dw.download().bytes(), (mask & 2 ? dw_ref : poisoned_dw).bytes());
      if (!c.rms) {
        EXPECT_EQ(db.download().bytes(), (mask & 4 ? db_ref : poisoned_dw).bytes());
      }
    }
  }
}

// Every output's bytes are independent of the grid: contexts whose persistent grids are sized for
// 1, 3 and all of the device's SMs (NORMKIT_TEST_SM_LIMIT) give the same y, save_mean, save_rstd,
// dx, dweight and dbias, on each kernel path (lane groups, warps per row with several rows per
// block, a block per row, rows staged in shared memory, the generic path). The dweight/dbias
// partials are cut by the shape alone; a grid-dependent split would change their rounding. The
// reduced set keeps one shape per path with more partial rows than the one-SM grid has blocks:
// 300 x 128 (lane groups, 10 or 19 chunks), 37 x 1000 (two rows a block, 19), 23 x 1536 (five
// rows a block of 960 threads, 5 chunks; fp32 with two packs a thread), 9 x 8192 (a block
// per row, 9), 9 x 6144 and 5 x 8200 (backward staged in blocks of 512 and 1024: a chunk a row,
// looping on one and three SMs), and
// 17 x 16392 (split across blocks, a grid of the shape; dweight and dbias from the generic column
// pass: two chunks of at most 16 rows, the last one short).
TEST_P(GpuRowNorm, ResultsDoNotDependOnTheGrid) {
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const RowCase c = GetParam();
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      reduced_gpu_tests()
          ? std::vector<std::pair<int64_t, int64_t>>{{300, 128}, {37, 1000}, {23, 1536},
                                                     {9, 8192}, {9, 6144}, {5, 8200},
                                                     {17, 16392}}
          : std::vector<std::pair<int64_t, int64_t>>{{20000, 128}, {3000, 1000}, {700, 4096},
                                                     {300, 6144}, {300, 8192}, {300, 8200},
                                                     {300, 16384},
                                                     {300, 16392}, {300, 20000}, {40, 65536}};
  nk_context limited[] = {context_with_sm_limit(1), context_with_sm_limit(3)};
  ASSERT_NE(limited[0], nullptr);
  ASSERT_NE(limited[1], nullptr);
  for (auto [rows, cols] : shapes) {
    SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
    const Inputs in = make(rows, cols);
    const int64_t n = rows * cols;
    DeviceBuffer x(in.x), dy(in.dy), weight(in.weight), bias(in.bias);
    const void* w = c.affine >= 1 ? weight.data() : nullptr;
    const void* b = c.affine >= 2 ? bias.data() : nullptr;
    // All six outputs of one context, downloaded.
    auto run = [&](nk_context ctx) {
      DeviceBuffer y(c.dtype, n), mean(NK_F32, rows), rstd(NK_F32, rows), dx(c.dtype, n);
      DeviceBuffer dw(c.weight_dtype, cols), db(c.weight_dtype, cols);
      EXPECT_EQ(forward(ctx, c.rms, in.desc, 1e-5, x.data(), w, b, y.data(), mean.f32(),
                        rstd.f32()),
                NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(backward(ctx, c.rms, in.desc, x.data(), dy.data(), w, mean.f32(), rstd.f32(),
                         dx.data(), dw.data(), c.rms ? nullptr : db.data()),
                NK_SUCCESS)
          << nk_last_error();
      return std::vector<Buffer>{y.download(),  mean.download(), rstd.download(),
                                 dx.download(), dw.download(),   db.download()};
    };
    const std::vector<Buffer> full = run(gpu_);
    static const char* names[] = {"y", "save_mean", "save_rstd", "dx", "dweight", "dbias"};
    for (int which = 0; which < 2; ++which) {
      const std::vector<Buffer> other = run(limited[which]);
      for (size_t i = 0; i < full.size(); ++i) {
        EXPECT_EQ(other[i].bytes(), full[i].bytes())
            << names[i] << " differs with grids sized for " << (which == 0 ? 1 : 3) << " SMs";
      }
    }
    // The outputs were written: nothing is left poisoned (NaN).
    for (size_t i = 0; i < full.size(); ++i) {
      if (c.rms && (i == 1 || i == 5)) continue;  // RMS norm has no mean and no dbias
      for (double v : full[i].values()) ASSERT_FALSE(std::isnan(v)) << names[i];
    }
  }
  for (nk_context ctx : limited) nk_context_destroy(ctx);
}

// The backward's workspace stays within the bound normkit.h documents, 2 * (256 * ceil(cols / 8) *
// 32 + 256) bytes, for any number of rows, and does not depend on the SM count (a context sized for
// one SM asks for the same bytes). Queries only: nothing is launched.
TEST_P(GpuRowNorm, BackwardWorkspaceWithinTheDocumentedBound) {
  const RowCase c = GetParam();
  nk_context one_sm = context_with_sm_limit(1);
  ASSERT_NE(one_sm, nullptr);
  auto query = [&](nk_context ctx, const nk_row_desc& d) {
    size_t bytes = 0;
    const nk_status st = c.rms ? nk_rms_norm_backward_workspace_size(ctx, &d, &bytes)
                               : nk_layer_norm_backward_workspace_size(ctx, &d, &bytes);
    EXPECT_EQ(st, NK_SUCCESS) << nk_last_error();
    return bytes;
  };
  for (int64_t cols : {int64_t{1}, int64_t{17}, int64_t{128}, int64_t{1000}, int64_t{8192},
                       int64_t{8200}, int64_t{16384}, int64_t{16392}, int64_t{65536}}) {
    const size_t bound = 2 * (256 * static_cast<size_t>((cols + 7) / 8) * 32 + 256);
    for (int64_t rows : {int64_t{1}, int64_t{255}, int64_t{4097}, int64_t{1} << 20}) {
      SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
      const nk_row_desc d{rows, cols, c.dtype, c.weight_dtype};
      const size_t bytes = query(gpu_, d);
      EXPECT_GT(bytes, 0u);
      EXPECT_LE(bytes, bound);
      EXPECT_EQ(query(one_sm, d), bytes) << "the workspace depends on the SM count";
    }
  }
  nk_context_destroy(one_sm);
}

// The forward's workspace holds the partials of few long rows split across blocks: 16 bytes a
// slice of 4096 16-bit or 2048 fp32 elements and 4 bytes a row, for fewer than 128 rows of more
// than 16384 columns (normkit.h); every other shape needs none. It does not depend on the SM
// count. Queries only.
TEST_P(GpuRowNorm, ForwardWorkspaceHoldsTheSplitPartials) {
  const RowCase c = GetParam();
  nk_context one_sm = context_with_sm_limit(1);
  ASSERT_NE(one_sm, nullptr);
  auto query = [&](nk_context ctx, const nk_row_desc& d) {
    size_t bytes = 0;
    const nk_status st = c.rms ? nk_rms_norm_forward_workspace_size(ctx, &d, &bytes)
                               : nk_layer_norm_forward_workspace_size(ctx, &d, &bytes);
    EXPECT_EQ(st, NK_SUCCESS) << nk_last_error();
    return bytes;
  };
  const int64_t slice = c.dtype == NK_F32 ? 2048 : 4096;
  for (int64_t cols : {int64_t{1}, int64_t{4096}, int64_t{16384}, int64_t{16392}, int64_t{20000},
                       int64_t{65536}}) {
    for (int64_t rows : {int64_t{1}, int64_t{5}, int64_t{127}, int64_t{128}, int64_t{4097}}) {
      SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
      const nk_row_desc d{rows, cols, c.dtype, c.weight_dtype};
      const size_t expected =
          rows < 128 && cols > 16384
              ? static_cast<size_t>(rows * ((cols + slice - 1) / slice) * 16 + rows * 4)
              : 0;
      EXPECT_EQ(query(gpu_, d), expected);
      EXPECT_EQ(query(one_sm, d), expected) << "the workspace depends on the SM count";
    }
  }
  nk_context_destroy(one_sm);
}

// A split forward in the caller's workspace, set to exactly the queried size, writes the same bytes
// as one in memory normkit allocates; a workspace 16 bytes short is refused with
// NK_ERROR_WORKSPACE before anything is written.
TEST_P(GpuRowNorm, SplitForwardRunsInTheQueriedWorkspace) {
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const RowCase c = GetParam();
  const Inputs in = make(3, 16392);
  const int64_t n = in.desc.rows * in.desc.cols;
  DeviceBuffer x(in.x), weight(in.weight), bias(in.bias);
  const void* w = c.affine >= 1 ? weight.data() : nullptr;
  const void* b = c.affine >= 2 ? bias.data() : nullptr;
  size_t bytes = 0;
  ASSERT_EQ(c.rms ? nk_rms_norm_forward_workspace_size(gpu_, &in.desc, &bytes)
                  : nk_layer_norm_forward_workspace_size(gpu_, &in.desc, &bytes),
            NK_SUCCESS);
  ASSERT_GT(bytes, 16u);
  auto run = [&](DeviceBuffer& y, DeviceBuffer& mean, DeviceBuffer& rstd) {
    return forward(gpu_, c.rms, in.desc, 1e-5, x.data(), w, b, y.data(), mean.f32(), rstd.f32());
  };
  DeviceBuffer y_alloc(c.dtype, n), mean_alloc(NK_F32, 3), rstd_alloc(NK_F32, 3);
  ASSERT_EQ(run(y_alloc, mean_alloc, rstd_alloc), NK_SUCCESS) << nk_last_error();

  DeviceBuffer workspace(NK_F32, static_cast<int64_t>(bytes / 4));
  DeviceBuffer y(c.dtype, n), mean(NK_F32, 3), rstd(NK_F32, 3);
  ASSERT_EQ(nk_context_set_workspace(gpu_, workspace.data(), bytes - 16), NK_SUCCESS);
  EXPECT_EQ(run(y, mean, rstd), NK_ERROR_WORKSPACE);
  EXPECT_NE(std::string(nk_last_error()).find("workspace"), std::string::npos) << nk_last_error();
  for (double v : y.download().values()) ASSERT_TRUE(std::isnan(v)) << "y written by a refusal";
  for (double v : rstd.download().values()) ASSERT_TRUE(std::isnan(v));

  ASSERT_EQ(nk_context_set_workspace(gpu_, workspace.data(), bytes), NK_SUCCESS);
  ASSERT_EQ(run(y, mean, rstd), NK_SUCCESS) << nk_last_error();
  ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);
  EXPECT_EQ(y.download().bytes(), y_alloc.download().bytes());
  EXPECT_EQ(rstd.download().bytes(), rstd_alloc.download().bytes());
  if (!c.rms) {
    EXPECT_EQ(mean.download().bytes(), mean_alloc.download().bytes());
  }
  for (double v : y.download().values()) ASSERT_FALSE(std::isnan(v));
}

// 127 rows of 16392 columns are split across blocks, 128 are not (one block a row: the forward
// staged in shared memory, the backward's dx generic): both match the CPU, forward and backward.
// The reduced set runs two cases (2M elements a call).
TEST_P(GpuRowNorm, SplitEndsAt128Rows) {
  const RowCase c = GetParam();
  const bool sample = (!c.rms && c.dtype == NK_BF16 && c.weight_dtype == NK_BF16 && c.affine == 2) ||
                      (c.rms && c.dtype == NK_F32 && c.affine == 1);
  if (reduced_gpu_tests() && !sample) {
    GTEST_SKIP() << "reduced set: two cases (layer bf16, RMS fp32) reach both sides of the split";
  }
  for (int64_t rows : {int64_t{127}, int64_t{128}}) {
    SCOPED_TRACE(testing::Message() << "rows=" << rows);
    const Inputs in = make(rows, 16392);
    check_forward(in, {}, gpu_tolerance(c.dtype));
    check_backward(in, {});
  }
}

// |mean| >> std: mean 1e4, std 1, in fp32 (fp16/bf16 cannot hold 1e4 + N(0,1) finely). The row
// shift keeps fp32 accuracy.
class GpuRowNormLargeOffset : public GpuRowNorm {};

TEST_P(GpuRowNormLargeOffset, MatchesCpu) {
  // Registers, staged, and few long rows split across blocks.
  for (int64_t cols : {int64_t{768}, int64_t{8192}, reduced_gpu_tests() ? 16392 : int64_t{65536}}) {
    SCOPED_TRACE(testing::Message() << "cols=" << cols);
    check_forward(make(3, cols, 1e4, 1.0), {}, {1e-4, 1e-5});
  }
  // The generic path, which merges a pack at a time: a 32 KB staging limit sends 8200 fp32
  // columns there.
  ScopedSharedLimit shared(32768);
  SCOPED_TRACE("cols=8200, generic");
  check_forward(make(3, 8200, 1e4, 1.0), {}, {1e-4, 1e-5});
}

TEST_P(GpuRowNorm, RepeatedCallsAreBitwiseIdentical) {
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const RowCase c = GetParam();
  for (int64_t cols : {int64_t{128}, int64_t{4096}, reduced_gpu_tests() ? 8200 : int64_t{65536}}) {
    const int64_t rows = reduced_gpu_tests() ? 3 : 257, n = rows * cols;
    const Inputs in = make(rows, cols);
    DeviceBuffer x(in.x), dy(in.dy), weight(in.weight);
    DeviceBuffer y1(c.dtype, n), y2(c.dtype, n), mean(NK_F32, rows), rstd(NK_F32, rows);
    DeviceBuffer dx1(c.dtype, n), dx2(c.dtype, n), dw1(c.weight_dtype, cols),
        dw2(c.weight_dtype, cols);
    DeviceBuffer db1(c.weight_dtype, cols), db2(c.weight_dtype, cols);
    const void* w = c.affine ? weight.data() : nullptr;
    ASSERT_EQ(forward(gpu_, c.rms, in.desc, 1e-5, x.data(), w, nullptr, y1.data(), mean.f32(),
                      rstd.f32()),
              NK_SUCCESS);
    ASSERT_EQ(
        forward(gpu_, c.rms, in.desc, 1e-5, x.data(), w, nullptr, y2.data(), nullptr, nullptr),
        NK_SUCCESS);
    ASSERT_EQ(backward(gpu_, c.rms, in.desc, x.data(), dy.data(), w, mean.f32(), rstd.f32(),
                       dx1.data(), dw1.data(), db1.data()),
              NK_SUCCESS);
    ASSERT_EQ(backward(gpu_, c.rms, in.desc, x.data(), dy.data(), w, mean.f32(), rstd.f32(),
                       dx2.data(), dw2.data(), db2.data()),
              NK_SUCCESS);
    EXPECT_EQ(y1.download().bytes(), y2.download().bytes()) << "cols=" << cols;
    EXPECT_EQ(dx1.download().bytes(), dx2.download().bytes()) << "cols=" << cols;
    EXPECT_EQ(dw1.download().bytes(), dw2.download().bytes()) << "cols=" << cols;
    if (!c.rms) {
      EXPECT_EQ(db1.download().bytes(), db2.download().bytes()) << "cols=" << cols;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, GpuRowNorm, testing::ValuesIn(all_cases()), case_name);

std::vector<RowCase> f32_cases() {
  std::vector<RowCase> out;
  for (const RowCase& c : all_cases())
    if (c.dtype == NK_F32) out.push_back(c);
  return out;
}
INSTANTIATE_TEST_SUITE_P(F32, GpuRowNormLargeOffset, testing::ValuesIn(f32_cases()), case_name);

#if NORMKIT_TEST_WITH_CUDA

class GpuRowNormWhole : public GpuTest {};

// Forward + backward captured in a CUDA graph (workspace set: no allocation, no sync, no host
// reads of device memory) and replayed give the eager results bit for bit.
TEST_F(GpuRowNormWhole, CapturedForwardBackwardReplays) {
  if (const std::string why = graphs_unsupported_reason(); !why.empty()) GTEST_SKIP() << why;
  const int64_t rows = 300, cols = 1024, n = rows * cols;
  const nk_row_desc d{rows, cols, NK_BF16, NK_F32};
  DeviceBuffer x(Buffer(NK_BF16, rng_.normal(n))), dy(Buffer(NK_BF16, rng_.normal(n)));
  DeviceBuffer w(Buffer(NK_F32, rng_.normal(cols))), b(Buffer(NK_F32, rng_.normal(cols)));
  DeviceBuffer y(NK_BF16, n), mean(NK_F32, rows), rstd(NK_F32, rows), dx(NK_BF16, n);
  DeviceBuffer dw(NK_F32, cols), db(NK_F32, cols);
  auto step = [&] {
    ASSERT_EQ(nk_layer_norm_forward(gpu_, &d, 1e-5, x.data(), w.data(), b.data(), y.data(),
                                    mean.f32(), rstd.f32()),
              NK_SUCCESS)
        << nk_last_error();
    ASSERT_EQ(nk_layer_norm_backward(gpu_, &d, x.data(), dy.data(), w.data(), mean.f32(),
                                     rstd.f32(), dx.data(), dw.data(), db.data()),
              NK_SUCCESS)
        << nk_last_error();
  };
  size_t bytes = 0;
  ASSERT_EQ(nk_layer_norm_backward_workspace_size(gpu_, &d, &bytes), NK_SUCCESS);
  void* workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&workspace, bytes > 0 ? bytes : 256), cudaSuccess);
  ASSERT_EQ(nk_context_set_workspace(gpu_, workspace, bytes), NK_SUCCESS) << nk_last_error();
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(nk_context_set_stream(gpu_, stream), NK_SUCCESS);

  step();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const Buffer y_eager = y.download(), dx_eager = dx.download(), dw_eager = dw.download();
  const Buffer db_eager = db.download();
  y.poison();
  dx.poison();
  dw.poison();
  db.poison();

  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  step();
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  size_t count = 0;
  ASSERT_EQ(cudaGraphGetNodes(graph, nullptr, &count), cudaSuccess);
  std::vector<cudaGraphNode_t> nodes(count);
  ASSERT_EQ(cudaGraphGetNodes(graph, nodes.data(), &count), cudaSuccess);
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    ASSERT_EQ(cudaGraphNodeGetType(node, &type), cudaSuccess);
    EXPECT_EQ(type, cudaGraphNodeTypeKernel) << "only kernels belong in a captured step";
  }
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 2; ++replay) {
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(y.download().bytes(), y_eager.bytes()) << "replay " << replay;
    EXPECT_EQ(dx.download().bytes(), dx_eager.bytes()) << "replay " << replay;
    EXPECT_EQ(dw.download().bytes(), dw_eager.bytes()) << "replay " << replay;
    EXPECT_EQ(db.download().bytes(), db_eager.bytes()) << "replay " << replay;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  nk_context_set_stream(gpu_, nullptr);
  nk_context_set_workspace(gpu_, nullptr, 0);
  cudaStreamDestroy(stream);
  cudaFree(workspace);
}

// More than 2^31 elements (bf16, 4096 columns): rows on both sides of element 2^31 and the last
// rows are checked against the CPU on those rows. The data repeat with a period that is not a
// multiple of the row, so a row mapped to the wrong place shows.
TEST_F(GpuRowNormWhole, MoreThanTwoToThe31Elements) {
  if (reduced_gpu_tests()) GTEST_SKIP() << "not in the reduced set: it moves more than 2^31 elements";
  const int64_t cols = 4096, rows = (int64_t{1} << 31) / cols + 5, n = rows * cols;
  size_t free_bytes = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  if (free_bytes < static_cast<size_t>(n) * 2 * 4 + (size_t{2} << 30)) {
    GTEST_SKIP() << "needs " << (n * 8 >> 30) << " GiB of free device memory";
  }
  const nk_row_desc d{rows, cols, NK_BF16, NK_BF16};
  const int64_t period = 1000003;
  const Buffer chunk_x(NK_BF16, rng_.normal(period, 1.0, 2.0)),
      chunk_dy(NK_BF16, rng_.normal(period));
  DeviceBuffer x(NK_BF16, n), dy(NK_BF16, n), y(NK_BF16, n), dx(NK_BF16, n);
  for (int64_t at = 0; at < n; at += period) {
    const size_t count = static_cast<size_t>(std::min(period, n - at)) * 2;
    ASSERT_EQ(cudaMemcpy(static_cast<char*>(x.data()) + at * 2, chunk_x.data(), count,
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(static_cast<char*>(dy.data()) + at * 2, chunk_dy.data(), count,
                         cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  const Buffer w_host(NK_BF16, rng_.normal(cols, 1.0, 0.5));
  DeviceBuffer w(w_host), mean(NK_F32, rows), rstd(NK_F32, rows), dw(NK_BF16, cols);
  ASSERT_EQ(nk_layer_norm_forward(gpu_, &d, 1e-5, x.data(), w.data(), nullptr, y.data(), mean.f32(),
                                  rstd.f32()),
            NK_SUCCESS)
      << nk_last_error();
  ASSERT_EQ(nk_layer_norm_backward(gpu_, &d, x.data(), dy.data(), w.data(), mean.f32(), rstd.f32(),
                                   dx.data(), dw.data(), nullptr),
            NK_SUCCESS)
      << nk_last_error();
  synchronize();
  const Buffer mean_all = mean.download(), rstd_all = rstd.download();
  const int64_t boundary = (int64_t{1} << 31) / cols;
  for (int64_t r : {int64_t{0}, boundary - 1, boundary, boundary + 1, rows - 1}) {
    SCOPED_TRACE(testing::Message() << "row " << r);
    Buffer xr(NK_BF16, cols), dyr(NK_BF16, cols), yr(NK_BF16, cols), dxr(NK_BF16, cols);
    ASSERT_EQ(cudaMemcpy(xr.data(), static_cast<char*>(x.data()) + r * cols * 2, cols * 2,
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(dyr.data(), static_cast<char*>(dy.data()) + r * cols * 2, cols * 2,
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(yr.data(), static_cast<char*>(y.data()) + r * cols * 2, cols * 2,
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(dxr.data(), static_cast<char*>(dx.data()) + r * cols * 2, cols * 2,
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
    const nk_row_desc one{1, cols, NK_BF16, NK_BF16};
    Buffer y_ref(NK_BF16, cols), dx_ref(NK_BF16, cols);
    float m = 0, s = 0;
    ASSERT_EQ(nk_layer_norm_forward(cpu_, &one, 1e-5, xr.data(), w_host.data(), nullptr,
                                    y_ref.data(), &m, &s),
              NK_SUCCESS);
    expect_close(yr.values(), y_ref.values(), gpu_tolerance(NK_BF16), "y");
    EXPECT_NEAR(mean_all.get(r), m, 1e-5 * (1 + std::abs(m)));
    const float gm = static_cast<float>(mean_all.get(r)), gs = static_cast<float>(rstd_all.get(r));
    ASSERT_EQ(nk_layer_norm_backward(cpu_, &one, xr.data(), dyr.data(), w_host.data(), &gm, &gs,
                                     dx_ref.data(), nullptr, nullptr),
              NK_SUCCESS);
    expect_close(dxr.values(), dx_ref.values(), {0.05, 2 * gpu_tolerance(NK_BF16).rtol}, "dx");
  }
  for (double v : dw.download().values()) ASSERT_TRUE(std::isfinite(v)) << "dweight";
}

#endif  // NORMKIT_TEST_WITH_CUDA

}  // namespace
}  // namespace nkt
