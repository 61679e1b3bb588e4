// The C API's ops as the validation tests call them: a fixture holding one complete, valid call of
// an op on the CPU backend (inputs random, outputs poisoned, running statistics and
// num_batches_tracked at known values), which each test then changes, and the check of a call that
// must fail (the status, a message that starts with the function's name and names what is wrong,
// and not one byte changed in any buffer the call could reach). test_validation.cpp changes one
// argument a test; test_validation_fuzz.cpp changes several at random.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test_support.hpp"

namespace nkv {

using nkt::Buffer;
using Buffers = std::map<std::string, Buffer>;
using Fragments = std::vector<std::string>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// "name (0x...": how an overlap message names a buffer and its address.
inline std::string Named(const std::string& name, const void* p) {
  std::ostringstream out;
  out << name << " (" << p;
  return out.str();
}

// Leaves a message from another function, so the message checked below is this call's own.
inline void MakeLastErrorStale(const std::string& fn) {
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

inline const OpInfo& Info(Op op) {
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

inline std::string OpParamName(const ::testing::TestParamInfo<Op>& info) {
  return Info(info.param).param_name;
}
inline void PrintTo(Op op, std::ostream* out) { *out << Info(op).param_name; }

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

}  // namespace nkv
