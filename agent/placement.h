// Where on this host each replica runs: which device, which worker process, which slice.
//
// Devices are the CPU and every GPU (or, for a GPU in `mig` mode, every MIG instance), each
// with its capacity after the configured reservations. A replica asks for accelerator memory
// (num_accelerators > 0) or CPU memory; placement is best fit by that memory, so small
// replicas fill the gaps that large ones leave. CPU cores are not a hard limit here: workers
// share the cores, and sharing them out between nodes is the control plane's scheduler's job.
// Placement is incremental: a replica that has a place keeps it, so a new desired state never moves
// running models.
//
// Workers: replicas packed on one device share one worker process (one CUDA context, a fair
// scheduler inside the worker), except where process isolation is the point of the slicing
// mode: `mps` gives each replica its own worker (an MPS client with its own limits), and a
// MIG instance holds one worker. disable_packing gives a replica a device of its own.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/inventory.h"
#include "protocol/control_protocol.h"

namespace outpost::agent {

struct Device {
  std::string id;      // "cpu", "cuda:0", "mig:<uuid>"
  int gpu_index = -1;  // -1 for the CPU
  SlicingMode slicing = SlicingMode::kFraction;
  uint64_t memory_bytes = 0;    // what replicas may use, after reservations
  uint64_t cpu_millicores = 0;  // the CPU device only
};

struct WorkerPlan {
  std::string worker_id;  // stable: "<device id>" or "<device id>/<replica id>"
  std::string device_id;
  SlicingMode slicing = SlicingMode::kFraction;
  // The share of the device this worker may use (fraction slicing: the caching allocator's
  // memory fraction; mps: the pinned memory limit).
  uint64_t memory_limit_bytes = 0;
  std::vector<std::string> replica_ids;
};

struct Placement {
  std::map<std::string, std::string> device_of;  // replica id -> device id
  std::vector<WorkerPlan> workers;
  std::map<std::string, std::string> unplaced;  // replica id -> why it fits nowhere
};

// The devices of this host, per the configuration's reservations and slicing modes.
std::vector<Device> devices_of(const Inventory& inventory, const AgentConfig& config);

// Places `replicas` on `devices`, keeping every replica of `previous` that is still wanted where
// it was.
Placement place(const std::vector<Device>& devices,
                const std::vector<protocol::DesiredReplica>& replicas, const Placement& previous);

// workers.max_workers: keeps at most `max_workers` worker plans, those in `running` (worker ids
// of processes that already run) first, then in plan order. The replicas of the plans dropped
// move to `unplaced`, with the reason.
void cap_workers(Placement& placement, size_t max_workers, const std::set<std::string>& running);

}  // namespace outpost::agent
