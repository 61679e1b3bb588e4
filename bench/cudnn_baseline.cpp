// The cuDNN baseline: one handle on the benchmark stream, and the choice of cuDNN path per case
// (the paths themselves are in cudnn_batch_norm.cpp and cudnn_graph_norm.cpp).
#include "cudnn_baseline.hpp"

#include <cstdio>

#include "bench_error.hpp"
#include "cudnn_common.hpp"

namespace nkb {

namespace cudnn {

namespace {

// A label stays on one line and readable: newlines become spaces, and long messages are cut.
std::string one_line(std::string text) {
  constexpr size_t kMax = 300;
  for (char& ch : text) {
    if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
  }
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

int to_int(int64_t v) {
  if (v > 0x7fffffff) throw Unsupported("a dimension does not fit cuDNN's int");
  return static_cast<int>(v);
}

}  // namespace

void set_data_desc(cudnnTensorDescriptor_t desc, const Case& c) {
  const cudnnTensorFormat_t format = c.layout == NK_NHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  check_setup(cudnnSetTensor4dDescriptor(desc, format, data_type(c.dtype), to_int(c.n), to_int(c.c),
                                         to_int(c.h), to_int(c.w)),
              "cudnnSetTensor4dDescriptor");
}

std::string status_text(cudnnStatus_t status) {
  std::string text = cudnnGetErrorString(status);
  char message[512] = {0};
  cudnnGetLastErrorString(message, sizeof(message));
  if (message[0] != '\0') text += std::string(" (") + message + ")";
  return text;
}

void check_setup(cudnnStatus_t status, const char* what) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw Unsupported(std::string(what) + ": " + status_text(status));
}

cudnnDataType_t data_type(nk_dtype dtype) {
  switch (dtype) {
    case NK_F32:
      return CUDNN_DATA_FLOAT;
    case NK_F16:
      return CUDNN_DATA_HALF;
    case NK_BF16:
      return CUDNN_DATA_BFLOAT16;
  }
  return CUDNN_DATA_FLOAT;
}

}  // namespace cudnn

struct CudnnBaseline::Impl {
  cudnnHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
  std::string unusable;  // why there is no handle
};

CudnnBaseline::CudnnBaseline(cudaStream_t stream) : impl_(new Impl) {
  impl_->stream = stream;
  cudnnStatus_t status = cudnnCreate(&impl_->handle);
  if (status == CUDNN_STATUS_SUCCESS) {
    status = cudnnSetStream(impl_->handle, stream);
    if (status != CUDNN_STATUS_SUCCESS) {
      cudnnDestroy(impl_->handle);
      impl_->handle = nullptr;
    }
  } else {
    impl_->handle = nullptr;
  }
  if (impl_->handle == nullptr)
    impl_->unusable = "cuDNN: unusable (" + cudnn::status_text(status) + ")";
}

CudnnBaseline::~CudnnBaseline() {
  if (impl_->handle != nullptr) cudnnDestroy(impl_->handle);
}

std::string CudnnBaseline::version() const {
  const size_t v = cudnnGetVersion();  // major * 10000 + minor * 100 + patch since cuDNN 9
  char text[64];
  std::snprintf(text, sizeof(text), "%zu.%zu.%zu", v / 10000, v / 100 % 100, v % 100);
  return impl_->handle != nullptr ? std::string(text)
                                  : std::string(text) + " (" + impl_->unusable + ")";
}

BaselineCase CudnnBaseline::prepare(const Case& c, CaseBuffers& b) {
  if (impl_->handle == nullptr) return {nullptr, impl_->unusable};
  if (c.row_fused()) {
    return {nullptr, "cuDNN: not compared (fused " + c.fusion_name() +
                         " form; this baseline builds the plain norm graphs only)"};
  }
  if (c.channel_fused() && c.op != Op::batch_norm) {
    return {nullptr, "cuDNN: not compared (" + c.fusion_name() +
                         ": cuDNN's legacy API has no fused form of this norm)"};
  }
  if (c.channel_fused() && c.phase == Phase::forward_inference) {
    return {nullptr, "cuDNN: not compared (" + c.fusion_name() +
                         " inference: cudnnBatchNormalizationForwardInference has no fused "
                         "activation)"};
  }
  if (c.in_place) {
    return {nullptr,
            "cuDNN: not compared (in place: bn_resnet50 times the same shape out of "
            "place, with cuDNN)"};
  }
  char stale[512];
  cudnnGetLastErrorString(stale, sizeof(stale));  // so that a message read later is this case's
  cudnn::Prepared prepared;
  try {
    switch (c.op) {
      case Op::batch_norm:
        prepared = c.channel_fused() ? cudnn::prepare_fused_batch_norm(impl_->handle, c, b)
                                     : cudnn::prepare_batch_norm(impl_->handle, c, b);
        break;
      case Op::instance_norm:
        if (c.phase == Phase::forward_inference) {
          prepared = cudnn::prepare_batch_norm(impl_->handle, c, b);
          prepared.note += " (instance-norm inference is the same per-channel map)";
        } else {
          prepared = cudnn::prepare_graph_norm(impl_->handle, c, b);
        }
        break;
      case Op::layer_norm:
      case Op::rms_norm:
        prepared = cudnn::prepare_graph_norm(impl_->handle, c, b);
        break;
      case Op::group_norm:
        return {nullptr, "cuDNN: no group-norm baseline"};
    }
    // One untimed trial: the legacy API reports unsupported combinations only when called.
    const cudnnStatus_t status = prepared.call();
    cudnn::check_setup(status, "first call");
  } catch (const cudnn::Unsupported& e) {
    // A failed trial may leave work queued: let it finish before the buffers are reused.
    check_cuda(cudaStreamSynchronize(impl_->stream), "cudaStreamSynchronize after cuDNN");
    return {nullptr, "cuDNN: not supported (" + cudnn::one_line(e.what()) + ")"};
  }
  check_cuda(cudaStreamSynchronize(impl_->stream), "cudaStreamSynchronize after cuDNN's trial");
  auto call = prepared.call;
  Launch launch = [call] {
    const cudnnStatus_t status = call();
    if (status != CUDNN_STATUS_SUCCESS) throw BenchError("cuDNN: " + cudnn::status_text(status));
  };
  return {launch, cudnn::one_line(prepared.note)};
}

}  // namespace nkb
