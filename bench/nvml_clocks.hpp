// Current and maximum clocks from NVML, which the driver ships (libnvidia-ml.so.1). It is opened
// at run time, not linked: the benchmark must start on machines without a driver, and the CUDA
// toolkit here ships no NVML header, so the five entry points used are declared in the .cpp.
#pragma once

#include <string>

namespace nkb {

struct NvmlClocks {
  bool ok = false;
  std::string why;  // when !ok
  unsigned sm_mhz = 0, mem_mhz = 0, sm_max_mhz = 0, mem_max_mhz = 0;
  std::string driver;  // e.g. "580.65.06"
};

// The clocks of the GPU at `pci_bus_id` (cudaDeviceGetPCIBusId's form) at the time of the call.
NvmlClocks read_nvml_clocks(const std::string& pci_bus_id);

}  // namespace nkb
