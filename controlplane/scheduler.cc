#include "controlplane/scheduler.h"

#include <algorithm>
#include <map>

namespace outpost::control {

namespace {

struct NodeLoad {
  const SchedulerNode* node = nullptr;
  int exclusive = 0;  // devices taken by disable_packing replicas
  int shared = 0;     // packed replicas
  double memory = 0;  // memory the placed replicas need

  bool fits(const SchedulerDeployment& deployment) const {
    if (deployment.memory_per_replica > 0 && node->memory_bytes > 0 &&
        memory + deployment.memory_per_replica > node->memory_bytes) {
      return false;
    }
    if (deployment.disable_packing) return exclusive + (shared > 0 ? 1 : 0) < node->devices;
    return exclusive < node->devices;
  }
  void place(const SchedulerDeployment& deployment) {
    if (deployment.disable_packing) {
      ++exclusive;
    } else {
      ++shared;
    }
    memory += deployment.memory_per_replica;
  }
};

}  // namespace

int64_t wanted_replicas(const SchedulerDeployment& deployment) {
  return std::min(std::max<int64_t>(deployment.min_replicas, 1), deployment.max_replicas);
}

std::vector<Replica> schedule(const std::string& user_id,
                              const std::vector<SchedulerDeployment>& deployments,
                              const std::vector<SchedulerNode>& nodes,
                              const std::vector<Replica>& current) {
  std::vector<const SchedulerNode*> ordered;
  ordered.reserve(nodes.size());
  for (const auto& node : nodes) ordered.push_back(&node);
  std::sort(ordered.begin(), ordered.end(),
            [](const SchedulerNode* a, const SchedulerNode* b) { return a->id < b->id; });
  std::map<std::string, NodeLoad> loads;
  for (const auto* node : ordered) loads[node->id].node = node;
  std::map<std::string, const Replica*> existing;
  for (const auto& replica : current) existing[replica.id] = &replica;

  std::vector<const SchedulerDeployment*> order;
  order.reserve(deployments.size());
  for (const auto& deployment : deployments) order.push_back(&deployment);
  std::sort(
      order.begin(), order.end(),
      [](const SchedulerDeployment* a, const SchedulerDeployment* b) { return a->id < b->id; });

  std::vector<Replica> out;
  std::vector<std::pair<const SchedulerDeployment*, Replica>> unplaced;
  // First keep what still fits where it is, then place the rest first-fit.
  for (const auto* deployment : order) {
    const int64_t want = wanted_replicas(*deployment);
    for (const auto& pool : deployment->nodepool_ids) {
      for (int64_t index = 0; index < want; ++index) {
        Replica replica{user_id, deployment->id + "/" + pool + "/" + std::to_string(index),
                        deployment->id, pool, ""};
        const auto it = existing.find(replica.id);
        if (it != existing.end()) {
          const auto load = loads.find(it->second->node_id);
          if (load != loads.end() && load->second.node->nodepool_id == pool &&
              load->second.fits(*deployment)) {
            load->second.place(*deployment);
            replica.node_id = it->second->node_id;
            out.push_back(replica);
            continue;
          }
        }
        unplaced.emplace_back(deployment, std::move(replica));
      }
    }
  }
  for (auto& entry : unplaced) {
    // Named references, not a structured binding: clang 14 cannot capture bindings in lambdas.
    const auto* const deployment = entry.first;
    Replica& replica = entry.second;
    for (const auto* node : ordered) {
      if (node->nodepool_id != replica.nodepool_id) continue;
      NodeLoad& load = loads[node->id];
      // Replicas of one deployment spread over the pool's nodes before doubling up.
      const bool already_here = std::any_of(out.begin(), out.end(), [&](const Replica& placed) {
        return placed.node_id == node->id && placed.deployment_id == replica.deployment_id;
      });
      const bool other_free =
          std::any_of(ordered.begin(), ordered.end(), [&](const SchedulerNode* other) {
            if (other->nodepool_id != replica.nodepool_id || other == node) return false;
            const bool busy = std::any_of(out.begin(), out.end(), [&](const Replica& placed) {
              return placed.node_id == other->id && placed.deployment_id == replica.deployment_id;
            });
            return !busy && loads[other->id].fits(*deployment);
          });
      if (already_here && other_free) continue;
      if (!load.fits(*deployment)) continue;
      load.place(*deployment);
      replica.node_id = node->id;
      out.push_back(replica);
      break;
    }
  }
  std::sort(out.begin(), out.end(), [](const Replica& a, const Replica& b) { return a.id < b.id; });
  return out;
}

}  // namespace outpost::control
