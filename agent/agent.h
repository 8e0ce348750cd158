// The agent as a whole: wires the control session (tunnel, enrollment, desired state), the
// reconciler (artifacts, placement, workers, routing), the status socket and systemd.
//
// Life cycle: start() detects the hardware, opens the status socket, tells systemd READY=1
// (local start-up is done; the control plane may be unreachable for hours and the agent is
// still healthy), then connects. stop() is the SIGTERM path: STOPPING=1, GOAWAY on every
// tunnel connection, in-flight predictions get the grace period, workers are stopped, then
// `done`. reload() is SIGHUP.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "agent/artifact_cache.h"
#include "agent/config.h"
#include "agent/control_session.h"
#include "agent/inventory.h"
#include "agent/reconciler.h"
#include "agent/router.h"
#include "agent/status_server.h"
#include "common/result.h"
#include "common/service_notify.h"

namespace outpost::agent {

class Agent : public std::enable_shared_from_this<Agent> {
 public:
  static Result<std::shared_ptr<Agent>> create(boost::asio::io_context& io, AgentConfig config);

  void start();
  void stop(std::function<void()> done);
  void reload(const AgentConfig& config);

  nlohmann::json status() const;

 private:
  Agent(boost::asio::io_context& io, AgentConfig config);
  void schedule_report();
  void send_report();
  void schedule_watchdog();
  void update_systemd_status();

  boost::asio::io_context& io_;
  AgentConfig config_;
  // control_plane.proxy with the credentials of proxy_credentials_file, for the tunnel only:
  // config_.proxy stays as written, so that what is logged or compared on reload holds no secret.
  std::string tunnel_proxy_url_;
  ServiceNotifier notifier_;
  Inventory inventory_;
  std::unique_ptr<ArtifactCache> artifacts_;
  std::shared_ptr<ControlSession> session_;
  std::shared_ptr<Router> router_;
  std::shared_ptr<Reconciler> reconciler_;
  std::shared_ptr<StatusServer> status_server_;
  boost::asio::steady_timer report_timer_;
  boost::asio::steady_timer watchdog_timer_;
  std::chrono::milliseconds drain_grace_{30'000};
  bool stopping_ = false;
};

}  // namespace outpost::agent
