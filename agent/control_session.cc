#include "agent/control_session.h"

#include <boost/asio/post.hpp>

#include "common/json_fields.h"
#include "common/log.h"
#include "protocol/control_protocol.h"
#include "tunnel/calls.h"

namespace outpost::agent {

using boost::system::error_code;

namespace {

constexpr auto kEnrollmentRetry = std::chrono::seconds(60);

tunnel::ClientOptions tunnel_options(const AgentConfig& config, const std::string& credential,
                                     int connections) {
  tunnel::ClientOptions options;
  options.url = config.control_plane_url;
  options.credential = credential;
  options.tls.ca_file = config.ca_file;
  options.tls.spki_pins = config.pins;
  options.proxy_url = config.proxy;
  options.connections = connections;
  options.connection.local_id = config.node_name;
  // Predict bodies as envelopes: tensors cross the tunnel as bytes (docs/control-protocol.md).
  options.connection.application_features = protocol::kFeaturePredictEnvelope;
  options.connection.ping_interval = std::chrono::seconds(config.keepalive_seconds);
  options.connection.dead_after = std::chrono::seconds(config.dead_after_seconds);
  options.backoff.cap = std::chrono::seconds(config.reconnect_max_seconds);
  return options;
}

Error stream_error(error_code ec, const std::shared_ptr<tunnel::Stream>& stream) {
  std::string why = ec.message();
  if (const std::string reason = stream->reset_reason(); !reason.empty()) why += ": " + reason;
  return unavailable("control plane call failed (" + why + ")");
}

}  // namespace

ControlSession::ControlSession(boost::asio::io_context& io, AgentConfig config,
                               CredentialStore credentials,
                               std::function<nlohmann::json()> inventory, Callbacks callbacks)
    : io_(io),
      config_(std::move(config)),
      credentials_(std::move(credentials)),
      inventory_(std::move(inventory)),
      callbacks_(std::move(callbacks)),
      retry_timer_(io) {}

void ControlSession::start() {
  if (auto credential = credentials_.load_node_credential()) {
    enrolled_ = true;
    start_main(*credential);
  } else {
    start_enrollment();
  }
}

void ControlSession::set_state(const std::string& state) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state == state_) return;
    state_ = state;
  }
  if (callbacks_.on_state) callbacks_.on_state(state);
}

std::string ControlSession::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_;
}

tunnel::ClientStatus ControlSession::tunnel_status() const {
  std::shared_ptr<tunnel::TunnelClient> client;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    client = client_ ? client_ : enrollment_;
  }
  return client ? client->status() : tunnel::ClientStatus{};
}

void ControlSession::start_enrollment() {
  auto token = credentials_.read_join_token();
  if (!token.ok()) {
    LOG_ERROR("agent.enroll_no_token", token.error().message());
    return retry_enrollment(token.error().message());
  }
  enroll_sent_ = false;
  set_state("enrolling with the join token from " + credentials_.join_token_source());
  LOG_NOTICE("agent.enrolling",
             "enrolling node " << config_.node_name << " with " << config_.control_plane_url);
  std::weak_ptr<ControlSession> weak = shared_from_this();
  tunnel::TunnelClient::Handlers handlers;
  handlers.on_status = [weak](const tunnel::ClientStatus& status) {
    auto self = weak.lock();
    if (!self || status.connected() == 0) {
      if (self && !status.slots.empty() && !status.slots[0].last_error.empty()) {
        self->set_state("enrolling: " + status.slots[0].last_error);
      }
      return;
    }
    std::shared_ptr<tunnel::TunnelClient> client;
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      client = self->enrollment_;
    }
    if (client) self->enroll_with(client);
  };
  auto client =
      tunnel::TunnelClient::create(io_, tunnel_options(config_, token.value(), 1), handlers);
  if (!client.ok()) {
    LOG_ERROR("agent.enroll_failed", client.error().message());
    return retry_enrollment(client.error().message());
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    enrollment_ = client.value();
  }
  client.value()->start();
}

void ControlSession::enroll_with(const std::shared_ptr<tunnel::TunnelClient>& client) {
  if (enroll_sent_.exchange(true)) return;
  const nlohmann::json request =
      protocol::to_json(protocol::EnrollRequest{config_.node_name, inventory_()});
  auto opened =
      client->open_stream(protocol::to_json(protocol::CallMetadata{"node.enroll", ""}).dump(),
                          request.dump(), true, true);
  if (!opened.ok()) {
    enroll_sent_ = false;  // the next status change tries again
    return;
  }
  auto stream = opened.value();
  std::weak_ptr<ControlSession> weak = shared_from_this();
  tunnel::async_read_unary_response(stream, [weak, client, stream](error_code ec,
                                                                   const std::string& body) {
    auto self = weak.lock();
    if (!self) return;
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      if (self->enrollment_ != client) return;  // an answer already came
      self->enrollment_.reset();
    }
    client->shutdown(std::chrono::seconds(1), [] {});
    if (ec) return self->retry_enrollment(stream_error(ec, stream).message());
    const auto reply = nlohmann::json::parse(body, nullptr, false);
    if (auto error = protocol::error_in(reply)) {
      LOG_ERROR("agent.enroll_refused",
                "the control plane refused enrollment: " << error->message());
      return self->retry_enrollment("enrollment refused: " + error->message());
    }
    if (!reply.is_object() || !reply.contains("credential") || !reply["credential"].is_string() ||
        !reply.contains("node_id") || !reply["node_id"].is_string()) {
      return self->retry_enrollment("the control plane's enrollment answer was malformed");
    }
    const std::string credential = reply["credential"].get<std::string>();
    if (Status saved = self->credentials_.save_node_credential(credential); !saved.ok()) {
      LOG_ERROR("agent.credential_write_failed", saved.error().message());
      return self->retry_enrollment(saved.error().message());
    }
    self->credentials_.consume_join_token();
    self->enrolled_ = true;
    LOG_NOTICE("agent.enrolled", "enrolled as node " << reply["node_id"].get<std::string>()
                                                     << " in nodepool "
                                                     << string_field_or(reply, "nodepool_id", "?"));
    self->start_main(credential);
  });
}

void ControlSession::retry_enrollment(const std::string& why) {
  if (stopping_) return;
  set_state("not enrolled: " + why + "; retrying in 60 s");
  retry_timer_.expires_after(kEnrollmentRetry);
  retry_timer_.async_wait(
      [weak = std::weak_ptr<ControlSession>(shared_from_this())](error_code ec) {
        if (auto self = weak.lock(); self && !ec && !self->stopping_) self->start_enrollment();
      });
}

void ControlSession::start_main(const std::string& credential) {
  if (stopping_) return;
  std::weak_ptr<ControlSession> weak = shared_from_this();
  tunnel::TunnelClient::Handlers handlers;
  handlers.on_status = [weak](const tunnel::ClientStatus& status) {
    if (auto self = weak.lock()) self->on_status(status);
  };
  handlers.on_stream = [weak](const std::shared_ptr<tunnel::Stream>& stream, int) {
    if (auto self = weak.lock()) {
      self->on_stream(stream);
    } else {
      stream->reset(tunnel::Errc::kRefusedStream, "the agent is stopping");
    }
  };
  auto client = tunnel::TunnelClient::create(
      io_, tunnel_options(config_, credential, config_.connections), handlers);
  if (!client.ok()) {
    LOG_ERROR("agent.tunnel_config", client.error().message());
    set_state("cannot start the tunnel: " + client.error().message());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    client_ = client.value();
  }
  set_state("connecting to " + config_.control_plane_url);
  client.value()->start();
}

void ControlSession::on_status(const tunnel::ClientStatus& status) {
  const int connected = status.connected();
  int before = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    before = connected_;
    connected_ = connected;
  }
  const int total = static_cast<int>(status.slots.size());
  if (connected > 0) {
    set_state("connected to the control plane (" + std::to_string(connected) + " of " +
              std::to_string(total) + " connections)");
  } else {
    std::string why;
    std::chrono::milliseconds retry{0};
    for (const auto& slot : status.slots) {
      if (!slot.last_error.empty()) {
        why = slot.last_error;
        retry = slot.retry_in;
      }
    }
    set_state(why.empty() ? "connecting to " + config_.control_plane_url
                          : "backing off " + std::to_string(retry.count() / 1000) + " s: " + why);
  }
  // A connection came up: make sure the desired state is current (it may have changed while
  // the agent was away).
  if (connected > before) sync();
}

void ControlSession::sync() {
  std::weak_ptr<ControlSession> weak = shared_from_this();
  call("node.sync", nlohmann::json::object(), [weak](Result<nlohmann::json> reply) {
    auto self = weak.lock();
    if (!self) return;
    if (!reply.ok()) {
      LOG_WARNING("agent.sync_failed", "node.sync failed: " << reply.error().message());
      return;
    }
    auto state = protocol::parse_desired_state(reply.value());
    if (!state.ok()) {
      LOG_ERROR("agent.bad_desired_state",
                "refused the desired state from node.sync: " << state.error().message());
      return;
    }
    if (self->callbacks_.on_desired) self->callbacks_.on_desired(std::move(state).value());
  });
}

void ControlSession::call(const std::string& method, const nlohmann::json& request,
                          std::function<void(Result<nlohmann::json>)> done) {
  std::shared_ptr<tunnel::TunnelClient> client;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    client = client_;
  }
  if (!client) return done(unavailable("not connected to the control plane"));
  auto opened = client->open_stream(protocol::to_json(protocol::CallMetadata{method, ""}).dump(),
                                    request.dump(), true, true);
  if (!opened.ok()) return done(opened.error());
  auto stream = opened.value();
  tunnel::async_read_unary_response(
      stream, [stream, done = std::move(done)](error_code ec, const std::string& body) {
        if (ec) return done(stream_error(ec, stream));
        auto reply = nlohmann::json::parse(body, nullptr, false);
        if (reply.is_discarded()) return done(internal_error("the control plane sent bad JSON"));
        if (auto error = protocol::error_in(reply)) return done(*error);
        done(std::move(reply));
      });
}

void ControlSession::send_report(const nlohmann::json& report) {
  call("node.report", report, [](const Result<nlohmann::json>& reply) {
    if (!reply.ok() && reply.error().code() != ErrorCode::kUnavailable) {
      LOG_WARNING("agent.report_failed", "node.report failed: " << reply.error().message());
    }
  });
}

void ControlSession::on_stream(const std::shared_ptr<tunnel::Stream>& stream) {
  const auto metadata = nlohmann::json::parse(stream->metadata(), nullptr, false);
  const auto refuse = [&stream](const Error& error) {
    stream->async_write(protocol::error_document(error).dump(), true, [](error_code) {});
  };
  if (!metadata.is_object() || !metadata.contains("method") || !metadata["method"].is_string()) {
    return refuse(invalid_argument("stream metadata must be a JSON object with a method"));
  }
  const std::string method = metadata["method"].get<std::string>();
  if (method == "predict") {
    if (callbacks_.on_predict) return callbacks_.on_predict(stream, metadata);
    return refuse(unavailable("this agent serves no predictions yet"));
  }
  if (method == "node.desired") {
    std::weak_ptr<ControlSession> weak = shared_from_this();
    stream->async_read([weak, stream, refuse](error_code ec, const std::string& body) {
      auto self = weak.lock();
      if (ec || !self) return;
      auto document = nlohmann::json::parse(body, nullptr, false);
      auto state = protocol::parse_desired_state(document);
      if (!state.ok()) {
        LOG_ERROR("agent.bad_desired_state",
                  "refused a pushed desired state: " << state.error().message());
        return refuse(state.error());
      }
      const uint64_t version = state->version;
      if (self->callbacks_.on_desired) self->callbacks_.on_desired(std::move(state).value());
      stream->async_write(nlohmann::json{{"version", version}}.dump(), true, [](error_code) {});
    });
    return;
  }
  refuse(invalid_argument("unknown method '" + method + "'"));
}

void ControlSession::fetch_artifact(const protocol::ArtifactRef& artifact,
                                    const ArtifactCache& cache,
                                    std::function<void(Result<std::string>)> done) {
  if (auto cached = cache.find(artifact.sha256, artifact.size)) return done(*cached);
  auto writer = cache.begin(artifact.sha256, artifact.size);
  if (!writer.ok()) return done(writer.error());
  std::shared_ptr<tunnel::TunnelClient> client;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    client = client_;
  }
  if (!client) return done(unavailable("not connected to the control plane"));
  auto opened = client->open_stream(
      protocol::to_json(protocol::CallMetadata{"artifact.fetch", artifact.sha256}).dump(), {},
      false, true);
  if (!opened.ok()) return done(opened.error());
  struct Download {
    std::shared_ptr<tunnel::Stream> stream;
    std::unique_ptr<ArtifactCache::Writer> writer;
    protocol::ArtifactRef artifact;
    bool header_seen = false;
    std::function<void(Result<std::string>)> done;
  };
  auto download = std::make_shared<Download>();
  download->stream = opened.value();
  download->writer = std::move(writer).value();
  download->artifact = artifact;
  download->done = std::move(done);
  download->stream->set_max_message_size(2 * 1024 * 1024);
  auto read_next = std::make_shared<std::function<void()>>();
  *read_next = [download, read_next] {
    download->stream->async_read([download, read_next](error_code ec, const std::string& message) {
      if (ec == tunnel::Errc::kEndOfStream) {
        if (!download->header_seen) {
          *read_next = nullptr;
          return download->done(unavailable("artifact.fetch ended without a header"));
        }
        *read_next = nullptr;  // breaks the self-reference
        return download->done(download->writer->commit());
      }
      if (ec) {
        *read_next = nullptr;
        return download->done(stream_error(ec, download->stream));
      }
      if (!download->header_seen) {
        download->header_seen = true;
        const auto header = nlohmann::json::parse(message, nullptr, false);
        if (auto error = protocol::error_in(header)) {
          *read_next = nullptr;
          return download->done(*error);
        }
        if (!header.is_object() ||
            string_field_or(header, "sha256", "") != download->artifact.sha256 ||
            uint_field_or(header, "size", 0) != download->artifact.size) {
          download->stream->reset(tunnel::Errc::kCancel, "unexpected artifact header");
          *read_next = nullptr;
          return download->done(Error(
              ErrorCode::kDataLoss,
              "the control plane offered a different artifact than " + download->artifact.sha256));
        }
      } else if (Status appended = download->writer->append(message); !appended.ok()) {
        download->stream->reset(tunnel::Errc::kCancel, appended.error().message());
        *read_next = nullptr;
        return download->done(appended.error());
      }
      (*read_next)();
    });
  };
  (*read_next)();
}

void ControlSession::shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
  stopping_ = true;
  retry_timer_.cancel();
  std::shared_ptr<tunnel::TunnelClient> client;
  std::shared_ptr<tunnel::TunnelClient> enrollment;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    client = client_;
    enrollment = enrollment_;
  }
  if (enrollment) enrollment->shutdown(grace, [] {});
  if (!client) return done();
  client->shutdown(grace, std::move(done));
}

}  // namespace outpost::agent
