// Prometheus metrics of the control plane (docs/scaling.md, "Metrics"), kept with
// prometheus-cpp's core and served by its pull Exposer on a listener of their own
// (`metrics.listen`; off when empty). Every series of a deployment carries `user` and
// `deployment` labels.
//
//   outpost_predict_requests_total{user,deployment,shape,code}     counter
//   outpost_predict_duration_seconds{user,deployment,shape}         histogram
//   outpost_predict_ongoing{user,deployment,nodepool}               gauge: queued or held + running
//   outpost_replicas{user,deployment,nodepool,kind=desired|assigned|live}  gauge
//   outpost_cold_starts_total{user,deployment}                      counter
//   outpost_scaling_events_total{user,deployment,direction=up|down} counter
//   outpost_connected_agents                                        gauge
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "common/result.h"

namespace prometheus {
class Exposer;
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace outpost::control {

class ControlMetrics {
 public:
  ControlMetrics();
  ~ControlMetrics();
  ControlMetrics(const ControlMetrics&) = delete;
  ControlMetrics& operator=(const ControlMetrics&) = delete;

  // Serves /metrics on "address:port" (port 0: any free one). Returns the bound port.
  Result<uint16_t> listen(const std::string& address, uint16_t port);

  void request_done(const std::string& user, const std::string& deployment,
                    const std::string& shape, const std::string& code, double seconds);
  void cold_start(const std::string& user, const std::string& deployment);
  void scaled(const std::string& user, const std::string& deployment, bool up);
  void set_connected_agents(int64_t count);

  struct ReplicaCounts {
    std::string user;
    std::string deployment;
    std::string nodepool;
    int64_t desired = 0;
    int64_t assigned = 0;
    int64_t live = 0;
    double ongoing = 0;
  };
  // The whole current set: series of deployments no longer listed are removed.
  void set_replicas(const std::vector<ReplicaCounts>& counts);

  // The text exposition, as a scrape would get it (for tests and `outpost-control` itself).
  std::string render() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* durations_;
  prometheus::Family<prometheus::Gauge>* ongoing_;
  prometheus::Family<prometheus::Gauge>* replicas_;
  prometheus::Family<prometheus::Counter>* cold_starts_;
  prometheus::Family<prometheus::Counter>* scaling_events_;
  prometheus::Gauge* connected_agents_;
  std::unique_ptr<prometheus::Exposer> exposer_;

  std::mutex mutex_;
  using SeriesKey = std::tuple<std::string, std::string, std::string>;  // user, deployment, pool
  struct Series {
    prometheus::Gauge* desired;
    prometheus::Gauge* assigned;
    prometheus::Gauge* live;
    prometheus::Gauge* ongoing;
  };
  std::map<SeriesKey, Series> series_;
};

}  // namespace outpost::control
