#include "controlplane/metrics.h"

#include <set>
#include <sstream>

#include "common/url.h"
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace outpost::control {

ControlMetrics::ControlMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("outpost_predict_requests_total")
                   .Help("Predict calls that ended, by shape and status code")
                   .Register(*registry_);
  durations_ = &prometheus::BuildHistogram()
                    .Name("outpost_predict_duration_seconds")
                    .Help("Time from a predict call's arrival to its answer (or its first chunk)")
                    .Register(*registry_);
  ongoing_ = &prometheus::BuildGauge()
                  .Name("outpost_predict_ongoing")
                  .Help("Predict calls held for a cold start or in flight, per nodepool")
                  .Register(*registry_);
  replicas_ = &prometheus::BuildGauge()
                   .Name("outpost_replicas")
                   .Help(
                       "Replicas per deployment and nodepool: desired (autoscaler), assigned "
                       "(placed on a node), live (reported ready)")
                   .Register(*registry_);
  cold_starts_ = &prometheus::BuildCounter()
                      .Name("outpost_cold_starts_total")
                      .Help("Requests that found a deployment at zero replicas and started one")
                      .Register(*registry_);
  scaling_events_ = &prometheus::BuildCounter()
                         .Name("outpost_scaling_events_total")
                         .Help("Autoscaler decisions, by direction")
                         .Register(*registry_);
  connected_agents_ = &prometheus::BuildGauge()
                           .Name("outpost_connected_agents")
                           .Help("Nodes with at least one tunnel connection")
                           .Register(*registry_)
                           .Add({});
}

ControlMetrics::~ControlMetrics() { exposer_.reset(); }

Result<uint16_t> ControlMetrics::listen(const std::string& address, uint16_t port) {
  const std::string bind = Url::host_port(address, port);
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(bind, 1);
  } catch (const std::exception& e) {
    return unavailable("cannot serve metrics on " + bind + ": " + e.what());
  }
  exposer_->RegisterCollectable(registry_);
  const auto ports = exposer_->GetListeningPorts();
  if (ports.empty()) return unavailable("cannot serve metrics on " + bind);
  return static_cast<uint16_t>(ports.front());
}

void ControlMetrics::request_done(const std::string& user, const std::string& deployment,
                                  const std::string& shape, const std::string& code,
                                  double seconds) {
  requests_->Add({{"user", user}, {"deployment", deployment}, {"shape", shape}, {"code", code}})
      .Increment();
  durations_
      ->Add({{"user", user}, {"deployment", deployment}, {"shape", shape}},
            prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                    0.25, 0.5, 1, 2.5, 5, 10, 30, 60})
      .Observe(seconds);
}

void ControlMetrics::cold_start(const std::string& user, const std::string& deployment) {
  cold_starts_->Add({{"user", user}, {"deployment", deployment}}).Increment();
}

void ControlMetrics::scaled(const std::string& user, const std::string& deployment, bool up) {
  scaling_events_
      ->Add({{"user", user}, {"deployment", deployment}, {"direction", up ? "up" : "down"}})
      .Increment();
}

void ControlMetrics::set_connected_agents(int64_t count) {
  connected_agents_->Set(static_cast<double>(count));
}

void ControlMetrics::set_replicas(const std::vector<ReplicaCounts>& counts) {
  std::lock_guard lock(mutex_);
  std::set<SeriesKey> seen;
  for (const auto& count : counts) {
    const SeriesKey key{count.user, count.deployment, count.nodepool};
    seen.insert(key);
    auto it = series_.find(key);
    if (it == series_.end()) {
      const prometheus::Labels base{
          {"user", count.user}, {"deployment", count.deployment}, {"nodepool", count.nodepool}};
      const auto with_kind = [&base](const char* kind) {
        prometheus::Labels labels = base;
        labels["kind"] = kind;
        return labels;
      };
      it = series_
               .emplace(key, Series{&replicas_->Add(with_kind("desired")),
                                    &replicas_->Add(with_kind("assigned")),
                                    &replicas_->Add(with_kind("live")), &ongoing_->Add(base)})
               .first;
    }
    it->second.desired->Set(static_cast<double>(count.desired));
    it->second.assigned->Set(static_cast<double>(count.assigned));
    it->second.live->Set(static_cast<double>(count.live));
    it->second.ongoing->Set(count.ongoing);
  }
  for (auto it = series_.begin(); it != series_.end();) {
    if (seen.count(it->first) > 0) {
      ++it;
      continue;
    }
    replicas_->Remove(it->second.desired);
    replicas_->Remove(it->second.assigned);
    replicas_->Remove(it->second.live);
    ongoing_->Remove(it->second.ongoing);
    it = series_.erase(it);
  }
}

std::string ControlMetrics::render() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace outpost::control
