// normkit's side of a fused_channels case (batch norm + (add +) ReLU, group norm + SiLU) through
// nk_channel_norm_fused_forward / _backward: the workspace it needs, the forward a backward
// starts from, and the timed launch. normkit_ops.cpp hands these cases here.
//
// What each phase passes (eps 1e-5, momentum 0.1, weight and bias always given to the forward):
//  - train_fwd / fwd: x, z with the residual add, weight, bias, the running statistics (batch
//    norm, updated; no num_batches_tracked), y, save_mean and save_invstd, and with ReLU the bit
//    mask (written: the backward reads it);
//  - infer_fwd (batch norm): x, z with the residual add, weight, bias, the running statistics
//    (read), y; no saved statistics and no mask (no backward follows inference);
//  - bwd: training phase, from the statistics (and ReLU mask) a fused training forward of the same
//    fusion wrote beforehand: x, dy, with ReLU the mask (never y), weight, with SiLU bias (u is
//    recomputed), save_mean, save_invstd; written dx, dweight, dbias and, with the residual add,
//    dz.
#pragma once

#include <cuda_runtime_api.h>
#include <normkit/normkit.h>

#include <cstddef>

#include "bench_case.hpp"
#include "case_buffers.hpp"
#include "timing.hpp"

namespace nkb {

// The largest workspace the case's calls ask for (a backward case also runs a training forward).
size_t channel_fused_workspace(nk_context ctx, const Case& c);  // throws BenchError

// For a backward case: the fused training forward (y into dx as scratch) that writes the saved
// statistics and the ReLU mask, then a wait. Nothing for a forward case.
void channel_fused_prepare(nk_context ctx, const Case& c, CaseBuffers& b, cudaStream_t stream);

// The timed call; it throws BenchError with normkit's message when the call fails.
Launch channel_fused_launch(nk_context ctx, const Case& c, CaseBuffers& b);

}  // namespace nkb
