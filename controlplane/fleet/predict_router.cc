#include "controlplane/fleet/predict_router.h"

#include <tuple>
#include <utility>

#include <boost/asio/post.hpp>

#include "controlplane/scaling/scaling.h"

namespace outpost::control {

PredictRouter::PredictRouter(Store& store, Fleet& fleet, Scaling& scaling,
                             boost::asio::any_io_executor pool, RouterOptions options)
    : store_(store), fleet_(fleet), scaling_(scaling), pool_(std::move(pool)), options_(options) {}

PredictRouter::Choice PredictRouter::consider(const Deployment& deployment,
                                              const std::set<std::string>& avoid) {
  Choice out;
  auto replicas = store_.list_replicas(deployment.user_id);
  if (!replicas.ok()) {
    out.why = "the assignments cannot be read: " + replicas.error().message();
    return out;
  }
  size_t assigned = 0;
  std::set<std::string> offline;
  std::string not_ready;
  std::optional<PredictRoute> overflow;  // the least saturated nodepool's best, when all are
  double overflow_load = 0;
  for (const auto& pool : deployment.nodepool_ids) {
    std::optional<PredictRoute> best;
    std::tuple<bool, int64_t, int64_t, std::string> best_score;
    int64_t ready = 0;
    for (const auto& replica : *replicas) {
      if (replica.deployment_id != deployment.id || replica.nodepool_id != pool) continue;
      ++assigned;
      std::shared_ptr<tunnel::Connection> connection;
      if (tunnel_) {
        // The fewest streams, on a connection that answers when the node has one: one that
        // went silent (its path cut, not yet declared dead) takes calls only if all did. A
        // node leaves routing when its last connection is declared dead (dead_after).
        std::pair<bool, size_t> chosen{true, SIZE_MAX};  // (suspect, streams)
        for (auto& candidate : tunnel_->connections_of(replica.node_id)) {
          if (candidate->is_going_away()) continue;
          const std::pair<bool, size_t> score{!candidate->is_responsive(),
                                              candidate->stream_count()};
          if (connection && score >= chosen) continue;
          chosen = score;
          connection = candidate;
        }
      }
      if (!connection) {
        offline.insert(replica.node_id);
        // A node that went away moments ago (its agent restarting, its tunnel reconnecting) is
        // waited for within node_offline_grace_seconds, as at a cold start; after that the
        // scheduler moves its replicas.
        if (scaling_.usable(replica.node_id, false)) out.coming = true;
        continue;
      }
      const ReplicaState state = fleet_.replica(replica.node_id, replica.id);
      if (state.state != "ready") {
        // "stopping" for a replica the scheduler assigns is the node's report of the replica's
        // previous life (scaled to zero a moment ago, the same id assigned again): the agent
        // loads it anew, so the call waits as at a cold start.
        const bool starting = state.state.empty() || state.state == "pending" ||
                              state.state == "fetching" || state.state == "loading" ||
                              state.state == "stopping";
        out.coming = out.coming || starting;
        if (not_ready.empty()) {
          not_ready = "replica " + replica.id + " on " + replica.node_id + " is " +
                      (state.state.empty() ? std::string("not reported yet") : state.state) +
                      (state.message.empty() ? "" : " (" + state.message + ")");
        }
        continue;
      }
      if (avoid.count(replica.node_id) > 0) continue;
      ++ready;
      // A node gone silent is chosen last: it may be cut off and about to be declared dead.
      auto score =
          std::make_tuple(!connection->is_responsive(), fleet_.outstanding(replica.node_id),
                          state.ongoing_requests, replica.node_id);
      if (!best.has_value() || score < best_score) {
        best = PredictRoute{replica.node_id, replica.id, pool, connection};
        best_score = std::move(score);
      }
    }
    if (!best.has_value()) continue;
    const double load =
        static_cast<double>(fleet_.ongoing(load_key(deployment.user_id, deployment.id, pool))) /
        static_cast<double>(ready * std::max<int64_t>(1, options_.max_ongoing_per_replica));
    if (load < 1.0) {
      out.route = std::move(best);
      return out;
    }
    if (!overflow.has_value() || load < overflow_load) {
      overflow = std::move(best);
      overflow_load = load;
    }
  }
  if (overflow.has_value()) {
    out.route = std::move(overflow);
    return out;
  }
  if (assigned == 0) {
    int64_t desired = 0;
    for (const auto& [pool, count] : scaling_.replicas_for(deployment)) desired += count;
    std::string pools;
    for (const auto& pool : deployment.nodepool_ids) pools += (pools.empty() ? "" : ", ") + pool;
    if (desired == 0) {
      out.at_zero = true;
      out.coming = true;
      out.why = "it is scaled to zero and no node of nodepool " + pools +
                " can take a replica (enroll one with `outpost nodepool join-token`)";
    } else {
      out.why = "no replica is placed: no enrolled node of nodepool " + pools +
                " has room (see `outpost deployment get`)";
    }
  } else if (!not_ready.empty()) {
    out.why = not_ready;
  } else if (!offline.empty()) {
    std::string nodes;
    for (const auto& node : offline) nodes += (nodes.empty() ? "" : ", ") + node;
    out.why = "the nodes holding its replicas are not connected (" + nodes + ")";
  } else {
    out.why = "its nodes failed this call already";
  }
  return out;
}

Result<PredictRoute> PredictRouter::choose(const Deployment& deployment,
                                           const std::set<std::string>& avoid) {
  Choice choice = consider(deployment, avoid);
  if (choice.route.has_value()) return *choice.route;
  return unavailable("deployment '" + deployment.id + "' has no ready replica: " + choice.why);
}

void PredictRouter::acquire(const Deployment& deployment, std::set<std::string> avoid, Done done,
                            std::function<bool()> wanted) {
  Choice choice = consider(deployment, avoid);
  if (!choice.route.has_value() && choice.at_zero) {
    // A cold start, or another request started one meanwhile: either way, look again.
    scaling_.demand(deployment);
    choice = consider(deployment, avoid);
  }
  if (choice.route.has_value()) return done(*choice.route);
  if (!choice.coming || choice.at_zero) {
    return done(
        unavailable("deployment '" + deployment.id + "' has no ready replica: " + choice.why));
  }
  {
    std::lock_guard lock(mutex_);
    size_t waiting = 0;
    for (const auto& waiter : waiters_) {
      waiting +=
          waiter.deployment.user_id == deployment.user_id && waiter.deployment.id == deployment.id;
    }
    if (waiting < options_.max_held_per_deployment) {
      waiters_.push_back({deployment, std::move(avoid), std::move(done), std::move(wanted),
                          std::chrono::steady_clock::now() + options_.hold_timeout});
      return;
    }
  }
  done(unavailable("deployment '" + deployment.id + "' is starting and " +
                   std::to_string(options_.max_held_per_deployment) +
                   " requests already wait for it; retry later"));
}

void PredictRouter::wake() {
  {
    std::lock_guard lock(mutex_);
    if (waiters_.empty() || retry_posted_) return;
    retry_posted_ = true;
  }
  boost::asio::post(pool_, [this] { retry_held(false); });
}

void PredictRouter::expire_held() { retry_held(true); }

void PredictRouter::retry_held(bool expire) {
  std::list<Waiter> mine;
  {
    std::lock_guard lock(mutex_);
    if (!expire) retry_posted_ = false;
    mine.swap(waiters_);
  }
  const auto now = std::chrono::steady_clock::now();
  std::list<Waiter> keep;
  for (auto& waiter : mine) {
    if (waiter.wanted && !waiter.wanted()) {
      waiter.done(Error(ErrorCode::kCancelled, "the caller gave up while the call was held"));
      continue;
    }
    Choice choice = consider(waiter.deployment, waiter.avoid);
    if (choice.route.has_value()) {
      waiter.done(*choice.route);
    } else if (!choice.coming) {
      // Nothing is starting any more (the replica failed, the node went away): say why now.
      waiter.done(unavailable("deployment '" + waiter.deployment.id +
                              "' has no ready replica: " + choice.why));
    } else if (expire && now >= waiter.deadline) {
      waiter.done(
          unavailable("deployment '" + waiter.deployment.id + "' got no ready replica within " +
                      std::to_string(options_.hold_timeout.count() / 1000) + " s: " + choice.why));
    } else {
      keep.push_back(std::move(waiter));
    }
  }
  std::lock_guard lock(mutex_);
  waiters_.splice(waiters_.begin(), keep);
}

size_t PredictRouter::held(const std::string& user_id, const std::string& deployment_id) const {
  std::lock_guard lock(mutex_);
  size_t count = 0;
  for (const auto& waiter : waiters_) {
    count += waiter.deployment.user_id == user_id && waiter.deployment.id == deployment_id;
  }
  return count;
}

std::shared_ptr<void> PredictRouter::track(const Deployment& deployment,
                                           const PredictRoute& route) {
  const std::string key = load_key(deployment.user_id, deployment.id, route.nodepool_id);
  fleet_.begin_call(route.node_id, key);
  Fleet* fleet = &fleet_;
  return std::shared_ptr<void>(
      nullptr, [fleet, node = route.node_id, key](void*) { fleet->end_call(node, key); });
}

}  // namespace outpost::control
