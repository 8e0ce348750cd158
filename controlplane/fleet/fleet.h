// What the control plane knows live about its nodes, in memory: the replica states each agent
// last reported, the desired-state version it acknowledged, and how many predict calls are in
// flight to each node (for least-outstanding routing) and to each deployment's nodepool (the
// autoscaler's signal). Rebuilt from agents' reports after a restart.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "protocol/control_protocol.h"

namespace outpost::control {

// The key of one deployment's replicas on one nodepool: "user/deployment/nodepool" (ids hold
// no '/').
std::string load_key(const std::string& user_id, const std::string& deployment_id,
                     const std::string& nodepool_id);

// A replica as its node last reported it (node.report).
using ReplicaState = protocol::ReplicaStatus;

class Fleet {
 public:
  void set_replicas(const std::string& node_id, std::vector<ReplicaState> replicas);
  std::vector<ReplicaState> replicas_of(const std::string& node_id) const;
  // The node's reported state of one replica; empty state when none was reported.
  ReplicaState replica(const std::string& node_id, const std::string& replica_id) const;
  void forget(const std::string& node_id);

  void set_acknowledged(const std::string& node_id, int64_t version);
  int64_t acknowledged(const std::string& node_id) const;

  // A predict call to `node_id` for the replicas of `key` (load_key()) starts or ends.
  void begin_call(const std::string& node_id, const std::string& key);
  void end_call(const std::string& node_id, const std::string& key);
  int64_t outstanding(const std::string& node_id) const;
  int64_t ongoing(const std::string& key) const;

 private:
  struct NodeState {
    std::vector<ReplicaState> replicas;
    int64_t acknowledged = 0;
    int64_t outstanding = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::string, NodeState> nodes_;
  std::map<std::string, int64_t> ongoing_;
};

}  // namespace outpost::control
