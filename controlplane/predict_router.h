// Picks where a prediction goes: among the deployment's assigned replicas, those whose node is
// connected and reported the replica ready; of those, the node with the fewest calls in flight
// from this control plane (ties: the fewest the agent reported, then the node id). With none, an
// `unavailable` error that says why (no node enrolled, nodes offline, replicas still loading or
// failed), which the API returns as a 503.
#pragma once

#include <memory>
#include <string>

#include "common/result.h"
#include "controlplane/fleet.h"
#include "controlplane/store.h"
#include "tunnel/server.h"

namespace outpost::control {

struct PredictRoute {
  std::string node_id;
  std::string replica_id;
  std::shared_ptr<tunnel::Connection> connection;
};

class PredictRouter {
 public:
  PredictRouter(Store& store, Fleet& fleet) : store_(store), fleet_(fleet) {}
  void set_tunnel(std::shared_ptr<tunnel::TunnelServer> tunnel) { tunnel_ = std::move(tunnel); }

  // Blocking (reads the assignments): call it from the pool.
  Result<PredictRoute> choose(const Deployment& deployment);

  // Counts a call to `node_id` as outstanding until the returned guard is released.
  std::shared_ptr<void> track(const std::string& node_id);

 private:
  Store& store_;
  Fleet& fleet_;
  std::shared_ptr<tunnel::TunnelServer> tunnel_;
};

}  // namespace outpost::control
