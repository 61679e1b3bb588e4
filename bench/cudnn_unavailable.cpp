// The cuDNN baseline of a build without cuDNN (NORMKIT_BENCH_CUDNN=OFF): every case says so and
// reports no ratio.
#include "cudnn_baseline.hpp"

namespace nkb {

struct CudnnBaseline::Impl {};

CudnnBaseline::CudnnBaseline(cudaStream_t) {}

CudnnBaseline::~CudnnBaseline() = default;

std::string CudnnBaseline::version() const { return "not built (NORMKIT_BENCH_CUDNN=OFF)"; }

BaselineCase CudnnBaseline::prepare(const Case&, CaseBuffers&) {
  return {nullptr, "cuDNN: not built (NORMKIT_BENCH_CUDNN=OFF)"};
}

}  // namespace nkb
