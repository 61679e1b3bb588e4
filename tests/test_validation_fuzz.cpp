// Random combinations of argument changes on the plain ops' valid calls (validation_fixture.hpp),
// CPU backend: shapes, dtypes, layouts, enums, eps, momentum, the counter, NULL, misaligned and
// overlapping pointers, workspaces too small or overlapping. test_validation.cpp checks each error
// path alone; here several at once, and calls that stay valid beside them, against the contract of
// fuzz_contract.hpp (for the op and its workspace query).
// Every change keeps a call that may be accepted inside the fixture's buffers (at most 2 x 4 x 3
// activations and 8 per-channel values; larger dimensions only where the element count passes
// 2^60 - 1, which must be rejected), so the sanitizer build would catch a read past one.
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_contract.hpp"
#include "validation_fixture.hpp"

namespace {

using namespace nkv;  // the fixture (validation_fixture.hpp)

constexpr int kTrials = 2000;    // per op
constexpr int kMostChanges = 3;  // changes per trial: 1 to this
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

enum Kind { kActivations, kPerChannel };  // buffers of 24 and of 8 elements

class ValidationFuzz : public OpParamTest {
 protected:
  template <class V>
  V Pick(std::initializer_list<V> values) {
    return nkf::pick(rng_, values);
  }

  // The op's pointer arguments, named as their buffers (save_stat's after the op's statistic).
  void DeclareSlots() {
    using nkf::Role;
    const Role saved = Forward() ? Role::kOut : Role::kIn;
    slots_ = {nkf::make_slot("x", kActivations, Role::kIn, &a_, &Args::x),
              nkf::make_slot("dy", kActivations, Role::kIn, &a_, &Args::dy),
              nkf::make_slot("y", kActivations, Role::kOut, &a_, &Args::y),
              nkf::make_slot("dx", kActivations, Role::kOut, &a_, &Args::dx),
              nkf::make_slot("weight", kPerChannel, Role::kIn, &a_, &Args::weight),
              nkf::make_slot("bias", kPerChannel, Role::kIn, &a_, &Args::bias),
              nkf::make_slot("running_mean", kPerChannel, Role::kInOut, &a_, &Args::running_mean),
              nkf::make_slot("running_var", kPerChannel, Role::kInOut, &a_, &Args::running_var),
              nkf::make_slot("save_mean", kPerChannel, saved, &a_, &Args::save_mean),
              nkf::make_slot(StatName(), kPerChannel, saved, &a_, &Args::save_stat),
              nkf::make_slot("dweight", kPerChannel, Role::kOut, &a_, &Args::dweight),
              nkf::make_slot("dbias", kPerChannel, Role::kOut, &a_, &Args::dbias)};
  }

  // One random change; returns what it did.
  std::string Mutate() {
    std::ostringstream what;
    const int64_t k = rng_.integer(0, 23);
    if (k <= 4) {
      what << nkf::mutate_dimension(act_desc_, row_desc_, rng_);
    } else if (k == 5) {
      const int v = Pick({0, 1, 2, -1});
      act_desc_.layout = static_cast<nk_layout>(v);
      what << "layout = " << v;
    } else if (k == 6) {
      const int v = Pick({0, 1, 2, 3, -1});
      act_desc_.dtype = row_desc_.dtype = static_cast<nk_dtype>(v);
      what << "dtype = " << v;
    } else if (k == 7) {
      const int v = Pick({0, 1, 2, 5});
      row_desc_.weight_dtype = static_cast<nk_dtype>(v);
      what << "weight_dtype = " << v;
    } else if (k == 8) {
      const int64_t v = Pick<int64_t>({1, 2, 4, 3, 0, -1, kMax});
      a_.groups = v;
      what << "groups = " << v;
    } else if (k <= 12) {
      what << nkf::mutate_params(params_, a_.eps, rng_);
    } else if (k == 13) {
      const int64_t v = Pick<int64_t>({41, 0, -1, kMax, kMax - 1});
      SetCounter(v);
      what << "*num_batches_tracked = " << v;
    } else if (k == 14) {
      const int c = Pick({0, 1, 4, 9});
      auto* p = reinterpret_cast<char*>(buffers_.at("num_batches_tracked").data());
      a_.num_batches_tracked = c == 9 ? nullptr : reinterpret_cast<int64_t*>(p + c);
      what << "num_batches_tracked " << (c == 9 ? "NULL" : "+ " + std::to_string(c) + " bytes");
    } else if (k == 15) {
      what << nkf::mutate_workspace(ctx_, buffers_, rng_, ws_);
    } else if (k == 16) {
      if (Pick({0, 1}) == 0) {
        a_.ctx = nullptr;
        what << "ctx NULL";
      } else {
        a_.act = nullptr;
        a_.row = nullptr;
        what << "desc NULL";
      }
    } else {  // a pointer, most often
      what << nkf::mutate_pointer(slots_, buffers_, rng_);
    }
    return what.str();
  }

  static size_t Elem(nk_dtype d) { return nkt::elem_size(d); }

  // What a successful call of the current arguments may write and must fill.
  nkf::Extents Outputs() const {
    const Args& a = a_;
    nkf::Extents out;
    out.workspace = {ws_.at, ws_.bytes, 1};
    if (Row()) {
      const int64_t rows = row_desc_.rows, cols = row_desc_.cols;
      const bool layer = op_ == Op::kLayerFwd || op_ == Op::kLayerBwd;
      const size_t e = Elem(row_desc_.dtype), we = Elem(row_desc_.weight_dtype);
      out.read(a.x, rows * cols, e);
      out.read(a.weight, cols, we);
      if (Forward()) {
        if (layer) out.read(a.bias, cols, we);
        out.add(a.y, rows * cols, e, true);
        if (layer) out.add(a.save_mean, rows, 4, true);
        out.add(a.save_stat, rows, 4, true);
        out.allow(a.y, a.x);
      } else {
        out.read(a.dy, rows * cols, e);
        if (layer) out.read(a.save_mean, rows, 4);
        out.read(a.save_stat, rows, 4);
        out.add(a.dx, rows * cols, e, true);
        out.add(a.dweight, cols, we, true);
        if (layer) out.add(a.dbias, cols, we, true);
        out.allow(a.dx, a.dy);
      }
      return out;
    }
    const int64_t n = act_desc_.n, c = act_desc_.c, numel = n * c * act_desc_.spatial;
    const size_t e = Elem(act_desc_.dtype);
    const bool group = op_ == Op::kGroupFwd || op_ == Op::kGroupBwd;
    const bool instance = op_ == Op::kInstanceFwd || op_ == Op::kInstanceBwd;
    const int64_t stats = group ? n * a.groups : instance ? n * c : c;
    const bool training = group || params_.phase == NK_TRAINING;
    out.read(a.x, numel, e);
    out.read(a.weight, c, 4);
    if (!training) {
      out.read(a.running_mean, c, 4);
      out.read(a.running_var, c, 4);
    }
    if (Forward()) {
      out.read(a.bias, c, 4);
      out.allow(a.y, a.x);
      out.add(a.y, numel, e, true);
      if (training) {
        out.add(a.save_mean, stats, 4, true);
        out.add(a.save_stat, stats, 4, true);
      }
      if (!group && training) {
        out.add(a.running_mean, c, 4, false);
        out.add(a.running_var, c, 4, false);
        out.add(a.num_batches_tracked, 1, 8, false);
      }
    } else {
      out.read(a.dy, numel, e);
      if (training) {
        out.read(a.save_mean, stats, 4);
        out.read(a.save_stat, stats, 4);
      }
      out.allow(a.dx, a.dy);
      out.add(a.dx, numel, e, true);
      out.add(a.dweight, c, 4, true);
      out.add(a.dbias, c, 4, true);
    }
    return out;
  }

  nkf::Workspace ws_;
  std::vector<nkf::Slot> slots_;
};

TEST_P(ValidationFuzz, RandomChangesKeepTheContract) {
  nkf::Outcomes calls, queries;
  for (int trial = 0; trial < kTrials && !HasFailure(); ++trial) {
    buffers_.clear();
    nkf::clear_workspace(ctx_, ws_);
    Init(GetParam());
    DeclareSlots();
    const std::string changes = nkf::random_changes(rng_, kMostChanges, [&] { return Mutate(); });
    SCOPED_TRACE("trial " + std::to_string(trial) + ": " + changes);
    nkf::check_op_and_query(
        Fn(), buffers_, [&] { return Run(); }, [&] { return Outputs(); }, calls,
        [&] { return Query(); }, a_.bytes, queries);
  }
  if (HasFailure()) return;  // the trial's own failure says it
  nkf::expect_both_outcomes(calls, queries, kTrials);
}

INSTANTIATE_TEST_SUITE_P(, ValidationFuzz,
                         ::testing::Values(Op::kBatchFwd, Op::kBatchBwd, Op::kInstanceFwd,
                                           Op::kInstanceBwd, Op::kGroupFwd, Op::kGroupBwd,
                                           Op::kLayerFwd, Op::kLayerBwd, Op::kRmsFwd, Op::kRmsBwd),
                         OpParamName);

}  // namespace
