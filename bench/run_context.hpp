// What a result needs beside it to be read later: the GPU and its clocks, the driver, runtime
// and cuDNN versions, L2 size, the copy bandwidths of this run, the timing method and the normkit
// commit. Added to Google Benchmark's context (console header and the JSON "context" object).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace nkb {

using ContextEntries = std::vector<std::pair<std::string, std::string>>;

// Facts of CUDA device `device` (name, SMs, clocks, memory, L2, versions). Never throws: a fact
// that cannot be read says why.
ContextEntries describe_device(int device);

// The normkit commit measured: $NORMKIT_COMMIT if set, else the commit baked in at configure
// time (git rev-parse HEAD), else "unknown".
std::string normkit_commit();

// Registers every entry with benchmark::AddCustomContext.
void add_to_benchmark_context(const ContextEntries& entries);

}  // namespace nkb
