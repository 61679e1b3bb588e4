// All argument checking, in one place per op family, run before anything is written. Each check
// throws an nk::Error whose message names the argument, its value and what was expected.
#pragma once

#include <normkit/normkit.h>

#include <cstddef>
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

// Rejects a buffer not aligned to its own elements, and any overlap between a written buffer and
// another (the context's workspace counts as written), except `alias` exactly equal to `onto`.
void check_buffers(std::initializer_list<BufferUse> buffers, const Span& workspace,
                   const char* alias = "", const char* onto = "");
// ctx non-null and on the CPU backend, for the features that have no CUDA implementation yet:
// NK_ERROR_NOT_SUPPORTED names the feature otherwise.
void require_cpu_context(const nk_context_s* ctx, const char* feature);
// Non-null and aligned to the elements of dtype.
void require_elements(const void* p, nk_dtype dtype, const char* name);

// Shapes from the public descriptors (checks dims >= 1, no int64 overflow, valid enums, groups).
ChannelShape channel_shape(ChannelNorm kind, const nk_act_desc* desc, int64_t groups);
RowShape row_shape(bool rms, const nk_row_desc* desc);

// The parts of an op's arguments that the workspace-size queries see too (no pointers).
void validate_config(const ChannelForwardArgs& a);
void validate_config(const ChannelBackwardArgs& a);

// Everything, before an op runs; no argument may overlap the workspace.
void validate(const ChannelForwardArgs& a, const Span& workspace);
void validate(const ChannelBackwardArgs& a, const Span& workspace);
void validate(const RowForwardArgs& a, const Span& workspace);
void validate(const RowBackwardArgs& a, const Span& workspace);

// The pointer, alignment and overlap part of validate() alone.
void validate_buffers(const ChannelForwardArgs& a, const Span& workspace);
void validate_buffers(const ChannelBackwardArgs& a, const Span& workspace);

// Synchronized batch norm's forward with global statistics: the parameter block (training only),
// then the buffers; a shard may hold a single value per channel, or none (N = 0).
void validate_global(const ChannelForwardArgs& a, const Span& workspace);
// A synchronized batch norm shard: as channel_shape, except that N may be 0 (a rank with no
// samples).
ChannelShape shard_shape(const nk_act_desc* desc);

}  // namespace nk
