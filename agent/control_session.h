// The agent's conversation with the control plane (docs/control-protocol.md) over its tunnel
// connections: enrollment with the join token when the node has no credential yet, then
// node.sync on every connection that comes up, node.report when asked, node.desired pushes,
// artifact downloads, and predict streams handed to the router.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "agent/artifact_cache.h"
#include "agent/config.h"
#include "agent/credentials.h"
#include "protocol/control_protocol.h"
#include "tunnel/client.h"

namespace outpost::agent {

class ControlSession : public std::enable_shared_from_this<ControlSession> {
 public:
  struct Callbacks {
    // A desired state arrived (from node.sync or a node.desired push); versions may repeat.
    std::function<void(protocol::DesiredState)> on_desired;
    // The control plane opened a predict stream; `metadata` is its parsed OPEN metadata.
    std::function<void(std::shared_ptr<tunnel::Stream>, nlohmann::json metadata)> on_predict;
    // A one-line summary changed ("enrolling", "connected to 2 of 2", "backing off: ...").
    std::function<void(const std::string&)> on_state;
  };

  ControlSession(boost::asio::io_context& io, AgentConfig config, CredentialStore credentials,
                 std::function<nlohmann::json()> inventory, Callbacks callbacks);

  void start();
  void shutdown(std::chrono::milliseconds grace, std::function<void()> done);

  // Sends node.report; dropped (and reported again later by the caller) when no connection
  // is up.
  void send_report(const nlohmann::json& report);

  // Downloads one artifact into the cache: size-capped, hash-checked, written aside.
  void fetch_artifact(const protocol::ArtifactRef& artifact, const ArtifactCache& cache,
                      std::function<void(Result<std::string>)> done);

  std::string state() const;
  bool enrolled() const { return enrolled_.load(); }
  tunnel::ClientStatus tunnel_status() const;

 private:
  void start_enrollment();
  void enroll_with(const std::shared_ptr<tunnel::TunnelClient>& client);
  void retry_enrollment(const std::string& why);
  void start_main(const std::string& credential);
  void on_status(const tunnel::ClientStatus& status);
  void on_stream(const std::shared_ptr<tunnel::Stream>& stream);
  void sync();
  // A unary call to the control plane; the response JSON, or the error it carried.
  void call(const std::string& method, const nlohmann::json& request,
            std::function<void(Result<nlohmann::json>)> done);
  void set_state(const std::string& state);

  boost::asio::io_context& io_;
  const AgentConfig config_;
  const CredentialStore credentials_;
  std::function<nlohmann::json()> inventory_;
  Callbacks callbacks_;

  mutable std::mutex mutex_;
  std::shared_ptr<tunnel::TunnelClient> client_;      // with the node credential
  std::shared_ptr<tunnel::TunnelClient> enrollment_;  // with the join token, while enrolling
  std::string state_;
  int connected_ = 0;
  std::atomic<bool> enrolled_{false};
  std::atomic<bool> enroll_sent_{false};  // one node.enroll per enrollment attempt
  std::atomic<bool> stopping_{false};
  boost::asio::steady_timer retry_timer_;
};

}  // namespace outpost::agent
