// What this host offers: CPU cores, memory, and GPUs (name, memory, UUID, MIG instances). GPUs
// come from NVML, loaded at run time with dlopen so that the agent neither links nor needs the
// NVIDIA driver: a host without libnvidia-ml is CPU-only. An override file (JSON in the
// Inventory shape of docs/control-protocol.md) replaces detection; it is a fake, for tests and
// for hosts whose hardware cannot be probed, and every use of it is logged as such.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::agent {

struct MigInstance {
  std::string uuid;
  uint64_t memory_bytes = 0;
};

struct GpuInfo {
  int index = 0;
  std::string name;
  std::string uuid;
  uint64_t memory_bytes = 0;
  std::vector<MigInstance> mig;
};

struct Inventory {
  int cpu_cores = 0;
  uint64_t memory_bytes = 0;
  std::vector<GpuInfo> gpus;
  std::string source;  // "detected", "detected+nvml", or "override file <path> (fake)"

  nlohmann::json to_json() const;
  static Result<Inventory> from_json(const nlohmann::json& json, const std::string& source);
};

// Reads the override file when `override_path` is set, else probes the host.
Result<Inventory> detect_inventory(const std::string& override_path);

}  // namespace outpost::agent
