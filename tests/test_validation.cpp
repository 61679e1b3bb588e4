// Every validation error path of the C API on the CPU backend. Each case starts from a complete,
// valid call (inputs random, outputs poisoned, running statistics and num_batches_tracked at known
// values), changes one argument and checks the contract: the documented status, a message that
// starts with the function's name and names the argument and its value, and not one byte changed
// in any buffer the call could reach. Overlaps are made by carving sub-ranges out of one "arena".
// A fixture per op (the Op parameter; validation_fixture.hpp) owns the buffers; each suite is
// instantiated for the ops where its errors apply, so a failure names both the error and the op.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "validation_fixture.hpp"

namespace {

using namespace nkv;  // the fixture (validation_fixture.hpp)

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
