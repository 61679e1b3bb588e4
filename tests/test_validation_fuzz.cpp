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

#include "fuzz_contract.hpp"
#include "validation_fixture.hpp"

namespace {

using namespace nkv;  // the fixture (validation_fixture.hpp)

constexpr int kTrials = 2000;    // per op
constexpr int kMostChanges = 3;  // changes per trial: 1 to this
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// A pointer argument of the ops: its fixture buffer, whether the buffer holds activations (24
// elements) or per-channel values (8), and how to read and set it in Args.
struct Slot {
  const char* field;
  bool activations;
  void* (*get)(const Args&);
  void (*set)(Args&, void*);
};

template <class P, P Args::*kField>
void* GetField(const Args& a) {
  return const_cast<void*>(static_cast<const void*>(a.*kField));
}
template <class P, P Args::*kField>
void SetField(Args& a, void* p) {
  a.*kField = static_cast<P>(p);
}
template <class P, P Args::*kField>
constexpr Slot Field(const char* name, bool activations) {
  return Slot{name, activations, &GetField<P, kField>, &SetField<P, kField>};
}

const Slot kSlots[] = {Field<const void*, &Args::x>("x", true),
                       Field<const void*, &Args::dy>("dy", true),
                       Field<void*, &Args::y>("y", true),
                       Field<void*, &Args::dx>("dx", true),
                       Field<const void*, &Args::weight>("weight", false),
                       Field<const void*, &Args::bias>("bias", false),
                       Field<float*, &Args::running_mean>("running_mean", false),
                       Field<float*, &Args::running_var>("running_var", false),
                       Field<float*, &Args::save_mean>("save_mean", false),
                       Field<float*, &Args::save_stat>("save_stat", false),
                       Field<void*, &Args::dweight>("dweight", false),
                       Field<void*, &Args::dbias>("dbias", false)};
constexpr int64_t kSlotCount = sizeof(kSlots) / sizeof(kSlots[0]);

class ValidationFuzz : public OpParamTest {
 protected:
  template <class V>
  V Pick(std::initializer_list<V> values) {
    return nkf::pick(rng_, values);
  }

  // The fixture's buffer of a slot (save_stat's is named after the op's statistic).
  std::string BufferOf(const Slot& s) const {
    return std::string(s.field) == "save_stat" ? StatName() : s.field;
  }
  bool Poisoned(const std::string& name) const { return nkf::poisoned(buffers_.at(name)); }

  // One random change; returns what it did.
  std::string Mutate() {
    std::ostringstream what;
    const int64_t k = rng_.integer(0, 23);
    if (k == 0) {
      const int64_t v =
          Pick<int64_t>({1, 2, 0, -1, std::numeric_limits<int64_t>::min(), kMax, int64_t{1} << 60});
      act_desc_.n = v;
      what << "n = " << v;
    } else if (k == 1) {
      const int64_t v = Pick<int64_t>({1, 2, 4, 0, -3, kMax, int64_t{1} << 61});
      act_desc_.c = v;
      what << "c = " << v;
    } else if (k == 2) {
      const int64_t v = Pick<int64_t>({1, 2, 3, 0, -1, kMax, int64_t{1} << 60});
      act_desc_.spatial = v;
      what << "spatial = " << v;
    } else if (k == 3) {
      const int64_t v = Pick<int64_t>({1, 2, 3, 0, -1, kMax, int64_t{1} << 60});
      row_desc_.rows = v;
      what << "rows = " << v;
    } else if (k == 4) {
      const int64_t v = Pick<int64_t>({1, 2, 4, 8, 0, -1, kMax, int64_t{1} << 60});
      row_desc_.cols = v;
      what << "cols = " << v;
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
    } else if (k == 9) {
      const int v = Pick({0, 1, 7});
      params_.phase = static_cast<nk_phase>(v);
      what << "phase = " << v;
    } else if (k == 10) {
      const double v = Pick({1e-5, 0.0, 1e-3, -1e-9, kNaN, kInf, -kInf});
      SetEps(v);
      what << "eps = " << v;
    } else if (k == 11) {
      const double v = Pick({0.0, 0.5, 1.0, -0.1, 1.1, kNaN, kInf});
      params_.momentum = v;
      what << "momentum = " << v;
    } else if (k == 12) {
      const int m = Pick({0, 1, 9}), r = Pick({0, 1, -2});
      params_.momentum_mode = static_cast<nk_momentum_mode>(m);
      params_.running_var = static_cast<nk_running_var>(r);
      what << "momentum_mode = " << m << ", running_var = " << r;
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
      const int w = Pick({0, 1, 2});
      if (w == 0) SetWorkspaceTracked(16, nullptr);
      if (w == 1) SetWorkspaceTracked(4096, nullptr);
      if (w == 2) SetWorkspaceTracked(1024, Arena(rng_.integer(0, 512)));
      what << "workspace " << (w == 0 ? "16 bytes" : w == 1 ? "4096 bytes" : "in the arena");
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
      const Slot& s = kSlots[rng_.integer(0, kSlotCount - 1)];
      auto* p = static_cast<char*>(s.get(a_));
      const int how = static_cast<int>(rng_.integer(0, 4));
      what << s.field;
      if (how == 0) {
        s.set(a_, nullptr);
        what << " NULL";
      } else if (how == 1 && p != nullptr && reinterpret_cast<uintptr_t>(p) % 4 == 0) {
        // Off by 1 or 2 bytes once (twice would be 4 bytes: aligned, and past the buffer).
        const int off = Pick({1, 2});
        s.set(a_, p + off);
        what << " + " << off << " bytes";
      } else if (how == 2) {
        // Onto another buffer of its size: an output may go anywhere (in place, or an overlap
        // to reject); an input only onto one that holds data (a poisoned one would carry its
        // NaN bits into outputs that the success check reads as unwritten).
        const Slot& t = kSlots[rng_.integer(0, kSlotCount - 1)];
        const bool output = Poisoned(BufferOf(s));
        if (t.activations == s.activations && (output || !Poisoned(BufferOf(t)))) {
          s.set(a_, buffers_.at(BufferOf(t)).data());
          what << " = " << t.field << "'s buffer";
        }
      } else {
        const int64_t at = rng_.integer(0, 256);
        s.set(a_, Arena(at));
        what << " = arena + " << at;
      }
    }
    return what.str();
  }

  static size_t Elem(nk_dtype d) { return nkt::elem_size(d); }

  // What a successful call of the current arguments may write and must fill.
  nkf::Extents Outputs() const {
    const Args& a = a_;
    nkf::Extents out;
    out.workspace = {workspace_, workspace_bytes_, 1};
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

  void SetWorkspaceTracked(size_t bytes, void* inside) {
    workspace_bytes_ = bytes;
    SetWorkspace(bytes, inside);
  }

  size_t workspace_bytes_ = 0;
};

TEST_P(ValidationFuzz, RandomChangesKeepTheContract) {
  nkf::Outcomes calls, queries;
  for (int trial = 0; trial < kTrials && !HasFailure(); ++trial) {
    buffers_.clear();
    ASSERT_EQ(nk_context_set_workspace(ctx_, nullptr, 0), NK_SUCCESS);
    workspace_ = nullptr;
    workspace_bytes_ = 0;
    Init(GetParam());
    std::string changes;
    const int64_t count = rng_.integer(1, kMostChanges);
    for (int64_t i = 0; i < count; ++i) changes += (i ? "; " : "") + Mutate();
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
