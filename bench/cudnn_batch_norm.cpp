// cuDNN's legacy batch-norm API as the baseline of batch norm (and of instance-norm inference,
// which is the same per-channel map). The mode follows what cuDNN documents as its fast path per
// layout, which is also what PyTorch selects:
//  - NHWC, training forward and backward: the *Ex functions with CUDNN_BATCHNORM_SPATIAL_PERSISTENT
//    and CUDNN_BATCHNORM_OPS_BN, with their workspace and reserve space (cuDNN's NHWC kernels);
//  - NCHW, training: cudnnBatchNormalizationForwardTraining / Backward with CUDNN_BATCHNORM_SPATIAL
//    (SPATIAL_PERSISTENT is documented as possibly overflowing for some inputs; PyTorch keeps
//    SPATIAL for NCHW for that reason);
//  - inference, both layouts: cudnnBatchNormalizationForwardInference, CUDNN_BATCHNORM_SPATIAL
//    (the only inference entry point).
// The parameter descriptor is derived with cudnnDeriveBNTensorDescriptor: fp32 for every x dtype,
// like normkit's. Training forwards update the running statistics (factor 0.1) and save mean and
// inverse std; the backward starts from saved statistics, as normkit's does.
#include <memory>

#include "cudnn_common.hpp"
#include "device_memory.hpp"

namespace nkb::cudnn {
namespace {

constexpr double kEps = 1e-5;
constexpr double kMomentum = 0.1;

class TensorDesc {
 public:
  TensorDesc() { check_setup(cudnnCreateTensorDescriptor(&desc_), "cudnnCreateTensorDescriptor"); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(desc_); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

// Everything a batch-norm call uses, kept alive by the call.
struct State {
  TensorDesc x, param;
  cudnnBatchNormMode_t mode = CUDNN_BATCHNORM_SPATIAL;
  DeviceMemory workspace, reserve;
  const float one = 1.0f, zero = 0.0f;  // alpha and beta: float for half, bf16 and float data
};

int to_int(int64_t v) {
  if (v > 0x7fffffff) throw Unsupported("a dimension does not fit cuDNN's int");
  return static_cast<int>(v);
}

}  // namespace

Prepared prepare_batch_norm(cudnnHandle_t handle, const Case& c, CaseBuffers& b) {
  auto s = std::make_shared<State>();
  const bool nhwc = c.layout == NK_NHWC;
  const bool inference = c.phase == Phase::forward_inference;
  const bool persistent = nhwc && !inference;
  s->mode = persistent ? CUDNN_BATCHNORM_SPATIAL_PERSISTENT : CUDNN_BATCHNORM_SPATIAL;
  check_setup(cudnnSetTensor4dDescriptor(s->x.get(), nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                                         data_type(c.dtype), to_int(c.n), to_int(c.c), to_int(c.h),
                                         to_int(c.w)),
              "cudnnSetTensor4dDescriptor");
  check_setup(cudnnDeriveBNTensorDescriptor(s->param.get(), s->x.get(), s->mode),
              "cudnnDeriveBNTensorDescriptor");

  const cudnnTensorDescriptor_t xd = s->x.get(), pd = s->param.get();
  const void* x = b.x.get();
  const void *weight = b.weight.get(), *bias = b.bias.get();
  void *rmean = b.running_mean.get(), *rvar = b.running_var.get();
  void *smean = b.save_mean.get(), *sinv = b.save_invstd.get();
  const State* st = s.get();

  if (inference) {
    void* y = b.y.get();
    return {[s, handle, st, xd, pd, x, y, weight, bias, rmean, rvar] {
              return cudnnBatchNormalizationForwardInference(handle, st->mode, &st->one, &st->zero,
                                                             xd, x, xd, y, pd, weight, bias, rmean,
                                                             rvar, kEps);
            },
            "cuDNN: BatchNormalizationForwardInference, SPATIAL"};
  }

  if (persistent) {
    const cudnnBatchNormOps_t ops = CUDNN_BATCHNORM_OPS_BN;
    size_t fwd_ws = 0, bwd_ws = 0, reserve = 0;
    check_setup(cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
                    handle, s->mode, ops, xd, nullptr, xd, pd, nullptr, &fwd_ws),
                "cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize");
    check_setup(cudnnGetBatchNormalizationTrainingExReserveSpaceSize(handle, s->mode, ops, nullptr,
                                                                     xd, &reserve),
                "cudnnGetBatchNormalizationTrainingExReserveSpaceSize");
    if (c.phase == Phase::backward) {
      check_setup(cudnnGetBatchNormalizationBackwardExWorkspaceSize(
                      handle, s->mode, ops, xd, nullptr, xd, nullptr, xd, pd, nullptr, &bwd_ws),
                  "cudnnGetBatchNormalizationBackwardExWorkspaceSize");
    }
    s->workspace = DeviceMemory(fwd_ws > bwd_ws ? fwd_ws : bwd_ws);
    s->reserve = DeviceMemory(reserve);
    // The forward, writing y (or, for a backward case, dx as scratch).
    void* y = c.phase == Phase::backward ? b.dx.get() : b.y.get();
    auto forward = [s, handle, st, ops, xd, pd, x, y, weight, bias, rmean, rvar, smean, sinv] {
      return cudnnBatchNormalizationForwardTrainingEx(
          handle, st->mode, ops, &st->one, &st->zero, xd, x, nullptr, nullptr, xd, y, pd, weight,
          bias, kMomentum, rmean, rvar, kEps, smean, sinv, nullptr, st->workspace.get(),
          st->workspace.bytes(), st->reserve.get(), st->reserve.bytes());
    };
    if (c.phase == Phase::forward_training) {
      return {forward, "cuDNN: BatchNormalizationForwardTrainingEx, SPATIAL_PERSISTENT"};
    }
    // The backward needs the reserve space its forward filled: run that forward once, untimed.
    check_setup(forward(), "cudnnBatchNormalizationForwardTrainingEx (for the backward)");
    const void* dy = b.dy.get();
    void *dx = b.dx.get(), *dw = b.dweight.get(), *db = b.dbias.get();
    return {[s, handle, st, ops, xd, pd, x, dy, dx, weight, bias, dw, db, smean, sinv] {
              return cudnnBatchNormalizationBackwardEx(
                  handle, st->mode, ops, &st->one, &st->zero, &st->one, &st->zero, xd, x, nullptr,
                  nullptr, xd, dy, nullptr, nullptr, xd, dx, pd, weight, bias, dw, db, kEps, smean,
                  sinv, nullptr, st->workspace.get(), st->workspace.bytes(), st->reserve.get(),
                  st->reserve.bytes());
            },
            "cuDNN: BatchNormalizationBackwardEx, SPATIAL_PERSISTENT"};
  }

  if (c.phase == Phase::forward_training) {
    void* y = b.y.get();
    return {[s, handle, st, xd, pd, x, y, weight, bias, rmean, rvar, smean, sinv] {
              return cudnnBatchNormalizationForwardTraining(
                  handle, st->mode, &st->one, &st->zero, xd, x, xd, y, pd, weight, bias, kMomentum,
                  rmean, rvar, kEps, smean, sinv);
            },
            "cuDNN: BatchNormalizationForwardTraining, SPATIAL"};
  }
  const void* dy = b.dy.get();
  void *dx = b.dx.get(), *dw = b.dweight.get(), *db = b.dbias.get();
  return {[s, handle, st, xd, pd, x, dy, dx, weight, dw, db, smean, sinv] {
            return cudnnBatchNormalizationBackward(handle, st->mode, &st->one, &st->zero, &st->one,
                                                   &st->zero, xd, x, xd, dy, xd, dx, pd, weight, dw,
                                                   db, kEps, smean, sinv);
          },
          "cuDNN: BatchNormalizationBackward, SPATIAL"};
}

}  // namespace nkb::cudnn
