// The few NVML calls the inventory needs, resolved with dlopen("libnvidia-ml.so.1") at run time.
// The declarations mirror NVML's C API (no nvml.h is needed to build).
#pragma once

#include <vector>

#include "agent/inventory.h"
#include "common/result.h"

namespace outpost::agent {

// The GPUs NVML reports, or kUnavailable when the library or the driver is absent.
Result<std::vector<GpuInfo>> probe_nvml_gpus();

}  // namespace outpost::agent
