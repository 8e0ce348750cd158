// The few NVML calls the inventory needs, resolved with dlopen("libnvidia-ml.so.1") at run time.
// The declarations mirror NVML's C API (no nvml.h is needed to build).
#pragma once

#include <string>
#include <vector>

#include "agent/inventory.h"
#include "common/result.h"

namespace outpost::agent {

// The GPUs NVML reports, or kUnavailable when the library or the driver is absent. `library`
// is the driver's NVML; tests pass a fake one.
Result<std::vector<GpuInfo>> probe_nvml_gpus(const std::string& library = "libnvidia-ml.so.1");

}  // namespace outpost::agent
