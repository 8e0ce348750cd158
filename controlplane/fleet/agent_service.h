// The control plane's side of docs/control-protocol.md: who an agent is (join token or node
// credential), enrollment, desired state, reports, artifact downloads — everything but predict
// (predict_router.h). It plugs into tunnel::TunnelServer through its Handlers.
//
// Desired state: each node has a desired_version, stored, bumped whenever its set of replicas
// changes. A new state is pushed (node.desired) to the node when it changes and whenever a
// connection of the node becomes ready while its acknowledged version is behind; the agent also
// pulls it (node.sync) on every connection. Slow work (SQLite, the credential KDF) runs on the
// blocking pool, never on a connection's strand.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include "controlplane/auth/auth_throttle.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/state/artifact_store.h"
#include "controlplane/state/store.h"
#include "controlplane/state/wall_clock.h"
#include "tunnel/server.h"

namespace outpost::control {

class PredictRouter;
class Scaling;

inline constexpr std::string_view kEnrollIdentityPrefix = "enroll:";

class AgentService : public std::enable_shared_from_this<AgentService> {
 public:
  // `scaling` (how many replicas, which nodes are usable) and `router` (woken when a replica's
  // state changes) outlive it; refused credentials count against their sender's address in
  // `throttle` (nullptr: none).
  AgentService(Store& store, Fleet& fleet, const ArtifactStore& artifacts, const WallClock& clock,
               Scaling& scaling, PredictRouter& router, AuthThrottle* throttle,
               boost::asio::any_io_executor pool);

  // The handlers to create the TunnelServer with; set_tunnel() must follow before it listens.
  tunnel::TunnelServer::Handlers handlers();
  void set_tunnel(std::shared_ptr<tunnel::TunnelServer> tunnel) { tunnel_ = std::move(tunnel); }

  // Recomputes `user_id`'s replica assignments (scheduler.h, with the autoscaler's counts) and
  // pushes the new desired states.
  // Blocking (SQLite): call it from the pool.
  void reschedule(const std::string& user_id);

  // After a node was deleted: forgets its credential and closes its connections.
  void revoke_node(const std::string& node_id);

  bool online(const std::string& node_id) const;

  // The node's DesiredState document (docs/control-protocol.md). Blocking.
  Result<nlohmann::json> desired_state(const std::string& node_id);

 private:
  void authenticate(const std::string& credential, const std::string& remote,
                    const tunnel::TunnelServer::AuthDone& done);
  Result<std::string> check_credential(const std::string& credential, const std::string& remote);
  void on_connection(const std::string& identity);
  void on_stream(const std::shared_ptr<tunnel::Stream>& stream, const tunnel::PeerInfo& peer);
  void handle_unary(const std::shared_ptr<tunnel::Stream>& stream, const std::string& identity,
                    const std::string& method, const std::string& request);
  Result<nlohmann::json> enroll(const std::string& token_id, const std::string& request);
  Result<nlohmann::json> report(const std::string& node_id, const std::string& request);
  void fetch_artifact(const std::shared_ptr<tunnel::Stream>& stream, const std::string& node_id,
                      const std::string& sha256);
  void push_desired(const std::string& node_id);

  Store& store_;
  Fleet& fleet_;
  const ArtifactStore& artifacts_;
  const WallClock& clock_;
  boost::asio::any_io_executor pool_;
  std::shared_ptr<tunnel::TunnelServer> tunnel_;
  Scaling& scaling_;
  PredictRouter& router_;
  AuthThrottle* throttle_;

  std::mutex reschedule_mutex_;  // one reschedule at a time: read, compute, write
  mutable std::mutex cache_mutex_;
  // sha256 of a verified node credential -> node id, so each connection does not pay the KDF.
  std::unordered_map<std::string, std::string> verified_;
};

}  // namespace outpost::control
