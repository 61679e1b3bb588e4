// All argument checking, in one place per op family, run before anything is written. Each check
// throws an nk::Error whose message names the argument, its value and what was expected.
#pragma once

#include <normkit/normkit.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "context.hpp"
#include "op_args.hpp"

namespace nk {

// The context's workspace (ptr nullptr when none is set).
struct Span {
  const void* ptr;
  size_t bytes;
};

void require_pointer(const void* p, const char* name);

// One buffer an op touches: its byte range, its element size and whether the op writes it.
struct BufferUse {
  const void* ptr;  // nullptr: not used by this call, skipped
  int64_t bytes;
  const char* name;
  bool written;
  int64_t elem_bytes;
};

// Two buffers an op may pass as one (in place): `alias` exactly equal to `onto`.
struct Alias {
  const char* alias;
  const char* onto;
};

// Rejects a buffer not aligned to its own elements, and any overlap between a written buffer and
// another (the context's workspace counts as written), except `alias` exactly equal to `onto`.
void check_buffers(std::initializer_list<BufferUse> buffers, const Span& workspace,
                   const char* alias = "", const char* onto = "");
// The same with several in-place pairs, any of which may hold.
void check_buffers(std::initializer_list<BufferUse> buffers, const Span& workspace,
                   std::initializer_list<Alias> allowed);
// ctx non-null and on the CPU backend, for the features that have no CUDA implementation yet:
// NK_ERROR_NOT_SUPPORTED names the feature otherwise.
void require_cpu_context(const nk_context_s* ctx, const char* feature);
// Non-null and aligned to the elements of dtype.
void require_elements(const void* p, nk_dtype dtype, const char* name);

// The largest element count normkit takes: INT64_MAX / 8 = 2^60 - 1. Byte sizes and offsets are
// computed from element counts (elements of up to 8 bytes: int64 counts, fp64 scratch), and every
// one of them must fit in int64.
constexpr int64_t kMaxElements = INT64_MAX / 8;

// The product of positive `dims` (`what` names them in the message), checked against kMaxElements:
// NK_ERROR_BAD_SHAPE naming the dims, their product when it exists, the limit and why.
int64_t checked_count(std::initializer_list<int64_t> dims, const char* what);

// Shapes from the public descriptors (checks dims >= 1, the element-count limit, valid enums,
// groups).
ChannelShape channel_shape(ChannelNorm kind, const nk_act_desc* desc, int64_t groups);
RowShape row_shape(bool rms, const nk_row_desc* desc);
// The fused forms of a fused row-norm call: fusion non-null, every field a known enum value; *rms
// receives fusion->norm == NK_RMS_NORM.
RowFusion row_fusion(const nk_row_fusion* fusion, bool* rms);
// rows x cols for the calls that take a row descriptor but no weights (preprocessing, the
// statistics accumulator): desc->weight_dtype is not read, yet must be a known nk_dtype; the shape
// returned has weight_dtype NK_F32.
RowShape columns_shape(const nk_row_desc* desc);

// A parameter block of batch or instance norm, checked as a whole by every call that takes one,
// whether it reads a field or not: phase, momentum_mode and running_var must be known enum values,
// eps finite and >= 0, momentum in [0, 1] with NK_MOMENTUM_EXPONENTIAL.
void validate_params(const nk_norm_params* params, ChannelNorm kind);
// validate_params, and params->phase NK_TRAINING: synchronized batch norm's forwards are training
// steps.
void validate_global_params(const nk_norm_params* params);

// The fused channel-norm calls (nk_channel_norm_fused_*): fusion non-null, every field a known
// enum value, groups >= 1 for group norm (NK_ERROR_BAD_SHAPE) and 0 for the others; *kind and
// *groups receive the norm and its group count (1 for batch and instance norm).
ChannelFusion channel_fusion(const nk_channel_fusion* fusion, ChannelNorm* kind, int64_t* groups);
// The parameter block of a fused call, checked as a whole (names "params->eps" for group norm
// too), and group norm only in NK_TRAINING.
void validate_fused_params(const nk_norm_params* params, ChannelNorm kind);
// What the fused calls' workspace queries check: the parameter block and the shape against the
// phase. The backward takes the caller's block, of which its args keep phase and eps.
void validate_fused_config(const ChannelForwardArgs& a);
void validate_fused_config(const ChannelBackwardArgs& a, const nk_norm_params& params);
// Everything, before a fused call runs on ctx: the rules of normkit.h (a buffer the fusion or the
// phase does not use must be NULL), then those of the plain call, with y == z (forward) and
// dz == dy (backward) allowed in place besides the plain pairs. The backward's parameter block has
// been checked with validate_fused_params.
void validate_fused(const ChannelForwardArgs& a, const nk_context_s& ctx);
void validate_fused(const ChannelBackwardArgs& a, const nk_context_s& ctx);

// The parts of an op's arguments that the workspace-size queries see too (no pointers).
void validate_config(const ChannelForwardArgs& a);
void validate_config(const ChannelBackwardArgs& a);

// Everything, before an op runs on ctx; no argument may overlap ctx's workspace. On a CPU context
// a training forward also reads *num_batches_tracked (host memory there): it must be >= 0 and
// below INT64_MAX, so that the increment is defined and the cumulative momentum in (0, 1]. A CUDA
// context never reads device memory here (the kernels' rule for the counter is in normkit.h).
void validate(const ChannelForwardArgs& a, const nk_context_s& ctx);
void validate(const ChannelBackwardArgs& a, const nk_context_s& ctx);
void validate(const RowForwardArgs& a, const nk_context_s& ctx);
void validate(const RowBackwardArgs& a, const nk_context_s& ctx);

// The pointer, alignment and overlap part of validate() alone.
void validate_buffers(const ChannelBackwardArgs& a, const Span& workspace);

// Synchronized batch norm's forward with global statistics: the parameter block (training only),
// then the buffers and, on a CPU context, the counter; a shard may hold a single value per channel,
// or none (N = 0).
void validate_global(const ChannelForwardArgs& a, const nk_context_s& ctx);
// A synchronized batch norm shard: as channel_shape, except that N may be 0 (a rank with no
// samples).
ChannelShape shard_shape(const nk_act_desc* desc);

}  // namespace nk
