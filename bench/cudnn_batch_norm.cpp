// cuDNN's legacy batch-norm API as the baseline of batch norm (and of instance-norm inference,
// which is the same per-channel map). The mode per layout is the one PyTorch selects for cuDNN:
//  - NHWC, training forward and backward: the *Ex functions with CUDNN_BATCHNORM_SPATIAL_PERSISTENT
//    and CUDNN_BATCHNORM_OPS_BN, with their workspace and reserve space: the entry points of
//    cuDNN's NHWC batch-norm kernels. Should cuDNN refuse that combination for a dtype, the case
//    falls back to SPATIAL below and the label says so.
//  - NCHW, training: cudnnBatchNormalizationForwardTraining / Backward with SPATIAL (cuDNN's
//    header says SPATIAL_PERSISTENT "imposes some limits on the range of values").
//  - inference, both layouts: cudnnBatchNormalizationForwardInference with SPATIAL, the only
//    inference entry point.
// The parameter descriptor comes from cudnnDeriveBNTensorDescriptor: fp32 for every x dtype, as
// normkit's parameters are. Training forwards update the running statistics (factor 0.1) and
// save mean and inverse std; the backward starts from saved statistics, as normkit's does.
#include <memory>
#include <string>

#include "cudnn_common.hpp"
#include "device_memory.hpp"

namespace nkb::cudnn {
namespace {

constexpr double kEps = 1e-5;
constexpr double kMomentum = 0.1;
constexpr cudnnBatchNormOps_t kOps = CUDNN_BATCHNORM_OPS_BN;

// Everything a batch-norm call uses, kept alive by the call; raw pointers into the case buffers.
struct State {
  TensorDesc x, param;
  cudnnBatchNormMode_t mode;
  DeviceMemory workspace, reserve;
  const float one = 1.0f, zero = 0.0f;  // alpha and beta: float for half, bf16 and float data
  const void *x_data, *dy, *weight, *bias;
  void *y, *dx, *dweight, *dbias, *running_mean, *running_var, *save_mean, *save_invstd;

  State(const Case& c, CaseBuffers& b, cudnnBatchNormMode_t m) : mode(m) {
    set_data_desc(x.get(), c);
    check_setup(cudnnDeriveBNTensorDescriptor(param.get(), x.get(), mode),
                "cudnnDeriveBNTensorDescriptor");
    x_data = b.x.get();
    dy = b.dy.get();
    weight = b.weight.get();
    bias = b.bias.get();
    // A backward case has no y: its untimed forward (persistent path) writes into dx.
    y = c.phase == Phase::backward ? b.dx.get() : b.y.get();
    dx = b.dx.get();
    dweight = b.dweight.get();
    dbias = b.dbias.get();
    running_mean = b.running_mean.get();
    running_var = b.running_var.get();
    save_mean = b.save_mean.get();
    save_invstd = b.save_invstd.get();
  }
};

Prepared inference(cudnnHandle_t handle, const Case& c, CaseBuffers& b) {
  auto s = std::make_shared<State>(c, b, CUDNN_BATCHNORM_SPATIAL);
  return {[s, handle] {
            return cudnnBatchNormalizationForwardInference(
                handle, s->mode, &s->one, &s->zero, s->x.get(), s->x_data, s->x.get(), s->y,
                s->param.get(), s->weight, s->bias, s->running_mean, s->running_var, kEps);
          },
          "cuDNN: BatchNormalizationForwardInference, SPATIAL"};
}

Prepared spatial_training(cudnnHandle_t handle, const Case& c, CaseBuffers& b) {
  auto s = std::make_shared<State>(c, b, CUDNN_BATCHNORM_SPATIAL);
  if (c.phase == Phase::forward_training) {
    return {[s, handle] {
              return cudnnBatchNormalizationForwardTraining(
                  handle, s->mode, &s->one, &s->zero, s->x.get(), s->x_data, s->x.get(), s->y,
                  s->param.get(), s->weight, s->bias, kMomentum, s->running_mean, s->running_var,
                  kEps, s->save_mean, s->save_invstd);
            },
            "cuDNN: BatchNormalizationForwardTraining, SPATIAL"};
  }
  return {[s, handle] {
            return cudnnBatchNormalizationBackward(
                handle, s->mode, &s->one, &s->zero, &s->one, &s->zero, s->x.get(), s->x_data,
                s->x.get(), s->dy, s->x.get(), s->dx, s->param.get(), s->weight, s->dweight,
                s->dbias, kEps, s->save_mean, s->save_invstd);
          },
          "cuDNN: BatchNormalizationBackward, SPATIAL"};
}

// The *Ex path; throws Unsupported when cuDNN refuses it (a size query or its forward fails).
Prepared persistent_training(cudnnHandle_t handle, const Case& c, CaseBuffers& b) {
  auto s = std::make_shared<State>(c, b, CUDNN_BATCHNORM_SPATIAL_PERSISTENT);
  const cudnnTensorDescriptor_t xd = s->x.get(), pd = s->param.get();
  size_t forward_bytes = 0, backward_bytes = 0, reserve_bytes = 0;
  check_setup(cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
                  handle, s->mode, kOps, xd, nullptr, xd, pd, nullptr, &forward_bytes),
              "cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize");
  check_setup(cudnnGetBatchNormalizationTrainingExReserveSpaceSize(handle, s->mode, kOps, nullptr,
                                                                   xd, &reserve_bytes),
              "cudnnGetBatchNormalizationTrainingExReserveSpaceSize");
  if (c.phase == Phase::backward) {
    check_setup(
        cudnnGetBatchNormalizationBackwardExWorkspaceSize(
            handle, s->mode, kOps, xd, nullptr, xd, nullptr, xd, pd, nullptr, &backward_bytes),
        "cudnnGetBatchNormalizationBackwardExWorkspaceSize");
  }
  s->workspace = DeviceMemory(forward_bytes > backward_bytes ? forward_bytes : backward_bytes);
  s->reserve = DeviceMemory(reserve_bytes);
  auto forward = [s, handle] {
    return cudnnBatchNormalizationForwardTrainingEx(
        handle, s->mode, kOps, &s->one, &s->zero, s->x.get(), s->x_data, nullptr, nullptr,
        s->x.get(), s->y, s->param.get(), s->weight, s->bias, kMomentum, s->running_mean,
        s->running_var, kEps, s->save_mean, s->save_invstd, nullptr, s->workspace.get(),
        s->workspace.bytes(), s->reserve.get(), s->reserve.bytes());
  };
  // Run once here, untimed: it tells whether cuDNN accepts the path, and a backward needs the
  // reserve space its forward fills.
  check_setup(forward(), "cudnnBatchNormalizationForwardTrainingEx");
  if (c.phase == Phase::forward_training) {
    return {forward, "cuDNN: BatchNormalizationForwardTrainingEx, SPATIAL_PERSISTENT"};
  }
  return {[s, handle] {
            return cudnnBatchNormalizationBackwardEx(
                handle, s->mode, kOps, &s->one, &s->zero, &s->one, &s->zero, s->x.get(), s->x_data,
                nullptr, nullptr, s->x.get(), s->dy, nullptr, nullptr, s->x.get(), s->dx,
                s->param.get(), s->weight, s->bias, s->dweight, s->dbias, kEps, s->save_mean,
                s->save_invstd, nullptr, s->workspace.get(), s->workspace.bytes(), s->reserve.get(),
                s->reserve.bytes());
          },
          "cuDNN: BatchNormalizationBackwardEx, SPATIAL_PERSISTENT"};
}

}  // namespace

Prepared prepare_batch_norm(cudnnHandle_t handle, const Case& c, CaseBuffers& b) {
  if (c.phase == Phase::forward_inference) return inference(handle, c, b);
  if (c.layout == NK_NCHW) return spatial_training(handle, c, b);
  try {
    return persistent_training(handle, c, b);
  } catch (const Unsupported& e) {
    Prepared p = spatial_training(handle, c, b);
    p.note += std::string(" (SPATIAL_PERSISTENT refused: ") + e.what() + ")";
    return p;
  }
}

}  // namespace nkb::cudnn
