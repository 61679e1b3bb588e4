// Every validation rule of the fused batch, instance and group norm calls (normkit.h,
// nk_channel_norm_fused_*), one test per rule, on the CPU backend. Each test starts from a valid
// call (random inputs; outputs, the ReLU mask, the running statistics and num_batches_tracked
// poisoned), changes one thing, and checks the status, that the message starts with the
// function's name and names the argument, and that not one byte of anything the call could write
// changed. Overlaps are carved out of one poisoned arena. The in-place pairs the header allows are
// checked to give the bytes of the call without aliasing, and the mask size query its values.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using nkt::Buffer;

constexpr int64_t kN = 2, kC = 4, kS = 5, kCount = kN * kC * kS;  // 40 elements: a 2-word mask
constexpr int64_t kStats = kN * kC;  // the most statistics any norm has here (instance norm)

using Snapshot = std::map<std::string, std::vector<unsigned char>>;

Buffer poisoned(int64_t count) {
  Buffer b(NK_F32, count);
  b.poison();
  return b;
}

// The arguments of one call, their owners, and everything it could write.
struct CallBase {
  nkt::CpuContext owner;
  nk_context ctx = owner.get();
  nk_act_desc desc{kN, kC, kS, NK_NCHW, NK_F32};
  nk_channel_fusion fusion = nk_channel_fusion_default();
  nk_norm_params params = nk_norm_params_default();
  const nk_act_desc* desc_arg = &desc;
  const nk_channel_fusion* fusion_arg = &fusion;
  const nk_norm_params* params_arg = &params;
  nkt::Random rng;
  Buffer x{NK_F32, rng.normal(kCount)}, z{NK_F32, rng.normal(kCount)};
  Buffer weight{NK_F32, rng.uniform(kC, 0.5, 1.5)}, bias{NK_F32, rng.normal(kC)};
  Buffer arena = poisoned(3 * kCount);  // overlaps are made inside it
  Buffer mask = poisoned(2);            // 8 bytes: two 32-bit words
  std::map<std::string, Buffer*> written;

  // A pointer `elements` fp32 elements (or bytes, for odd offsets) into the arena.
  void* in_arena(int64_t elements) { return arena.f32() + elements; }
  void* misaligned(Buffer& b) { return static_cast<char*>(b.data()) + 2; }
  Snapshot snapshot() const {
    Snapshot s;
    for (const auto& [name, b] : written) s[name] = b->bytes();
    s["arena"] = arena.bytes();
    s["mask"] = mask.bytes();
    return s;
  }
};

struct ForwardCall : CallBase {
  Buffer running_mean{NK_F32, rng.normal(kC)}, running_var{NK_F32, rng.uniform(kC, 0.5, 2.0)};
  Buffer y = poisoned(kCount), save_mean = poisoned(kStats), save_invstd = poisoned(kStats);
  int64_t num_batches_tracked = 3;
  nk_channel_fused_forward_buffers b{};
  const nk_channel_fused_forward_buffers* buffers_arg = &b;

  // Batch norm in training, nothing fused, with running statistics, counter and saved statistics.
  ForwardCall() {
    b.x = x.data();
    b.weight = weight.f32();
    b.bias = bias.f32();
    b.running_mean = running_mean.f32();
    b.running_var = running_var.f32();
    b.num_batches_tracked = &num_batches_tracked;
    b.y = y.data();
    b.save_mean = save_mean.f32();
    b.save_invstd = save_invstd.f32();
    written = {{"y", &y},
               {"save_mean", &save_mean},
               {"save_invstd", &save_invstd},
               {"running_mean", &running_mean},
               {"running_var", &running_var},
               {"z", &z},
               {"x", &x}};
  }
  void relu() {
    fusion.activation = NK_ACTIVATION_RELU;
    b.relu_mask = mask.data();
  }
  void residual() {
    fusion.residual = NK_RESIDUAL_ADD;
    b.z = z.data();
  }
  void group_norm() {
    fusion.norm = NK_GROUP_NORM;
    fusion.groups = 2;
    b.running_mean = b.running_var = nullptr;
    b.num_batches_tracked = nullptr;
  }
  void inference() {
    params.phase = NK_INFERENCE;
    b.save_mean = b.save_invstd = nullptr;
  }
  nk_status run() {
    return nk_channel_norm_fused_forward(ctx, desc_arg, fusion_arg, params_arg, buffers_arg);
  }
  Snapshot snapshot() const {
    Snapshot s = CallBase::snapshot();
    s["num_batches_tracked"].resize(8);
    std::memcpy(s["num_batches_tracked"].data(), &num_batches_tracked, 8);
    return s;
  }
};

struct BackwardCall : CallBase {
  Buffer dy{NK_F32, rng.normal(kCount)}, y{NK_F32, rng.normal(kCount)};
  Buffer save_mean{NK_F32, rng.normal(kStats)}, save_invstd{NK_F32, rng.uniform(kStats, 0.5, 2)};
  Buffer running_mean{NK_F32, rng.normal(kC)}, running_var{NK_F32, rng.uniform(kC, 0.5, 2.0)};
  Buffer dx = poisoned(kCount), dz = poisoned(kCount), dweight = poisoned(kC), dbias = poisoned(kC);
  nk_channel_fused_backward_buffers b{};
  const nk_channel_fused_backward_buffers* buffers_arg = &b;

  // Batch norm in training, nothing fused, every gradient but dz.
  BackwardCall() {
    b.x = x.data();
    b.dy = dy.data();
    b.weight = weight.f32();
    b.save_mean = save_mean.f32();
    b.save_invstd = save_invstd.f32();
    b.dx = dx.data();
    b.dweight = dweight.f32();
    b.dbias = dbias.f32();
    written = {{"dx", &dx}, {"dz", &dz}, {"dweight", &dweight}, {"dbias", &dbias}, {"dy", &dy}};
    // A mask as a forward leaves it: bits after element 40 are 0.
    const uint32_t words[2] = {0x5a5a5a5au, 0xa5u};
    std::memcpy(mask.data(), words, 8);
  }
  void relu() {
    fusion.activation = NK_ACTIVATION_RELU;
    b.relu_mask = mask.data();
  }
  void silu_residual() {
    fusion.activation = NK_ACTIVATION_SILU;
    fusion.residual = NK_RESIDUAL_ADD;
    b.z = z.data();
    b.bias = bias.f32();
    b.dz = dz.data();
  }
  void inference() {
    params.phase = NK_INFERENCE;
    b.save_mean = b.save_invstd = nullptr;
    b.running_mean = running_mean.f32();
    b.running_var = running_var.f32();
  }
  nk_status run() {
    return nk_channel_norm_fused_backward(ctx, desc_arg, fusion_arg, params_arg, buffers_arg);
  }
};

// The call after `mutate` must fail with `want`, a message "<fn>: ..." containing `fragment`, and
// leave every byte it could write as it was.
template <class Call>
void expect_rejected(const char* fn, nk_status want, const std::string& fragment,
                     const std::function<void(Call&)>& mutate) {
  Call call;
  mutate(call);
  const Snapshot before = call.snapshot();
  nk_context_get_backend(nullptr, nullptr);  // a stale message from another function
  const nk_status got = call.run();
  const std::string message = nk_last_error();
  EXPECT_EQ(got, want) << "got " << nk_status_name(got) << "; message: " << message;
  EXPECT_EQ(message.rfind(std::string(fn) + ": ", 0), 0u) << message;
  EXPECT_NE(message.find(fragment), std::string::npos)
      << "message lacks \"" << fragment << "\": " << message;
  const Snapshot after = call.snapshot();
  for (const auto& [name, bytes] : before) {
    EXPECT_TRUE(after.at(name) == bytes) << name << " was written by the failing call";
  }
}

void forward_rejected(nk_status want, const std::string& fragment,
                      const std::function<void(ForwardCall&)>& mutate) {
  expect_rejected<ForwardCall>("nk_channel_norm_fused_forward", want, fragment, mutate);
}

void backward_rejected(nk_status want, const std::string& fragment,
                       const std::function<void(BackwardCall&)>& mutate) {
  expect_rejected<BackwardCall>("nk_channel_norm_fused_backward", want, fragment, mutate);
}

constexpr nk_status kInvalid = NK_ERROR_INVALID_VALUE;
constexpr nk_status kBadShape = NK_ERROR_BAD_SHAPE;

// ---- the valid calls the error tests start from ------------------------------------------------

TEST(ChannelFusionValidation, TheCallsTheTestsStartFromSucceed) {
  const std::vector<std::function<void(ForwardCall&)>> forwards = {
      [](ForwardCall&) {},
      [](ForwardCall& c) {
        c.relu();
        c.residual();
      },
      [](ForwardCall& c) {
        c.group_norm();
        c.fusion.activation = NK_ACTIVATION_SILU;
      },
      [](ForwardCall& c) { c.inference(); }};
  for (const auto& mutate : forwards) {
    ForwardCall call;
    mutate(call);
    EXPECT_EQ(call.run(), NK_SUCCESS) << nk_last_error();
  }
  const std::vector<std::function<void(BackwardCall&)>> backwards = {
      [](BackwardCall&) {}, [](BackwardCall& c) { c.relu(); },
      [](BackwardCall& c) { c.silu_residual(); }, [](BackwardCall& c) { c.inference(); }};
  for (const auto& mutate : backwards) {
    BackwardCall call;
    mutate(call);
    EXPECT_EQ(call.run(), NK_SUCCESS) << nk_last_error();
  }
}

// ---- forward: handles, enums, parameters, shapes ------------------------------------------------

TEST(ChannelFusionForwardErrors, CtxNull) {
  forward_rejected(kInvalid, "ctx is NULL", [](ForwardCall& c) { c.ctx = nullptr; });
}
TEST(ChannelFusionForwardErrors, FusionNull) {
  forward_rejected(kInvalid, "fusion is NULL", [](ForwardCall& c) { c.fusion_arg = nullptr; });
}
TEST(ChannelFusionForwardErrors, DescNull) {
  forward_rejected(kInvalid, "desc is NULL", [](ForwardCall& c) { c.desc_arg = nullptr; });
}
TEST(ChannelFusionForwardErrors, ParamsNull) {
  forward_rejected(kInvalid, "params is NULL", [](ForwardCall& c) { c.params_arg = nullptr; });
}
TEST(ChannelFusionForwardErrors, BuffersNull) {
  forward_rejected(kInvalid, "buffers is NULL", [](ForwardCall& c) { c.buffers_arg = nullptr; });
}
TEST(ChannelFusionForwardErrors, UnknownNorm) {
  forward_rejected(kInvalid, "fusion->norm = 3 is not an nk_channel_norm",
                   [](ForwardCall& c) { c.fusion.norm = static_cast<nk_channel_norm>(3); });
}
TEST(ChannelFusionForwardErrors, UnknownResidual) {
  forward_rejected(kInvalid, "fusion->residual = 2 is not an nk_residual",
                   [](ForwardCall& c) { c.fusion.residual = static_cast<nk_residual>(2); });
}
TEST(ChannelFusionForwardErrors, UnknownActivation) {
  forward_rejected(kInvalid, "fusion->activation = -1 is not an nk_activation",
                   [](ForwardCall& c) { c.fusion.activation = static_cast<nk_activation>(-1); });
}
TEST(ChannelFusionForwardErrors, UnknownLayout) {
  forward_rejected(kInvalid, "desc->layout = 5",
                   [](ForwardCall& c) { c.desc.layout = static_cast<nk_layout>(5); });
}
TEST(ChannelFusionForwardErrors, GroupsForBatchNorm) {
  forward_rejected(kInvalid, "fusion->groups = 2 with fusion->norm = NK_BATCH_NORM: expected 0",
                   [](ForwardCall& c) { c.fusion.groups = 2; });
}
TEST(ChannelFusionForwardErrors, GroupsForInstanceNorm) {
  forward_rejected(kInvalid, "fusion->groups = 1 with fusion->norm = NK_INSTANCE_NORM",
                   [](ForwardCall& c) {
                     c.fusion.norm = NK_INSTANCE_NORM;
                     c.fusion.groups = 1;
                   });
}
TEST(ChannelFusionForwardErrors, GroupNormWithoutGroups) {
  forward_rejected(kBadShape, "fusion->groups = 0 with fusion->norm = NK_GROUP_NORM",
                   [](ForwardCall& c) {
                     c.group_norm();
                     c.fusion.groups = 0;
                   });
}
TEST(ChannelFusionForwardErrors, GroupsNotDividingChannels) {
  forward_rejected(kBadShape, "groups = 3 does not divide desc->c = 4", [](ForwardCall& c) {
    c.group_norm();
    c.fusion.groups = 3;
  });
}
TEST(ChannelFusionForwardErrors, GroupNormInInference) {
  forward_rejected(kInvalid, "params->phase = NK_INFERENCE with fusion->norm = NK_GROUP_NORM",
                   [](ForwardCall& c) {
                     c.group_norm();
                     c.inference();
                   });
}
TEST(ChannelFusionForwardErrors, NegativeEpsNamedInTheBlockForGroupNorm) {
  forward_rejected(kInvalid, "params->eps = -0.5", [](ForwardCall& c) {
    c.group_norm();
    c.params.eps = -0.5;
  });
}
TEST(ChannelFusionForwardErrors, MomentumOutOfRange) {
  forward_rejected(kInvalid, "params->momentum = 1.5",
                   [](ForwardCall& c) { c.params.momentum = 1.5; });
}
TEST(ChannelFusionForwardErrors, UnknownMomentumModeEvenForGroupNorm) {
  forward_rejected(kInvalid, "params->momentum_mode = 9", [](ForwardCall& c) {
    c.group_norm();
    c.params.momentum_mode = static_cast<nk_momentum_mode>(9);
  });
}
TEST(ChannelFusionForwardErrors, OneValuePerStatisticInTraining) {
  forward_rejected(kBadShape, "more than one value per statistic", [](ForwardCall& c) {
    c.fusion.norm = NK_INSTANCE_NORM;
    c.desc.spatial = 1;
  });
}

// ---- forward: buffers ---------------------------------------------------------------------------

TEST(ChannelFusionForwardErrors, XNull) {
  forward_rejected(kInvalid, "x is NULL", [](ForwardCall& c) { c.b.x = nullptr; });
}
TEST(ChannelFusionForwardErrors, YNull) {
  forward_rejected(kInvalid, "y is NULL", [](ForwardCall& c) { c.b.y = nullptr; });
}
TEST(ChannelFusionForwardErrors, ZMissingWithResidual) {
  forward_rejected(kInvalid, "z is NULL with fusion->residual = NK_RESIDUAL_ADD",
                   [](ForwardCall& c) { c.fusion.residual = NK_RESIDUAL_ADD; });
}
TEST(ChannelFusionForwardErrors, ZWithoutResidual) {
  forward_rejected(kInvalid, "z is not NULL with fusion->residual = NK_RESIDUAL_NONE",
                   [](ForwardCall& c) { c.b.z = c.z.data(); });
}
TEST(ChannelFusionForwardErrors, ReluMaskWithoutRelu) {
  forward_rejected(kInvalid, "relu_mask is not NULL with fusion->activation = NK_ACTIVATION_SILU",
                   [](ForwardCall& c) {
                     c.fusion.activation = NK_ACTIVATION_SILU;
                     c.b.relu_mask = c.mask.data();
                   });
}
TEST(ChannelFusionForwardErrors, ReluMaskMisaligned) {
  forward_rejected(kInvalid, "is not aligned to its 4-byte elements", [](ForwardCall& c) {
    c.relu();
    c.b.relu_mask = c.misaligned(c.arena);
  });
}
TEST(ChannelFusionForwardErrors, ReluMaskOverlapsY) {
  forward_rejected(kInvalid, "overlaps relu_mask", [](ForwardCall& c) {
    c.relu();
    c.b.y = c.in_arena(0);
    c.b.relu_mask = c.in_arena(kCount - 1);
  });
}
TEST(ChannelFusionForwardErrors, ReluMaskOverlapsX) {
  forward_rejected(kInvalid, "overlaps relu_mask", [](ForwardCall& c) {
    c.relu();
    c.b.x = c.in_arena(0);
    c.b.relu_mask = c.in_arena(3);
  });
}
TEST(ChannelFusionForwardErrors, RunningMeanForGroupNorm) {
  forward_rejected(kInvalid,
                   "running_mean is not NULL with fusion->norm = NK_GROUP_NORM, which has no "
                   "running statistics",
                   [](ForwardCall& c) {
                     c.group_norm();
                     c.b.running_mean = c.running_mean.f32();
                     c.b.running_var = c.running_var.f32();
                   });
}
TEST(ChannelFusionForwardErrors, RunningVarForGroupNorm) {
  forward_rejected(kInvalid, "running_var is not NULL with fusion->norm = NK_GROUP_NORM",
                   [](ForwardCall& c) {
                     c.group_norm();
                     c.b.running_var = c.running_var.f32();
                   });
}
TEST(ChannelFusionForwardErrors, CounterForGroupNorm) {
  forward_rejected(kInvalid, "num_batches_tracked is not NULL with fusion->norm = NK_GROUP_NORM",
                   [](ForwardCall& c) {
                     c.group_norm();
                     c.b.num_batches_tracked = &c.num_batches_tracked;
                   });
}
TEST(ChannelFusionForwardErrors, OneRunningBuffer) {
  forward_rejected(kInvalid, "running_var is NULL while running_mean is not",
                   [](ForwardCall& c) { c.b.running_var = nullptr; });
}
TEST(ChannelFusionForwardErrors, InferenceWithoutRunningStatistics) {
  forward_rejected(kInvalid, "running_mean and running_var are NULL in NK_INFERENCE",
                   [](ForwardCall& c) {
                     c.inference();
                     c.b.running_mean = c.b.running_var = nullptr;
                   });
}
TEST(ChannelFusionForwardErrors, CumulativeMomentumWithoutCounter) {
  forward_rejected(kInvalid, "num_batches_tracked is NULL with params->momentum_mode",
                   [](ForwardCall& c) {
                     c.params.momentum_mode = NK_MOMENTUM_CUMULATIVE;
                     c.b.num_batches_tracked = nullptr;
                   });
}
TEST(ChannelFusionForwardErrors, NegativeCounter) {
  forward_rejected(kInvalid, "*num_batches_tracked = -1",
                   [](ForwardCall& c) { c.num_batches_tracked = -1; });
}
TEST(ChannelFusionForwardErrors, SaveMeanInInference) {
  forward_rejected(kInvalid, "save_mean is not NULL in NK_INFERENCE", [](ForwardCall& c) {
    c.inference();
    c.b.save_mean = c.save_mean.f32();
  });
}
TEST(ChannelFusionForwardErrors, SaveInvstdInInference) {
  forward_rejected(kInvalid, "save_invstd is not NULL in NK_INFERENCE", [](ForwardCall& c) {
    c.inference();
    c.b.save_invstd = c.save_invstd.f32();
  });
}
TEST(ChannelFusionForwardErrors, YOverlapsXPartly) {
  forward_rejected(kInvalid, "the only aliasing supported is y == x", [](ForwardCall& c) {
    c.b.x = c.in_arena(0);
    c.b.y = c.in_arena(1);
  });
}
TEST(ChannelFusionForwardErrors, YOverlapsZPartly) {
  forward_rejected(kInvalid, "the only aliasing supported is y == x or y == z", [](ForwardCall& c) {
    c.residual();
    c.b.z = c.in_arena(0);
    c.b.y = c.in_arena(4);
  });
}
TEST(ChannelFusionForwardErrors, SaveMeanOverlapsY) {
  forward_rejected(kInvalid, "overlaps save_mean", [](ForwardCall& c) {
    c.b.y = c.in_arena(0);
    c.b.save_mean = c.arena.f32() + kCount - 2;
  });
}
TEST(ChannelFusionForwardErrors, ZMisaligned) {
  forward_rejected(kInvalid, "z = ", [](ForwardCall& c) {
    c.residual();
    c.b.z = c.misaligned(c.arena);
  });
}
TEST(ChannelFusionForwardErrors, BufferInsideTheWorkspace) {
  forward_rejected(kInvalid, "the context's workspace", [](ForwardCall& c) {
    // 256-byte aligned, as nk_context_set_workspace requires.
    auto base = reinterpret_cast<uintptr_t>(c.arena.data());
    void* ws = reinterpret_cast<void*>((base + 255) / 256 * 256);
    const size_t room = c.arena.bytes().size() - (reinterpret_cast<uintptr_t>(ws) - base);
    ASSERT_EQ(nk_context_set_workspace(c.ctx, ws, room), NK_SUCCESS) << nk_last_error();
    c.b.y = ws;
  });
}

// ---- backward -----------------------------------------------------------------------------------

TEST(ChannelFusionBackwardErrors, FusionNull) {
  backward_rejected(kInvalid, "fusion is NULL", [](BackwardCall& c) { c.fusion_arg = nullptr; });
}
TEST(ChannelFusionBackwardErrors, ParamsNull) {
  backward_rejected(kInvalid, "params is NULL", [](BackwardCall& c) { c.params_arg = nullptr; });
}
TEST(ChannelFusionBackwardErrors, BuffersNull) {
  backward_rejected(kInvalid, "buffers is NULL", [](BackwardCall& c) { c.buffers_arg = nullptr; });
}
TEST(ChannelFusionBackwardErrors, UnknownActivation) {
  backward_rejected(kInvalid, "fusion->activation = 3",
                    [](BackwardCall& c) { c.fusion.activation = static_cast<nk_activation>(3); });
}
TEST(ChannelFusionBackwardErrors, UnknownRunningVarConventionNotRead) {
  backward_rejected(kInvalid, "params->running_var = 4",
                    [](BackwardCall& c) { c.params.running_var = static_cast<nk_running_var>(4); });
}
TEST(ChannelFusionBackwardErrors, GroupNormInInference) {
  backward_rejected(kInvalid, "params->phase = NK_INFERENCE with fusion->norm = NK_GROUP_NORM",
                    [](BackwardCall& c) {
                      c.fusion.norm = NK_GROUP_NORM;
                      c.fusion.groups = 2;
                      c.inference();
                    });
}
TEST(ChannelFusionBackwardErrors, GroupsNotDividingChannels) {
  backward_rejected(kBadShape, "groups = 8 does not divide desc->c = 4", [](BackwardCall& c) {
    c.fusion.norm = NK_GROUP_NORM;
    c.fusion.groups = 8;
  });
}
TEST(ChannelFusionBackwardErrors, OneValuePerStatisticInTraining) {
  backward_rejected(kBadShape, "more than one value per statistic", [](BackwardCall& c) {
    c.desc.n = 1;
    c.desc.spatial = 1;
  });
}
TEST(ChannelFusionBackwardErrors, XNull) {
  backward_rejected(kInvalid, "x is NULL", [](BackwardCall& c) { c.b.x = nullptr; });
}
TEST(ChannelFusionBackwardErrors, DyNull) {
  backward_rejected(kInvalid, "dy is NULL", [](BackwardCall& c) { c.b.dy = nullptr; });
}
TEST(ChannelFusionBackwardErrors, ReluWithNeitherYNorMask) {
  backward_rejected(kInvalid,
                    "y and relu_mask are both NULL with fusion->activation = "
                    "NK_ACTIVATION_RELU",
                    [](BackwardCall& c) {
                      c.relu();
                      c.b.relu_mask = nullptr;
                    });
}
TEST(ChannelFusionBackwardErrors, ReluWithBothYAndMask) {
  backward_rejected(kInvalid, "y and relu_mask are both given", [](BackwardCall& c) {
    c.relu();
    c.b.y = c.y.data();
  });
}
TEST(ChannelFusionBackwardErrors, YWithoutRelu) {
  backward_rejected(kInvalid, "y is not NULL with fusion->activation = NK_ACTIVATION_IDENTITY",
                    [](BackwardCall& c) { c.b.y = c.y.data(); });
}
TEST(ChannelFusionBackwardErrors, ReluMaskWithoutRelu) {
  backward_rejected(kInvalid, "relu_mask is not NULL with fusion->activation = NK_ACTIVATION_SILU",
                    [](BackwardCall& c) {
                      c.fusion.activation = NK_ACTIVATION_SILU;
                      c.b.relu_mask = c.mask.data();
                    });
}
TEST(ChannelFusionBackwardErrors, ZMissingForSiluWithResidual) {
  backward_rejected(kInvalid,
                    "z is NULL with fusion->activation = NK_ACTIVATION_SILU and "
                    "fusion->residual = NK_RESIDUAL_ADD",
                    [](BackwardCall& c) {
                      c.silu_residual();
                      c.b.z = nullptr;
                    });
}
TEST(ChannelFusionBackwardErrors, ZForReluWithResidual) {
  backward_rejected(kInvalid, "z is not NULL with fusion->activation = NK_ACTIVATION_RELU",
                    [](BackwardCall& c) {
                      c.relu();
                      c.fusion.residual = NK_RESIDUAL_ADD;
                      c.b.z = c.z.data();
                    });
}
TEST(ChannelFusionBackwardErrors, ZForSiluWithoutResidual) {
  backward_rejected(kInvalid, "fusion->residual = NK_RESIDUAL_NONE", [](BackwardCall& c) {
    c.silu_residual();
    c.fusion.residual = NK_RESIDUAL_NONE;
    c.b.dz = nullptr;
  });
}
TEST(ChannelFusionBackwardErrors, BiasWithoutSilu) {
  backward_rejected(kInvalid, "bias is not NULL with fusion->activation = NK_ACTIVATION_RELU",
                    [](BackwardCall& c) {
                      c.relu();
                      c.b.bias = c.bias.f32();
                    });
}
TEST(ChannelFusionBackwardErrors, DzWithoutResidual) {
  backward_rejected(kInvalid, "dz is not NULL with fusion->residual = NK_RESIDUAL_NONE",
                    [](BackwardCall& c) { c.b.dz = c.dz.data(); });
}
TEST(ChannelFusionBackwardErrors, SaveMeanMissingInTraining) {
  backward_rejected(kInvalid, "save_mean is NULL",
                    [](BackwardCall& c) { c.b.save_mean = nullptr; });
}
TEST(ChannelFusionBackwardErrors, RunningMeanGivenInTraining) {
  backward_rejected(kInvalid, "running_mean is not NULL in NK_TRAINING",
                    [](BackwardCall& c) { c.b.running_mean = c.running_mean.f32(); });
}
TEST(ChannelFusionBackwardErrors, RunningVarMissingInInference) {
  backward_rejected(kInvalid, "running_var is NULL in NK_INFERENCE", [](BackwardCall& c) {
    c.inference();
    c.b.running_var = nullptr;
  });
}
TEST(ChannelFusionBackwardErrors, SaveInvstdGivenInInference) {
  backward_rejected(kInvalid, "save_invstd is not NULL in NK_INFERENCE", [](BackwardCall& c) {
    c.inference();
    c.b.save_invstd = c.save_invstd.f32();
  });
}
TEST(ChannelFusionBackwardErrors, DxAndDzBothOnDy) {
  backward_rejected(kInvalid, "dx and dz both equal dy", [](BackwardCall& c) {
    c.silu_residual();
    c.b.dx = c.b.dz = c.dy.data();
  });
}
TEST(ChannelFusionBackwardErrors, DzOverlapsDyPartly) {
  backward_rejected(kInvalid, "the only aliasing supported is dx == dy or dz == dy",
                    [](BackwardCall& c) {
                      c.silu_residual();
                      c.b.dy = c.in_arena(0);
                      c.b.dz = c.in_arena(1);
                    });
}
TEST(ChannelFusionBackwardErrors, DzOverlapsDx) {
  backward_rejected(kInvalid, "overlaps dz", [](BackwardCall& c) {
    c.silu_residual();
    c.b.dx = c.in_arena(0);
    c.b.dz = c.in_arena(kCount / 2);
  });
}
TEST(ChannelFusionBackwardErrors, ReluMaskOverlapsDx) {
  backward_rejected(kInvalid, "overlaps dx", [](BackwardCall& c) {
    c.relu();
    c.b.relu_mask = c.in_arena(0);
    c.b.dx = c.in_arena(1);
  });
}
TEST(ChannelFusionBackwardErrors, ReluMaskOverlapsAnInput) {
  backward_rejected(kInvalid, "overlaps relu_mask", [](BackwardCall& c) {
    c.relu();
    c.b.x = c.in_arena(0);
    c.b.relu_mask = c.in_arena(kCount - 1);
  });
}
TEST(ChannelFusionBackwardErrors, ReluMaskMisaligned) {
  backward_rejected(kInvalid, "relu_mask = ", [](BackwardCall& c) {
    c.relu();
    c.b.relu_mask = c.misaligned(c.arena);
  });
}

// ---- the in-place pairs give the bytes of the calls without aliasing ----------------------------

TEST(ChannelFusionInPlace, YOnXAndYOnZGiveTheSameBytes) {
  for (const bool onto_z : {false, true}) {
    SCOPED_TRACE(onto_z ? "y == z" : "y == x");
    ForwardCall ref;
    ref.relu();
    ref.residual();
    ASSERT_EQ(ref.run(), NK_SUCCESS) << nk_last_error();
    ForwardCall call;
    call.relu();
    call.residual();
    call.x = ref.x;
    call.z = ref.z;
    call.weight = ref.weight;
    call.bias = ref.bias;
    call.b.x = call.x.data();
    call.b.z = call.z.data();
    call.b.weight = call.weight.f32();
    call.b.bias = call.bias.f32();
    Buffer& target = onto_z ? call.z : call.x;
    call.b.y = target.data();
    ASSERT_EQ(call.run(), NK_SUCCESS) << nk_last_error();
    EXPECT_TRUE(target.bytes() == ref.y.bytes());
    EXPECT_TRUE(call.mask.bytes() == ref.mask.bytes());
  }
}

TEST(ChannelFusionInPlace, DxOnDyAndDzOnDyGiveTheSameBytes) {
  for (const bool dz_onto_dy : {false, true}) {
    SCOPED_TRACE(dz_onto_dy ? "dz == dy" : "dx == dy");
    BackwardCall ref;
    ref.silu_residual();
    ASSERT_EQ(ref.run(), NK_SUCCESS) << nk_last_error();
    BackwardCall call;
    call.silu_residual();
    for (auto [to, from] : {std::pair<Buffer*, Buffer*>{&call.x, &ref.x},
                            {&call.z, &ref.z},
                            {&call.dy, &ref.dy},
                            {&call.weight, &ref.weight},
                            {&call.bias, &ref.bias},
                            {&call.save_mean, &ref.save_mean},
                            {&call.save_invstd, &ref.save_invstd}}) {
      *to = *from;
    }
    call.b.x = call.x.data();
    call.b.z = call.z.data();
    call.b.dy = call.dy.data();
    call.b.weight = call.weight.f32();
    call.b.bias = call.bias.f32();
    call.b.save_mean = call.save_mean.f32();
    call.b.save_invstd = call.save_invstd.f32();
    (dz_onto_dy ? call.b.dz : call.b.dx) = call.dy.data();
    ASSERT_EQ(call.run(), NK_SUCCESS) << nk_last_error();
    EXPECT_TRUE(call.dy.bytes() == (dz_onto_dy ? ref.dz : ref.dx).bytes());
    EXPECT_TRUE((dz_onto_dy ? call.dx : call.dz).bytes() == (dz_onto_dy ? ref.dx : ref.dz).bytes());
    EXPECT_TRUE(call.dweight.bytes() == ref.dweight.bytes());
  }
}

// ---- nothing fused is the plain call ------------------------------------------------------------

// Identity without a residual through the fused calls gives the plain calls' bytes: y, the saved
// and running statistics and the counter forward; dx, dweight and dbias backward.
TEST(ChannelFusionPlain, IdentityWithoutResidualGivesThePlainCallsBytes) {
  nkt::CpuContext ctx;
  nkt::Random rng;
  const int64_t n = 3, c = 4, s = 6, count = n * c * s;
  const nk_act_desc d{n, c, s, NK_NHWC, NK_BF16};
  const Buffer x(NK_BF16, rng.normal(count, 1.0, 2.0)), dy(NK_BF16, rng.normal(count));
  const std::vector<double> wv = rng.uniform(c, 0.5, 1.5), bv = rng.normal(c);
  const std::vector<float> w(wv.begin(), wv.end()), b(bv.begin(), bv.end());
  const std::vector<double> rmv = rng.normal(c), rvv = rng.uniform(c, 0.5, 2.0);
  const std::vector<float> rm0(rmv.begin(), rmv.end()), rv0(rvv.begin(), rvv.end());
  for (const nk_channel_norm norm : {NK_BATCH_NORM, NK_INSTANCE_NORM, NK_GROUP_NORM}) {
    for (const nk_phase phase : {NK_TRAINING, NK_INFERENCE}) {
      if (norm == NK_GROUP_NORM && phase == NK_INFERENCE) continue;
      SCOPED_TRACE(testing::Message() << "norm " << norm << ", phase " << phase);
      const bool group = norm == NK_GROUP_NORM, training = phase == NK_TRAINING;
      nk_channel_fusion f = nk_channel_fusion_default();
      f.norm = norm;
      f.groups = group ? 2 : 0;
      nk_norm_params p = nk_norm_params_default();
      p.phase = phase;
      p.momentum_mode = NK_MOMENTUM_CUMULATIVE;
      const int64_t stats = norm == NK_BATCH_NORM ? c : group ? n * 2 : n * c;
      struct Out {
        Buffer y, dx;
        std::vector<float> mean, invstd, rm, rv, dw, db;
        int64_t tracked = 5;
      };
      Out plain{Buffer(NK_BF16, count),
                Buffer(NK_BF16, count),
                std::vector<float>(stats, -1),
                std::vector<float>(stats, -1),
                rm0,
                rv0,
                std::vector<float>(c, -1),
                std::vector<float>(c, -1)};
      Out fused = plain;
      plain.y.poison();
      fused.y.poison();
      float* const no_stats = nullptr;
      auto save = [&](std::vector<float>& v) { return training ? v.data() : no_stats; };
      // Plain.
      if (group) {
        ASSERT_EQ(nk_group_norm_forward(ctx, &d, 2, p.eps, x.data(), w.data(), b.data(),
                                        plain.y.data(), plain.mean.data(), plain.invstd.data()),
                  NK_SUCCESS)
            << nk_last_error();
        ASSERT_EQ(nk_group_norm_backward(ctx, &d, 2, x.data(), dy.data(), w.data(),
                                         plain.mean.data(), plain.invstd.data(), plain.dx.data(),
                                         plain.dw.data(), plain.db.data()),
                  NK_SUCCESS)
            << nk_last_error();
      } else {
        auto fwd = norm == NK_BATCH_NORM ? nk_batch_norm_forward : nk_instance_norm_forward;
        auto bwd = norm == NK_BATCH_NORM ? nk_batch_norm_backward : nk_instance_norm_backward;
        ASSERT_EQ(fwd(ctx, &d, &p, x.data(), w.data(), b.data(), plain.rm.data(), plain.rv.data(),
                      &plain.tracked, plain.y.data(), save(plain.mean), save(plain.invstd)),
                  NK_SUCCESS)
            << nk_last_error();
        ASSERT_EQ(bwd(ctx, &d, &p, x.data(), dy.data(), w.data(), training ? nullptr : rm0.data(),
                      training ? nullptr : rv0.data(), save(plain.mean), save(plain.invstd),
                      plain.dx.data(), plain.dw.data(), plain.db.data()),
                  NK_SUCCESS)
            << nk_last_error();
      }
      // Fused.
      nk_channel_fused_forward_buffers fb{};
      fb.x = x.data();
      fb.weight = w.data();
      fb.bias = b.data();
      if (!group) {
        fb.running_mean = fused.rm.data();
        fb.running_var = fused.rv.data();
        fb.num_batches_tracked = &fused.tracked;
      }
      fb.y = fused.y.data();
      fb.save_mean = save(fused.mean);
      fb.save_invstd = save(fused.invstd);
      ASSERT_EQ(nk_channel_norm_fused_forward(ctx, &d, &f, &p, &fb), NK_SUCCESS) << nk_last_error();
      nk_channel_fused_backward_buffers bb{};
      bb.x = x.data();
      bb.dy = dy.data();
      bb.weight = w.data();
      if (!training) {
        bb.running_mean = rm0.data();
        bb.running_var = rv0.data();
      }
      bb.save_mean = save(fused.mean);
      bb.save_invstd = save(fused.invstd);
      bb.dx = fused.dx.data();
      bb.dweight = fused.dw.data();
      bb.dbias = fused.db.data();
      ASSERT_EQ(nk_channel_norm_fused_backward(ctx, &d, &f, &p, &bb), NK_SUCCESS)
          << nk_last_error();
      EXPECT_TRUE(fused.y.bytes() == plain.y.bytes());
      EXPECT_EQ(fused.mean, plain.mean);
      EXPECT_EQ(fused.invstd, plain.invstd);
      EXPECT_EQ(fused.rm, plain.rm);
      EXPECT_EQ(fused.rv, plain.rv);
      EXPECT_EQ(fused.tracked, plain.tracked);
      EXPECT_TRUE(fused.dx.bytes() == plain.dx.bytes());
      EXPECT_EQ(fused.dw, plain.dw);
      EXPECT_EQ(fused.db, plain.db);
      for (int64_t i = 0; i < count; ++i) {  // written: no poison (NaN) left
        ASSERT_FALSE(std::isnan(fused.y.get(i)) || std::isnan(fused.dx.get(i))) << i;
      }
    }
  }
}

// ---- the mask size and the workspace queries ----------------------------------------------------

TEST(ChannelFusionMaskSize, FourBytesPerStartedWordOfThirtyTwoElements) {
  struct Case {
    int64_t n, c, s;
    size_t bytes;
  };
  for (const Case k :
       {Case{1, 1, 1, 4}, Case{1, 1, 32, 4}, Case{1, 1, 33, 8}, Case{2, 3, 5, 4}, Case{2, 4, 9, 12},
        Case{3, 5, 7, 16}, Case{4, 8, 64, 256}, Case{1, 3, 65, 28}}) {
    for (const nk_layout layout : {NK_NCHW, NK_NHWC}) {
      const nk_act_desc d{k.n, k.c, k.s, layout, NK_BF16};
      size_t bytes = 1;
      ASSERT_EQ(nk_channel_norm_relu_mask_size(&d, &bytes), NK_SUCCESS) << nk_last_error();
      EXPECT_EQ(bytes, k.bytes) << k.n << " x " << k.c << " x " << k.s;
    }
  }
}

TEST(ChannelFusionMaskSize, Errors) {
  const nk_act_desc good{2, 3, 4, NK_NCHW, NK_F16};
  size_t bytes = 7;
  EXPECT_EQ(nk_channel_norm_relu_mask_size(nullptr, &bytes), kInvalid);
  EXPECT_NE(std::string(nk_last_error()).find("desc is NULL"), std::string::npos);
  EXPECT_EQ(nk_channel_norm_relu_mask_size(&good, nullptr), kInvalid);
  EXPECT_NE(std::string(nk_last_error()).find("bytes is NULL"), std::string::npos);
  nk_act_desc d = good;
  d.spatial = 0;
  EXPECT_EQ(nk_channel_norm_relu_mask_size(&d, &bytes), kBadShape);
  EXPECT_NE(std::string(nk_last_error()).find("desc->spatial = 0"), std::string::npos);
  d = good;
  d.dtype = static_cast<nk_dtype>(11);  // checked though not read
  EXPECT_EQ(nk_channel_norm_relu_mask_size(&d, &bytes), kInvalid);
  d = good;
  d.n = int64_t{1} << 40;
  d.c = int64_t{1} << 30;
  EXPECT_EQ(nk_channel_norm_relu_mask_size(&d, &bytes), kBadShape);
  EXPECT_EQ(bytes, 7u);
}

TEST(ChannelFusionWorkspace, ThePlainOpsSizes) {
  nkt::CpuContext ctx;
  const nk_act_desc d{3, 6, 10, NK_NHWC, NK_BF16};
  nk_channel_fusion f = nk_channel_fusion_default();
  f.residual = NK_RESIDUAL_ADD;
  f.activation = NK_ACTIVATION_SILU;
  for (const nk_phase phase : {NK_TRAINING, NK_INFERENCE}) {
    nk_norm_params p = nk_norm_params_default();
    p.phase = phase;
    size_t plain = 1, fused = 2;
    for (const nk_channel_norm norm : {NK_BATCH_NORM, NK_INSTANCE_NORM}) {
      f.norm = norm;
      f.groups = 0;
      const bool batch = norm == NK_BATCH_NORM;
      ASSERT_EQ((batch ? nk_batch_norm_forward_workspace_size
                       : nk_instance_norm_forward_workspace_size)(ctx, &d, &p, &plain),
                NK_SUCCESS);
      ASSERT_EQ(nk_channel_norm_fused_forward_workspace_size(ctx, &d, &f, &p, &fused), NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(fused, plain);
      ASSERT_EQ((batch ? nk_batch_norm_backward_workspace_size
                       : nk_instance_norm_backward_workspace_size)(ctx, &d, &p, &plain),
                NK_SUCCESS);
      ASSERT_EQ(nk_channel_norm_fused_backward_workspace_size(ctx, &d, &f, &p, &fused), NK_SUCCESS)
          << nk_last_error();
      EXPECT_EQ(fused, plain);
    }
  }
  f.norm = NK_GROUP_NORM;
  f.groups = 3;
  const nk_norm_params p = nk_norm_params_default();
  size_t plain = 1, fused = 2;
  ASSERT_EQ(nk_group_norm_forward_workspace_size(ctx, &d, 3, &plain), NK_SUCCESS);
  ASSERT_EQ(nk_channel_norm_fused_forward_workspace_size(ctx, &d, &f, &p, &fused), NK_SUCCESS);
  EXPECT_EQ(fused, plain);
  ASSERT_EQ(nk_group_norm_backward_workspace_size(ctx, &d, 3, &plain), NK_SUCCESS);
  ASSERT_EQ(nk_channel_norm_fused_backward_workspace_size(ctx, &d, &f, &p, &fused), NK_SUCCESS);
  EXPECT_EQ(fused, plain);
}

TEST(ChannelFusionWorkspace, QueriesCheckFusionParamsAndShape) {
  nkt::CpuContext ctx;
  const nk_act_desc d{3, 6, 10, NK_NCHW, NK_F32};
  nk_norm_params p = nk_norm_params_default();
  nk_channel_fusion f = nk_channel_fusion_default();
  size_t bytes = 77;
  auto expect = [&](nk_status want, const char* fragment) {
    EXPECT_EQ(nk_channel_norm_fused_forward_workspace_size(ctx, &d, &f, &p, &bytes), want);
    EXPECT_NE(std::string(nk_last_error()).find(fragment), std::string::npos) << nk_last_error();
    EXPECT_EQ(nk_channel_norm_fused_backward_workspace_size(ctx, &d, &f, &p, &bytes), want);
    EXPECT_NE(std::string(nk_last_error()).find(fragment), std::string::npos) << nk_last_error();
    EXPECT_EQ(bytes, 77u);
  };
  f.groups = 4;
  expect(kInvalid, "fusion->groups = 4");
  f.norm = NK_GROUP_NORM;
  expect(kBadShape, "groups = 4 does not divide desc->c = 6");
  f.groups = 3;
  p.phase = NK_INFERENCE;
  expect(kInvalid, "params->phase = NK_INFERENCE with fusion->norm = NK_GROUP_NORM");
  p = nk_norm_params_default();
  f.activation = static_cast<nk_activation>(7);
  expect(kInvalid, "fusion->activation = 7");
  f.activation = NK_ACTIVATION_RELU;
  EXPECT_EQ(nk_channel_norm_fused_forward_workspace_size(ctx, &d, &f, &p, nullptr), kInvalid);
  EXPECT_NE(std::string(nk_last_error()).find("bytes is NULL"), std::string::npos);
  EXPECT_EQ(nk_channel_norm_fused_backward_workspace_size(ctx, &d, &f, nullptr, &bytes), kInvalid);
  EXPECT_NE(std::string(nk_last_error()).find("params is NULL"), std::string::npos);
}

}  // namespace
