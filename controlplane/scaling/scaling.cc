#include "controlplane/scaling/scaling.h"

#include "common/log.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/metrics.h"

namespace outpost::control {

using nlohmann::json;

namespace {

json autoscale_of(const Deployment& deployment) {
  return deployment.doc.value("autoscale_config", json::object());
}

}  // namespace

Scaling::Scaling(Store& store, Fleet& fleet, const WallClock& clock, ScalingOptions options,
                 ScalingHost& host, ControlMetrics& metrics)
    : store_(store),
      fleet_(fleet),
      clock_(clock),
      options_(options),
      host_(host),
      metrics_(metrics) {}

double Scaling::seconds_now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

ReplicaScaler& Scaling::scaler_locked(const Key& key, const Deployment& deployment, bool* fresh) {
  const ScalePolicy policy =
      scale_policy(autoscale_of(deployment), options_.target_ongoing_requests);
  auto it = scalers_.find(key);
  if (it == scalers_.end()) {
    // The stored count wins (a restart keeps the scale). Read only here, when a scaler is made.
    std::optional<int64_t> known;
    if (auto scales = store_.list_scales(); scales.ok()) {
      for (const auto& scale : *scales) {
        if (Key{scale.user_id, scale.deployment_id, scale.nodepool_id} == key) {
          known = scale.replicas;
        }
      }
    }
    it = scalers_
             .emplace(key, ReplicaScaler(policy, known.value_or(initial_replicas(policy)),
                                         seconds_now()))
             .first;
    if (!known) persist(key, it->second.replicas());
    if (fresh != nullptr) *fresh = !known;
  }
  it->second.set_policy(policy);
  return it->second;
}

void Scaling::persist(const Key& key, int64_t replicas) {
  const Status stored =
      store_.set_scale({key.user_id, key.deployment_id, key.nodepool_id, replicas});
  // A deployment deleted meanwhile has no row to refer to; the next tick forgets it.
  if (!stored.ok()) {
    LOG_INFO("control.scale_not_stored",
             key.deployment_id << " on " << key.nodepool_id << ": " << stored.error().message());
  }
}

void Scaling::record_locked(const Key& key, const ScaleChange& change) {
  LOG_NOTICE("control.scaled", "deployment " << key.deployment_id << " of " << key.user_id
                                             << " on nodepool " << key.nodepool_id << ": "
                                             << change.from << " -> " << change.to << " replicas ("
                                             << change.reason << ")");
  auto& events = events_[{key.user_id, key.deployment_id}];
  events.push_back({clock_.now_seconds(), key.nodepool_id, change.from, change.to, change.reason});
  while (events.size() > options_.events_kept) events.pop_front();
  persist(key, change.to);
  metrics_.scaled(key.user_id, key.deployment_id, change.to > change.from);
}

std::map<std::string, int64_t> Scaling::replicas_for(const Deployment& deployment) {
  std::lock_guard lock(mutex_);
  std::map<std::string, int64_t> out;
  for (const auto& pool : deployment.nodepool_ids) {
    out[pool] = scaler_locked({deployment.user_id, deployment.id, pool}, deployment).replicas();
  }
  return out;
}

bool Scaling::usable(const std::string& node_id, bool online) {
  std::lock_guard lock(mutex_);
  if (online) {
    offline_since_.erase(node_id);
    return true;
  }
  const double now = seconds_now();
  const double since = offline_since_.emplace(node_id, now).first->second;
  return now - since < options_.node_offline_grace_seconds;
}

void Scaling::set_unplaced(const std::string& user_id,
                           const std::vector<UnplacedReplicas>& unplaced) {
  std::lock_guard lock(mutex_);
  for (auto it = unplaced_.begin(); it != unplaced_.end();) {
    it = it->first.first == user_id ? unplaced_.erase(it) : std::next(it);
  }
  for (const auto& entry : unplaced) {
    unplaced_[{user_id, entry.deployment_id}].push_back(entry);
    LOG_WARNING("control.replica_unplaced", entry.count << " replica(s) of deployment "
                                                        << entry.deployment_id << " of " << user_id
                                                        << " fit nowhere: " << entry.reason);
  }
}

bool Scaling::demand(const Deployment& deployment) {
  {
    std::lock_guard lock(mutex_);
    for (const auto& pool : deployment.nodepool_ids) {
      if (scaler_locked({deployment.user_id, deployment.id, pool}, deployment).replicas() > 0) {
        return false;  // replicas are wanted already: they are starting, or the nodes are away
      }
    }
  }
  // Every nodepool is at zero: the first one with a node that may take a replica goes to one.
  std::string chosen = deployment.nodepool_ids.empty() ? "" : deployment.nodepool_ids.front();
  for (const auto& pool : deployment.nodepool_ids) {
    auto nodes = store_.list_nodes(deployment.user_id, pool);
    bool any = false;
    if (nodes.ok()) {
      for (const auto& node : *nodes) {
        any = any || usable(node.id, host_.node_online(node.id));
      }
    }
    if (any) {
      chosen = pool;
      break;
    }
  }
  if (chosen.empty()) return false;
  {
    std::lock_guard lock(mutex_);
    const Key key{deployment.user_id, deployment.id, chosen};
    auto change = scaler_locked(key, deployment).demand(seconds_now());
    if (!change) return false;
    record_locked(key, *change);
    cold_pool_[{deployment.user_id, deployment.id}] = chosen;
  }
  metrics_.cold_start(deployment.user_id, deployment.id);
  host_.counts_changed(deployment.user_id);
  return true;
}

void Scaling::tick() {
  auto users = store_.list_users();
  if (!users.ok()) {
    LOG_ERROR("control.scaling_failed", "cannot read the state to autoscale");
    return;
  }
  const double now = seconds_now();
  std::set<std::string> dirty;
  std::set<Key> live;
  std::vector<ControlMetrics::ReplicaCounts> counts;
  for (const auto& user : *users) {
    auto deployments = store_.list_deployments(user.id, "");
    auto nodes = store_.list_nodes(user.id, "");
    auto replicas = store_.list_replicas(user.id);
    if (!deployments.ok() || !nodes.ok() || !replicas.ok()) continue;
    // Nodes that may take replicas; a change moves replicas.
    std::set<std::string> usable_now;
    for (const auto& node : *nodes) {
      if (usable(node.id, host_.node_online(node.id))) {
        usable_now.insert(node.id);
      }
    }
    std::lock_guard lock(mutex_);
    auto& known = usable_nodes_[user.id];
    if (known != usable_now) {
      known = std::move(usable_now);
      dirty.insert(user.id);
    }
    for (const auto& deployment : *deployments) {
      const auto cold = cold_pool_.find({user.id, deployment.id});
      const std::string held_pool =
          cold != cold_pool_.end()
              ? cold->second
              : (deployment.nodepool_ids.empty() ? "" : deployment.nodepool_ids.front());
      const size_t held = host_.held_requests(user.id, deployment.id);
      for (const auto& pool : deployment.nodepool_ids) {
        const Key key{user.id, deployment.id, pool};
        live.insert(key);
        bool fresh = false;  // a deployment seen for the first time: place its replicas
        ReplicaScaler& scaler = scaler_locked(key, deployment, &fresh);
        if (fresh) dirty.insert(user.id);
        const double ongoing =
            static_cast<double>(fleet_.ongoing(load_key(user.id, deployment.id, pool)) +
                                (pool == held_pool ? held : 0));
        scaler.observe(now, ongoing);
        if (auto change = scaler.evaluate(now)) {
          record_locked(key, *change);
          dirty.insert(user.id);
        }
        ControlMetrics::ReplicaCounts count{user.id, deployment.id, pool, scaler.replicas(), 0,
                                            0,       ongoing};
        for (const auto& replica : *replicas) {
          if (replica.deployment_id != deployment.id || replica.nodepool_id != pool) continue;
          ++count.assigned;
          if (fleet_.replica(replica.node_id, replica.id).state == "ready" &&
              host_.node_online(replica.node_id)) {
            ++count.live;
          }
        }
        counts.push_back(std::move(count));
      }
    }
  }
  {
    std::lock_guard lock(mutex_);
    for (auto it = scalers_.begin(); it != scalers_.end();) {
      if (live.count(it->first) > 0) {
        ++it;
        continue;
      }
      events_.erase({it->first.user_id, it->first.deployment_id});
      cold_pool_.erase({it->first.user_id, it->first.deployment_id});
      it = scalers_.erase(it);
    }
  }
  for (const auto& user : dirty) {
    host_.counts_changed(user);
  }
  host_.tick_passed();
  metrics_.set_replicas(counts);
}

json Scaling::status(const Deployment& deployment) {
  std::lock_guard lock(mutex_);
  json pools = json::array();
  const double now = seconds_now();
  for (const auto& pool : deployment.nodepool_ids) {
    ReplicaScaler& scaler = scaler_locked({deployment.user_id, deployment.id, pool}, deployment);
    pools.push_back({{"nodepool_id", pool},
                     {"desired_replicas", scaler.replicas()},
                     {"recommended_replicas", scaler.recommendation(now)},
                     {"mean_ongoing_requests", scaler.mean_ongoing()}});
  }
  json events = json::array();
  if (const auto it = events_.find({deployment.user_id, deployment.id}); it != events_.end()) {
    for (auto event = it->second.rbegin(); event != it->second.rend(); ++event) {
      events.push_back({{"time", format_time(event->at)},
                        {"nodepool_id", event->nodepool_id},
                        {"from_replicas", event->from},
                        {"to_replicas", event->to},
                        {"reason", event->reason}});
    }
  }
  json unplaced = json::array();
  if (const auto it = unplaced_.find({deployment.user_id, deployment.id}); it != unplaced_.end()) {
    for (const auto& entry : it->second) {
      unplaced.push_back({{"nodepool_id", entry.nodepool_id},
                          {"replicas", entry.count},
                          {"reason", entry.reason}});
    }
  }
  return {{"nodepools", pools}, {"scaling_events", events}, {"unplaced", unplaced}};
}

}  // namespace outpost::control
