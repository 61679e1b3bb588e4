// The cuDNN side of a case, behind one small interface so that the suite builds without cuDNN
// (NORMKIT_BENCH_CUDNN=OFF: cudnn_unavailable.cpp) and all cuDNN code stays in cudnn_*.cpp.
//
// What is compared (see README, "Benchmarks"):
//  - batch norm: the legacy API (cudnn_batch_norm.cpp); its fused_channels training cases
//    (bn_relu, bn_add_relu) the legacy *Ex calls with a fused ReLU (cudnn_fused_batch_norm.cpp);
//    bn_relu inference nothing (cuDNN's inference call fuses no activation), nor group norm +
//    SiLU (no group norm in the legacy API): the note says so;
//  - layer norm, RMS norm, instance norm training forward and backward: the graph (backend) API
//    (cudnn_graph_norm.cpp);
//  - instance norm inference: the same per-channel affine map as batch-norm inference with the
//    running statistics, so cuDNN's batch-norm inference runs it;
//  - group norm: nothing (cuDNN has no group-norm operation that the suite uses);
//  - fused layer / RMS norm (fused_rows): nothing; the note says so. The baseline builds only the
//    plain norm graphs, so these cases get no cuDNN ratio (torch_compare.py times the unfused
//    PyTorch composition instead).
// When cuDNN cannot run a case (no engine, an unsupported dtype or layout), prepare() says why in
// the note and returns no launch: the case is reported without a ratio, never as an error.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "bench_case.hpp"
#include "case_buffers.hpp"
#include "timing.hpp"

namespace nkb {

struct BaselineCase {
  Launch launch;     // empty when cuDNN does not run the case
  std::string note;  // which cuDNN path ran, or "cuDNN: not supported (<why>)"
};

class CudnnBaseline {
 public:
  // Creates a cuDNN handle bound to `stream`. Never throws: when cuDNN is unusable (not built,
  // the library fails to initialize), every prepare() says so in its note.
  explicit CudnnBaseline(cudaStream_t stream);
  ~CudnnBaseline();
  CudnnBaseline(const CudnnBaseline&) = delete;
  CudnnBaseline& operator=(const CudnnBaseline&) = delete;

  // "9.19.0" from cudnnGetVersion (the library loaded at run time), or why there is none.
  std::string version() const;

  // Builds cuDNN's version of `c` over the same buffers and runs it once, untimed, to check it.
  // Throws BenchError only for failures that are not "cuDNN cannot do this case" (a CUDA error).
  BaselineCase prepare(const Case& c, CaseBuffers& b);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace nkb
