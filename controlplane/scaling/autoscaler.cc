#include "controlplane/scaling/autoscaler.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace outpost::control {

namespace {

double seconds(int64_t value) { return static_cast<double>(value); }

std::string format(double value) {
  std::ostringstream out;
  out.precision(3);
  out << value;
  return out.str();
}

}  // namespace

ScalePolicy scale_policy(const nlohmann::json& autoscale, double target_ongoing_requests) {
  ScalePolicy policy;
  if (autoscale.is_object()) {
    policy.autoscale.min_replicas = autoscale.value("min_replicas", policy.autoscale.min_replicas);
    policy.autoscale.max_replicas = autoscale.value("max_replicas", policy.autoscale.max_replicas);
    policy.autoscale.traffic_history_seconds =
        autoscale.value("traffic_history_seconds", policy.autoscale.traffic_history_seconds);
    policy.autoscale.scale_up_delay_seconds =
        autoscale.value("scale_up_delay_seconds", policy.autoscale.scale_up_delay_seconds);
    policy.autoscale.scale_down_delay_seconds =
        autoscale.value("scale_down_delay_seconds", policy.autoscale.scale_down_delay_seconds);
    policy.autoscale.scale_to_zero_delay_seconds = autoscale.value(
        "scale_to_zero_delay_seconds", policy.autoscale.scale_to_zero_delay_seconds);
  }
  policy.target_ongoing_requests = std::max(1e-3, target_ongoing_requests);
  return policy;
}

int64_t initial_replicas(const ScalePolicy& policy) {
  return std::min(std::max<int64_t>(policy.autoscale.min_replicas, 1),
                  policy.autoscale.max_replicas);
}

ReplicaScaler::ReplicaScaler(ScalePolicy policy, int64_t replicas, double now)
    : policy_(policy), replicas_(replicas), last_busy_(now) {}

void ReplicaScaler::prune(double now) {
  // The window always keeps at least the latest sample.
  while (samples_.size() > 1 &&
         samples_.front().at < now - seconds(policy_.autoscale.traffic_history_seconds)) {
    samples_.pop_front();
  }
}

void ReplicaScaler::observe(double now, double ongoing) {
  samples_.push_back({now, std::max(0.0, ongoing)});
  if (ongoing > 0) last_busy_ = now;
  prune(now);
}

double ReplicaScaler::mean_ongoing() const {
  if (samples_.empty()) return 0;
  double sum = 0;
  for (const auto& sample : samples_) sum += sample.ongoing;
  return sum / static_cast<double>(samples_.size());
}

int64_t ReplicaScaler::recommendation(double now) {
  prune(now);
  // Idle long enough: zero, whatever the window still remembers of the last busy spell.
  if (policy_.autoscale.min_replicas == 0 && replicas_ > 0 &&
      now - last_busy_ >= seconds(policy_.autoscale.scale_to_zero_delay_seconds)) {
    return 0;
  }
  const double mean = mean_ongoing();
  auto wanted = static_cast<int64_t>(std::ceil(mean / policy_.target_ongoing_requests - 1e-9));
  const bool busy_now = !samples_.empty() && samples_.back().ongoing > 0;
  if (busy_now || mean > 0) wanted = std::max<int64_t>(wanted, 1);
  // Zero only after a long enough idle time; until then one replica stays (a deployment
  // already at zero stays there until a request comes).
  if (wanted == 0 && replicas_ > 0 &&
      now - last_busy_ < seconds(policy_.autoscale.scale_to_zero_delay_seconds)) {
    wanted = 1;
  }
  return std::clamp(wanted, policy_.autoscale.min_replicas, policy_.autoscale.max_replicas);
}

ScaleChange ReplicaScaler::change_to(int64_t to, std::string reason) {
  ScaleChange change{replicas_, to, std::move(reason)};
  replicas_ = to;
  above_since_.reset();
  below_since_.reset();
  return change;
}

std::optional<ScaleChange> ReplicaScaler::demand(double now) {
  last_busy_ = now;
  if (replicas_ > 0 || policy_.autoscale.max_replicas < 1) return std::nullopt;
  return change_to(1, "a request arrived at zero replicas");
}

std::optional<ScaleChange> ReplicaScaler::evaluate(double now) {
  // Bounds first: a changed config applies at once.
  if (replicas_ < policy_.autoscale.min_replicas) {
    return change_to(policy_.autoscale.min_replicas,
                     "min_replicas is " + std::to_string(policy_.autoscale.min_replicas));
  }
  if (replicas_ > policy_.autoscale.max_replicas) {
    return change_to(policy_.autoscale.max_replicas,
                     "max_replicas is " + std::to_string(policy_.autoscale.max_replicas));
  }
  const int64_t wanted = recommendation(now);
  const std::string load = format(mean_ongoing()) + " ongoing requests on average over " +
                           std::to_string(policy_.autoscale.traffic_history_seconds) +
                           " s, target " + format(policy_.target_ongoing_requests) + " per replica";
  if (wanted > replicas_) {
    below_since_.reset();
    if (replicas_ == 0) return change_to(wanted, "requests arrived at zero replicas");
    if (!above_since_) above_since_ = now;
    if (now - *above_since_ >= seconds(policy_.autoscale.scale_up_delay_seconds)) {
      return change_to(wanted, load + "; above " + std::to_string(replicas_) + " replicas for " +
                                   std::to_string(policy_.autoscale.scale_up_delay_seconds) + " s");
    }
    return std::nullopt;
  }
  if (wanted < replicas_) {
    above_since_.reset();
    if (!below_since_) below_since_ = now;
    if (wanted == 0) {
      // The idle time (scale_to_zero_delay_seconds) has passed: recommendation() checked it.
      return change_to(0, "no request for " +
                              std::to_string(policy_.autoscale.scale_to_zero_delay_seconds) + " s");
    }
    if (now - *below_since_ >= seconds(policy_.autoscale.scale_down_delay_seconds)) {
      return change_to(wanted, load + "; below " + std::to_string(replicas_) + " replicas for " +
                                   std::to_string(policy_.autoscale.scale_down_delay_seconds) +
                                   " s");
    }
    return std::nullopt;
  }
  above_since_.reset();
  below_since_.reset();
  return std::nullopt;
}

}  // namespace outpost::control
