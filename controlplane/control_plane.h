// outpost-control assembled: the store, the HTTPS listener with the REST API, the tunnel server
// on the same port, the agent service and the predict router, an io_context with its threads
// and a pool for blocking work. main.cc runs one; tests run it in-process to inject a clock.
#pragma once

#include <memory>
#include <string>

#include "common/result.h"
#include "controlplane/control_config.h"
#include "controlplane/state/wall_clock.h"

namespace outpost::control {

struct ControlSeams {
  const WallClock* clock = nullptr;  // default: the system clock
};

class ControlPlane {
 public:
  // Opens (or creates) the state in config.data_dir; on the first start, creates the admin user
  // and its token.
  static Result<std::unique_ptr<ControlPlane>> create(ControlConfig config,
                                                      ControlSeams seams = {});
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  // Listens and starts the threads; returns the bound port.
  Result<uint16_t> start();
  // Drains the tunnels (agents reconnect elsewhere or later), stops listening and the threads.
  void stop();

  // The admin token made by this start (first start only), else empty. Shown once.
  const std::string& initial_admin_token() const;
  // The bound port of the metrics listener (metrics.listen), or 0 when it is off.
  uint16_t metrics_port() const;

  class Impl;

 private:
  explicit ControlPlane(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::control
