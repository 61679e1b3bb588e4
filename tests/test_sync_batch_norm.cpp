// Synchronized batch norm on the CPU: a batch split into K shards along N (uneven, one shard of a
// single sample, and an empty rank) gives, through local statistics, the rank-order merge and the
// global forward, the whole batch's y, saved statistics and running update; and through local sums,
// their sum over ranks and the global backward, the whole batch's dx, dweight and dbias. Both
// layouts. Plus every error of the two-phase API.
#include <cmath>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using nkt::Buffer;

struct Shard {
  int64_t n0, n;  // first sample and sample count
};

class SyncBatchNorm : public testing::TestWithParam<nk_layout> {
 protected:
  nkt::CpuContext ctx_;
  nkt::Random rng_;
};

TEST_P(SyncBatchNorm, ShardsEqualTheWholeBatch) {
  const nk_layout layout = GetParam();
  const int64_t n = 7, c = 3, s = 5, per_sample = c * s;
  const std::vector<Shard> shards = {{0, 3}, {3, 1}, {4, 0}, {4, 3}};  // rank 2 has no samples
  const Buffer x(NK_F32, rng_.normal(n * per_sample, 2.0, 3.0)),
      dy(NK_F32, rng_.normal(n * per_sample));
  const std::vector<float> w = {1.5f, -0.5f, 0.75f}, b = {0.1f, 0.2f, 0.3f};
  nk_norm_params p = nk_norm_params_default();

  // The whole batch on one "rank".
  Buffer y_ref(NK_F32, n * per_sample), dx_ref(NK_F32, n * per_sample);
  std::vector<float> rm_ref = {0, 0, 0}, rv_ref = {1, 1, 1}, mean_ref(c), invstd_ref(c), dw_ref(c),
                     db_ref(c);
  int64_t tracked_ref = 0;
  const nk_act_desc whole{n, c, s, layout, NK_F32};
  ASSERT_EQ(nk_batch_norm_forward(ctx_, &whole, &p, x.data(), w.data(), b.data(), rm_ref.data(),
                                  rv_ref.data(), &tracked_ref, y_ref.data(), mean_ref.data(),
                                  invstd_ref.data()),
            NK_SUCCESS);
  ASSERT_EQ(nk_batch_norm_backward(ctx_, &whole, &p, x.data(), dy.data(), w.data(), nullptr,
                                   nullptr, mean_ref.data(), invstd_ref.data(), dx_ref.data(),
                                   dw_ref.data(), db_ref.data()),
            NK_SUCCESS);

  // Phase 1 on every rank, then the "all-gather".
  const int64_t ranks = static_cast<int64_t>(shards.size());
  std::vector<int64_t> counts(ranks, 0);
  std::vector<float> means(ranks * c, 0.0f), m2s(ranks * c, 0.0f);
  auto at = [&](const Buffer& buf, const Shard& sh) {
    return static_cast<const float*>(buf.data()) + sh.n0 * per_sample;
  };
  for (int64_t r = 0; r < ranks; ++r) {
    if (shards[r].n == 0) continue;  // an empty rank sends count 0
    const nk_act_desc d{shards[r].n, c, s, layout, NK_F32};
    ASSERT_EQ(nk_batch_norm_local_stats(ctx_, &d, at(x, shards[r]), &counts[r], &means[r * c],
                                        &m2s[r * c]),
              NK_SUCCESS)
        << nk_last_error();
  }
  // Phase 2 on every rank: each merges in rank order and normalizes its shard.
  Buffer y(NK_F32, n * per_sample), dx(NK_F32, n * per_sample);
  y.poison();
  dx.poison();
  std::vector<float> sum_dy(c, 0.0f), sum_dy_xhat(c, 0.0f);
  std::vector<std::vector<float>> rank_rm, rank_rv;
  for (int64_t r = 0; r < ranks; ++r) {
    int64_t total = 0;
    std::vector<float> mean(c), m2(c);
    ASSERT_EQ(nk_batch_norm_merge_stats(ctx_, ranks, c, counts.data(), means.data(), m2s.data(),
                                        &total, mean.data(), m2.data()),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(total, n * s);
    if (shards[r].n == 0) continue;
    std::vector<float> rm = {0, 0, 0}, rv = {1, 1, 1}, sm(c), si(c);
    int64_t tracked = 0;
    const nk_act_desc d{shards[r].n, c, s, layout, NK_F32};
    ASSERT_EQ(nk_batch_norm_forward_global(
                  ctx_, &d, &p, &total, mean.data(), m2.data(), at(x, shards[r]), w.data(),
                  b.data(), rm.data(), rv.data(), &tracked,
                  static_cast<float*>(y.data()) + shards[r].n0 * per_sample, sm.data(), si.data()),
              NK_SUCCESS)
        << nk_last_error();
    EXPECT_EQ(tracked, 1);
    nkt::expect_close(std::vector<double>(sm.begin(), sm.end()),
                      std::vector<double>(mean_ref.begin(), mean_ref.end()), {1e-6, 1e-6},
                      "save_mean");
    nkt::expect_close(std::vector<double>(si.begin(), si.end()),
                      std::vector<double>(invstd_ref.begin(), invstd_ref.end()), {0, 1e-6},
                      "save_invstd");
    nkt::expect_close(std::vector<double>(rm.begin(), rm.end()),
                      std::vector<double>(rm_ref.begin(), rm_ref.end()), {1e-6, 1e-6},
                      "running_mean");
    nkt::expect_close(std::vector<double>(rv.begin(), rv.end()),
                      std::vector<double>(rv_ref.begin(), rv_ref.end()), {1e-6, 1e-6},
                      "running_var");
    // Backward phase 1 on this rank, accumulated as the all-reduce would.
    std::vector<float> ld(c), ldx(c);
    ASSERT_EQ(nk_batch_norm_backward_local_sums(ctx_, &d, at(x, shards[r]), at(dy, shards[r]),
                                                sm.data(), si.data(), ld.data(), ldx.data()),
              NK_SUCCESS)
        << nk_last_error();
    for (int64_t ch = 0; ch < c; ++ch) {
      sum_dy[ch] += ld[ch];
      sum_dy_xhat[ch] += ldx[ch];
    }
  }
  nkt::expect_close(y.values(), y_ref.values(), nkt::output_tolerance(NK_F32), "y");
  // Backward phase 2 on every rank with the summed sums.
  const int64_t global = n * s;
  for (int64_t r = 0; r < ranks; ++r) {
    if (shards[r].n == 0) continue;
    const nk_act_desc d{shards[r].n, c, s, layout, NK_F32};
    ASSERT_EQ(nk_batch_norm_backward_global(
                  ctx_, &d, &global, sum_dy.data(), sum_dy_xhat.data(), at(x, shards[r]),
                  at(dy, shards[r]), w.data(), mean_ref.data(), invstd_ref.data(),
                  static_cast<float*>(dx.data()) + shards[r].n0 * per_sample),
              NK_SUCCESS)
        << nk_last_error();
  }
  nkt::expect_close(dx.values(), dx_ref.values(), {1e-5, 1e-5}, "dx");
  nkt::expect_close(std::vector<double>(sum_dy_xhat.begin(), sum_dy_xhat.end()),
                    std::vector<double>(dw_ref.begin(), dw_ref.end()), {1e-5, 1e-5}, "dweight");
  nkt::expect_close(std::vector<double>(sum_dy.begin(), sum_dy.end()),
                    std::vector<double>(db_ref.begin(), db_ref.end()), {1e-5, 1e-5}, "dbias");
}

INSTANTIATE_TEST_SUITE_P(Layouts, SyncBatchNorm, testing::Values(NK_NCHW, NK_NHWC),
                         [](const testing::TestParamInfo<nk_layout>& i) {
                           return i.param == NK_NCHW ? "nchw" : "nhwc";
                         });

// Four ranks of one value per channel each: illegal alone, fine as a global batch of four.
TEST(SyncBatchNormSingles, OneValuePerRank) {
  nkt::CpuContext ctx;
  const std::vector<float> values = {1, 3, 5, 7};  // channel 0 only: mean 4, biased var 5
  std::vector<int64_t> counts(4);
  std::vector<float> means(4), m2s(4);
  const nk_act_desc d{1, 1, 1, NK_NCHW, NK_F32};
  for (int r = 0; r < 4; ++r) {
    ASSERT_EQ(nk_batch_norm_local_stats(ctx, &d, &values[r], &counts[r], &means[r], &m2s[r]),
              NK_SUCCESS);
  }
  int64_t total = 0;
  float mean = 0, m2 = 0;
  ASSERT_EQ(nk_batch_norm_merge_stats(ctx, 4, 1, counts.data(), means.data(), m2s.data(), &total,
                                      &mean, &m2),
            NK_SUCCESS);
  EXPECT_EQ(total, 4);
  EXPECT_FLOAT_EQ(mean, 4.0f);
  EXPECT_FLOAT_EQ(m2, 20.0f);
  nk_norm_params p = nk_norm_params_default();
  p.eps = 0.0;
  float y = 0, rm = 0, rv = 1;
  ASSERT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, &total, &mean, &m2, &values[3], nullptr,
                                         nullptr, &rm, &rv, nullptr, &y, nullptr, nullptr),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_FLOAT_EQ(y, static_cast<float>(3 / std::sqrt(5.0)));
  EXPECT_FLOAT_EQ(rv, static_cast<float>(0.9 + 0.1 * 20.0 / 3));  // unbiased with the global count
  float alone = -7;
  EXPECT_EQ(nk_batch_norm_forward(ctx, &d, &p, &values[3], nullptr, nullptr, nullptr, nullptr,
                                  nullptr, &alone, nullptr, nullptr),
            NK_ERROR_BAD_SHAPE);
  EXPECT_EQ(alone, -7.0f);
}

TEST(SyncBatchNormErrors, EveryErrorWritesNothing) {
  nkt::CpuContext ctx;
  const int64_t one = 1, three = 3, eight = 8;
  const std::vector<int64_t> zero = {0, 0}, negative = {3, -1};
  const std::vector<float> means = {1, 2}, m2s = {1, 1};
  int64_t total = -5;
  float mean = -7, m2 = -7;
  EXPECT_EQ(nk_batch_norm_merge_stats(ctx, 2, 1, zero.data(), means.data(), m2s.data(), &total,
                                      &mean, &m2),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("every rank has 0 samples"), std::string::npos);
  EXPECT_EQ(nk_batch_norm_merge_stats(ctx, 2, 1, negative.data(), means.data(), m2s.data(), &total,
                                      &mean, &m2),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_batch_norm_merge_stats(ctx, 0, 1, zero.data(), means.data(), m2s.data(), &total,
                                      &mean, &m2),
            NK_ERROR_BAD_SHAPE);
  EXPECT_EQ(
      nk_batch_norm_merge_stats(ctx, 2, 1, nullptr, means.data(), m2s.data(), &total, &mean, &m2),
      NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(total, -5);
  EXPECT_EQ(mean, -7.0f);
  const nk_act_desc d{2, 1, 2, NK_NCHW, NK_F32};
  const std::vector<float> x = {1, 2, 3, 4};
  std::vector<float> y(4, -7.0f);
  float gm = 2.5f, gm2 = 5.0f, rm = 0.5f, rv = 2.0f;
  nk_norm_params p = nk_norm_params_default();
  EXPECT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, &three, &gm, &gm2, x.data(), nullptr, nullptr,
                                         &rm, &rv, nullptr, y.data(), nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(
      std::string(nk_last_error()).find("*global_count = 3: expected >= 2 and >= this shard's 4"),
      std::string::npos)
      << nk_last_error();
  EXPECT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, &one, &gm, &gm2, x.data(), nullptr, nullptr,
                                         &rm, &rv, nullptr, y.data(), nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  p.phase = NK_INFERENCE;
  EXPECT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, &eight, &gm, &gm2, x.data(), nullptr, nullptr,
                                         &rm, &rv, nullptr, y.data(), nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  p.phase = NK_TRAINING;
  EXPECT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, &eight, nullptr, &gm2, x.data(), nullptr,
                                         nullptr, &rm, &rv, nullptr, y.data(), nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, &eight, &gm, &gm2, x.data(), nullptr, nullptr,
                                         &rm, &rv, nullptr, const_cast<float*>(x.data()) + 1,
                                         nullptr, nullptr),
            NK_ERROR_INVALID_VALUE)
      << "overlap";
  EXPECT_EQ(y, std::vector<float>(4, -7.0f));
  EXPECT_EQ(rm, 0.5f);
  EXPECT_EQ(rv, 2.0f);
  float sd = -7, sdx = -7;
  const float sm = 2.5f, si = 1.0f;
  EXPECT_EQ(nk_batch_norm_backward_local_sums(ctx, &d, x.data(), nullptr, &sm, &si, &sd, &sdx),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_batch_norm_backward_local_sums(ctx, &d, x.data(), x.data(), &sm, &si, nullptr, &sdx),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(sd, -7.0f);
  EXPECT_EQ(nk_batch_norm_backward_global(ctx, &d, &three, &sd, &sdx, x.data(), x.data(), nullptr,
                                          &sm, &si, y.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(nk_batch_norm_backward_global(ctx, &d, &eight, &sd, &sdx, x.data(), x.data(), nullptr,
                                          nullptr, &si, y.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(y, std::vector<float>(4, -7.0f));
  int64_t count = -1;
  EXPECT_EQ(nk_batch_norm_local_stats(ctx, &d, x.data(), &count, nullptr, &m2),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(count, -1);
}

// An empty rank anywhere (first included) adds nothing, whatever its slots hold.
TEST(SyncBatchNormSingles, EmptyRanksAddNothingEvenFirst) {
  nkt::CpuContext ctx;
  const std::vector<int64_t> counts = {0, 2, 0};
  const std::vector<float> means = {NAN, 1.0f, NAN}, m2s = {NAN, 0.5f, NAN};
  int64_t total = 0;
  float mean = 0, m2 = 0;
  ASSERT_EQ(nk_batch_norm_merge_stats(ctx, 3, 1, counts.data(), means.data(), m2s.data(), &total,
                                      &mean, &m2),
            NK_SUCCESS);
  EXPECT_EQ(total, 2);
  EXPECT_EQ(mean, 1.0f);
  EXPECT_EQ(m2, 0.5f);
  const std::vector<int64_t> huge = {INT64_MAX, 1};
  const std::vector<float> two = {1, 2};
  EXPECT_EQ(
      nk_batch_norm_merge_stats(ctx, 2, 1, huge.data(), two.data(), two.data(), &total, &mean, &m2),
      NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("past int64"), std::string::npos);
  EXPECT_EQ(
      nk_batch_norm_merge_stats(ctx, 2, 0, huge.data(), two.data(), two.data(), &total, &mean, &m2),
      NK_ERROR_BAD_SHAPE);
  EXPECT_EQ(
      nk_batch_norm_merge_stats(ctx, 1, 1, counts.data() + 1, means.data() + 1, m2s.data() + 1,
                                &total, &mean, reinterpret_cast<float*>(&total)),
      NK_ERROR_INVALID_VALUE)
      << "m2 over total_count";
  EXPECT_EQ(total, 2);
}

// Buffers of the two-phase API are checked like every op's: alignment, overlap, the workspace.
TEST(SyncBatchNormErrors, BuffersAreChecked) {
  nkt::CpuContext ctx;
  const int64_t eight = 8;
  const nk_act_desc d{2, 2, 2, NK_NCHW, NK_F32};
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8}, out(8, -7.0f);
  int64_t count = -1;
  std::vector<float> both(2, -7.0f);
  EXPECT_EQ(nk_batch_norm_local_stats(ctx, &d, x.data(), &count, both.data(), both.data()),
            NK_ERROR_INVALID_VALUE)
      << "mean == m2";
  EXPECT_EQ(
      nk_batch_norm_local_stats(ctx, &d, x.data(),
                                reinterpret_cast<int64_t*>(reinterpret_cast<char*>(out.data()) + 1),
                                both.data(), out.data() + 4),
      NK_ERROR_INVALID_VALUE)
      << "misaligned count";
  EXPECT_EQ(count, -1);
  // The global statistics inside the workspace the forward writes its scratch to.
  alignas(256) static float workspace[256];
  ASSERT_EQ(nk_context_set_workspace(ctx, workspace, sizeof(workspace)), NK_SUCCESS);
  workspace[0] = 4.5f;
  workspace[1] = 4.5f;
  workspace[2] = 20.0f;
  workspace[3] = 20.0f;
  nk_norm_params p = nk_norm_params_default();
  EXPECT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, &eight, workspace, workspace + 2, x.data(),
                                         nullptr, nullptr, nullptr, nullptr, nullptr, out.data(),
                                         nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("the context's workspace"), std::string::npos)
      << nk_last_error();
  ASSERT_EQ(nk_context_set_workspace(ctx, nullptr, 0), NK_SUCCESS);
  std::vector<float> sums = {1, 2, 3, 4};  // sum_dy, sum_dy_xhat
  const std::vector<float> sm = {2.5f, 6.5f}, si = {1.0f, 1.0f};
  EXPECT_EQ(nk_batch_norm_backward_global(ctx, &d, &eight, sums.data(), sums.data() + 2, x.data(),
                                          x.data(), nullptr, sm.data(), si.data(), sums.data()),
            NK_ERROR_INVALID_VALUE)
      << "dx over sum_dy";
  EXPECT_EQ(sums, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(out, std::vector<float>(8, -7.0f));
}

// The global count is a buffer in the context's memory like the others: required, aligned, and
// never inside an output.
TEST(SyncBatchNormErrors, GlobalCountIsCheckedLikeEveryBuffer) {
  nkt::CpuContext ctx;
  const nk_act_desc d{2, 1, 2, NK_NCHW, NK_F32};
  const std::vector<float> x = {1, 2, 3, 4};
  std::vector<float> y(4, -7.0f);
  float gm = 2.5f, gm2 = 5.0f, rm = 0.5f, rv = 2.0f;
  const nk_norm_params p = nk_norm_params_default();
  EXPECT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, nullptr, &gm, &gm2, x.data(), nullptr,
                                         nullptr, &rm, &rv, nullptr, y.data(), nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("global_count is NULL"), std::string::npos)
      << nk_last_error();
  alignas(8) unsigned char raw[16] = {};
  const auto* misaligned = reinterpret_cast<const int64_t*>(raw + 4);
  EXPECT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, misaligned, &gm, &gm2, x.data(), nullptr,
                                         nullptr, &rm, &rv, nullptr, y.data(), nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  // The count inside y: y would overwrite it while it is read.
  alignas(8) float y_with_count[6] = {-7, -7, -7, -7, -7, -7};
  const auto* inside = reinterpret_cast<const int64_t*>(y_with_count + 2);
  EXPECT_EQ(nk_batch_norm_forward_global(ctx, &d, &p, inside, &gm, &gm2, x.data(), nullptr, nullptr,
                                         &rm, &rv, nullptr, y_with_count, nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("global_count"), std::string::npos)
      << nk_last_error();
  EXPECT_EQ(y, std::vector<float>(4, -7.0f));
  EXPECT_EQ(rm, 0.5f);
  EXPECT_EQ(rv, 2.0f);
  float sd = 1, sdx = 1;
  const float sm = 2.5f, si = 1.0f;
  EXPECT_EQ(nk_batch_norm_backward_global(ctx, &d, nullptr, &sd, &sdx, x.data(), x.data(), nullptr,
                                          &sm, &si, y.data()),
            NK_ERROR_INVALID_VALUE);
  EXPECT_EQ(y, std::vector<float>(4, -7.0f));
}

// The NCCL path runs on CUDA contexts only: a CPU context is refused after every argument check,
// and nothing is written.
TEST(SyncBatchNormNccl, CpuContextsAreRefusedAndNothingIsWritten) {
  nkt::CpuContext ctx;
  const nk_act_desc d{2, 1, 2, NK_NCHW, NK_F32};
  const std::vector<float> x = {1, 2, 3, 4};
  std::vector<float> y(4, -7.0f);
  float rm = 0.5f, rv = 2.0f, sm = -7, si = -7;
  const nk_norm_params p = nk_norm_params_default();
  int fake_comm = 0;  // never dereferenced on a CPU context
  EXPECT_EQ(nk_sync_batch_norm_forward(ctx, &fake_comm, &d, &p, x.data(), nullptr, nullptr, &rm,
                                       &rv, nullptr, y.data(), &sm, &si),
            NK_ERROR_NOT_SUPPORTED);
  EXPECT_NE(std::string(nk_last_error()).find("CUDA contexts only"), std::string::npos)
      << nk_last_error();
  EXPECT_EQ(nk_sync_batch_norm_forward(ctx, nullptr, &d, &p, x.data(), nullptr, nullptr, &rm, &rv,
                                       nullptr, y.data(), &sm, &si),
            NK_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(nk_last_error()).find("nccl_comm is NULL"), std::string::npos);
  std::vector<float> dx(4, -7.0f);
  float dw = -7, db = -7;
  const float mean = 2.5f, invstd = 1.0f;
  EXPECT_EQ(nk_sync_batch_norm_backward(ctx, &fake_comm, &d, x.data(), x.data(), nullptr, &mean,
                                        &invstd, dx.data(), &dw, &db),
            NK_ERROR_NOT_SUPPORTED);
  size_t bytes = 123;
  EXPECT_EQ(nk_sync_batch_norm_forward_workspace_size(ctx, &fake_comm, &d, &p, &bytes),
            NK_ERROR_NOT_SUPPORTED);
  EXPECT_EQ(nk_sync_batch_norm_backward_workspace_size(ctx, &fake_comm, &d, &bytes),
            NK_ERROR_NOT_SUPPORTED);
  EXPECT_EQ(bytes, 123u);
  EXPECT_EQ(y, std::vector<float>(4, -7.0f));
  EXPECT_EQ(dx, std::vector<float>(4, -7.0f));
  EXPECT_EQ(rm, 0.5f);
  EXPECT_EQ(rv, 2.0f);
  EXPECT_EQ(sm, -7.0f);
  EXPECT_EQ(dw, -7.0f);
}

// A rank without samples passes N = 0 and NULL activations; everything else is still checked.
TEST(SyncBatchNormNccl, AnEmptyShardIsAValidShapeButOtherArgumentsAreChecked) {
  nkt::CpuContext ctx;
  const nk_act_desc empty{0, 3, 4, NK_NHWC, NK_BF16};
  nk_norm_params p = nk_norm_params_default();
  std::vector<float> rm(3, 0.5f), rv(3, 2.0f);
  int fake_comm = 0;
  // Valid: refused only for the backend.
  EXPECT_EQ(nk_sync_batch_norm_forward(ctx, &fake_comm, &empty, &p, nullptr, nullptr, nullptr,
                                       rm.data(), rv.data(), nullptr, nullptr, nullptr, nullptr),
            NK_ERROR_NOT_SUPPORTED);
  p.momentum_mode = NK_MOMENTUM_CUMULATIVE;  // needs num_batches_tracked
  EXPECT_EQ(nk_sync_batch_norm_forward(ctx, &fake_comm, &empty, &p, nullptr, nullptr, nullptr,
                                       rm.data(), rv.data(), nullptr, nullptr, nullptr, nullptr),
            NK_ERROR_INVALID_VALUE);
  const nk_act_desc negative{-1, 3, 4, NK_NHWC, NK_BF16};
  p = nk_norm_params_default();
  EXPECT_EQ(nk_sync_batch_norm_forward(ctx, &fake_comm, &negative, &p, nullptr, nullptr, nullptr,
                                       rm.data(), rv.data(), nullptr, nullptr, nullptr, nullptr),
            NK_ERROR_BAD_SHAPE);
  // The ordinary ops still refuse N = 0.
  EXPECT_EQ(nk_batch_norm_forward(ctx, &empty, &p, nullptr, nullptr, nullptr, rm.data(), rv.data(),
                                  nullptr, nullptr, nullptr, nullptr),
            NK_ERROR_BAD_SHAPE);
  EXPECT_EQ(rm, std::vector<float>(3, 0.5f));
  EXPECT_EQ(rv, std::vector<float>(3, 2.0f));
}

// A rank without samples calls every phase with N = 0 and NULL activations: count 0 and zeros
// out, and its running statistics follow the other rank's exactly.
TEST(SyncBatchNormSingles, AnEmptyRankTakesPartInEveryPhase) {
  nkt::CpuContext ctx;
  const nk_act_desc full{2, 2, 2, NK_NHWC, NK_F32}, empty{0, 2, 2, NK_NHWC, NK_F32};
  const std::vector<float> x = {1, 5, 2, 7, 4, 1, 3, 3}, dy = {1, -1, 2, 0, 0.5f, 1, -2, 3};
  std::vector<int64_t> counts = {-1, -1};
  std::vector<float> means(4, -7.0f), m2s(4, -7.0f);
  ASSERT_EQ(nk_batch_norm_local_stats(ctx, &full, x.data(), &counts[0], &means[0], &m2s[0]),
            NK_SUCCESS)
      << nk_last_error();
  ASSERT_EQ(nk_batch_norm_local_stats(ctx, &empty, nullptr, &counts[1], &means[2], &m2s[2]),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(counts[1], 0);
  EXPECT_EQ(means[2], 0.0f);
  EXPECT_EQ(m2s[3], 0.0f);
  int64_t total = 0;
  std::vector<float> mean(2), m2(2);
  ASSERT_EQ(nk_batch_norm_merge_stats(ctx, 2, 2, counts.data(), means.data(), m2s.data(), &total,
                                      mean.data(), m2.data()),
            NK_SUCCESS);
  EXPECT_EQ(total, 4);
  const nk_norm_params p = nk_norm_params_default();
  std::vector<float> rm_full = {0, 0}, rv_full = {1, 1}, rm_empty = rm_full, rv_empty = rv_full;
  std::vector<float> y(8, -7.0f), sm(2), si(2), sm_empty(2), si_empty(2);
  int64_t tracked_full = 0, tracked_empty = 0;
  ASSERT_EQ(nk_batch_norm_forward_global(ctx, &full, &p, &total, mean.data(), m2.data(), x.data(),
                                         nullptr, nullptr, rm_full.data(), rv_full.data(),
                                         &tracked_full, y.data(), sm.data(), si.data()),
            NK_SUCCESS)
      << nk_last_error();
  ASSERT_EQ(nk_batch_norm_forward_global(ctx, &empty, &p, &total, mean.data(), m2.data(), nullptr,
                                         nullptr, nullptr, rm_empty.data(), rv_empty.data(),
                                         &tracked_empty, nullptr, sm_empty.data(), si_empty.data()),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(rm_empty, rm_full);
  EXPECT_EQ(rv_empty, rv_full);
  EXPECT_EQ(tracked_empty, 1);
  EXPECT_EQ(sm_empty, sm);
  EXPECT_EQ(si_empty, si);
  EXPECT_NE(rm_full, (std::vector<float>{0, 0})) << "the running mean moved";
  std::vector<float> sums(4, -7.0f);
  ASSERT_EQ(nk_batch_norm_backward_local_sums(ctx, &empty, nullptr, nullptr, sm.data(), si.data(),
                                              &sums[0], &sums[2]),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(sums, std::vector<float>(4, 0.0f));
  ASSERT_EQ(nk_batch_norm_backward_local_sums(ctx, &full, x.data(), dy.data(), sm.data(), si.data(),
                                              &sums[0], &sums[2]),
            NK_SUCCESS);
  std::vector<float> dx(8, -7.0f);
  ASSERT_EQ(nk_batch_norm_backward_global(ctx, &empty, &total, &sums[0], &sums[2], nullptr, nullptr,
                                          nullptr, sm.data(), si.data(), dx.data()),
            NK_SUCCESS)
      << nk_last_error();
  EXPECT_EQ(dx, std::vector<float>(8, -7.0f)) << "an empty shard has no dx to write";
  // A shard of N = 0 with activations given is fine too; a negative N is not.
  const nk_act_desc negative{-1, 2, 2, NK_NHWC, NK_F32};
  EXPECT_EQ(nk_batch_norm_local_stats(ctx, &negative, x.data(), &counts[1], &means[2], &m2s[2]),
            NK_ERROR_BAD_SHAPE);
}

}  // namespace
