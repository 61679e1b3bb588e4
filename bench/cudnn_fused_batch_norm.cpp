// cuDNN's fused batch norm (legacy API) as the baseline of the fused_channels batch-norm training
// cases: cudnnBatchNormalizationForwardTrainingEx / BackwardEx with bnOps
// CUDNN_BATCHNORM_OPS_BN_ACTIVATION (bn_relu) or CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION
// (bn_add_relu, z read forward and dz written backward), a ReLU activation descriptor, and the
// workspace and reserve space cuDNN's size queries ask for (the reserve space carries what its
// backward needs of the activation, as normkit's bit mask does).
//  - Mode: CUDNN_BATCHNORM_SPATIAL_PERSISTENT, the mode of cuDNN's NHWC kernels that fuse the
//    activation. Should cuDNN refuse it for a case, CUDNN_BATCHNORM_SPATIAL with the same ops is
//    tried and the label says so; when both are refused the case has no ratio and the label gives
//    both statuses. cuDNN 9's cudnn_ops.h declares every call and enum used here (marked
//    CUDNN_DEPRECATED, which warns only with CUDNN_WARN_DEPRECATED); which dtypes and layouts it
//    accepts with a fused activation is not in the header, so every case tries and reports
//    cuDNN's answer.
//  - Backward: BackwardEx reads x, y (the forward's output), dy, bias and the reserve space. y
//    lives in a buffer of this baseline's own, written by an untimed forward when the case is
//    built (normkit's backward reads its mask instead of y), as is the reserve space.
//  - Inference (bn_relu infer_fwd) has no fused cuDNN entry point: cudnn_baseline.cpp labels it.
// Parameters as in cudnn_batch_norm.cpp: fp32 (cudnnDeriveBNTensorDescriptor), momentum 0.1,
// eps 1e-5, running statistics updated, mean and inverse std saved.
#include <algorithm>
#include <memory>
#include <string>

#include "cudnn_common.hpp"
#include "device_memory.hpp"

namespace nkb::cudnn {
namespace {

constexpr double kEps = 1e-5;
constexpr double kMomentum = 0.1;

// An owned activation descriptor, set to ReLU.
class ReluDesc {
 public:
  ReluDesc() {
    check_setup(cudnnCreateActivationDescriptor(&desc_), "cudnnCreateActivationDescriptor");
  }
  ~ReluDesc() { cudnnDestroyActivationDescriptor(desc_); }
  ReluDesc(const ReluDesc&) = delete;
  ReluDesc& operator=(const ReluDesc&) = delete;
  cudnnActivationDescriptor_t get() const { return desc_; }

 private:
  cudnnActivationDescriptor_t desc_ = nullptr;
};

const char* mode_name(cudnnBatchNormMode_t mode) {
  return mode == CUDNN_BATCHNORM_SPATIAL_PERSISTENT ? "SPATIAL_PERSISTENT" : "SPATIAL";
}

// Everything the fused calls use, kept alive by the calls; raw pointers into the case buffers.
struct State {
  TensorDesc x, param;
  ReluDesc relu;
  cudnnBatchNormMode_t mode;
  cudnnBatchNormOps_t ops;
  DeviceMemory workspace, reserve, own_y;
  const float one = 1.0f, zero = 0.0f;  // alpha and beta: float for half, bf16 and float data
  const void *x_data, *z, *dy, *weight, *bias;
  void *y, *dx, *dz, *dweight, *dbias, *running_mean, *running_var, *save_mean, *save_invstd;

  State(const Case& c, CaseBuffers& b, cudnnBatchNormMode_t m) : mode(m) {
    const bool add = c.channel_fusion.residual;
    ops = add ? CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION : CUDNN_BATCHNORM_OPS_BN_ACTIVATION;
    set_data_desc(x.get(), c);
    check_setup(cudnnDeriveBNTensorDescriptor(param.get(), x.get(), mode),
                "cudnnDeriveBNTensorDescriptor");
    check_setup(cudnnSetActivationDescriptor(relu.get(), CUDNN_ACTIVATION_RELU,
                                             CUDNN_NOT_PROPAGATE_NAN, 0.0),
                "cudnnSetActivationDescriptor");
    if (c.phase == Phase::backward) {
      own_y = DeviceMemory(static_cast<size_t>(c.elements()) * dtype_size(c.dtype));
    }
    x_data = b.x.get();
    z = add ? b.z.get() : nullptr;
    dy = b.dy.get();
    weight = b.weight.get();
    bias = b.bias.get();
    y = c.phase == Phase::backward ? own_y.get() : b.y.get();
    dx = b.dx.get();
    dz = add ? b.dz.get() : nullptr;
    dweight = b.dweight.get();
    dbias = b.dbias.get();
    running_mean = b.running_mean.get();
    running_var = b.running_var.get();
    save_mean = b.save_mean.get();
    save_invstd = b.save_invstd.get();
  }
};

// The fused calls in `mode`; throws Unsupported when cuDNN refuses them (a size query or the
// untimed forward fails).
Prepared build(cudnnHandle_t handle, const Case& c, CaseBuffers& b, cudnnBatchNormMode_t mode) {
  auto s = std::make_shared<State>(c, b, mode);
  const cudnnTensorDescriptor_t xd = s->x.get(), pd = s->param.get();
  const cudnnTensorDescriptor_t zd = c.channel_fusion.residual ? xd : nullptr;
  const cudnnActivationDescriptor_t ad = s->relu.get();
  size_t forward_bytes = 0, backward_bytes = 0, reserve_bytes = 0;
  check_setup(cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(handle, mode, s->ops, xd, zd,
                                                                       xd, pd, ad, &forward_bytes),
              "cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize");
  check_setup(cudnnGetBatchNormalizationTrainingExReserveSpaceSize(handle, mode, s->ops, ad, xd,
                                                                   &reserve_bytes),
              "cudnnGetBatchNormalizationTrainingExReserveSpaceSize");
  if (c.phase == Phase::backward) {
    check_setup(cudnnGetBatchNormalizationBackwardExWorkspaceSize(handle, mode, s->ops, xd, xd, xd,
                                                                  zd, xd, pd, ad, &backward_bytes),
                "cudnnGetBatchNormalizationBackwardExWorkspaceSize");
  }
  s->workspace = DeviceMemory(std::max(forward_bytes, backward_bytes));
  s->reserve = DeviceMemory(reserve_bytes);
  auto forward = [s, handle, xd, zd, pd, ad] {
    return cudnnBatchNormalizationForwardTrainingEx(
        handle, s->mode, s->ops, &s->one, &s->zero, xd, s->x_data, zd, s->z, xd, s->y, pd,
        s->weight, s->bias, kMomentum, s->running_mean, s->running_var, kEps, s->save_mean,
        s->save_invstd, ad, s->workspace.get(), s->workspace.bytes(), s->reserve.get(),
        s->reserve.bytes());
  };
  // Run once here, untimed: it tells whether cuDNN accepts the mode, and a backward needs the y
  // and reserve space it writes.
  check_setup(forward(), "cudnnBatchNormalizationForwardTrainingEx");
  const std::string what = std::string(mode_name(mode)) + ", " +
                           (c.channel_fusion.residual ? "BN_ADD_ACTIVATION" : "BN_ACTIVATION") +
                           ", ReLU";
  if (c.phase == Phase::forward_training) {
    return {forward, "cuDNN: BatchNormalizationForwardTrainingEx, " + what};
  }
  return {[s, handle, xd, zd, pd, ad] {
            return cudnnBatchNormalizationBackwardEx(
                handle, s->mode, s->ops, &s->one, &s->zero, &s->one, &s->zero, xd, s->x_data, xd,
                s->y, xd, s->dy, zd, s->dz, xd, s->dx, pd, s->weight, s->bias, s->dweight, s->dbias,
                kEps, s->save_mean, s->save_invstd, ad, s->workspace.get(), s->workspace.bytes(),
                s->reserve.get(), s->reserve.bytes());
          },
          "cuDNN: BatchNormalizationBackwardEx, " + what};
}

}  // namespace

Prepared prepare_fused_batch_norm(cudnnHandle_t handle, const Case& c, CaseBuffers& b) {
  try {
    return build(handle, c, b, CUDNN_BATCHNORM_SPATIAL_PERSISTENT);
  } catch (const Unsupported& persistent) {
    try {
      Prepared p = build(handle, c, b, CUDNN_BATCHNORM_SPATIAL);
      p.note += std::string(" (SPATIAL_PERSISTENT refused: ") + persistent.what() + ")";
      return p;
    } catch (const Unsupported& spatial) {
      throw Unsupported(std::string("SPATIAL_PERSISTENT: ") + persistent.what() +
                        "; SPATIAL: " + spatial.what());
    }
  }
}

}  // namespace nkb::cudnn
