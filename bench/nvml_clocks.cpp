#include "nvml_clocks.hpp"

#include <dlfcn.h>

namespace nkb {
namespace {

// The NVML C ABI used here (nvml.h): functions return 0 on success; clock types SM = 1, MEM = 2.
using NvmlDevice = struct NvmlDeviceOpaque*;
using InitFn = int (*)();
using ShutdownFn = int (*)();
using HandleByPciFn = int (*)(const char*, NvmlDevice*);
using ClockFn = int (*)(NvmlDevice, int, unsigned*);
using DriverFn = int (*)(char*, unsigned);
constexpr int kClockSm = 1, kClockMem = 2;

template <class F>
F symbol(void* lib, const char* name) {
  return reinterpret_cast<F>(dlsym(lib, name));
}

}  // namespace

NvmlClocks read_nvml_clocks(const std::string& pci_bus_id) {
  NvmlClocks r;
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    r.why = "NVML not found (libnvidia-ml.so.1)";
    return r;
  }
  const auto init = symbol<InitFn>(lib, "nvmlInit_v2");
  const auto shutdown = symbol<ShutdownFn>(lib, "nvmlShutdown");
  const auto by_pci = symbol<HandleByPciFn>(lib, "nvmlDeviceGetHandleByPciBusId_v2");
  const auto clock = symbol<ClockFn>(lib, "nvmlDeviceGetClockInfo");
  const auto max_clock = symbol<ClockFn>(lib, "nvmlDeviceGetMaxClockInfo");
  const auto driver = symbol<DriverFn>(lib, "nvmlSystemGetDriverVersion");
  if (!init || !shutdown || !by_pci || !clock || !max_clock || !driver) {
    r.why = "NVML lacks an entry point";
  } else if (init() != 0) {
    r.why = "nvmlInit failed";
  } else {
    NvmlDevice device = nullptr;
    char version[96] = {0};
    if (by_pci(pci_bus_id.c_str(), &device) == 0 && clock(device, kClockSm, &r.sm_mhz) == 0 &&
        clock(device, kClockMem, &r.mem_mhz) == 0 &&
        max_clock(device, kClockSm, &r.sm_max_mhz) == 0 &&
        max_clock(device, kClockMem, &r.mem_max_mhz) == 0) {
      r.ok = true;
      if (driver(version, sizeof(version)) == 0) r.driver = version;
    } else {
      r.why = "NVML could not read the clocks of " + pci_bus_id;
    }
    shutdown();
  }
  dlclose(lib);
  return r;
}

}  // namespace nkb
