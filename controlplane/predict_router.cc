#include "controlplane/predict_router.h"

#include <set>
#include <tuple>

namespace outpost::control {

Result<PredictRoute> PredictRouter::choose(const Deployment& deployment) {
  OUTPOST_ASSIGN_OR_RETURN(auto replicas, store_.list_replicas(deployment.user_id));
  std::optional<PredictRoute> best;
  std::tuple<int64_t, int64_t, std::string> best_score;
  size_t assigned = 0;
  std::set<std::string> offline;
  std::string not_ready;
  for (const auto& replica : replicas) {
    if (replica.deployment_id != deployment.id) continue;
    ++assigned;
    std::shared_ptr<tunnel::Connection> connection;
    if (tunnel_) {
      size_t fewest = SIZE_MAX;
      for (auto& candidate : tunnel_->connections_of(replica.node_id)) {
        if (candidate->is_going_away() || candidate->stream_count() >= fewest) continue;
        fewest = candidate->stream_count();
        connection = candidate;
      }
    }
    if (!connection) {
      offline.insert(replica.node_id);
      continue;
    }
    const ReplicaState state = fleet_.replica(replica.node_id, replica.id);
    if (state.state != "ready") {
      if (not_ready.empty()) {
        not_ready = "replica " + replica.id + " on " + replica.node_id + " is " +
                    (state.state.empty() ? std::string("not reported yet") : state.state) +
                    (state.message.empty() ? "" : " (" + state.message + ")");
      }
      continue;
    }
    auto score = std::make_tuple(fleet_.outstanding(replica.node_id), state.ongoing_requests,
                                 replica.node_id);
    if (!best.has_value() || score < best_score) {
      best = PredictRoute{replica.node_id, replica.id, connection};
      best_score = std::move(score);
    }
  }
  if (best.has_value()) return *best;
  std::string why;
  if (assigned == 0) {
    std::string pools;
    for (const auto& pool : deployment.nodepool_ids) pools += (pools.empty() ? "" : ", ") + pool;
    why = "no replica is placed: no enrolled node of nodepool " + pools +
          " has room (enroll a node with `outpost nodepool join-token`)";
  } else if (!not_ready.empty()) {
    why = not_ready;
  } else {
    std::string nodes;
    for (const auto& node : offline) nodes += (nodes.empty() ? "" : ", ") + node;
    why = "the nodes holding its replicas are not connected (" + nodes + ")";
  }
  return unavailable("deployment '" + deployment.id + "' has no ready replica: " + why);
}

std::shared_ptr<void> PredictRouter::track(const std::string& node_id) {
  fleet_.begin_call(node_id);
  Fleet* fleet = &fleet_;
  return std::shared_ptr<void>(nullptr, [fleet, node_id](void*) { fleet->end_call(node_id); });
}

}  // namespace outpost::control
