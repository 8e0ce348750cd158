#include "agent/agent.h"

#include "agent/local_files.h"
#include "common/log.h"
#include <sys/stat.h>

namespace outpost::agent {

namespace {
constexpr auto kReportInterval = std::chrono::seconds(5);
constexpr uint64_t kMaxArtifactBytes = uint64_t{64} << 30;
}  // namespace

Result<std::shared_ptr<Agent>> Agent::create(boost::asio::io_context& io, AgentConfig config) {
  auto agent = std::shared_ptr<Agent>(new Agent(io, std::move(config)));
  // The node credential and the verified artifacts live here: private from the first start on,
  // before enrollment writes the credential (credentials.h).
  ::chmod(agent->config_.state_dir.c_str(), 0700);
  OUTPOST_ASSIGN_OR_RETURN(agent->tunnel_proxy_url_, tunnel_proxy_url(agent->config_));
  OUTPOST_ASSIGN_OR_RETURN(agent->inventory_, detect_inventory(agent->config_.inventory_override));
  OUTPOST_ASSIGN_OR_RETURN(agent->artifacts_,
                           ArtifactCache::open(agent->config_.artifact_dir(), kMaxArtifactBytes));
  return agent;
}

Agent::Agent(boost::asio::io_context& io, AgentConfig config)
    : io_(io), config_(std::move(config)), report_timer_(io), watchdog_timer_(io) {}

void Agent::start() {
  std::weak_ptr<Agent> weak = shared_from_this();
  LOG_NOTICE("agent.starting", "outpostd starting as node "
                                   << config_.node_name << ": " << inventory_.cpu_cores
                                   << " cores, " << inventory_.gpus.size() << " GPU(s), inventory "
                                   << inventory_.source);
  router_ = std::make_shared<Router>(
      Router::Limits{config_.max_streams, config_.max_inflight_per_replica});
  ControlSession::Callbacks callbacks;
  callbacks.on_desired = [weak](protocol::DesiredState state) {
    if (auto self = weak.lock()) self->reconciler_->apply(std::move(state));
  };
  callbacks.on_predict = [weak](const std::shared_ptr<tunnel::Stream>& stream,
                                const nlohmann::json& metadata) {
    if (auto self = weak.lock()) {
      self->router_->route(stream, metadata);
    } else {
      stream->reset(tunnel::Errc::kRefusedStream, "the agent is stopping");
    }
  };
  callbacks.on_state = [weak](const std::string&) {
    if (auto self = weak.lock()) self->update_systemd_status();
  };
  const nlohmann::json inventory_json = [this] {
    nlohmann::json json = inventory_.to_json();
    json["agent_version"] = "0.1.0";
    return json;
  }();
  AgentConfig session_config = config_;
  session_config.proxy = tunnel_proxy_url_;
  session_ = std::make_shared<ControlSession>(
      io_, std::move(session_config), CredentialStore(config_.state_dir, config_.join_token_file),
      [inventory_json] { return nlohmann::json(inventory_json); }, std::move(callbacks));
  reconciler_ =
      std::make_shared<Reconciler>(io_, config_, inventory_, *artifacts_, session_, router_);
  reconciler_->set_on_change([weak] {
    if (auto self = weak.lock()) {
      self->send_report();
      self->update_systemd_status();
    }
  });
  auto status = StatusServer::create(io_, config_.socket_path(), [weak]() -> nlohmann::json {
    auto self = weak.lock();
    return self ? self->status() : nlohmann::json::object();
  });
  if (status.ok()) {
    status_server_ = status.value();
  } else {
    LOG_ERROR("agent.status_socket", status.error().message());
  }
  // Local start-up is done: ready, even while the control plane is out of reach.
  notifier_.ready();
  session_->start();
  update_systemd_status();
  schedule_report();
  schedule_watchdog();
}

void Agent::update_systemd_status() {
  if (stopping_) return;
  std::string line = session_ ? session_->state() : "starting";
  if (reconciler_) line += "; " + reconciler_->summary();
  notifier_.status(line);
}

void Agent::schedule_report() {
  report_timer_.expires_after(kReportInterval);
  report_timer_.async_wait(
      [weak = std::weak_ptr<Agent>(shared_from_this())](boost::system::error_code ec) {
        auto self = weak.lock();
        if (ec || !self || self->stopping_) return;
        self->send_report();
        self->schedule_report();
      });
}

void Agent::send_report() {
  if (!session_ || !session_->enrolled() || stopping_) return;
  protocol::NodeReport report = reconciler_->report();
  report.inventory = inventory_.to_json();
  session_->send_report(protocol::to_json(report));
}

void Agent::schedule_watchdog() {
  const auto interval = notifier_.watchdog_interval();
  if (interval.count() == 0) return;
  watchdog_timer_.expires_after(interval);
  watchdog_timer_.async_wait(
      [weak = std::weak_ptr<Agent>(shared_from_this())](boost::system::error_code ec) {
        auto self = weak.lock();
        if (ec || !self) return;
        // This timer firing shows the event loop runs; the reconciler answers for the supervisor.
        // While either is stuck, systemd hears nothing and restarts the agent.
        if (self->reconciler_ && self->reconciler_->healthy()) {
          self->notifier_.watchdog();
        } else {
          LOG_ERROR("agent.unhealthy", "the supervisor is stuck; withholding the watchdog ping");
        }
        self->schedule_watchdog();
      });
}

void Agent::stop(std::function<void()> done) {
  if (stopping_) return;
  stopping_ = true;
  notifier_.stopping();
  LOG_NOTICE("agent.stopping", "draining: in-flight predictions get " << drain_grace_.count() / 1000
                                                                      << " s, then workers stop");
  report_timer_.cancel();
  if (status_server_) status_server_->stop();
  auto self = shared_from_this();
  session_->shutdown(drain_grace_, [self, done = std::move(done)]() mutable {
    // The tunnels are closed; nothing new can arrive. Stop the workers.
    self->reconciler_->stop(std::move(done));
  });
}

void Agent::reload(const AgentConfig& config) {
  notifier_.reloading();
  const auto changed = [&](bool differs, const char* key) {
    if (differs) {
      LOG_WARNING("agent.reload_needs_restart",
                  key << " changed; restart outpostd to apply it (kept the running value)");
    }
  };
  changed(config.control_plane_url != config_.control_plane_url, "control_plane.url");
  changed(config.ca_file != config_.ca_file || config.pins != config_.pins,
          "control_plane.ca_file/pins");
  changed(config.proxy != config_.proxy ||
              config.proxy_credentials_file != config_.proxy_credentials_file,
          "control_plane.proxy/proxy_credentials_file");
  changed(config.connections != config_.connections, "control_plane.connections");
  changed(config.keepalive_seconds != config_.keepalive_seconds ||
              config.dead_after_seconds != config_.dead_after_seconds ||
              config.reconnect_max_seconds != config_.reconnect_max_seconds,
          "control_plane.keepalive_seconds/dead_after_seconds/reconnect_max_seconds");
  changed(config.node_name != config_.node_name, "node.name");
  changed(config.state_dir != config_.state_dir || config.runtime_dir != config_.runtime_dir,
          "state_dir/runtime_dir");
  changed(config.reserved_cpu_millicores != config_.reserved_cpu_millicores ||
              config.reserved_memory_bytes != config_.reserved_memory_bytes ||
              config.reserved_accelerator_memory_bytes != config_.reserved_accelerator_memory_bytes,
          "reserved");
  changed(config.default_slicing != config_.default_slicing ||
              config.slicing_per_gpu != config_.slicing_per_gpu,
          "devices");
  changed(config.inventory_override != config_.inventory_override, "inventory_override");
  changed(config.worker_binary != config_.worker_binary, "workers.binary");
  changed(config.worker_threads != config_.worker_threads, "workers.threads");
  config_.log_level = config.log_level;
  config_.max_workers = config.max_workers;
  config_.max_inflight_per_replica = config.max_inflight_per_replica;
  config_.max_streams = config.max_streams;
  config_.restart_backoff_max_seconds = config.restart_backoff_max_seconds;
  config_.idle_worker_seconds = config.idle_worker_seconds;
  config_.spare_workers = config.spare_workers;
  reconciler_->update_limits(config_);
  LOG_NOTICE("agent.reloaded", "configuration reloaded");
  notifier_.ready();
}

nlohmann::json Agent::status() const {
  nlohmann::json out = reconciler_ ? reconciler_->status() : nlohmann::json::object();
  out["node"] = config_.node_name;
  out["state"] = session_ ? session_->state() : "starting";
  out["enrolled"] = session_ && session_->enrolled();
  out["inventory"] = inventory_.to_json();
  out["inventory"]["source"] = inventory_.source;
  nlohmann::json connections = nlohmann::json::array();
  if (session_) {
    for (const auto& slot : session_->tunnel_status().slots) {
      connections.push_back({{"state", std::string(tunnel::slot_state_name(slot.state))},
                             {"failures", slot.consecutive_failures},
                             {"last_error", slot.last_error}});
    }
  }
  out["connections"] = connections;
  return out;
}

}  // namespace outpost::agent
