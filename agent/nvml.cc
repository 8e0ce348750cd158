#include "agent/nvml.h"

#include <memory>

#include <dlfcn.h>

namespace outpost::agent {
namespace {

// From NVML's public API (nvml.h): return codes are ints, 0 is success; devices are opaque.
using NvmlReturn = int;
using NvmlDevice = struct NvmlDeviceOpaque*;
struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
constexpr int kNvmlDeviceNameBufferSize = 96;
constexpr int kNvmlDeviceUuidBufferSize = 96;

struct Library {
  void* handle = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*count)(unsigned int*) = nullptr;
  NvmlReturn (*by_index)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*name)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*uuid)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*) = nullptr;
  NvmlReturn (*mig_mode)(NvmlDevice, unsigned int*, unsigned int*) = nullptr;
  NvmlReturn (*max_mig)(NvmlDevice, unsigned int*) = nullptr;
  NvmlReturn (*mig_by_index)(NvmlDevice, unsigned int, NvmlDevice*) = nullptr;

  ~Library() {
    if (shutdown != nullptr) shutdown();
    if (handle != nullptr) dlclose(handle);
  }
};

template <class Fn>
bool resolve(void* handle, const char* symbol, Fn& out) {
  out = reinterpret_cast<Fn>(dlsym(handle, symbol));
  return out != nullptr;
}

}  // namespace

Result<std::vector<GpuInfo>> probe_nvml_gpus(const std::string& library) {
  auto lib = std::make_unique<Library>();
  lib->handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib->handle == nullptr) return unavailable(library + " not found: no NVIDIA driver");
  NvmlReturn (*init)() = nullptr;
  if (!resolve(lib->handle, "nvmlInit_v2", init) ||
      !resolve(lib->handle, "nvmlDeviceGetCount_v2", lib->count) ||
      !resolve(lib->handle, "nvmlDeviceGetHandleByIndex_v2", lib->by_index) ||
      !resolve(lib->handle, "nvmlDeviceGetName", lib->name) ||
      !resolve(lib->handle, "nvmlDeviceGetUUID", lib->uuid) ||
      !resolve(lib->handle, "nvmlDeviceGetMemoryInfo", lib->memory)) {
    return unavailable(library + " lacks the NVML functions the agent needs");
  }
  resolve(lib->handle, "nvmlDeviceGetMigMode", lib->mig_mode);
  resolve(lib->handle, "nvmlDeviceGetMaxMigDeviceCount", lib->max_mig);
  resolve(lib->handle, "nvmlDeviceGetMigDeviceHandleByIndex", lib->mig_by_index);
  if (const NvmlReturn rc = init(); rc != 0) {
    return unavailable("nvmlInit failed with NVML error " + std::to_string(rc));
  }
  resolve(lib->handle, "nvmlShutdown", lib->shutdown);
  unsigned int count = 0;
  if (lib->count(&count) != 0) return unavailable("nvmlDeviceGetCount failed");
  std::vector<GpuInfo> gpus;
  for (unsigned int i = 0; i < count; ++i) {
    NvmlDevice device = nullptr;
    if (lib->by_index(i, &device) != 0) continue;
    GpuInfo gpu;
    gpu.index = static_cast<int>(i);
    char text[kNvmlDeviceNameBufferSize] = {};
    if (lib->name(device, text, sizeof text) == 0) gpu.name = text;
    char uuid[kNvmlDeviceUuidBufferSize] = {};
    if (lib->uuid(device, uuid, sizeof uuid) == 0) gpu.uuid = uuid;
    NvmlMemory memory{};
    if (lib->memory(device, &memory) == 0) gpu.memory_bytes = memory.total;
    unsigned int current = 0;
    unsigned int pending = 0;
    unsigned int max_mig = 0;
    if (lib->mig_mode != nullptr && lib->max_mig != nullptr && lib->mig_by_index != nullptr &&
        lib->mig_mode(device, &current, &pending) == 0 && current == 1 &&
        lib->max_mig(device, &max_mig) == 0) {
      for (unsigned int m = 0; m < max_mig; ++m) {
        NvmlDevice mig = nullptr;
        if (lib->mig_by_index(device, m, &mig) != 0) continue;
        MigInstance instance;
        char mig_uuid[kNvmlDeviceUuidBufferSize] = {};
        if (lib->uuid(mig, mig_uuid, sizeof mig_uuid) == 0) instance.uuid = mig_uuid;
        NvmlMemory mig_memory{};
        if (lib->memory(mig, &mig_memory) == 0) instance.memory_bytes = mig_memory.total;
        gpu.mig.push_back(std::move(instance));
      }
    }
    gpus.push_back(std::move(gpu));
  }
  return gpus;
}

}  // namespace outpost::agent
