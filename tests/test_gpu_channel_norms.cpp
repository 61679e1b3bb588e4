// Batch, instance and group norm on the CUDA backend, checked against the CPU backend on fresh
// random data: every family x dtype x layout x affine option, both phases, running statistics
// over several steps (momentum, cumulative average, Keras convention) with num_batches_tracked,
// the device's rule for a counter that cannot advance (negative or INT64_MAX), shapes that reach
// every reduction path (a warp per row, rows split into chunks, channels split into chunks, S == 1,
// C == 1, N == 1, odd sizes, ResNet- and diffusion-like), large-offset data, misaligned pointers,
// bitwise determinism, a training step captured in a CUDA graph, and more than 2^31 elements.
// Device outputs are poisoned before every call and every element is compared. Skipped, with the
// reason, without a CUDA device.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#if NORMKIT_TEST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "channel_ops.hpp"
#include "gpu_support.hpp"
#include "resident_rows_cases.hpp"
#include "row_groups_cases.hpp"
#include "short_rows_cases.hpp"
#include "test_support.hpp"

namespace nkt {
namespace {

struct Case {
  Family family;
  nk_dtype dtype;
  nk_layout layout;
  bool affine;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(name(c.family)) + "_" + name(c.dtype) +
         (c.layout == NK_NCHW ? "_nchw" : "_nhwc") + (c.affine ? "_affine" : "_plain");
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (Family f : {Family::kBatch, Family::kInstance, Family::kGroup})
    for (nk_dtype t : {NK_F32, NK_F16, NK_BF16})
      for (nk_layout l : {NK_NCHW, NK_NHWC})
        for (bool affine : {false, true}) out.push_back({f, t, l, affine});
  return out;
}

// (n, c, s, groups): degenerate dims, odd sizes, and what each reduction path needs.
std::vector<ChannelCase> shapes(const Case& k) {
  struct S {
    int64_t n, c, s, g;
  };
  const std::vector<S> list =
      reduced_gpu_tests()
          // Reduced: odd sizes, warps per chunk, rows and channels split into several chunks
          // (S > 4096 with few rows), S == 1, C == 1; batch norm's block chunks crossing rows of
          // 196 (16-bit types: 8-byte loads in the statistics pass), rows of 98 (fp32: 8-byte
          // loads), C = 2048 with S == 1, long odd rows (S = 1031: 16-byte loads between each
          // row's ends, batch norm's chunks starting inside rows), NHWC channels that are not
          // whole packs read as periods of packs (C = 6: 3 packs a period in both widths; C = 255:
          // a period of 255 packs, one block wide; C = 514: 257 packs, split into tiles); rows
          // of half a pack in 16-bit types (S = 4); elementwise packs crossing rows with a tail
          // of single elements (N C S not whole packs: S = 98, 77 in 16 bits, S = 5, 77 in fp32);
          // batch norm's NHWC 2 x 3 x 5 ends in a partial period (10 positions, 8 or 4 a period);
          // rows shorter than a pack, several in one (S = 3; S = 2 in 16 bits), with tails;
          // no period walk, per-sample elementwise passes in packs of the flat tensor (NHWC
          // 2 x 3 x 5: 15 elements a sample; group norm with C = 257 and S = 1: a period of 257
          // packs over 3 positions, not whole); batch norm's rows shorter than a pack reduced as
          // the C * S columns of each sample (S = 3: 48 columns in whole packs over 40 samples;
          // 3 x 5: 15 columns in periods of 8 or 4 samples, twice or four times, and 2 or 3
          // samples in a partial period alone; 37 x 7 in 16 bits: a period of 259 packs split
          // into tiles); instance and group norm rows shorter than a pack held in registers
          // (9 x 6 x 2: rows of 2 and, group norm, of three channels of 2; 70 x 40 x 3: several
          // blocks, group norm rows of two channels of 3); NHWC channel packs shared evenly over
          // the walk's tiles (C = 320: 40 packs in two tiles of 20 lanes in 16 bits, 80 in three
          // of 27 in fp32, the last with a lane idle; 4 channels a group, so that group norm
          // takes the walk, not the group tiles).
          // The tests that take one shape take the last, so the last stays small (the simulated
          // lane runs them over many steps).
          ? std::vector<S>{{2, 3, 5, 1},    {4, 16, 49, 4},    {4, 16, 32, 4},  {2, 4, 8200, 2},
                           {3, 40, 1, 8},   {8, 3, 196, 1},    {2, 3, 98, 1},   {2, 2048, 1, 32},
                           {8, 2, 1031, 2}, {4, 6, 64, 3},     {2, 255, 16, 5}, {2, 514, 16, 2},
                           {2, 3, 4, 1},    {3, 5, 3, 5},      {5, 3, 2, 3},    {3, 257, 1, 1},
                           {40, 16, 3, 4},  {16, 3, 5, 1},     {8, 37, 7, 1},   {9, 6, 2, 2},
                           {70, 40, 3, 20}, {2, 320, 100, 80}, {3, 1, 77, 1}}
          // 8, 32, 256: a warp per row with 16-byte packs; C = 8 NHWC: few lanes, more rows;
          // C = 1 with S > 1: the rows layout in NHWC too.
          : std::vector<S>{
                {2, 3, 5, 1},      {1, 1, 2, 1},         {5, 1, 1, 1},          {3, 7, 1, 7},
                {1, 6, 13, 3},     {4, 16, 49, 4},       {4, 16, 8, 4},         {3, 8, 32, 2},
                {2, 8, 256, 4},    {2, 8, 5000, 4},      {3, 1, 77, 1},         {2, 3, 100003, 1},
                {1, 64, 70000, 8}, {32, 64, 56 * 56, 8}, {2, 320, 64 * 64, 32}, {3, 40, 1, 8},
                {8, 3, 196, 1},    {2, 3, 98, 1},        {2, 2048, 1, 32},      {2, 24, 333, 6},
                {4, 6, 64, 3},     {2, 255, 16, 5},      {2, 514, 16, 2},       {3, 5, 3, 5},
                {3, 257, 1, 1},    {40, 16, 3, 4},       {16, 3, 5, 1},         {8, 37, 7, 1},
                {9, 6, 2, 2},      {70, 40, 3, 20}};
  std::vector<ChannelCase> out;
  for (const S& s : list) {
    // Training needs more than one value per statistic: skip the shapes a family rejects.
    const int64_t count = k.family == Family::kBatch      ? s.n * s.s
                          : k.family == Family::kInstance ? s.s
                                                          : (s.c / s.g) * s.s;
    if (count < 2) continue;
    out.push_back({k.family, s.n, s.c, s.s, k.layout, k.family == Family::kGroup ? s.g : 1});
  }
  return out;
}

// The reduced set runs the structural checks (misaligned pointers, in place, optional outputs,
// repeated calls) only with weight and bias: they reach every pointer and path then, and the
// *MatchesCpu tests cover both affine options on every path.
bool skip_in_reduced_set(const Case& c) { return reduced_gpu_tests() && !c.affine; }
constexpr const char* kStructuralSkip =
    "reduced set: structural checks run with weight and bias present";

Tolerance gpu_tolerance(nk_dtype dtype) {
  const Tolerance t = output_tolerance(dtype);
  return dtype == NK_F32 ? Tolerance{2e-5, 2e-5} : Tolerance{2 * t.atol, 2 * t.rtol};
}

std::vector<double> f64(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Its tests assert the paths of their shapes before they use the device (GpuTest), so the asserts
// run without a GPU too.
class GpuChannelNorm : public GpuTest, public testing::WithParamInterface<Case> {
 protected:
  GpuChannelNorm() { paths_before_device_ = true; }

  // The body of EachGradientOutputIsOptional for shape k.
  void each_gradient_output_alone(const Case& c, const ChannelCase& k) {
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    DeviceBuffer x(Buffer(c.dtype, rng_.normal(numel))), dy(Buffer(c.dtype, rng_.normal(numel)));
    DeviceBuffer w(Buffer(NK_F32, rng_.normal(k.c))), m(NK_F32, stats), s(NK_F32, stats),
        y(c.dtype, numel);
    DeviceBuffer rm(Buffer(NK_F32, rng_.normal(k.c)));
    DeviceBuffer rv(Buffer(NK_F32, rng_.uniform(k.c, 0.5, 2)));
    nk_norm_params p = nk_norm_params_default();
    ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, x.data(), nullptr, nullptr, nullptr, nullptr,
                              nullptr, y.data(), m.f32(), s.f32()),
              NK_SUCCESS);
    for (nk_phase phase : {NK_TRAINING, NK_INFERENCE}) {
      if (phase == NK_INFERENCE && c.family == Family::kGroup) continue;
      p.phase = phase;
      const float* wp = c.affine ? w.f32() : nullptr;
      DeviceBuffer dx_all(c.dtype, numel), dw_all(NK_F32, k.c), db_all(NK_F32, k.c);
      ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, x.data(), dy.data(), wp, rm.f32(), rv.f32(),
                                 m.f32(), s.f32(), dx_all.data(), dw_all.f32(), db_all.f32()),
                NK_SUCCESS);
      const Buffer dx_ref = dx_all.download(), dw_ref = dw_all.download();
      const Buffer db_ref = db_all.download();
      for (int mask = 0; mask < 8; ++mask) {
        SCOPED_TRACE(testing::Message() << (phase == NK_TRAINING ? "training" : "inference")
                                        << " outputs mask " << mask);
        DeviceBuffer dx(c.dtype, numel), dw(NK_F32, k.c), db(NK_F32, k.c);
        const Buffer poisoned_dx = dx.download(), poisoned_dw = dw.download();
        ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, x.data(), dy.data(), wp, rm.f32(), rv.f32(),
                                   m.f32(), s.f32(), mask & 1 ? dx.data() : nullptr,
                                   mask & 2 ? dw.f32() : nullptr, mask & 4 ? db.f32() : nullptr),
                  NK_SUCCESS)
            << nk_last_error();
        EXPECT_EQ(dx.download().bytes(), (mask & 1 ? dx_ref : poisoned_dx).bytes());
        EXPECT_EQ(dw.download().bytes(), (mask & 2 ? dw_ref : poisoned_dw).bytes());
        EXPECT_EQ(db.download().bytes(), (mask & 4 ? db_ref : poisoned_dw).bytes());
      }
    }
  }

  // SameBitsOnAnyGrid for one shape.
  void same_bits_on_any_grid(const ChannelCase& k) {
    const Case c = GetParam();
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    const bool running = c.family != Family::kGroup;
    const Buffer x(c.dtype, rng_.normal(numel, 3.0, 2.0)), dy(c.dtype, rng_.normal(numel));
    const Buffer w(NK_F32, rng_.normal(k.c, 1.0, 0.5)), b(NK_F32, rng_.normal(k.c));
    const Buffer rm0(NK_F32, rng_.normal(k.c)), rv0(NK_F32, rng_.uniform(k.c, 0.5, 1.5));
    nk_norm_params p = nk_norm_params_default();
    std::vector<std::vector<Buffer>> runs;  // per context: each output
    for (int sms : {0, 1, 3}) {
      SCOPED_TRACE(testing::Message() << "SM limit " << sms);
      nk_context ctx = sms == 0 ? gpu_ : context_with_sm_limit(sms);
      ASSERT_NE(ctx, nullptr);
      DeviceBuffer xd(x), dyd(dy), wd(w), bd(b), rm(rm0), rv(rv0), tracked(NK_F32, 2);
      Buffer tracked_host(NK_F32, 2);
      const int64_t three = 3;
      std::memcpy(tracked_host.data(), &three, 8);
      tracked.upload(tracked_host);
      DeviceBuffer y(c.dtype, numel), sm(NK_F32, stats), si(NK_F32, stats);
      DeviceBuffer dx(c.dtype, numel), dw(NK_F32, k.c), db(NK_F32, k.c);
      const float* wp = c.affine ? wd.f32() : nullptr;
      p.phase = NK_TRAINING;
      EXPECT_EQ(channel_forward(ctx, k, c.dtype, p, xd.data(), wp, c.affine ? bd.f32() : nullptr,
                                running ? rm.f32() : nullptr, running ? rv.f32() : nullptr,
                                running ? reinterpret_cast<int64_t*>(tracked.data()) : nullptr,
                                y.data(), sm.f32(), si.f32()),
                NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(channel_backward(ctx, k, c.dtype, p, xd.data(), dyd.data(), wp, nullptr, nullptr,
                                 sm.f32(), si.f32(), dx.data(), dw.f32(), db.f32()),
                NK_SUCCESS)
          << nk_last_error();
      std::vector<Buffer> out;
      for (const DeviceBuffer* d : {&y, &sm, &si, &rm, &rv, &dx, &dw, &db})
        out.push_back(d->download());
      runs.push_back(std::move(out));
      if (ctx != gpu_) nk_context_destroy(ctx);
    }
    const char* names[] = {"y",           "save_mean", "save_invstd", "running_mean",
                           "running_var", "dx",        "dweight",     "dbias"};
    for (size_t r = 1; r < runs.size(); ++r) {
      for (size_t i = 0; i < runs[0].size(); ++i) {
        EXPECT_EQ(runs[r][i].bytes(), runs[0][i].bytes()) << names[i] << " differs on grid " << r;
      }
    }
    // Every element was written: no poison (all bytes 0xFF: NaN) survives anywhere.
    for (size_t i = 0; i < runs[0].size(); ++i) {
      int64_t bad = 0;
      for (double v : runs[0][i].values()) bad += std::isfinite(v) ? 0 : 1;
      EXPECT_EQ(bad, 0) << names[i] << ": elements not finite";
    }
  }

  // The forward of a path that stages x (one read) in blocks of `block_bytes` (a row or a tile):
  // misaligned pointers (single-element loads into the same staged packs) give the bytes of y and
  // the saved statistics of the aligned call; so do heads of none, a third of the block's bytes
  // (not whole turns of the block) and all but one pack (NORMKIT_TEST_RESIDENT_HEAD: the rest read
  // from memory in each pass), and the heads of a device with an H100's opt-in shared memory
  // (split parts stage up to all of a part there), aligned, misaligned and in place (y == x).
  // block_bytes 0: a path that stages nothing (rows in registers), run once without the knobs.
  void forward_bytes_across_heads(const ChannelCase& k, const nk_norm_params& p, const Buffer& x,
                                  const DeviceBuffer& wd, const DeviceBuffer& bd,
                                  int64_t block_bytes) {
    const Case c = GetParam();
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    std::vector<Buffer> outs[2];
    for (int64_t misalign : {0, 1}) {
      DeviceBuffer xd(x, misalign), y(c.dtype, numel, misalign), sm(NK_F32, stats),
          si(NK_F32, stats);
      ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, xd.data(), c.affine ? wd.f32() : nullptr,
                                c.affine ? bd.f32() : nullptr, nullptr, nullptr, nullptr, y.data(),
                                sm.f32(), si.f32()),
                NK_SUCCESS)
          << nk_last_error();
      outs[misalign] = {y.download(), sm.download(), si.download()};
    }
    const char* names[] = {"y", "save_mean", "save_invstd"};
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(outs[1][i].bytes(), outs[0][i].bytes()) << names[i] << ": misaligned differs";
    }
    // Heads through NORMKIT_TEST_RESIDENT_HEAD; -2: none, but an H100's opt-in shared memory.
    const std::vector<int64_t> heads =
        block_bytes == 0 ? std::vector<int64_t>{-1}  // a knob value that no path reads
                         : std::vector<int64_t>{0, block_bytes / 3 / 16 * 16, block_bytes - 16, -2};
    for (int64_t head : heads) {
      SCOPED_TRACE(testing::Message() << "head " << head << " of " << block_bytes << " bytes");
      const ScopedResidentHead knob(head);
      const ScopedSharedLimit optin(head == -2 ? kHopperSharedOptin : 0);
      for (int run = 0; run < 3; ++run) {  // aligned, misaligned, in place
        const int64_t misalign = run == 1 ? 1 : 0;
        DeviceBuffer xd(x, misalign), y(c.dtype, numel, misalign), sm(NK_F32, stats),
            si(NK_F32, stats);
        void* y_ptr = run == 2 ? xd.data() : y.data();
        ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, xd.data(), c.affine ? wd.f32() : nullptr,
                                  c.affine ? bd.f32() : nullptr, nullptr, nullptr, nullptr, y_ptr,
                                  sm.f32(), si.f32()),
                  NK_SUCCESS)
            << nk_last_error();
        const Buffer got[] = {run == 2 ? xd.download() : y.download(), sm.download(),
                              si.download()};
        for (size_t i = 0; i < 3; ++i) {
          EXPECT_EQ(got[i].bytes(), outs[0][i].bytes()) << names[i] << " differs, run " << run;
        }
      }
    }
  }

  // The forward of a path that reads x once against the CPU: with running buffers and without
  // (instance and batch norm), three steps of the cumulative average, fp32 data at
  // |mean| / std = 1e4 (16-bit types cannot hold such data), and misaligned pointers
  // (single-element loads).
  void check_one_read_forward(const ChannelCase& k) {
    const Case c = GetParam();
    nk_norm_params p = nk_norm_params_default();
    check_forward(k, p, 1);
    if (c.family != Family::kGroup) {
      check_forward(k, p, 1, false);
      p.momentum_mode = NK_MOMENTUM_CUMULATIVE;
      check_forward(k, p, 3);
      p = nk_norm_params_default();
    }
    if (c.dtype == NK_F32) check_forward(k, p, 1, true, 1e4, 1.0);
    check_forward(k, p, 1, true, 0.5, 2.0, 1);
  }

  // The checks of a one-read path that stages no head (rows in registers, row groups) at shape k:
  // the forward against the CPU (check_one_read_forward), the bytes of y and the saved statistics
  // of misaligned and in-place calls against the aligned one, the training backward against the
  // CPU aligned and misaligned, and the bytes of dx, dweight and dbias of misaligned and dx == dy
  // calls against the aligned one.
  void check_unstaged_rows(const ChannelCase& k) {
    const Case c = GetParam();
    check_one_read_forward(k);
    const int64_t numel = k.n * k.c * k.s;
    const Buffer x(c.dtype, rng_.normal(numel, 1.0, 3.0));
    const Buffer w(NK_F32, rng_.normal(k.c, 1.0, 0.5)), b(NK_F32, rng_.normal(k.c));
    DeviceBuffer wd(w), bd(b);
    forward_bytes_across_heads(k, nk_norm_params_default(), x, wd, bd, 0);
    check_backward(k, NK_TRAINING);
    check_backward(k, NK_TRAINING, 1);
    backward_bytes_across_heads(k, x, wd, 0);
  }

  // The training backward of a path that stages x and dy (one read of each) in blocks of
  // `block_bytes` a tensor: misaligned pointers and dx == dy give the bytes of dx, dweight and
  // dbias of the aligned call; so do heads of none, a third of the block and all but one pack, and
  // those of an H100's opt-in shared memory, each aligned, misaligned and in place (block_bytes 0:
  // a path that stages nothing, no heads).
  void backward_bytes_across_heads(const ChannelCase& k, const Buffer& x, const DeviceBuffer& wd,
                                   int64_t block_bytes) {
    const Case c = GetParam();
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    nk_norm_params p = nk_norm_params_default();
    p.phase = NK_TRAINING;
    const Buffer dyh(c.dtype, rng_.normal(numel));
    DeviceBuffer md(Buffer(NK_F32, rng_.normal(stats, 0.5, 1.0)));
    DeviceBuffer sd(Buffer(NK_F32, rng_.uniform(stats, 0.2, 0.8)));
    // Runs 0, 1 and 2 (aligned, misaligned, in place) under the current head.
    auto run_all = [&](std::vector<Buffer>(&grads)[3]) {
      for (int run = 0; run < 3; ++run) {
        const int64_t misalign = run == 1 ? 1 : 0;
        DeviceBuffer xd(x, misalign), dyd(dyh, misalign), dx(c.dtype, numel, misalign),
            dw(NK_F32, k.c), db(NK_F32, k.c);
        void* dx_ptr = run == 2 ? dyd.data() : dx.data();
        ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, xd.data(), dyd.data(),
                                   c.affine ? wd.f32() : nullptr, nullptr, nullptr, md.f32(),
                                   sd.f32(), dx_ptr, dw.f32(), db.f32()),
                  NK_SUCCESS)
            << nk_last_error();
        grads[run] = {run == 2 ? dyd.download() : dx.download(), dw.download(), db.download()};
      }
    };
    const char* names[] = {"dx", "dweight", "dbias"};
    std::vector<Buffer> whole[3];
    run_all(whole);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(whole[1][i].bytes(), whole[0][i].bytes()) << names[i] << ": misaligned differs";
      EXPECT_EQ(whole[2][i].bytes(), whole[0][i].bytes()) << names[i] << ": dx == dy differs";
    }
    if (block_bytes == 0) return;  // a path that stages nothing (rows in registers)
    // Heads through NORMKIT_TEST_RESIDENT_HEAD; -2: none, but an H100's opt-in shared memory.
    for (int64_t head : {int64_t{0}, block_bytes / 3 / 16 * 16, block_bytes - 16, int64_t{-2}}) {
      SCOPED_TRACE(testing::Message() << "head " << head << " of " << block_bytes << " bytes");
      const ScopedResidentHead knob(head);
      const ScopedSharedLimit optin(head == -2 ? kHopperSharedOptin : 0);
      std::vector<Buffer> got[3];
      run_all(got);
      for (int run = 0; run < 3; ++run) {
        for (size_t i = 0; i < 3; ++i) {
          EXPECT_EQ(got[run][i].bytes(), whole[0][i].bytes())
              << names[i] << " differs, run " << run;
        }
      }
    }
  }

  // One forward on both backends with the same inputs and initial running buffers; compares y,
  // the saved statistics, the running buffers and num_batches_tracked (batch and instance norm;
  // `with_running` false passes no running buffers, which only training allows). `steps` repeats
  // it with fresh x.
  void check_forward(const ChannelCase& k, nk_norm_params p, int steps, bool with_running = true,
                     double mean = 0.5, double stddev = 2.0, int64_t misalign = 0) {
    const Case c = GetParam();
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    const bool running = c.family != Family::kGroup;
    const bool use_running = running && with_running;
    const std::vector<float> w = to_f32(rng_.normal(k.c, 1.0, 0.5)), b = to_f32(rng_.normal(k.c));
    std::vector<float> rm_cpu = to_f32(rng_.normal(k.c, 0.0, 0.1)),
                       rv_cpu = to_f32(rng_.uniform(k.c, 0.5, 1.5));
    int64_t tracked_cpu = 3;
    DeviceBuffer rm(Buffer(NK_F32, f64(rm_cpu))), rv(Buffer(NK_F32, f64(rv_cpu)));
    DeviceBuffer tracked(NK_F32, 2), wd(Buffer(NK_F32, f64(w))), bd(Buffer(NK_F32, f64(b)));
    Buffer tracked_host(NK_F32, 2);
    std::memcpy(tracked_host.data(), &tracked_cpu, 8);
    tracked.upload(tracked_host);
    for (int step = 0; step < steps; ++step) {
      SCOPED_TRACE(testing::Message() << "step " << step);
      const Buffer x(c.dtype, rng_.normal(numel, mean + step, stddev));
      Buffer y_ref(c.dtype, numel);
      std::vector<float> mean_ref(stats), invstd_ref(stats);
      ASSERT_EQ(
          channel_forward(cpu_, k, c.dtype, p, x.data(), c.affine ? w.data() : nullptr,
                          c.affine ? b.data() : nullptr, use_running ? rm_cpu.data() : nullptr,
                          use_running ? rv_cpu.data() : nullptr, running ? &tracked_cpu : nullptr,
                          y_ref.data(), mean_ref.data(), invstd_ref.data()),
          NK_SUCCESS)
          << nk_last_error();
      DeviceBuffer xd(x, misalign), y(c.dtype, numel, misalign), sm(NK_F32, stats),
          si(NK_F32, stats);
      ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, xd.data(), c.affine ? wd.f32() : nullptr,
                                c.affine ? bd.f32() : nullptr, use_running ? rm.f32() : nullptr,
                                use_running ? rv.f32() : nullptr,
                                running ? reinterpret_cast<int64_t*>(tracked.data()) : nullptr,
                                y.data(), sm.f32(), si.f32()),
                NK_SUCCESS)
          << nk_last_error();
      expect_close(y.download().values(), y_ref.values(), gpu_tolerance(c.dtype), "y");
      if (p.phase == NK_TRAINING) {
        const double scale = std::abs(mean) + step + stddev;
        expect_close(sm.download().values(), f64(mean_ref), {2e-6 * scale, 1e-6}, "save_mean");
        expect_close(si.download().values(), f64(invstd_ref), {0, 2e-5}, "save_invstd");
      }
      if (use_running) {
        expect_close(rm.download().values(), f64(rm_cpu), {1e-5, 1e-5}, "running_mean");
        expect_close(rv.download().values(), f64(rv_cpu), {1e-5, 2e-5}, "running_var");
      }
      if (running) {
        int64_t tracked_gpu = 0;
        const Buffer t = tracked.download();
        std::memcpy(&tracked_gpu, t.data(), 8);
        EXPECT_EQ(tracked_gpu, tracked_cpu);
      }
    }
  }

  // One backward on both backends from the same statistics (the CPU forward's, or running ones).
  void check_backward(const ChannelCase& k, nk_phase phase, int64_t misalign = 0) {
    const Case c = GetParam();
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    const Buffer x(c.dtype, rng_.normal(numel, 0.5, 2.0)), dy(c.dtype, rng_.normal(numel));
    const std::vector<float> w = to_f32(rng_.normal(k.c, 1.0, 0.5));
    const std::vector<float> rm = to_f32(rng_.normal(k.c)), rv = to_f32(rng_.uniform(k.c, 0.5, 2));
    std::vector<float> mean(stats), invstd(stats);
    Buffer y(c.dtype, numel);
    nk_norm_params p = nk_norm_params_default();
    ASSERT_EQ(channel_forward(cpu_, k, c.dtype, p, x.data(), nullptr, nullptr, nullptr, nullptr,
                              nullptr, y.data(), mean.data(), invstd.data()),
              NK_SUCCESS);
    p.phase = phase;
    const float* wp = c.affine ? w.data() : nullptr;
    Buffer dx_ref(c.dtype, numel);
    std::vector<float> dw_ref(k.c), db_ref(k.c);
    ASSERT_EQ(
        channel_backward(cpu_, k, c.dtype, p, x.data(), dy.data(), wp, rm.data(), rv.data(),
                         mean.data(), invstd.data(), dx_ref.data(), dw_ref.data(), db_ref.data()),
        NK_SUCCESS)
        << nk_last_error();
    DeviceBuffer xd(x, misalign), dyd(dy, misalign), wd(Buffer(NK_F32, f64(w)));
    DeviceBuffer rmd(Buffer(NK_F32, f64(rm))), rvd(Buffer(NK_F32, f64(rv)));
    DeviceBuffer md(Buffer(NK_F32, f64(mean))), sd(Buffer(NK_F32, f64(invstd)));
    DeviceBuffer dx(c.dtype, numel, misalign), dw(NK_F32, k.c), db(NK_F32, k.c);
    ASSERT_EQ(
        channel_backward(gpu_, k, c.dtype, p, xd.data(), dyd.data(), wp ? wd.f32() : nullptr,
                         rmd.f32(), rvd.f32(), md.f32(), sd.f32(), dx.data(), dw.f32(), db.f32()),
        NK_SUCCESS)
        << nk_last_error();
    // dx is a difference of terms of size |dy * w| * invstd; column sums scale with their terms.
    double dx_scale = 0, max_invstd = 0;
    for (float v : invstd) max_invstd = std::max(max_invstd, double{v});
    for (float v : rv) max_invstd = std::max(max_invstd, 1 / std::sqrt(v + 1e-5));
    for (double v : dy.values()) dx_scale = std::max(dx_scale, std::abs(v));
    dx_scale *= max_invstd * (c.affine ? 2.5 : 1.0);
    const Tolerance t = gpu_tolerance(c.dtype);
    expect_close(dx.download().values(), dx_ref.values(), {t.atol * dx_scale, t.rtol}, "dx");
    const double per_channel = static_cast<double>(numel / k.c);
    const double sum_scale = 4 * per_channel;  // |dy| * (1 + |x-hat|) summed, roughly
    expect_close(dw.download().values(), f64(dw_ref), {1e-6 * sum_scale, 1e-5}, "dweight");
    expect_close(db.download().values(), f64(db_ref), {1e-6 * sum_scale, 1e-5}, "dbias");
  }

  static std::vector<float> to_f32(const std::vector<double>& v) {
    return std::vector<float>(v.begin(), v.end());
  }
};

TEST_P(GpuChannelNorm, TrainingForwardMatchesCpu) {
  NKT_REQUIRE_DEVICE();
  for (bool with_running : {true, false}) {
    for (const ChannelCase& k : shapes(GetParam())) {
      SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s
                                      << " g=" << k.groups << " running buffers " << with_running);
      check_forward(k, nk_norm_params_default(), 1, with_running);
    }
    if (GetParam().family == Family::kGroup) break;  // no running buffers to leave out
  }
}

TEST_P(GpuChannelNorm, InferenceForwardMatchesCpu) {
  NKT_REQUIRE_DEVICE();
  nk_norm_params p = nk_norm_params_default();
  p.phase = NK_INFERENCE;
  if (GetParam().family == Family::kGroup) p.phase = NK_TRAINING;  // group norm has no inference
  for (ChannelCase k : shapes(GetParam())) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    check_forward(k, p, 1);
  }
}

// Several steps: running statistics with momentum, the cumulative average and Keras' convention.
TEST_P(GpuChannelNorm, RunningStatisticsOverSteps) {
  NKT_REQUIRE_DEVICE();
  const ChannelCase k = shapes(GetParam()).back();
  for (int mode = 0; mode < 3; ++mode) {
    SCOPED_TRACE(testing::Message() << "mode " << mode);
    nk_norm_params p = nk_norm_params_default();
    if (mode == 1) p.momentum_mode = NK_MOMENTUM_CUMULATIVE;
    if (mode == 2) {
      p.running_var = NK_RUNNING_VAR_BIASED;
      p.momentum = 1 - 0.99;
    }
    check_forward(k, p, 4);
  }
}

TEST_P(GpuChannelNorm, BackwardMatchesCpu) {
  NKT_REQUIRE_DEVICE();
  for (nk_phase phase : {NK_TRAINING, NK_INFERENCE}) {
    if (phase == NK_INFERENCE && GetParam().family == Family::kGroup) continue;
    for (const ChannelCase& k : shapes(GetParam())) {
      SCOPED_TRACE(testing::Message() << (phase == NK_TRAINING ? "training" : "inference")
                                      << " n=" << k.n << " c=" << k.c << " s=" << k.s);
      check_backward(k, phase);
    }
  }
}

TEST_P(GpuChannelNorm, MisalignedPointersTakeTheScalarPath) {
  NKT_REQUIRE_DEVICE();
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  for (const ChannelCase& k : shapes(GetParam())) {
    if (k.n * k.c * k.s > 200000) continue;
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    check_forward(k, nk_norm_params_default(), 1, true, 0.5, 2.0, 1);
    check_backward(k, NK_TRAINING, 1);
  }
}

TEST_P(GpuChannelNorm, RepeatedCallsAreBitwiseIdentical) {
  NKT_REQUIRE_DEVICE();
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const Case c = GetParam();
  const ChannelCase k = shapes(c).back();
  const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
  const nk_norm_params p = nk_norm_params_default();
  DeviceBuffer x(Buffer(c.dtype, rng_.normal(numel))), dy(Buffer(c.dtype, rng_.normal(numel)));
  DeviceBuffer y1(c.dtype, numel), y2(c.dtype, numel), m(NK_F32, stats), s(NK_F32, stats);
  DeviceBuffer dx1(c.dtype, numel), dx2(c.dtype, numel), dw1(NK_F32, k.c), dw2(NK_F32, k.c);
  ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, x.data(), nullptr, nullptr, nullptr, nullptr,
                            nullptr, y1.data(), m.f32(), s.f32()),
            NK_SUCCESS);
  ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, x.data(), nullptr, nullptr, nullptr, nullptr,
                            nullptr, y2.data(), nullptr, nullptr),
            NK_SUCCESS);
  ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, x.data(), dy.data(), nullptr, nullptr, nullptr,
                             m.f32(), s.f32(), dx1.data(), dw1.f32(), nullptr),
            NK_SUCCESS);
  ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, x.data(), dy.data(), nullptr, nullptr, nullptr,
                             m.f32(), s.f32(), dx2.data(), dw2.f32(), nullptr),
            NK_SUCCESS);
  EXPECT_EQ(y1.download().bytes(), y2.download().bytes());
  EXPECT_EQ(dx1.download().bytes(), dx2.download().bytes());
  EXPECT_EQ(dw1.download().bytes(), dw2.download().bytes());
}

// The reduction tree depends on the shape only: the same inputs give the same bytes of every
// output (y, the saved and running statistics, dx, dweight, dbias) whatever grid the context
// sizes, here the whole device and grids sized for 1 and 3 SMs (NORMKIT_TEST_SM_LIMIT), where
// the persistent loops take several turns. The shapes are split into several chunks per
// statistic; in NCHW also rows of 3025 (partials over each row's ends and the packs between them,
// chunks starting inside rows; packs of y and dx crossing rows); in NHWC also C = 6 (periods of 3
// packs, one block wide) and C = 514 (a period of 257 packs, split into tiles), and for batch and
// instance norm a shape of the tiles of a pack of channels (instance_tile_shapes: one sample).
// Batch norm in NCHW takes those shapes through the walk (ScopedBatchWalk), then a shape of its
// tiles of a channel (batch_tile_shapes).
TEST_P(GpuChannelNorm, SameBitsOnAnyGrid) {
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const Case c = GetParam();
  const int64_t group = c.family == Family::kGroup ? 2 : 1;
  std::vector<ChannelCase> list{{c.family, 2, 4, 8200, c.layout, group}};
  if (c.layout == NK_NCHW) list.push_back({c.family, 8, 2, 3025, c.layout, group});
  if (c.layout == NK_NHWC) {  // periods of packs: one block wide, and split into tiles
    list.push_back({c.family, 8, 6, 784, c.layout, group});
    list.push_back({c.family, 4, 514, 64, c.layout, group});
    if (c.family != Family::kGroup) {
      list.push_back(instance_tile_shapes(c.family, c.dtype)[1]);
      ASSERT_TRUE(takes_instance_tiles(list.back(), c.dtype));
    }
  }
  const bool batch_nchw = c.layout == NK_NCHW && c.family == Family::kBatch;
  if (batch_nchw) {
    ASSERT_TRUE(takes_batch_tiles(batch_tile_shapes()[0], c.dtype));
  }
  NKT_REQUIRE_DEVICE();
  {
    // Batch norm in NCHW through the walk (ScopedBatchWalk), which its tiles would take.
    std::unique_ptr<ScopedBatchWalk> walk;
    if (batch_nchw) walk = std::make_unique<ScopedBatchWalk>();
    for (const ChannelCase& k : list) {
      SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
      same_bits_on_any_grid(k);
    }
  }
  if (batch_nchw) {
    const ChannelCase k = batch_tile_shapes()[0];
    SCOPED_TRACE(testing::Message() << "tiles n=" << k.n << " c=" << k.c << " s=" << k.s);
    same_bits_on_any_grid(k);
  }
}

// Few channels with many positions (channels layout, kernels/channel_norm_plan.hpp): batch norm
// with C = 4 over 270000 positions, NHWC and S = 1, splits each channel into 264 chunks (more than
// kMaxChunks: chunk_cap), and instance norm with N = 1 over 40000 positions of C = 3 (periods of
// packs) into 30, which its finalize merges across a warp. Training forward with running
// statistics and training backward against the CPU; the same bytes on grids for the whole GPU
// and for 1 and 3 SMs at the smaller shape. fp32 with weight and bias only: fp32 reaches the most
// chunks with the fewest elements (the simulated lane runs these), and the other dtypes take the
// same code with wider packs.
TEST_P(GpuChannelNorm, FewChannelsSplitIntoManyChunks) {
  NKT_REQUIRE_DEVICE();
  const Case c = GetParam();
  if (c.dtype != NK_F32 || !c.affine) GTEST_SKIP() << "checked in fp32 with weight and bias";
  const ChannelCase small{c.family, 1, 3, 40000, NK_NHWC, 1};
  std::vector<ChannelCase> list;
  if (c.family == Family::kBatch) {
    list.push_back(c.layout == NK_NHWC ? ChannelCase{c.family, 1, 4, 270000, c.layout, 1}
                                       : ChannelCase{c.family, 270000, 4, 1, c.layout, 1});
  }
  if (c.layout == NK_NHWC) list.push_back(small);
  if (list.empty()) GTEST_SKIP() << "NCHW: instance and group norm reduce rows of S";
  for (const ChannelCase& k : list) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    check_forward(k, nk_norm_params_default(), 1);
    check_backward(k, NK_TRAINING);
  }
  if (c.layout == NK_NHWC) same_bits_on_any_grid(small);
}

// Rows-layout chunks longer than kWarpChunk take a warp each where there are at least kWarpItems
// of them (kernels/channel_norm_plan.hpp): batch norm N2 C8192 S1040 (a chunk of 2080 a channel)
// and group norm N1 C8192 G64 S1040 (a chunk of 1040 a channel), both through the walk, where
// their one-read paths would take them (batch norm's tiles, ScopedBatchWalk; group norm's rows of
// 128 channels in parts, ScopedRowsWalk: the walk takes rows of over 16 parts, about 3.6 MB),
// training forward and backward against the CPU, bf16 and fp32 with weight and bias.
TEST_P(GpuChannelNorm, ManyLongChunksTakeAWarpEach) {
  const Case c = GetParam();
  if (c.family == Family::kInstance || c.layout != NK_NCHW || c.dtype == NK_F16 || !c.affine) {
    GTEST_SKIP() << "batch and group norm in NCHW, bf16 and fp32 with weight and bias";
  }
  const ChannelCase k = c.family == Family::kBatch
                            ? ChannelCase{c.family, 2, 8192, 1040, NK_NCHW, 1}
                            : ChannelCase{c.family, 1, 8192, 1040, NK_NCHW, 64};
  const nk::ChannelNorm kind =
      c.family == Family::kBatch ? nk::ChannelNorm::kBatch : nk::ChannelNorm::kGroup;
  const nk::ChannelShape shape{kind, k.n, k.c, k.s, k.layout, c.dtype, k.groups};
  const int elem = static_cast<int>(elem_size(c.dtype));
  const nk::cuda::ChannelPlan plan = nk::cuda::plan_channel_norm(shape, elem, true);
  ASSERT_TRUE(plan.warp_per_chunk);
  ASSERT_GT(plan.chunk_len, nk::cuda::kWarpChunk);
  const ScopedBatchWalk batch_walk;  // batch norm through the walk, not its tiles
  const bool group = c.family == Family::kGroup;
  // Without the knob group norm's rows are read once, in parts; with it, not at all.
  ASSERT_EQ(takes_resident_rows(k, c.dtype), group);
  ASSERT_EQ(takes_resident_rows(k, c.dtype, 2), group);
  const ScopedRowsWalk rows_walk;
  ASSERT_FALSE(takes_resident_rows(k, c.dtype));
  ASSERT_FALSE(takes_resident_rows(k, c.dtype, 2));
  NKT_REQUIRE_DEVICE();
  check_forward(k, nk_norm_params_default(), 1);
  check_backward(k, NK_TRAINING);
}

// Group norm's finalize with more than a warp a statistic (finalize_channel_lanes): N1 C64 G2 over
// 40000 NHWC positions, through the walk (in bf16 its tiles, 2.56 MB, would be read once in 16
// parts; ScopedTilesWalk), leaves each (n, g) 32 channels of 625 chunks, 256 lanes' worth, and the
// backward's finalize as many (backward_finalize_lanes); training forward and backward against
// the CPU, and the same bytes on grids for 1 and 3 SMs and the whole GPU (the finalizes' trees
// depend on the shape only).
TEST_P(GpuChannelNorm, GroupFinalizeOverManyLanes) {
  const Case c = GetParam();
  if (c.family != Family::kGroup || c.layout != NK_NHWC || c.dtype == NK_F16 || !c.affine) {
    GTEST_SKIP() << "group norm in NHWC, bf16 and fp32 with weight and bias";
  }
  const ChannelCase k{c.family, 1, 64, 40000, NK_NHWC, 2};
  const nk::ChannelShape shape{nk::ChannelNorm::kGroup, k.n, k.c, k.s, k.layout, c.dtype, k.groups};
  const nk::cuda::ChannelPlan plan =
      nk::cuda::plan_channel_norm(shape, static_cast<int>(elem_size(c.dtype)), true);
  // Without the knob the bf16 forward's tiles are read once (fp32's, 5.12 MB, walk); with it,
  // neither.
  ASSERT_EQ(takes_group_tiles(k, c.dtype), c.dtype == NK_BF16);
  ASSERT_FALSE(takes_group_tiles(k, c.dtype, 2));
  const ScopedTilesWalk tiles_walk;
  ASSERT_FALSE(takes_group_tiles(k, c.dtype));
  // 8: the partials a finalize lane loads ahead (kMergeAhead, channel_norm_forward.cu).
  ASSERT_GT(nk::cuda::finalize_channel_lanes(k.c / k.groups * plan.chunks, 8), 32);
  NKT_REQUIRE_DEVICE();
  check_forward(k, nk_norm_params_default(), 1);
  check_backward(k, NK_TRAINING);
  same_bits_on_any_grid(k);
}

// Instance norm's finalize with a channel's samples over more than a warp
// (finalize_instance_shape), in NHWC with C = 3 (no tiles: the walk): N300 S5, one chunk a sample,
// 256 threads a channel in two rounds (the second of 44 samples); N6 S100000, 37 chunks a sample
// in fp32 (8 lanes a sample, 64 threads) and 19 in bf16 (4 lanes, a warp). Training forward with
// running statistics (their average over the samples is the threads' tree; three steps at N300)
// and training backward against the CPU; the same bytes on grids for 1 and 3 SMs and the whole GPU
// at N300.
TEST_P(GpuChannelNorm, InstanceFinalizeOverManyLanes) {
  const Case c = GetParam();
  if (c.family != Family::kInstance || c.layout != NK_NHWC || c.dtype == NK_F16 || !c.affine) {
    GTEST_SKIP() << "instance norm in NHWC, bf16 and fp32 with weight and bias";
  }
  const ChannelCase rounds{c.family, 300, 3, 5, NK_NHWC, 1};
  const ChannelCase long_rows{c.family, 6, 3, 100000, NK_NHWC, 1};
  const int elem = static_cast<int>(elem_size(c.dtype));
  for (const ChannelCase& k : {rounds, long_rows}) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " s=" << k.s);
    const nk::ChannelShape shape{nk::ChannelNorm::kInstance, k.n, k.c, k.s, k.layout, c.dtype, 1};
    const nk::cuda::ChannelPlan plan = nk::cuda::plan_channel_norm(shape, elem, true);
    ASSERT_FALSE(takes_instance_tiles(k, c.dtype));
    // 8: the partials a finalize lane loads ahead (kMergeAhead, channel_norm_forward.cu).
    const nk::cuda::InstanceFinalizeShape f =
        nk::cuda::finalize_instance_shape(k.n, plan.chunks, 8);
    if (k.n == rounds.n) {
      ASSERT_EQ(f.threads, 256);
      ASSERT_EQ(f.sample_lanes, 1);
    } else {
      ASSERT_EQ(f.sample_lanes, c.dtype == NK_F32 ? 8 : 4);
      ASSERT_EQ(f.threads, c.dtype == NK_F32 ? 64 : 32);
    }
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : {rounds, long_rows}) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " s=" << k.s);
    check_forward(k, nk_norm_params_default(), k.n == rounds.n ? 3 : 1);
    check_backward(k, NK_TRAINING);
  }
  same_bits_on_any_grid(rounds);
}

// The elementwise walks of kernels/channel_norm_apply.cuh against the CPU, on a grid sized for one
// SM so that the grid-stride loops take several turns and the row and sample trackers wrap, on the
// shapes their paths need: NHWC with more channel packs than a block (C = 2056: 257 bf16 or 514
// fp32 packs, several tiles) and N = 1; C not a multiple of the pack: C = 20 in bf16 (periods of 2
// positions, the sample tracker counting periods) with NCHW packs of S = 40, C = 21 over 41
// positions, N = 40 (samples not whole periods: per-sample coefficients in packs of the flat
// tensor over several turns of the grid, per-channel ones in periods of the whole tensor), C = 255
// (a period of 255 packs, one row of threads a block), C = 514 (a period of 257 packs in tiles, 2
// periods a sample in bf16); S = 3 (NCHW rows shorter than a pack, several in each); C = 2 over
// 1000 positions per sample (few lanes, many positions per thread);
// S = 147 (NCHW packs crossing rows, the tracker stepping by elements); C = 100 over 14 positions,
// N = 64 (per-sample channels walks, a block's span of rows crossing many samples, and in bf16,
// blocks of 10 rows of 2 positions and samples of 7 rows, a new sample at every pack). Training
// and inference, forward and backward. bf16 and fp32 (8- and 4-element packs) with
// weight and bias: the walk does not depend on the dtype otherwise, and the *MatchesCpu tests cover
// the rest. Instance and group norm training in NCHW reads x once at all of these shapes (rows
// shorter than 4 KiB: kernels/channel_norm_plan.hpp), so there the walks are batch norm's and
// inference's (batch norm's NCHW training through the walk, not its tiles: ScopedBatchWalk); their
// per-sample NCHW walks are met by the long rows that are not whole packs of the *MatchesCpu shapes
// (S = 1031 in fp32, 5000, 8200, 100003).
TEST_P(GpuChannelNorm, ApplyWalksMatchCpuOnOneSm) {
  NKT_REQUIRE_DEVICE();
  const Case c = GetParam();
  if (c.dtype == NK_F16 || !c.affine) {
    GTEST_SKIP() << "the walks are checked in bf16 and fp32 with weight and bias";
  }
  nk_context one_sm = context_with_sm_limit(1);
  ASSERT_NE(one_sm, nullptr);
  std::swap(gpu_, one_sm);  // check_forward and check_backward run on gpu_
  struct Restore {
    nk_context& gpu;
    nk_context saved;
    ~Restore() {
      nk_context_destroy(gpu);
      gpu = saved;
    }
  } restore{gpu_, one_sm};
  const ScopedBatchWalk walk;  // batch norm's NCHW training too, not its tiles
  const int64_t list[][4] = {{1, 2056, 3, 8}, {3, 20, 40, 4},  {40, 21, 41, 3}, {2, 255, 64, 5},
                             {2, 514, 8, 2},  {4, 2, 1000, 1}, {4, 24, 147, 4}, {64, 100, 14, 5}};
  for (const auto& s : list) {
    const ChannelCase k{c.family, s[0],     s[1],
                        s[2],     c.layout, c.family == Family::kGroup ? s[3] : 1};
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    nk_norm_params p = nk_norm_params_default();
    check_forward(k, p, 1);
    check_backward(k, NK_TRAINING);
    if (c.family == Family::kGroup) continue;  // no inference phase
    p.phase = NK_INFERENCE;
    check_forward(k, p, 1);
    check_backward(k, NK_INFERENCE);
  }
}

// One read of x (resident_rows_cases.hpp): instance and group norm training in NCHW where a row
// fits a block. Running buffers or none (instance norm), three steps of the cumulative average,
// fp32 data at |mean| / std = 1e4 (16-bit types cannot hold such data), and misaligned pointers,
// whose single-element loads fill the same staged packs: y and the saved statistics then have the
// bytes of the aligned call. The same for the backward, which stages x and dy.
TEST_P(GpuChannelNorm, ResidentRowsMatchCpu) {
  const Case c = GetParam();
  if (c.family == Family::kBatch || c.layout != NK_NCHW) {
    GTEST_SKIP() << "one read of x: instance and group norm in NCHW";
  }
  // Group norm rows of 16 KiB in bf16: blocks of 128 threads, four warps for two channels a row,
  // so two warps have no channel and add nothing to the row's sums.
  const ChannelCase wide{Family::kGroup, 4, 64, 4096, NK_NCHW, 32};
  const bool with_wide = c.family == Family::kGroup && c.dtype == NK_BF16;
  for (const ChannelCase& k : resident_row_shapes(c.family, c.dtype)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    ASSERT_TRUE(takes_resident_rows(k, c.dtype));
    // The backward with dx reads x and dy once too (a row of both fits a block).
    ASSERT_TRUE(takes_resident_rows(k, c.dtype, 2));
  }
  if (with_wide) {
    ASSERT_TRUE(takes_resident_rows(wide, c.dtype, 2));
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : resident_row_shapes(c.family, c.dtype)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    const nk_norm_params p = nk_norm_params_default();
    check_one_read_forward(k);

    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    const Buffer x(c.dtype, rng_.normal(numel, 1.0, 3.0));
    const Buffer w(NK_F32, rng_.normal(k.c, 1.0, 0.5)), b(NK_F32, rng_.normal(k.c));
    DeviceBuffer wd(w), bd(b);
    const int64_t row_bytes = numel / stats * static_cast<int64_t>(elem_size(c.dtype));
    forward_bytes_across_heads(k, p, x, wd, bd, row_bytes);

    // The backward against the CPU, aligned and misaligned; then the bytes of dx, dweight and
    // dbias of misaligned pointers, of dx == dy and of partial heads against the aligned call.
    check_backward(k, NK_TRAINING);
    check_backward(k, NK_TRAINING, 1);
    backward_bytes_across_heads(k, x, wd, row_bytes);
  }
  if (with_wide) check_backward(wide, NK_TRAINING);
}

// One read of x (and dy) with rows in registers (short_rows_cases.hpp): instance and group norm
// training in NCHW where a statistic's row is at most a 16-byte pack. Running buffers or none
// (instance norm), three steps of the cumulative average and the unbiased running variance of
// 2-value rows, fp32 data at |mean| / std = 1e4, misaligned pointers (single elements), and the
// bytes of y and the saved statistics of misaligned and in-place calls against the aligned one. The
// training backward (rows in registers too) against the CPU, aligned and misaligned, and the bytes
// of dx, dweight and dbias of misaligned and dx == dy calls against the aligned one.
TEST_P(GpuChannelNorm, ShortRowsMatchCpu) {
  const Case c = GetParam();
  if (c.family == Family::kBatch || c.layout != NK_NCHW) {
    GTEST_SKIP() << "rows in registers: instance and group norm in NCHW";
  }
  for (const ChannelCase& k : short_row_shapes(c.family, c.dtype)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    ASSERT_TRUE(takes_short_rows(k, c.dtype));
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : short_row_shapes(c.family, c.dtype)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    check_unstaged_rows(k);
  }
}

// One read of x (and dy) with a group of lanes a row (row_groups_cases.hpp): instance and group
// norm rows above a pack and below 4 KiB, with the checks of the rows in registers above
// (check_unstaged_rows).
TEST_P(GpuChannelNorm, RowGroupsMatchCpu) {
  const Case c = GetParam();
  if (c.family == Family::kBatch || c.layout != NK_NCHW) {
    GTEST_SKIP() << "a group of lanes a row: instance and group norm in NCHW";
  }
  for (const ChannelCase& k : row_group_shapes(c.family)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    ASSERT_TRUE(takes_row_groups(k, c.dtype));
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : row_group_shapes(c.family)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    check_unstaged_rows(k);
  }
}

// Rows above 96 KiB (128 KiB here) take the one-read forward with the first 96 KiB staged and
// the rest read from memory in each pass: against the CPU, instance norm with running buffers,
// group norm with 4 channels a row, fp32 data at |mean| / std = 1e4. The backward likewise with
// rows of 64 KiB, above its 48.
TEST_P(GpuChannelNorm, ResidentLongRowsMatchCpu) {
  const Case c = GetParam();
  if (c.family == Family::kBatch || c.layout != NK_NCHW) {
    GTEST_SKIP() << "one read of x: instance and group norm in NCHW";
  }
  if (skip_in_reduced_set(c)) GTEST_SKIP() << kStructuralSkip;
  const int64_t len = 128 * 1024 / static_cast<int64_t>(elem_size(c.dtype));
  const ChannelCase k = c.family == Family::kInstance
                            ? ChannelCase{c.family, 1, 128, len, NK_NCHW, 1}
                            : ChannelCase{c.family, 8, 64, len / 4, NK_NCHW, 16};
  const nk::ChannelShape shape{
      c.family == Family::kInstance ? nk::ChannelNorm::kInstance : nk::ChannelNorm::kGroup,
      k.n,
      k.c,
      k.s,
      NK_NCHW,
      c.dtype,
      k.groups};
  const nk::cuda::ResidentPlan r =
      nk::cuda::plan_resident_rows(shape, static_cast<int>(elem_size(c.dtype)));
  ASSERT_TRUE(r.use);
  ASSERT_EQ(r.len, len);
  ASSERT_LT(r.head_len, r.len);  // a tail
  // The backward stages x and dy: rows above 48 KiB (64 KiB here) stage the first 48 KiB of each.
  const ChannelCase half{k.family, k.n, k.c, k.s / 2, NK_NCHW, k.groups};
  const nk::ChannelShape half_shape{shape.kind, half.n,  half.c,     half.s,
                                    NK_NCHW,    c.dtype, half.groups};
  const nk::cuda::ResidentPlan rb =
      nk::cuda::plan_resident_rows(half_shape, static_cast<int>(elem_size(c.dtype)), 2);
  ASSERT_TRUE(rb.use);
  ASSERT_LT(rb.head_len, rb.len);
  NKT_REQUIRE_DEVICE();
  check_forward(k, nk_norm_params_default(), 1);
  if (c.dtype == NK_F32) check_forward(k, nk_norm_params_default(), 1, true, 1e4, 1.0);
  check_backward(half, NK_TRAINING);
}

// Rows above a block in parts (split_row_shapes: instance and group norm in NCHW,
// plan_resident_rows' parts), as one cluster a row where the device has them and in two launches
// (NORMKIT_TEST_NO_CLUSTERS): the forward against the CPU (check_one_read_forward: running buffers
// or none, three steps of the cumulative average, fp32 data at |mean| / std = 1e4, misaligned
// pointers) on the first shape, and then the bytes of misaligned, in-place and partly staged calls
// (no head, a third of a part, a pack short of it) against the aligned one; two steps with running
// buffers on the others. The training backward against the CPU, aligned and misaligned, and on
// the first shape the bytes across pointers, dx == dy and heads. Then the two forms' bytes of every
// output (y, the saved statistics, the running buffers, dx, dweight, dbias).
TEST_P(GpuChannelNorm, SplitRowsMatchCpu) {
  const Case c = GetParam();
  if (c.family == Family::kBatch || c.layout != NK_NCHW) {
    GTEST_SKIP() << "rows in parts: instance and group norm in NCHW";
  }
  if (skip_in_reduced_set(c)) GTEST_SKIP() << kStructuralSkip;
  const SplitRowShapes k = split_row_shapes(c.family, c.dtype);
  // The parts each shape takes (the same in both forms: the plans know nothing of clusters).
  for (size_t i = 0; i < k.forward.size(); ++i) {
    const nk::cuda::ResidentPlan plan = resident_plan(k.forward[i], c.dtype);
    ASSERT_TRUE(plan.use) << "forward " << i;
    ASSERT_EQ(plan.parts, k.forward_parts[i]) << "forward " << i;
  }
  for (size_t i = 0; i < k.backward.size(); ++i) {
    const nk::cuda::ResidentPlan plan = resident_plan(k.backward[i], c.dtype, 2);
    ASSERT_TRUE(plan.use) << "backward " << i;
    ASSERT_EQ(plan.parts, k.backward_parts[i]) << "backward " << i;
  }
  NKT_REQUIRE_DEVICE();
  const int elem = static_cast<int>(elem_size(c.dtype));
  const bool instance = c.family == Family::kInstance;
  // Each shape's inputs, the same in both forms.
  struct Inputs {
    Buffer x, dy, w, b, rm0, rv0, mean, invstd;
  };
  auto draw = [&](const ChannelCase& s) {
    const int64_t numel = s.n * s.c * s.s, stats = num_stats(s);
    return Inputs{Buffer(c.dtype, rng_.normal(numel, 1.0, 3.0)),
                  Buffer(c.dtype, rng_.normal(numel)),
                  Buffer(NK_F32, rng_.normal(s.c, 1.0, 0.5)),
                  Buffer(NK_F32, rng_.normal(s.c)),
                  Buffer(NK_F32, rng_.normal(s.c, 0.0, 0.1)),
                  Buffer(NK_F32, rng_.uniform(s.c, 0.5, 1.5)),
                  Buffer(NK_F32, rng_.normal(stats, 1.0, 0.5)),
                  Buffer(NK_F32, rng_.uniform(stats, 0.2, 0.5))};
  };
  std::vector<Inputs> forward_in, backward_in;
  for (const ChannelCase& f : k.forward) forward_in.push_back(draw(f));
  for (const ChannelCase& bk : k.backward) backward_in.push_back(draw(bk));
  std::vector<Buffer> forms[2], grads[2];
  for (int form = 0; form < 2; ++form) {
    SCOPED_TRACE(kSplitFormNames[form]);
    const ScopedSplitForm knobs(form);
    for (size_t i = 0; i < k.forward.size(); ++i) {
      const ChannelCase& f = k.forward[i];
      SCOPED_TRACE(testing::Message()
                   << "forward n=" << f.n << " c=" << f.c << " s=" << f.s << " g=" << f.groups);
      const nk::cuda::ResidentPlan plan = resident_plan(f, c.dtype);
      const int64_t numel = f.n * f.c * f.s, stats = num_stats(f);
      if (i == 0) {
        check_one_read_forward(f);
      } else {
        check_forward(f, nk_norm_params_default(), 2);
      }
      const Inputs& in = forward_in[i];
      const DeviceBuffer wd(in.w), bd(in.b);
      if (i == 0) {
        forward_bytes_across_heads(f, nk_norm_params_default(), in.x, wd, bd, plan.part_len * elem);
      }
      DeviceBuffer xd(in.x), y(c.dtype, numel), sm(NK_F32, stats), si(NK_F32, stats), rm(in.rm0),
          rv(in.rv0);
      ASSERT_EQ(
          channel_forward(gpu_, f, c.dtype, nk_norm_params_default(), xd.data(), wd.f32(), bd.f32(),
                          instance ? rm.f32() : nullptr, instance ? rv.f32() : nullptr, nullptr,
                          y.data(), sm.f32(), si.f32()),
          NK_SUCCESS)
          << nk_last_error();
      for (const Buffer& out :
           {y.download(), sm.download(), si.download(), rm.download(), rv.download()}) {
        forms[form].push_back(out);
      }
    }
    for (size_t i = 0; i < k.backward.size(); ++i) {
      const ChannelCase& bk = k.backward[i];
      SCOPED_TRACE(testing::Message() << "backward n=" << bk.n << " c=" << bk.c << " s=" << bk.s
                                      << " g=" << bk.groups);
      const nk::cuda::ResidentPlan plan = resident_plan(bk, c.dtype, 2);
      check_backward(bk, NK_TRAINING);
      check_backward(bk, NK_TRAINING, 1);
      const int64_t numel = bk.n * bk.c * bk.s;
      const Inputs& in = backward_in[i];
      const DeviceBuffer wd(in.w);
      if (i == 0) backward_bytes_across_heads(bk, in.x, wd, plan.part_len * elem);
      DeviceBuffer xd(in.x), dyd(in.dy), md(in.mean), sd(in.invstd), dx(c.dtype, numel),
          dw(NK_F32, bk.c), db(NK_F32, bk.c);
      nk_norm_params p = nk_norm_params_default();
      p.phase = NK_TRAINING;
      ASSERT_EQ(channel_backward(gpu_, bk, c.dtype, p, xd.data(), dyd.data(), wd.f32(), nullptr,
                                 nullptr, md.f32(), sd.f32(), dx.data(), dw.f32(), db.f32()),
                NK_SUCCESS)
          << nk_last_error();
      for (const Buffer& out : {dx.download(), dw.download(), db.download()}) {
        grads[form].push_back(out);
      }
    }
  }
  ASSERT_EQ(forms[0].size(), forms[1].size());
  for (size_t j = 0; j < forms[0].size(); ++j) {
    const char* names[] = {"y", "save_mean", "save_invstd", "running_mean", "running_var"};
    EXPECT_EQ(forms[1][j].bytes(), forms[0][j].bytes())
        << "forward " << j / 5 << " " << names[j % 5] << ": the forms differ";
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t j = 0; j < grads[0].size(); ++j) {
    const char* names[] = {"dx", "dweight", "dbias"};
    EXPECT_EQ(grads[1][j].bytes(), grads[0][j].bytes())
        << "backward " << j / 3 << " " << names[j % 3] << ": the forms differ";
  }
}

// One read of x for group norm in NHWC (plan_group_tiles): a block per tile of groups, against the
// CPU with and without the affine, fp32 data at |mean| / std = 1e4 (two groups of a pack have
// their own shifts), misaligned pointers; then the bytes of misaligned, partly staged and in-place
// calls against the aligned one. The same for the backward, which stages x and dy.
TEST_P(GpuChannelNorm, GroupTilesMatchCpu) {
  const Case c = GetParam();
  if (c.family != Family::kGroup || c.layout != NK_NHWC) {
    GTEST_SKIP() << "one read of x in NHWC: group norm";
  }
  for (const ChannelCase& k : group_tile_shapes(c.dtype)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    ASSERT_TRUE(takes_group_tiles(k, c.dtype));
    ASSERT_FALSE(takes_resident_rows(k, c.dtype));
    ASSERT_TRUE(takes_group_tiles(k, c.dtype, 2));  // the backward stages x and dy
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : group_tile_shapes(c.dtype)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    const nk_norm_params p = nk_norm_params_default();
    check_forward(k, p, 1);
    if (c.dtype == NK_F32) check_forward(k, p, 1, true, 1e4, 1.0);
    check_forward(k, p, 1, true, 0.5, 2.0, 1);
    const int64_t numel = k.n * k.c * k.s;
    const Buffer x(c.dtype, rng_.normal(numel, 1.0, 3.0));
    const Buffer w(NK_F32, rng_.normal(k.c, 1.0, 0.5)), b(NK_F32, rng_.normal(k.c));
    const DeviceBuffer wd(w), bd(b);
    const nk::ChannelShape shape{
        nk::ChannelNorm::kGroup, k.n, k.c, k.s, k.layout, c.dtype, k.groups};
    const int elem = static_cast<int>(elem_size(c.dtype));
    const int64_t tile_bytes = nk::cuda::plan_group_tiles(shape, elem).len * elem;
    forward_bytes_across_heads(k, p, x, wd, bd, tile_bytes);

    check_backward(k, NK_TRAINING);
    check_backward(k, NK_TRAINING, 1);
    backward_bytes_across_heads(k, x, wd, tile_bytes);
  }
}

// Instance norm in NHWC reads x once where a tile of a pack of channels fits a block, and batch
// norm in NHWC or with S = 1 as one sample's instance norm (instance_tile_shapes): the forward
// against the CPU (check_one_read_forward: with and without running buffers, the cumulative
// average over three steps, |mean| / std = 1e4 in fp32, misaligned pointers), then the bytes of y
// and the saved statistics of misaligned and in-place calls and of partial heads against the
// aligned call; the training backward, which reads x and dy once in the same tiles, likewise
// against the CPU aligned and misaligned, and the bytes of dx, dweight and dbias across pointers
// and heads.
TEST_P(GpuChannelNorm, InstanceTilesMatchCpu) {
  const Case c = GetParam();
  if (c.family == Family::kGroup || c.layout != NK_NHWC) {
    GTEST_SKIP() << "one read of x in tiles of a pack of channels: instance and batch norm, NHWC";
  }
  for (const ChannelCase& k : instance_tile_shapes(c.family, c.dtype)) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    ASSERT_TRUE(takes_instance_tiles(k, c.dtype));
    ASSERT_TRUE(takes_instance_tiles(k, c.dtype, 2));  // the backward stages x and dy
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : instance_tile_shapes(c.family, c.dtype)) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    check_one_read_forward(k);
    const int64_t numel = k.n * k.c * k.s;
    const Buffer x(c.dtype, rng_.normal(numel, 1.0, 3.0));
    const Buffer w(NK_F32, rng_.normal(k.c, 1.0, 0.5)), b(NK_F32, rng_.normal(k.c));
    const DeviceBuffer wd(w), bd(b);
    const int64_t tile_bytes = instance_tile_plan(k, c.dtype).len * elem_size(c.dtype);
    forward_bytes_across_heads(k, nk_norm_params_default(), x, wd, bd, tile_bytes);

    check_backward(k, NK_TRAINING);
    check_backward(k, NK_TRAINING, 1);
    backward_bytes_across_heads(k, x, wd, tile_bytes);
  }
}

// Instance norm in NHWC, batch norm as one sample, and group norm in NHWC, where a tile exceeds a
// block: its parts (split_tile_shapes: 8 or 4 a tile, the last shorter), a cluster a tile where
// the device has clusters, and in two launches through the workspace without
// (NORMKIT_TEST_NO_CLUSTERS). Each form: the forward against the CPU (check_one_read_forward), the
// bytes of misaligned, in-place and partial-head calls against its aligned one; the training
// backward (x and dy split alike) against the CPU aligned and misaligned, and its bytes across
// pointers and heads. Then the two forms' bytes against each other: y, the saved and running
// statistics and the counter; dx, dweight and dbias.
TEST_P(GpuChannelNorm, SplitTilesMatchCpu) {
  const Case c = GetParam();
  if (c.layout != NK_NHWC) GTEST_SKIP() << "split tiles: NHWC";
  for (const ChannelCase& k : split_tile_shapes(c.family, c.dtype)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    const nk::cuda::GroupTilePlan plan = split_tile_plan(k, c.dtype);
    const nk::cuda::GroupTilePlan bplan = split_tile_plan(k, c.dtype, 2);
    ASSERT_TRUE(plan.use);
    const int parts = k.s == 49 ? 4 : 8;
    ASSERT_EQ(plan.parts, parts);
    const int64_t positions = c.family == Family::kBatch ? k.n * k.s : k.s;
    ASSERT_LT(positions - (parts - 1) * plan.part_positions, plan.part_positions);  // shorter
    ASSERT_TRUE(bplan.use);
    ASSERT_EQ(bplan.parts, parts);
  }
  NKT_REQUIRE_DEVICE();
  if (!device_has_clusters()) {
    std::printf("note: no thread block clusters on this device; both forms take two launches\n");
  }
  const bool group = c.family == Family::kGroup;
  for (const ChannelCase& k : split_tile_shapes(c.family, c.dtype)) {
    SCOPED_TRACE(testing::Message()
                 << "n=" << k.n << " c=" << k.c << " s=" << k.s << " g=" << k.groups);
    const nk::cuda::GroupTilePlan plan = split_tile_plan(k, c.dtype);
    const int64_t part_bytes = plan.part_positions * plan.pos_packs * 16;
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    const Buffer x(c.dtype, rng_.normal(numel, 1.0, 3.0));
    const Buffer w(NK_F32, rng_.normal(k.c, 1.0, 0.5)), b(NK_F32, rng_.normal(k.c));
    const Buffer rm0(NK_F32, rng_.normal(k.c, 0.0, 0.1)), rv0(NK_F32, rng_.uniform(k.c, 0.5, 1.5));
    const Buffer dyh(c.dtype, rng_.normal(numel));
    const Buffer mean(NK_F32, rng_.normal(stats, 1.0, 0.5)),
        invstd(NK_F32, rng_.uniform(stats, 0.2, 0.5));
    const DeviceBuffer wd(w), bd(b);
    const nk::cuda::GroupTilePlan bplan = split_tile_plan(k, c.dtype, 2);
    std::vector<Buffer> forms[2], grads[2];
    for (int form = 0; form < 2; ++form) {
      SCOPED_TRACE(kSplitFormNames[form]);
      const ScopedSplitForm knobs(form);
      check_one_read_forward(k);
      forward_bytes_across_heads(k, nk_norm_params_default(), x, wd, bd, part_bytes);
      const int64_t tracked0 = 5;
      Buffer tracked_host(NK_F32, 2);
      std::memcpy(tracked_host.data(), &tracked0, 8);
      DeviceBuffer xd(x), y(c.dtype, numel), sm(NK_F32, stats), si(NK_F32, stats), rm(rm0), rv(rv0),
          tracked(tracked_host);
      ASSERT_EQ(
          channel_forward(gpu_, k, c.dtype, nk_norm_params_default(), xd.data(), wd.f32(), bd.f32(),
                          rm.f32(), rv.f32(), reinterpret_cast<int64_t*>(tracked.data()), y.data(),
                          sm.f32(), si.f32()),
          NK_SUCCESS)
          << nk_last_error();
      forms[form] = {y.download(),  sm.download(), si.download(),
                     rm.download(), rv.download(), tracked.download()};

      check_backward(k, NK_TRAINING);
      check_backward(k, NK_TRAINING, 1);
      backward_bytes_across_heads(k, x, wd, bplan.part_positions * bplan.pos_packs * 16);
      DeviceBuffer dyd(dyh), md(mean), sd(invstd), dx(c.dtype, numel), dw(NK_F32, k.c),
          db(NK_F32, k.c);
      nk_norm_params p = nk_norm_params_default();
      ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, xd.data(), dyd.data(), wd.f32(), nullptr,
                                 nullptr, md.f32(), sd.f32(), dx.data(), dw.f32(), db.f32()),
                NK_SUCCESS)
          << nk_last_error();
      grads[form] = {dx.download(), dw.download(), db.download()};
    }
    const char* grad_names[] = {"dx", "dweight", "dbias"};
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(grads[1][i].bytes(), grads[0][i].bytes()) << grad_names[i] << ": the forms differ";
    }
    const char* names[] = {"y",           "save_mean",          "save_invstd", "running_mean",
                           "running_var", "num_batches_tracked"};
    for (size_t i = 0; i < 6; ++i) {
      EXPECT_EQ(forms[1][i].bytes(), forms[0][i].bytes()) << names[i] << ": the forms differ";
    }
    int64_t tracked = 0;
    std::memcpy(&tracked, forms[0][5].data(), 8);
    EXPECT_EQ(tracked, group ? 5 : 6);  // group norm keeps no running statistics
    int64_t bad = 0;
    for (double v : forms[0][0].values()) bad += std::isfinite(v) ? 0 : 1;
    EXPECT_EQ(bad, 0) << "y: elements not finite";
  }
}

// Tiles above 8 parts of 219 KiB take 16 (sixteen_part_shapes: a forward and a backward shape, the
// last part shorter), a cluster of 16 blocks where the device allows and holds one, else two
// launches (and through NORMKIT_TEST_NO_CLUSTERS); and as an H100 or H200 stages them, each part
// whole (its opt-in shared memory through NORMKIT_TEST_SHARED_LIMIT: a simulator reports none, so
// it stages only the plan's head of each part). The first two forms: the forward against the CPU
// over two steps of the running statistics, and misaligned; the training backward aligned and
// misaligned. Then each form's bytes against the first's: y and the saved statistics; dx,
// dweight, dbias.
TEST_P(GpuChannelNorm, SixteenPartsMatchCpu) {
  const Case c = GetParam();
  if (c.layout != NK_NHWC) GTEST_SKIP() << "split tiles: NHWC";
  if (skip_in_reduced_set(c)) GTEST_SKIP() << kStructuralSkip;
  const SixteenPartShapes k = sixteen_part_shapes(c.family, c.dtype);
  const nk::cuda::GroupTilePlan fplan = split_tile_plan(k.forward, c.dtype);
  const nk::cuda::GroupTilePlan bplan = split_tile_plan(k.backward, c.dtype, 2);
  ASSERT_TRUE(fplan.use);
  ASSERT_TRUE(bplan.use);
  ASSERT_EQ(fplan.parts, 16);
  ASSERT_EQ(bplan.parts, 16);
  ASSERT_EQ(split_tile_plan(k.backward, c.dtype).parts, 8);  // its forward: 8 parts
  const ChannelCase& f = k.forward;
  const ChannelCase& b = k.backward;
  const int64_t fpos = c.family == Family::kBatch ? f.n * f.s : f.s;
  const int64_t bpos = c.family == Family::kBatch ? b.n * b.s : b.s;
  ASSERT_LT(fpos - 15 * fplan.part_positions, fplan.part_positions);  // the last part shorter
  ASSERT_GT(fpos - 15 * fplan.part_positions, 0);
  ASSERT_LT(bpos - 15 * bplan.part_positions, bplan.part_positions);
  ASSERT_GT(bpos - 15 * bplan.part_positions, 0);
  NKT_REQUIRE_DEVICE();
  const int64_t fnumel = f.n * f.c * f.s, bnumel = b.n * b.c * b.s;
  const Buffer x(c.dtype, rng_.normal(fnumel, 1.0, 3.0));
  const Buffer xb(c.dtype, rng_.normal(bnumel, 1.0, 3.0));
  const Buffer dyh(c.dtype, rng_.normal(bnumel));
  const Buffer w(NK_F32, rng_.normal(f.c, 1.0, 0.5)), bias(NK_F32, rng_.normal(f.c));
  const Buffer wb(NK_F32, rng_.normal(b.c, 1.0, 0.5));
  const Buffer mean(NK_F32, rng_.normal(num_stats(b), 1.0, 0.5)),
      invstd(NK_F32, rng_.uniform(num_stats(b), 0.2, 0.5));
  const DeviceBuffer wd(w), bd(bias), wbd(wb);
  std::vector<Buffer> forms[kSplitForms], grads[kSplitForms];
  for (int form = 0; form < kSplitForms; ++form) {
    SCOPED_TRACE(kSplitFormNames[form]);
    const ScopedSplitForm knobs(form);
    if (form < 2) {  // the third form: its bytes against the first's
      check_forward(f, nk_norm_params_default(), 2);
      check_forward(f, nk_norm_params_default(), 1, true, 0.5, 2.0, 1);
      check_backward(b, NK_TRAINING);
      check_backward(b, NK_TRAINING, 1);
    }

    DeviceBuffer xd(x), y(c.dtype, fnumel), sm(NK_F32, num_stats(f)), si(NK_F32, num_stats(f));
    ASSERT_EQ(channel_forward(gpu_, f, c.dtype, nk_norm_params_default(), xd.data(), wd.f32(),
                              bd.f32(), nullptr, nullptr, nullptr, y.data(), sm.f32(), si.f32()),
              NK_SUCCESS)
        << nk_last_error();
    forms[form] = {y.download(), sm.download(), si.download()};
    DeviceBuffer xbd(xb), dyd(dyh), md(mean), sd(invstd), dx(c.dtype, bnumel), dw(NK_F32, b.c),
        db(NK_F32, b.c);
    nk_norm_params p = nk_norm_params_default();
    p.phase = NK_TRAINING;
    ASSERT_EQ(channel_backward(gpu_, b, c.dtype, p, xbd.data(), dyd.data(), wbd.f32(), nullptr,
                               nullptr, md.f32(), sd.f32(), dx.data(), dw.f32(), db.f32()),
              NK_SUCCESS)
        << nk_last_error();
    grads[form] = {dx.download(), dw.download(), db.download()};
  }
  const char* names[] = {"y", "save_mean", "save_invstd"};
  const char* grad_names[] = {"dx", "dweight", "dbias"};
  for (int form = 1; form < kSplitForms; ++form) {
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(forms[form][i].bytes(), forms[0][i].bytes())
          << names[i] << ": " << kSplitFormNames[form] << " differs";
      EXPECT_EQ(grads[form][i].bytes(), grads[0][i].bytes())
          << grad_names[i] << ": " << kSplitFormNames[form] << " differs";
    }
  }
  int64_t bad = 0;
  for (double v : forms[0][0].values()) bad += std::isfinite(v) ? 0 : 1;
  for (double v : grads[0][0].values()) bad += std::isfinite(v) ? 0 : 1;
  EXPECT_EQ(bad, 0) << "y, dx: elements not finite";
}

// The largest parts the plan makes (largest_part_shapes: 8 of 219 KiB of x forward, of half that
// of each of x and dy backward; every family and layout), as an H100 or H200 stages them: whole,
// in the 227 KiB a block opts in to there (NORMKIT_TEST_SHARED_LIMIT; a simulator, reporting no
// opt-in limit, would stage only the plan's head of each part). Against the CPU in clusters where
// the device has them and in two launches: the forward over two steps of the running statistics,
// and the training backward.
TEST_P(GpuChannelNorm, LargestPartsMatchCpu) {
  const Case c = GetParam();
  if (skip_in_reduced_set(c)) GTEST_SKIP() << kStructuralSkip;
  const LargestPartShapes k = largest_part_shapes(c.family, c.layout, c.dtype);
  const SplitParts f = split_parts(k.forward, c.dtype, 1), b = split_parts(k.backward, c.dtype, 2);
  ASSERT_EQ(f.parts, 8);
  ASSERT_EQ(f.bytes, nk::cuda::kSplitPartMaxBytes);
  ASSERT_TRUE(f.head_short);  // so the opt-in limit stages more than every GPU grants
  ASSERT_EQ(b.parts, 8);
  ASSERT_EQ(b.bytes, nk::cuda::kSplitPartMaxBytes / 2);
  ASSERT_TRUE(b.head_short);
  NKT_REQUIRE_DEVICE();
  const ScopedSharedLimit optin(kHopperSharedOptin);
  for (int form = 0; form < 2; ++form) {
    SCOPED_TRACE(kSplitFormNames[form]);
    const ScopedSplitForm knobs(form);  // clusters, or two launches
    check_forward(k.forward, nk_norm_params_default(), 2);
    check_backward(k.backward, NK_TRAINING);
  }
}

// Tiles that give each thread more packs than its loops hold in flight at once (the forward's 4,
// the backwards' 2 of x and 2 of dy), so that their turns repeat, the last one partial, in one
// block of 512 threads or near it. Group norm in NHWC, one group of a pack of channels: forward
// over 5000 positions (80000 bytes staged whole, 9.8 packs a thread). Instance norm in NHWC, a
// pack of channels: forward over 9000 positions (144000 bytes: 88 KiB staged, the rest read in
// each pass; 17.6 packs a thread). Both backward over 2816 positions (44 KiB of x and of dy,
// staged whole: group norm 352 threads, 8 packs of each; instance norm 512, 5.5 of each).
// Against the CPU, then the bytes across pointers and heads.
TEST_P(GpuChannelNorm, TilesOfManyPacksAThreadMatchCpu) {
  const Case c = GetParam();
  if (c.family == Family::kBatch || c.layout != NK_NHWC) {
    GTEST_SKIP() << "group and instance norm tiles in NHWC";
  }
  if (skip_in_reduced_set(c)) GTEST_SKIP() << kStructuralSkip;
  const int elem = static_cast<int>(elem_size(c.dtype));
  const int64_t e = 16 / elem;
  const bool group = c.family == Family::kGroup;
  auto plan = [&](const ChannelCase& k, int staged_tensors) {
    const nk::ChannelShape shape{group ? nk::ChannelNorm::kGroup : nk::ChannelNorm::kInstance,
                                 k.n,
                                 k.c,
                                 k.s,
                                 NK_NHWC,
                                 c.dtype,
                                 k.groups};
    return group ? nk::cuda::plan_group_tiles(shape, elem, staged_tensors)
                 : nk::cuda::plan_instance_tiles(shape, elem, staged_tensors);
  };
  const ChannelCase fwd{c.family, 1, e, group ? 5000 : 9000, NK_NHWC, 1};
  const nk::cuda::GroupTilePlan f = plan(fwd, 1);
  ASSERT_TRUE(f.use);
  ASSERT_EQ(f.threads, 512);
  ASSERT_GT(f.len / e, 2 * 4 * 512);      // three turns of 4 packs at least
  ASSERT_EQ(f.head_len < f.len, !group);  // instance norm: a tail
  const ChannelCase bwd{c.family, 1, e, 2816, NK_NHWC, 1};
  const nk::cuda::GroupTilePlan t = plan(bwd, 2);
  ASSERT_TRUE(t.use);
  ASSERT_EQ(t.head_len, t.len);                  // staged whole
  ASSERT_GT(t.len / e, 4 * int64_t{t.threads});  // three turns of 2 packs of each at least
  NKT_REQUIRE_DEVICE();

  const Buffer w(NK_F32, rng_.normal(e, 1.0, 0.5)), b(NK_F32, rng_.normal(e));
  const DeviceBuffer wd(w), bd(b);
  check_one_read_forward(fwd);
  const Buffer x(c.dtype, rng_.normal(fwd.n * fwd.c * fwd.s, 1.0, 3.0));
  forward_bytes_across_heads(fwd, nk_norm_params_default(), x, wd, bd, f.len * elem);

  check_backward(bwd, NK_TRAINING);
  check_backward(bwd, NK_TRAINING, 1);
  const Buffer xb(c.dtype, rng_.normal(bwd.n * bwd.c * bwd.s, 1.0, 3.0));
  backward_bytes_across_heads(bwd, xb, wd, t.len * elem);
}

// Batch norm in NCHW reads x once where a channel's N runs of S fit a block (batch_tile_shapes):
// the forward against the CPU (check_one_read_forward: with and without running buffers, the
// cumulative average over three steps, |mean| / std = 1e4 in fp32, misaligned pointers), then the
// bytes of y and the saved statistics of misaligned and in-place calls and of partial heads
// (none, a third, all but one pack staged; the rest read from memory in each pass) against the
// aligned call; the training backward, which reads x and dy once in the same tiles, likewise
// against the CPU aligned and misaligned, and the bytes of dx, dweight and dbias across pointers,
// dx == dy and heads.
TEST_P(GpuChannelNorm, BatchTilesMatchCpu) {
  const Case c = GetParam();
  if (c.family != Family::kBatch || c.layout != NK_NCHW) {
    GTEST_SKIP() << "one read of x a channel at a time: batch norm, NCHW";
  }
  for (const ChannelCase& k : batch_tile_shapes()) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    ASSERT_TRUE(takes_batch_tiles(k, c.dtype));
    ASSERT_TRUE(takes_batch_tiles(k, c.dtype, 2));  // the backward stages x and dy
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : batch_tile_shapes()) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    check_one_read_forward(k);
    const int64_t numel = k.n * k.c * k.s;
    const Buffer x(c.dtype, rng_.normal(numel, 1.0, 3.0));
    const Buffer w(NK_F32, rng_.normal(k.c, 1.0, 0.5)), b(NK_F32, rng_.normal(k.c));
    const DeviceBuffer wd(w), bd(b);
    const int64_t tile_bytes = batch_tile_plan(k, c.dtype).packs * 16;
    forward_bytes_across_heads(k, nk_norm_params_default(), x, wd, bd, tile_bytes);

    check_backward(k, NK_TRAINING);
    check_backward(k, NK_TRAINING, 1);
    backward_bytes_across_heads(k, x, wd, tile_bytes);
  }
}

// Batch norm in NCHW where a channel's runs exceed a block: its parts by samples
// (batch_split_shapes: 4 parts of 5 runs forward and backward; the forward's 16 parts of one run;
// the backward's 16), a cluster a channel where the device has clusters, and in two launches
// through the workspace without (NORMKIT_TEST_NO_CLUSTERS). Each form against the CPU: the first
// shape's forward (check_one_read_forward: running statistics over steps, cumulative momentum,
// misaligned pointers) and the bytes of misaligned, in-place and partial-head calls against its
// aligned one, its backward aligned and misaligned and its bytes across pointers and heads; the
// 16-part shapes' forward over two steps, backward aligned. Then the two forms' bytes against each
// other: y, the saved and running statistics and the counter; dx, dweight and dbias; and those of
// a third form, the first with an H100's opt-in shared memory (NORMKIT_TEST_SHARED_LIMIT: each
// part staged whole, as those GPUs do and a simulator, reporting none, would not).
TEST_P(GpuChannelNorm, BatchTilesSplitMatchCpu) {
  const Case c = GetParam();
  if (c.family != Family::kBatch || c.layout != NK_NCHW) {
    GTEST_SKIP() << "batch norm's NCHW tiles in parts";
  }
  if (skip_in_reduced_set(c)) GTEST_SKIP() << kStructuralSkip;
  const std::vector<ChannelCase> shapes = batch_split_shapes(c.dtype);
  const int forward_parts[] = {4, 16, 8}, backward_parts[] = {4, 0, 16};  // 0: the walk
  for (size_t i = 0; i < shapes.size(); ++i) {
    const ChannelCase& k = shapes[i];
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    const nk::cuda::BatchTilePlan plan = batch_tile_plan(k, c.dtype);
    const nk::cuda::BatchTilePlan bplan = batch_tile_plan(k, c.dtype, 2);
    ASSERT_TRUE(plan.use);
    ASSERT_EQ(plan.parts, forward_parts[i]);
    ASSERT_EQ(bplan.use, backward_parts[i] > 0);
    if (bplan.use) {
      ASSERT_EQ(bplan.parts, backward_parts[i]);
    }
  }
  NKT_REQUIRE_DEVICE();
  for (size_t i = 0; i < shapes.size(); ++i) {
    const ChannelCase& k = shapes[i];
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    const nk::cuda::BatchTilePlan plan = batch_tile_plan(k, c.dtype);
    const nk::cuda::BatchTilePlan bplan = batch_tile_plan(k, c.dtype, 2);
    const bool first = i == 0;
    const bool forward = plan.parts > 1 && i != 2, backward = bplan.use;  // what shape i is for
    const int64_t numel = k.n * k.c * k.s;
    const Buffer x(c.dtype, rng_.normal(numel, 1.0, 3.0)), dyh(c.dtype, rng_.normal(numel));
    const Buffer w(NK_F32, rng_.normal(k.c, 1.0, 0.5)), b(NK_F32, rng_.normal(k.c));
    const Buffer rm0(NK_F32, rng_.normal(k.c, 0.0, 0.1)), rv0(NK_F32, rng_.uniform(k.c, 0.5, 1.5));
    const Buffer mean(NK_F32, rng_.normal(k.c, 1.0, 0.5)),
        invstd(NK_F32, rng_.uniform(k.c, 0.2, 0.5));
    const DeviceBuffer wd(w), bd(b);
    std::vector<Buffer> forms[kSplitForms], grads[kSplitForms];
    for (int form = 0; form < kSplitForms; ++form) {
      SCOPED_TRACE(kSplitFormNames[form]);
      const ScopedSplitForm knobs(form);
      const bool against_cpu = form < 2;  // the third form: its bytes against the first's
      if (forward) {
        if (against_cpu && first) {
          check_one_read_forward(k);
          forward_bytes_across_heads(k, nk_norm_params_default(), x, wd, bd,
                                     int64_t{plan.part_runs} * plan.seg_packs * 16);
        } else if (against_cpu) {
          check_forward(k, nk_norm_params_default(), 2);
        }
        const int64_t tracked0 = 5;
        Buffer tracked_host(NK_F32, 2);
        std::memcpy(tracked_host.data(), &tracked0, 8);
        DeviceBuffer xd(x), y(c.dtype, numel), sm(NK_F32, k.c), si(NK_F32, k.c), rm(rm0), rv(rv0),
            tracked(tracked_host);
        ASSERT_EQ(channel_forward(gpu_, k, c.dtype, nk_norm_params_default(), xd.data(), wd.f32(),
                                  bd.f32(), rm.f32(), rv.f32(),
                                  reinterpret_cast<int64_t*>(tracked.data()), y.data(), sm.f32(),
                                  si.f32()),
                  NK_SUCCESS)
            << nk_last_error();
        forms[form] = {y.download(),  sm.download(), si.download(),
                       rm.download(), rv.download(), tracked.download()};
      }
      if (backward) {
        if (against_cpu) check_backward(k, NK_TRAINING);
        if (against_cpu && first) {
          check_backward(k, NK_TRAINING, 1);
          backward_bytes_across_heads(k, x, wd, int64_t{bplan.part_runs} * bplan.seg_packs * 16);
        }
        DeviceBuffer xd(x), dyd(dyh), md(mean), sd(invstd), dx(c.dtype, numel), dw(NK_F32, k.c),
            db(NK_F32, k.c);
        nk_norm_params p = nk_norm_params_default();
        p.phase = NK_TRAINING;
        ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, xd.data(), dyd.data(), wd.f32(), nullptr,
                                   nullptr, md.f32(), sd.f32(), dx.data(), dw.f32(), db.f32()),
                  NK_SUCCESS)
            << nk_last_error();
        grads[form] = {dx.download(), dw.download(), db.download()};
      }
    }
    if (forward) {
      const char* names[] = {"y",           "save_mean",          "save_invstd", "running_mean",
                             "running_var", "num_batches_tracked"};
      for (int form = 1; form < kSplitForms; ++form) {
        for (size_t j = 0; j < 6; ++j) {
          EXPECT_EQ(forms[form][j].bytes(), forms[0][j].bytes())
              << names[j] << ": " << kSplitFormNames[form] << " differs";
        }
      }
      int64_t tracked = 0;
      std::memcpy(&tracked, forms[0][5].data(), 8);
      EXPECT_EQ(tracked, 6);
    }
    if (backward) {
      const char* grad_names[] = {"dx", "dweight", "dbias"};
      for (int form = 1; form < kSplitForms; ++form) {
        for (size_t j = 0; j < 3; ++j) {
          EXPECT_EQ(grads[form][j].bytes(), grads[0][j].bytes())
              << grad_names[j] << ": " << kSplitFormNames[form] << " differs";
        }
      }
    }
  }
}

// NHWC channels whose period L = lcm(C, pack) is wider than a block of packs (C = 514: 257 packs
// in 16 bits and fp32; C = 1001: 1001 packs), walked in tiles with a partial per occurrence of a
// channel in the period: training forward with running statistics and training backward against
// the CPU, aligned and misaligned; then misaligned pointers (single elements of the same rows and
// partials) give the aligned call's bytes of y, the saved statistics, dx, dweight and dbias.
TEST_P(GpuChannelNorm, WidePeriodsMatchCpuWhateverThePointers) {
  const Case c = GetParam();
  if (c.layout != NK_NHWC || !c.affine) GTEST_SKIP() << "NHWC periods, with weight and bias";
  const bool group = c.family == Family::kGroup;
  const ChannelCase list[] = {{c.family, 4, 514, 32, c.layout, group ? 2 : 1},
                              {c.family, 2, 1001, 16, c.layout, group ? 7 : 1}};
  for (const ChannelCase& k : list) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    const nk::ChannelNorm kind = c.family == Family::kBatch      ? nk::ChannelNorm::kBatch
                                 : c.family == Family::kInstance ? nk::ChannelNorm::kInstance
                                                                 : nk::ChannelNorm::kGroup;
    const nk::ChannelShape shape{kind, k.n, k.c, k.s, k.layout, c.dtype, k.groups};
    const int elem = static_cast<int>(elem_size(c.dtype));
    ASSERT_TRUE(nk::cuda::plan_channel_norm(shape, elem, true).period_split);
    ASSERT_FALSE(takes_group_tiles(k, c.dtype));
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : list) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    const nk_norm_params p = nk_norm_params_default();
    check_forward(k, p, 2);
    check_forward(k, p, 1, true, 0.5, 2.0, 1);
    check_backward(k, NK_TRAINING);
    check_backward(k, NK_TRAINING, 1);
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    const Buffer x(c.dtype, rng_.normal(numel, 1.0, 3.0)), dy(c.dtype, rng_.normal(numel));
    const DeviceBuffer wd(Buffer(NK_F32, rng_.normal(k.c, 1.0, 0.5)));
    const DeviceBuffer bd(Buffer(NK_F32, rng_.normal(k.c)));
    std::vector<Buffer> outs[2];
    for (int64_t misalign : {0, 1}) {
      DeviceBuffer xd(x, misalign), dyd(dy, misalign), y(c.dtype, numel, misalign);
      DeviceBuffer sm(NK_F32, stats), si(NK_F32, stats), dx(c.dtype, numel, misalign);
      DeviceBuffer dw(NK_F32, k.c), db(NK_F32, k.c);
      ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, xd.data(), wd.f32(), bd.f32(), nullptr,
                                nullptr, nullptr, y.data(), sm.f32(), si.f32()),
                NK_SUCCESS)
          << nk_last_error();
      ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, xd.data(), dyd.data(), wd.f32(), nullptr,
                                 nullptr, sm.f32(), si.f32(), dx.data(), dw.f32(), db.f32()),
                NK_SUCCESS)
          << nk_last_error();
      for (const DeviceBuffer* d : {&y, &sm, &si, &dx, &dw, &db})
        outs[misalign].push_back(d->download());
    }
    const char* names[] = {"y", "save_mean", "save_invstd", "dx", "dweight", "dbias"};
    for (size_t i = 0; i < outs[0].size(); ++i)
      EXPECT_EQ(outs[1][i].bytes(), outs[0][i].bytes()) << names[i] << ": misaligned differs";
  }
}

// y == x and dx == dy give the bytes of separate buffers.
TEST_P(GpuChannelNorm, InPlaceMatchesOutOfPlace) {
  NKT_REQUIRE_DEVICE();
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const Case c = GetParam();
  for (const ChannelCase& k : shapes(c)) {
    if (k.n * k.c * k.s > 300000) continue;
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    const nk_norm_params p = nk_norm_params_default();
    const Buffer xh(c.dtype, rng_.normal(numel, 1, 2)), dyh(c.dtype, rng_.normal(numel));
    DeviceBuffer x(xh), dy(dyh), y(c.dtype, numel), dx(c.dtype, numel), m(NK_F32, stats),
        s(NK_F32, stats);
    ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, x.data(), nullptr, nullptr, nullptr, nullptr,
                              nullptr, y.data(), m.f32(), s.f32()),
              NK_SUCCESS);
    DeviceBuffer inplace(xh);
    ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, inplace.data(), nullptr, nullptr, nullptr,
                              nullptr, nullptr, inplace.data(), nullptr, nullptr),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(inplace.download().bytes(), y.download().bytes()) << "forward with y == x";
    ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, x.data(), dy.data(), nullptr, nullptr, nullptr,
                               m.f32(), s.f32(), dx.data(), nullptr, nullptr),
              NK_SUCCESS);
    DeviceBuffer dinplace(dyh);
    ASSERT_EQ(channel_backward(gpu_, k, c.dtype, p, x.data(), dinplace.data(), nullptr, nullptr,
                               nullptr, m.f32(), s.f32(), dinplace.data(), nullptr, nullptr),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(dinplace.download().bytes(), dx.download().bytes()) << "backward with dx == dy";
  }
}

// Each gradient output alone (and none) writes only itself, with the bytes of the full call; in
// both phases. Two shapes: the set's second, and 4 x 16 x 49, whose instance and group
// norm training backward with dx reads x and dy once in row groups (dweight and dbias must not
// change bits when dx is left out).
TEST_P(GpuChannelNorm, EachGradientOutputIsOptional) {
  NKT_REQUIRE_DEVICE();
  if (skip_in_reduced_set(GetParam())) GTEST_SKIP() << kStructuralSkip;
  const Case c = GetParam();
  const ChannelCase row_groups{c.family, 4, 16, 49, c.layout, c.family == Family::kGroup ? 4 : 1};
  for (const ChannelCase& k : {shapes(c)[1], row_groups}) {
    SCOPED_TRACE(testing::Message() << "shape " << k.n << " x " << k.c << " x " << k.s);
    each_gradient_output_alone(c, k);
  }
}

// Instance norm shapes in NCHW whose running update after the one-read kernel (rows in registers,
// S = 2) spreads over blocks of 32 channels (above kRunningOneBlockRows rows): C = 20 (one block,
// 20 lanes) with N = 827 (not a multiple of the 8 warps), and C = 300 (10 blocks, the last of 12
// channels) with N = 61.
std::vector<ChannelCase> running_spread_shapes() {
  return {{Family::kInstance, 827, 20, 2, NK_NCHW, 1}, {Family::kInstance, 61, 300, 2, NK_NCHW, 1}};
}

// Instance norm's running update spread over blocks (running_spread_shapes): the running buffers
// and the counter against the CPU over three steps, exponential and cumulative, and y and the
// saved statistics with them; bf16 and fp32 with weight and bias (the update does not depend on
// the dtype otherwise).
TEST_P(GpuChannelNorm, InstanceRunningOverBlocksMatchesCpu) {
  const Case c = GetParam();
  if (c.family != Family::kInstance || c.layout != NK_NCHW) {
    GTEST_SKIP() << "instance norm's running update after the one-read kernels (NCHW)";
  }
  if (c.dtype == NK_F16 || !c.affine) GTEST_SKIP() << "checked in bf16 and fp32 with the affine";
  for (const ChannelCase& k : running_spread_shapes()) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c);
    ASSERT_TRUE(takes_short_rows(k, c.dtype));
    ASSERT_GT(k.n * k.c, nk::cuda::kRunningOneBlockRows);
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : running_spread_shapes()) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c);
    nk_norm_params p = nk_norm_params_default();
    check_forward(k, p, 3);
    p.momentum_mode = NK_MOMENTUM_CUMULATIVE;
    check_forward(k, p, 3);
  }
}

// The device rule for num_batches_tracked (normkit.h), batch and instance norm in training: a
// counter outside [0, INT64_MAX - 1] is left as it is and so are running_mean and running_var (both
// momentum modes; the CPU backend refuses such a counter instead); y and the saved statistics are
// those of a call without running buffers. INT64_MAX - 1 advances to INT64_MAX and updates the
// running statistics as the CPU backend does. Instance norm in NCHW also at a shape whose running
// update after the one-read kernel spreads over blocks (running_spread_shapes); NHWC also at a
// shape of the tiles of one sample, whose kernel blends the running statistics itself; batch norm
// in NCHW at a shape of its tiles of a channel, which blend them likewise.
TEST_P(GpuChannelNorm, CounterThatCannotAdvanceLeavesRunningStatistics) {
  const Case c = GetParam();
  if (c.family == Family::kGroup) GTEST_SKIP() << "group norm has no running statistics";
  std::vector<ChannelCase> list{shapes(c)[0]};
  // Instance norm's update spread over blocks after a one-read kernel (one shape); the blend in the
  // NHWC tiles' kernel of one sample (batch norm; instance norm with N = 1).
  if (c.family == Family::kInstance && c.layout == NK_NCHW) {
    list.push_back(running_spread_shapes()[1]);
  }
  if (c.layout == NK_NHWC) {
    const ChannelCase one = instance_tile_shapes(c.family, c.dtype)[1];
    ASSERT_TRUE(takes_instance_tiles(one, c.dtype));
    list.push_back(one);
  }
  if (c.layout == NK_NCHW && c.family == Family::kBatch) {
    list.push_back(batch_tile_shapes()[0]);
    ASSERT_TRUE(takes_batch_tiles(list.back(), c.dtype));
  }
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : list) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    const std::vector<float> w = to_f32(rng_.normal(k.c, 1.0, 0.5)), b = to_f32(rng_.normal(k.c));
    const float* wh = c.affine ? w.data() : nullptr;
    const float* bh = c.affine ? b.data() : nullptr;
    const DeviceBuffer wd(Buffer(NK_F32, f64(w))), bd(Buffer(NK_F32, f64(b)));
    auto counter_buffer = [](int64_t value) {
      Buffer host(NK_F32, 2);
      std::memcpy(host.data(), &value, 8);
      return DeviceBuffer(host);
    };
    auto counter_of = [](const DeviceBuffer& d) {
      int64_t value = 0;
      std::memcpy(&value, d.download().data(), 8);
      return value;
    };
    for (nk_momentum_mode mode : {NK_MOMENTUM_EXPONENTIAL, NK_MOMENTUM_CUMULATIVE}) {
      nk_norm_params p = nk_norm_params_default();
      p.momentum_mode = mode;
      const Buffer x(c.dtype, rng_.normal(numel, 0.5, 2.0));
      Buffer y_ref(c.dtype, numel);
      std::vector<float> mean_ref(stats), invstd_ref(stats);
      ASSERT_EQ(channel_forward(cpu_, k, c.dtype, p, x.data(), wh, bh, nullptr, nullptr, nullptr,
                                y_ref.data(), mean_ref.data(), invstd_ref.data()),
                NK_SUCCESS)
          << nk_last_error();
      const DeviceBuffer xd(x);
      for (int64_t bad :
           {int64_t{-1}, int64_t{-2}, rng_.integer(INT64_MIN, -3), INT64_MIN, INT64_MAX}) {
        SCOPED_TRACE(testing::Message() << "mode " << mode << " counter " << bad);
        const Buffer rm_host(NK_F32, rng_.normal(k.c)), rv_host(NK_F32, rng_.uniform(k.c, 0.5, 2));
        const DeviceBuffer rm(rm_host), rv(rv_host), tracked = counter_buffer(bad);
        DeviceBuffer y(c.dtype, numel), sm(NK_F32, stats), si(NK_F32, stats);
        ASSERT_EQ(
            channel_forward(gpu_, k, c.dtype, p, xd.data(), c.affine ? wd.f32() : nullptr,
                            c.affine ? bd.f32() : nullptr, rm.f32(), rv.f32(),
                            static_cast<int64_t*>(tracked.data()), y.data(), sm.f32(), si.f32()),
            NK_SUCCESS)
            << nk_last_error();
        EXPECT_EQ(rm.download().bytes(), rm_host.bytes()) << "running_mean written";
        EXPECT_EQ(rv.download().bytes(), rv_host.bytes()) << "running_var written";
        EXPECT_EQ(counter_of(tracked), bad);
        expect_close(y.download().values(), y_ref.values(), gpu_tolerance(c.dtype), "y");
        expect_close(sm.download().values(), f64(mean_ref), {2e-6 * 2.5, 1e-6}, "save_mean");
        expect_close(si.download().values(), f64(invstd_ref), {0, 2e-5}, "save_invstd");
      }
      // The last count that can advance.
      std::vector<float> rm_cpu = to_f32(rng_.normal(k.c)),
                         rv_cpu = to_f32(rng_.uniform(k.c, 0.5, 2));
      const DeviceBuffer rm(Buffer(NK_F32, f64(rm_cpu))), rv(Buffer(NK_F32, f64(rv_cpu)));
      const DeviceBuffer tracked = counter_buffer(INT64_MAX - 1);
      int64_t tracked_cpu = INT64_MAX - 1;
      ASSERT_EQ(channel_forward(cpu_, k, c.dtype, p, x.data(), wh, bh, rm_cpu.data(), rv_cpu.data(),
                                &tracked_cpu, y_ref.data(), nullptr, nullptr),
                NK_SUCCESS)
          << nk_last_error();
      DeviceBuffer y(c.dtype, numel);
      ASSERT_EQ(channel_forward(gpu_, k, c.dtype, p, xd.data(), c.affine ? wd.f32() : nullptr,
                                c.affine ? bd.f32() : nullptr, rm.f32(), rv.f32(),
                                static_cast<int64_t*>(tracked.data()), y.data(), nullptr, nullptr),
                NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(counter_of(tracked), INT64_MAX);
      EXPECT_EQ(tracked_cpu, INT64_MAX);
      expect_close(rm.download().values(), f64(rm_cpu), {1e-5, 1e-5}, "running_mean");
      expect_close(rv.download().values(), f64(rv_cpu), {1e-5, 2e-5}, "running_var");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, GpuChannelNorm, testing::ValuesIn(all_cases()), case_name);

// |mean| >> std in fp32: the per-statistic shift keeps the statistics accurate.
class GpuChannelNormLargeOffset : public GpuChannelNorm {};

TEST_P(GpuChannelNormLargeOffset, MatchesCpu) {
  NKT_REQUIRE_DEVICE();
  for (const ChannelCase& k : shapes(GetParam())) {
    SCOPED_TRACE(testing::Message() << "n=" << k.n << " c=" << k.c << " s=" << k.s);
    check_forward(k, nk_norm_params_default(), 1, true, 1e4, 1.0);
  }
}

std::vector<Case> f32_cases() {
  std::vector<Case> out;
  for (const Case& c : all_cases())
    if (c.dtype == NK_F32) out.push_back(c);
  return out;
}
INSTANTIATE_TEST_SUITE_P(F32, GpuChannelNormLargeOffset, testing::ValuesIn(f32_cases()), case_name);

#if NORMKIT_TEST_WITH_CUDA

class GpuChannelNormWhole : public GpuTest {};

// A training step (forward with running statistics and the counter, then backward) captured in a
// CUDA graph and replayed three times equals three eager steps, bit for bit.
// The workspace bounds normkit.h states: batch norm's grow with C, never with N or S (the
// partials are capped per channel, or in all for small C), and no size depends on the device (a
// context sized for one SM asks for the same bytes).
TEST_F(GpuChannelNormWhole, WorkspaceBoundedByChannels) {
  nk_context one_sm = context_with_sm_limit(1);
  ASSERT_NE(one_sm, nullptr);
  nk_norm_params p = nk_norm_params_default();
  for (nk_layout layout : {NK_NCHW, NK_NHWC}) {
    for (int64_t c : {int64_t{1}, int64_t{3}, int64_t{64}, int64_t{2048}}) {
      for (int64_t s : {int64_t{1}, int64_t{49}, int64_t{3136}}) {
        for (int64_t n : {int64_t{2}, int64_t{256}, int64_t{1} << 20}) {
          SCOPED_TRACE(testing::Message()
                       << "layout " << layout << " n=" << n << " c=" << c << " s=" << s);
          const nk_act_desc d{n, c, s, layout, NK_BF16};
          size_t fwd = 0, bwd = 0, fwd_one = 0, bwd_one = 0;
          p.phase = NK_TRAINING;
          ASSERT_EQ(nk_batch_norm_forward_workspace_size(gpu_, &d, &p, &fwd), NK_SUCCESS);
          ASSERT_EQ(nk_batch_norm_backward_workspace_size(gpu_, &d, &p, &bwd), NK_SUCCESS);
          ASSERT_EQ(nk_batch_norm_forward_workspace_size(one_sm, &d, &p, &fwd_one), NK_SUCCESS);
          ASSERT_EQ(nk_batch_norm_backward_workspace_size(one_sm, &d, &p, &bwd_one), NK_SUCCESS);
          EXPECT_LE(fwd, static_cast<size_t>(2060 * std::max<int64_t>(c, 1024) + 1024));
          EXPECT_LE(bwd, static_cast<size_t>(1040 * std::max<int64_t>(c, 1024) + 512));
          // One read of x (a tile or a channel a block) needs at most its parts' statistics;
          // the walk at least a partial and 3 floats a channel.
          const nk::ChannelShape shape{nk::ChannelNorm::kBatch, n, c, s, layout, NK_BF16, 1};
          const nk::cuda::GroupTilePlan tiles =
              nk::cuda::plan_instance_tiles(nk::cuda::instance_tile_shape(shape), 2);
          const nk::cuda::BatchTilePlan batch_tiles = nk::cuda::plan_batch_tiles(shape, 2);
          if (tiles.use || batch_tiles.use) {
            // 8 * (parts + 1) * C bytes, parts <= 16
            EXPECT_LE(fwd, static_cast<size_t>(136 * c + 255)) << "one read of x";
            const bool split = tiles.use ? tiles.parts > 1 : batch_tiles.parts > 1;
            EXPECT_EQ(fwd > 0, split) << "only split tiles need any";
          } else {
            EXPECT_GE(fwd, static_cast<size_t>(28 * c)) << "less than one partial and 3 floats";
          }
          EXPECT_EQ(fwd, fwd_one);
          EXPECT_EQ(bwd, bwd_one);
          if (c * s < 2) continue;  // a group needs two values
          const nk_act_desc group_desc{n, c, s, layout, NK_BF16};
          size_t gfwd = 0, gbwd = 0;
          ASSERT_EQ(nk_group_norm_forward_workspace_size(gpu_, &group_desc, 1, &gfwd), NK_SUCCESS);
          ASSERT_EQ(nk_group_norm_backward_workspace_size(gpu_, &group_desc, 1, &gbwd), NK_SUCCESS);
          EXPECT_LE(gfwd, static_cast<size_t>(2060 * std::max<int64_t>(n * c, 1024) + 1024));
          EXPECT_LE(gbwd, static_cast<size_t>(1040 * std::max<int64_t>(n * c, 1024) + 512));
        }
      }
    }
  }
  nk_context_destroy(one_sm);
}

TEST_F(GpuChannelNormWhole, CapturedTrainingStepReplays) {
  if (const std::string why = graphs_unsupported_reason(); !why.empty()) GTEST_SKIP() << why;
  const ChannelCase k{Family::kBatch, 8, 64, 28 * 28, NK_NHWC};
  const int64_t numel = k.n * k.c * k.s;
  const nk_act_desc d{k.n, k.c, k.s, k.layout, NK_BF16};
  nk_norm_params p = nk_norm_params_default();
  p.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  struct Set {
    DeviceBuffer x, dy, y, dx, rm, rv, tracked, mean, invstd, dw, db;
  };
  auto make = [&](const Buffer& xh, const Buffer& dyh) {
    Set s{DeviceBuffer(xh),
          DeviceBuffer(dyh),
          DeviceBuffer(NK_BF16, numel),
          DeviceBuffer(NK_BF16, numel),
          DeviceBuffer(Buffer(NK_F32, std::vector<double>(k.c, 0.0))),
          DeviceBuffer(Buffer(NK_F32, std::vector<double>(k.c, 1.0))),
          DeviceBuffer(Buffer(NK_F32, std::vector<double>(2, 0.0))),
          DeviceBuffer(NK_F32, k.c),
          DeviceBuffer(NK_F32, k.c),
          DeviceBuffer(NK_F32, k.c),
          DeviceBuffer(NK_F32, k.c)};
    return s;
  };
  const Buffer xh(NK_BF16, rng_.normal(numel, 1, 2)), dyh(NK_BF16, rng_.normal(numel));
  Set eager = make(xh, dyh), graphed = make(xh, dyh);
  auto step = [&](Set& s) {
    ASSERT_EQ(nk_batch_norm_forward(gpu_, &d, &p, s.x.data(), nullptr, nullptr, s.rm.f32(),
                                    s.rv.f32(), reinterpret_cast<int64_t*>(s.tracked.data()),
                                    s.y.data(), s.mean.f32(), s.invstd.f32()),
              NK_SUCCESS)
        << nk_last_error();
    ASSERT_EQ(
        nk_batch_norm_backward(gpu_, &d, &p, s.x.data(), s.dy.data(), nullptr, nullptr, nullptr,
                               s.mean.f32(), s.invstd.f32(), s.dx.data(), s.dw.f32(), s.db.f32()),
        NK_SUCCESS)
        << nk_last_error();
  };
  size_t fwd = 0, bwd = 0;
  ASSERT_EQ(nk_batch_norm_forward_workspace_size(gpu_, &d, &p, &fwd), NK_SUCCESS);
  ASSERT_EQ(nk_batch_norm_backward_workspace_size(gpu_, &d, &p, &bwd), NK_SUCCESS);
  const size_t bytes = std::max(fwd, bwd);
  void* workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&workspace, bytes), cudaSuccess);
  ASSERT_EQ(nk_context_set_workspace(gpu_, workspace, bytes), NK_SUCCESS);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(nk_context_set_stream(gpu_, stream), NK_SUCCESS);
  for (int i = 0; i < 3; ++i) step(eager);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  step(graphed);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(graphed.y.download().bytes(), eager.y.download().bytes());
  EXPECT_EQ(graphed.dx.download().bytes(), eager.dx.download().bytes());
  EXPECT_EQ(graphed.rm.download().bytes(), eager.rm.download().bytes());
  EXPECT_EQ(graphed.rv.download().bytes(), eager.rv.download().bytes());
  EXPECT_EQ(graphed.tracked.download().bytes(), eager.tracked.download().bytes());
  EXPECT_EQ(graphed.dw.download().bytes(), eager.dw.download().bytes());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  nk_context_set_stream(gpu_, nullptr);
  nk_context_set_workspace(gpu_, nullptr, 0);
  cudaStreamDestroy(stream);
  cudaFree(workspace);
}

// Training steps whose calls read what the calls before them wrote, queued back to back, give the
// bytes of the same steps with the device synchronized after every call. On sm_90 each kernel is
// launched while the one before it still runs and waits for it
// (kernels/common/dependent_launch.cuh): a forward reads the y of the forward before it and
// overwrites the saved statistics the backward before it reads; a backward reads the saved
// statistics just written and the dx of the backward before it. One shape per path (the walk,
// batch, instance and group tiles, resident rows, short rows); weights and biases differ per step
// and channel, so a stale read changes the bytes.
TEST_F(GpuChannelNormWhole, BackToBackStepsEqualSynchronizedSteps) {
  struct Shape {
    ChannelCase k;
    nk_dtype dtype;
  };
  const std::vector<Shape> shapes =
      reduced_gpu_tests()
          ? std::vector<Shape>{{{Family::kBatch, 4, 16, 49, NK_NHWC}, NK_BF16},
                               {{Family::kInstance, 2, 16, 64, NK_NCHW}, NK_F32},
                               {{Family::kGroup, 2, 16, 32, NK_NHWC, 4}, NK_BF16}}
          : std::vector<Shape>{{{Family::kBatch, 32, 64, 56 * 56, NK_NHWC}, NK_BF16},
                               {{Family::kBatch, 32, 256, 14 * 14, NK_NCHW}, NK_BF16},
                               {{Family::kBatch, 32, 512, 7 * 7, NK_NHWC}, NK_BF16},
                               {{Family::kBatch, 8, 37, 7, NK_NCHW}, NK_F32},
                               {{Family::kInstance, 8, 128, 128 * 128, NK_NHWC}, NK_BF16},
                               {{Family::kGroup, 8, 320, 16 * 16, NK_NHWC, 32}, NK_BF16},
                               {{Family::kGroup, 2, 320, 64 * 64, NK_NCHW, 32}, NK_F32}};
  constexpr int kSteps = 6;
  for (const Shape& shape : shapes) {
    const ChannelCase& k = shape.k;
    SCOPED_TRACE(testing::Message() << name(k.family) << " n=" << k.n << " c=" << k.c
                                    << " s=" << k.s << (k.layout == NK_NCHW ? " NCHW" : " NHWC"));
    const bool group = k.family == Family::kGroup;
    const int64_t numel = k.n * k.c * k.s, stats = num_stats(k);
    const Buffer x0(shape.dtype, rng_.normal(numel, 1, 2)), dy0(shape.dtype, rng_.normal(numel));
    std::vector<DeviceBuffer> weight, bias;
    for (int i = 0; i < kSteps; ++i) {
      weight.emplace_back(Buffer(NK_F32, rng_.uniform(k.c, 0.5, 2)));
      bias.emplace_back(Buffer(NK_F32, rng_.uniform(k.c, -3, 3)));
    }
    nk_norm_params p = nk_norm_params_default();
    auto run = [&](bool synchronize_each) {
      DeviceBuffer x(x0), y(shape.dtype, numel), dy(dy0), dx(shape.dtype, numel);
      DeviceBuffer rm(Buffer(NK_F32, std::vector<double>(k.c, 0.0)));
      DeviceBuffer rv(Buffer(NK_F32, std::vector<double>(k.c, 1.0)));
      DeviceBuffer tracked(Buffer(NK_F32, std::vector<double>(2, 0.0)));  // one int64, zeroed
      DeviceBuffer mean(NK_F32, stats), invstd(NK_F32, stats), dw(NK_F32, k.c), db(NK_F32, k.c);
      auto* counter = group ? nullptr : reinterpret_cast<int64_t*>(tracked.data());
      for (int i = 0; i < kSteps; ++i) {
        EXPECT_EQ(channel_forward(gpu_, k, shape.dtype, p, x.data(), weight[i].f32(), bias[i].f32(),
                                  group ? nullptr : rm.f32(), group ? nullptr : rv.f32(), counter,
                                  y.data(), mean.f32(), invstd.f32()),
                  NK_SUCCESS)
            << nk_last_error();
        if (synchronize_each) synchronize();
        EXPECT_EQ(
            channel_backward(gpu_, k, shape.dtype, p, x.data(), dy.data(), weight[i].f32(), nullptr,
                             nullptr, mean.f32(), invstd.f32(), dx.data(), dw.f32(), db.f32()),
            NK_SUCCESS)
            << nk_last_error();
        if (synchronize_each) synchronize();
        std::swap(x, y);  // the next forward normalizes this y, the next backward takes this dx
        std::swap(dy, dx);
      }
      synchronize();
      std::vector<std::vector<unsigned char>> out;
      for (const DeviceBuffer* b : {&x, &dy, &mean, &invstd, &dw, &db, &rm, &rv, &tracked}) {
        out.push_back(b->download().bytes());
      }
      return out;
    };
    const auto queued = run(false), synchronized = run(true);
    const char* names[] = {"y",     "dx",           "save_mean",   "save_invstd",        "dweight",
                           "dbias", "running_mean", "running_var", "num_batches_tracked"};
    for (size_t i = 0; i < queued.size(); ++i) {
      EXPECT_EQ(queued[i], synchronized[i]) << names[i] << " after " << kSteps << " steps";
    }
    // The steps did what they say: every (n, c) row of instance norm and every channel of batch
    // norm has mean 0 before the affine, so the last y's channel means are the last biases (group
    // norm's are not: its statistic spans channels).
    if (group) continue;
    Buffer last_y(shape.dtype, numel);
    std::memcpy(last_y.data(), queued[0].data(), queued[0].size());
    const Buffer last_bias = bias[kSteps - 1].download();
    const double bound = shape.dtype == NK_F32 ? 1e-4 : 0.05;
    for (int64_t c = 0; c < k.c; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < k.n; ++n) {
        for (int64_t i = 0; i < k.s; ++i) sum += last_y.get(act_index(k, n, c, i));
      }
      ASSERT_NEAR(sum / static_cast<double>(k.n * k.s), last_bias.get(c), bound) << "channel " << c;
    }
  }
}

// More than 2^31 elements (bf16 batch norm, NHWC, 4 channels): the data tile a random pattern
// whose period is not a multiple of C, so every channel's exact statistics are computed here in
// fp64 from the pattern; y is checked around element 2^31 and at the end.
TEST_F(GpuChannelNormWhole, MoreThanTwoToThe31Elements) {
  if (reduced_gpu_tests())
    GTEST_SKIP() << "not in the reduced set: it moves more than 2^31 elements";
  const int64_t c = 4, s = 1024, n = ((int64_t{1} << 31) / (c * s)) + 3, numel = n * c * s;
  size_t free_bytes = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  if (free_bytes < static_cast<size_t>(numel) * 4 + (size_t{2} << 30)) {
    GTEST_SKIP() << "needs " << (numel * 4 >> 30) << " GiB of free device memory";
  }
  const int64_t period = 1000003;
  const Buffer pattern(NK_BF16, rng_.normal(period, 3.0, 2.0));
  DeviceBuffer x(NK_BF16, numel), y(NK_BF16, numel), mean(NK_F32, c), invstd(NK_F32, c);
  for (int64_t at = 0; at < numel; at += period) {
    const size_t count = static_cast<size_t>(std::min(period, numel - at)) * 2;
    ASSERT_EQ(cudaMemcpy(static_cast<char*>(x.data()) + at * 2, pattern.data(), count,
                         cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  const nk_act_desc d{n, c, s, NK_NHWC, NK_BF16};
  const nk_norm_params p = nk_norm_params_default();
  ASSERT_EQ(nk_batch_norm_forward(gpu_, &d, &p, x.data(), nullptr, nullptr, nullptr, nullptr,
                                  nullptr, y.data(), mean.f32(), invstd.f32()),
            NK_SUCCESS)
      << nk_last_error();
  synchronize();
  // Exact per-channel statistics: element i is pattern[i % period] in channel i % c.
  const std::vector<double> pv = pattern.values();
  std::vector<double> sum(c, 0.0), sq(c, 0.0);
  for (int64_t i = 0; i < numel; ++i) sum[i % c] += pv[i % period];
  const double count = static_cast<double>(numel / c);
  for (int64_t i = 0; i < numel; ++i) {
    const double dv = pv[i % period] - sum[i % c] / count;
    sq[i % c] += dv * dv;
  }
  const Buffer m = mean.download(), iv = invstd.download();
  for (int64_t ch = 0; ch < c; ++ch) {
    EXPECT_NEAR(m.get(ch), sum[ch] / count, 1e-4) << "channel " << ch;
    EXPECT_NEAR(iv.get(ch), 1 / std::sqrt(sq[ch] / count + 1e-5), 1e-4) << "channel " << ch;
  }
  for (int64_t at : {(int64_t{1} << 31) - 8, int64_t{1} << 31, numel - 8}) {
    Buffer got(NK_BF16, 8);
    ASSERT_EQ(
        cudaMemcpy(got.data(), static_cast<char*>(y.data()) + at * 2, 16, cudaMemcpyDeviceToHost),
        cudaSuccess);
    for (int64_t i = 0; i < 8; ++i) {
      const int64_t ch = (at + i) % c;
      const double expected =
          (pv[(at + i) % period] - sum[ch] / count) / std::sqrt(sq[ch] / count + 1e-5);
      EXPECT_NEAR(got.get(i), expected, 0.02 * (1 + std::abs(expected))) << "element " << at + i;
    }
  }
}

#endif  // NORMKIT_TEST_WITH_CUDA

}  // namespace
}  // namespace nkt
