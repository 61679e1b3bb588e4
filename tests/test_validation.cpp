// Every validation error path of the C API on the CPU backend. Each case starts from a complete,
// valid call (inputs random, outputs poisoned, running statistics and num_batches_tracked at known
// values), changes one argument and checks the contract: the documented status, a message that
// starts with the function's name and names the argument and its value, and not one byte changed
// in any buffer the call could reach. Overlaps are made by carving sub-ranges out of one "arena".
// A fixture per op (the Op parameter) owns the buffers; each suite is instantiated for the ops
// where its errors apply, so a failure names both the error and the op.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test_support.hpp"

namespace {

using nkt::Buffer;
using Buffers = std::map<std::string, Buffer>;
using Fragments = std::vector<std::string>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// "name (0x...": how an overlap message names a buffer and its address.
std::string Named(const std::string& name, const void* p) {
  std::ostringstream out;
  out << name << " (" << p;
  return out.str();
}

// Leaves a message from another function, so the message checked below is this call's own.
void MakeLastErrorStale(const std::string& fn) {
  if (fn == "nk_context_get_backend") {
    nk_context_set_stream(nullptr, nullptr);
  } else {
    nk_context_get_backend(nullptr, nullptr);
  }
}

// Runs `call`, which must fail with `want`, leave "<fn>: ..." containing every fragment as the
// last error, and leave every byte of `watched` as it was.
template <class Call>
void ExpectRejected(const std::string& fn, nk_status want, const Fragments& fragments,
                    const Buffers& watched, Call&& call) {
  SCOPED_TRACE(fn);
  MakeLastErrorStale(fn);
  std::map<std::string, std::vector<unsigned char>> before;
  for (const auto& [name, buffer] : watched) before[name] = buffer.bytes();
  const nk_status got = call();
  const std::string message = nk_last_error();
  EXPECT_EQ(got, want) << "got " << nk_status_name(got) << ", expected " << nk_status_name(want)
                       << "; message: " << message;
  EXPECT_EQ(message.rfind(fn + ": ", 0), 0u)
      << "message does not start with the function: " << message;
  for (const std::string& f : fragments) {
    EXPECT_NE(message.find(f), std::string::npos) << "message lacks \"" << f << "\": " << message;
  }
  for (const auto& [name, buffer] : watched) {
    EXPECT_TRUE(buffer.bytes() == before[name]) << name << " was written by the failing call";
  }
}

// ---- the ops and a fixture holding a valid call of one of them --------------------------------

enum class Op {
  kBatchFwd,
  kBatchBwd,
  kInstanceFwd,
  kInstanceBwd,
  kGroupFwd,
  kGroupBwd,
  kLayerFwd,
  kLayerBwd,
  kRmsFwd,
  kRmsBwd
};

struct OpInfo {
  const char* fn;
  const char* param_name;
};

const OpInfo& Info(Op op) {
  static const OpInfo kInfo[] = {{"nk_batch_norm_forward", "BatchNormForward"},
                                 {"nk_batch_norm_backward", "BatchNormBackward"},
                                 {"nk_instance_norm_forward", "InstanceNormForward"},
                                 {"nk_instance_norm_backward", "InstanceNormBackward"},
                                 {"nk_group_norm_forward", "GroupNormForward"},
                                 {"nk_group_norm_backward", "GroupNormBackward"},
                                 {"nk_layer_norm_forward", "LayerNormForward"},
                                 {"nk_layer_norm_backward", "LayerNormBackward"},
                                 {"nk_rms_norm_forward", "RmsNormForward"},
                                 {"nk_rms_norm_backward", "RmsNormBackward"}};
  return kInfo[static_cast<int>(op)];
}

std::string OpParamName(const ::testing::TestParamInfo<Op>& info) {
  return Info(info.param).param_name;
}
void PrintTo(Op op, std::ostream* out) { *out << Info(op).param_name; }

// The union of every op's arguments; each op reads those it takes.
struct Args {
  nk_context ctx;
  const nk_act_desc* act;
  const nk_row_desc* row;
  const nk_norm_params* params;
  int64_t groups;
  double eps;  // group, layer and RMS norm; batch and instance norm read params->eps
  const void* x;
  const void* dy;
  const void* weight;
  const void* bias;
  float* running_mean;
  float* running_var;
  int64_t* num_batches_tracked;
  void* y;
  float* save_mean;
  float* save_stat;  // save_invstd, or save_rstd of the row norms
  void* dx;
  void* dweight;
  void* dbias;
  size_t* bytes;
};

constexpr bool kAndQuery = true;

class OpTest : public ::testing::Test {
 protected:
  // N x C x S = 2 x 4 x 3 and rows x cols = 3 x 8: 24 activations, at most 8 parameters and 8
  // statistics; every buffer is allocated with those sizes whatever the op.
  static constexpr int64_t kAct = 24, kParam = 8, kStats = 8;

  void Init(Op op) {
    op_ = op;
    act_desc_ = {2, 4, 3, NK_NCHW, NK_F32};
    row_desc_ = {3, 8, NK_F32, NK_F32};
    params_ = nk_norm_params_default();
    const bool fwd = Forward();
    a_ = Args{};
    a_.ctx = ctx_;
    a_.act = &act_desc_;
    a_.row = &row_desc_;
    a_.params = &params_;
    a_.groups = 2;
    a_.eps = 1e-5;
    a_.x = Rand("x", kAct).data();
    a_.dy = Rand("dy", kAct).data();
    a_.weight = Rand("weight", kParam).data();
    a_.bias = Rand("bias", kParam).data();
    a_.running_mean = Filled("running_mean", kParam, 0.25).f32();
    a_.running_var = Filled("running_var", kParam, 1.5).f32();
    Buffer& counter = Filled("num_batches_tracked", 2, 0.0);
    const int64_t batches = 41;
    std::memcpy(counter.data(), &batches, sizeof batches);
    a_.num_batches_tracked = reinterpret_cast<int64_t*>(counter.data());
    a_.y = Poisoned("y", kAct).data();
    a_.save_mean = (fwd ? Poisoned("save_mean", kStats) : Rand("save_mean", kStats)).f32();
    a_.save_stat = (fwd ? Poisoned(StatName(), kStats) : Rand(StatName(), kStats, 0.5, 2)).f32();
    a_.dx = Poisoned("dx", kAct).data();
    a_.dweight = Poisoned("dweight", kParam).data();
    a_.dbias = Poisoned("dbias", kParam).data();
    a_.bytes = reinterpret_cast<size_t*>(Poisoned("bytes", 2).data());
    Rand("arena", 1024);
  }

  Buffer& Add(const std::string& name, Buffer b) { return buffers_[name] = std::move(b); }
  Buffer& Rand(const std::string& name, int64_t count, double lo = -2, double hi = 2) {
    return Add(name, Buffer(NK_F32, rng_.uniform(count, lo, hi)));
  }
  Buffer& Filled(const std::string& name, int64_t count, double value) {
    return Add(name, Buffer(NK_F32, std::vector<double>(static_cast<size_t>(count), value)));
  }
  Buffer& Poisoned(const std::string& name, int64_t count) {
    Buffer b(NK_F32, count);
    b.poison();
    return Add(name, std::move(b));
  }
  float* Arena(int64_t at) { return buffers_.at("arena").f32() + at; }
  float* F32(const std::string& name) { return buffers_.at(name).f32(); }
  int64_t Counter() const {
    int64_t v;
    std::memcpy(&v, buffers_.at("num_batches_tracked").data(), sizeof v);
    return v;
  }
  void SetCounter(int64_t v) {
    std::memcpy(buffers_.at("num_batches_tracked").data(), &v, sizeof v);
  }

  bool Forward() const {
    return op_ == Op::kBatchFwd || op_ == Op::kInstanceFwd || op_ == Op::kGroupFwd ||
           op_ == Op::kLayerFwd || op_ == Op::kRmsFwd;
  }
  bool Row() const {
    return op_ == Op::kLayerFwd || op_ == Op::kLayerBwd || op_ == Op::kRmsFwd || op_ == Op::kRmsBwd;
  }
  bool HasParams() const {  // batch and instance norm: the queries read params too
    return op_ == Op::kBatchFwd || op_ == Op::kBatchBwd || op_ == Op::kInstanceFwd ||
           op_ == Op::kInstanceBwd;
  }
  std::string Fn() const { return Info(op_).fn; }
  std::string QueryFn() const { return Fn() + "_workspace_size"; }
  const char* StatName() const { return Row() ? "save_rstd" : "save_invstd"; }
  // The in-place pair: y over x (forward), dx over dy (backward).
  void*& Out() { return Forward() ? a_.y : a_.dx; }
  const void*& In() { return Forward() ? a_.x : a_.dy; }
  const char* OutName() const { return Forward() ? "y" : "dx"; }
  const char* InName() const { return Forward() ? "x" : "dy"; }
  void SetEps(double eps) { params_.eps = a_.eps = eps; }

  nk_status Run() const {
    const Args& a = a_;
    const auto* w = static_cast<const float*>(a.weight);
    const auto* b = static_cast<const float*>(a.bias);
    auto* dw = static_cast<float*>(a.dweight);
    auto* db = static_cast<float*>(a.dbias);
    switch (op_) {
      case Op::kBatchFwd:
        return nk_batch_norm_forward(a.ctx, a.act, a.params, a.x, w, b, a.running_mean,
                                     a.running_var, a.num_batches_tracked, a.y, a.save_mean,
                                     a.save_stat);
      case Op::kBatchBwd:
        return nk_batch_norm_backward(a.ctx, a.act, a.params, a.x, a.dy, w, a.running_mean,
                                      a.running_var, a.save_mean, a.save_stat, a.dx, dw, db);
      case Op::kInstanceFwd:
        return nk_instance_norm_forward(a.ctx, a.act, a.params, a.x, w, b, a.running_mean,
                                        a.running_var, a.num_batches_tracked, a.y, a.save_mean,
                                        a.save_stat);
      case Op::kInstanceBwd:
        return nk_instance_norm_backward(a.ctx, a.act, a.params, a.x, a.dy, w, a.running_mean,
                                         a.running_var, a.save_mean, a.save_stat, a.dx, dw, db);
      case Op::kGroupFwd:
        return nk_group_norm_forward(a.ctx, a.act, a.groups, a.eps, a.x, w, b, a.y, a.save_mean,
                                     a.save_stat);
      case Op::kGroupBwd:
        return nk_group_norm_backward(a.ctx, a.act, a.groups, a.x, a.dy, w, a.save_mean,
                                      a.save_stat, a.dx, dw, db);
      case Op::kLayerFwd:
        return nk_layer_norm_forward(a.ctx, a.row, a.eps, a.x, a.weight, a.bias, a.y, a.save_mean,
                                     a.save_stat);
      case Op::kLayerBwd:
        return nk_layer_norm_backward(a.ctx, a.row, a.x, a.dy, a.weight, a.save_mean, a.save_stat,
                                      a.dx, a.dweight, a.dbias);
      case Op::kRmsFwd:
        return nk_rms_norm_forward(a.ctx, a.row, a.eps, a.x, a.weight, a.y, a.save_stat);
      case Op::kRmsBwd:
        return nk_rms_norm_backward(a.ctx, a.row, a.x, a.dy, a.weight, a.save_stat, a.dx,
                                    a.dweight);
    }
    return NK_ERROR_INTERNAL;
  }

  nk_status Query() const {
    const Args& a = a_;
    switch (op_) {
      case Op::kBatchFwd:
        return nk_batch_norm_forward_workspace_size(a.ctx, a.act, a.params, a.bytes);
      case Op::kBatchBwd:
        return nk_batch_norm_backward_workspace_size(a.ctx, a.act, a.params, a.bytes);
      case Op::kInstanceFwd:
        return nk_instance_norm_forward_workspace_size(a.ctx, a.act, a.params, a.bytes);
      case Op::kInstanceBwd:
        return nk_instance_norm_backward_workspace_size(a.ctx, a.act, a.params, a.bytes);
      case Op::kGroupFwd:
        return nk_group_norm_forward_workspace_size(a.ctx, a.act, a.groups, a.bytes);
      case Op::kGroupBwd:
        return nk_group_norm_backward_workspace_size(a.ctx, a.act, a.groups, a.bytes);
      case Op::kLayerFwd:
        return nk_layer_norm_forward_workspace_size(a.ctx, a.row, a.bytes);
      case Op::kLayerBwd:
        return nk_layer_norm_backward_workspace_size(a.ctx, a.row, a.bytes);
      case Op::kRmsFwd:
        return nk_rms_norm_forward_workspace_size(a.ctx, a.row, a.bytes);
      case Op::kRmsBwd:
        return nk_rms_norm_backward_workspace_size(a.ctx, a.row, a.bytes);
    }
    return NK_ERROR_INTERNAL;
  }

  // The op (and with kAndQuery its workspace query, same arguments) must be rejected.
  void Reject(nk_status want, const Fragments& fragments, bool with_query = false) {
    ExpectRejected(Fn(), want, fragments, buffers_, [&] { return Run(); });
    if (with_query) ExpectRejected(QueryFn(), want, fragments, buffers_, [&] { return Query(); });
  }
  // Rejected (and with kAndQuery its query too) with a message whose number after `prefix` reads
  // back as exactly `value`: the value passed, not a rounding of it.
  void RejectValue(const std::string& prefix, double value, bool with_query = false) {
    Reject(NK_ERROR_INVALID_VALUE, {prefix});
    EXPECT_EQ(nkt::number_after(nk_last_error(), prefix), value) << nk_last_error();
    if (!with_query) return;
    ExpectRejected(QueryFn(), NK_ERROR_INVALID_VALUE, {prefix}, buffers_, [&] { return Query(); });
    EXPECT_EQ(nkt::number_after(nk_last_error(), prefix), value) << nk_last_error();
  }
  void ExpectSuccess(bool with_query = false) {
    nk_status st = Run();
    EXPECT_EQ(st, NK_SUCCESS) << Fn() << ": " << nk_status_name(st) << ": " << nk_last_error();
    if (!with_query) return;
    st = Query();
    EXPECT_EQ(st, NK_SUCCESS) << QueryFn() << ": " << nk_status_name(st) << ": " << nk_last_error();
  }

  // Sets a workspace of `bytes` bytes at the first 256-byte boundary of a new watched buffer, or
  // of `inside` when given.
  void* SetWorkspace(size_t bytes, void* inside = nullptr) {
    if (!inside) inside = Poisoned("workspace", static_cast<int64_t>(bytes / 4 + 128)).data();
    void* aligned =
        reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(inside) + 255) / 256 * 256);
    EXPECT_EQ(nk_context_set_workspace(ctx_, aligned, bytes), NK_SUCCESS) << nk_last_error();
    return workspace_ = aligned;
  }

  nkt::CpuContext ctx_;
  nkt::Random rng_;
  Buffers buffers_;
  Op op_ = Op::kBatchFwd;
  nk_act_desc act_desc_{};
  nk_row_desc row_desc_{};
  nk_norm_params params_{};
  Args a_{};
  void* workspace_ = nullptr;  // the last one SetWorkspace set
};

class OpParamTest : public OpTest, public ::testing::WithParamInterface<Op> {
 protected:
  void SetUp() override { Init(GetParam()); }
};

// A suite of OpParamTest instantiated for the ops listed.
#define VALIDATION_SUITE(Suite, ...)   \
  class Suite : public OpParamTest {}; \
  INSTANTIATE_TEST_SUITE_P(, Suite, ::testing::Values(__VA_ARGS__), OpParamName)

VALIDATION_SUITE(ValidationEveryOp, Op::kBatchFwd, Op::kBatchBwd, Op::kInstanceFwd,
                 Op::kInstanceBwd, Op::kGroupFwd, Op::kGroupBwd, Op::kLayerFwd, Op::kLayerBwd,
                 Op::kRmsFwd, Op::kRmsBwd);
VALIDATION_SUITE(ValidationForward, Op::kBatchFwd, Op::kInstanceFwd, Op::kGroupFwd, Op::kLayerFwd,
                 Op::kRmsFwd);
VALIDATION_SUITE(ValidationForwardWithMean, Op::kBatchFwd, Op::kInstanceFwd, Op::kGroupFwd,
                 Op::kLayerFwd);
VALIDATION_SUITE(ValidationBackward, Op::kBatchBwd, Op::kInstanceBwd, Op::kGroupBwd, Op::kLayerBwd,
                 Op::kRmsBwd);
VALIDATION_SUITE(ValidationBackwardWithMean, Op::kBatchBwd, Op::kInstanceBwd, Op::kGroupBwd,
                 Op::kLayerBwd);
VALIDATION_SUITE(ValidationEps, Op::kBatchFwd, Op::kBatchBwd, Op::kInstanceFwd, Op::kInstanceBwd,
                 Op::kGroupFwd, Op::kLayerFwd, Op::kRmsFwd);
VALIDATION_SUITE(ValidationChannelShape, Op::kBatchFwd, Op::kBatchBwd, Op::kInstanceFwd,
                 Op::kInstanceBwd, Op::kGroupFwd, Op::kGroupBwd);
VALIDATION_SUITE(ValidationRowShape, Op::kLayerFwd, Op::kLayerBwd, Op::kRmsFwd, Op::kRmsBwd);
VALIDATION_SUITE(ValidationRunningNorm, Op::kBatchFwd, Op::kBatchBwd, Op::kInstanceFwd,
                 Op::kInstanceBwd);
VALIDATION_SUITE(ValidationRunningForward, Op::kBatchFwd, Op::kInstanceFwd);
VALIDATION_SUITE(ValidationGroupNorm, Op::kGroupFwd, Op::kGroupBwd);
VALIDATION_SUITE(ValidationScratch, Op::kBatchFwd, Op::kBatchBwd, Op::kInstanceFwd,
                 Op::kInstanceBwd, Op::kGroupFwd, Op::kGroupBwd, Op::kLayerBwd, Op::kRmsBwd);

// ---- every op ---------------------------------------------------------------------------------

TEST_P(ValidationEveryOp, ValidCallSucceeds) { ExpectSuccess(kAndQuery); }

TEST_P(ValidationEveryOp, NullCtx) {
  a_.ctx = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"ctx is NULL"}, kAndQuery);
}

TEST_P(ValidationEveryOp, NullDesc) {
  a_.act = nullptr;
  a_.row = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"desc is NULL"}, kAndQuery);
}

TEST_P(ValidationEveryOp, NullX) {
  a_.x = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"x is NULL"});
}

TEST_P(ValidationEveryOp, QueryWithNullBytes) {
  a_.bytes = nullptr;
  ExpectRejected(QueryFn(), NK_ERROR_INVALID_VALUE, {"bytes is NULL"}, buffers_,
                 [&] { return Query(); });
}

TEST_P(ValidationEveryOp, UnknownDtype) {
  act_desc_.dtype = row_desc_.dtype = static_cast<nk_dtype>(-1);
  Reject(NK_ERROR_INVALID_VALUE, {"desc->dtype = -1"}, kAndQuery);
}

TEST_P(ValidationEveryOp, InPlaceSucceeds) {
  Out() = const_cast<void*>(In());
  ExpectSuccess();
}

TEST_P(ValidationEveryOp, InPlaceWithOffsetRejected) {
  In() = Arena(0);
  Out() = Arena(1);
  Reject(NK_ERROR_INVALID_VALUE,
         {Named(InName(), Arena(0)), "overlaps", Named(OutName(), Arena(1))});
}

// One byte off: not even the element is aligned (a GPU could not load it).
TEST_P(ValidationEveryOp, InputNotAlignedToItsElements) {
  In() = static_cast<const char*>(In()) + 1;
  Reject(NK_ERROR_INVALID_VALUE, {std::string(InName()) + " = ", "is not aligned to its"});
}

TEST_P(ValidationEveryOp, OutputNotAlignedToItsElements) {
  Out() = static_cast<char*>(Out()) + 1;
  Reject(NK_ERROR_INVALID_VALUE, {std::string(OutName()) + " = ", "is not aligned to its"});
}

TEST_P(ValidationEveryOp, SavedStatisticNotAlignedToItsElements) {
  a_.save_stat = reinterpret_cast<float*>(reinterpret_cast<char*>(a_.save_stat) + 2);
  Reject(NK_ERROR_INVALID_VALUE, {"is not aligned to its 4-byte elements"});
}

TEST_P(ValidationEveryOp, OutputOverlapsWeight) {
  Out() = Arena(0);
  a_.weight = Arena(5);
  Reject(NK_ERROR_INVALID_VALUE,
         {Named("weight", Arena(5)), "overlaps", Named(OutName(), Arena(0))});
}

// ---- forward ----------------------------------------------------------------------------------

TEST_P(ValidationForward, NullY) {
  a_.y = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"y is NULL"});
}

TEST_P(ValidationForward, YOverlapsSavedStatistic) {
  a_.y = Arena(0);
  a_.save_stat = Arena(kAct - 1);
  Reject(NK_ERROR_INVALID_VALUE, {Named("y", Arena(0)), Named(StatName(), Arena(kAct - 1))});
}

TEST_P(ValidationForwardWithMean, YOverlapsSaveMean) {
  a_.y = Arena(0);
  a_.save_mean = Arena(kAct - 2);
  Reject(NK_ERROR_INVALID_VALUE, {Named("y", Arena(0)), Named("save_mean", Arena(kAct - 2))});
}

TEST_P(ValidationForwardWithMean, SaveMeanOverlapsOtherStatistic) {
  a_.save_mean = Arena(0);
  a_.save_stat = Arena(1);
  Reject(NK_ERROR_INVALID_VALUE, {Named("save_mean", Arena(0)), Named(StatName(), Arena(1))});
}

// ---- backward ---------------------------------------------------------------------------------

TEST_P(ValidationBackward, NullDy) {
  a_.dy = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"dy is NULL"});
}

TEST_P(ValidationBackward, NullSavedStatistic) {  // save_invstd in training, save_rstd
  a_.save_stat = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {std::string(StatName()) + " is NULL"});
}

TEST_P(ValidationBackward, DxEqualsX) {
  a_.dx = const_cast<void*>(a_.x);
  Reject(NK_ERROR_INVALID_VALUE, {Named("x", a_.x), Named("dx", a_.x), "dx == dy"});
}

TEST_P(ValidationBackward, DxOverlapsSavedStatistic) {
  a_.dx = Arena(0);
  a_.save_stat = Arena(kAct - 1);
  Reject(NK_ERROR_INVALID_VALUE, {Named("dx", Arena(0)), Named(StatName(), Arena(kAct - 1))});
}

TEST_P(ValidationBackward, DweightInsideDy) {
  a_.dweight = F32("dy") + 2;
  Reject(NK_ERROR_INVALID_VALUE, {Named("dy", a_.dy), Named("dweight", a_.dweight)});
}

TEST_P(ValidationBackwardWithMean, NullSaveMean) {
  a_.save_mean = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"save_mean is NULL"});
}

TEST_P(ValidationBackwardWithMean, DweightOverlapsDbias) {
  a_.dbias = F32("dweight") + 1;
  Reject(NK_ERROR_INVALID_VALUE, {Named("dweight", a_.dweight), Named("dbias", a_.dbias)});
}

// ---- eps (backward of batch and instance norm reads params->eps) ------------------------------

TEST_P(ValidationEps, Negative) {
  SetEps(-0.5);
  Reject(NK_ERROR_INVALID_VALUE, {"eps = -0.5"}, HasParams());
}

TEST_P(ValidationEps, NaN) {
  SetEps(kNaN);
  Reject(NK_ERROR_INVALID_VALUE, {"eps = nan"}, HasParams());
}

TEST_P(ValidationEps, Infinite) {
  SetEps(kInf);
  Reject(NK_ERROR_INVALID_VALUE, {"eps = inf"}, HasParams());
}

// A negative eps a few ulp from -1e-5 (which 6 significant digits would show as -1e-05): the
// message's number reads back as that very value.
TEST_P(ValidationEps, NegativeIsShownExactly) {
  const int k = static_cast<int>(rng_.integer(1, 8));
  const double eps = nkt::ulps_from(-1e-5, rng_.integer(0, 1) ? k : -k);
  SetEps(eps);
  RejectValue("eps = ", eps, HasParams());
}

// ---- shapes -----------------------------------------------------------------------------------

TEST_P(ValidationChannelShape, NonPositiveN) {
  for (int64_t v : {0, -3}) {
    act_desc_.n = v;
    Reject(NK_ERROR_BAD_SHAPE, {"desc->n = " + std::to_string(v)}, kAndQuery);
  }
}

TEST_P(ValidationChannelShape, NonPositiveC) {
  for (int64_t v : {0, -3}) {
    act_desc_.c = v;
    Reject(NK_ERROR_BAD_SHAPE, {"desc->c = " + std::to_string(v)}, kAndQuery);
  }
}

TEST_P(ValidationChannelShape, NonPositiveSpatial) {
  for (int64_t v : {0, -3}) {
    act_desc_.spatial = v;
    Reject(NK_ERROR_BAD_SHAPE, {"desc->spatial = " + std::to_string(v)}, kAndQuery);
  }
}

TEST_P(ValidationChannelShape, ElementCountOverflows) {
  act_desc_.n = act_desc_.c = act_desc_.spatial = int64_t{1} << 22;
  Reject(NK_ERROR_BAD_SHAPE,
         {"4194304 x 4194304 x 4194304 exceeds INT64_MAX", "the limit is 1152921504606846975"},
         kAndQuery);
}

// 2^62 elements fit in int64, but their byte sizes would not: the message says what the limit is
// and why, and shows the count.
TEST_P(ValidationChannelShape, ElementCountAboveTheLimit) {
  act_desc_.n = int64_t{1} << 20;
  act_desc_.c = act_desc_.spatial = int64_t{1} << 21;
  Reject(NK_ERROR_BAD_SHAPE,
         {"desc (n x c x spatial) = 1048576 x 2097152 x 2097152 = 4611686018427387904",
          "the limit is 1152921504606846975 elements (INT64_MAX / 8",
          "byte sizes, up to 8 bytes an element, must fit in int64"},
         kAndQuery);
}

TEST_P(ValidationChannelShape, UnknownLayout) {
  act_desc_.layout = static_cast<nk_layout>(7);
  Reject(NK_ERROR_INVALID_VALUE, {"desc->layout = 7"}, kAndQuery);
}

TEST_P(ValidationRowShape, NonPositiveRows) {
  for (int64_t v : {0, -3}) {
    row_desc_.rows = v;
    Reject(NK_ERROR_BAD_SHAPE, {"desc->rows = " + std::to_string(v)}, kAndQuery);
  }
}

TEST_P(ValidationRowShape, NonPositiveCols) {
  for (int64_t v : {0, -3}) {
    row_desc_.cols = v;
    Reject(NK_ERROR_BAD_SHAPE, {"desc->cols = " + std::to_string(v)}, kAndQuery);
  }
}

TEST_P(ValidationRowShape, ElementCountOverflows) {
  row_desc_.rows = row_desc_.cols = int64_t{1} << 32;
  Reject(NK_ERROR_BAD_SHAPE,
         {"4294967296 x 4294967296 exceeds INT64_MAX", "the limit is 1152921504606846975"},
         kAndQuery);
}

// The limit is exact: (2^30 - 1) x (2^30 + 1) = 2^60 - 1 elements pass the shape check (the
// workspace query answers), 2^30 x 2^30 = 2^60 do not.
TEST_P(ValidationRowShape, ElementCountLimitIsExact) {
  size_t bytes = 0;
  a_.bytes = &bytes;
  row_desc_.rows = (int64_t{1} << 30) - 1;
  row_desc_.cols = (int64_t{1} << 30) + 1;
  EXPECT_EQ(Query(), NK_SUCCESS) << nk_last_error();
  row_desc_.rows = row_desc_.cols = int64_t{1} << 30;
  Reject(NK_ERROR_BAD_SHAPE,
         {"desc (rows x cols) = 1073741824 x 1073741824 = 1152921504606846976",
          "the limit is 1152921504606846975 elements"},
         kAndQuery);
}

TEST_P(ValidationRowShape, UnknownWeightDtype) {
  row_desc_.weight_dtype = static_cast<nk_dtype>(7);
  Reject(NK_ERROR_INVALID_VALUE, {"desc->weight_dtype = 7"}, kAndQuery);
}

TEST_P(ValidationRowShape, WeightDtypeNeitherF32NorX) {
  row_desc_.dtype = NK_F16;
  row_desc_.weight_dtype = NK_BF16;
  Reject(NK_ERROR_INVALID_VALUE, {"desc->weight_dtype = bf16", "desc->dtype = f16"}, kAndQuery);
}

// ---- batch and instance norm: params and running statistics -----------------------------------

TEST_P(ValidationRunningNorm, NullParams) {
  a_.params = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"params is NULL"}, kAndQuery);
}

TEST_P(ValidationRunningNorm, UnknownPhase) {
  params_.phase = static_cast<nk_phase>(7);
  Reject(NK_ERROR_INVALID_VALUE, {"params->phase = 7"}, kAndQuery);
}

TEST_P(ValidationRunningNorm, InferenceWithoutRunningStatistics) {
  params_.phase = NK_INFERENCE;
  a_.running_mean = a_.running_var = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"running_mean", "NULL", "NK_INFERENCE"});
}

TEST_P(ValidationRunningNorm, InferenceWithoutRunningMean) {
  params_.phase = NK_INFERENCE;
  a_.running_mean = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"running_mean is NULL"});
}

TEST_P(ValidationRunningNorm, InferenceWithoutRunningVar) {
  params_.phase = NK_INFERENCE;
  a_.running_var = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"running_var is NULL"});
}

TEST_P(ValidationRunningNorm, OutputOverlapsRunningVarInInference) {
  params_.phase = NK_INFERENCE;
  Out() = Arena(0);
  a_.running_var = Arena(kAct - 1);
  Reject(NK_ERROR_INVALID_VALUE,
         {Named("running_var", Arena(kAct - 1)), Named(OutName(), Arena(0))});
}

TEST_P(ValidationRunningNorm, UnknownMomentumMode) {
  params_.momentum_mode = static_cast<nk_momentum_mode>(7);
  Reject(NK_ERROR_INVALID_VALUE, {"params->momentum_mode = 7"}, kAndQuery);
}

TEST_P(ValidationRunningNorm, UnknownRunningVar) {
  params_.running_var = static_cast<nk_running_var>(-1);
  Reject(NK_ERROR_INVALID_VALUE, {"params->running_var = -1"}, kAndQuery);
}

TEST_P(ValidationRunningNorm, MomentumNegative) {
  params_.momentum = -0.25;
  Reject(NK_ERROR_INVALID_VALUE, {"params->momentum = -0.25"}, kAndQuery);
}

TEST_P(ValidationRunningNorm, MomentumAboveOne) {
  params_.momentum = 1.5;
  Reject(NK_ERROR_INVALID_VALUE, {"params->momentum = 1.5"}, kAndQuery);
}

TEST_P(ValidationRunningNorm, MomentumNaN) {
  params_.momentum = kNaN;
  Reject(NK_ERROR_INVALID_VALUE, {"params->momentum = nan"}, kAndQuery);
}

// A few ulp outside [0, 1]: the message shows the value itself, never a rounding of it that lies
// inside the range ("1").
TEST_P(ValidationRunningNorm, MomentumAFewUlpAboveOneIsShownExactly) {
  params_.momentum = nkt::ulps_from(1.0, static_cast<int>(rng_.integer(1, 8)));
  RejectValue("params->momentum = ", params_.momentum, kAndQuery);
}

// A few ulp below 0 (a negative subnormal), and a few ulp from -0.1 (shown as -0.1 with 6 digits).
TEST_P(ValidationRunningNorm, MomentumBelowZeroIsShownExactly) {
  const int k = static_cast<int>(rng_.integer(1, 8));
  for (double m : {nkt::ulps_from(0.0, -k), nkt::ulps_from(-0.1, rng_.integer(0, 1) ? k : -k)}) {
    params_.momentum = m;
    RejectValue("params->momentum = ", m, kAndQuery);
  }
}

TEST_P(ValidationRunningNorm, MomentumOfOneAndZeroAccepted) {
  for (double m : {0.0, 1.0}) {
    params_.momentum = m;
    ExpectSuccess(kAndQuery);
  }
}

// The backward calls do not read momentum_mode or running_var, and refuse unknown values all the
// same (UnknownMomentumMode and UnknownRunningVar above run for them too); in inference as well.
TEST_P(ValidationRunningNorm, UnknownEnumsInInference) {
  params_.phase = NK_INFERENCE;
  params_.momentum_mode = static_cast<nk_momentum_mode>(2);
  Reject(NK_ERROR_INVALID_VALUE, {"params->momentum_mode = 2", "is not an nk_momentum_mode"},
         kAndQuery);
  params_.momentum_mode = NK_MOMENTUM_EXPONENTIAL;
  params_.running_var = static_cast<nk_running_var>(-7);
  Reject(NK_ERROR_INVALID_VALUE, {"params->running_var = -7", "is not an nk_running_var"},
         kAndQuery);
}

TEST_P(ValidationRunningForward, CumulativeIgnoresMomentum) {
  params_.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  params_.momentum = 5.0;
  ExpectSuccess(kAndQuery);
  EXPECT_EQ(Counter(), 42);
}

TEST_P(ValidationRunningForward, CumulativeWithoutNumBatchesTracked) {
  params_.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  a_.num_batches_tracked = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"num_batches_tracked is NULL", "NK_MOMENTUM_CUMULATIVE"});
}

// num_batches_tracked in training: in [0, INT64_MAX - 1]. -1 would make the cumulative momentum
// 1/0 (NaN in both running statistics), -2 a momentum of -1, INT64_MAX an overflowing increment.
// The fixture watches the counter, the running statistics and the poisoned outputs.
TEST_P(ValidationRunningForward, NegativeNumBatchesTrackedCumulative) {
  params_.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  for (int64_t v : {int64_t{-1}, int64_t{-2}, rng_.integer(INT64_MIN, -3)}) {
    SetCounter(v);
    Reject(NK_ERROR_INVALID_VALUE, {"*num_batches_tracked = " + std::to_string(v),
                                    "expected a count in [0, INT64_MAX - 1]"});
  }
}

TEST_P(ValidationRunningForward, NegativeNumBatchesTrackedExponential) {
  for (int64_t v : {int64_t{-1}, rng_.integer(INT64_MIN, -2)}) {
    SetCounter(v);
    Reject(NK_ERROR_INVALID_VALUE, {"*num_batches_tracked = " + std::to_string(v)});
  }
}

TEST_P(ValidationRunningForward, NegativeNumBatchesTrackedWithoutRunningBuffers) {
  a_.running_mean = a_.running_var = nullptr;
  SetCounter(-1);
  Reject(NK_ERROR_INVALID_VALUE, {"*num_batches_tracked = -1"});
}

TEST_P(ValidationRunningForward, NumBatchesTrackedAtInt64Max) {
  SetCounter(INT64_MAX);
  for (nk_momentum_mode mode : {NK_MOMENTUM_EXPONENTIAL, NK_MOMENTUM_CUMULATIVE}) {
    params_.momentum_mode = mode;
    Reject(NK_ERROR_INVALID_VALUE, {"*num_batches_tracked = 9223372036854775807"});
  }
}

// The bounds are exact: 0 and INT64_MAX - 1 advance, and the running statistics stay finite.
TEST_P(ValidationRunningForward, NumBatchesTrackedAtTheBoundsAdvances) {
  params_.momentum_mode = NK_MOMENTUM_CUMULATIVE;
  for (int64_t v : {int64_t{0}, INT64_MAX - 1}) {
    SetCounter(v);
    ExpectSuccess();
    EXPECT_EQ(Counter(), v + 1);
    for (int64_t c = 0; c < act_desc_.c; ++c) {
      EXPECT_TRUE(std::isfinite(a_.running_mean[c])) << "running_mean[" << c << "]";
      EXPECT_TRUE(std::isfinite(a_.running_var[c])) << "running_var[" << c << "]";
    }
  }
}

// Inference neither reads nor writes the counter: whatever it holds is left as it is.
TEST_P(ValidationRunningForward, NumBatchesTrackedNotReadInInference) {
  params_.phase = NK_INFERENCE;
  SetCounter(-1);
  ExpectSuccess();
  EXPECT_EQ(Counter(), -1);
}

// Forward and backward: the saved statistics of a single value cannot exist either.
TEST_P(ValidationRunningNorm, TrainingWithOneValuePerStatistic) {
  const bool batch = op_ == Op::kBatchFwd || op_ == Op::kBatchBwd;
  act_desc_.spatial = 1;
  if (batch) act_desc_.n = 1;
  const std::string over = batch ? "desc->n * desc->spatial" : "desc->spatial";
  Reject(NK_ERROR_BAD_SHAPE, {"more than one value", over + " = 1"}, kAndQuery);
}

TEST_P(ValidationRunningNorm, InferenceWithOneValuePerStatisticSucceeds) {
  params_.phase = NK_INFERENCE;
  act_desc_.n = act_desc_.spatial = 1;
  ExpectSuccess(kAndQuery);
}

TEST_P(ValidationRunningForward, TrainingWithOnlyRunningMean) {
  a_.running_var = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"running_var is NULL"});
}

TEST_P(ValidationRunningForward, TrainingWithOnlyRunningVar) {
  a_.running_mean = nullptr;
  Reject(NK_ERROR_INVALID_VALUE, {"running_mean is NULL"});
}

TEST_P(ValidationRunningForward, RunningMeanEqualsRunningVar) {
  a_.running_var = a_.running_mean;
  Reject(NK_ERROR_INVALID_VALUE,
         {Named("running_mean", a_.running_mean), Named("running_var", a_.running_mean)});
}

TEST_P(ValidationRunningForward, NumBatchesTrackedInsideRunningMean) {
  a_.num_batches_tracked = reinterpret_cast<int64_t*>(a_.running_mean + 2);
  Reject(NK_ERROR_INVALID_VALUE, {Named("running_mean", a_.running_mean),
                                  Named("num_batches_tracked", a_.running_mean + 2)});
}

TEST_P(ValidationRunningForward, RunningMeanInsideX) {
  a_.running_mean = F32("x") + 4;
  Reject(NK_ERROR_INVALID_VALUE, {Named("x", a_.x), Named("running_mean", a_.running_mean)});
}

// ---- group norm -------------------------------------------------------------------------------

TEST_P(ValidationGroupNorm, NonPositiveGroups) {
  for (int64_t v : {0, -2}) {
    a_.groups = v;
    Reject(NK_ERROR_BAD_SHAPE, {"groups = " + std::to_string(v)}, kAndQuery);
  }
}

TEST_P(ValidationGroupNorm, GroupsNotDividingC) {
  a_.groups = 3;
  Reject(NK_ERROR_BAD_SHAPE, {"groups = 3", "desc->c = 4"}, kAndQuery);
}

TEST_P(ValidationGroupNorm, OneValuePerGroup) {  // (C / groups) * S == 1
  a_.groups = 4;
  act_desc_.spatial = 1;
  Reject(NK_ERROR_BAD_SHAPE, {"more than one value", "(desc->c / groups) * desc->spatial = 1"},
         kAndQuery);
}

// ---- workspace ---------------------------------------------------------------------------------

TEST_P(ValidationScratch, WorkspaceTooSmallThenRemoved) {
  size_t need = 0;
  a_.bytes = &need;
  ASSERT_EQ(Query(), NK_SUCCESS) << nk_last_error();
  ASSERT_GT(need, 0u);
  SetWorkspace(need - 1);
  Reject(NK_ERROR_WORKSPACE,
         {"workspace has " + std::to_string(need - 1) + " bytes", "needs " + std::to_string(need)});
  ASSERT_EQ(nk_context_set_workspace(ctx_, nullptr, 0), NK_SUCCESS) << nk_last_error();
  ExpectSuccess();
}

TEST_P(ValidationScratch, WorkspaceOverlapsArgument) {
  size_t need = 0;
  a_.bytes = &need;
  ASSERT_EQ(Query(), NK_SUCCESS) << nk_last_error();
  float* ws = static_cast<float*>(SetWorkspace(need, Arena(0)));
  ASSERT_LE(reinterpret_cast<char*>(ws) + need, reinterpret_cast<char*>(Arena(1024)));
  a_.x = ws;
  Reject(NK_ERROR_INVALID_VALUE, {"workspace", Named("x", ws)});
}

// ---- context ----------------------------------------------------------------------------------

class ValidationContext : public OpTest {
 protected:
  void SetUp() override { Init(Op::kBatchFwd); }

  // A workspace one byte short for batch norm forward: the op then fails with
  // NK_ERROR_WORKSPACE naming its size, which shows the context still holds it.
  size_t SetShortWorkspace() {
    size_t need = 0;
    EXPECT_EQ(nk_batch_norm_forward_workspace_size(ctx_, &act_desc_, &params_, &need), NK_SUCCESS);
    SetWorkspace(need - 1);
    return need - 1;
  }
  void ExpectWorkspaceKept(size_t bytes) {
    Reject(NK_ERROR_WORKSPACE, {"workspace has " + std::to_string(bytes) + " bytes"});
  }
};

TEST_F(ValidationContext, CreateWithNullOut) {
  ExpectRejected("nk_context_create", NK_ERROR_INVALID_VALUE, {"out is NULL"}, buffers_,
                 [] { return nk_context_create(NK_BACKEND_CPU, 0, nullptr); });
}

TEST_F(ValidationContext, CreateWithUnknownBackend) {
  const auto sentinel = reinterpret_cast<nk_context>(uintptr_t{0x1000});
  for (int backend : {7, -1}) {
    nk_context out = sentinel;
    ExpectRejected("nk_context_create", NK_ERROR_INVALID_VALUE,
                   {"backend = " + std::to_string(backend)}, buffers_,
                   [&] { return nk_context_create(static_cast<nk_backend>(backend), 0, &out); });
    EXPECT_EQ(out, sentinel) << "out written by a failing nk_context_create";
  }
}

TEST_F(ValidationContext, GetBackendWithNullCtx) {
  nk_backend out = NK_BACKEND_CUDA;
  ExpectRejected("nk_context_get_backend", NK_ERROR_INVALID_VALUE, {"ctx is NULL"}, buffers_,
                 [&] { return nk_context_get_backend(nullptr, &out); });
  EXPECT_EQ(out, NK_BACKEND_CUDA) << "out written by a failing call";
}

TEST_F(ValidationContext, GetBackendWithNullOut) {
  ExpectRejected("nk_context_get_backend", NK_ERROR_INVALID_VALUE, {"out is NULL"}, buffers_,
                 [&] { return nk_context_get_backend(ctx_, nullptr); });
}

TEST_F(ValidationContext, SetStreamWithNullCtx) {
  int stream = 0;
  ExpectRejected("nk_context_set_stream", NK_ERROR_INVALID_VALUE, {"ctx is NULL"}, buffers_,
                 [&] { return nk_context_set_stream(nullptr, &stream); });
}

TEST_F(ValidationContext, SetWorkspaceWithNullCtx) {
  void* ws = SetWorkspace(1024);
  ExpectRejected("nk_context_set_workspace", NK_ERROR_INVALID_VALUE, {"ctx is NULL"}, buffers_,
                 [&] { return nk_context_set_workspace(nullptr, ws, 1024); });
}

TEST_F(ValidationContext, SetWorkspaceNullPtrWithBytes) {
  const size_t kept = SetShortWorkspace();
  ExpectRejected("nk_context_set_workspace", NK_ERROR_INVALID_VALUE,
                 {"ptr = NULL with bytes = 4096"}, buffers_,
                 [&] { return nk_context_set_workspace(ctx_, nullptr, 4096); });
  ExpectWorkspaceKept(kept);
}

TEST_F(ValidationContext, SetWorkspaceMisaligned) {
  const size_t kept = SetShortWorkspace();
  void* misaligned = static_cast<char*>(workspace_) + 8;
  std::ostringstream expected;
  expected << "ptr = " << misaligned << " is not aligned to 256 bytes";
  ExpectRejected("nk_context_set_workspace", NK_ERROR_INVALID_VALUE, {expected.str()}, buffers_,
                 [&] { return nk_context_set_workspace(ctx_, misaligned, kept); });
  ExpectWorkspaceKept(kept);
}

// ---- out of memory: scratch of petabytes, fake far-apart pointers never dereferenced -----------

void* Fake(uint64_t k) { return reinterpret_cast<void*>(static_cast<uintptr_t>(k) << 50); }
const float* FakeF(uint64_t k) { return static_cast<const float*>(Fake(k)); }

TEST(ValidationOutOfMemory, LayerNormBackward) {
  nkt::CpuContext ctx;
  const nk_row_desc desc{1, int64_t{1} << 46, NK_F32, NK_F32};  // 2^48 bytes per activation
  size_t need = 0;
  ASSERT_EQ(nk_layer_norm_backward_workspace_size(ctx, &desc, &need), NK_SUCCESS);
  EXPECT_GE(need, size_t{1} << 50);
  ExpectRejected("nk_layer_norm_backward", NK_ERROR_OUT_OF_MEMORY,
                 {"could not allocate " + std::to_string(need) + " bytes"}, {}, [&] {
                   return nk_layer_norm_backward(ctx, &desc, Fake(1), Fake(2), nullptr, FakeF(3),
                                                 FakeF(4), Fake(5), nullptr, nullptr);
                 });
}

TEST(ValidationOutOfMemory, RmsNormBackward) {
  nkt::CpuContext ctx;
  const nk_row_desc desc{1, int64_t{1} << 46, NK_F32, NK_F32};
  size_t need = 0;
  ASSERT_EQ(nk_rms_norm_backward_workspace_size(ctx, &desc, &need), NK_SUCCESS);
  EXPECT_GE(need, size_t{1} << 50);
  ExpectRejected("nk_rms_norm_backward", NK_ERROR_OUT_OF_MEMORY,
                 {"could not allocate " + std::to_string(need) + " bytes"}, {}, [&] {
                   return nk_rms_norm_backward(ctx, &desc, Fake(1), Fake(2), nullptr, FakeF(3),
                                               Fake(4), nullptr);
                 });
}

TEST(ValidationOutOfMemory, BatchNormForwardTraining) {
  nkt::CpuContext ctx;
  const nk_act_desc desc{2, int64_t{1} << 46, 1, NK_NCHW, NK_F32};  // 2^49 bytes per activation
  const nk_norm_params params = nk_norm_params_default();
  size_t need = 0;
  ASSERT_EQ(nk_batch_norm_forward_workspace_size(ctx, &desc, &params, &need), NK_SUCCESS);
  EXPECT_GE(need, size_t{1} << 50);
  ExpectRejected("nk_batch_norm_forward", NK_ERROR_OUT_OF_MEMORY,
                 {"could not allocate " + std::to_string(need) + " bytes"}, {}, [&] {
                   return nk_batch_norm_forward(
                       ctx, &desc, &params, Fake(1), nullptr, nullptr, nullptr, nullptr, nullptr,
                       Fake(2), const_cast<float*>(FakeF(3)), const_cast<float*>(FakeF(4)));
                 });
}

// ---- the last error and status names ----------------------------------------------------------

TEST(ValidationLastError, IsThreadLocal) {
  ASSERT_EQ(nk_context_get_backend(nullptr, nullptr), NK_ERROR_INVALID_VALUE);
  const std::string mine = nk_last_error();
  std::string fresh, theirs;
  std::thread other([&] {
    fresh = nk_last_error();
    nk_context_set_stream(nullptr, nullptr);
    theirs = nk_last_error();
  });
  other.join();
  EXPECT_EQ(fresh, "") << "a new thread starts with no message";
  EXPECT_EQ(theirs.rfind("nk_context_set_stream: ctx is NULL", 0), 0u) << theirs;
  EXPECT_EQ(nk_last_error(), mine);
}

TEST(ValidationLastError, SuccessKeepsMessage) {
  nkt::CpuContext ctx;
  ASSERT_EQ(nk_context_get_backend(nullptr, nullptr), NK_ERROR_INVALID_VALUE);
  const std::string before = nk_last_error();
  nk_backend backend;
  ASSERT_EQ(nk_context_get_backend(ctx, &backend), NK_SUCCESS);
  EXPECT_EQ(nk_last_error(), before);
}

}  // namespace
