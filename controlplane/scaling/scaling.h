// The autoscaling loop of the control plane (docs/scaling.md). Once a second, on the blocking
// pool, it
// - samples every deployment's ongoing requests on each of its nodepools (calls in flight to
//   its replicas plus requests held for a cold start) into that pair's ReplicaScaler
//   (autoscaler.h), applies the decisions, stores the new counts (they survive a restart) and
//   keeps the last scaling events of each deployment, with their reasons;
// - notices nodes that have been offline longer than the grace, so that the scheduler moves
//   their replicas to other nodes (and back to no change when they return in time);
// - reschedules the users whose counts or usable nodes changed;
// - expires requests held past the cold-start timeout and refreshes the metrics.
// A request that finds its deployment at zero replicas calls demand(), which scales the first
// nodepool that can take a replica to one at once, without waiting for the next tick.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "controlplane/scaling/autoscaler.h"
#include "controlplane/scaling/scheduler.h"
#include "controlplane/state/store.h"
#include "controlplane/state/wall_clock.h"

namespace outpost::control {

class Fleet;
class ControlMetrics;

// What the loop asks of the parts that hold the agents and the held calls, and what it tells
// them. Scaling calls nothing else outside itself: the agent service and the router call into
// Scaling, and the control plane implements this (controlplane/control_plane.cc), so the calls
// go one way.
class ScalingHost {
 public:
  virtual ~ScalingHost() = default;
  // Whether the node has a live tunnel now.
  virtual bool node_online(const std::string& node_id) = 0;
  // Event: a user's replica counts or usable nodes changed; place them again. Blocking.
  virtual void counts_changed(const std::string& user_id) = 0;
  // How many requests are held for a cold start of the deployment.
  virtual size_t held_requests(const std::string& user_id, const std::string& deployment_id) = 0;
  // Event: a tick passed; held requests past the cold-start timeout are answered.
  virtual void tick_passed() = 0;
};

struct ScalingOptions {
  double target_ongoing_requests = 2;      // per replica
  double node_offline_grace_seconds = 30;  // before an offline node's replicas move
  size_t events_kept = 20;                 // per deployment
};

struct ScalingEvent {
  int64_t at = 0;  // wall-clock seconds
  std::string nodepool_id;
  int64_t from = 0;
  int64_t to = 0;
  std::string reason;
};

class Scaling {
 public:
  // `host` and `metrics` outlive this object.
  Scaling(Store& store, Fleet& fleet, const WallClock& clock, ScalingOptions options,
          ScalingHost& host, ControlMetrics& metrics);

  // One pass of the loop (blocking: call it from the pool).
  void tick();

  // A request found `deployment` without a ready replica and is being held. At zero replicas on
  // every nodepool, scales the first one with a usable node (else the first) to one replica and
  // reschedules at once. Returns true when it started a cold start. Blocking.
  bool demand(const Deployment& deployment);

  // For the scheduler: the replicas `deployment` wants on each of its nodepools (a deployment
  // not seen yet starts at initial_replicas()).
  std::map<std::string, int64_t> replicas_for(const Deployment& deployment);
  // For the scheduler: whether a node may take replicas (online, or offline within the grace).
  bool usable(const std::string& node_id, bool online);
  // The scheduler's verdict on replicas that fit nowhere, for the deployments' status.
  void set_unplaced(const std::string& user_id, const std::vector<UnplacedReplicas>& unplaced);

  // For `deployment get`: desired counts per nodepool, the recent events, why replicas are not
  // placed, and each nodepool's current load signal.
  nlohmann::json status(const Deployment& deployment);

 private:
  struct Key {
    std::string user_id;
    std::string deployment_id;
    std::string nodepool_id;
    bool operator==(const Key& other) const {
      return std::tie(user_id, deployment_id, nodepool_id) ==
             std::tie(other.user_id, other.deployment_id, other.nodepool_id);
    }
    bool operator<(const Key& other) const {
      return std::tie(user_id, deployment_id, nodepool_id) <
             std::tie(other.user_id, other.deployment_id, other.nodepool_id);
    }
  };
  using DeploymentKey = std::pair<std::string, std::string>;  // user, deployment

  double seconds_now() const;
  // The scaler of `key`, made on first use from the stored count, else at initial_replicas()
  // (then `*fresh` is set: nothing was placed for it yet); its policy refreshed from the
  // deployment.
  ReplicaScaler& scaler_locked(const Key& key, const Deployment& deployment, bool* fresh = nullptr);
  void record_locked(const Key& key, const ScaleChange& change);
  void persist(const Key& key, int64_t replicas);

  Store& store_;
  Fleet& fleet_;
  const WallClock& clock_;
  const ScalingOptions options_;
  ScalingHost& host_;
  ControlMetrics& metrics_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();

  std::mutex mutex_;
  std::map<Key, ReplicaScaler> scalers_;
  std::map<DeploymentKey, std::deque<ScalingEvent>> events_;
  std::map<DeploymentKey, std::vector<UnplacedReplicas>> unplaced_;
  std::map<std::string, double> offline_since_;  // node -> seconds_now() when last seen offline
  std::map<std::string, std::set<std::string>> usable_nodes_;  // user -> usable node ids
  std::map<DeploymentKey, std::string> cold_pool_;  // where held requests count (demand())
};

}  // namespace outpost::control
