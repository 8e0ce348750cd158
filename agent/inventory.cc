#include "agent/inventory.h"

#include <fstream>
#include <sstream>
#include <thread>

#include "agent/nvml.h"
#include "common/log.h"
#include <sched.h>
#include <sys/sysinfo.h>

namespace outpost::agent {

nlohmann::json Inventory::to_json() const {
  nlohmann::json gpu_list = nlohmann::json::array();
  for (const auto& gpu : gpus) {
    nlohmann::json mig = nlohmann::json::array();
    for (const auto& instance : gpu.mig) {
      mig.push_back({{"uuid", instance.uuid}, {"memory_bytes", instance.memory_bytes}});
    }
    gpu_list.push_back({{"index", gpu.index},
                        {"name", gpu.name},
                        {"uuid", gpu.uuid},
                        {"memory_bytes", gpu.memory_bytes},
                        {"mig", mig}});
  }
  return {{"cpu_cores", cpu_cores}, {"memory_bytes", memory_bytes}, {"gpus", gpu_list}};
}

Result<Inventory> Inventory::from_json(const nlohmann::json& json, const std::string& source) {
  Inventory inventory;
  inventory.source = source;
  try {
    inventory.cpu_cores = json.at("cpu_cores").get<int>();
    inventory.memory_bytes = json.at("memory_bytes").get<uint64_t>();
    if (json.contains("gpus")) {
      for (const auto& item : json.at("gpus")) {
        GpuInfo gpu;
        gpu.index = item.at("index").get<int>();
        gpu.name = item.value("name", "");
        gpu.uuid = item.value("uuid", "");
        gpu.memory_bytes = item.at("memory_bytes").get<uint64_t>();
        if (item.contains("mig")) {
          for (const auto& mig : item.at("mig")) {
            gpu.mig.push_back({mig.value("uuid", ""), mig.value("memory_bytes", uint64_t{0})});
          }
        }
        inventory.gpus.push_back(std::move(gpu));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(source + ": not an inventory (" + e.what() + ")");
  }
  if (inventory.cpu_cores <= 0) return invalid_argument(source + ": cpu_cores must be positive");
  return inventory;
}

Result<Inventory> detect_inventory(const std::string& override_path) {
  if (!override_path.empty()) {
    std::ifstream in(override_path);
    if (!in) return invalid_argument("cannot read inventory override " + override_path);
    nlohmann::json json;
    try {
      in >> json;
    } catch (const nlohmann::json::exception& e) {
      return invalid_argument("inventory override " + override_path + " is not JSON: " + e.what());
    }
    auto inventory =
        Inventory::from_json(json, "override file " + override_path + " (fake inventory)");
    if (inventory.ok()) {
      LOG_NOTICE("agent.inventory_fake",
                 "using the FAKE inventory from " << override_path << " instead of the hardware");
    }
    return inventory;
  }
  Inventory inventory;
  inventory.source = "detected";
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  inventory.cpu_cores = sched_getaffinity(0, sizeof cpus, &cpus) == 0
                            ? CPU_COUNT(&cpus)
                            : static_cast<int>(std::thread::hardware_concurrency());
  struct sysinfo info {};
  if (sysinfo(&info) == 0) {
    inventory.memory_bytes = static_cast<uint64_t>(info.totalram) * info.mem_unit;
  }
  auto gpus = probe_nvml_gpus();
  if (gpus.ok()) {
    inventory.gpus = std::move(gpus).value();
    inventory.source = "detected+nvml";
  } else {
    LOG_INFO("agent.no_gpu", "CPU-only host: " << gpus.error().message());
  }
  return inventory;
}

}  // namespace outpost::agent
