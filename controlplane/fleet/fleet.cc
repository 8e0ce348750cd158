#include "controlplane/fleet/fleet.h"

namespace outpost::control {

std::string load_key(const std::string& user_id, const std::string& deployment_id,
                     const std::string& nodepool_id) {
  return user_id + "/" + deployment_id + "/" + nodepool_id;
}

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
  ReplicaState unknown;
  unknown.replica_id = replica_id;
  return unknown;
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

void Fleet::begin_call(const std::string& node_id, const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++nodes_[node_id].outstanding;
  ++ongoing_[key];
}

void Fleet::end_call(const std::string& node_id, const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = nodes_.find(node_id);
  if (it != nodes_.end() && it->second.outstanding > 0) --it->second.outstanding;
  if (const auto load = ongoing_.find(key); load != ongoing_.end() && --load->second <= 0) {
    ongoing_.erase(load);
  }
}

int64_t Fleet::ongoing(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = ongoing_.find(key);
  return it == ongoing_.end() ? 0 : it->second;
}

int64_t Fleet::outstanding(const std::string& node_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = nodes_.find(node_id);
  return it == nodes_.end() ? 0 : it->second.outstanding;
}

}  // namespace outpost::control
