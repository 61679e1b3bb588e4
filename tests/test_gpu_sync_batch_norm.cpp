// Synchronized batch norm on the CUDA backend, checked against the CPU backend on fresh random
// data.
//  - The two-phase API with K ranks simulated on one device (K = 1, 2, 3, 5; uneven shards, one of
//    a single sample, and with five ranks one rank without samples): every rank's local statistics
//    written straight into its slot of the arrays the merge reads, the merge, the global forward,
//    the local sums, their sum over ranks in rank order, the global backward. y, the saved and the
//    running statistics over several steps (momentum, cumulative average, Keras' convention), dx
//    and the summed sums (dbias, dweight) equal the whole batch through the CPU backend's training
//    forward and backward; the merge equals the CPU backend's merge of the same partials; every
//    rank gets the same bits; repeated steps and a step captured in a CUDA graph repeat bit for
//    bit; both layouts, every dtype, data with |mean| >> std.
//  - A rank without samples (N = 0, NULL activations) in every phase of the two-phase API.
//  - The device's rules for counts it cannot check (normkit.h): a negative count, all counts 0, a
//    global count of 1, 0 or -1 in the global forward, below 1 in the global backward, a
//    num_batches_tracked that cannot advance (negative or INT64_MAX; the NCCL path too).
//  - The errors of the CUDA path, each writing nothing.
//  - The NCCL path with a one-rank communicator (libnccl.so.2 opened with dlopen, not linked):
//    the whole batch's training forward and backward, an empty shard, a captured forward and
//    backward, the errors. Skipped, with the reason, where NCCL or a second device is missing.
// Skipped, with the reason, without a CUDA device.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#if NORMKIT_TEST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif
#if NORMKIT_TEST_WITH_NCCL
#include <dlfcn.h>
#include <nccl.h>
#endif

#include "gpu_support.hpp"
#include "test_support.hpp"

namespace nkt {
namespace {

// ---- bounds -----------------------------------------------------------------------------------
// y, dx: fp32 device math against the CPU's fp64, as in test_gpu_channel_norms.cpp: a few ulps of
// the largest term for fp32, and for fp16 / bf16 two roundings of the output.
Tolerance gpu_tolerance(nk_dtype dtype) {
  const Tolerance t = output_tolerance(dtype);
  return dtype == NK_F32 ? Tolerance{2e-5, 2e-5} : Tolerance{2 * t.atol, 2 * t.rtol};
}

// The exchange format holds each shard's mean in fp32, so with |mean| >> std the global mean is
// only known to about one fp32 ulp of |mean| (the shard means and the merged mean are each
// rounded once), and the variance to a relative 2 * ulp * |shard mean - global mean| / var. The
// bounds then widen by what these errors do to each output. Zero for ordinary data.
struct Slack {
  double mean = 0.0;  // absolute error of the global mean
  double var = 0.0;   // relative error of the global variance
};

// ---- helpers ----------------------------------------------------------------------------------

std::vector<double> f64(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}
std::vector<float> f32(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// int64 arrays in device memory (a DeviceBuffer of twice as many fp32 elements).
DeviceBuffer int64_buffer(const std::vector<int64_t>& values) {
  Buffer host(NK_F32, 2 * static_cast<int64_t>(values.size()));
  std::memcpy(host.data(), values.data(), values.size() * sizeof(int64_t));
  return DeviceBuffer(host);
}
int64_t* i64(const DeviceBuffer& d) { return static_cast<int64_t*>(d.data()); }
std::vector<int64_t> int64_values(const DeviceBuffer& d, size_t count) {
  const Buffer host = d.download();
  std::vector<int64_t> out(count);
  std::memcpy(out.data(), host.data(), count * sizeof(int64_t));
  return out;
}
DeviceBuffer filled(int64_t count, double value) {
  return DeviceBuffer(Buffer(NK_F32, std::vector<double>(static_cast<size_t>(count), value)));
}
double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::abs(e));
  return m;
}

// Samples per rank for a batch of n >= 5: uneven, one shard of a single sample, and with five
// ranks one rank without samples (it sends count 0 and makes no other call).
std::vector<int64_t> split(int64_t n, int ranks) {
  switch (ranks) {
    case 1:
      return {n};
    case 2:
      return {1, n - 1};
    case 3: {
      const int64_t a = (n - 1) / 2;
      return {a, 1, n - 1 - a};
    }
    default: {
      const int64_t a = (n - 1) / 3;
      return {a, 1, 0, a, n - 1 - 2 * a};
    }
  }
}

// One global batch split over simulated ranks on one device: its inputs, every rank's outputs,
// statistics and running buffers, and the exchange arrays laid out as the merge reads them
// (counts[r], means[r*C + c], m2s[r*C + c]; the local sums as sum_dy[r*C + c] followed by
// sum_dy_xhat[(K + r)*C + c]). Each call below runs one phase on every rank in rank order and
// stops at the first failing call.
class World {
 public:
  World(const nk_act_desc& whole_batch, std::vector<int64_t> shard_sizes, bool affine,
        const std::vector<float>& w_host, const std::vector<float>& b_host,
        const std::vector<float>& rm_host, const std::vector<float>& rv_host, int64_t tracked_host)
      : whole(whole_batch),
        shards(std::move(shard_sizes)),
        c(whole.c),
        first(shards.size(), 0),
        x(whole.dtype, numel()),
        dy(whole.dtype, numel()),
        y(whole.dtype, numel()),
        dx(whole.dtype, numel()),
        w(Buffer(NK_F32, f64(w_host))),
        b(Buffer(NK_F32, f64(b_host))),
        counts(NK_F32, 2 * ranks()),
        means(NK_F32, ranks() * c),
        m2s(NK_F32, ranks() * c),
        total(NK_F32, 2),
        gmean(NK_F32, c),
        gm2(NK_F32, c),
        sums(NK_F32, 2 * ranks() * c),
        global_sums(NK_F32, 2 * c),
        affine_(affine) {
    for (int r = 1; r < ranks(); ++r) first[r] = first[r - 1] + shards[r - 1];
    for (int r = 0; r < ranks(); ++r) {
      rm.emplace_back(Buffer(NK_F32, f64(rm_host)));
      rv.emplace_back(Buffer(NK_F32, f64(rv_host)));
      tracked.push_back(int64_buffer({tracked_host}));
      save_mean.emplace_back(NK_F32, c);
      save_invstd.emplace_back(NK_F32, c);
    }
  }

  int ranks() const { return static_cast<int>(shards.size()); }
  int64_t numel() const { return whole.n * whole.c * whole.spatial; }
  bool empty(int r) const { return shards[r] == 0; }
  nk_act_desc shard(int r) const {
    return nk_act_desc{shards[r], whole.c, whole.spatial, whole.layout, whole.dtype};
  }
  // Rank r's part of a whole-batch activation buffer (shards are consecutive along N in either
  // layout).
  void* at(const DeviceBuffer& buf, int r) const {
    return static_cast<char*>(buf.data()) +
           first[r] * whole.c * whole.spatial * static_cast<int64_t>(elem_size(whole.dtype));
  }
  const void* at(const Buffer& buf, int r) const {
    return static_cast<const char*>(buf.data()) +
           first[r] * whole.c * whole.spatial * static_cast<int64_t>(elem_size(whole.dtype));
  }
  const float* weight() const { return affine_ ? w.f32() : nullptr; }
  const float* bias() const { return affine_ ? b.f32() : nullptr; }

  // New inputs; every output and exchange array poisoned (a count -7 where a rank must write one,
  // 0 for an empty rank, whose slots keep their NaN).
  void load(const Buffer& xh, const Buffer& dyh) {
    x.upload(xh);
    dy.upload(dyh);
    for (DeviceBuffer* d : {&y, &dx, &means, &m2s, &gmean, &gm2, &sums, &global_sums}) d->poison();
    for (int r = 0; r < ranks(); ++r) {
      save_mean[r].poison();
      save_invstd[r].poison();
    }
    std::vector<int64_t> initial(shards.size(), -7);
    for (int r = 0; r < ranks(); ++r)
      if (empty(r)) initial[r] = 0;
    counts.upload(int64_host(initial));
    total.upload(int64_host({-7}));
  }

  // Local statistics of every rank into its slots, the merge, the global forward of every rank.
  nk_status forward(nk_context ctx, const nk_norm_params& p) {
    for (int r = 0; r < ranks(); ++r) {
      if (empty(r)) continue;
      const nk_act_desc d = shard(r);
      const nk_status st = nk_batch_norm_local_stats(ctx, &d, at(x, r), i64(counts) + r,
                                                     means.f32() + r * c, m2s.f32() + r * c);
      if (st != NK_SUCCESS) return st;
    }
    const nk_status st = nk_batch_norm_merge_stats(ctx, ranks(), c, i64(counts), means.f32(),
                                                   m2s.f32(), i64(total), gmean.f32(), gm2.f32());
    if (st != NK_SUCCESS) return st;
    for (int r = 0; r < ranks(); ++r) {
      if (empty(r)) continue;  // the two-phase API has no global forward of an empty shard
      const nk_act_desc d = shard(r);
      const nk_status g = nk_batch_norm_forward_global(
          ctx, &d, &p, i64(total), gmean.f32(), gm2.f32(), at(x, r), weight(), bias(), rm[r].f32(),
          rv[r].f32(), i64(tracked[r]), at(y, r), save_mean[r].f32(), save_invstd[r].f32());
      if (g != NK_SUCCESS) return g;
    }
    return NK_SUCCESS;
  }

  // Every rank's sum(dy) and sum(dy * x-hat) into its slots.
  nk_status backward_local(nk_context ctx) {
    for (int r = 0; r < ranks(); ++r) {
      if (empty(r)) continue;
      const nk_act_desc d = shard(r);
      const nk_status st = nk_batch_norm_backward_local_sums(
          ctx, &d, at(x, r), at(dy, r), save_mean[r].f32(), save_invstd[r].f32(),
          sums.f32() + r * c, sums.f32() + (ranks() + r) * c);
      if (st != NK_SUCCESS) return st;
    }
    return NK_SUCCESS;
  }

  // The exchange: the ranks' sums added in rank order in fp64 on the host, rounded to fp32 and
  // uploaded as the global sums; returned too ([sum_dy, sum_dy_xhat]).
  std::vector<float> sum_over_ranks() {
    const Buffer host = sums.download();
    std::vector<double> total_sums(static_cast<size_t>(2 * c), 0.0);
    for (int r = 0; r < ranks(); ++r) {
      if (empty(r)) continue;
      for (int64_t ch = 0; ch < c; ++ch) {
        total_sums[ch] += host.get(r * c + ch);
        total_sums[c + ch] += host.get((ranks() + r) * c + ch);
      }
    }
    const std::vector<float> rounded_sums = f32(total_sums);
    set_global_sums(rounded_sums);
    return rounded_sums;
  }
  void set_global_sums(const std::vector<float>& values) {
    global_sums.upload(Buffer(NK_F32, f64(values)));
  }

  // dx of every rank from the global sums and count.
  nk_status backward_global(nk_context ctx) {
    for (int r = 0; r < ranks(); ++r) {
      if (empty(r)) continue;
      const nk_act_desc d = shard(r);
      const nk_status st = nk_batch_norm_backward_global(
          ctx, &d, i64(total), global_sums.f32(), global_sums.f32() + c, at(x, r), at(dy, r),
          weight(), save_mean[r].f32(), save_invstd[r].f32(), at(dx, r));
      if (st != NK_SUCCESS) return st;
    }
    return NK_SUCCESS;
  }

  static Buffer int64_host(const std::vector<int64_t>& values) {
    Buffer host(NK_F32, 2 * static_cast<int64_t>(values.size()));
    std::memcpy(host.data(), values.data(), values.size() * sizeof(int64_t));
    return host;
  }

  const nk_act_desc whole;
  const std::vector<int64_t> shards;
  const int64_t c;
  std::vector<int64_t> first;  // first sample of each shard
  DeviceBuffer x, dy, y, dx, w, b;
  DeviceBuffer counts, means, m2s, total, gmean, gm2, sums, global_sums;
  std::vector<DeviceBuffer> rm, rv, tracked, save_mean, save_invstd;  // per rank

 private:
  bool affine_;
};

struct SyncCase {
  nk_dtype dtype;
  nk_layout layout;
};

std::string sync_case_name(const testing::TestParamInfo<SyncCase>& info) {
  return std::string(name(info.param.dtype)) + (info.param.layout == NK_NCHW ? "_nchw" : "_nhwc");
}

std::vector<SyncCase> all_sync_cases() {
  std::vector<SyncCase> out;
  for (nk_dtype t : {NK_F32, NK_F16, NK_BF16})
    for (nk_layout l : {NK_NCHW, NK_NHWC}) out.push_back({t, l});
  return out;
}

struct Sharding {
  int64_t n, c, s;
  int ranks;
};

class SyncFixture : public GpuTest {
 protected:
  // `steps` training steps of the global batch split over `sh.ranks` ranks, against the whole batch
  // through the CPU backend: after each, y, the merge, the saved and running statistics (on every
  // rank, bitwise alike), the summed sums and dx.
  void check_shards(const SyncCase& sc, const Sharding& sh, const nk_norm_params& p, int steps,
                    bool affine, double mean, double stddev, Slack slack = {}) {
    const nk_dtype dtype = sc.dtype;
    const int64_t c = sh.c, per_sample = sh.c * sh.s, numel = sh.n * per_sample;
    const nk_act_desc whole{sh.n, sh.c, sh.s, sc.layout, dtype};
    const std::vector<float> w = f32(rng_.normal(c, 1.0, 0.5)), b = f32(rng_.normal(c));
    std::vector<float> rm_cpu = f32(rng_.normal(c, 0.0, 0.1)),
                       rv_cpu = f32(rng_.uniform(c, 0.5, 1.5));
    int64_t tracked_cpu = 3;
    World world(whole, split(sh.n, sh.ranks), affine, w, b, rm_cpu, rv_cpu, tracked_cpu);
    const float* wp = affine ? w.data() : nullptr;
    const float* bp = affine ? b.data() : nullptr;
    const double max_w = affine ? std::max(1.0, max_abs(f64(w))) : 1.0;
    const Tolerance t = gpu_tolerance(dtype);
    for (int step = 0; step < steps; ++step) {
      SCOPED_TRACE(testing::Message() << "step " << step);
      const Buffer x(dtype, rng_.normal(numel, mean + step, stddev)), dy(dtype, rng_.normal(numel));
      // The whole batch through the CPU backend.
      Buffer y_ref(dtype, numel), dx_ref(dtype, numel);
      std::vector<float> mean_ref(c), invstd_ref(c), dw_ref(c), db_ref(c);
      ASSERT_EQ(
          nk_batch_norm_forward(cpu_, &whole, &p, x.data(), wp, bp, rm_cpu.data(), rv_cpu.data(),
                                &tracked_cpu, y_ref.data(), mean_ref.data(), invstd_ref.data()),
          NK_SUCCESS)
          << nk_last_error();
      ASSERT_EQ(nk_batch_norm_backward(cpu_, &whole, &p, x.data(), dy.data(), wp, nullptr, nullptr,
                                       mean_ref.data(), invstd_ref.data(), dx_ref.data(),
                                       dw_ref.data(), db_ref.data()),
                NK_SUCCESS)
          << nk_last_error();
      const double max_invstd = max_abs(f64(invstd_ref));

      // Forward on the simulated ranks.
      world.load(x, dy);
      ASSERT_EQ(world.forward(gpu_, p), NK_SUCCESS) << nk_last_error();
      expect_close(world.y.download().values(), y_ref.values(),
                   {t.atol + slack.mean * max_w * max_invstd, t.rtol + slack.var}, "y");

      // Each shard's partials against the CPU backend's, and the merge against the CPU backend's
      // merge of the same partials (fp64 both: equal up to one fp32 rounding of the result).
      std::vector<int64_t> counts = int64_values(world.counts, world.ranks());
      Buffer means = world.means.download(), m2s = world.m2s.download();
      for (int r = 0; r < world.ranks(); ++r) {
        if (world.empty(r)) {
          EXPECT_EQ(counts[r], 0);
          continue;
        }
        SCOPED_TRACE(testing::Message() << "rank " << r);
        const nk_act_desc d = world.shard(r);
        int64_t count = -1;
        std::vector<float> lm(c), lm2(c);
        ASSERT_EQ(
            nk_batch_norm_local_stats(cpu_, &d, world.at(x, r), &count, lm.data(), lm2.data()),
            NK_SUCCESS)
            << nk_last_error();
        EXPECT_EQ(counts[r], count);
        std::vector<double> gm(c), gs(c);
        for (int64_t ch = 0; ch < c; ++ch) {
          gm[ch] = means.get(r * c + ch);
          gs[ch] = m2s.get(r * c + ch);
        }
        const double spread = stddev;
        expect_close(gm, f64(lm), {1e-5 * spread, FLT_EPSILON}, "local mean");
        expect_close(gs, f64(lm2), {1e-7 * spread * spread, 2e-5}, "local m2");
      }
      int64_t total_cpu = -1;
      std::vector<float> gmean_cpu(c), gm2_cpu(c);
      ASSERT_EQ(nk_batch_norm_merge_stats(cpu_, world.ranks(), c, counts.data(), means.f32(),
                                          m2s.f32(), &total_cpu, gmean_cpu.data(), gm2_cpu.data()),
                NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(total_cpu, sh.n * sh.s);
      EXPECT_EQ(int64_values(world.total, 1)[0], total_cpu);
      expect_close(world.gmean.download().values(), f64(gmean_cpu), {1e-30, FLT_EPSILON},
                   "merged mean");
      expect_close(world.gm2.download().values(), f64(gm2_cpu), {1e-30, FLT_EPSILON}, "merged m2");

      // Saved and running statistics: rank 0 against the CPU, every other rank bitwise like it.
      const double scale = std::abs(mean) + step + stddev;
      const Buffer sm0 = world.save_mean[0].download(), si0 = world.save_invstd[0].download();
      const Buffer rm0 = world.rm[0].download(), rv0 = world.rv[0].download();
      const int64_t tracked0 = int64_values(world.tracked[0], 1)[0];
      expect_close(sm0.values(), f64(mean_ref), {2e-6 * scale + slack.mean, 1e-6}, "save_mean");
      expect_close(si0.values(), f64(invstd_ref), {0, 2e-5 + slack.var}, "save_invstd");
      expect_close(rm0.values(), f64(rm_cpu), {1e-5 + slack.mean, 1e-5}, "running_mean");
      expect_close(rv0.values(), f64(rv_cpu), {1e-5, 2e-5 + slack.var}, "running_var");
      EXPECT_EQ(tracked0, tracked_cpu);
      for (int r = 1; r < world.ranks(); ++r) {
        if (world.empty(r)) continue;
        SCOPED_TRACE(testing::Message() << "rank " << r << " against rank 0");
        EXPECT_EQ(world.save_mean[r].download().bytes(), sm0.bytes());
        EXPECT_EQ(world.save_invstd[r].download().bytes(), si0.bytes());
        EXPECT_EQ(world.rm[r].download().bytes(), rm0.bytes());
        EXPECT_EQ(world.rv[r].download().bytes(), rv0.bytes());
        EXPECT_EQ(int64_values(world.tracked[r], 1)[0], tracked0);
      }

      // Backward: local sums, their sum over ranks (= dbias and dweight), dx.
      ASSERT_EQ(world.backward_local(gpu_), NK_SUCCESS) << nk_last_error();
      const std::vector<float> summed = world.sum_over_ranks();
      const double per_channel = static_cast<double>(sh.n * sh.s);
      const double sum_atol = 1e-6 * 4 * per_channel;  // |dy| * (1 + |x-hat|) summed, roughly
      expect_close(f64(std::vector<float>(summed.begin(), summed.begin() + c)), f64(db_ref),
                   {sum_atol, 1e-5}, "sum dy (dbias)");
      expect_close(f64(std::vector<float>(summed.begin() + c, summed.end())), f64(dw_ref),
                   {sum_atol + slack.mean * max_invstd * max_abs(f64(db_ref)), 1e-5 + slack.var},
                   "sum dy * x-hat (dweight)");
      ASSERT_EQ(world.backward_global(gpu_), NK_SUCCESS) << nk_last_error();
      const double dx_scale = max_abs(dy.values()) * max_invstd * max_w;
      expect_close(world.dx.download().values(), dx_ref.values(),
                   {(t.atol + slack.mean * max_invstd) * dx_scale, t.rtol + slack.var}, "dx");
    }
  }
};

class GpuSyncBatchNorm : public SyncFixture, public testing::WithParamInterface<SyncCase> {};

// Shapes: small and odd, S == 1 (a one-sample shard then has one value per channel), C == 1 with
// S > 1 (the rows layout in NHWC too), a wide NHWC / long NCHW one, long odd rows (S = 1031:
// 16-byte loads between each row's ends), NHWC C = 3 (periods of packs where a shard's N * S
// allows, single elements where not), ResNet-like.
std::vector<Sharding> sync_shapes(int ranks) {
  const std::vector<Sharding> list =
      reduced_gpu_tests()
          ? std::vector<Sharding>{{11, 3, 5, ranks},
                                  {9, 40, 1, ranks},
                                  {5, 24, 333, ranks},
                                  {4, 4, 1031, ranks},
                                  {8, 3, 12, ranks}}
          : std::vector<Sharding>{{11, 3, 5, ranks},   {7, 16, 49, ranks},  {9, 40, 1, ranks},
                                  {6, 1, 300, ranks},  {5, 24, 333, ranks}, {4, 4, 1031, ranks},
                                  {8, 64, 784, ranks}, {8, 3, 12, ranks}};
  return list;
}

TEST_P(GpuSyncBatchNorm, ShardsEqualTheWholeBatch) {
  // The reduced set keeps 2 ranks (a one-sample shard) and 5 (one empty, one of one sample).
  const std::vector<int> rank_counts =
      reduced_gpu_tests() ? std::vector<int>{2, 5} : std::vector<int>{1, 2, 3, 5};
  for (int ranks : rank_counts) {
    for (const Sharding& sh : sync_shapes(ranks)) {
      SCOPED_TRACE(testing::Message()
                   << ranks << " ranks, n=" << sh.n << " c=" << sh.c << " s=" << sh.s);
      check_shards(GetParam(), sh, nk_norm_params_default(), 2, true, 0.5, 2.0);
    }
  }
  SCOPED_TRACE("no weight and bias");
  check_shards(GetParam(), Sharding{7, 16, 49, 3}, nk_norm_params_default(), 1, false, 0.5, 2.0);
}

// The running statistics over several steps: the cumulative average (num_batches_tracked on the
// device) and Keras' convention (biased running variance).
TEST_P(GpuSyncBatchNorm, RunningStatisticsOverSteps) {
  nk_norm_params cumulative = nk_norm_params_default();
  cumulative.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  nk_norm_params keras = nk_norm_params_default();
  keras.running_var = NK_RUNNING_VAR_BIASED;
  keras.momentum = 1 - 0.99;
  for (const nk_norm_params& p : {cumulative, keras}) {
    SCOPED_TRACE(p.momentum_mode == NK_MOMENTUM_CUMULATIVE ? "cumulative" : "keras");
    check_shards(GetParam(), Sharding{9, 16, 49, 3}, p, 4, true, 0.5, 2.0);
    check_shards(GetParam(), Sharding{6, 8, 1, 5}, p, 3, true, -1.0, 1.0);
  }
}

// The same step twice gives the same bits on every output.
TEST_P(GpuSyncBatchNorm, RepeatedStepsAreBitwiseIdentical) {
  const SyncCase sc = GetParam();
  const nk_act_desc whole{10, 24, 333, sc.layout, sc.dtype};
  const int64_t c = whole.c, numel = whole.n * whole.c * whole.spatial;
  const std::vector<float> w = f32(rng_.normal(c, 1.0, 0.5)), b = f32(rng_.normal(c)),
                           rm = f32(rng_.normal(c)), rv = f32(rng_.uniform(c, 0.5, 1.5));
  const Buffer x(sc.dtype, rng_.normal(numel, 0.5, 2.0)), dy(sc.dtype, rng_.normal(numel));
  const nk_norm_params p = nk_norm_params_default();
  World first(whole, split(whole.n, 5), true, w, b, rm, rv, 0),
      second(whole, split(whole.n, 5), true, w, b, rm, rv, 0);
  for (World* world : {&first, &second}) {
    world->load(x, dy);
    ASSERT_EQ(world->forward(gpu_, p), NK_SUCCESS) << nk_last_error();
    ASSERT_EQ(world->backward_local(gpu_), NK_SUCCESS) << nk_last_error();
    world->sum_over_ranks();
    ASSERT_EQ(world->backward_global(gpu_), NK_SUCCESS) << nk_last_error();
  }
  for (auto member : {&World::y, &World::dx, &World::means, &World::m2s, &World::total,
                      &World::gmean, &World::gm2, &World::sums}) {
    EXPECT_EQ((first.*member).download().bytes(), (second.*member).download().bytes());
  }
  for (int r = 0; r < first.ranks(); ++r) {
    EXPECT_EQ(first.save_mean[r].download().bytes(), second.save_mean[r].download().bytes());
    EXPECT_EQ(first.save_invstd[r].download().bytes(), second.save_invstd[r].download().bytes());
    EXPECT_EQ(first.rm[r].download().bytes(), second.rm[r].download().bytes());
    EXPECT_EQ(first.rv[r].download().bytes(), second.rv[r].download().bytes());
  }
}

INSTANTIATE_TEST_SUITE_P(All, GpuSyncBatchNorm, testing::ValuesIn(all_sync_cases()),
                         sync_case_name);

// |mean| >> std in fp32 (1e4 + N(0, 1)): the results keep the precision the fp32 exchange format
// allows (Slack: the global mean within one and a half fp32 ulps of 1e4, 1.5 * 2^-10; the
// variance within 2 * 2^-11 * |shard mean - global mean| of itself, that difference below 0.5 for
// shards of 50 values or more, so 5e-4, taken as 1e-3). A variance from sums of squares in fp32
// would be off by whole units.
class GpuSyncBatchNormLargeOffset : public SyncFixture,
                                    public testing::WithParamInterface<SyncCase> {};

TEST_P(GpuSyncBatchNormLargeOffset, MatchesCpu) {
  const Slack slack{1.5 * std::ldexp(1.0, -10), 1e-3};
  for (int ranks : {1, 3, 5}) {
    SCOPED_TRACE(testing::Message() << ranks << " ranks");
    check_shards(GetParam(), Sharding{9, 8, 50, ranks}, nk_norm_params_default(), 2, true, 1e4, 1.0,
                 slack);
  }
}

INSTANTIATE_TEST_SUITE_P(F32, GpuSyncBatchNormLargeOffset,
                         testing::Values(SyncCase{NK_F32, NK_NCHW}, SyncCase{NK_F32, NK_NHWC}),
                         sync_case_name);

// ---- the device's rules for counts it cannot check ---------------------------------------------

class GpuSyncBatchNormRules : public SyncFixture {};

// The merge of random partials (counts with zeros, the first rank empty in some, offsets far from
// zero, more than 256 channels) equals the CPU backend's merge of the same partials up to one fp32
// rounding of the fp64 result.
TEST_F(GpuSyncBatchNormRules, MergeMatchesCpuOnRandomPartials) {
  for (int ranks : {1, 2, 3, 5, 8}) {
    for (int64_t c : {1, 3, 300}) {
      SCOPED_TRACE(testing::Message() << ranks << " ranks, " << c << " channels");
      std::vector<int64_t> counts(static_cast<size_t>(ranks));
      const std::vector<double> pick = rng_.uniform(ranks, 0.0, 1.0);
      for (int r = 0; r < ranks; ++r) {
        counts[r] = pick[r] < 0.25 ? 0 : pick[r] < 0.4 ? 1 : static_cast<int64_t>(pick[r] * 1000);
      }
      counts[ranks - 1] = std::max<int64_t>(counts[ranks - 1], 2);  // not every rank empty
      std::vector<double> means = rng_.normal(ranks * c, 1e3, 5.0), m2s(ranks * c);
      const std::vector<double> var = rng_.uniform(ranks * c, 0.5, 2.0);
      for (int r = 0; r < ranks; ++r) {
        for (int64_t ch = 0; ch < c; ++ch) {
          const size_t i = static_cast<size_t>(r * c + ch);
          m2s[i] = counts[r] == 0 ? NAN : (counts[r] - 1) * var[i];  // an empty rank's slots: NaN
          if (counts[r] == 0) means[i] = NAN;
        }
      }
      const Buffer mh(NK_F32, means), m2h(NK_F32, m2s);
      int64_t total_cpu = -1;
      std::vector<float> mean_cpu(c), m2_cpu(c);
      ASSERT_EQ(nk_batch_norm_merge_stats(cpu_, ranks, c, counts.data(),
                                          static_cast<const float*>(mh.data()),
                                          static_cast<const float*>(m2h.data()), &total_cpu,
                                          mean_cpu.data(), m2_cpu.data()),
                NK_SUCCESS)
          << nk_last_error();
      const DeviceBuffer cd = int64_buffer(counts), md(mh), m2d(m2h), total = int64_buffer({-7});
      DeviceBuffer mean(NK_F32, c), m2(NK_F32, c);
      ASSERT_EQ(nk_batch_norm_merge_stats(gpu_, ranks, c, i64(cd), md.f32(), m2d.f32(), i64(total),
                                          mean.f32(), m2.f32()),
                NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(int64_values(total, 1)[0], total_cpu);
      expect_close(mean.download().values(), f64(mean_cpu), {1e-30, FLT_EPSILON}, "mean");
      expect_close(m2.download().values(), f64(m2_cpu), {1e-30, FLT_EPSILON}, "m2");
    }
  }
}

// A negative count: total_count -1, mean and m2 NaN in every channel (more than one block of
// them). All counts 0: total 0, mean 0 and m2 0 (the empty slots' NaN never read).
TEST_F(GpuSyncBatchNormRules, MergeOfInvalidCounts) {
  const int64_t c = 300;
  const DeviceBuffer means = filled(3 * c, 2.5), m2s = filled(3 * c, 4.0);
  {
    SCOPED_TRACE("a negative count");
    const DeviceBuffer counts = int64_buffer({3, -1, 4}), total = int64_buffer({777});
    const DeviceBuffer mean = filled(c, 12345.0), m2 = filled(c, 12345.0);
    ASSERT_EQ(nk_batch_norm_merge_stats(gpu_, 3, c, i64(counts), means.f32(), m2s.f32(), i64(total),
                                        mean.f32(), m2.f32()),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(int64_values(total, 1)[0], -1);
    for (const DeviceBuffer* out : {&mean, &m2}) {
      const Buffer h = out->download();
      for (int64_t ch = 0; ch < c; ++ch) ASSERT_TRUE(std::isnan(h.get(ch))) << "channel " << ch;
    }
  }
  {
    SCOPED_TRACE("every count 0");
    const DeviceBuffer counts = int64_buffer({0, 0, 0}), total = int64_buffer({777});
    const DeviceBuffer nan_means(NK_F32, 3 * c), nan_m2s(NK_F32, 3 * c);  // poisoned: NaN
    const DeviceBuffer mean = filled(c, 12345.0), m2 = filled(c, 12345.0);
    ASSERT_EQ(nk_batch_norm_merge_stats(gpu_, 3, c, i64(counts), nan_means.f32(), nan_m2s.f32(),
                                        i64(total), mean.f32(), m2.f32()),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(int64_values(total, 1)[0], 0);
    EXPECT_EQ(mean.download().values(), std::vector<double>(c, 0.0));
    EXPECT_EQ(m2.download().values(), std::vector<double>(c, 0.0));
  }
}

// A global count below 2 leaves the running statistics and num_batches_tracked as they were (both
// momentum modes); with count 1 the statistics are (global mean, variance m2 / 1 = 0 for one
// value), below 1 they are (0, 0) and the global mean and m2 are not read (NaN here). y and the
// saved statistics are finite: save_invstd = 1/sqrt(eps), y = (x - mean) * save_invstd * w + b.
TEST_F(GpuSyncBatchNormRules, ForwardWithAGlobalCountBelowTwo) {
  const int64_t c = 5;
  const float eps = 1e-5f;
  for (nk_dtype dtype : {NK_F32, NK_BF16}) {
    for (nk_momentum_mode mode : {NK_MOMENTUM_EXPONENTIAL, NK_MOMENTUM_CUMULATIVE}) {
      for (int64_t count : {1, 0, -1}) {
        SCOPED_TRACE(testing::Message() << name(dtype) << " mode " << mode << " count " << count);
        const nk_act_desc d{2, c, 3, NK_NCHW, dtype};
        const int64_t numel = d.n * d.c * d.spatial;
        nk_norm_params p = nk_norm_params_default();
        p.momentum_mode = mode;
        p.eps = eps;
        const Buffer x(dtype, rng_.normal(numel));
        const std::vector<float> w = f32(rng_.normal(c, 1.0, 0.5)), b = f32(rng_.normal(c));
        const std::vector<float> global_mean = f32(rng_.normal(c));
        const DeviceBuffer xd(x), wd(Buffer(NK_F32, f64(w))), bd(Buffer(NK_F32, f64(b)));
        const DeviceBuffer gmean =
            count >= 1 ? DeviceBuffer(Buffer(NK_F32, f64(global_mean))) : DeviceBuffer(NK_F32, c);
        const DeviceBuffer gm2 = count >= 1 ? filled(c, 0.0) : DeviceBuffer(NK_F32, c);
        const DeviceBuffer gcount = int64_buffer({count}), tracked = int64_buffer({7});
        const DeviceBuffer rm = filled(c, 0.25), rv = filled(c, 2.0);
        DeviceBuffer y(dtype, numel), sm(NK_F32, c), si(NK_F32, c);
        ASSERT_EQ(nk_batch_norm_forward_global(gpu_, &d, &p, i64(gcount), gmean.f32(), gm2.f32(),
                                               xd.data(), wd.f32(), bd.f32(), rm.f32(), rv.f32(),
                                               i64(tracked), y.data(), sm.f32(), si.f32()),
                  NK_SUCCESS)
            << nk_last_error();
        EXPECT_EQ(rm.download().values(), std::vector<double>(c, 0.25));
        EXPECT_EQ(rv.download().values(), std::vector<double>(c, 2.0));
        EXPECT_EQ(int64_values(tracked, 1)[0], 7);
        const std::vector<double> mean =
            count >= 1 ? f64(global_mean) : std::vector<double>(c, 0.0);
        const double invstd = 1 / std::sqrt(double{eps});
        EXPECT_EQ(sm.download().values(), mean);
        expect_close(si.download().values(), std::vector<double>(c, invstd), {0, 1e-6},
                     "save_invstd");
        std::vector<double> y_ref(numel);
        const std::vector<double> xv = x.values();
        double largest = 0;
        for (int64_t i = 0; i < numel; ++i) {
          const int64_t ch = (i / d.spatial) % c;
          const double term = (xv[i] - mean[ch]) * invstd * w[ch];
          y_ref[i] = term + b[ch];
          largest = std::max(largest, std::abs(term));
        }
        const Tolerance t = gpu_tolerance(dtype);
        expect_close(y.download().values(), y_ref, {t.atol * (1 + largest), t.rtol}, "y");
      }
    }
  }
}

// A global count below 1 in the backward: dx = weight * invstd * dy, the global sums not read
// (NaN here).
TEST_F(GpuSyncBatchNormRules, BackwardWithAGlobalCountBelowOne) {
  const int64_t c = 6;
  for (nk_dtype dtype : {NK_F32, NK_F16}) {
    for (int64_t count : {0, -1}) {
      SCOPED_TRACE(testing::Message() << name(dtype) << " count " << count);
      const nk_act_desc d{3, c, 4, NK_NHWC, dtype};
      const int64_t numel = d.n * d.c * d.spatial;
      const Buffer x(dtype, rng_.normal(numel)), dy(dtype, rng_.normal(numel));
      const std::vector<float> w = f32(rng_.normal(c, 1.0, 0.5)), sm = f32(rng_.normal(c)),
                               si = f32(rng_.uniform(c, 0.5, 2.0));
      const DeviceBuffer xd(x), dyd(dy), wd(Buffer(NK_F32, f64(w))), smd(Buffer(NK_F32, f64(sm))),
          sid(Buffer(NK_F32, f64(si)));
      const DeviceBuffer gcount = int64_buffer({count}), nan_sums(NK_F32, 2 * c);
      DeviceBuffer dx(dtype, numel);
      ASSERT_EQ(nk_batch_norm_backward_global(gpu_, &d, i64(gcount), nan_sums.f32(),
                                              nan_sums.f32() + c, xd.data(), dyd.data(), wd.f32(),
                                              smd.f32(), sid.f32(), dx.data()),
                NK_SUCCESS)
          << nk_last_error();
      std::vector<double> dx_ref(numel);
      const std::vector<double> g = dy.values();
      for (int64_t i = 0; i < numel; ++i) dx_ref[i] = w[i % c] * si[i % c] * g[i];
      const Tolerance t = gpu_tolerance(dtype);
      expect_close(dx.download().values(), dx_ref, {t.atol * 4, t.rtol}, "dx");
    }
  }
}

// num_batches_tracked without running buffers: nk_batch_norm_forward (both backends) and the CPU
// backend's nk_batch_norm_forward_global advance it; the CUDA global forward must too ("otherwise
// exactly nk_batch_norm_forward in NK_TRAINING").
TEST_F(GpuSyncBatchNormRules, CounterAdvancesWithoutRunningBuffers) {
  const nk_act_desc d{4, 3, 5, NK_NHWC, NK_F32};
  const int64_t numel = d.n * d.c * d.spatial;
  const nk_norm_params p = nk_norm_params_default();
  const Buffer x(NK_F32, rng_.normal(numel, 1.0, 2.0));
  int64_t count = -1, tracked_cpu = 5, tracked_plain = 5;
  std::vector<float> mean(d.c), m2(d.c);
  ASSERT_EQ(nk_batch_norm_local_stats(cpu_, &d, x.data(), &count, mean.data(), m2.data()),
            NK_SUCCESS);
  Buffer y_cpu(NK_F32, numel);
  ASSERT_EQ(nk_batch_norm_forward_global(cpu_, &d, &p, &count, mean.data(), m2.data(), x.data(),
                                         nullptr, nullptr, nullptr, nullptr, &tracked_cpu,
                                         y_cpu.data(), nullptr, nullptr),
            NK_SUCCESS)
      << nk_last_error();
  ASSERT_EQ(nk_batch_norm_forward(cpu_, &d, &p, x.data(), nullptr, nullptr, nullptr, nullptr,
                                  &tracked_plain, y_cpu.data(), nullptr, nullptr),
            NK_SUCCESS);
  EXPECT_EQ(tracked_cpu, 6);
  EXPECT_EQ(tracked_plain, 6);
  const DeviceBuffer xd(x), gcount = int64_buffer({count}), gmean(Buffer(NK_F32, f64(mean))),
                            gm2(Buffer(NK_F32, f64(m2)));
  const DeviceBuffer tracked_global = int64_buffer({5}), tracked_forward = int64_buffer({5});
  DeviceBuffer y(NK_F32, numel);
  ASSERT_EQ(nk_batch_norm_forward(gpu_, &d, &p, xd.data(), nullptr, nullptr, nullptr, nullptr,
                                  i64(tracked_forward), y.data(), nullptr, nullptr),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(int64_values(tracked_forward, 1)[0], 6) << "nk_batch_norm_forward on CUDA";
  ASSERT_EQ(nk_batch_norm_forward_global(gpu_, &d, &p, i64(gcount), gmean.f32(), gm2.f32(),
                                         xd.data(), nullptr, nullptr, nullptr, nullptr,
                                         i64(tracked_global), y.data(), nullptr, nullptr),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(int64_values(tracked_global, 1)[0], 6) << "nk_batch_norm_forward_global on CUDA";
}

// A rank without samples (N = 0, its activation pointers NULL) takes part in every phase
// (normkit.h): its local statistics are count 0 and zeros, the merge counts the other rank's
// values alone, its global forward moves its running statistics and counter to the bytes the other
// rank's does and writes the same saved statistics, its local sums are zeros, and its global
// backward writes nothing. Every output poisoned first.
TEST_F(GpuSyncBatchNormRules, AnEmptyRankTakesPartInEveryPhase) {
  for (nk_layout layout : {NK_NCHW, NK_NHWC}) {
    SCOPED_TRACE(layout == NK_NCHW ? "NCHW" : "NHWC");
    const nk_act_desc full{3, 5, 7, layout, NK_F32}, empty{0, 5, 7, layout, NK_F32};
    const int64_t c = full.c, numel = full.n * full.c * full.spatial, per_channel = numel / c;
    const DeviceBuffer x(Buffer(NK_F32, rng_.normal(numel, 1.0, 2.0)));
    DeviceBuffer counts = int64_buffer({-7, -7}), means(NK_F32, 2 * c), m2s(NK_F32, 2 * c);
    means.poison();
    m2s.poison();
    ASSERT_EQ(nk_batch_norm_local_stats(gpu_, &full, x.data(), i64(counts), means.f32(),
                                        m2s.f32()),
              NK_SUCCESS)
        << nk_last_error();
    ASSERT_EQ(nk_batch_norm_local_stats(gpu_, &empty, nullptr, i64(counts) + 1, means.f32() + c,
                                        m2s.f32() + c),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(int64_values(counts, 2), (std::vector<int64_t>{per_channel, 0}));
    const std::vector<double> mv = means.download().values(), m2v = m2s.download().values();
    for (int64_t ch = 0; ch < c; ++ch) {
      EXPECT_TRUE(std::isfinite(mv[ch]) && std::isfinite(m2v[ch])) << "channel " << ch;
      EXPECT_EQ(mv[c + ch], 0.0) << "the empty rank's mean, channel " << ch;
      EXPECT_EQ(m2v[c + ch], 0.0) << "the empty rank's m2, channel " << ch;
    }

    DeviceBuffer total = int64_buffer({-7}), gmean(NK_F32, c), gm2(NK_F32, c);
    gmean.poison();
    gm2.poison();
    ASSERT_EQ(nk_batch_norm_merge_stats(gpu_, 2, c, i64(counts), means.f32(), m2s.f32(), i64(total),
                                        gmean.f32(), gm2.f32()),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(int64_values(total, 1)[0], per_channel);
    const std::vector<double> gmv = gmean.download().values(), gm2v = gm2.download().values();
    for (int64_t ch = 0; ch < c; ++ch) {
      EXPECT_NEAR(gmv[ch], mv[ch], 1e-6 * std::abs(mv[ch]) + 1e-7) << "channel " << ch;
      EXPECT_NEAR(gm2v[ch], m2v[ch], 1e-6 * m2v[ch]) << "channel " << ch;
    }

    const nk_norm_params p = nk_norm_params_default();
    DeviceBuffer rm_full = filled(c, 0.25), rv_full = filled(c, 2.0);
    DeviceBuffer rm_empty = filled(c, 0.25), rv_empty = filled(c, 2.0);
    DeviceBuffer tracked_full = int64_buffer({3}), tracked_empty = int64_buffer({3});
    DeviceBuffer y(NK_F32, numel), sm(NK_F32, c), si(NK_F32, c), sm_empty(NK_F32, c),
        si_empty(NK_F32, c);
    for (DeviceBuffer* d : {&y, &sm, &si, &sm_empty, &si_empty}) d->poison();
    ASSERT_EQ(nk_batch_norm_forward_global(gpu_, &full, &p, i64(total), gmean.f32(), gm2.f32(),
                                           x.data(), nullptr, nullptr, rm_full.f32(),
                                           rv_full.f32(), i64(tracked_full), y.data(), sm.f32(),
                                           si.f32()),
              NK_SUCCESS)
        << nk_last_error();
    ASSERT_EQ(nk_batch_norm_forward_global(gpu_, &empty, &p, i64(total), gmean.f32(), gm2.f32(),
                                           nullptr, nullptr, nullptr, rm_empty.f32(),
                                           rv_empty.f32(), i64(tracked_empty), nullptr,
                                           sm_empty.f32(), si_empty.f32()),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_NE(rm_full.download().values(), std::vector<double>(c, 0.25)) << "it moved";
    EXPECT_EQ(rm_empty.download().bytes(), rm_full.download().bytes());
    EXPECT_EQ(rv_empty.download().bytes(), rv_full.download().bytes());
    EXPECT_EQ(int64_values(tracked_full, 1)[0], 4);
    EXPECT_EQ(int64_values(tracked_empty, 1)[0], 4);
    EXPECT_EQ(sm_empty.download().bytes(), sm.download().bytes());
    EXPECT_EQ(si_empty.download().bytes(), si.download().bytes());

    DeviceBuffer sums(NK_F32, 2 * c), dx(NK_F32, numel);
    sums.poison();
    dx.poison();
    const Buffer dx_before = dx.download();
    ASSERT_EQ(nk_batch_norm_backward_local_sums(gpu_, &empty, nullptr, nullptr, sm.f32(), si.f32(),
                                                sums.f32(), sums.f32() + c),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(sums.download().values(), std::vector<double>(2 * c, 0.0));
    ASSERT_EQ(nk_batch_norm_backward_global(gpu_, &empty, i64(total), sums.f32(), sums.f32() + c,
                                            nullptr, nullptr, nullptr, sm.f32(), si.f32(),
                                            dx.data()),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(dx.download().bytes(), dx_before.bytes()) << "an empty shard has no dx to write";
  }
}

// num_batches_tracked outside [0, INT64_MAX - 1] with a valid global count: the device leaves the
// counter and the running statistics as they were (both momentum modes; a CPU context refuses such
// a counter), and y and the saved statistics are the global batch's as usual (the CPU backend's
// global forward without running buffers). INT64_MAX - 1 advances to INT64_MAX.
TEST_F(GpuSyncBatchNormRules, GlobalForwardWithACounterThatCannotAdvance) {
  const nk_act_desc d{3, 4, 5, NK_NHWC, NK_F32};
  const int64_t c = d.c, numel = d.n * d.c * d.spatial;
  const Buffer x(NK_F32, rng_.normal(numel, 0.5, 2.0));
  int64_t count = -1;
  std::vector<float> mean(c), m2(c);
  ASSERT_EQ(nk_batch_norm_local_stats(cpu_, &d, x.data(), &count, mean.data(), m2.data()),
            NK_SUCCESS);
  const DeviceBuffer xd(x), gcount = int64_buffer({count}), gmean(Buffer(NK_F32, f64(mean))),
                            gm2(Buffer(NK_F32, f64(m2)));
  for (nk_momentum_mode mode : {NK_MOMENTUM_EXPONENTIAL, NK_MOMENTUM_CUMULATIVE}) {
    nk_norm_params p = nk_norm_params_default();
    p.momentum_mode = mode;
    Buffer y_ref(NK_F32, numel);
    std::vector<float> sm_ref(c), si_ref(c);
    ASSERT_EQ(nk_batch_norm_forward_global(cpu_, &d, &p, &count, mean.data(), m2.data(), x.data(),
                                           nullptr, nullptr, nullptr, nullptr, nullptr,
                                           y_ref.data(), sm_ref.data(), si_ref.data()),
              NK_SUCCESS)
        << nk_last_error();
    for (int64_t bad :
         {int64_t{-1}, int64_t{-2}, rng_.integer(INT64_MIN, -3), INT64_MIN, INT64_MAX}) {
      SCOPED_TRACE(testing::Message() << "mode " << mode << " counter " << bad);
      const Buffer rm_host(NK_F32, rng_.normal(c)), rv_host(NK_F32, rng_.uniform(c, 0.5, 2.0));
      const DeviceBuffer rm(rm_host), rv(rv_host), tracked = int64_buffer({bad});
      DeviceBuffer y(NK_F32, numel), sm(NK_F32, c), si(NK_F32, c);
      ASSERT_EQ(nk_batch_norm_forward_global(gpu_, &d, &p, i64(gcount), gmean.f32(), gm2.f32(),
                                             xd.data(), nullptr, nullptr, rm.f32(), rv.f32(),
                                             i64(tracked), y.data(), sm.f32(), si.f32()),
                NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(rm.download().bytes(), rm_host.bytes()) << "running_mean written";
      EXPECT_EQ(rv.download().bytes(), rv_host.bytes()) << "running_var written";
      EXPECT_EQ(int64_values(tracked, 1)[0], bad);
      expect_close(y.download().values(), y_ref.values(), gpu_tolerance(NK_F32), "y");
      expect_close(sm.download().values(), f64(sm_ref), {1e-6, 1e-6}, "save_mean");
      expect_close(si.download().values(), f64(si_ref), {0, 2e-5}, "save_invstd");
    }
    std::vector<float> rm_cpu = f32(rng_.normal(c)), rv_cpu = f32(rng_.uniform(c, 0.5, 2.0));
    const DeviceBuffer rm(Buffer(NK_F32, f64(rm_cpu))), rv(Buffer(NK_F32, f64(rv_cpu)));
    const DeviceBuffer tracked = int64_buffer({INT64_MAX - 1});
    int64_t tracked_cpu = INT64_MAX - 1;
    ASSERT_EQ(nk_batch_norm_forward_global(cpu_, &d, &p, &count, mean.data(), m2.data(), x.data(),
                                           nullptr, nullptr, rm_cpu.data(), rv_cpu.data(),
                                           &tracked_cpu, y_ref.data(), nullptr, nullptr),
              NK_SUCCESS)
        << nk_last_error();
    DeviceBuffer y(NK_F32, numel);
    ASSERT_EQ(nk_batch_norm_forward_global(gpu_, &d, &p, i64(gcount), gmean.f32(), gm2.f32(),
                                           xd.data(), nullptr, nullptr, rm.f32(), rv.f32(),
                                           i64(tracked), y.data(), nullptr, nullptr),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(int64_values(tracked, 1)[0], INT64_MAX);
    EXPECT_EQ(tracked_cpu, INT64_MAX);
    expect_close(rm.download().values(), f64(rm_cpu), {1e-5, 1e-5}, "running_mean");
    expect_close(rv.download().values(), f64(rv_cpu), {1e-5, 2e-5}, "running_var");
  }
}

#if NORMKIT_TEST_WITH_CUDA

// With a workspace from the size queries nothing allocates or waits: the forward phase of three
// ranks (local statistics, merge, global forward, cumulative momentum) captured in a CUDA graph
// and replayed three times equals three eager runs bit for bit, and so does the backward (local
// sums, then the global backward from the exchanged sums).
TEST_F(GpuSyncBatchNormRules, CapturedStepsReplay) {
  if (const std::string why = graphs_unsupported_reason(); !why.empty()) GTEST_SKIP() << why;
  const nk_act_desc whole{9, 32, 49, NK_NCHW, NK_F16};
  const int64_t c = whole.c, numel = whole.n * whole.c * whole.spatial;
  nk_norm_params p = nk_norm_params_default();
  p.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  const std::vector<float> w = f32(rng_.normal(c, 1.0, 0.5)), b = f32(rng_.normal(c)),
                           rm = f32(rng_.normal(c)), rv = f32(rng_.uniform(c, 0.5, 1.5));
  const Buffer x(whole.dtype, rng_.normal(numel, 1.0, 2.0)), dy(whole.dtype, rng_.normal(numel));
  World eager(whole, split(whole.n, 3), true, w, b, rm, rv, 0),
      graphed(whole, split(whole.n, 3), true, w, b, rm, rv, 0);
  eager.load(x, dy);
  graphed.load(x, dy);
  size_t bytes = 0;
  for (int r = 0; r < eager.ranks(); ++r) {
    const nk_act_desc d = eager.shard(r);
    size_t fwd = 0, bwd = 0;
    ASSERT_EQ(nk_batch_norm_forward_workspace_size(gpu_, &d, &p, &fwd), NK_SUCCESS);
    ASSERT_EQ(nk_batch_norm_backward_workspace_size(gpu_, &d, &p, &bwd), NK_SUCCESS);
    bytes = std::max({bytes, fwd, bwd});
  }
  void* workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&workspace, bytes), cudaSuccess);
  ASSERT_EQ(nk_context_set_workspace(gpu_, workspace, bytes), NK_SUCCESS);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(nk_context_set_stream(gpu_, stream), NK_SUCCESS);

  for (int i = 0; i < 3; ++i) ASSERT_EQ(eager.forward(gpu_, p), NK_SUCCESS) << nk_last_error();
  ASSERT_EQ(eager.backward_local(gpu_), NK_SUCCESS) << nk_last_error();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const std::vector<float> summed = eager.sum_over_ranks();
  ASSERT_EQ(eager.backward_global(gpu_), NK_SUCCESS) << nk_last_error();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  graphed.set_global_sums(summed);  // the exchange's result, known from the eager run

  cudaGraph_t forward_graph, backward_graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const nk_status captured_forward = graphed.forward(gpu_, p);
  ASSERT_EQ(cudaStreamEndCapture(stream, &forward_graph), cudaSuccess);
  ASSERT_EQ(captured_forward, NK_SUCCESS) << nk_last_error();
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  nk_status captured_backward = graphed.backward_local(gpu_);
  if (captured_backward == NK_SUCCESS) captured_backward = graphed.backward_global(gpu_);
  ASSERT_EQ(cudaStreamEndCapture(stream, &backward_graph), cudaSuccess);
  ASSERT_EQ(captured_backward, NK_SUCCESS) << nk_last_error();
  cudaGraphExec_t forward_exec, backward_exec;
  ASSERT_EQ(cudaGraphInstantiate(&forward_exec, forward_graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&backward_exec, backward_graph, 0), cudaSuccess);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(forward_exec, stream), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(backward_exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

  for (auto member :
       {&World::y, &World::dx, &World::total, &World::gmean, &World::gm2, &World::sums}) {
    EXPECT_EQ((graphed.*member).download().bytes(), (eager.*member).download().bytes());
  }
  for (int r = 0; r < eager.ranks(); ++r) {
    SCOPED_TRACE(testing::Message() << "rank " << r);
    EXPECT_EQ(graphed.save_mean[r].download().bytes(), eager.save_mean[r].download().bytes());
    EXPECT_EQ(graphed.save_invstd[r].download().bytes(), eager.save_invstd[r].download().bytes());
    EXPECT_EQ(graphed.rm[r].download().bytes(), eager.rm[r].download().bytes());
    EXPECT_EQ(graphed.rv[r].download().bytes(), eager.rv[r].download().bytes());
    EXPECT_EQ(int64_values(graphed.tracked[r], 1)[0], 3);
    EXPECT_EQ(int64_values(eager.tracked[r], 1)[0], 3);
  }
  cudaGraphExecDestroy(forward_exec);
  cudaGraphExecDestroy(backward_exec);
  cudaGraphDestroy(forward_graph);
  cudaGraphDestroy(backward_graph);
  nk_context_set_stream(gpu_, nullptr);
  nk_context_set_workspace(gpu_, nullptr, 0);
  cudaStreamDestroy(stream);
  cudaFree(workspace);
}

// The CUDA path's refusals, each before any kernel runs: a workspace smaller than the call's
// scratch (NK_ERROR_WORKSPACE), statistics or a count inside a buffer that is written, the
// inference phase. Nothing is written.
TEST_F(GpuSyncBatchNormRules, ErrorsWriteNothing) {
  const nk_act_desc d{4, 16, 32, NK_NCHW, NK_F32};
  const int64_t c = d.c, numel = d.n * d.c * d.spatial;
  const nk_norm_params p = nk_norm_params_default();
  const Buffer xh(NK_F32, rng_.normal(numel));
  const DeviceBuffer x(xh), dy(Buffer(NK_F32, rng_.normal(numel)));
  const DeviceBuffer gcount = int64_buffer({numel / c}), gmean = filled(c, 0.1),
                     gm2 = filled(c, 100.0), sm = filled(c, 0.1), si = filled(c, 1.0),
                     sums = filled(2 * c, 1.0);
  DeviceBuffer y(NK_F32, numel), out(NK_F32, 2 * c), count = int64_buffer({-7});
  const DeviceBuffer rm = filled(c, 0.25), rv = filled(c, 2.0), tracked = int64_buffer({7});
  const Buffer y_before = y.download(), out_before = out.download();
  auto unchanged = [&] {
    EXPECT_EQ(y.download().bytes(), y_before.bytes());
    EXPECT_EQ(out.download().bytes(), out_before.bytes());
    EXPECT_EQ(int64_values(count, 1)[0], -7);
    EXPECT_EQ(rm.download().values(), std::vector<double>(c, 0.25));
    EXPECT_EQ(rv.download().values(), std::vector<double>(c, 2.0));
    EXPECT_EQ(int64_values(tracked, 1)[0], 7);
  };
  auto forward_global = [&](const nk_norm_params& params, const int64_t* global_count,
                            const float* mean) {
    return nk_batch_norm_forward_global(gpu_, &d, &params, global_count, mean, gm2.f32(), x.data(),
                                        nullptr, nullptr, rm.f32(), rv.f32(), i64(tracked),
                                        y.data(), out.f32(), out.f32() + c);
  };

  // Every call here needs at least 256 bytes of scratch (local statistics: 16 channels' partials,
  // one chunk each).
  void* small = nullptr;
  ASSERT_EQ(cudaMalloc(&small, 128), cudaSuccess);
  ASSERT_EQ(nk_context_set_workspace(gpu_, small, 128), NK_SUCCESS);
  EXPECT_EQ(nk_batch_norm_local_stats(gpu_, &d, x.data(), i64(count), out.f32(), out.f32() + c),
            NK_ERROR_WORKSPACE);
  EXPECT_EQ(forward_global(p, i64(gcount), gmean.f32()), NK_ERROR_WORKSPACE);
  EXPECT_EQ(nk_batch_norm_backward_local_sums(gpu_, &d, x.data(), dy.data(), sm.f32(), si.f32(),
                                              out.f32(), out.f32() + c),
            NK_ERROR_WORKSPACE);
  EXPECT_EQ(
      nk_batch_norm_backward_global(gpu_, &d, i64(gcount), sums.f32(), sums.f32() + c, x.data(),
                                    dy.data(), nullptr, sm.f32(), si.f32(), y.data()),
      NK_ERROR_WORKSPACE);
  ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);
  cudaFree(small);
  unchanged();

  // The global mean inside the workspace the forward writes its scratch to.
  DeviceBuffer workspace(NK_F32, 4096);
  ASSERT_EQ(nk_context_set_workspace(gpu_, workspace.data(), 4096 * 4), NK_SUCCESS);
  EXPECT_EQ(forward_global(p, i64(gcount), workspace.f32()), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("workspace"), std::string::npos) << nk_last_error();
  ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);
  // The global count inside y; the inference phase; a NULL count.
  EXPECT_EQ(forward_global(p, reinterpret_cast<const int64_t*>(y.f32() + 6), gmean.f32()),
            NK_ERROR_INVALID_VALUE);
  nk_norm_params inference = p;
  inference.phase = NK_INFERENCE;
  EXPECT_EQ(forward_global(inference, i64(gcount), gmean.f32()), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(forward_global(p, nullptr, gmean.f32()), NK_ERROR_INVALID_VALUE);
  // Overlapping outputs of the local statistics and the merge.
  EXPECT_EQ(nk_batch_norm_local_stats(gpu_, &d, x.data(), i64(count), out.f32(), out.f32() + 3),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_batch_norm_merge_stats(gpu_, 1, c, i64(gcount), gmean.f32(), gm2.f32(), i64(count),
                                      out.f32(), out.f32()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_batch_norm_merge_stats(gpu_, 0, c, i64(gcount), gmean.f32(), gm2.f32(), i64(count),
                                      out.f32(), out.f32() + c),
            NK_ERROR_BAD_SHAPE);
  unchanged();
}

#endif  // NORMKIT_TEST_WITH_CUDA

// ---- the NCCL path ------------------------------------------------------------------------------

#if NORMKIT_TEST_WITH_NCCL

// NCCL, opened at run time like normkit opens it, so the test binary does not link it and both
// use the same library (and communicators).
struct Nccl {
  decltype(&ncclCommInitAll) init_all = nullptr;
  decltype(&ncclCommDestroy) destroy = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  std::string error;  // why it could not be loaded; empty when loaded
};

const Nccl& nccl() {
  static const Nccl loaded = [] {
    Nccl n;
    void* handle = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      n.error = std::string("libnccl.so.2 cannot be loaded: ") + (why ? why : "unknown reason");
      return n;
    }
    n.init_all = reinterpret_cast<decltype(&ncclCommInitAll)>(dlsym(handle, "ncclCommInitAll"));
    n.destroy = reinterpret_cast<decltype(&ncclCommDestroy)>(dlsym(handle, "ncclCommDestroy"));
    n.error_string =
        reinterpret_cast<decltype(&ncclGetErrorString)>(dlsym(handle, "ncclGetErrorString"));
    if (!n.init_all || !n.destroy || !n.error_string) {
      n.error = "libnccl.so.2 lacks ncclCommInitAll, ncclCommDestroy or ncclGetErrorString";
    }
    return n;  // the library stays loaded for the process, as NCCL expects
  }();
  return loaded;
}

#endif  // NORMKIT_TEST_WITH_NCCL

#if NORMKIT_TEST_WITH_CUDA

// A one-rank NCCL communicator on device 0 and a CUDA stream (NCCL needs a real one) set on the
// context; skipped, with the reason, where the build has no NCCL path or NCCL cannot start.
class GpuSyncBatchNormNccl : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
#if NORMKIT_TEST_WITH_NCCL
    const Nccl& api = nccl();
    if (!api.error.empty()) GTEST_SKIP() << api.error;
    const int device = 0;
    ncclComm_t comm = nullptr;
    const ncclResult_t result = api.init_all(&comm, 1, &device);
    if (result != ncclSuccess) {
      GTEST_SKIP() << "ncclCommInitAll(1 rank on device 0) failed: " << api.error_string(result);
    }
    comm_ = comm;
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    ASSERT_EQ(nk_context_set_stream(gpu_, stream_), NK_SUCCESS);
#else
    GTEST_SKIP() << "built without NCCL's header (nccl.h), as normkit's NCCL path is";
#endif
  }

  void TearDown() override {
    if (stream_) cudaStreamSynchronize(stream_);
    if (gpu_) nk_context_set_stream(gpu_, nullptr);
#if NORMKIT_TEST_WITH_NCCL
    if (comm_) nccl().destroy(static_cast<ncclComm_t>(comm_));
#endif
    if (stream_) cudaStreamDestroy(stream_);
    GpuTest::TearDown();
  }

  // The forward and backward size queries for desc; skips the test if normkit reports its NCCL
  // path unavailable.
  void sizes(const nk_act_desc& d, const nk_norm_params& p, size_t* fwd, size_t* bwd) {
    const nk_status st = nk_sync_batch_norm_forward_workspace_size(gpu_, comm_, &d, &p, fwd);
    if (st == NK_ERROR_NOT_SUPPORTED) GTEST_SKIP() << nk_last_error();
    ASSERT_EQ(st, NK_SUCCESS) << nk_last_error();
    ASSERT_EQ(nk_sync_batch_norm_backward_workspace_size(gpu_, comm_, &d, bwd), NK_SUCCESS)
        << nk_last_error();
  }

  void* comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

// Outputs and state of one NCCL-path training step.
struct NcclStep {
  DeviceBuffer y, save_mean, save_invstd, rm, rv, tracked, dx, dw, db;
};

NcclStep nccl_step_buffers(nk_dtype dtype, int64_t numel, int64_t c, const std::vector<float>& rm,
                           const std::vector<float>& rv, int64_t tracked) {
  return NcclStep{DeviceBuffer(dtype, numel),
                  DeviceBuffer(NK_F32, c),
                  DeviceBuffer(NK_F32, c),
                  DeviceBuffer(Buffer(NK_F32, f64(rm))),
                  DeviceBuffer(Buffer(NK_F32, f64(rv))),
                  int64_buffer({tracked}),
                  DeviceBuffer(dtype, numel),
                  DeviceBuffer(NK_F32, c),
                  DeviceBuffer(NK_F32, c)};
}

// One rank holding the whole batch: forward and backward equal the CPU backend's training forward
// and backward (with the running update and the counter); with a workspace from the size queries
// the results are the same bits as without.
TEST_F(GpuSyncBatchNormNccl, OneRankEqualsTheWholeBatch) {
  struct S {
    int64_t n, c, s;
  };
  for (const SyncCase& sc : all_sync_cases()) {
    for (const S& s : {S{7, 16, 49}, S{5, 3, 1}, S{4, 1, 300}, S{3, 24, 333}}) {
      SCOPED_TRACE(testing::Message() << sync_case_name(testing::TestParamInfo<SyncCase>(sc, 0))
                                      << " n=" << s.n << " c=" << s.c << " s=" << s.s);
      const nk_act_desc d{s.n, s.c, s.s, sc.layout, sc.dtype};
      const int64_t c = s.c, numel = s.n * s.c * s.s;
      const nk_norm_params p = nk_norm_params_default();
      size_t fwd = 0, bwd = 0;
      sizes(d, p, &fwd, &bwd);
      if (IsSkipped() || HasFatalFailure()) return;
      EXPECT_GT(fwd, 0u);
      EXPECT_GT(bwd, 0u);
      const Buffer x(sc.dtype, rng_.normal(numel, 0.5, 2.0)), dy(sc.dtype, rng_.normal(numel));
      const std::vector<float> w = f32(rng_.normal(c, 1.0, 0.5)), b = f32(rng_.normal(c)),
                               rm0 = f32(rng_.normal(c, 0.0, 0.1)),
                               rv0 = f32(rng_.uniform(c, 0.5, 1.5));
      std::vector<float> rm_cpu = rm0, rv_cpu = rv0, mean_ref(c), invstd_ref(c), dw_ref(c),
                         db_ref(c);
      int64_t tracked_cpu = 2;
      Buffer y_ref(sc.dtype, numel), dx_ref(sc.dtype, numel);
      ASSERT_EQ(nk_batch_norm_forward(cpu_, &d, &p, x.data(), w.data(), b.data(), rm_cpu.data(),
                                      rv_cpu.data(), &tracked_cpu, y_ref.data(), mean_ref.data(),
                                      invstd_ref.data()),
                NK_SUCCESS);
      ASSERT_EQ(nk_batch_norm_backward(cpu_, &d, &p, x.data(), dy.data(), w.data(), nullptr,
                                       nullptr, mean_ref.data(), invstd_ref.data(), dx_ref.data(),
                                       dw_ref.data(), db_ref.data()),
                NK_SUCCESS);
      const DeviceBuffer xd(x), dyd(dy), wd(Buffer(NK_F32, f64(w))), bd(Buffer(NK_F32, f64(b)));
      std::vector<NcclStep> runs;
      for (bool with_workspace : {false, true}) {
        runs.push_back(nccl_step_buffers(sc.dtype, numel, c, rm0, rv0, 2));
        NcclStep& o = runs.back();
        void* workspace = nullptr;
        if (with_workspace) {
          ASSERT_EQ(cudaMalloc(&workspace, std::max(fwd, bwd)), cudaSuccess);
          ASSERT_EQ(nk_context_set_workspace(gpu_, workspace, std::max(fwd, bwd)), NK_SUCCESS);
        }
        ASSERT_EQ(nk_sync_batch_norm_forward(gpu_, comm_, &d, &p, xd.data(), wd.f32(), bd.f32(),
                                             o.rm.f32(), o.rv.f32(), i64(o.tracked), o.y.data(),
                                             o.save_mean.f32(), o.save_invstd.f32()),
                  NK_SUCCESS)
            << nk_last_error();
        ASSERT_EQ(nk_sync_batch_norm_backward(gpu_, comm_, &d, xd.data(), dyd.data(), wd.f32(),
                                              o.save_mean.f32(), o.save_invstd.f32(), o.dx.data(),
                                              o.dw.f32(), o.db.f32()),
                  NK_SUCCESS)
            << nk_last_error();
        ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
        if (with_workspace) {
          ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);
          cudaFree(workspace);
        }
      }
      const NcclStep& o = runs[0];
      const Tolerance t = gpu_tolerance(sc.dtype);
      const double scale = 0.5 + 2.0, max_invstd = max_abs(f64(invstd_ref));
      expect_close(o.y.download().values(), y_ref.values(), t, "y");
      expect_close(o.save_mean.download().values(), f64(mean_ref), {2e-6 * scale, 1e-6},
                   "save_mean");
      expect_close(o.save_invstd.download().values(), f64(invstd_ref), {0, 2e-5}, "save_invstd");
      expect_close(o.rm.download().values(), f64(rm_cpu), {1e-5, 1e-5}, "running_mean");
      expect_close(o.rv.download().values(), f64(rv_cpu), {1e-5, 2e-5}, "running_var");
      EXPECT_EQ(int64_values(o.tracked, 1)[0], tracked_cpu);
      const double dx_scale = max_abs(dy.values()) * max_invstd * std::max(1.0, max_abs(f64(w)));
      expect_close(o.dx.download().values(), dx_ref.values(), {t.atol * dx_scale, t.rtol}, "dx");
      const double sum_atol = 1e-6 * 4 * static_cast<double>(s.n * s.s);
      expect_close(o.dw.download().values(), f64(dw_ref), {sum_atol, 1e-5}, "dweight");
      expect_close(o.db.download().values(), f64(db_ref), {sum_atol, 1e-5}, "dbias");
      for (auto member :
           {&NcclStep::y, &NcclStep::save_mean, &NcclStep::save_invstd, &NcclStep::rm,
            &NcclStep::rv, &NcclStep::tracked, &NcclStep::dx, &NcclStep::dw, &NcclStep::db}) {
        EXPECT_EQ((runs[1].*member).download().bytes(), (runs[0].*member).download().bytes())
            << "with a workspace against without";
      }
    }
  }
}

// A rank without samples (N = 0, x = y = dx = dy = NULL) alone: global count 0, so the saved
// statistics are (0, 1/sqrt(eps)), the running statistics and the counter stay as they were, and
// dweight and dbias are 0; no NaN anywhere.
TEST_F(GpuSyncBatchNormNccl, EmptyShardAlone) {
  const nk_act_desc d{0, 5, 3, NK_NHWC, NK_BF16};
  const int64_t c = d.c;
  nk_norm_params p = nk_norm_params_default();
  p.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  size_t fwd = 0, bwd = 0;
  sizes(d, p, &fwd, &bwd);
  if (IsSkipped() || HasFatalFailure()) return;
  const DeviceBuffer rm = filled(c, 0.25), rv = filled(c, 2.0), tracked = int64_buffer({4});
  DeviceBuffer sm(NK_F32, c), si(NK_F32, c), dw(NK_F32, c), db(NK_F32, c);
  ASSERT_EQ(nk_sync_batch_norm_forward(gpu_, comm_, &d, &p, nullptr, nullptr, nullptr, rm.f32(),
                                       rv.f32(), i64(tracked), nullptr, sm.f32(), si.f32()),
            NK_SUCCESS)
      << nk_last_error();
  ASSERT_EQ(nk_sync_batch_norm_backward(gpu_, comm_, &d, nullptr, nullptr, nullptr, sm.f32(),
                                        si.f32(), nullptr, dw.f32(), db.f32()),
            NK_SUCCESS)
      << nk_last_error();
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_EQ(sm.download().values(), std::vector<double>(c, 0.0));
  expect_close(si.download().values(), std::vector<double>(c, 1 / std::sqrt(p.eps)), {0, 1e-6},
               "save_invstd");
  EXPECT_EQ(rm.download().values(), std::vector<double>(c, 0.25));
  EXPECT_EQ(rv.download().values(), std::vector<double>(c, 2.0));
  EXPECT_EQ(int64_values(tracked, 1)[0], 4);
  EXPECT_EQ(dw.download().values(), std::vector<double>(c, 0.0));
  EXPECT_EQ(db.download().values(), std::vector<double>(c, 0.0));
}

// The NCCL forward follows the global forward's device rule for num_batches_tracked: outside
// [0, INT64_MAX - 1] it and the running statistics stay as they were (both momentum modes), y and
// the saved statistics are the whole batch's (the CPU backend's training forward without running
// buffers).
TEST_F(GpuSyncBatchNormNccl, CounterThatCannotAdvanceLeavesRunningStatistics) {
  const nk_act_desc d{4, 6, 7, NK_NCHW, NK_F32};
  const int64_t c = d.c, numel = d.n * d.c * d.spatial;
  size_t fwd = 0, bwd = 0;
  sizes(d, nk_norm_params_default(), &fwd, &bwd);
  if (IsSkipped() || HasFatalFailure()) return;
  const Buffer x(NK_F32, rng_.normal(numel, 0.5, 2.0));
  const DeviceBuffer xd(x);
  for (nk_momentum_mode mode : {NK_MOMENTUM_EXPONENTIAL, NK_MOMENTUM_CUMULATIVE}) {
    nk_norm_params p = nk_norm_params_default();
    p.momentum_mode = mode;
    Buffer y_ref(NK_F32, numel);
    std::vector<float> sm_ref(c), si_ref(c);
    ASSERT_EQ(nk_batch_norm_forward(cpu_, &d, &p, x.data(), nullptr, nullptr, nullptr, nullptr,
                                    nullptr, y_ref.data(), sm_ref.data(), si_ref.data()),
              NK_SUCCESS)
        << nk_last_error();
    for (int64_t bad : {int64_t{-1}, rng_.integer(INT64_MIN, -2), INT64_MAX}) {
      SCOPED_TRACE(testing::Message() << "mode " << mode << " counter " << bad);
      const Buffer rm_host(NK_F32, rng_.normal(c)), rv_host(NK_F32, rng_.uniform(c, 0.5, 2.0));
      const DeviceBuffer rm(rm_host), rv(rv_host), tracked = int64_buffer({bad});
      DeviceBuffer y(NK_F32, numel), sm(NK_F32, c), si(NK_F32, c);
      ASSERT_EQ(
          nk_sync_batch_norm_forward(gpu_, comm_, &d, &p, xd.data(), nullptr, nullptr, rm.f32(),
                                     rv.f32(), i64(tracked), y.data(), sm.f32(), si.f32()),
          NK_SUCCESS)
          << nk_last_error();
      ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
      EXPECT_EQ(rm.download().bytes(), rm_host.bytes()) << "running_mean written";
      EXPECT_EQ(rv.download().bytes(), rv_host.bytes()) << "running_var written";
      EXPECT_EQ(int64_values(tracked, 1)[0], bad);
      expect_close(y.download().values(), y_ref.values(), gpu_tolerance(NK_F32), "y");
      expect_close(sm.download().values(), f64(sm_ref), {2e-6 * 2.5, 1e-6}, "save_mean");
      expect_close(si.download().values(), f64(si_ref), {0, 2e-5}, "save_invstd");
    }
  }
}

// With a workspace set from the size queries, the forward (cumulative momentum) captured in a CUDA
// graph and replayed three times equals three eager calls, and a captured backward one eager call,
// bit for bit. Skipped, with NCCL's or CUDA's reason, where NCCL refuses to be captured.
TEST_F(GpuSyncBatchNormNccl, CapturedCallsReplay) {
  if (const std::string why = graphs_unsupported_reason(); !why.empty()) GTEST_SKIP() << why;
  const nk_act_desc d{8, 32, 196, NK_NHWC, NK_F16};
  const int64_t c = d.c, numel = d.n * d.c * d.spatial;
  nk_norm_params p = nk_norm_params_default();
  p.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  size_t fwd = 0, bwd = 0;
  sizes(d, p, &fwd, &bwd);
  if (IsSkipped() || HasFatalFailure()) return;
  const size_t bytes = std::max(fwd, bwd);
  void* workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&workspace, bytes), cudaSuccess);
  ASSERT_EQ(nk_context_set_workspace(gpu_, workspace, bytes), NK_SUCCESS);
  const Buffer x(d.dtype, rng_.normal(numel, 1.0, 2.0)), dy(d.dtype, rng_.normal(numel));
  const std::vector<float> w = f32(rng_.normal(c, 1.0, 0.5)), b = f32(rng_.normal(c)),
                           rm = f32(rng_.normal(c)), rv = f32(rng_.uniform(c, 0.5, 1.5));
  const DeviceBuffer xd(x), dyd(dy), wd(Buffer(NK_F32, f64(w))), bd(Buffer(NK_F32, f64(b)));
  NcclStep eager = nccl_step_buffers(d.dtype, numel, c, rm, rv, 0),
           graphed = nccl_step_buffers(d.dtype, numel, c, rm, rv, 0);
  auto forward = [&](NcclStep& o) {
    return nk_sync_batch_norm_forward(gpu_, comm_, &d, &p, xd.data(), wd.f32(), bd.f32(),
                                      o.rm.f32(), o.rv.f32(), i64(o.tracked), o.y.data(),
                                      o.save_mean.f32(), o.save_invstd.f32());
  };
  auto backward = [&](NcclStep& o) {
    return nk_sync_batch_norm_backward(gpu_, comm_, &d, xd.data(), dyd.data(), wd.f32(),
                                       o.save_mean.f32(), o.save_invstd.f32(), o.dx.data(),
                                       o.dw.f32(), o.db.f32());
  };
  for (int i = 0; i < 3; ++i) ASSERT_EQ(forward(eager), NK_SUCCESS) << nk_last_error();
  ASSERT_EQ(backward(eager), NK_SUCCESS) << nk_last_error();
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);

  // Thread-local capture: NCCL's own threads may make CUDA calls meanwhile.
  auto capture = [&](auto&& call, cudaGraph_t* graph, std::string* why) {
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      *why = "cudaStreamBeginCapture failed";
      return false;
    }
    const nk_status st = call();
    const std::string message = st == NK_SUCCESS ? "" : nk_last_error();
    const cudaError_t end = cudaStreamEndCapture(stream_, graph);
    if (st != NK_SUCCESS || end != cudaSuccess) {
      *why = st != NK_SUCCESS ? message : std::string(cudaGetErrorString(end));
      cudaGetLastError();
      return false;
    }
    return true;
  };
  cudaGraph_t forward_graph = nullptr, backward_graph = nullptr;
  std::string why;
  const bool captured = capture([&] { return forward(graphed); }, &forward_graph, &why) &&
                        capture([&] { return backward(graphed); }, &backward_graph, &why);
  if (!captured) {
    if (forward_graph) cudaGraphDestroy(forward_graph);
    nk_context_set_workspace(gpu_, nullptr, 0);
    cudaFree(workspace);
    GTEST_SKIP() << "the NCCL path could not be captured in a CUDA graph here: " << why;
  }
  cudaGraphExec_t forward_exec, backward_exec;
  ASSERT_EQ(cudaGraphInstantiate(&forward_exec, forward_graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&backward_exec, backward_graph, 0), cudaSuccess);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(forward_exec, stream_), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(backward_exec, stream_), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  for (auto member :
       {&NcclStep::y, &NcclStep::save_mean, &NcclStep::save_invstd, &NcclStep::rm, &NcclStep::rv,
        &NcclStep::tracked, &NcclStep::dx, &NcclStep::dw, &NcclStep::db}) {
    EXPECT_EQ((graphed.*member).download().bytes(), (eager.*member).download().bytes());
  }
  EXPECT_EQ(int64_values(graphed.tracked, 1)[0], 3);
  cudaGraphExecDestroy(forward_exec);
  cudaGraphExecDestroy(backward_exec);
  cudaGraphDestroy(forward_graph);
  cudaGraphDestroy(backward_graph);
  ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);
  cudaFree(workspace);
}

// A NULL communicator, a workspace smaller than the size query, a missing input, the inference
// phase: refused, nothing written.
TEST_F(GpuSyncBatchNormNccl, ErrorsWriteNothing) {
  const nk_act_desc d{4, 16, 32, NK_NCHW, NK_F32};
  const int64_t c = d.c, numel = d.n * d.c * d.spatial;
  const nk_norm_params p = nk_norm_params_default();
  size_t fwd = 0, bwd = 0;
  sizes(d, p, &fwd, &bwd);
  if (IsSkipped() || HasFatalFailure()) return;
  size_t ignored = 0;
  EXPECT_EQ(nk_sync_batch_norm_forward_workspace_size(gpu_, nullptr, &d, &p, &ignored),
            NK_ERROR_INVALID_VALUE);
  const DeviceBuffer x(Buffer(NK_F32, rng_.normal(numel))), dy(Buffer(NK_F32, rng_.normal(numel)));
  const DeviceBuffer rm = filled(c, 0.25), rv = filled(c, 2.0), tracked = int64_buffer({7});
  const DeviceBuffer sm = filled(c, 0.1), si = filled(c, 1.0);
  DeviceBuffer y(NK_F32, numel), out(NK_F32, 2 * c), dx(NK_F32, numel);
  const Buffer y_before = y.download(), out_before = out.download();
  auto forward = [&](void* comm, const nk_norm_params& params, const void* xp) {
    return nk_sync_batch_norm_forward(gpu_, comm, &d, &params, xp, nullptr, nullptr, rm.f32(),
                                      rv.f32(), i64(tracked), y.data(), out.f32(), out.f32() + c);
  };
  auto backward = [&](void* comm) {
    return nk_sync_batch_norm_backward(gpu_, comm, &d, x.data(), dy.data(), nullptr, sm.f32(),
                                       si.f32(), dx.data(), out.f32(), out.f32() + c);
  };
  EXPECT_EQ(forward(nullptr, p, x.data()), NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("nccl_comm"), std::string::npos) << nk_last_error();
  EXPECT_EQ(backward(nullptr), NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(forward(comm_, p, nullptr), NK_ERROR_INVALID_VALUE);
  nk_norm_params inference = p;
  inference.phase = NK_INFERENCE;
  EXPECT_EQ(forward(comm_, inference, x.data()), NK_ERROR_INVALID_VALUE);
  void* small = nullptr;
  ASSERT_LT(size_t{256}, std::min(fwd, bwd));
  ASSERT_EQ(cudaMalloc(&small, 256), cudaSuccess);
  ASSERT_EQ(nk_context_set_workspace(gpu_, small, 256), NK_SUCCESS);
  EXPECT_EQ(forward(comm_, p, x.data()), NK_ERROR_WORKSPACE);
  EXPECT_EQ(backward(comm_), NK_ERROR_WORKSPACE);
  ASSERT_EQ(nk_context_set_workspace(gpu_, nullptr, 0), NK_SUCCESS);
  cudaFree(small);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_EQ(y.download().bytes(), y_before.bytes());
  EXPECT_EQ(dx.download().bytes(), y_before.bytes());
  EXPECT_EQ(out.download().bytes(), out_before.bytes());
  EXPECT_EQ(rm.download().values(), std::vector<double>(c, 0.25));
  EXPECT_EQ(rv.download().values(), std::vector<double>(c, 2.0));
  EXPECT_EQ(int64_values(tracked, 1)[0], 7);
}

// A communicator on another device than the context is refused, naming both; needs two devices.
TEST_F(GpuSyncBatchNormNccl, CommunicatorOnAnotherDevice) {
  int devices = 0;
  ASSERT_EQ(cudaGetDeviceCount(&devices), cudaSuccess);
  if (devices < 2) {
    GTEST_SKIP()
        << "needs two CUDA devices (a context on device 1 with this test's communicator on "
           "device 0); this machine has "
        << devices;
  }
  nk_context other = nullptr;
  ASSERT_EQ(nk_context_create(NK_BACKEND_CUDA, 1, &other), NK_SUCCESS) << nk_last_error();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);  // creating it made device 1 current
  const nk_act_desc d{2, 4, 3, NK_NCHW, NK_F32};
  const nk_norm_params p = nk_norm_params_default();
  size_t bytes = 7;
  EXPECT_EQ(nk_sync_batch_norm_forward_workspace_size(other, comm_, &d, &p, &bytes),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("device 0"), std::string::npos) << nk_last_error();
  EXPECT_EQ(bytes, 7u);
  const DeviceBuffer x(Buffer(NK_F32, rng_.normal(24)));
  DeviceBuffer y(NK_F32, 24);
  const Buffer before = y.download();
  EXPECT_EQ(nk_sync_batch_norm_forward(other, comm_, &d, &p, x.data(), nullptr, nullptr, nullptr,
                                       nullptr, nullptr, y.data(), nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(y.download().bytes(), before.bytes());
  nk_context_destroy(other);
}

#endif  // NORMKIT_TEST_WITH_CUDA

}  // namespace
}  // namespace nkt
