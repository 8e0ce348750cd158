// Where replicas go: the autoscaler says how many replicas each deployment wants on each of its
// nodepools; this file says on which node each one runs. It bin-packs: every node offers its
// CPU cores, its memory and its accelerators (each with its memory), every replica asks for
// what its model's inference_compute_info names, and a replica goes to the node where it fits
// most tightly, so that small replicas fill the gaps that large ones leave and whole devices
// stay free (docs/scaling.md, "Placement").
//
// - A replica asks for `cpu_requests` cores (cpu_limit is a cap, not a reservation),
//   `cpu_memory_requests` (else `cpu_memory`) bytes of host memory, and, when
//   `num_accelerators` > 0, that many accelerators with `accelerator_memory` free bytes on
//   each. A quantity the model leaves out is not counted; a node that did not report a
//   resource is not limited by it.
// - disable_packing: the replica's devices (its accelerators, or the node's CPU for a replica
//   without accelerators) hold nothing else.
// - Stable: a replica that sits on a node that is still usable and still fits it stays there,
//   so a change elsewhere never moves a running replica. Replicas of one deployment prefer
//   nodes that do not hold one yet (a node's loss takes fewer of them), then the tightest fit.
// - Offline nodes (past the grace the caller applies) take no replicas; theirs move elsewhere.
// - A replica that fits nowhere is returned in `unplaced`, with the reason, for the
//   deployment's status.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "controlplane/state/store.h"

namespace outpost::control {

struct SchedulerNode {
  std::string id;
  std::string nodepool_id;
  double cpu_cores = 0;                    // 0: not reported, not limited
  double memory_bytes = 0;                 // 0: not reported, not limited
  std::vector<double> accelerator_memory;  // one entry per GPU (0: memory not reported)
  bool usable = true;                      // false: offline past the grace
};

// What one replica of a deployment asks for.
struct ReplicaShape {
  double cpu_cores = 0;
  double memory_bytes = 0;
  int64_t accelerators = 0;
  double accelerator_memory = 0;  // on each accelerator
};

struct SchedulerDeployment {
  std::string id;
  std::vector<std::string> nodepool_ids;
  std::map<std::string, int64_t> replicas;  // wanted per nodepool (the autoscaler's)
  bool disable_packing = false;
  ReplicaShape shape;
};

struct UnplacedReplicas {
  std::string deployment_id;
  std::string nodepool_id;
  int64_t count = 0;
  std::string reason;
};

struct ScheduleResult {
  std::vector<Replica> replicas;  // sorted by id
  std::vector<UnplacedReplicas> unplaced;
};

// The shape a model's normalized inference_compute_info asks for; quantities it leaves out
// count as zero.
ReplicaShape replica_shape(const nlohmann::json& inference_compute_info);
// A node's offer, from the inventory its agent reported.
SchedulerNode scheduler_node(const Node& node, bool usable);

// The new assignment of `user_id`'s replicas, given the current one.
ScheduleResult schedule(const std::string& user_id,
                        const std::vector<SchedulerDeployment>& deployments,
                        const std::vector<SchedulerNode>& nodes,
                        const std::vector<Replica>& current);

}  // namespace outpost::control
