// normkit's side of a case, through the public C API on a CUDA context: the workspace it needs,
// the statistics a backward starts from, and the launch that is timed.
//
// What each phase calls (eps 1e-5, momentum 0.1, weight and bias always given):
//  - batch norm train_fwd: running statistics updated, mean and invstd saved;
//    instance norm train_fwd: no running statistics (PyTorch's InstanceNorm2d default), saved;
//    infer_fwd (both): the running statistics;
//  - group norm fwd: 32 groups, mean and invstd saved;
//  - layer / RMS norm fwd: statistics saved, as a training step does;
//  - bwd (all): training phase, from statistics saved by a training forward run beforehand;
//    every gradient computed (dx, dweight and, except RMS norm, dbias);
//  - fused_rows: nk_row_norm_fused_forward / _backward with the case's fusion and every buffer it
//    uses (forward: h written with the residual add, y_scale and y_amax with the fp8 output;
//    backward: dh_extra read, dresidual and dbias_in written with the residual add). A backward
//    reads the case's x as h; its statistics come from a fused forward over x with the same norm
//    and weight form (no residual add: h is x);
//  - fused_channels: channel_fused_ops.hpp;
//  - in place (bn_in_place): the forwards write y over x, the backward dx over dy (its statistics
//    forward still writes into the separate dx buffer, so that dy keeps its random values).
#pragma once

#include <normkit/normkit.h>

#include "bench_case.hpp"
#include "case_buffers.hpp"
#include "device_memory.hpp"
#include "timing.hpp"

namespace nkb {

// A device workspace set on the context for the lifetime of the object, sized by the size
// queries of every call the case makes, so that no normkit call allocates.
class ContextWorkspace {
 public:
  ContextWorkspace(nk_context ctx, const Case& c);  // throws BenchError
  ~ContextWorkspace();
  ContextWorkspace(const ContextWorkspace&) = delete;
  ContextWorkspace& operator=(const ContextWorkspace&) = delete;

 private:
  nk_context ctx_;
  DeviceMemory memory_;
};

// For a backward case: runs the training forward once (into dx as scratch) so that save_mean and
// save_invstd hold the statistics of x, then waits for it. Nothing for other cases.
void normkit_prepare(nk_context ctx, const Case& c, CaseBuffers& b, cudaStream_t stream);

// The timed call. The launch throws BenchError with normkit's message when the call fails.
Launch normkit_launch(nk_context ctx, const Case& c, CaseBuffers& b);

}  // namespace nkb
