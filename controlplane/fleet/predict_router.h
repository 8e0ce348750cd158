// Picks where a prediction goes (docs/scaling.md, "Routing").
//
// Nodepools are tried in the deployment's order (the first is preferred). In a nodepool, the
// candidates are its replicas whose node is connected and reported them ready; of those, the
// node with the fewest calls in flight from this control plane (ties: the fewest the agent
// reported, then the node id). A nodepool is saturated when its calls in flight reach
// max_ongoing_per_replica times its ready replicas; traffic then overflows to the next
// nodepool that is not, and when all are, goes to the least loaded one. A nodepool without a
// ready replica (its nodes down, its replicas failed) is skipped: that is the failover.
//
// With no ready replica anywhere, acquire() holds the request when one is on its way (the
// deployment is at zero replicas and a node can take one: a cold start, which it asks the
// autoscaler for; or a replica is pending, fetching or loading on a connected node). Held
// requests are bounded in count per deployment and in time; wake() retries them when an agent
// reports, and the autoscaler's tick expires them. Otherwise, and past the bounds, it answers
// `unavailable` with the reason (no node enrolled, nodes offline, replicas failed), which the
// API returns as a 503 with Retry-After.
#pragma once

#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include "common/result.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/state/store.h"
#include "tunnel/server.h"

namespace outpost::control {

class Scaling;

struct PredictRoute {
  std::string node_id;
  std::string replica_id;
  std::string nodepool_id;
  std::shared_ptr<tunnel::Connection> connection;
};

struct RouterOptions {
  int64_t max_ongoing_per_replica = 5;  // beyond: the nodepool is saturated, overflow
  std::chrono::milliseconds hold_timeout{60'000};
  size_t max_held_per_deployment = 100;
};

class PredictRouter {
 public:
  using Done = std::function<void(Result<PredictRoute>)>;

  // `scaling` (how many replicas each deployment wants; demand() at a cold start) outlives it.
  PredictRouter(Store& store, Fleet& fleet, Scaling& scaling, boost::asio::any_io_executor pool,
                RouterOptions options);
  void set_tunnel(std::shared_ptr<tunnel::TunnelServer> tunnel) { tunnel_ = std::move(tunnel); }

  // A ready replica's route, now, or why there is none; never holds the request and never asks
  // for a cold start. Nodes in `avoid` are not chosen (a retry after a node failed). It reads
  // the assignments from the store's memory (from SQLite only the first time after they
  // changed), so the event loop may call it.
  Result<PredictRoute> choose(const Deployment& deployment,
                              const std::set<std::string>& avoid = {});

  // choose(), or hold the request while a replica starts (see above). `done` runs once, on the
  // pool. `wanted`, when given, tells whether the caller still waits: a held request whose
  // caller gave up (the client hung up; call wake() then) is dropped with `cancelled` at the
  // next retry. Blocking: call it from the pool.
  void acquire(const Deployment& deployment, std::set<std::string> avoid, Done done,
               std::function<bool()> wanted = nullptr);

  // A replica may have become ready: retry the held requests (posted to the pool).
  void wake();
  // Answers the held requests past their deadline. Blocking.
  void expire_held();
  size_t held(const std::string& user_id, const std::string& deployment_id) const;

  // Counts a call to the route as in flight until the returned guard is released.
  std::shared_ptr<void> track(const Deployment& deployment, const PredictRoute& route);

 private:
  struct Choice {
    std::optional<PredictRoute> route;
    bool coming = false;  // a replica is on its way: holding is worth it
    bool at_zero = false;
    std::string why;
  };
  struct Waiter {
    Deployment deployment;
    std::set<std::string> avoid;
    Done done;
    std::function<bool()> wanted;
    std::chrono::steady_clock::time_point deadline;
  };
  Choice consider(const Deployment& deployment, const std::set<std::string>& avoid);
  void retry_held(bool expire);

  Store& store_;
  Fleet& fleet_;
  Scaling& scaling_;
  boost::asio::any_io_executor pool_;
  const RouterOptions options_;
  std::shared_ptr<tunnel::TunnelServer> tunnel_;

  mutable std::mutex mutex_;
  std::list<Waiter> waiters_;
  bool retry_posted_ = false;
};

}  // namespace outpost::control
