// The worker process's device (docs/worker-protocol.md, "Devices"): thread pools set once per
// process, CUDA checks and slicing (`fraction` through the caching allocator's memory
// fraction; `mps` through the environment, set before CUDA starts), and memory figures. The CPU
// is always there; CUDA exists only in builds with OUTPOST_CUDA=ON.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "protocol/worker_spec.h"

namespace outpost::runtime {

// The worker protocol's names (protocol/: messages, Values, config.yaml, the worker spec) are
// used unqualified throughout the worker.
using namespace protocol;  // NOLINT(google-build-using-namespace)

// Whether this build has the CUDA path (OUTPOST_CUDA).
bool cuda_built();

// Sets intra-op and inter-op threads (once, before any model work), checks the device, and
// applies a `fraction` slice. Call once, first thing.
Status configure_process(const WorkerSpec& spec);

struct DeviceMemory {
  uint64_t allocated = 0;  // bytes held by tensors (CUDA caching allocator)
  uint64_t reserved = 0;   // bytes the allocator holds from the driver
  uint64_t total = 0;      // device memory
};
// Zeros for the CPU.
DeviceMemory device_memory(const std::string& device);
// Returns cached, unused blocks to the driver (CUDA); malloc_trim for the CPU.
void release_cached_memory(const std::string& device);

// The CPUs this process may run on (sched_getaffinity).
int64_t usable_cpus();
// Resident set size of this process, from /proc/self/statm.
uint64_t process_rss_bytes();

nlohmann::json device_json(const WorkerSpec& spec);

}  // namespace outpost::runtime
