// How many replicas one deployment wants on one nodepool, decided from its traffic. Pure logic:
// the caller feeds it observations and the time (seconds on a monotonic clock), so tests drive
// it with an injected clock. docs/scaling.md explains every knob.
//
// The signal is Ray Serve's: ongoing requests (queued or held + running) per replica. Each
// observation is one sample; the recommendation is
//   ceil(mean of the samples of the last traffic_history_seconds / target_ongoing_requests),
// at least 1 while any request is ongoing, clamped to [min_replicas, max_replicas].
// - Up: once the recommendation has stayed above the current count for scale_up_delay_seconds.
//   At zero replicas a request scales to one at once (demand()): nobody waits for a delay.
// - Down: once it has stayed below for scale_down_delay_seconds.
// - To zero: only with min_replicas 0, and only after scale_to_zero_delay_seconds without any
//   ongoing request (it is at least scale_down_delay_seconds; the parser checks that).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "controlplane/resources/resource_config.h"

namespace outpost::control {

// A deployment's autoscale_config (resource_config.h: Clarifai's fields and defaults) and the
// control plane's target load per replica.
struct ScalePolicy {
  AutoscaleConfig autoscale;
  double target_ongoing_requests = 2;
};

// The policy of a deployment's normalized `autoscale_config` (and the control plane's target).
ScalePolicy scale_policy(const nlohmann::json& autoscale_config, double target_ongoing_requests);

// The replicas a new deployment starts with: min_replicas, but at least one (so that its first
// call is warm), at most max_replicas.
int64_t initial_replicas(const ScalePolicy& policy);

struct ScaleChange {
  int64_t from = 0;
  int64_t to = 0;
  std::string reason;
};

class ReplicaScaler {
 public:
  ReplicaScaler(ScalePolicy policy, int64_t replicas, double now);

  // A changed autoscale_config: the count is clamped into the new bounds at the next evaluate().
  void set_policy(const ScalePolicy& policy) { policy_ = policy; }
  const ScalePolicy& policy() const { return policy_; }
  int64_t replicas() const { return replicas_; }

  // One sample of the ongoing requests (queued or held + running) at `now`.
  void observe(double now, double ongoing);
  // A request arrived: at zero replicas this scales to one at once.
  std::optional<ScaleChange> demand(double now);
  // Decides at `now`; returns the change it made, if any.
  std::optional<ScaleChange> evaluate(double now);

  // The recommendation at `now` before delays (for status and tests).
  int64_t recommendation(double now);
  double mean_ongoing() const;

 private:
  void prune(double now);
  ScaleChange change_to(int64_t to, std::string reason);

  ScalePolicy policy_;
  int64_t replicas_;
  struct Sample {
    double at;
    double ongoing;
  };
  std::deque<Sample> samples_;
  double last_busy_;  // the last time a request was ongoing (or the start)
  std::optional<double> above_since_;
  std::optional<double> below_since_;
};

}  // namespace outpost::control
