// Shared by the cuDNN files only: status checks and the prepared form of a cuDNN case.
//
// Two kinds of failure: while a case is being built (descriptors, graphs, engines, the first
// trial call), a failing status means "cuDNN cannot run this case" and throws Unsupported, which
// becomes a note. Once a case has run, a failing status is an error (BenchError).
#pragma once

#include <cudnn.h>
#include <normkit/normkit.h>

#include <functional>
#include <stdexcept>
#include <string>

#include "bench_case.hpp"
#include "case_buffers.hpp"

namespace nkb::cudnn {

struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "CUDNN_STATUS_NOT_SUPPORTED (<cuDNN's last message, if any>)".
std::string status_text(cudnnStatus_t status);

// Throws Unsupported("<what>: <status text>") unless status is CUDNN_STATUS_SUCCESS.
void check_setup(cudnnStatus_t status, const char* what);

cudnnDataType_t data_type(nk_dtype dtype);

// An owned legacy tensor descriptor.
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

// Sets `desc` to the case's N x C x H x W tensor (x, y, z, dy, dx) in its layout and dtype; throws
// Unsupported when a dimension does not fit cuDNN's int.
void set_data_desc(cudnnTensorDescriptor_t desc, const Case& c);

// A built cuDNN case: `call` enqueues one run on the handle's stream and returns cuDNN's status;
// it keeps alive whatever it uses (descriptors, workspaces).
struct Prepared {
  std::function<cudnnStatus_t()> call;
  std::string note;  // which cuDNN path, e.g. "cuDNN: BatchNormalizationForwardTraining, SPATIAL"
};

// Legacy batch-norm API (cudnn_batch_norm.cpp): batch norm in every phase, and instance-norm
// inference as the batch-norm inference map.
Prepared prepare_batch_norm(cudnnHandle_t handle, const Case& c, CaseBuffers& b);

// Legacy batch-norm API with a fused activation (cudnn_fused_batch_norm.cpp): the fused_channels
// batch-norm training cases, cudnnBatchNormalization*Ex with BN_ACTIVATION or
// BN_ADD_ACTIVATION and ReLU.
Prepared prepare_fused_batch_norm(cudnnHandle_t handle, const Case& c, CaseBuffers& b);

// Graph API (cudnn_graph_norm.cpp): layer norm, RMS norm, instance norm training forward and
// backward.
Prepared prepare_graph_norm(cudnnHandle_t handle, const Case& c, CaseBuffers& b);

}  // namespace nkb::cudnn
