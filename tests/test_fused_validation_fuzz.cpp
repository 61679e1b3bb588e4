// Random calls of the fused ops (nk_channel_norm_fused_*, nk_row_norm_fused_*) and their queries on
// the CPU backend, against the contract of fuzz_contract.hpp. Each trial starts from a random valid
// call (norm, residual, activation or weight form and output, phase, layout, dtypes, which
// nullable buffers are given), then makes one to three random changes: a dimension, an enum of the
// descriptor, fusion or parameters, eps, momentum, the counter, a buffer set to NULL, given where
// the fusion does not use it, misaligned, moved onto another buffer or into a shared arena, a
// workspace too small or overlapping. test_channel_fusion_validation.cpp and test_row_fusion.cpp
// check each rule alone; here several at once, and the valid calls beside them.
// Buffers hold at most 2 x 4 x 3 (or 3 x 8) activations and 8 per-channel values, and a change
// that could be accepted never makes a call need more (larger dimensions only where the element
// count passes 2^60 - 1), so the sanitizer build would catch a read past one.
#include <cstdint>
#include <cstring>
#include <functional>
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
using nkt::Buffer;

constexpr int kTrials = 4000;    // per op
constexpr int kMostChanges = 3;  // changes per trial: 1 to this
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kActFloats = 24, kVecFloats = 8, kArenaFloats = 1024;  // buffers' sizes

enum class FusedOp { kChannelForward, kChannelBackward, kRowForward, kRowBackward };

const char* OpName(FusedOp op) {
  switch (op) {
    case FusedOp::kChannelForward:
      return "ChannelForward";
    case FusedOp::kChannelBackward:
      return "ChannelBackward";
    case FusedOp::kRowForward:
      return "RowForward";
    case FusedOp::kRowBackward:
      return "RowBackward";
  }
  return "?";
}

std::string ParamName(const ::testing::TestParamInfo<FusedOp>& info) { return OpName(info.param); }
void PrintTo(FusedOp op, std::ostream* out) { *out << OpName(op); }

// What a buffer holds, which decides its size and where a change may move a pointer to it.
enum Kind { kAct, kVec, kMask, kScalar };

int64_t Floats(int kind) { return kind == kAct ? kActFloats : kind == kVec ? kVecFloats : 2; }

class FusedValidationFuzz : public ::testing::TestWithParam<FusedOp> {
 protected:
  FusedOp Op() const { return GetParam(); }
  bool Channel() const {
    return Op() == FusedOp::kChannelForward || Op() == FusedOp::kChannelBackward;
  }
  std::string Fn() const {
    switch (Op()) {
      case FusedOp::kChannelForward:
        return "nk_channel_norm_fused_forward";
      case FusedOp::kChannelBackward:
        return "nk_channel_norm_fused_backward";
      case FusedOp::kRowForward:
        return "nk_row_norm_fused_forward";
      case FusedOp::kRowBackward:
        return "nk_row_norm_fused_backward";
    }
    return "?";
  }
  bool Coin() { return rng_.integer(0, 1) == 1; }

  void DeclareSlots() {
    slots_.clear();
    auto& cf = cf_buf_;
    auto& cb = cb_buf_;
    auto& rf = rf_buf_;
    auto& rb = rb_buf_;
    switch (Op()) {
      case FusedOp::kChannelForward:
        slots_ = {
            nkf::make_slot("x", kAct, nkf::Role::kIn, &cf, &nk_channel_fused_forward_buffers::x),
            nkf::make_slot("z", kAct, nkf::Role::kIn, &cf, &nk_channel_fused_forward_buffers::z),
            nkf::make_slot("weight", kVec, nkf::Role::kIn, &cf,
                           &nk_channel_fused_forward_buffers::weight),
            nkf::make_slot("bias", kVec, nkf::Role::kIn, &cf,
                           &nk_channel_fused_forward_buffers::bias),
            nkf::make_slot("running_mean", kVec, nkf::Role::kInOut, &cf,
                           &nk_channel_fused_forward_buffers::running_mean),
            nkf::make_slot("running_var", kVec, nkf::Role::kInOut, &cf,
                           &nk_channel_fused_forward_buffers::running_var),
            nkf::make_slot("y", kAct, nkf::Role::kOut, &cf, &nk_channel_fused_forward_buffers::y),
            nkf::make_slot("save_mean", kVec, nkf::Role::kOut, &cf,
                           &nk_channel_fused_forward_buffers::save_mean),
            nkf::make_slot("save_invstd", kVec, nkf::Role::kOut, &cf,
                           &nk_channel_fused_forward_buffers::save_invstd),
            nkf::make_slot("relu_mask", kMask, nkf::Role::kOut, &cf,
                           &nk_channel_fused_forward_buffers::relu_mask)};
        break;
      case FusedOp::kChannelBackward:
        slots_ = {
            nkf::make_slot("x", kAct, nkf::Role::kIn, &cb, &nk_channel_fused_backward_buffers::x),
            nkf::make_slot("dy", kAct, nkf::Role::kIn, &cb, &nk_channel_fused_backward_buffers::dy),
            nkf::make_slot("y", kAct, nkf::Role::kIn, &cb, &nk_channel_fused_backward_buffers::y),
            nkf::make_slot("relu_mask", kMask, nkf::Role::kIn, &cb,
                           &nk_channel_fused_backward_buffers::relu_mask),
            nkf::make_slot("z", kAct, nkf::Role::kIn, &cb, &nk_channel_fused_backward_buffers::z),
            nkf::make_slot("weight", kVec, nkf::Role::kIn, &cb,
                           &nk_channel_fused_backward_buffers::weight),
            nkf::make_slot("bias", kVec, nkf::Role::kIn, &cb,
                           &nk_channel_fused_backward_buffers::bias),
            nkf::make_slot("running_mean", kVec, nkf::Role::kIn, &cb,
                           &nk_channel_fused_backward_buffers::running_mean),
            nkf::make_slot("running_var", kVec, nkf::Role::kIn, &cb,
                           &nk_channel_fused_backward_buffers::running_var),
            nkf::make_slot("save_mean", kVec, nkf::Role::kIn, &cb,
                           &nk_channel_fused_backward_buffers::save_mean),
            nkf::make_slot("save_invstd", kVec, nkf::Role::kIn, &cb,
                           &nk_channel_fused_backward_buffers::save_invstd),
            nkf::make_slot("dx", kAct, nkf::Role::kOut, &cb,
                           &nk_channel_fused_backward_buffers::dx),
            nkf::make_slot("dz", kAct, nkf::Role::kOut, &cb,
                           &nk_channel_fused_backward_buffers::dz),
            nkf::make_slot("dweight", kVec, nkf::Role::kOut, &cb,
                           &nk_channel_fused_backward_buffers::dweight),
            nkf::make_slot("dbias", kVec, nkf::Role::kOut, &cb,
                           &nk_channel_fused_backward_buffers::dbias)};
        break;
      case FusedOp::kRowForward:
        slots_ = {
            nkf::make_slot("x", kAct, nkf::Role::kIn, &rf, &nk_row_fused_forward_buffers::x),
            nkf::make_slot("residual", kAct, nkf::Role::kIn, &rf,
                           &nk_row_fused_forward_buffers::residual),
            nkf::make_slot("bias_in", kVec, nkf::Role::kIn, &rf,
                           &nk_row_fused_forward_buffers::bias_in),
            nkf::make_slot("weight", kVec, nkf::Role::kIn, &rf,
                           &nk_row_fused_forward_buffers::weight),
            nkf::make_slot("bias", kVec, nkf::Role::kIn, &rf, &nk_row_fused_forward_buffers::bias),
            nkf::make_slot("h", kAct, nkf::Role::kOut, &rf, &nk_row_fused_forward_buffers::h),
            nkf::make_slot("y", kAct, nkf::Role::kOut, &rf, &nk_row_fused_forward_buffers::y),
            nkf::make_slot("y_scale", kScalar, nkf::Role::kIn, &rf,
                           &nk_row_fused_forward_buffers::y_scale),
            nkf::make_slot("y_amax", kScalar, nkf::Role::kOut, &rf,
                           &nk_row_fused_forward_buffers::y_amax),
            nkf::make_slot("save_mean", kVec, nkf::Role::kOut, &rf,
                           &nk_row_fused_forward_buffers::save_mean),
            nkf::make_slot("save_rstd", kVec, nkf::Role::kOut, &rf,
                           &nk_row_fused_forward_buffers::save_rstd)};
        break;
      case FusedOp::kRowBackward:
        slots_ = {
            nkf::make_slot("x", kAct, nkf::Role::kIn, &rb, &nk_row_fused_backward_buffers::x),
            nkf::make_slot("dy", kAct, nkf::Role::kIn, &rb, &nk_row_fused_backward_buffers::dy),
            nkf::make_slot("dh_extra", kAct, nkf::Role::kIn, &rb,
                           &nk_row_fused_backward_buffers::dh_extra),
            nkf::make_slot("weight", kVec, nkf::Role::kIn, &rb,
                           &nk_row_fused_backward_buffers::weight),
            nkf::make_slot("save_mean", kVec, nkf::Role::kIn, &rb,
                           &nk_row_fused_backward_buffers::save_mean),
            nkf::make_slot("save_rstd", kVec, nkf::Role::kIn, &rb,
                           &nk_row_fused_backward_buffers::save_rstd),
            nkf::make_slot("dx", kAct, nkf::Role::kOut, &rb, &nk_row_fused_backward_buffers::dx),
            nkf::make_slot("dresidual", kAct, nkf::Role::kOut, &rb,
                           &nk_row_fused_backward_buffers::dresidual),
            nkf::make_slot("dbias_in", kVec, nkf::Role::kOut, &rb,
                           &nk_row_fused_backward_buffers::dbias_in),
            nkf::make_slot("dweight", kVec, nkf::Role::kOut, &rb,
                           &nk_row_fused_backward_buffers::dweight),
            nkf::make_slot("dbias", kVec, nkf::Role::kOut, &rb,
                           &nk_row_fused_backward_buffers::dbias)};
        break;
    }
  }

  nkf::Slot& SlotNamed(const std::string& name) { return nkf::slot_named(slots_, name); }
  // Gives slot `name` its buffer (when `given`) or NULL.
  void Give(const std::string& name, bool given = true) {
    SlotNamed(name).set(given ? buffers_.at(name).data() : nullptr);
  }

  // Fresh buffers (inputs random, outputs poisoned) and a random valid call.
  void NewCall() {
    buffers_.clear();
    nkf::clear_workspace(ctx_, ws_);
    cf_buf_ = {};
    cb_buf_ = {};
    rf_buf_ = {};
    rb_buf_ = {};
    nkf::new_slot_buffers(slots_, Floats, rng_, buffers_);
    for (const char* positive : {"save_invstd", "save_rstd", "running_var", "y_scale"}) {
      if (buffers_.count(positive)) {
        buffers_[positive] = Buffer(NK_F32, rng_.uniform(Floats(SlotNamed(positive).kind), 0.5, 2));
      }
    }
    if (Op() == FusedOp::kChannelBackward) {  // a mask as a forward leaves it: 0 after 24 bits
      const uint32_t words[2] = {static_cast<uint32_t>(rng_.integer(0, (1 << 24) - 1)), 0};
      std::memcpy(buffers_.at("relu_mask").data(), words, sizeof words);
    }
    buffers_["arena"] = Buffer(NK_F32, rng_.uniform(kArenaFloats, -2, 2));
    buffers_["counter"] = Buffer(NK_F32, 2);
    SetCounter(pick<int64_t>(rng_, {0, 7}));
    buffers_["bytes"] = Buffer(NK_F32, 2);
    buffers_["bytes"].poison();

    desc_arg_ = true;
    fusion_arg_ = true;
    params_arg_ = true;
    buffers_arg_ = true;
    act_ = {2, 4, 3, pick(rng_, {NK_NCHW, NK_NHWC}), pick(rng_, {NK_F32, NK_F16, NK_BF16})};
    row_ = {3, 8, act_.dtype, Coin() ? NK_F32 : act_.dtype};
    params_ = nk_norm_params_default();
    eps_ = 1e-5;
    if (Channel()) {
      NewChannelCall();
    } else {
      NewRowCall();
    }
  }

  void NewChannelCall() {
    cfusion_ = nk_channel_fusion_default();
    cfusion_.norm = pick(rng_, {NK_BATCH_NORM, NK_INSTANCE_NORM, NK_GROUP_NORM});
    cfusion_.groups = cfusion_.norm == NK_GROUP_NORM ? pick<int64_t>(rng_, {1, 2, 4}) : 0;
    cfusion_.residual = Coin() ? NK_RESIDUAL_ADD : NK_RESIDUAL_NONE;
    cfusion_.activation =
        pick(rng_, {NK_ACTIVATION_IDENTITY, NK_ACTIVATION_RELU, NK_ACTIVATION_SILU});
    const bool group = cfusion_.norm == NK_GROUP_NORM;
    params_.phase = group || Coin() ? NK_TRAINING : NK_INFERENCE;
    params_.momentum_mode = Coin() ? NK_MOMENTUM_CUMULATIVE : NK_MOMENTUM_EXPONENTIAL;
    const bool training = params_.phase == NK_TRAINING;
    const bool residual = cfusion_.residual == NK_RESIDUAL_ADD;
    const bool relu = cfusion_.activation == NK_ACTIVATION_RELU;
    const bool silu = cfusion_.activation == NK_ACTIVATION_SILU;
    Give("x");
    Give("weight", Coin());
    if (Op() == FusedOp::kChannelForward) {
      Give("z", residual);
      Give("bias", Coin());
      const bool running = !group && (!training || Coin());
      Give("running_mean", running);
      Give("running_var", running);
      if (!group && training) {
        cf_buf_.num_batches_tracked = reinterpret_cast<int64_t*>(buffers_.at("counter").data());
      }
      Give("y");
      Give("save_mean", training && Coin());
      Give("save_invstd", training && Coin());
      Give("relu_mask", relu && Coin());
      return;
    }
    const bool mask = relu && Coin();
    Give("dy");
    Give("y", relu && !mask);
    Give("relu_mask", mask);
    Give("z", silu && residual);
    Give("bias", silu && Coin());
    Give("running_mean", !training);
    Give("running_var", !training);
    Give("save_mean", training);
    Give("save_invstd", training);
    Give("dx", Coin());
    Give("dz", residual && Coin());
    Give("dweight", Coin());
    Give("dbias", Coin());
  }

  void NewRowCall() {
    rfusion_ = nk_row_fusion_default();
    rfusion_.norm = Coin() ? NK_RMS_NORM : NK_LAYER_NORM;
    rfusion_.residual = Coin() ? NK_RESIDUAL_ADD : NK_RESIDUAL_NONE;
    rfusion_.weight_form = Coin() ? NK_WEIGHT_ZERO_CENTERED : NK_WEIGHT_DIRECT;
    rfusion_.output = pick(rng_, {NK_OUTPUT_DTYPE, NK_OUTPUT_FP8_E4M3, NK_OUTPUT_FP8_E5M2});
    const bool layer = rfusion_.norm == NK_LAYER_NORM;
    const bool residual = rfusion_.residual == NK_RESIDUAL_ADD;
    const bool weight = rfusion_.weight_form == NK_WEIGHT_ZERO_CENTERED || Coin();
    Give("x");
    Give("weight", weight);
    if (Op() == FusedOp::kRowForward) {
      const bool fp8 = rfusion_.output != NK_OUTPUT_DTYPE;
      Give("residual", residual);
      Give("bias_in", residual && Coin());
      Give("bias", layer && Coin());
      Give("h", residual && Coin());
      Give("y");
      Give("y_scale", fp8);
      Give("y_amax", fp8 && Coin());
      Give("save_mean", layer && Coin());
      Give("save_rstd", Coin());
      return;
    }
    Give("dy");
    Give("dh_extra", residual && Coin());
    Give("save_mean", layer);
    Give("save_rstd");
    Give("dx", Coin());
    Give("dresidual", residual && Coin());
    Give("dbias_in", residual && (rb_buf_.dx || rb_buf_.dresidual) && Coin());
    Give("dweight", Coin());
    Give("dbias", layer && Coin());
  }

  // The call as it stands: descriptor, fusion, phase and the buffers given.
  std::string Describe() {
    std::ostringstream d;
    if (Channel()) {
      d << "act " << act_.n << "x" << act_.c << "x" << act_.spatial << " layout " << act_.layout
        << " dtype " << act_.dtype << ", norm " << cfusion_.norm << " groups " << cfusion_.groups
        << " residual " << cfusion_.residual << " activation " << cfusion_.activation << ", phase "
        << params_.phase << " momentum_mode " << params_.momentum_mode;
    } else {
      d << "rows " << row_.rows << "x" << row_.cols << " dtype " << row_.dtype << " weight_dtype "
        << row_.weight_dtype << ", norm " << rfusion_.norm << " residual " << rfusion_.residual
        << " weight_form " << rfusion_.weight_form << " output " << rfusion_.output;
    }
    d << "; given:";
    for (const nkf::Slot& s : slots_) {
      if (s.get() != nullptr) d << " " << s.name;
    }
    if (Op() == FusedOp::kChannelForward && cf_buf_.num_batches_tracked) d << " counter";
    return d.str();
  }

  void SetCounter(int64_t v) { std::memcpy(buffers_.at("counter").data(), &v, sizeof v); }
  // One random change; returns what it did.
  std::string Mutate() {
    std::ostringstream what;
    const int64_t k = rng_.integer(0, 21);
    if (k <= 2) {
      what << nkf::mutate_dimension(act_, row_, rng_);
    } else if (k == 3) {
      const int v = pick(rng_, {0, 1, 2, 3, -1});
      act_.dtype = row_.dtype = static_cast<nk_dtype>(v);
      what << "dtype = " << v;
    } else if (k == 4) {
      const int v = pick(rng_, {0, 1, 2, 5});
      act_.layout = static_cast<nk_layout>(v % 3);
      row_.weight_dtype = static_cast<nk_dtype>(v);
      what << "layout = " << v % 3 << ", weight_dtype = " << v;
    } else if (k == 5) {
      const int v = pick(rng_, {0, 1, 2, 6});
      cfusion_.norm = static_cast<nk_channel_norm>(v);
      rfusion_.norm = static_cast<nk_row_norm>(v);
      what << "fusion norm = " << v;
    } else if (k == 6) {
      const int64_t v = pick<int64_t>(rng_, {0, 1, 2, 4, 3, -1});
      cfusion_.groups = v;
      what << "groups = " << v;
    } else if (k == 7) {
      const int v = pick(rng_, {0, 1, 4});
      cfusion_.residual = rfusion_.residual = static_cast<nk_residual>(v);
      what << "residual = " << v;
    } else if (k == 8) {
      const int v = pick(rng_, {0, 1, 2, -1});
      cfusion_.activation = static_cast<nk_activation>(v);
      rfusion_.weight_form = static_cast<nk_weight_form>(v);
      what << "activation = weight_form = " << v;
    } else if (k == 9) {
      const int v = pick(rng_, {0, 1, 2, 9});
      rfusion_.output = static_cast<nk_output_format>(v);
      what << "output = " << v;
    } else if (k <= 12) {
      what << nkf::mutate_params(params_, eps_, rng_);
    } else if (k == 13) {
      const int64_t v = pick<int64_t>(rng_, {0, -1, kMax, kMax - 1});
      SetCounter(v);
      what << "*num_batches_tracked = " << v;
    } else if (k == 14) {
      const int c = pick(rng_, {0, 4, 9});
      auto* p = static_cast<char*>(buffers_.at("counter").data());
      cf_buf_.num_batches_tracked = c == 9 ? nullptr : reinterpret_cast<int64_t*>(p + c);
      what << "num_batches_tracked " << (c == 9 ? "NULL" : "+ " + std::to_string(c) + " bytes");
    } else if (k == 15) {
      what << nkf::mutate_workspace(ctx_, buffers_, rng_, ws_);
    } else if (k == 16) {
      const int v = pick(rng_, {0, 1, 2, 3});
      desc_arg_ = v != 0;
      fusion_arg_ = v != 1;
      params_arg_ = v != 2;
      buffers_arg_ = v != 3;
      what << (v == 0 ? "desc" : v == 1 ? "fusion" : v == 2 ? "params" : "buffers") << " NULL";
    } else {
      what << nkf::mutate_pointer(slots_, buffers_, rng_);
    }
    return what.str();
  }

  nk_status Run() {
    const nk_act_desc* desc = desc_arg_ ? &act_ : nullptr;
    const nk_row_desc* row = desc_arg_ ? &row_ : nullptr;
    const nk_norm_params* params = params_arg_ ? &params_ : nullptr;
    const nk_channel_fusion* cfusion = fusion_arg_ ? &cfusion_ : nullptr;
    const nk_row_fusion* rfusion = fusion_arg_ ? &rfusion_ : nullptr;
    switch (Op()) {
      case FusedOp::kChannelForward:
        return nk_channel_norm_fused_forward(ctx_, desc, cfusion, params,
                                             buffers_arg_ ? &cf_buf_ : nullptr);
      case FusedOp::kChannelBackward:
        return nk_channel_norm_fused_backward(ctx_, desc, cfusion, params,
                                              buffers_arg_ ? &cb_buf_ : nullptr);
      case FusedOp::kRowForward:
        return nk_row_norm_fused_forward(ctx_, row, rfusion, eps_,
                                         buffers_arg_ ? &rf_buf_ : nullptr);
      case FusedOp::kRowBackward:
        return nk_row_norm_fused_backward(ctx_, row, rfusion, buffers_arg_ ? &rb_buf_ : nullptr);
    }
    return NK_ERROR_INTERNAL;
  }

  nk_status Query() {
    const nk_act_desc* desc = desc_arg_ ? &act_ : nullptr;
    const nk_row_desc* row = desc_arg_ ? &row_ : nullptr;
    const nk_norm_params* params = params_arg_ ? &params_ : nullptr;
    const nk_channel_fusion* cfusion = fusion_arg_ ? &cfusion_ : nullptr;
    const nk_row_fusion* rfusion = fusion_arg_ ? &rfusion_ : nullptr;
    auto* bytes = static_cast<size_t*>(buffers_.at("bytes").data());
    switch (Op()) {
      case FusedOp::kChannelForward:
        return nk_channel_norm_fused_forward_workspace_size(ctx_, desc, cfusion, params, bytes);
      case FusedOp::kChannelBackward:
        return nk_channel_norm_fused_backward_workspace_size(ctx_, desc, cfusion, params, bytes);
      case FusedOp::kRowForward:
        return nk_row_norm_fused_forward_workspace_size(ctx_, row, rfusion, bytes);
      case FusedOp::kRowBackward:
        return nk_row_norm_fused_backward_workspace_size(ctx_, row, rfusion, bytes);
    }
    return NK_ERROR_INTERNAL;
  }

  // What a successful call of the current arguments may write and must fill.
  nkf::Extents Outputs() const {
    nkf::Extents out;
    out.workspace = {ws_.at, ws_.bytes, 1};
    if (Channel()) {
      const int64_t n = act_.n, c = act_.c, numel = n * c * act_.spatial;
      const size_t e = nkt::elem_size(act_.dtype);
      const bool training = params_.phase == NK_TRAINING;
      const int64_t stats = cfusion_.norm == NK_BATCH_NORM      ? c
                            : cfusion_.norm == NK_INSTANCE_NORM ? n * c
                                                                : n * cfusion_.groups;
      if (Op() == FusedOp::kChannelBackward) {
        const auto& b = cb_buf_;
        for (const void* act : {b.x, b.dy, b.y, b.z}) out.read(act, numel, e);
        out.read(b.relu_mask, (numel + 31) / 32, 4);
        for (const void* vec : {b.weight, b.bias, b.running_mean, b.running_var}) {
          out.read(vec, c, 4);
        }
        out.read(b.save_mean, stats, 4);
        out.read(b.save_invstd, stats, 4);
        out.allow(b.dx, b.dy);
        out.allow(b.dz, b.dy);
        out.add(b.dx, numel, e, true);
        out.add(b.dz, numel, e, true);
        out.add(b.dweight, c, 4, true);
        out.add(b.dbias, c, 4, true);
        return out;
      }
      const auto& b = cf_buf_;
      out.read(b.x, numel, e);
      out.read(b.z, numel, e);
      out.read(b.weight, c, 4);
      out.read(b.bias, c, 4);
      out.allow(b.y, b.x);
      out.allow(b.y, b.z);
      out.add(b.y, numel, e, true);
      out.add(b.relu_mask, (numel + 31) / 32, 4, true);
      if (training) {
        out.add(b.save_mean, stats, 4, true);
        out.add(b.save_invstd, stats, 4, true);
        out.add(b.running_mean, c, 4, false);
        out.add(b.running_var, c, 4, false);
        out.add(b.num_batches_tracked, 1, 8, false);
      } else {
        out.read(b.running_mean, c, 4);
        out.read(b.running_var, c, 4);
      }
      return out;
    }
    const int64_t rows = row_.rows, cols = row_.cols;
    const size_t e = nkt::elem_size(row_.dtype), we = nkt::elem_size(row_.weight_dtype);
    if (Op() == FusedOp::kRowForward) {
      const auto& b = rf_buf_;
      out.read(b.x, rows * cols, e);
      out.read(b.residual, rows * cols, e);
      for (const void* vec : {b.bias_in, b.weight, b.bias}) out.read(vec, cols, we);
      out.read(b.y_scale, 1, 4);
      if (rfusion_.output == NK_OUTPUT_DTYPE) out.allow(b.y, b.x);
      out.add(b.y, rows * cols, rfusion_.output == NK_OUTPUT_DTYPE ? e : 1, true);
      out.add(b.h, rows * cols, e, true);
      out.add(b.y_amax, 1, 4, true);
      out.add(b.save_mean, rows, 4, true);
      out.add(b.save_rstd, rows, 4, true);
      return out;
    }
    const auto& b = rb_buf_;
    for (const void* act : {b.x, b.dy, b.dh_extra}) out.read(act, rows * cols, e);
    out.read(b.weight, cols, we);
    out.read(b.save_mean, rows, 4);
    out.read(b.save_rstd, rows, 4);
    out.allow(b.dx, b.dy);
    out.add(b.dx, rows * cols, e, true);
    out.add(b.dresidual, rows * cols, e, true);
    for (const void* vec : {b.dbias_in, b.dweight, b.dbias}) out.add(vec, cols, we, true);
    return out;
  }

  nkt::CpuContext ctx_;
  nkt::Random rng_;
  nkv::Buffers buffers_;
  std::vector<nkf::Slot> slots_;
  nk_act_desc act_{};
  nk_row_desc row_{};
  nk_channel_fusion cfusion_{};
  nk_row_fusion rfusion_{};
  nk_norm_params params_{};
  double eps_ = 1e-5;
  bool desc_arg_ = true, fusion_arg_ = true, params_arg_ = true, buffers_arg_ = true;
  nk_channel_fused_forward_buffers cf_buf_{};
  nk_channel_fused_backward_buffers cb_buf_{};
  nk_row_fused_forward_buffers rf_buf_{};
  nk_row_fused_backward_buffers rb_buf_{};
  nkf::Workspace ws_;
};

TEST_P(FusedValidationFuzz, RandomCallsKeepTheContract) {
  DeclareSlots();
  nkf::Outcomes calls, queries, valid_starts;
  for (int trial = 0; trial < kTrials && !HasFailure(); ++trial) {
    NewCall();
    if (trial % 8 == 0) {  // the random start alone must be accepted
      SCOPED_TRACE("trial " + std::to_string(trial) + ", unchanged: " + Describe());
      nkf::check_valid_call(
          Fn(), buffers_, [&] { return Run(); }, [&] { return Outputs(); }, valid_starts);
      NewCall();
    }
    const std::string changes = nkf::random_changes(rng_, kMostChanges, [&] { return Mutate(); });
    SCOPED_TRACE("trial " + std::to_string(trial) + ": " + changes + " (now " + Describe() + ")");
    nkf::check_op_and_query(
        Fn(), buffers_, [&] { return Run(); }, [&] { return Outputs(); }, calls,
        [&] { return Query(); }, static_cast<const size_t*>(buffers_.at("bytes").data()), queries);
  }
  if (HasFailure()) return;  // the trial's own failure says it
  nkf::expect_both_outcomes(calls, queries, kTrials);
}

INSTANTIATE_TEST_SUITE_P(, FusedValidationFuzz,
                         ::testing::Values(FusedOp::kChannelForward, FusedOp::kChannelBackward,
                                           FusedOp::kRowForward, FusedOp::kRowBackward),
                         ParamName);

}  // namespace
