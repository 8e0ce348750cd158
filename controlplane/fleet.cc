#include "controlplane/fleet.h"

namespace outpost::control {

void Fleet::set_replicas(const std::string& node_id, std::vector<ReplicaState> replicas) {
  std::lock_guard<std::mutex> lock(mutex_);
  nodes_[node_id].replicas = std::move(replicas);
}

std::vector<ReplicaState> Fleet::replicas_of(const std::string& node_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = nodes_.find(node_id);
  return it == nodes_.end() ? std::vector<ReplicaState>() : it->second.replicas;
}

ReplicaState Fleet::replica(const std::string& node_id, const std::string& replica_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = nodes_.find(node_id);
  if (it != nodes_.end()) {
    for (const auto& replica : it->second.replicas) {
      if (replica.replica_id == replica_id) return replica;
    }
  }
  return ReplicaState{replica_id, "", "", "", 0, 0};
}

void Fleet::forget(const std::string& node_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  nodes_.erase(node_id);
}

void Fleet::set_acknowledged(const std::string& node_id, int64_t version) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& state = nodes_[node_id];
  if (version > state.acknowledged) state.acknowledged = version;
}

int64_t Fleet::acknowledged(const std::string& node_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = nodes_.find(node_id);
  return it == nodes_.end() ? 0 : it->second.acknowledged;
}

void Fleet::begin_call(const std::string& node_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++nodes_[node_id].outstanding;
}

void Fleet::end_call(const std::string& node_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = nodes_.find(node_id);
  if (it != nodes_.end() && it->second.outstanding > 0) --it->second.outstanding;
}

int64_t Fleet::outstanding(const std::string& node_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = nodes_.find(node_id);
  return it == nodes_.end() ? 0 : it->second.outstanding;
}

}  // namespace outpost::control
