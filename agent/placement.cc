#include "agent/placement.h"

#include <algorithm>
#include <set>

namespace outpost::agent {
namespace {

std::string human_bytes(uint64_t bytes) {
  const double gib = static_cast<double>(bytes) / (1024.0 * 1024 * 1024);
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", gib);
  return text;
}

bool wants_gpu(const protocol::DesiredReplica& replica) { return replica.num_accelerators > 0; }

uint64_t demand(const protocol::DesiredReplica& replica) {
  return wants_gpu(replica) ? replica.accelerator_memory_bytes : replica.memory_bytes;
}

struct Usage {
  uint64_t memory = 0;
  uint64_t cpu = 0;
  int replicas = 0;
  bool exclusive = false;  // holds a disable_packing replica
};

}  // namespace

std::vector<Device> devices_of(const Inventory& inventory, const AgentConfig& config) {
  std::vector<Device> devices;
  Device cpu;
  cpu.id = "cpu";
  cpu.memory_bytes = inventory.memory_bytes > config.reserved_memory_bytes
                         ? inventory.memory_bytes - config.reserved_memory_bytes
                         : 0;
  const uint64_t cores = static_cast<uint64_t>(inventory.cpu_cores) * 1000;
  cpu.cpu_millicores =
      cores > config.reserved_cpu_millicores ? cores - config.reserved_cpu_millicores : 0;
  devices.push_back(cpu);
  for (const auto& gpu : inventory.gpus) {
    const auto mode_it = config.slicing_per_gpu.find(gpu.index);
    const SlicingMode mode =
        mode_it != config.slicing_per_gpu.end() ? mode_it->second : config.default_slicing;
    const auto usable = [&](uint64_t total) {
      return total > config.reserved_accelerator_memory_bytes
                 ? total - config.reserved_accelerator_memory_bytes
                 : 0;
    };
    if (mode == SlicingMode::kMig && !gpu.mig.empty()) {
      for (const auto& instance : gpu.mig) {
        Device device;
        device.id = "mig:" + instance.uuid;
        device.gpu_index = gpu.index;
        device.slicing = SlicingMode::kMig;
        device.memory_bytes = instance.memory_bytes;  // hard partition: no reservation inside
        devices.push_back(device);
      }
      continue;
    }
    Device device;
    device.id = "cuda:" + std::to_string(gpu.index);
    device.gpu_index = gpu.index;
    // A GPU set to mig without MIG instances behaves as a whole, shared GPU.
    device.slicing = mode == SlicingMode::kMig ? SlicingMode::kFraction : mode;
    device.memory_bytes = usable(gpu.memory_bytes);
    devices.push_back(device);
  }
  return devices;
}

Placement place(const std::vector<Device>& devices,
                const std::vector<protocol::DesiredReplica>& replicas, const Placement& previous) {
  Placement out;
  std::map<std::string, Usage> usage;
  std::map<std::string, const Device*> by_id;
  for (const auto& device : devices) by_id[device.id] = &device;
  std::map<std::string, const protocol::DesiredReplica*> wanted;
  for (const auto& replica : replicas) wanted[replica.replica_id] = &replica;

  const auto account = [&](const protocol::DesiredReplica& replica, const std::string& device_id) {
    Usage& use = usage[device_id];
    use.memory += demand(replica);
    use.cpu += replica.cpu_millicores;
    use.replicas += 1;
    use.exclusive = use.exclusive || replica.disable_packing;
    out.device_of[replica.replica_id] = device_id;
  };

  // Keep what already has a place (and still fits the device that still exists).
  for (const auto& [replica_id, device_id] : previous.device_of) {
    const auto it = wanted.find(replica_id);
    if (it != wanted.end() && by_id.count(device_id) != 0) account(*it->second, device_id);
  }

  // Then the rest, largest first, each on the device where it leaves the least room.
  std::vector<const protocol::DesiredReplica*> pending;
  for (const auto& replica : replicas) {
    if (out.device_of.count(replica.replica_id) == 0) pending.push_back(&replica);
  }
  std::stable_sort(pending.begin(), pending.end(),
                   [](const protocol::DesiredReplica* a, const protocol::DesiredReplica* b) {
                     return demand(*a) > demand(*b);
                   });
  for (const protocol::DesiredReplica* replica : pending) {
    const Device* best = nullptr;
    uint64_t best_left = 0;
    std::string why;
    for (const auto& device : devices) {
      const bool gpu_device = device.gpu_index >= 0;
      if (gpu_device != wants_gpu(*replica)) continue;
      const Usage& use = usage[device.id];
      if (use.exclusive || (replica->disable_packing && use.replicas > 0)) {
        why =
            "every suitable device is taken by a replica with disable_packing (or holds "
            "replicas that this one, with disable_packing, may not share)";
        continue;
      }
      if (use.memory + demand(*replica) > device.memory_bytes) {
        why = "needs " + human_bytes(demand(*replica)) + (gpu_device ? " of accelerator" : "") +
              " memory, the best device has " +
              human_bytes(device.memory_bytes > use.memory ? device.memory_bytes - use.memory : 0) +
              " free";
        continue;
      }
      const uint64_t left = device.memory_bytes - use.memory - demand(*replica);
      if (best == nullptr || left < best_left) {
        best = &device;
        best_left = left;
      }
    }
    if (best == nullptr) {
      if (why.empty()) {
        why = wants_gpu(*replica) ? "needs a GPU and this host has none" : "no CPU capacity";
      }
      out.unplaced[replica->replica_id] = why;
      continue;
    }
    account(*replica, best->id);
  }

  // Workers: one per device for shared slicing, one per replica for mps and for
  // disable_packing.
  std::map<std::string, WorkerPlan> workers;
  for (const auto& replica : replicas) {
    const auto placed = out.device_of.find(replica.replica_id);
    if (placed == out.device_of.end()) continue;
    const Device& device = *by_id.at(placed->second);
    const bool own_worker = device.slicing == SlicingMode::kMps || replica.disable_packing;
    const std::string worker_id = own_worker ? device.id + "/" + replica.replica_id : device.id;
    WorkerPlan& plan = workers[worker_id];
    plan.worker_id = worker_id;
    plan.device_id = device.id;
    plan.slicing = device.slicing;
    plan.replica_ids.push_back(replica.replica_id);
    plan.memory_limit_bytes = own_worker ? demand(replica) : device.memory_bytes;
  }
  for (auto& [id, plan] : workers) out.workers.push_back(std::move(plan));
  return out;
}

void cap_workers(Placement& placement, size_t max_workers, const std::set<std::string>& running) {
  if (placement.workers.size() <= max_workers) return;
  std::stable_partition(
      placement.workers.begin(), placement.workers.end(),
      [&running](const WorkerPlan& plan) { return running.count(plan.worker_id) != 0; });
  const std::string why = "workers.max_workers (" + std::to_string(max_workers) +
                          ") reached: this node starts no more worker processes";
  for (size_t i = max_workers; i < placement.workers.size(); ++i) {
    for (const auto& id : placement.workers[i].replica_ids) {
      placement.device_of.erase(id);
      placement.unplaced[id] = why;
    }
  }
  placement.workers.resize(max_workers);
}

}  // namespace outpost::agent
