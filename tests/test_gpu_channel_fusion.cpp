// Fused batch, instance and group norm with an activation on the CUDA backend, against the CPU
// backend (itself checked against the plain ops in test_channel_fusion.cpp) on fresh random data,
// for every norm x phase x activation x residual x layout x dtype, on shapes that reach every path
// of the channel-norm plan (kernels/channel_norm_plan.hpp): NCHW rows of whole 16-byte packs
// (S % 8 == 0), of half packs (S = 196 in 16-bit types, 98 in fp32; elementwise passes in packs
// that cross rows, with a tail of single elements where N C S is not whole packs), rows of exactly
// half a pack (S = 4, 2: half packs throughout), rows shorter than a pack (S = 3: elementwise
// packs over several rows, a tail), short unaligned rows (S = 49, a tail in 16 bits),
// long odd rows (S = 1031), S = 1 (channels contiguous); NHWC with C % 8 == 0, C odd over
// positions that are whole periods of 16-byte packs (C = 9, S = 8; C = 514, a period wider than a
// block) and over positions that are not (batch norm, and one sample: periods with a partial last
// one, or only that; two samples: packs of the flat tensor in the elementwise passes, single
// elements in the reductions); pointers misaligned by one element (single-element paths).
//
// Bounds: the GPU computes in fp32, the CPU in fp64 and each rounds its outputs once. Each
// quantity gets a budget of kGpuRoundings (64 fp32 roundings) of the magnitudes it is made of:
// the statistics come from a per-thread Welford walk of a few dozen values and a merge tree of
// depth <= 16, the apply and the activation add a handful of operations. For u = xhat*w + b + z:
//   e_u = kGpuRoundings * (|w| (|xhat| + invstd |mean| + 1) + |b| + |z|)
// (the mean's error is relative to |mean| + std, and std * invstd is about 1); y within
// ulp_dtype(|y| + e) + e with e = 1.1 e_u (|act'| <= 1.1) plus the budget of |y| for SiLU. The
// mask bit for bit except where the CPU's |u| is within e_u of 0. The backward takes the same
// inputs on both backends (the CPU forward's statistics, y and mask), so only its own arithmetic
// differs: du moves by max|silu''| |dy| e_u plus the budget of |du| (SiLU; ReLU and identity give
// dy or 0 exactly), and that, with the budget of the reductions, propagates through the norm's
// backward as in test_channel_fusion.cpp.
// Also: the same bytes of every output on grids sized for 1 and 3 SMs, the in-place pairs' bytes
// against the calls without aliasing (training, a one-read path of each norm and layout), and a
// failing call that writes nothing. Device outputs are poisoned before every call and every element
// is compared. NORMKIT_GPU_TESTS=reduced runs one or two paths per test (the simulated lane);
// skipped, with the reason, without a CUDA device.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "channel_fusion_cases.hpp"
#include "channel_ops.hpp"
#include "gpu_support.hpp"
#include "resident_rows_cases.hpp"
#include "row_groups_cases.hpp"
#include "short_rows_cases.hpp"
#include "test_support.hpp"

namespace nkt {
namespace {

using Config = FusionConfig;

constexpr double kGpuRoundings = 64 * 0x1p-24;

struct PathRun {
  ChannelCase k;
  int64_t misalign;  // elements every activation pointer is offset by
};

// The plan's paths per layout: (n, c, s, groups, misalign).
std::vector<PathRun> path_runs(const Config& c) {
  const int64_t half = c.dtype == NK_F32 ? 98 : 196;          // S % pack == pack / 2
  const int64_t quarter = c.dtype == NK_F32 ? 2 : 4;          // S == pack / 2
  const int64_t long_half = c.dtype == NK_F32 ? 1030 : 1028;  // S % pack == pack / 2, > 1024
  // S = half: 16-byte packs that cross rows, the tensor whole packs (N C = 8) or not (N C = 9: a
  // tail of 4 elements in 16 bits, 2 in fp32). S = 3: packs over 3 or 4 rows, 54 elements (a tail
  // of 6 in 16 bits, 2 in fp32). 9 x 6 x 5: batch norm's statistics over 30 columns a sample,
  // periods of 4 or 2 samples and a partial one. S = 1024 and long_half: batch norm's walk takes
  // a channel's 2048-odd elements as one chunk of a block (partials_rows' block per chunk, whole
  // packs, half packs and, misaligned, single elements), the gradient sums of every activation
  // with it. S = 49 misaligned: the walk's short rows (partials_short_rows, a lane or a warp a
  // row) in single elements.
  const int64_t nchw[][5] = {{2, 4, 64, 2, 0},   {2, 4, half, 2, 0},    {3, 4, 49, 2, 0},
                             {2, 4, 1031, 2, 0}, {3, 12, 1, 4, 0},      {2, 4, 64, 2, 1},
                             {3, 3, half, 3, 0}, {2, 3, quarter, 3, 0}, {3, 6, 3, 3, 0},
                             {9, 6, 5, 3, 0},    {2, 4, 1024, 2, 0},    {2, 4, long_half, 2, 0},
                             {2, 4, 1024, 2, 1}, {3, 4, 49, 2, 1}};
  // C = 9 in periods of packs (S = 7: batch norm's 21 positions end in a partial period, 8 a
  // period in 16 bits, 4 in fp32); C = 514 in a period of 257 packs, split into tiles; one
  // sample of 5 positions, a partial period alone in 16 bits; two such samples (flat packs
  // across the samples' boundary, a tail of 2); C = 514 misaligned (the split period's tiles of
  // single elements).
  const int64_t nhwc[][5] = {{2, 16, 24, 4, 0}, {3, 9, 7, 3, 0},   {3, 12, 1, 4, 0},
                             {2, 16, 24, 4, 1}, {2, 514, 8, 2, 0}, {4, 9, 8, 3, 0},
                             {1, 9, 5, 3, 0},   {2, 9, 5, 3, 0},   {2, 514, 8, 2, 1}};
  std::vector<PathRun> out;
  auto add = [&](const int64_t* p) {
    out.push_back(
        {ChannelCase{c.family, p[0], p[1], p[2], c.layout, c.family == Family::kGroup ? p[3] : 1},
         p[4]});
  };
  if (c.layout == NK_NCHW) {
    for (const auto& p : nchw) add(p);
  } else {
    for (const auto& p : nhwc) add(p);
  }
  return out;
}

// The full set runs every path. The reduced set runs, for (activation, residual) pair p (0 to 5),
// the paths p, p + 6, ... (NCHW's 14: p, p + 6 and, for p <= 1, p + 12; NHWC's 9: p and p + 6 for
// p <= 2, else path p), or path p modulo the paths where there are fewer than 6, so that each
// norm x phase x layout x dtype meets every path once (the next one where training cannot run a
// shape: instance norm with S = 1).
std::vector<PathRun> runs(const Config& c) {
  const std::vector<PathRun> all = path_runs(c);
  std::vector<PathRun> out;
  if (!reduced_gpu_tests()) {
    for (const PathRun& r : all) {
      if (runnable(c, r.k)) out.push_back(r);
    }
    return out;
  }
  constexpr size_t kPairs = 6;
  const size_t pick = static_cast<size_t>(c.act) * 2 + (c.residual ? 1 : 0);
  for (size_t first = pick % all.size(); first < all.size(); first += kPairs) {
    for (size_t j = 0; j < all.size(); ++j) {
      const PathRun& r = all[(first + j) % all.size()];
      if (runnable(c, r.k)) {
        out.push_back(r);
        break;
      }
    }
  }
  return out;
}

std::vector<float> nan_floats(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
}
DeviceBuffer upload(const std::vector<float>& v) {
  return DeviceBuffer(Buffer(NK_F32, to_doubles(v)));
}
std::vector<uint32_t> words_of(const Buffer& b) {
  std::vector<uint32_t> w(b.bytes().size() / 4);
  std::memcpy(w.data(), b.data(), w.size() * 4);
  return w;
}
DeviceBuffer counter(int64_t value) {
  Buffer host(NK_F32, 2);
  std::memcpy(host.data(), &value, 8);
  return DeviceBuffer(host);
}
int64_t counter_of(const DeviceBuffer& d) {
  int64_t value = 0;
  std::memcpy(&value, d.download().data(), 8);
  return value;
}
int64_t mask_words(const ChannelCase& k) { return (numel(k) + 31) / 32; }

// The forward's buffers for c on either backend: what c does not use is NULL.
struct ForwardPointers {
  const void* x;
  const void* z;
  const float *w, *b;
  float *rm, *rv;
  int64_t* tracked;
  void* y;
  float *mean, *invstd;
  void* mask;  // ReLU only (may be NULL)
};

nk_status fused_forward(nk_context ctx, const Config& c, const ChannelCase& k,
                        const ForwardPointers& p) {
  const bool training = c.phase == NK_TRAINING, run = has_running(c);
  const nk_act_desc d = desc_of(k, c.dtype);
  const nk_channel_fusion f = fusion_of(c, k);
  const nk_norm_params params = fusion_params(c);
  nk_channel_fused_forward_buffers fb{};
  fb.x = p.x;
  fb.z = c.residual ? p.z : nullptr;
  fb.weight = p.w;
  fb.bias = p.b;
  fb.running_mean = run ? p.rm : nullptr;
  fb.running_var = run ? p.rv : nullptr;
  fb.num_batches_tracked = run ? p.tracked : nullptr;
  fb.y = p.y;
  fb.save_mean = training ? p.mean : nullptr;
  fb.save_invstd = training ? p.invstd : nullptr;
  fb.relu_mask = c.act == NK_ACTIVATION_RELU ? p.mask : nullptr;
  return nk_channel_norm_fused_forward(ctx, &d, &f, &params, &fb);
}

// Which of the forward's outputs the ReLU backward takes its derivative from.
enum class ReluFrom { kMask, kY };

struct BackwardPointers {
  const void *x, *dy, *y, *mask, *z;
  const float *w, *b, *rm, *rv, *mean, *invstd;
  void *dx, *dz;
  float *dw, *db;
};

nk_status fused_backward(nk_context ctx, const Config& c, const ChannelCase& k,
                         const BackwardPointers& p, ReluFrom from) {
  const bool training = c.phase == NK_TRAINING, relu = c.act == NK_ACTIVATION_RELU;
  const bool silu = c.act == NK_ACTIVATION_SILU;
  const nk_act_desc d = desc_of(k, c.dtype);
  const nk_channel_fusion f = fusion_of(c, k);
  const nk_norm_params params = fusion_params(c);
  nk_channel_fused_backward_buffers bb{};
  bb.x = p.x;
  bb.dy = p.dy;
  bb.y = relu && from == ReluFrom::kY ? p.y : nullptr;
  bb.relu_mask = relu && from == ReluFrom::kMask ? p.mask : nullptr;
  bb.z = silu && c.residual ? p.z : nullptr;
  bb.weight = p.w;
  bb.bias = silu ? p.b : nullptr;
  bb.running_mean = training ? nullptr : p.rm;
  bb.running_var = training ? nullptr : p.rv;
  bb.save_mean = training ? p.mean : nullptr;
  bb.save_invstd = training ? p.invstd : nullptr;
  bb.dx = p.dx;
  bb.dz = c.residual ? p.dz : nullptr;
  bb.dweight = p.dw;
  bb.dbias = p.db;
  return nk_channel_norm_fused_backward(ctx, &d, &f, &params, &bb);
}

// A forward's device buffers: x and z from `in` (offset by `misalign` elements), y, the weights,
// running statistics and counter from `in`, the saved statistics and the mask (with `guard_words`
// words past its size); the outputs poisoned (0xFF bytes).
struct ForwardDevice {
  DeviceBuffer x, z, y, w, b, rm, rv, tracked, mean, invstd, mask;
  ForwardDevice(const Config& c, const ChannelCase& k, const FusionInputs& in, int64_t misalign = 0,
                int64_t guard_words = 0)
      : x(in.x, misalign),
        y(c.dtype, numel(k), misalign),
        w(upload(in.w)),
        b(upload(in.b)),
        rm(upload(in.rm)),
        rv(upload(in.rv)),
        tracked(counter(in.tracked)),
        mean(NK_F32, num_stats(k)),
        invstd(NK_F32, num_stats(k)),
        mask(NK_F32, mask_words(k) + guard_words) {
    if (c.residual) z = DeviceBuffer(in.z, misalign);
  }
  // The call's pointers, y written into `out` (y's buffer, or in place x's or z's).
  ForwardPointers pointers(const DeviceBuffer& out) const {
    return {x.data(),
            z.data(),
            w.f32(),
            b.f32(),
            rm.f32(),
            rv.f32(),
            static_cast<int64_t*>(tracked.data()),
            out.data(),
            mean.f32(),
            invstd.f32(),
            mask.data()};
  }
  // The backward's pointers on this forward's buffers (x, z, y, the mask, the weights, the
  // running and saved statistics), with dy and the gradients' buffers.
  BackwardPointers backward_pointers(const DeviceBuffer& dy, const DeviceBuffer& dx,
                                     const DeviceBuffer& dz, const DeviceBuffer& dw,
                                     const DeviceBuffer& db) const {
    return {x.data(), dy.data(),  y.data(),     mask.data(), z.data(),  w.f32(),  b.f32(), rm.f32(),
            rv.f32(), mean.f32(), invstd.f32(), dx.data(),   dz.data(), dw.f32(), db.f32()};
  }
};

// The CPU forward's outputs, the inputs of both backward calls.
struct CpuForward {
  Buffer y;
  std::vector<float> mean, invstd, rm, rv;
  int64_t tracked;
  std::vector<uint32_t> mask;  // ReLU: the words plus one guard word
  std::vector<double> u, n;    // u = n + z, n the plain forward's fp32 output
};

class GpuChannelFusion : public GpuTest, public testing::WithParamInterface<Config> {
 protected:
  CpuForward cpu_forward(const ChannelCase& k, const FusionInputs& in) {
    const Config& c = GetParam();
    const int64_t count = numel(k), stats = num_stats(k);
    CpuForward f{Buffer(c.dtype, count),
                 nan_floats(stats),
                 nan_floats(stats),
                 in.rm,
                 in.rv,
                 in.tracked,
                 std::vector<uint32_t>(static_cast<size_t>(mask_words(k) + 1), ~0u),
                 {},
                 {}};
    f.y.poison();
    const ForwardPointers p{in.x.data(),   in.z.data(),     in.w.data(),  in.b.data(),
                            f.rm.data(),   f.rv.data(),     &f.tracked,   f.y.data(),
                            f.mean.data(), f.invstd.data(), f.mask.data()};
    EXPECT_EQ(fused_forward(cpu_, GetParam(), k, p), NK_SUCCESS) << nk_last_error();
    // u: the plain forward of x in fp32 (inference reads copies of the running statistics).
    const Buffer x32(NK_F32, in.x.values());
    Buffer n32(NK_F32, count);
    std::vector<float> rm = in.rm, rv = in.rv;
    const bool frozen = c.phase == NK_INFERENCE;
    nk_norm_params params = fusion_params(c);
    EXPECT_EQ(channel_forward(cpu_, k, NK_F32, params, x32.data(), in.w.data(), in.b.data(),
                              frozen ? rm.data() : nullptr, frozen ? rv.data() : nullptr, nullptr,
                              n32.data(), nullptr, nullptr),
              NK_SUCCESS)
        << nk_last_error();
    f.n = n32.values();
    f.u = f.n;
    if (c.residual) {
      for (int64_t i = 0; i < count; ++i) f.u[static_cast<size_t>(i)] += in.z.get(i);
    }
    return f;
  }

  void check_forward(const PathRun& r);   // the GPU forward against the CPU's
  void check_backward(const PathRun& r);  // both backward calls on the CPU forward's outputs

  // e_u per element (header comment).
  static std::vector<double> u_error(const Config& c, const FusionInputs& in,
                                     const BackwardStats& st) {
    std::vector<double> e(st.xhat.size());
    for (size_t i = 0; i < e.size(); ++i) {
      const auto ch = static_cast<size_t>(st.channel[i]);
      const double z = c.residual ? std::fabs(in.z.get(static_cast<int64_t>(i))) : 0.0;
      e[i] = kGpuRoundings * (std::fabs(st.weight[i]) * (std::fabs(st.xhat[i]) +
                                                         st.invstd[i] * std::fabs(st.mean[i]) + 1) +
                              std::fabs(in.b[ch]) + z);
    }
    return e;
  }
};

void GpuChannelFusion::check_forward(const PathRun& r) {
  const Config c = GetParam();
  const bool relu = c.act == NK_ACTIVATION_RELU, training = c.phase == NK_TRAINING;
  const ChannelCase& k = r.k;
  const FusionInputs in = fusion_inputs(rng_, c, k);
  const int64_t count = numel(k), stats = num_stats(k);
  const CpuForward cpu = cpu_forward(k, in);

  const ForwardDevice d(c, k, in, r.misalign, 1);  // the mask: every bit set, one guard word
  ASSERT_EQ(fused_forward(gpu_, c, k, d.pointers(d.y)), NK_SUCCESS) << nk_last_error();

  const BackwardStats st = backward_stats(c, k, in, cpu.mean, cpu.invstd);
  const std::vector<double> e_u = u_error(c, in, st), y_cpu = cpu.y.values();
  std::vector<double> bound(static_cast<size_t>(count));
  for (size_t i = 0; i < bound.size(); ++i) {
    double e = kMaxSiluSlope * e_u[i];
    if (c.act == NK_ACTIVATION_SILU) e += kGpuRoundings * std::fabs(y_cpu[i]);
    bound[i] = ulp(std::fabs(y_cpu[i]) + e, c.dtype) + e;
  }
  expect_within(d.y.download().values(), y_cpu, bound, "y");
  if (training) {
    std::vector<double> bm(static_cast<size_t>(stats)), bi = bm;
    for (size_t j = 0; j < bm.size(); ++j) {
      bm[j] = kGpuRoundings * (std::fabs(double{cpu.mean[j]}) + 1 / double{cpu.invstd[j]});
      bi[j] = kGpuRoundings * cpu.invstd[j];
    }
    expect_within(d.mean.download().values(), to_doubles(cpu.mean), bm, "save_mean");
    expect_within(d.invstd.download().values(), to_doubles(cpu.invstd), bi, "save_invstd");
  }
  if (has_running(c)) {
    // running = (1 - m) running + m * batch statistic: the budget of both terms.
    double big_mean = 0, big_var = 0;
    for (int64_t j = 0; training && j < stats; ++j) {
      const auto uj = static_cast<size_t>(j);
      big_mean = std::max(big_mean, std::fabs(double{cpu.mean[uj]}) + 1 / double{cpu.invstd[uj]});
      big_var = std::max(big_var, 2 / (double{cpu.invstd[uj]} * cpu.invstd[uj]));
    }
    std::vector<double> brm(static_cast<size_t>(k.c)), brv = brm;
    for (size_t ch = 0; ch < brm.size(); ++ch) {
      brm[ch] = kGpuRoundings * (std::fabs(cpu.rm[ch]) + std::fabs(in.rm[ch]) + big_mean);
      brv[ch] = kGpuRoundings * (std::fabs(cpu.rv[ch]) + std::fabs(in.rv[ch]) + big_var);
    }
    expect_within(d.rm.download().values(), to_doubles(cpu.rm), brm, "running_mean");
    expect_within(d.rv.download().values(), to_doubles(cpu.rv), brv, "running_var");
    EXPECT_EQ(counter_of(d.tracked), cpu.tracked);
  }
  if (!relu) return;
  const std::vector<uint32_t> got = words_of(d.mask.download());
  int wrong = 0;
  for (int64_t i = 0; i < count; ++i) {
    const auto ui = static_cast<size_t>(i);
    if (std::fabs(cpu.u[ui]) <= e_u[ui] + 0x1p-24 * std::fabs(cpu.n[ui])) continue;
    if (mask_bit(got, i) != mask_bit(cpu.mask, i) && ++wrong <= 5) {
      ADD_FAILURE() << "mask bit " << i << " = " << mask_bit(got, i) << ", u " << cpu.u[ui];
    }
  }
  EXPECT_EQ(wrong, 0) << "mask bits differ from the CPU's";
  for (int64_t i = count; i < 32 * mask_words(k); ++i) EXPECT_FALSE(mask_bit(got, i)) << i;
  EXPECT_EQ(got.back(), ~0u) << "written past the mask's size";
}

void GpuChannelFusion::check_backward(const PathRun& r) {
  const Config c = GetParam();
  const bool relu = c.act == NK_ACTIVATION_RELU, silu = c.act == NK_ACTIVATION_SILU;
  const ChannelCase& k = r.k;
  const FusionInputs in = fusion_inputs(rng_, c, k);
  const int64_t count = numel(k);
  const auto ucount = static_cast<size_t>(count);
  const CpuForward cpu = cpu_forward(k, in);
  const BackwardStats st = backward_stats(c, k, in, cpu.mean, cpu.invstd);
  const std::vector<double> e_u = u_error(c, in, st), dy = in.dy.values(), y = cpu.y.values();

  Buffer mask_host(NK_F32, static_cast<int64_t>(cpu.mask.size()));
  std::memcpy(mask_host.data(), cpu.mask.data(), cpu.mask.size() * 4);
  DeviceBuffer x(in.x, r.misalign), dyd(in.dy, r.misalign), yd(cpu.y, r.misalign), z;
  if (c.residual) z = DeviceBuffer(in.z, r.misalign);
  DeviceBuffer mask(mask_host), w = upload(in.w), b = upload(in.b), rm = upload(in.rm),
                                rv = upload(in.rv), mean = upload(cpu.mean),
                                invstd = upload(cpu.invstd);

  for (ReluFrom from : {ReluFrom::kMask, ReluFrom::kY}) {
    if (from == ReluFrom::kY && !relu) break;
    SCOPED_TRACE(relu ? (from == ReluFrom::kMask ? "ReLU from the mask" : "ReLU from y") : "");
    Buffer dx_c(c.dtype, count), dz_c(c.dtype, count);
    dx_c.poison();
    dz_c.poison();
    std::vector<float> dw_c = nan_floats(k.c), db_c = nan_floats(k.c);
    const BackwardPointers pc{in.x.data(),  in.dy.data(),    cpu.y.data(),      cpu.mask.data(),
                              in.z.data(),  in.w.data(),     in.b.data(),       in.rm.data(),
                              in.rv.data(), cpu.mean.data(), cpu.invstd.data(), dx_c.data(),
                              dz_c.data(),  dw_c.data(),     db_c.data()};
    ASSERT_EQ(fused_backward(cpu_, c, k, pc, from), NK_SUCCESS) << nk_last_error();
    DeviceBuffer dx(c.dtype, count, r.misalign), dz(c.dtype, count, r.misalign), dw(NK_F32, k.c),
        db(NK_F32, k.c);
    const BackwardPointers pg{x.data(),     dyd.data(), yd.data(), mask.data(), z.data(),
                              w.f32(),      b.f32(),    rm.f32(),  rv.f32(),    mean.f32(),
                              invstd.f32(), dx.data(),  dz.data(), dw.f32(),    db.f32()};
    ASSERT_EQ(fused_backward(gpu_, c, k, pg, from), NK_SUCCESS) << nk_last_error();

    // du on the CPU's terms, and e_du, how far the GPU's du can be from it.
    std::vector<double> du(ucount), e_du(ucount, 0.0), magnitude(ucount);
    for (size_t i = 0; i < ucount; ++i) {
      double slope = 1.0;
      if (relu) {
        slope = from == ReluFrom::kMask ? mask_bit(cpu.mask, static_cast<int64_t>(i)) : y[i] > 0;
      } else if (silu) {
        slope = silu_slope(cpu.u[i]);
        e_du[i] = kMaxSiluCurvature * std::fabs(dy[i]) * e_u[i] +
                  kGpuRoundings * std::fabs(dy[i] * slope);
      }
      du[i] = dy[i] * slope;
      magnitude[i] = std::fabs(du[i]);
    }
    const std::vector<double> moved = st.propagate(e_du), scale = st.propagate(magnitude);
    const std::vector<double> dx_cpu = dx_c.values();
    std::vector<double> bound(ucount);
    for (size_t i = 0; i < ucount; ++i) {
      const double e =
          moved[i] + kGpuRoundings * (1 + st.invstd[i] * std::fabs(st.mean[i])) * scale[i];
      bound[i] = ulp(std::fabs(dx_cpu[i]) + e, c.dtype) + e;
    }
    expect_within(dx.download().values(), dx_cpu, bound, "dx");
    if (c.residual) {
      const std::vector<double> dz_cpu = dz_c.values();
      for (size_t i = 0; i < ucount; ++i) {
        bound[i] = ulp(std::fabs(dz_cpu[i]) + e_du[i], c.dtype) + e_du[i];
      }
      expect_within(dz.download().values(), dz_cpu, bound, "dz");
    }
    std::vector<double> bw(static_cast<size_t>(k.c), 0.0), bb = bw;
    for (size_t i = 0; i < ucount; ++i) {
      const auto ch = static_cast<size_t>(st.channel[i]);
      bw[ch] += e_du[i] * std::fabs(st.xhat[i]) +
                kGpuRoundings * magnitude[i] *
                    (std::fabs(st.xhat[i]) + st.invstd[i] * std::fabs(st.mean[i]));
      bb[ch] += e_du[i] + kGpuRoundings * magnitude[i];
    }
    for (size_t ch = 0; ch < bw.size(); ++ch) {
      bw[ch] += ulp(std::fabs(dw_c[ch]) + bw[ch], NK_F32);
      bb[ch] += ulp(std::fabs(db_c[ch]) + bb[ch], NK_F32);
    }
    expect_within(dw.download().values(), to_doubles(dw_c), bw, "dweight");
    expect_within(db.download().values(), to_doubles(db_c), bb, "dbias");
  }
}

// Forward and backward in one test per combination (the simulated lane pays a process start per
// batch of tests, not per check). Batch norm's NCHW training twice: through its tiles of a channel
// where they take the shape, and through the walk (ScopedBatchWalk).
TEST_P(GpuChannelFusion, ForwardAndBackwardMatchCpu) {
  const Config c = GetParam();
  const bool batch_nchw_training =
      c.family == Family::kBatch && c.layout == NK_NCHW && c.phase == NK_TRAINING;
  const std::vector<PathRun> list = runs(c);
  ASSERT_FALSE(list.empty()) << "no shape runs this combination";
  for (const PathRun& r : list) {
    const ChannelCase& k = r.k;
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s
                                    << " g=" << k.groups << " misalign " << r.misalign);
    check_forward(r);
    check_backward(r);
    if (batch_nchw_training) {
      SCOPED_TRACE("the walk");
      const ScopedBatchWalk walk;
      check_forward(r);
      check_backward(r);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, GpuChannelFusion,
                         testing::ValuesIn(fusion_configs([](const Config&) { return true; })),
                         fusion_config_name);

// Batch norm's NCHW shapes take the tiles of a channel (batch_tile_shapes, forward and backward)
// and of its parts (batch_split_shapes' first).
void assert_batch_tile_paths(nk_dtype dtype) {
  for (const ChannelCase& k : batch_tile_shapes()) {
    ASSERT_TRUE(takes_batch_tiles(k, dtype));
    ASSERT_TRUE(takes_batch_tiles(k, dtype, 2));
  }
  const ChannelCase split = batch_split_shapes(dtype)[0];
  ASSERT_GT(batch_tile_plan(split, dtype).parts, 1);
  ASSERT_GT(batch_tile_plan(split, dtype, 2).parts, 1);
}

// One read of x (resident_rows_cases.hpp): every activation and residual of instance and group
// norm training in NCHW where a row fits a block, with aligned pointers (16-byte accesses) and
// misaligned ones (single elements), and the backward from its outputs (one read of x and dy);
// both again with only a third of each row staged (the tails of long rows). Group norm in NHWC
// likewise where a tile of groups fits a block (plan_group_tiles). NCHW rows of at most a pack
// (short_rows_cases.hpp, rows in registers forward and backward) and rows above a pack and below
// 4 KiB (row_groups_cases.hpp, a group of lanes a row), aligned and misaligned. Instance norm in
// NHWC where a tile of a pack of channels fits a block (plan_instance_tiles), and batch norm in
// NHWC (or S = 1) as one sample's instance norm: the forward reads x once, the backward x and dy
// (plan_instance_tiles with both staged). Batch norm in NCHW where a block holds a channel
// (batch_tile_shapes): the forward reads x once, the backward x and dy (plan_batch_tiles with both
// staged), both again with a third of the tile staged; and a channel in parts (batch_split_shapes),
// in clusters and in two launches (fp32 also with an H100's opt-in shared memory: kSplitFormNames).
// Each test asserts the paths of its shapes before it uses the device (GpuTest), so the asserts
// run without a GPU too.
class GpuChannelFusionResident : public GpuChannelFusion {
 protected:
  GpuChannelFusionResident() { paths_before_device_ = true; }
};

TEST_P(GpuChannelFusionResident, ForwardAndBackwardMatchCpu) {
  const Config c = GetParam();
  const bool tiles = c.layout == NK_NHWC, instance_tiles = tiles && c.family != Family::kGroup;
  if (c.family == Family::kBatch && !tiles) {  // tiles of a channel
    const ChannelCase split = batch_split_shapes(c.dtype)[0];
    ASSERT_NO_FATAL_FAILURE(assert_batch_tile_paths(c.dtype));
    ASSERT_FALSE(part_head_short(batch_tile_plan(split, c.dtype)));
    ASSERT_EQ(part_head_short(batch_tile_plan(split, c.dtype, 2)), c.dtype == NK_F32);
    NKT_REQUIRE_DEVICE();
    for (const ChannelCase& k : batch_tile_shapes()) {
      for (int64_t misalign : {0, 1}) {
        SCOPED_TRACE(testing::Message()
                     << "n=" << k.n << " c=" << k.c << " s=" << k.s << " misalign " << misalign);
        check_forward(PathRun{k, misalign});
        check_backward(PathRun{k, misalign});
        // The loops over a tile's tail, with a third of it staged.
        const ScopedResidentHead knob(batch_tile_plan(k, c.dtype).packs * 16 / 3 / 16 * 16);
        check_forward(PathRun{k, misalign});
        check_backward(PathRun{k, misalign});
      }
    }
    // A channel's runs in parts, forward and backward, in each form (kSplitFormNames; the third
    // where the plan's head is shorter than a part: the fp32 backward; the reduced set: aligned).
    const bool grows = part_head_short(batch_tile_plan(split, c.dtype, 2));
    for (int form = 0; form < (grows ? kSplitForms : 2); ++form) {
      const ScopedSplitForm knobs(form);
      for (int64_t misalign : {0, 1}) {
        if (form == 2 && misalign == 1 && reduced_gpu_tests()) continue;
        SCOPED_TRACE(testing::Message()
                     << "parts, " << kSplitFormNames[form] << ", misalign " << misalign);
        check_forward(PathRun{split, misalign});
        check_backward(PathRun{split, misalign});
      }
    }
    return;
  }
  const std::vector<ChannelCase> shapes = instance_tiles ? instance_tile_shapes(c.family, c.dtype)
                                          : tiles        ? group_tile_shapes(c.dtype)
                                                         : resident_row_shapes(c.family, c.dtype);
  // Rows in registers and a group of lanes a row (NCHW, after the rows that fit a block).
  const std::vector<ChannelCase> all =
      tiles ? std::vector<ChannelCase>{} : short_row_shapes(c.family, c.dtype);
  const std::vector<ChannelCase> groups =
      tiles ? std::vector<ChannelCase>{} : row_group_shapes(c.family);
  for (const ChannelCase& k : shapes) {
    if (instance_tiles) {
      ASSERT_TRUE(takes_instance_tiles(k, c.dtype));
      ASSERT_TRUE(takes_instance_tiles(k, c.dtype, 2));
    } else if (tiles) {
      ASSERT_TRUE(takes_group_tiles(k, c.dtype));
      ASSERT_TRUE(takes_group_tiles(k, c.dtype, 2));
    } else {
      ASSERT_TRUE(takes_resident_rows(k, c.dtype));
      ASSERT_TRUE(takes_resident_rows(k, c.dtype, 2));
    }
  }
  for (const ChannelCase& k : all) ASSERT_TRUE(takes_short_rows(k, c.dtype));
  for (const ChannelCase& k : groups) ASSERT_TRUE(takes_row_groups(k, c.dtype));
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : shapes) {
    const nk::ChannelShape shape{
        k.family == Family::kGroup ? nk::ChannelNorm::kGroup : nk::ChannelNorm::kInstance,
        k.n,
        k.c,
        k.s,
        k.layout,
        c.dtype,
        k.groups};
    const int elem = static_cast<int>(elem_size(c.dtype));
    const int64_t block_bytes = instance_tiles ? instance_tile_plan(k, c.dtype).len * elem
                                : tiles        ? nk::cuda::plan_group_tiles(shape, elem).len * elem
                                               : numel(k) / num_stats(k) * elem;
    for (int64_t misalign : {0, 1}) {
      SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s
                                      << " g=" << k.groups << " misalign " << misalign);
      check_forward(PathRun{k, misalign});
      check_backward(PathRun{k, misalign});
      // The loops over a block's tail (rows above 96 KiB forward, 48 KiB backward; tiles above
      // 88 KiB forward, 44 KiB backward), here with a third of it staged.
      const ScopedResidentHead knob(block_bytes / 3 / 16 * 16);
      check_forward(PathRun{k, misalign});
      check_backward(PathRun{k, misalign});
    }
  }
  if (tiles) return;
  // Rows in registers compile a kernel per row length, activation and residual, so even the
  // reduced set runs every row length (small tensors), with aligned pointers; misaligned ones only
  // on one shape of each (activation, residual) pair.
  const size_t pick = (static_cast<size_t>(c.act) * 2 + (c.residual ? 1 : 0)) % all.size();
  for (size_t i = 0; i < all.size(); ++i) {
    const ChannelCase& k = all[i];
    for (int64_t misalign : {0, 1}) {
      if (reduced_gpu_tests() && misalign == 1 && i != pick) continue;
      SCOPED_TRACE(testing::Message() << "rows in registers n=" << k.n << " c=" << k.c << " s="
                                      << k.s << " g=" << k.groups << " misalign " << misalign);
      check_forward(PathRun{k, misalign});
      check_backward(PathRun{k, misalign});
    }
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    if (reduced_gpu_tests() && i != pick % groups.size()) continue;
    const ChannelCase& k = groups[i];
    for (int64_t misalign : {0, 1}) {
      SCOPED_TRACE(testing::Message() << "row groups n=" << k.n << " c=" << k.c << " s=" << k.s
                                      << " g=" << k.groups << " misalign " << misalign);
      check_forward(PathRun{k, misalign});
      check_backward(PathRun{k, misalign});
    }
  }
}

// Split tiles (split_tile_shapes: instance and group norm in NHWC, batch norm as one sample,
// tiles above a block in parts): every activation and residual, the forward and the backward from
// its outputs, as clusters where the device has them and in two launches
// (NORMKIT_TEST_NO_CLUSTERS), aligned and misaligned (the reduced set: the clusters aligned, the
// two launches misaligned); and where the plan's head is shorter than a part (group norm's tile of
// 256 packs a position, backward), as clusters with an H100's opt-in shared memory (the reduced
// set: aligned).
TEST_P(GpuChannelFusionResident, SplitTilesMatchCpu) {
  const Config c = GetParam();
  if (c.layout != NK_NHWC) GTEST_SKIP() << "split tiles: NHWC";
  for (const ChannelCase& k : split_tile_shapes(c.family, c.dtype)) {
    ASSERT_EQ(split_tile_plan(k, c.dtype).parts, k.s == 49 ? 4 : 8);
    ASSERT_EQ(split_tile_plan(k, c.dtype, 2).parts, k.s == 49 ? 4 : 8);
    ASSERT_FALSE(part_head_short(split_tile_plan(k, c.dtype), c.dtype));
    ASSERT_EQ(part_head_short(split_tile_plan(k, c.dtype, 2), c.dtype), k.s == 49);
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : split_tile_shapes(c.family, c.dtype)) {
    const bool grows = part_head_short(split_tile_plan(k, c.dtype, 2), c.dtype);
    for (int form = 0; form < (grows ? kSplitForms : 2); ++form) {
      const ScopedSplitForm knobs(form);
      for (int64_t misalign : {0, 1}) {
        if (reduced_gpu_tests() && misalign != (form == 1 ? 1 : 0)) continue;
        SCOPED_TRACE(testing::Message()
                     << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups << ", "
                     << kSplitFormNames[form] << ", misalign " << misalign);
        check_forward(PathRun{k, misalign});
        check_backward(PathRun{k, misalign});
      }
    }
  }
}

// Rows above a block in parts (split_row_shapes' first forward shape: instance norm rows not
// whole packs, group norm channels not whole packs; their backwards split too): every activation
// and residual, the forward and the backward from its outputs, as clusters where the device has
// them and in two launches, aligned and misaligned (the reduced set: the clusters aligned, the two
// launches misaligned).
TEST_P(GpuChannelFusionResident, SplitRowsMatchCpu) {
  const Config c = GetParam();
  if (c.layout != NK_NCHW || c.family == Family::kBatch) {
    GTEST_SKIP() << "rows in parts: instance and group norm in NCHW";
  }
  const ChannelCase k = split_row_shapes(c.family, c.dtype).forward[0];
  ASSERT_GT(resident_plan(k, c.dtype).parts, 1);
  ASSERT_GT(resident_plan(k, c.dtype, 2).parts, 1);
  NKT_REQUIRE_DEVICE();
  for (int form = 0; form < 2; ++form) {
    const ScopedSplitForm knobs(form);
    for (int64_t misalign : {0, 1}) {
      if (reduced_gpu_tests() && misalign != form) continue;
      SCOPED_TRACE(testing::Message()
                   << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups << ", "
                   << kSplitFormNames[form] << ", misalign " << misalign);
      check_forward(PathRun{k, misalign});
      check_backward(PathRun{k, misalign});
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Resident, GpuChannelFusionResident,
                         testing::ValuesIn(fusion_configs([](const Config& c) {
                           return c.phase == NK_TRAINING;
                         })),
                         fusion_config_name);

// The in-place pairs (y == x, y == z; dx == dy, dz == dy) give the bytes of the calls without
// aliasing, every activation and residual in training, on each one-read path a shape of whose
// blocks border on others' data: batch norm's NCHW tiles, where a pack at a run's end holds
// elements of the run and of the neighbouring channel, whose block writes them (batch_tile_shapes:
// runs not whole packs, and runs of 3, shorter than a pack; and a channel in parts,
// batch_split_shapes' first, in clusters and in two launches, whose second launch reads x again);
// instance and group norm's NCHW rows that are not whole packs (resident_row_shapes' third: rows
// starting at every offset of a pack); the NHWC tiles of a pack of channels (instance norm, and
// batch norm as one sample: instance_tile_shapes' second) and of groups (group_tile_shapes'
// second). The backward takes the forward's outputs (its saved statistics and mask).
class GpuChannelFusionInPlace : public GpuChannelFusion {
 protected:
  GpuChannelFusionInPlace() { paths_before_device_ = true; }
  void check_in_place(const ChannelCase& k);
};

void GpuChannelFusionInPlace::check_in_place(const ChannelCase& k) {
  const Config c = GetParam();
  const FusionInputs in = fusion_inputs(rng_, c, k);
  const int64_t count = numel(k);
  // The forward with y in its own buffer (onto 0), in x's (1) or in z's (2): y, the saved and
  // running statistics, the counter and the mask.
  auto forward = [&](int onto) {
    const ForwardDevice d(c, k, in);
    const DeviceBuffer& out = onto == 1 ? d.x : onto == 2 ? d.z : d.y;
    EXPECT_EQ(fused_forward(gpu_, c, k, d.pointers(out)), NK_SUCCESS) << nk_last_error();
    std::vector<Buffer> r;
    for (const DeviceBuffer* b : {&out, &d.mean, &d.invstd, &d.rm, &d.rv, &d.tracked, &d.mask}) {
      r.push_back(b->download());
    }
    return r;
  };
  // call(0), then call(onto) for each in-place pair (the second with a residual only): every
  // output (named in `names`) the bytes of call(0)'s, whose first is written (finite) everywhere.
  // Returns call(0)'s outputs.
  auto same_bytes = [&](auto call, const std::vector<const char*>& names, const char* first_pair,
                        const char* second_pair) {
    const std::vector<Buffer> ref = call(0);
    int64_t unwritten = 0;
    for (double v : ref[0].values()) unwritten += std::isfinite(v) ? 0 : 1;
    EXPECT_EQ(unwritten, 0) << names[0] << ": elements not written";
    for (int onto = 1; onto <= (c.residual ? 2 : 1); ++onto) {
      SCOPED_TRACE(onto == 1 ? first_pair : second_pair);
      const std::vector<Buffer> got = call(onto);
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].bytes(), ref[i].bytes()) << names[i] << " differs";
      }
    }
    return ref;
  };
  const std::vector<Buffer> ref = same_bytes(
      forward, {"y", "save_mean", "save_invstd", "running_mean", "running_var", "counter", "mask"},
      "y == x", "y == z");

  // The backward from that forward's y, statistics and mask, with dx and dz in their own buffers
  // (onto 0), dx in dy's (1) or dz in dy's (2): dx, dz, dweight and dbias.
  auto backward = [&](int onto) {
    ForwardDevice f(c, k, in);
    f.y.upload(ref[0]);
    f.mean.upload(ref[1]);
    f.invstd.upload(ref[2]);
    f.mask.upload(ref[6]);
    const DeviceBuffer dy(in.dy), dx(c.dtype, count), dz(c.dtype, count), dw(NK_F32, k.c),
        db(NK_F32, k.c);
    const DeviceBuffer& dx_out = onto == 1 ? dy : dx;
    const DeviceBuffer& dz_out = onto == 2 ? dy : dz;
    EXPECT_EQ(fused_backward(gpu_, c, k, f.backward_pointers(dy, dx_out, dz_out, dw, db),
                             ReluFrom::kMask),
              NK_SUCCESS)
        << nk_last_error();
    std::vector<Buffer> r;
    for (const DeviceBuffer* d : {&dx_out, &dz_out, &dw, &db}) r.push_back(d->download());
    return r;
  };
  same_bytes(backward, {"dx", "dz", "dweight", "dbias"}, "dx == dy", "dz == dy");
}

TEST_P(GpuChannelFusionInPlace, SameBytesAsOutOfPlace) {
  const Config c = GetParam();
  if (c.family == Family::kBatch && c.layout == NK_NCHW) {
    const ChannelCase split = batch_split_shapes(c.dtype)[0];
    ASSERT_NO_FATAL_FAILURE(assert_batch_tile_paths(c.dtype));
    NKT_REQUIRE_DEVICE();
    for (const ChannelCase& k : batch_tile_shapes()) {
      SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
      check_in_place(k);
    }
    for (int form = 0; form < 2; ++form) {
      const ScopedSplitForm knobs(form);
      SCOPED_TRACE(testing::Message() << "parts, " << kSplitFormNames[form]);
      check_in_place(split);
    }
    return;
  }
  ChannelCase k{};
  if (c.layout == NK_NCHW) {
    k = resident_row_shapes(c.family, c.dtype)[2];
    ASSERT_TRUE(takes_resident_rows(k, c.dtype));
    ASSERT_TRUE(takes_resident_rows(k, c.dtype, 2));
  } else if (c.family == Family::kGroup) {
    k = group_tile_shapes(c.dtype)[1];
    ASSERT_TRUE(takes_group_tiles(k, c.dtype));
    ASSERT_TRUE(takes_group_tiles(k, c.dtype, 2));
  } else {
    k = instance_tile_shapes(c.family, c.dtype)[1];
    ASSERT_TRUE(takes_instance_tiles(k, c.dtype));
    ASSERT_TRUE(takes_instance_tiles(k, c.dtype, 2));
  }
  NKT_REQUIRE_DEVICE();
  SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s
                                  << " g=" << k.groups);
  check_in_place(k);
}

INSTANTIATE_TEST_SUITE_P(Training, GpuChannelFusionInPlace,
                         testing::ValuesIn(fusion_configs([](const Config& c) {
                           return c.phase == NK_TRAINING;
                         })),
                         fusion_config_name);

// The reduction tree depends on the shape only: the same bytes of every output (y, the saved and
// running statistics, the counter, the mask, dx, dz, dweight, dbias) on grids sized for 1 and 3
// SMs, where the persistent loops take several turns. The shape splits each statistic into
// several chunks (batch norm in NCHW through the walk, ScopedBatchWalk, not its tiles of a
// channel). bf16 in training: ReLU with a residual (the mask) and SiLU (recomputation).
class GpuChannelFusionGrid : public GpuChannelFusion {};

TEST_P(GpuChannelFusionGrid, SameBitsOnAnyGrid) {
  const Config c = GetParam();
  const ScopedBatchWalk walk;
  const ChannelCase k{c.family, 2, 4, 4500, c.layout, c.family == Family::kGroup ? 2 : 1};
  const int64_t count = numel(k);
  const FusionInputs in = fusion_inputs(rng_, c, k);
  std::vector<std::vector<Buffer>> results;
  for (int sms : {1, 3}) {
    SCOPED_TRACE(testing::Message() << "SM limit " << sms);
    nk_context ctx = context_with_sm_limit(sms);
    ASSERT_NE(ctx, nullptr);
    const ForwardDevice f(c, k, in);
    const DeviceBuffer dy(in.dy), dx(c.dtype, count), dz(c.dtype, count), dw(NK_F32, k.c),
        db(NK_F32, k.c);
    EXPECT_EQ(fused_forward(ctx, c, k, f.pointers(f.y)), NK_SUCCESS) << nk_last_error();
    EXPECT_EQ(fused_backward(ctx, c, k, f.backward_pointers(dy, dx, dz, dw, db), ReluFrom::kMask),
              NK_SUCCESS)
        << nk_last_error();
    std::vector<Buffer> out;
    for (const DeviceBuffer* d :
         {&f.y, &f.mean, &f.invstd, &f.rm, &f.rv, &f.tracked, &f.mask, &dx, &dz, &dw, &db})
      out.push_back(d->download());
    results.push_back(std::move(out));
    nk_context_destroy(ctx);
  }
  const char* names[] = {"y",           "save_mean", "save_invstd", "running_mean",
                         "running_var", "counter",   "mask",        "dx",
                         "dz",          "dweight",   "dbias"};
  const bool written[] = {true, true,       true, true, true, true, c.act == NK_ACTIVATION_RELU,
                          true, c.residual, true, true};
  for (size_t i = 0; i < results[0].size(); ++i) {
    EXPECT_EQ(results[1][i].bytes(), results[0][i].bytes()) << names[i] << " differs";
    if (!written[i] || i == 5 || i == 6) continue;  // the counter and mask are not floats
    int64_t bad = 0;
    for (double v : results[0][i].values()) bad += std::isfinite(v) ? 0 : 1;
    EXPECT_EQ(bad, 0) << names[i] << ": elements not written";
  }
  int64_t advanced = 0;
  std::memcpy(&advanced, results[0][5].data(), 8);
  EXPECT_EQ(advanced, has_running(c) ? in.tracked + 1 : in.tracked);
}

INSTANTIATE_TEST_SUITE_P(Grid, GpuChannelFusionGrid,
                         testing::ValuesIn(fusion_configs([](const Config& c) {
                           return c.dtype == NK_BF16 && c.phase == NK_TRAINING &&
                                  ((c.act == NK_ACTIVATION_RELU && c.residual) ||
                                   (c.act == NK_ACTIVATION_SILU && !c.residual));
                         })),
                         fusion_config_name);

// A failing call writes nothing: a forward given z without NK_RESIDUAL_ADD and a backward given dz
// without it leave every output and running statistic as they were.
class GpuChannelFusionErrors : public GpuTest {};

TEST_F(GpuChannelFusionErrors, FailingCallsWriteNothing) {
  const Config c{Family::kBatch, NK_TRAINING, NK_ACTIVATION_RELU, false, NK_NCHW, NK_F16};
  const ChannelCase k{c.family, 2, 4, 33, c.layout, 1};
  const FusionInputs in = fusion_inputs(rng_, c, k);
  const int64_t count = numel(k), stats = num_stats(k);
  DeviceBuffer x(in.x), stray(in.x), dy(in.dy), y(c.dtype, count), dx(c.dtype, count),
      dz(c.dtype, count);
  DeviceBuffer w = upload(in.w), b = upload(in.b), rm = upload(in.rm), rv = upload(in.rv);
  DeviceBuffer tracked = counter(in.tracked), mean(NK_F32, stats), invstd(NK_F32, stats);
  DeviceBuffer mask(NK_F32, mask_words(k)), dw(NK_F32, k.c), db(NK_F32, k.c);
  const std::vector<const DeviceBuffer*> outputs = {&y,    &rm, &rv, &tracked, &mean, &invstd,
                                                    &mask, &dx, &dz, &dw,      &db};
  std::vector<Buffer> before;
  for (const DeviceBuffer* d : outputs) before.push_back(d->download());

  const nk_act_desc d = desc_of(k, c.dtype);
  const nk_channel_fusion f = fusion_of(c, k);
  const nk_norm_params p = fusion_params(c);
  nk_channel_fused_forward_buffers fb{};
  fb.x = x.data();
  fb.z = stray.data();  // not read without NK_RESIDUAL_ADD: an error
  fb.weight = w.f32();
  fb.bias = b.f32();
  fb.running_mean = rm.f32();
  fb.running_var = rv.f32();
  fb.num_batches_tracked = static_cast<int64_t*>(tracked.data());
  fb.y = y.data();
  fb.save_mean = mean.f32();
  fb.save_invstd = invstd.f32();
  fb.relu_mask = mask.data();
  EXPECT_EQ(nk_channel_norm_fused_forward(gpu_, &d, &f, &p, &fb), NK_ERROR_INVALID_VALUE);

  nk_channel_fused_backward_buffers bb{};
  bb.x = x.data();
  bb.dy = dy.data();
  bb.relu_mask = mask.data();
  bb.weight = w.f32();
  bb.save_mean = mean.f32();
  bb.save_invstd = invstd.f32();
  bb.dx = dx.data();
  bb.dz = dz.data();  // no residual: an error
  bb.dweight = dw.f32();
  bb.dbias = db.f32();
  EXPECT_EQ(nk_channel_norm_fused_backward(gpu_, &d, &f, &p, &bb), NK_ERROR_INVALID_VALUE);
  synchronize();
  for (size_t i = 0; i < outputs.size(); ++i) {
    EXPECT_EQ(outputs[i]->download().bytes(), before[i].bytes()) << "output " << i << " written";
  }
}

}  // namespace
}  // namespace nkt
