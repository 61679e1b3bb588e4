// Fused layer and RMS norm (nk_row_norm_fused_*) on the CUDA backend against the CPU backend
// (itself checked against compositions of the plain calls in test_row_fusion.cpp), on fresh random
// data, for each norm x dtype (parameters in the data's dtype, and in fp32 with 16-bit data) and
// widths that reach the lane-group, single-element, staged and generic paths of the forward and
// backward:
//  - forward: residual add with bias_in and h, zero-centred weight, dtype output; and the fp8
//    outputs (E4M3 with the residual add, E5M2 plain): codes within one fp8 step of the CPU's
//    or, where y cancels to nearly zero, values within the fp32 y's absolute error times the
//    scale (the GPU's y is fp32, the CPU's fp64), amax within fp32 error; with fp32 data, the
//    fp8 bytes and amax exactly those of src/fp8.hpp applied to the GPU's own fp32 y (a
//    dtype-output call);
//  - backward: dh_extra, dx, dresidual, dbias_in, dweight, dbias with a zero-centred weight;
//  - determinism: the same bytes (y, h, fp8, amax, every gradient) from contexts that size their
//    grids for 1 and 3 SMs and the full device.
// Device outputs are poisoned before every call and every element is compared. Skipped, with the
// reason, without a CUDA device.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "fp8.hpp"
#include "fp8_reference.hpp"
#include "gpu_support.hpp"
#include "test_support.hpp"

namespace nkt {
namespace {

struct FusionCase {
  bool rms;
  nk_dtype dtype;
  nk_dtype weight_dtype;  // of bias_in, weight, bias and their gradients: dtype or fp32
};

std::string fusion_case_name(const testing::TestParamInfo<FusionCase>& info) {
  const FusionCase& c = info.param;
  return std::string(c.rms ? "rms_" : "layer_") + name(c.dtype) +
         (c.weight_dtype != c.dtype ? "_f32_params" : "");
}

// Lane groups with 16-byte packs (128), single-element packs (17: odd), a block per row (4096 in
// 16 bits, 1000 in fp32, whose 4096 columns are staged), rows staged in shared memory (8200; in
// the full set the backward's 6144, blocks of 512; the backward's 16384 in 16-bit types, the
// forward's 16384), few long rows split across blocks (16392, at 3 or 12 rows: forward and
// backward dx), the generic path (16390: single-element packs; fp32 16384 in the backward; 8200
// under smaller staging limits, in the tests; and, in the full set, 130 rows of 65536, past the
// split).
// The fixture sets the staging limit the library caps every GPU at (kStagingSharedLimit).
std::vector<int64_t> fusion_widths() {
  if (reduced_gpu_tests()) return {17, 128, 1000, 4096, 8200, 16384, 16390, 16392};
  return {1, 17, 128, 1000, 4096, 6144, 8192, 8200, 16384, 16390, 16392, 65536};
}
// (cols, staging limit): every width at the library's limit, then `cols` under `limit`.
std::vector<std::pair<int64_t, int64_t>> width_runs(int64_t cols, int64_t limit) {
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (int64_t w : fusion_widths()) runs.emplace_back(w, kStagingSharedLimit);
  runs.emplace_back(cols, limit);
  return runs;
}
int64_t fusion_rows(int64_t cols) {
  if (reduced_gpu_tests()) return 3;
  return cols >= 65536 ? 130 : std::max<int64_t>(3, 200000 / cols);
}

Tolerance fused_tolerance(nk_dtype dtype) {
  const Tolerance t = output_tolerance(dtype);
  return dtype == NK_F32 ? Tolerance{1e-5, 1e-5} : Tolerance{2 * t.atol, 2 * t.rtol};
}

// fp8 codes as signed ordinals: adjacent representable values differ by one.
int fp8_ordinal(uint8_t c) { return c & 0x80 ? -(c & 0x7F) : c; }

// Host inputs of one case.
struct Inputs {
  nk_row_desc desc;
  Buffer x, residual, bias_in, weight, bias, dy, dh_extra;
};

class GpuRowFusion : public GpuTest, public testing::WithParamInterface<FusionCase> {
 protected:
  ScopedSharedLimit shared_limit_{kStagingSharedLimit};

  Inputs make(int64_t rows, int64_t cols) {
    const FusionCase c = GetParam();
    const int64_t n = rows * cols;
    return Inputs{nk_row_desc{rows, cols, c.dtype, c.weight_dtype},
                  Buffer(c.dtype, rng_.normal(n, 0.5, 2.0)),
                  Buffer(c.dtype, rng_.normal(n)),
                  Buffer(c.weight_dtype, rng_.normal(cols, 0.0, 0.5)),
                  Buffer(c.weight_dtype, rng_.normal(cols, 0.0, 0.3)),  // zero-centred: gamma ~1
                  Buffer(c.weight_dtype, rng_.normal(cols)),
                  Buffer(c.dtype, rng_.normal(n)),
                  Buffer(c.dtype, rng_.normal(n))};
  }
  nk_row_fusion fusion(bool residual, bool zero_centered, nk_output_format out) const {
    nk_row_fusion f = nk_row_fusion_default();
    f.norm = GetParam().rms ? NK_RMS_NORM : NK_LAYER_NORM;
    f.residual = residual ? NK_RESIDUAL_ADD : NK_RESIDUAL_NONE;
    f.weight_form = zero_centered ? NK_WEIGHT_ZERO_CENTERED : NK_WEIGHT_DIRECT;
    f.output = out;
    return f;
  }
};

// Outputs of one forward call, downloaded.
struct ForwardOut {
  Buffer h, y;
  float amax = 0;
  std::vector<double> mean, rstd;
};

// One fused forward on ctx (host buffers for the CPU, device copies otherwise).
ForwardOut run_forward(nk_context ctx, bool on_gpu, const Inputs& in, const nk_row_fusion& f,
                       float scale) {
  const bool rms = f.norm == NK_RMS_NORM, res = f.residual == NK_RESIDUAL_ADD;
  const bool fp8 = f.output != NK_OUTPUT_DTYPE;
  const int64_t rows = in.desc.rows, n = rows * in.desc.cols;
  const int64_t y_elems = fp8 ? (n + 3) / 4 : n;  // fp8 bytes in f32 words
  const nk_dtype y_dtype = fp8 ? NK_F32 : in.desc.dtype;
  ForwardOut out;
  nk_row_fused_forward_buffers b{};
  if (!on_gpu) {
    Buffer h(in.desc.dtype, n), y(y_dtype, y_elems), mean(NK_F32, rows), rstd(NK_F32, rows);
    h.poison();
    y.poison();
    mean.poison();
    rstd.poison();
    b.x = in.x.data();
    b.residual = res ? in.residual.data() : nullptr;
    b.bias_in = res ? in.bias_in.data() : nullptr;
    b.weight = in.weight.data();
    b.bias = rms ? nullptr : in.bias.data();
    b.h = res ? h.data() : nullptr;
    b.y = y.data();
    b.y_scale = fp8 ? &scale : nullptr;
    b.y_amax = fp8 ? &out.amax : nullptr;
    b.save_mean = rms ? nullptr : mean.f32();
    b.save_rstd = rstd.f32();
    EXPECT_EQ(nk_row_norm_fused_forward(ctx, &in.desc, &f, 1e-5, &b), NK_SUCCESS)
        << nk_last_error();
    out.h = h;
    out.y = y;
    out.mean = mean.values();
    out.rstd = rstd.values();
    return out;
  }
  DeviceBuffer x(in.x), r(in.residual), bin(in.bias_in), w(in.weight), bias(in.bias);
  DeviceBuffer h(in.desc.dtype, n), y(y_dtype, y_elems), mean(NK_F32, rows), rstd(NK_F32, rows);
  DeviceBuffer scale_d(Buffer(NK_F32, std::vector<double>{scale})), amax(NK_F32, 1);
  b.x = x.data();
  b.residual = res ? r.data() : nullptr;
  b.bias_in = res ? bin.data() : nullptr;
  b.weight = w.data();
  b.bias = rms ? nullptr : bias.data();
  b.h = res ? h.data() : nullptr;
  b.y = y.data();
  b.y_scale = fp8 ? scale_d.f32() : nullptr;
  b.y_amax = fp8 ? amax.f32() : nullptr;
  b.save_mean = rms ? nullptr : mean.f32();
  b.save_rstd = rstd.f32();
  EXPECT_EQ(nk_row_norm_fused_forward(ctx, &in.desc, &f, 1e-5, &b), NK_SUCCESS) << nk_last_error();
  out.h = h.download();
  out.y = y.download();
  out.amax = static_cast<float>(amax.download().get(0));
  out.mean = mean.download().values();
  out.rstd = rstd.download().values();
  return out;
}

// Outputs of one fused backward (residual add: dh_extra, dresidual and dbias_in included).
struct BackwardOut {
  Buffer dx, dres, dbin, dw, db;
};

BackwardOut run_backward(nk_context ctx, bool on_gpu, const Inputs& in, const nk_row_fusion& f,
                         const ForwardOut& stats) {
  const bool rms = f.norm == NK_RMS_NORM;
  const int64_t rows = in.desc.rows, cols = in.desc.cols, n = rows * cols;
  const Buffer mean(NK_F32, stats.mean), rstd(NK_F32, stats.rstd);
  nk_row_fused_backward_buffers b{};
  const nk_dtype act = in.desc.dtype, param = in.desc.weight_dtype;
  BackwardOut out{Buffer(act, n), Buffer(act, n), Buffer(param, cols), Buffer(param, cols),
                  Buffer(param, cols)};
  if (!on_gpu) {
    for (Buffer* o : {&out.dx, &out.dres, &out.dbin, &out.dw, &out.db}) o->poison();
    b.x = stats.h.data();
    b.dy = in.dy.data();
    b.dh_extra = in.dh_extra.data();
    b.weight = in.weight.data();
    b.save_mean = rms ? nullptr : static_cast<const float*>(mean.data());
    b.save_rstd = static_cast<const float*>(rstd.data());
    b.dx = out.dx.data();
    b.dresidual = out.dres.data();
    b.dbias_in = out.dbin.data();
    b.dweight = out.dw.data();
    b.dbias = rms ? nullptr : out.db.data();
    EXPECT_EQ(nk_row_norm_fused_backward(ctx, &in.desc, &f, &b), NK_SUCCESS) << nk_last_error();
    return out;
  }
  DeviceBuffer h(stats.h), dy(in.dy), extra(in.dh_extra), w(in.weight), mean_d(mean), rstd_d(rstd);
  DeviceBuffer dx(act, n), dres(act, n), dbin(param, cols), dw(param, cols), db(param, cols);
  b.x = h.data();
  b.dy = dy.data();
  b.dh_extra = extra.data();
  b.weight = w.data();
  b.save_mean = rms ? nullptr : mean_d.f32();
  b.save_rstd = rstd_d.f32();
  b.dx = dx.data();
  b.dresidual = dres.data();
  b.dbias_in = dbin.data();
  b.dweight = dw.data();
  b.dbias = rms ? nullptr : db.data();
  EXPECT_EQ(nk_row_norm_fused_backward(ctx, &in.desc, &f, &b), NK_SUCCESS) << nk_last_error();
  out.dx = dx.download();
  out.dres = dres.download();
  out.dbin = dbin.download();
  out.dw = dw.download();
  if (!rms) out.db = db.download();
  return out;
}

// y against the CPU's y, each element's bound widened by the GPU's error in h carried through the
// normalization, (|dh| + |dmean|) * rstd * |1 + w|: h is summed in fp32 on the GPU and in fp64 on
// the CPU, and where a row's h nearly cancels (one column: y = h / sqrt(h^2 + eps) * (1 + w)), one
// fp32 rounding of h moves y by far more than y's own rounding (an H200 run failed RMS fp32 at one
// column: y = -0.08653 off by 1.5e-5, past 1e-5 + 1e-5 |y|, as an h near sqrt(eps) off by half an
// ulp of its addends would be). h, the mean and rstd are checked apart.
void expect_y_close(const ForwardOut& gpu, const ForwardOut& cpu, const Inputs& in, bool rms,
                    Tolerance t) {
  const std::vector<double> gy = gpu.y.values(), cy = cpu.y.values();
  const std::vector<double> gh = gpu.h.values(), ch = cpu.h.values(), w = in.weight.values();
  ASSERT_EQ(gy.size(), cy.size());
  const int64_t cols = in.desc.cols;
  int failures = 0;
  for (size_t i = 0; i < cy.size(); ++i) {
    const size_t r = i / static_cast<size_t>(cols), c = i % static_cast<size_t>(cols);
    const double dmean = rms ? 0.0 : std::abs(gpu.mean[r] - cpu.mean[r]);  // RMS: none
    const double carried = (std::abs(gh[i] - ch[i]) + dmean) * cpu.rstd[r] * std::abs(1.0 + w[c]);
    const double bound = t.atol + t.rtol * std::abs(cy[i]) + carried;
    if (!(std::abs(gy[i] - cy[i]) <= bound) && ++failures <= 5) {
      ADD_FAILURE() << "y[" << i << "] = " << gy[i] << ", expected " << cy[i] << " (bound "
                    << bound << ", of which " << carried << " carried from h)";
    }
  }
  if (failures > 5) ADD_FAILURE() << "y: " << failures << " elements out of bounds in all";
}

// Residual add with bias_in and h, zero-centred weight, dtype output.
// Past the widths, a 16 KB staging limit sends 8200 columns to the generic path's 16-byte packs,
// which the widths reach only in the full set (65536).
TEST_P(GpuRowFusion, ResidualZeroCenteredForwardMatchesCpu) {
  const FusionCase c = GetParam();
  const nk_row_fusion f = fusion(true, true, NK_OUTPUT_DTYPE);
  for (auto [cols, limit] : width_runs(8200, 16384)) {
    SCOPED_TRACE(testing::Message() << "cols=" << cols << " limit=" << limit);
    ScopedSharedLimit shared(limit);
    const Inputs in = make(fusion_rows(cols), cols);
    const ForwardOut cpu = run_forward(cpu_, false, in, f, 1.0f);
    const ForwardOut gpu = run_forward(gpu_, true, in, f, 1.0f);
    const Tolerance t = fused_tolerance(c.dtype);
    // h: fp32 sums on the GPU, fp64 on the CPU, each rounded once to the dtype.
    expect_close(gpu.h.values(), cpu.h.values(), t, "h");
    expect_close(gpu.rstd, cpu.rstd, {0, 1e-5}, "save_rstd");
    if (!c.rms) expect_close(gpu.mean, cpu.mean, {1e-5, 1e-6}, "save_mean");
    expect_y_close(gpu, cpu, in, c.rms, t);
  }
}

// fp8 outputs: E4M3 after a residual add, E5M2 plain; scales that saturate some values.
TEST_P(GpuRowFusion, Fp8ForwardMatchesCpu) {
  const FusionCase c = GetParam();
  for (bool e5m2 : {false, true}) {
    const nk_row_fusion f = fusion(!e5m2, false, e5m2 ? NK_OUTPUT_FP8_E5M2 : NK_OUTPUT_FP8_E4M3);
    const float scale = e5m2 ? 20000.0f : 150.0f;
    for (int64_t cols : fusion_widths()) {
      SCOPED_TRACE(testing::Message() << (e5m2 ? "E5M2" : "E4M3") << " cols=" << cols);
      const Inputs in = make(fusion_rows(cols), cols);
      const int64_t n = in.desc.rows * cols;
      const ForwardOut cpu = run_forward(cpu_, false, in, f, scale);
      const ForwardOut gpu = run_forward(gpu_, true, in, f, scale);
      // Where y = x_hat * w + b cancels to nearly zero, the fp32 y's absolute error (a few ulp of
      // its terms, within the fp32 y tolerance) can span several fp8 steps of the CPU's fp64 y.
      const double slack = scale * fused_tolerance(NK_F32).atol;
      int bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t g = gpu.y.bytes()[i], k = cpu.y.bytes()[i];
        const double apart = fp8_reference_value(g, e5m2) - fp8_reference_value(k, e5m2);
        const bool near =
            std::abs(fp8_ordinal(g) - fp8_ordinal(k)) <= 1 || std::fabs(apart) <= slack;
        if (!near && bad++ < 5) {
          ADD_FAILURE() << "y[" << i << "] = 0x" << std::hex << int{g} << ", CPU 0x" << int{k};
        }
      }
      EXPECT_EQ(bad, 0);
      EXPECT_NEAR(gpu.amax, cpu.amax, 2e-5 * cpu.amax + 1e-6);
      // With fp32 data the GPU's own y is observable: the fp8 bytes and amax are then exact.
      if (c.dtype != NK_F32) continue;
      nk_row_fusion plain = f;
      plain.output = NK_OUTPUT_DTYPE;
      const ForwardOut y32 = run_forward(gpu_, true, in, plain, scale);
      float amax = 0;
      int mismatches = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float y = static_cast<float>(y32.y.get(i));
        amax = std::max(amax, std::fabs(y));
        const uint8_t want = nk::encode_fp8(y * scale, e5m2);
        if (gpu.y.bytes()[i] != want && mismatches++ < 5) {
          ADD_FAILURE() << "y[" << i << "] = 0x" << std::hex << int{gpu.y.bytes()[i]}
                        << ", fp8.hpp of the GPU's y 0x" << int{want};
        }
      }
      EXPECT_EQ(mismatches, 0);
      EXPECT_EQ(gpu.amax, amax);
    }
  }
}

// Residual add (dh_extra, dx, dresidual, dbias_in) with a zero-centred weight.
// Past the widths, a 32 KB staging limit sends 8200 columns to the generic path, whose 16-byte
// packs in 16-bit types the widths reach only in the full set.
TEST_P(GpuRowFusion, ResidualZeroCenteredBackwardMatchesCpu) {
  const FusionCase c = GetParam();
  const nk_row_fusion f = fusion(true, true, NK_OUTPUT_DTYPE);
  for (auto [cols, limit] : width_runs(8200, 32768)) {
    SCOPED_TRACE(testing::Message() << "cols=" << cols << " limit=" << limit);
    ScopedSharedLimit shared(limit);
    const Inputs in = make(fusion_rows(cols), cols);
    const int64_t rows = in.desc.rows;
    const ForwardOut stats = run_forward(cpu_, false, in, f, 1.0f);  // h and statistics
    const BackwardOut cpu = run_backward(cpu_, false, in, f, stats);
    const BackwardOut gpu = run_backward(gpu_, true, in, f, stats);
    // Error scales: dh is a difference of terms of size rstd * |dy * gamma| plus dh_extra; a
    // column sum's error scales with the sum of its terms' magnitudes.
    const std::vector<double> dy = in.dy.values(), wv = in.weight.values(), hv = stats.h.values();
    const std::vector<double> extra = in.dh_extra.values(), dxv = gpu.dx.values();
    double dx_scale = 0;
    std::vector<double> col_scale(cols, 0.0), dh_scale(cols, 0.0), dh_sum(cols, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t i = r * cols + j;
        const double xhat = (hv[i] - (c.rms ? 0.0 : stats.mean[r])) * stats.rstd[r];
        dx_scale = std::max(dx_scale, std::abs(dy[i] * (1 + wv[j])) * stats.rstd[r]);
        col_scale[j] += std::abs(dy[i]) * (1 + std::abs(xhat));
        dh_scale[j] += std::abs(dxv[i]);
        dh_sum[j] += dxv[i];
      }
    }
    const Tolerance t = fused_tolerance(c.dtype);
    expect_close(gpu.dx.values(), cpu.dx.values(), {t.atol * (dx_scale * 4 + 4), t.rtol}, "dx");
    EXPECT_EQ(gpu.dres.bytes(), gpu.dx.bytes());
    int failures = 0;
    const std::vector<double> dw_g = gpu.dw.values(), dw_c = cpu.dw.values();
    const std::vector<double> db_g = gpu.db.values(), db_c = cpu.db.values();
    const std::vector<double> dbin_g = gpu.dbin.values(), dbin_c = cpu.dbin.values();
    for (int64_t j = 0; j < cols && failures < 5; ++j) {
      auto check = [&](const char* what, double got, double want, double bound) {
        if (!(std::abs(got - want) <= bound)) {
          ++failures;
          ADD_FAILURE() << what << "[" << j << "] = " << got << ", expected " << want;
        }
      };
      check("dweight", dw_g[j], dw_c[j], 1e-5 * col_scale[j] + t.rtol * std::abs(dw_c[j]));
      if (!c.rms)
        check("dbias", db_g[j], db_c[j], 1e-5 * col_scale[j] + t.rtol * std::abs(db_c[j]));
      // dbias_in is the column sum of the GPU's own stored dh (fp32 sums, then one rounding).
      check("dbias_in", dbin_g[j], dh_sum[j], 1e-5 * dh_scale[j] + t.rtol * std::abs(dh_sum[j]));
      // ... and close to the CPU's sum of its dh.
      check("dbias_in vs CPU", dbin_g[j], dbin_c[j],
            4 * t.atol * (dx_scale + 1) * rows + 2 * t.rtol * std::abs(dbin_c[j]));
    }
  }
}

// The same bytes whatever grid the SM count gives: 1, 3 SMs and the whole device; on lane groups
// (128) and a block per row (4096), whose blocks loop over rows on one SM with the next row's x
// and residual in flight, the backward's staged rows (8200) and the forward's (8200), few long
// rows split across blocks (17 x 16392, forward and backward dx) and, in the full set, 300 rows of
// 16392 (forward staged, backward generic).
TEST_P(GpuRowFusion, SameBytesOnEveryGrid) {
  const FusionCase c = GetParam();
  nk_context limited[] = {context_with_sm_limit(1), context_with_sm_limit(3)};
  ASSERT_NE(limited[0], nullptr);
  ASSERT_NE(limited[1], nullptr);
  const nk_row_fusion fp8 = fusion(true, true, NK_OUTPUT_FP8_E4M3);
  const nk_row_fusion dtype_out = fusion(true, true, NK_OUTPUT_DTYPE);
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      reduced_gpu_tests()
          ? std::vector<std::pair<int64_t, int64_t>>{{300, 128}, {24, 4096}, {9, 8200}, {17, 16392}}
          : std::vector<std::pair<int64_t, int64_t>>{
                {20000, 128}, {300, 4096}, {300, 8200}, {300, 16384}, {300, 16392}};
  for (auto [rows, cols] : shapes) {
    SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
    const Inputs in = make(rows, cols);
    const ForwardOut a = run_forward(gpu_, true, in, fp8, 100.0f);
    const ForwardOut stats = run_forward(gpu_, true, in, dtype_out, 1.0f);
    const BackwardOut da = run_backward(gpu_, true, in, dtype_out, stats);
    for (nk_context ctx : limited) {
      const ForwardOut b = run_forward(ctx, true, in, fp8, 100.0f);
      EXPECT_EQ(a.y.bytes(), b.y.bytes());
      EXPECT_EQ(a.h.bytes(), b.h.bytes());
      EXPECT_EQ(std::memcmp(&a.amax, &b.amax, sizeof(float)), 0);
      const BackwardOut db = run_backward(ctx, true, in, dtype_out, stats);
      EXPECT_EQ(da.dx.bytes(), db.dx.bytes());
      EXPECT_EQ(da.dbin.bytes(), db.dbin.bytes());
      EXPECT_EQ(da.dw.bytes(), db.dw.bytes());
      if (!c.rms) {
        EXPECT_EQ(da.db.bytes(), db.db.bytes());
      }
    }
  }
  for (nk_context ctx : limited) nk_context_destroy(ctx);
}

// Parameters in the data's dtype, and in fp32 with 16-bit data (their own kernel instances).
INSTANTIATE_TEST_SUITE_P(All, GpuRowFusion,
                         testing::Values(FusionCase{false, NK_F32, NK_F32},
                                         FusionCase{false, NK_F16, NK_F16},
                                         FusionCase{false, NK_BF16, NK_BF16},
                                         FusionCase{false, NK_F16, NK_F32},
                                         FusionCase{false, NK_BF16, NK_F32},
                                         FusionCase{true, NK_F32, NK_F32},
                                         FusionCase{true, NK_F16, NK_F16},
                                         FusionCase{true, NK_BF16, NK_BF16},
                                         FusionCase{true, NK_F16, NK_F32},
                                         FusionCase{true, NK_BF16, NK_F32}),
                         fusion_case_name);

}  // namespace
}  // namespace nkt
