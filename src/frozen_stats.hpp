// Checks on frozen statistics shared by the ops that apply them.
#pragma once

#include <normkit/normkit.h>

#include <cstdint>

namespace nk {

// "NK_STATS_BATCH_NORM", ...; nullptr for a value that is no nk_stats_kind.
const char* kind_name(int64_t kind);

// Throws NK_ERROR_INVALID_VALUE unless the statistics are of `kind` for this dtype, feature count
// and eps, naming both values of the first mismatch.
void check_frozen(const nk_frozen_stats* stats, nk_stats_kind kind, nk_dtype dtype,
                  int64_t features, double eps);

}  // namespace nk
