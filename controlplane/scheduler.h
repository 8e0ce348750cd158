// Where replicas go, for this first release: each deployment gets max(min_replicas, 1) replicas
// (capped by max_replicas) on each of its nodepools, placed first-fit on the nodepool's nodes in
// a stable order. Replicas that already sit on a node that still fits them stay there, so that a
// change elsewhere never moves a running replica. The autoscaler and a bin-packing scheduler
// replace this file in a later issue; its contract is the function below.
//
// Fit: a node offers its devices (its GPUs, or one "device" when it has none). A replica of a
// deployment with disable_packing takes a device of its own; other replicas share the devices
// that no such replica holds. When both the node's memory and the replica's cpu_memory are known,
// the replicas' memory must fit in the node's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "controlplane/store.h"

namespace outpost::control {

struct SchedulerNode {
  std::string id;
  std::string nodepool_id;
  int devices = 1;          // GPUs, or 1 for a CPU-only node
  double memory_bytes = 0;  // 0: unknown
};

struct SchedulerDeployment {
  std::string id;
  std::vector<std::string> nodepool_ids;
  int64_t min_replicas = 0;
  int64_t max_replicas = 1;
  bool disable_packing = false;
  double memory_per_replica = 0;  // cpu_memory of the model's inference_compute_info; 0: unknown
};

// The replicas each deployment wants on one of its nodepools.
int64_t wanted_replicas(const SchedulerDeployment& deployment);

// The new assignment of `user_id`'s replicas, given the current one.
std::vector<Replica> schedule(const std::string& user_id,
                              const std::vector<SchedulerDeployment>& deployments,
                              const std::vector<SchedulerNode>& nodes,
                              const std::vector<Replica>& current);

}  // namespace outpost::control
