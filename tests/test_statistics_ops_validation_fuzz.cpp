// Random calls of the ops around statistics on the CPU backend, against the contract of
// fuzz_contract.hpp: synchronized batch norm's steps (nk_batch_norm_local_stats, _merge_stats,
// _forward_global, _backward_local_sums, _backward_global), nk_batch_norm_forward_frozen and the
// preprocessing transforms (nk_quantiles_columns, nk_scale_columns, nk_l2_normalize_rows). Each
// trial starts from a valid call and makes one to three random changes: a dimension, an enum, eps,
// momentum, a count (the local, global and per-rank counts, the counter), a field of the frozen
// statistics, the quantiles, a pointer (NULL, misaligned, moved onto another buffer or into a
// shared arena), a workspace too small or overlapping. test_sync_batch_norm.cpp,
// test_frozen_stats.cpp and test_preprocessing.cpp check each rule alone.
// Buffers hold at most 2 x 4 x 3 (or 3 x 8) activations, 8 per-channel values, 4 counts and 4
// quantiles, and a change that could be accepted never makes a call need more (larger dimensions
// only where the element count passes 2^60 - 1), so the sanitizer build would catch a read past
// one.
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_contract.hpp"
#include "test_support.hpp"

namespace {

using nkf::pick;
using nkf::Role;
using nkt::Buffer;

constexpr int kTrials = 2000;    // per op
constexpr int kMostChanges = 3;  // changes per trial: 1 to this
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

enum class StatOp {
  kLocalStats,
  kMergeStats,
  kForwardGlobal,
  kBackwardLocalSums,
  kBackwardGlobal,
  kForwardFrozen,
  kQuantiles,
  kScaleColumns,
  kL2Normalize
};

const char* OpName(StatOp op) {
  switch (op) {
    case StatOp::kLocalStats:
      return "LocalStats";
    case StatOp::kMergeStats:
      return "MergeStats";
    case StatOp::kForwardGlobal:
      return "ForwardGlobal";
    case StatOp::kBackwardLocalSums:
      return "BackwardLocalSums";
    case StatOp::kBackwardGlobal:
      return "BackwardGlobal";
    case StatOp::kForwardFrozen:
      return "ForwardFrozen";
    case StatOp::kQuantiles:
      return "Quantiles";
    case StatOp::kScaleColumns:
      return "ScaleColumns";
    case StatOp::kL2Normalize:
      return "L2Normalize";
  }
  return "?";
}

std::string ParamName(const ::testing::TestParamInfo<StatOp>& info) { return OpName(info.param); }
void PrintTo(StatOp op, std::ostream* out) { *out << OpName(op); }

// What a buffer holds, which decides its size (fp32 elements) and where a pointer may move.
enum Kind { kAct, kVec, kCounts, kQ };
int64_t Floats(int kind) { return kind == kAct ? 24 : 8; }  // kCounts: 4 int64, kQ: 4 doubles

// Every pointer argument of these ops.
struct Args {
  const void* x;
  const void* dy;
  void* y;
  void* dx;
  const float* weight;
  const float* bias;
  float* running_mean;
  float* running_var;
  int64_t* num_batches_tracked;
  float* save_mean;  // written by forward_global, read by the backward steps
  float* save_invstd;
  int64_t* count;  // local_stats' output
  float* mean;
  float* m2;
  const int64_t* counts;  // merge_stats' inputs
  const float* means;
  const float* m2s;
  int64_t* total_count;
  const int64_t* global_count;
  const float* global_mean;
  const float* global_m2;
  float* sum_dy;  // backward_local_sums' outputs, backward_global's inputs
  float* sum_dy_xhat;
  const double* q;
  float* out;
};

class StatisticsOpsValidationFuzz : public ::testing::TestWithParam<StatOp> {
 protected:
  StatOp Op() const { return GetParam(); }
  bool Coin() { return rng_.integer(0, 1) == 1; }
  std::string Fn() const {
    switch (Op()) {
      case StatOp::kLocalStats:
        return "nk_batch_norm_local_stats";
      case StatOp::kMergeStats:
        return "nk_batch_norm_merge_stats";
      case StatOp::kForwardGlobal:
        return "nk_batch_norm_forward_global";
      case StatOp::kBackwardLocalSums:
        return "nk_batch_norm_backward_local_sums";
      case StatOp::kBackwardGlobal:
        return "nk_batch_norm_backward_global";
      case StatOp::kForwardFrozen:
        return "nk_batch_norm_forward_frozen";
      case StatOp::kQuantiles:
        return "nk_quantiles_columns";
      case StatOp::kScaleColumns:
        return "nk_scale_columns";
      case StatOp::kL2Normalize:
        return "nk_l2_normalize_rows";
    }
    return "?";
  }

  template <class P>
  void Use(const char* name, int kind, Role role, P Args::*field) {
    slots_.push_back(nkf::make_slot(name, kind, role, &a_, field));
  }

  // The op's pointer arguments, in the order of its signature.
  void DeclareSlots() {
    slots_.clear();
    switch (Op()) {
      case StatOp::kLocalStats:
        Use("x", kAct, Role::kIn, &Args::x);
        Use("count", kCounts, Role::kOut, &Args::count);
        Use("mean", kVec, Role::kOut, &Args::mean);
        Use("m2", kVec, Role::kOut, &Args::m2);
        break;
      case StatOp::kMergeStats:
        Use("counts", kCounts, Role::kIn, &Args::counts);
        Use("means", kVec, Role::kIn, &Args::means);
        Use("m2s", kVec, Role::kIn, &Args::m2s);
        Use("total_count", kCounts, Role::kOut, &Args::total_count);
        Use("mean", kVec, Role::kOut, &Args::mean);
        Use("m2", kVec, Role::kOut, &Args::m2);
        break;
      case StatOp::kForwardGlobal:
        Use("global_count", kCounts, Role::kIn, &Args::global_count);
        Use("global_mean", kVec, Role::kIn, &Args::global_mean);
        Use("global_m2", kVec, Role::kIn, &Args::global_m2);
        Use("x", kAct, Role::kIn, &Args::x);
        Use("weight", kVec, Role::kIn, &Args::weight);
        Use("bias", kVec, Role::kIn, &Args::bias);
        Use("running_mean", kVec, Role::kInOut, &Args::running_mean);
        Use("running_var", kVec, Role::kInOut, &Args::running_var);
        Use("num_batches_tracked", kCounts, Role::kInOut, &Args::num_batches_tracked);
        Use("y", kAct, Role::kOut, &Args::y);
        Use("save_mean", kVec, Role::kOut, &Args::save_mean);
        Use("save_invstd", kVec, Role::kOut, &Args::save_invstd);
        break;
      case StatOp::kBackwardLocalSums:
        Use("x", kAct, Role::kIn, &Args::x);
        Use("dy", kAct, Role::kIn, &Args::dy);
        Use("save_mean", kVec, Role::kIn, &Args::save_mean);
        Use("save_invstd", kVec, Role::kIn, &Args::save_invstd);
        Use("sum_dy", kVec, Role::kOut, &Args::sum_dy);
        Use("sum_dy_xhat", kVec, Role::kOut, &Args::sum_dy_xhat);
        break;
      case StatOp::kBackwardGlobal:
        Use("global_count", kCounts, Role::kIn, &Args::global_count);
        Use("sum_dy", kVec, Role::kIn, &Args::sum_dy);
        Use("sum_dy_xhat", kVec, Role::kIn, &Args::sum_dy_xhat);
        Use("x", kAct, Role::kIn, &Args::x);
        Use("dy", kAct, Role::kIn, &Args::dy);
        Use("weight", kVec, Role::kIn, &Args::weight);
        Use("save_mean", kVec, Role::kIn, &Args::save_mean);
        Use("save_invstd", kVec, Role::kIn, &Args::save_invstd);
        Use("dx", kAct, Role::kOut, &Args::dx);
        break;
      case StatOp::kForwardFrozen:
        Use("x", kAct, Role::kIn, &Args::x);
        Use("weight", kVec, Role::kIn, &Args::weight);
        Use("bias", kVec, Role::kIn, &Args::bias);
        Use("y", kAct, Role::kOut, &Args::y);
        break;
      case StatOp::kQuantiles:
        Use("x", kAct, Role::kIn, &Args::x);
        Use("q", kQ, Role::kIn, &Args::q);
        Use("out", kAct, Role::kOut, &Args::out);
        break;
      case StatOp::kScaleColumns:
      case StatOp::kL2Normalize:
        Use("x", kAct, Role::kIn, &Args::x);
        Use("y", kAct, Role::kOut, &Args::y);
        break;
    }
  }

  void SetInt64(const std::string& buffer, int at, int64_t v) {
    std::memcpy(static_cast<char*>(buffers_.at(buffer).data()) + 8 * at, &v, sizeof v);
  }

  // Fresh buffers (inputs random, outputs poisoned) and a valid call with random options.
  void NewCall() {
    buffers_.clear();
    nkf::clear_workspace(ctx_, ws_);
    a_ = Args{};
    nkf::new_slot_buffers(slots_, Floats, rng_, buffers_);
    for (const char* positive : {"save_invstd", "running_var", "m2s", "global_m2"}) {
      if (buffers_.count(positive)) buffers_[positive] = Buffer(NK_F32, rng_.uniform(8, 0.5, 2));
    }
    // Counts: local shards of N * S = 6 values; a global batch of 12 over two ranks.
    if (buffers_.count("counts")) {
      SetInt64("counts", 0, 6);
      SetInt64("counts", 1, pick<int64_t>(rng_, {6, 0}));
    }
    if (buffers_.count("global_count")) SetInt64("global_count", 0, 12);
    if (buffers_.count("num_batches_tracked")) SetInt64("num_batches_tracked", 0, 3);
    if (buffers_.count("q")) {
      const double q[4] = {0.0, 0.25, 0.5, 1.0};
      std::memcpy(buffers_.at("q").data(), q, sizeof q);
    }
    for (nkf::Slot& s : slots_) s.set(buffers_.at(s.name).data());
    buffers_["arena"] = Buffer(NK_F32, rng_.uniform(1024, -2, 2));
    center_ = Buffer(NK_F32, rng_.uniform(8, -1, 1));
    spread_ = Buffer(NK_F32, rng_.uniform(8, 0.5, 2));

    act_ = {2, 4, 3, pick(rng_, {NK_NCHW, NK_NHWC}), pick(rng_, {NK_F32, NK_F16, NK_BF16})};
    row_ = {3, 8, act_.dtype, NK_F32};
    params_ = nk_norm_params_default();
    params_.momentum_mode = Coin() ? NK_MOMENTUM_CUMULATIVE : NK_MOMENTUM_EXPONENTIAL;
    if (Op() == StatOp::kForwardFrozen) params_.phase = NK_INFERENCE;
    ranks_ = 2;
    channels_ = 4;
    nq_ = pick<int64_t>(rng_, {1, 2, 3});
    eps_ = 1e-6;
    zero_spread_ = Coin() ? NK_ZERO_SPREAD_ZERO : NK_ZERO_SPREAD_ERROR;
    const bool frozen = Op() == StatOp::kForwardFrozen;
    stats_ = nk_frozen_stats{
        frozen ? NK_STATS_BATCH_NORM
               : pick(rng_, {NK_STATS_STANDARDIZE, NK_STATS_MIN_MAX, NK_STATS_ROBUST}),
        act_.dtype,
        NK_RUNNING_VAR_UNBIASED,
        frozen ? act_.c : row_.cols,
        100,
        params_.eps,
        center_.f32(),
        spread_.f32()};
    desc_arg_ = params_arg_ = stats_arg_ = true;
    // Optional buffers.
    if (Op() == StatOp::kForwardGlobal || Op() == StatOp::kForwardFrozen) {
      if (Coin()) a_.weight = nullptr;
      if (Coin()) a_.bias = nullptr;
    }
    if (Op() == StatOp::kForwardGlobal) {
      if (Coin()) a_.running_mean = a_.running_var = nullptr;
      if (Coin() && params_.momentum_mode == NK_MOMENTUM_EXPONENTIAL) {
        a_.num_batches_tracked = nullptr;
      }
      if (Coin()) a_.save_mean = nullptr;
      if (Coin()) a_.save_invstd = nullptr;
    }
    if (Op() == StatOp::kBackwardGlobal && Coin()) a_.weight = nullptr;
  }

  // One random change; returns what it did.
  std::string Mutate() {
    std::ostringstream what;
    const int64_t k = rng_.integer(0, 19);
    if (k <= 2) {
      what << nkf::mutate_dimension(act_, row_, rng_);
    } else if (k == 3) {
      const int d = pick(rng_, {0, 1, 2, 3, -1}), l = pick(rng_, {0, 1, 2}),
                w = pick(rng_, {0, 1, 2, 4});
      act_.dtype = row_.dtype = static_cast<nk_dtype>(d);
      act_.layout = static_cast<nk_layout>(l);
      row_.weight_dtype = static_cast<nk_dtype>(w);
      what << "dtype = " << d << ", layout = " << l << ", weight_dtype = " << w;
    } else if (k <= 6) {
      what << nkf::mutate_params(params_, eps_, rng_);
    } else if (k == 7) {
      const int64_t v = pick<int64_t>(rng_, {2, 1, 0, -1, kMax});
      ranks_ = v;
      what << "ranks = " << v;
    } else if (k == 8) {
      const int64_t v = pick<int64_t>(rng_, {1, 2, 4, 0, -1, kMax});
      channels_ = v;
      what << "channels = " << v;
    } else if (k == 9) {
      // A count: a rank's, the global one, or the counter.
      const char* which = pick(rng_, {"counts", "global_count", "num_batches_tracked"});
      const int64_t v = pick<int64_t>(rng_, {0, 1, 5, 6, 12, -1, kMax, kMax - 1});
      const int at = static_cast<int>(rng_.integer(0, 1));
      if (buffers_.count(which)) SetInt64(which, at, v);
      what << which << "[" << at << "] = " << v;
    } else if (k == 10) {
      const int f = static_cast<int>(rng_.integer(0, 5));
      if (f == 0) stats_.kind = static_cast<nk_stats_kind>(pick(rng_, {0, 1, 2, 3, 4, 5, 9}));
      if (f == 1) stats_.dtype = static_cast<nk_dtype>(pick(rng_, {0, 1, 2, 7}));
      if (f == 2) stats_.features = pick<int64_t>(rng_, {1, 2, 4, 8, 0, -1});  // arrays of 8
      if (f == 3) stats_.eps = pick(rng_, {1e-5, 1e-3, -1.0, nkv::kNaN});
      if (f == 4) stats_.running_var = static_cast<nk_running_var>(pick(rng_, {0, 1, 3}));
      if (f == 5) {
        const int i = static_cast<int>(rng_.integer(0, 7));
        spread_.f32()[i] = static_cast<float>(pick(rng_, {0.0, -1.0, nkv::kNaN, nkv::kInf}));
      }
      what << "frozen stats field " << f;
    } else if (k == 11) {
      const int v = pick(rng_, {0, 1, 4});
      zero_spread_ = static_cast<nk_zero_spread>(v);
      what << "zero_spread = " << v;
    } else if (k == 12) {
      const int64_t v = pick<int64_t>(rng_, {1, 3, 0, -1, kMax});
      nq_ = v;
      what << "nq = " << v;
    } else if (k == 13) {
      const int i = static_cast<int>(rng_.integer(0, 3));
      const double v = pick(rng_, {0.75, -0.1, 1.5, nkv::kNaN});
      if (buffers_.count("q")) {
        std::memcpy(static_cast<char*>(buffers_.at("q").data()) + 8 * i, &v, sizeof v);
      }
      what << "q[" << i << "] = " << v;
    } else if (k == 14) {
      what << nkf::mutate_workspace(ctx_, buffers_, rng_, ws_);
    } else if (k == 15) {
      const int v = pick(rng_, {0, 1, 2});
      desc_arg_ = v != 0;
      params_arg_ = v != 1;
      stats_arg_ = v != 2;
      what << (v == 0 ? "desc" : v == 1 ? "params" : "stats") << " NULL";
    } else {
      what << nkf::mutate_pointer(slots_, buffers_, rng_);
    }
    return what.str();
  }

  nk_status Run() {
    const Args& a = a_;
    const nk_act_desc* desc = desc_arg_ ? &act_ : nullptr;
    const nk_row_desc* row = desc_arg_ ? &row_ : nullptr;
    const nk_norm_params* params = params_arg_ ? &params_ : nullptr;
    const nk_frozen_stats* stats = stats_arg_ ? &stats_ : nullptr;
    switch (Op()) {
      case StatOp::kLocalStats:
        return nk_batch_norm_local_stats(ctx_, desc, a.x, a.count, a.mean, a.m2);
      case StatOp::kMergeStats:
        return nk_batch_norm_merge_stats(ctx_, ranks_, channels_, a.counts, a.means, a.m2s,
                                         a.total_count, a.mean, a.m2);
      case StatOp::kForwardGlobal:
        return nk_batch_norm_forward_global(
            ctx_, desc, params, a.global_count, a.global_mean, a.global_m2, a.x, a.weight, a.bias,
            a.running_mean, a.running_var, a.num_batches_tracked, a.y, a.save_mean, a.save_invstd);
      case StatOp::kBackwardLocalSums:
        return nk_batch_norm_backward_local_sums(ctx_, desc, a.x, a.dy, a.save_mean, a.save_invstd,
                                                 a.sum_dy, a.sum_dy_xhat);
      case StatOp::kBackwardGlobal:
        return nk_batch_norm_backward_global(ctx_, desc, a.global_count, a.sum_dy, a.sum_dy_xhat,
                                             a.x, a.dy, a.weight, a.save_mean, a.save_invstd, a.dx);
      case StatOp::kForwardFrozen:
        return nk_batch_norm_forward_frozen(ctx_, desc, params, stats, a.x, a.weight, a.bias, a.y);
      case StatOp::kQuantiles:
        return nk_quantiles_columns(ctx_, row, a.x, a.q, nq_, a.out);
      case StatOp::kScaleColumns:
        return nk_scale_columns(ctx_, row, stats, zero_spread_, a.x, a.y);
      case StatOp::kL2Normalize:
        return nk_l2_normalize_rows(ctx_, row, eps_, a.x, a.y);
    }
    return NK_ERROR_INTERNAL;
  }

  // What a successful call of the current arguments reads, may write and must fill.
  nkf::Extents Outputs() const {
    const Args& a = a_;
    nkf::Extents out;
    out.workspace = {ws_.at, ws_.bytes, 1};
    // The descriptor an op does not take may hold anything: each case reads only its own.
    const bool rows_op =
        Op() == StatOp::kQuantiles || Op() == StatOp::kScaleColumns || Op() == StatOp::kL2Normalize;
    const bool act_op = !rows_op && Op() != StatOp::kMergeStats;
    const int64_t c = act_.c, numel = act_op ? act_.n * c * act_.spatial : 0;
    const size_t e = act_op ? nkt::elem_size(act_.dtype) : 0;
    const int64_t rows = row_.rows, cols = row_.cols, values = rows_op ? rows * cols : 0;
    const size_t row_e = rows_op ? nkt::elem_size(row_.dtype) : 0;
    switch (Op()) {
      case StatOp::kLocalStats:
        out.read(a.x, numel, e);
        out.add(a.count, 1, 8, true);
        out.add(a.mean, c, 4, true);
        out.add(a.m2, c, 4, true);
        break;
      case StatOp::kMergeStats:
        out.read(a.counts, ranks_, 8);
        out.read(a.means, ranks_ * channels_, 4);
        out.read(a.m2s, ranks_ * channels_, 4);
        out.add(a.total_count, 1, 8, true);
        out.add(a.mean, channels_, 4, true);
        out.add(a.m2, channels_, 4, true);
        break;
      case StatOp::kForwardGlobal:
        out.read(a.global_count, 1, 8);
        out.read(a.global_mean, c, 4);
        out.read(a.global_m2, c, 4);
        out.read(a.weight, c, 4);
        out.read(a.bias, c, 4);
        out.read(a.x, numel, e);
        out.add(a.running_mean, c, 4, false);
        out.add(a.running_var, c, 4, false);
        out.add(a.num_batches_tracked, 1, 8, false);
        out.add(a.y, numel, e, true);
        out.add(a.save_mean, c, 4, true);
        out.add(a.save_invstd, c, 4, true);
        out.allow(a.y, a.x);
        break;
      case StatOp::kBackwardLocalSums:
        out.read(a.x, numel, e);
        out.read(a.dy, numel, e);
        out.read(a.save_mean, c, 4);
        out.read(a.save_invstd, c, 4);
        out.add(a.sum_dy, c, 4, true);
        out.add(a.sum_dy_xhat, c, 4, true);
        break;
      case StatOp::kBackwardGlobal:
        out.read(a.global_count, 1, 8);
        for (const float* p : std::initializer_list<const float*>{a.sum_dy, a.sum_dy_xhat, a.weight,
                                                                  a.save_mean, a.save_invstd}) {
          out.read(p, c, 4);
        }
        out.read(a.x, numel, e);
        out.read(a.dy, numel, e);
        out.add(a.dx, numel, e, true);
        out.allow(a.dx, a.dy);
        break;
      case StatOp::kForwardFrozen:
        out.read(a.x, numel, e);
        out.read(a.weight, c, 4);
        out.read(a.bias, c, 4);
        out.add(a.y, numel, e, true);
        out.allow(a.y, a.x);
        break;
      case StatOp::kQuantiles:
        out.read(a.x, values, row_e);
        out.read(a.q, nq_, 8);
        out.add(a.out, nq_ * cols, 4, true);
        break;
      case StatOp::kScaleColumns:
      case StatOp::kL2Normalize:
        out.read(a.x, values, row_e);
        out.add(a.y, values, row_e, true);
        out.allow(a.y, a.x);
        break;
    }
    return out;
  }

  nkt::CpuContext ctx_;
  nkt::Random rng_;
  nkv::Buffers buffers_;
  std::vector<nkf::Slot> slots_;
  Args a_{};
  nk_act_desc act_{};
  nk_row_desc row_{};
  nk_norm_params params_{};
  nk_frozen_stats stats_{};
  Buffer center_, spread_;  // the frozen statistics' arrays (not watched: the calls read them)
  int64_t ranks_ = 2, channels_ = 4, nq_ = 1;
  double eps_ = 1e-6;
  nk_zero_spread zero_spread_ = NK_ZERO_SPREAD_ERROR;
  bool desc_arg_ = true, params_arg_ = true, stats_arg_ = true;
  nkf::Workspace ws_;
};

TEST_P(StatisticsOpsValidationFuzz, RandomCallsKeepTheContract) {
  DeclareSlots();
  nkf::Outcomes calls, valid_starts;
  for (int trial = 0; trial < kTrials && !HasFailure(); ++trial) {
    NewCall();
    if (trial % 8 == 0) {  // the start alone must be accepted
      SCOPED_TRACE("trial " + std::to_string(trial) + ", unchanged");
      nkf::check_valid_call(
          Fn(), buffers_, [&] { return Run(); }, [&] { return Outputs(); }, valid_starts);
      NewCall();
    }
    const std::string changes = nkf::random_changes(rng_, kMostChanges, [&] { return Mutate(); });
    SCOPED_TRACE("trial " + std::to_string(trial) + ": " + changes);
    nkf::check_call(
        Fn(), buffers_, [&] { return Run(); }, [&] { return Outputs(); }, calls);
  }
  if (HasFailure()) return;  // the trial's own failure says it
  nkf::expect_both_outcomes(calls, kTrials);
}

INSTANTIATE_TEST_SUITE_P(, StatisticsOpsValidationFuzz,
                         ::testing::Values(StatOp::kLocalStats, StatOp::kMergeStats,
                                           StatOp::kForwardGlobal, StatOp::kBackwardLocalSums,
                                           StatOp::kBackwardGlobal, StatOp::kForwardFrozen,
                                           StatOp::kQuantiles, StatOp::kScaleColumns,
                                           StatOp::kL2Normalize),
                         ParamName);

}  // namespace
