#include "controlplane/fleet/agent_service.h"

#include <fstream>
#include <map>

#include <boost/asio/post.hpp>

#include "common/log.h"
#include "common/sha256.h"
#include "controlplane/auth/secrets.h"
#include "controlplane/fleet/predict_router.h"
#include "controlplane/resources/document.h"
#include "controlplane/scaling/scaling.h"
#include "controlplane/scaling/scheduler.h"
#include "protocol/control_protocol.h"
#include "tunnel/calls.h"

namespace outpost::control {

namespace asio = boost::asio;
using boost::system::error_code;
using nlohmann::json;

namespace {

constexpr size_t kArtifactChunk = 1024 * 1024;
constexpr size_t kVerifiedCacheLimit = 10'000;

void reply(const std::shared_ptr<tunnel::Stream>& stream, const std::string& message) {
  stream->async_write(message, /*end_stream=*/true, [](error_code) {});
}

void reply_error(const std::shared_ptr<tunnel::Stream>& stream, const Error& error) {
  reply(stream, protocol::error_document(error).dump());
}

// Sends an artifact's bytes in chunks of at most 1 MiB. Each chunk is read once the previous one
// was framed, so a download holds at most one chunk in memory however slow the agent reads.
class ArtifactSender : public std::enable_shared_from_this<ArtifactSender> {
 public:
  ArtifactSender(std::shared_ptr<tunnel::Stream> stream, std::shared_ptr<std::ifstream> file,
                 std::string sha256)
      : stream_(std::move(stream)), file_(std::move(file)), sha256_(std::move(sha256)) {}

  void next(error_code ec) {
    if (ec) return;  // the agent reset the stream or the connection ended
    std::string chunk(kArtifactChunk, '\0');
    file_->read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    chunk.resize(static_cast<size_t>(file_->gcount()));
    if (chunk.empty()) {
      stream_->close_write();
      LOG_INFO("control.artifact_sent", "artifact " << sha256_ << " sent");
      return;
    }
    stream_->async_write(std::move(chunk), false, [self = shared_from_this()](error_code write_ec) {
      self->next(write_ec);
    });
  }

 private:
  std::shared_ptr<tunnel::Stream> stream_;
  std::shared_ptr<std::ifstream> file_;
  std::string sha256_;
};

bool is_enroll_identity(const std::string& identity) {
  return identity.compare(0, kEnrollIdentityPrefix.size(), kEnrollIdentityPrefix) == 0;
}

}  // namespace

AgentService::AgentService(Store& store, Fleet& fleet, const ArtifactStore& artifacts,
                           const WallClock& clock, Scaling& scaling, PredictRouter& router,
                           AuthThrottle* throttle, asio::any_io_executor pool)
    : store_(store),
      fleet_(fleet),
      artifacts_(artifacts),
      clock_(clock),
      pool_(std::move(pool)),
      scaling_(scaling),
      router_(router),
      throttle_(throttle) {}

tunnel::TunnelServer::Handlers AgentService::handlers() {
  std::weak_ptr<AgentService> weak = shared_from_this();
  tunnel::TunnelServer::Handlers handlers;
  handlers.authenticate = [weak](const std::string& credential, const tunnel::PeerInfo& peer,
                                 const tunnel::TunnelServer::AuthDone& done) {
    auto self = weak.lock();
    if (!self) return done(unavailable("the control plane is shutting down"));
    asio::post(self->pool_, [self, credential, remote = peer.remote_address, done] {
      self->authenticate(credential, remote, done);
    });
  };
  handlers.on_connection = [weak](const std::shared_ptr<tunnel::Connection>&,
                                  const tunnel::PeerInfo& peer) {
    auto self = weak.lock();
    if (!self || is_enroll_identity(peer.identity)) return;
    asio::post(self->pool_, [self, identity = peer.identity] { self->on_connection(identity); });
  };
  handlers.on_stream = [weak](const std::shared_ptr<tunnel::Stream>& stream,
                              const tunnel::PeerInfo& peer) {
    auto self = weak.lock();
    if (!self) return stream->reset(tunnel::Errc::kRefusedStream, "shutting down");
    self->on_stream(stream, peer);
  };
  handlers.on_disconnect = [weak](const tunnel::PeerInfo& peer, error_code code,
                                  const std::string& reason) {
    // Requests held for a replica of this node learn that it is gone.
    if (auto self = weak.lock()) self->router_.wake();
    LOG_INFO("control.agent_disconnected", "connection "
                                               << peer.connection_index << " of " << peer.identity
                                               << " closed: " << code.message() << " " << reason);
  };
  return handlers;
}

void AgentService::authenticate(const std::string& credential, const std::string& remote,
                                const tunnel::TunnelServer::AuthDone& done) {
  const bool throttled = throttle_ != nullptr && throttle_->retry_after(remote) > 0;
  auto identity = check_credential(credential, remote);
  if (!identity.ok() && identity.error().code() == ErrorCode::kUnauthenticated &&
      throttle_ != nullptr) {
    throttle_->record_failure(remote);
    if (const int64_t wait = throttle_->retry_after(remote); throttled && wait > 0) {
      identity = Error(ErrorCode::kResourceExhausted,
                       identity.error().message() +
                           "; too many refused credentials from this address: try again in " +
                           std::to_string(wait) + " s");
    }
  }
  done(std::move(identity));
}

Result<std::string> AgentService::check_credential(const std::string& credential,
                                                   const std::string& remote) {
  const auto refuse = [](const std::string& why) -> Error {
    return {ErrorCode::kUnauthenticated, why};
  };
  // A node credential verified before passes at once, throttled address or not: it costs no KDF,
  // and a guess can never be in this cache.
  const bool node_credential = credential.compare(0, kNodeCredentialPrefix.size() + 1,
                                                  std::string(kNodeCredentialPrefix) + "_") == 0;
  const std::string fingerprint = node_credential ? sha256_hex(credential) : std::string();
  if (node_credential) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = verified_.find(fingerprint);
    if (it != verified_.end()) {
      auto node = store_.get_node(it->second);
      if (node.ok()) return it->second;
      verified_.erase(it);
    }
  }
  // Anything else may cost a KDF: a throttled address's checks wait their turn in the lane.
  std::unique_lock<std::mutex> lane;
  if (throttle_ != nullptr) lane = throttle_->lane(remote);
  if (credential.compare(0, kJoinTokenPrefix.size() + 1, std::string(kJoinTokenPrefix) + "_") ==
      0) {
    auto parsed = parse_token(credential, kJoinTokenPrefix);
    if (!parsed.ok()) return refuse(parsed.error().message());
    auto token = store_.get_join_token(parsed->id);
    if (!token.ok()) return refuse("unknown join token");
    if (token->used_at.has_value()) {
      return refuse(
          "the join token was already used; create a new one with `outpost nodepool "
          "join-token`");
    }
    if (token->expires_at <= clock_.now_seconds()) {
      return refuse(
          "the join token has expired; create a new one with `outpost nodepool "
          "join-token`");
    }
    if (!verify_secret(parsed->secret, token->secret_hash)) return refuse("unknown join token");
    return std::string(kEnrollIdentityPrefix) + parsed->id;
  }
  if (node_credential) {
    auto parsed = parse_token(credential, kNodeCredentialPrefix);
    if (!parsed.ok()) return refuse(parsed.error().message());
    auto node = store_.get_node(parsed->id);
    if (!node.ok() || !verify_secret(parsed->secret, node->secret_hash)) {
      return refuse(
          "unknown or revoked node credential; enroll the node again with a new join "
          "token");
    }
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      if (verified_.size() >= kVerifiedCacheLimit) verified_.clear();
      verified_[fingerprint] = node->id;
    }
    return node->id;
  }
  return refuse(
      "unknown credential kind: expected a join token (ojt_...) or a node credential (onc_...)");
}

void AgentService::on_connection(const std::string& identity) {
  auto node = store_.get_node(identity);
  if (!node.ok()) {
    // Deleted (and so revoked) after its credential was checked but before the connection was
    // up: revoke_node() found nothing to close then, so it is closed now.
    if (node.error().code() == ErrorCode::kNotFound && tunnel_) {
      tunnel_->disconnect(identity, tunnel::Errc::kGoingAway, "the node's credential was revoked");
      LOG_NOTICE("control.node_revoked",
                 "node " << identity << " was deleted while connecting; its connection closed");
    }
    return;
  }
  LOG_INFO("control.node_connected", "node " << identity << " (" << node->name << ") connected");
  if (fleet_.acknowledged(identity) < node->desired_version) push_desired(identity);
  router_.wake();
}

void AgentService::on_stream(const std::shared_ptr<tunnel::Stream>& stream,
                             const tunnel::PeerInfo& peer) {
  auto metadata = protocol::parse_call_metadata(stream->metadata());
  if (!metadata.ok()) return reply_error(stream, metadata.error());
  const std::string method = metadata->method;
  const bool enrolling = is_enroll_identity(peer.identity);
  if (enrolling != (method == "node.enroll")) {
    return reply_error(
        stream, Error(ErrorCode::kPermissionDenied,
                      enrolling ? "a join token allows only node.enroll; reconnect with the node "
                                  "credential"
                                : "this node is enrolled already"));
  }
  if (method == "artifact.fetch") {
    auto self = shared_from_this();
    asio::post(pool_, [self, stream, node = peer.identity, sha = metadata->sha256] {
      self->fetch_artifact(stream, node, sha);
    });
    return;
  }
  if (method != "node.enroll" && method != "node.sync" && method != "node.report") {
    return reply_error(stream, invalid_argument("unknown method '" + method + "'"));
  }
  stream->set_max_message_size(protocol::kMaxControlMessage);
  auto self = shared_from_this();
  stream->async_read(
      [self, stream, identity = peer.identity, method](error_code ec, std::string request) {
        if (ec && ec != tunnel::Errc::kEndOfStream) return;  // the agent went away or reset
        asio::post(self->pool_, [self, stream, identity, method, request = std::move(request)] {
          self->handle_unary(stream, identity, method, request);
        });
      });
}

void AgentService::handle_unary(const std::shared_ptr<tunnel::Stream>& stream,
                                const std::string& identity, const std::string& method,
                                const std::string& request) {
  Result<json> response = json::object();
  if (method == "node.enroll") {
    response = enroll(identity.substr(kEnrollIdentityPrefix.size()), request);
  } else if (method == "node.sync") {
    response = desired_state(identity);
  } else {
    response = report(identity, request);
  }
  if (!response.ok()) {
    LOG_NOTICE("control.agent_call_failed",
               method << " from " << identity << " failed: " << response.error().to_string());
    return reply_error(stream, response.error());
  }
  reply(stream, response->dump());
}

Result<json> AgentService::enroll(const std::string& token_id, const std::string& request) {
  OUTPOST_ASSIGN_OR_RETURN(auto parsed, protocol::parse_enroll_request(request));
  OUTPOST_ASSIGN_OR_RETURN(auto token, store_.get_join_token(token_id));
  Node node;
  node.id = "node-" + random_hex(8);
  node.user_id = token.user_id;
  node.compute_cluster_id = token.compute_cluster_id;
  node.nodepool_id = token.nodepool_id;
  node.name = parsed.name;
  node.inventory = parsed.inventory;
  const std::string secret = random_hex(32);
  node.secret_hash = hash_secret(secret);
  OUTPOST_RETURN_IF_ERROR(store_.enroll_node(token_id, clock_.now_seconds(), node));
  LOG_NOTICE("control.node_enrolled", "node " << node.id << " (" << node.name << ") enrolled in "
                                              << node.compute_cluster_id << "/" << node.nodepool_id
                                              << " of " << node.user_id);
  auto self = shared_from_this();
  asio::post(pool_, [self, user = node.user_id] { self->reschedule(user); });
  return json{{"node_id", node.id},
              {"credential", make_token(kNodeCredentialPrefix, node.id, secret)},
              {"user_id", node.user_id},
              {"compute_cluster_id", node.compute_cluster_id},
              {"nodepool_id", node.nodepool_id}};
}

Result<json> AgentService::report(const std::string& node_id, const std::string& request) {
  OUTPOST_ASSIGN_OR_RETURN(auto parsed, protocol::parse_node_report(request));
  json replicas = json::array();  // as reported, for the node's API view
  for (const auto& status : parsed.replicas) replicas.push_back(protocol::to_json(status));
  fleet_.set_replicas(node_id, parsed.replicas);
  fleet_.set_acknowledged(node_id, parsed.applied_version);
  OUTPOST_RETURN_IF_ERROR(
      store_.record_report(node_id, parsed.inventory.has_value() ? &*parsed.inventory : nullptr,
                           replicas, parsed.applied_version, clock_.now_seconds()));
  // A replica may have become ready: requests held for a cold start go now.
  router_.wake();
  return json::object();
}

Result<json> AgentService::desired_state(const std::string& node_id) {
  OUTPOST_ASSIGN_OR_RETURN(auto node, store_.get_node(node_id));
  OUTPOST_ASSIGN_OR_RETURN(auto replicas, store_.replicas_of_node(node_id));
  protocol::DesiredState state;
  state.version = static_cast<uint64_t>(node.desired_version);
  std::map<std::string, Deployment> deployments;
  for (const auto& replica : replicas) {
    auto found = deployments.find(replica.deployment_id);
    if (found == deployments.end()) {
      auto deployment = store_.get_deployment(node.user_id, replica.deployment_id);
      if (!deployment.ok()) continue;  // deleted; the reschedule that follows drops the replica
      found = deployments.emplace(replica.deployment_id, std::move(deployment).value()).first;
    }
    const Deployment& deployment = found->second;
    OUTPOST_ASSIGN_OR_RETURN(auto version, store_.get_version(node.user_id, deployment.model_id,
                                                              deployment.model_version_id));
    protocol::DesiredReplica desired;
    desired.replica_id = replica.id;
    desired.deployment_id = deployment.id;
    desired.user_id = node.user_id;
    desired.model_id = deployment.model_id;
    desired.model_version_id = deployment.model_version_id;
    // Both were checked when the version was uploaded; an error here is a damaged database.
    const std::string where = "model version " + version.id;
    for (const auto& artifact : version.artifacts) {
      OUTPOST_ASSIGN_OR_RETURN(auto ref, protocol::parse_artifact(artifact, where + " artifact"));
      desired.artifacts.push_back(std::move(ref));
    }
    if (version.config.is_object() && version.config.contains("inference_compute_info")) {
      OUTPOST_RETURN_IF_ERROR(protocol::read_compute_info(
          version.config["inference_compute_info"], where + " inference_compute_info", desired));
    }
    if (deployment.doc.contains("autoscale_config")) {
      desired.disable_packing = deployment.doc["autoscale_config"].value("disable_packing", false);
    }
    state.replicas.push_back(std::move(desired));
  }
  return protocol::to_json(state);
}

void AgentService::push_desired(const std::string& node_id) {
  if (!tunnel_) return;
  auto connections = tunnel_->connections_of(node_id);
  std::shared_ptr<tunnel::Connection> connection;
  for (auto& candidate : connections) {
    if (!candidate->is_going_away()) {
      connection = candidate;
      break;
    }
  }
  if (!connection) return;  // the agent pulls it with node.sync when it connects
  auto state = desired_state(node_id);
  if (!state.ok()) {
    LOG_WARNING("control.desired_failed", "cannot build the desired state of "
                                              << node_id << ": " << state.error().to_string());
    return;
  }
  const int64_t version = (*state)["version"].get<int64_t>();
  auto stream = connection->open_stream(R"({"method":"node.desired"})", state->dump(),
                                        /*send_first_message=*/true, /*end_stream=*/true);
  auto self = shared_from_this();
  tunnel::async_read_unary_response(
      stream, [self, node_id, version](error_code ec, const std::string& response) {
        if (ec) {
          LOG_INFO("control.desired_unacknowledged", "node " << node_id
                                                             << " did not take desired state "
                                                             << version << ": " << ec.message());
          return;
        }
        auto parsed = parse_json(response);
        if (parsed.ok() && parsed->is_object() && parsed->contains("version") &&
            (*parsed)["version"].is_number_integer()) {
          self->fleet_.set_acknowledged(node_id, (*parsed)["version"].get<int64_t>());
          LOG_INFO("control.desired_acknowledged", "node " << node_id << " holds desired state "
                                                           << (*parsed)["version"].get<int64_t>());
        } else {
          LOG_WARNING("control.desired_bad_answer",
                      "node " << node_id << " answered node.desired with an unexpected document");
        }
      });
}

void AgentService::reschedule(const std::string& user_id) {
  std::vector<std::string> changed;
  {
    std::lock_guard<std::mutex> lock(reschedule_mutex_);
    auto deployments = store_.list_deployments(user_id, "");
    auto nodes = store_.list_nodes(user_id, "");
    auto current = store_.list_replicas(user_id);
    if (!deployments.ok() || !nodes.ok() || !current.ok()) {
      LOG_ERROR("control.schedule_failed", "cannot read the state to schedule " << user_id);
      return;
    }
    std::vector<SchedulerDeployment> wanted;
    for (const auto& deployment : *deployments) {
      SchedulerDeployment d;
      d.id = deployment.id;
      d.nodepool_ids = deployment.nodepool_ids;
      const json autoscale = deployment.doc.value("autoscale_config", json::object());
      d.disable_packing = autoscale.value("disable_packing", false);
      d.replicas = scaling_.replicas_for(deployment);
      auto version = store_.get_version(user_id, deployment.model_id, deployment.model_version_id);
      if (version.ok() && version->config.is_object()) {
        d.shape = replica_shape(version->config.value("inference_compute_info", json::object()));
      }
      wanted.push_back(std::move(d));
    }
    std::vector<SchedulerNode> fleet;
    for (const auto& node : *nodes) {
      const bool usable = scaling_.usable(node.id, online(node.id));
      fleet.push_back(scheduler_node(node, usable));
    }
    const auto result = schedule(user_id, wanted, fleet, *current);
    scaling_.set_unplaced(user_id, result.unplaced);
    auto replaced = store_.replace_replicas(user_id, result.replicas);
    if (!replaced.ok()) {
      LOG_ERROR("control.schedule_failed",
                "cannot store the replicas of " << user_id << ": " << replaced.error().message());
      return;
    }
    changed = std::move(replaced).value();
  }
  for (const auto& node : changed) {
    LOG_INFO("control.assignments_changed", "the replicas of node " << node << " changed");
    push_desired(node);
  }
  // Requests held for a replica that moved or went away learn of it.
  if (!changed.empty()) router_.wake();
}

void AgentService::revoke_node(const std::string& node_id) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    for (auto it = verified_.begin(); it != verified_.end();) {
      it = it->second == node_id ? verified_.erase(it) : std::next(it);
    }
  }
  fleet_.forget(node_id);
  if (tunnel_) {
    tunnel_->disconnect(node_id, tunnel::Errc::kGoingAway, "the node's credential was revoked");
  }
  LOG_NOTICE("control.node_revoked", "node " << node_id << " revoked; its connections closed");
}

bool AgentService::online(const std::string& node_id) const {
  return tunnel_ && !tunnel_->connections_of(node_id).empty();
}

void AgentService::fetch_artifact(const std::shared_ptr<tunnel::Stream>& stream,
                                  const std::string& node_id, const std::string& sha256) {
  auto state = desired_state(node_id);
  if (!state.ok()) return reply_error(stream, state.error());
  json artifact;
  for (const auto& replica : (*state)["replicas"]) {
    for (const auto& candidate : replica["artifacts"]) {
      if (candidate.value("sha256", "") == sha256) artifact = candidate;
    }
  }
  if (artifact.is_null() || !artifacts_.contains(sha256)) {
    return reply_error(stream, Error(ErrorCode::kNotFound,
                                     "no artifact " + sha256 + " among this node's replicas"));
  }
  auto file = std::make_shared<std::ifstream>(artifacts_.path_of(sha256), std::ios::binary);
  if (!*file) {
    return reply_error(stream, unavailable("the artifact cannot be read on the control plane"));
  }
  const json header{{"name", artifact.value("name", "")},
                    {"size", artifact.value("size", int64_t{0})},
                    {"sha256", sha256}};
  auto sender = std::make_shared<ArtifactSender>(stream, file, sha256);
  stream->async_write(header.dump(), false, [sender](error_code ec) { sender->next(ec); });
}

}  // namespace outpost::control
