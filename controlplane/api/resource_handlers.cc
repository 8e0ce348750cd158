// Users, keys, compute clusters, nodepools, enrollment tokens, nodes and deployments.
#include <algorithm>
#include <set>

#include "common/json_reader.h"
#include "controlplane/api/api_handlers.h"
#include "controlplane/auth/secrets.h"
#include "controlplane/resources/resource_config.h"
#include "controlplane/scaling/scaling.h"
#include "controlplane/state/ids.h"

namespace outpost::control {

using nlohmann::json;

namespace {

constexpr int64_t kDefaultJoinTokenSeconds = 3600;
constexpr int64_t kMaxJoinTokenSeconds = 7 * 24 * 3600;

json with_times(json doc, int64_t created_at) {
  doc["created_at"] = format_time(created_at);
  return doc;
}

json user_view(const User& user) {
  return {
      {"id", user.id}, {"is_admin", user.is_admin}, {"created_at", format_time(user.created_at)}};
}

json key_view(const ApiKey& key) {
  json out{{"id", key.id},
           {"description", key.description},
           {"scopes", key.scopes},
           {"created_at", format_time(key.created_at)}};
  if (key.expires_at.has_value()) out["expires_at"] = format_time(*key.expires_at);
  return out;
}

json nodepool_view(ApiServices& s, const Nodepool& pool) {
  json out = with_times(pool.doc, pool.created_at);
  auto nodes = s.store->list_nodes(pool.user_id, pool.id);
  int64_t online = 0;
  if (nodes.ok()) {
    for (const auto& node : *nodes) online += s.agents->online(node.id) ? 1 : 0;
    out["node_count"] = nodes->size();
  }
  out["online_node_count"] = online;
  return out;
}

json node_view(ApiServices& s, const Node& node) {
  const bool online = s.agents->online(node.id);
  json replicas = node.replicas.is_array() ? node.replicas : json::array();
  if (online) {
    replicas = json::array();
    for (const auto& state : s.fleet->replicas_of(node.id)) {
      replicas.push_back({{"replica_id", state.replica_id},
                          {"state", state.state},
                          {"message", state.message},
                          {"device", state.device},
                          {"ongoing_requests", state.ongoing_requests},
                          {"memory_bytes", state.memory_bytes}});
    }
  }
  json out{{"id", node.id},
           {"name", node.name},
           {"compute_cluster_id", node.compute_cluster_id},
           {"nodepool_id", node.nodepool_id},
           {"online", online},
           {"inventory", node.inventory},
           {"desired_version", node.desired_version},
           {"applied_version", std::max(node.applied_version, s.fleet->acknowledged(node.id))},
           {"replicas", replicas},
           {"created_at", format_time(node.created_at)}};
  if (node.last_seen_at.has_value()) out["last_seen_at"] = format_time(*node.last_seen_at);
  return out;
}

// The deployment as configured, plus what the autoscaler wants, where its replicas are, how
// many are live, the recent scaling events and why replicas are not placed.
json deployment_view(ApiServices& s, const Deployment& deployment) {
  json out = with_times(deployment.doc, deployment.created_at);
  const json scaling = s.scaling->status(deployment);
  auto replicas = s.store->list_replicas(deployment.user_id);
  json pools = json::array();
  json replica_views = json::array();
  int64_t desired_total = 0;
  int64_t assigned_total = 0;
  int64_t live_total = 0;
  int64_t failed_total = 0;
  std::string failure;  // the first failed replica's reason
  for (const auto& pool_status : scaling["nodepools"]) {
    const std::string pool = pool_status["nodepool_id"].get<std::string>();
    const int64_t desired = pool_status["desired_replicas"].get<int64_t>();
    int64_t assigned = 0;
    int64_t live = 0;
    if (replicas.ok()) {
      for (const auto& replica : *replicas) {
        if (replica.deployment_id != deployment.id || replica.nodepool_id != pool) continue;
        ++assigned;
        const bool online = s.agents->online(replica.node_id);
        ReplicaState state = s.fleet->replica(replica.node_id, replica.id);
        if (!online) state.state = "offline";
        if (state.state.empty()) state.state = "pending";
        if (state.state == "ready") ++live;
        if (state.state == "failed") {
          ++failed_total;
          if (failure.empty()) failure = state.message;
        }
        replica_views.push_back({{"replica_id", replica.id},
                                 {"nodepool_id", pool},
                                 {"node_id", replica.node_id},
                                 {"state", state.state},
                                 {"message", state.message},
                                 {"ongoing_requests", state.ongoing_requests},
                                 {"memory_bytes", state.memory_bytes}});
      }
    }
    desired_total += desired;
    assigned_total += assigned;
    live_total += live;
    json pool_view = pool_status;
    pool_view["assigned_replicas"] = assigned;
    pool_view["live_replicas"] = live;
    pools.push_back(std::move(pool_view));
  }
  out["deployment_metrics"] = {{"desired_replicas", desired_total},
                               {"assigned_replicas", assigned_total},
                               {"live_replicas", live_total},
                               {"nodepools", pools}};
  out["replicas"] = replica_views;
  out["scaling_events"] = scaling["scaling_events"];
  out["unplaced"] = scaling["unplaced"];
  if (live_total > 0) {
    out["state"] = "ready";
  } else if (assigned_total > 0 && failed_total == assigned_total) {
    // Every replica failed to start: say why here, not only on a replica row.
    out["state"] = "failed";
    out["message"] = failure;
  } else if (assigned_total > 0) {
    out["state"] = "pending";
  } else {
    out["state"] = desired_total == 0 ? "scaled_to_zero" : "unplaced";
  }
  return out;
}

Result<int64_t> ttl_from(const ObjectReader& reader, std::string_view key, int64_t fallback,
                         int64_t max) {
  OUTPOST_ASSIGN_OR_RETURN(auto ttl, reader.optional_int(key, 1, max));
  return ttl.value_or(fallback);
}

}  // namespace

json cluster_view(const ComputeCluster& cluster) {
  return with_times(cluster.doc, cluster.created_at);
}

// --- users and keys ---

Result<Reply> get_user(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto user, s.store->get_user(call.param("user")));
  return Reply{200, {{"user", user_view(user)}}};
}

Result<Reply> list_users(ApiServices& s, const Call&) {
  OUTPOST_ASSIGN_OR_RETURN(auto users, s.store->list_users());
  json out = json::array();
  for (const auto& user : users) out.push_back(user_view(user));
  return Reply{200, {{"users", out}}};
}

Result<Reply> create_user(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto body, body_object(call));
  OUTPOST_ASSIGN_OR_RETURN(auto root, ObjectReader::create(body, ""));
  OUTPOST_RETURN_IF_ERROR(root.only({"user"}));
  OUTPOST_ASSIGN_OR_RETURN(auto user, root.required_object("user"));
  OUTPOST_RETURN_IF_ERROR(user.only({"id", "is_admin"}));
  OUTPOST_ASSIGN_OR_RETURN(auto id, user.required_string("id"));
  OUTPOST_RETURN_IF_ERROR(check_id(id, "user.id"));
  if (id == "me") return field_error("user.id", "'me' is reserved: it names the caller");
  OUTPOST_ASSIGN_OR_RETURN(auto is_admin, user.optional_bool("is_admin"));
  OUTPOST_RETURN_IF_ERROR(s.store->create_user(id, is_admin.value_or(false)));
  OUTPOST_ASSIGN_OR_RETURN(auto key,
                           s.auth->create_key(id, all_scopes(), "initial key", std::nullopt));
  OUTPOST_ASSIGN_OR_RETURN(auto created, s.store->get_user(id));
  json key_json = key_view(key.key);
  key_json["token"] = key.token;
  return Reply{201, {{"user", user_view(created)}, {"key", key_json}}};
}

Result<Reply> create_key(ApiServices& s, const Call& call) {
  json body = json::object();
  if (!call.request->body.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(body, body_object(call));
  }
  OUTPOST_ASSIGN_OR_RETURN(auto root, ObjectReader::create(body, ""));
  OUTPOST_RETURN_IF_ERROR(root.only({"key"}));
  OUTPOST_ASSIGN_OR_RETURN(auto key, root.object("key"));
  OUTPOST_RETURN_IF_ERROR(key.only({"description", "scopes", "expires_in_seconds"}));
  OUTPOST_ASSIGN_OR_RETURN(auto description, key.optional_string("description"));
  if (description.has_value() && description->size() > 256) {
    return field_error("key.description", "is longer than 256 characters");
  }
  std::set<std::string> scopes = call.principal.scopes;
  if (const json* list = key.get("scopes")) {
    if (!list->is_array() || list->empty()) {
      return field_error("key.scopes", "must be a non-empty list of read, write, predict");
    }
    scopes.clear();
    for (const auto& scope : *list) {
      if (!scope.is_string() || all_scopes().count(scope.get<std::string>()) == 0) {
        return field_error("key.scopes",
                           "holds " + scope.dump() + "; scopes are read, write, predict");
      }
      if (call.principal.scopes.count(scope.get<std::string>()) == 0) {
        return Error(ErrorCode::kPermissionDenied, "key.scopes: a key cannot grant '" +
                                                       scope.get<std::string>() +
                                                       "', which the key making it lacks");
      }
      scopes.insert(scope.get<std::string>());
    }
  }
  OUTPOST_ASSIGN_OR_RETURN(auto ttl,
                           key.optional_int("expires_in_seconds", 1, int64_t{10} * 365 * 86400));
  std::optional<int64_t> expires_at;
  if (ttl.has_value()) expires_at = s.clock->now_seconds() + *ttl;
  OUTPOST_ASSIGN_OR_RETURN(
      auto created, s.auth->create_key(call.user(), scopes, description.value_or(""), expires_at));
  json out = key_view(created.key);
  out["token"] = created.token;
  return Reply{201, {{"key", out}}};
}

Result<Reply> list_keys(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto keys, s.store->list_keys(call.user()));
  json out = json::array();
  for (const auto& key : keys) out.push_back(key_view(key));
  return Reply{200, {{"keys", out}}};
}

Result<Reply> delete_key(ApiServices& s, const Call& call) {
  OUTPOST_RETURN_IF_ERROR(s.store->delete_key(call.user(), call.param("key")));
  s.auth->forget_key(call.param("key"));
  return Reply{200, json::object()};
}

// --- compute clusters ---

Result<Reply> create_cluster(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto body, body_object(call));
  OUTPOST_ASSIGN_OR_RETURN(auto spec, parse_compute_cluster(body, call.request->query_value("id")));
  ComputeCluster cluster{call.user(), spec.id, spec.doc, s.clock->now_seconds()};
  OUTPOST_RETURN_IF_ERROR(s.store->create_cluster(cluster));
  return Reply{201, {{"compute_cluster", cluster_view(cluster)}}};
}

Result<Reply> list_clusters(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto clusters, s.store->list_clusters(call.user()));
  json out = json::array();
  for (const auto& cluster : clusters) out.push_back(cluster_view(cluster));
  return Reply{200, {{"compute_clusters", out}}};
}

Result<Reply> get_cluster(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto cluster, s.store->get_cluster(call.user(), call.param("cc")));
  return Reply{200, {{"compute_cluster", cluster_view(cluster)}}};
}

Result<Reply> delete_cluster(ApiServices& s, const Call& call) {
  OUTPOST_RETURN_IF_ERROR(s.store->delete_cluster(call.user(), call.param("cc")));
  return Reply{200, json::object()};
}

// --- nodepools ---

Result<Reply> create_nodepool(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto cluster, s.store->get_cluster(call.user(), call.param("cc")));
  OUTPOST_ASSIGN_OR_RETURN(auto body, body_object(call));
  OUTPOST_ASSIGN_OR_RETURN(auto spec,
                           parse_nodepool(body, cluster.id, call.request->query_value("id")));
  Nodepool pool{call.user(),        spec.id,  cluster.id,
                spec.max_instances, spec.doc, s.clock->now_seconds()};
  OUTPOST_RETURN_IF_ERROR(s.store->create_nodepool(pool));
  return Reply{201, {{"nodepool", nodepool_view(s, pool)}}};
}

Result<Reply> list_nodepools(ApiServices& s, const Call& call) {
  std::string cluster_id;
  if (call.params.count("cc") != 0) {
    OUTPOST_ASSIGN_OR_RETURN(auto cluster, s.store->get_cluster(call.user(), call.param("cc")));
    cluster_id = cluster.id;
  }
  OUTPOST_ASSIGN_OR_RETURN(auto pools, s.store->list_nodepools(call.user(), cluster_id));
  json out = json::array();
  for (const auto& pool : pools) out.push_back(nodepool_view(s, pool));
  return Reply{200, {{"nodepools", out}}};
}

namespace {

Result<Nodepool> nodepool_in_path(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto pool, s.store->get_nodepool(call.user(), call.param("np")));
  if (pool.compute_cluster_id != call.param("cc")) {
    return Error(ErrorCode::kNotFound, "nodepool '" + call.param("np") +
                                           "' not found in compute cluster '" + call.param("cc") +
                                           "'");
  }
  return pool;
}

Result<Node> node_in_path(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto pool, nodepool_in_path(s, call));
  auto node = s.store->get_node(call.param("node"));
  if (!node.ok() || node->user_id != call.user() || node->nodepool_id != pool.id) {
    return Error(ErrorCode::kNotFound, "node '" + call.param("node") + "' not found");
  }
  return node;
}

}  // namespace

Result<Reply> get_nodepool(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto pool, nodepool_in_path(s, call));
  return Reply{200, {{"nodepool", nodepool_view(s, pool)}}};
}

Result<Reply> delete_nodepool(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto nodes, s.store->delete_nodepool(call.user(), call.param("cc"), call.param("np")));
  for (const auto& node : nodes) s.agents->revoke_node(node);
  return Reply{200, json::object()};
}

// --- enrollment and nodes ---

Result<Reply> create_join_token(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto pool, nodepool_in_path(s, call));
  json body = json::object();
  if (!call.request->body.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(body, body_object(call));
  }
  OUTPOST_ASSIGN_OR_RETURN(auto root, ObjectReader::create(body, ""));
  OUTPOST_RETURN_IF_ERROR(root.only({"ttl_seconds"}));
  OUTPOST_ASSIGN_OR_RETURN(
      auto ttl, ttl_from(root, "ttl_seconds", kDefaultJoinTokenSeconds, kMaxJoinTokenSeconds));
  JoinToken token;
  token.id = random_hex(8);
  token.user_id = call.user();
  token.compute_cluster_id = pool.compute_cluster_id;
  token.nodepool_id = pool.id;
  token.created_at = s.clock->now_seconds();
  token.expires_at = token.created_at + ttl;
  const std::string secret = random_hex(32);
  token.secret_hash = hash_secret(secret);
  OUTPOST_RETURN_IF_ERROR(s.store->create_join_token(token));
  return Reply{201,
               {{"join_token",
                 {{"id", token.id},
                  {"token", make_token(kJoinTokenPrefix, token.id, secret)},
                  {"compute_cluster_id", token.compute_cluster_id},
                  {"nodepool_id", token.nodepool_id},
                  {"expires_at", format_time(token.expires_at)},
                  {"tunnel_path", "/v1/tunnel"}}}}};
}

Result<Reply> list_nodes(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto pool, nodepool_in_path(s, call));
  OUTPOST_ASSIGN_OR_RETURN(auto nodes, s.store->list_nodes(call.user(), pool.id));
  json out = json::array();
  for (const auto& node : nodes) out.push_back(node_view(s, node));
  return Reply{200, {{"nodes", out}}};
}

Result<Reply> get_node(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto node, node_in_path(s, call));
  return Reply{200, {{"node", node_view(s, node)}}};
}

Result<Reply> delete_node(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto node, node_in_path(s, call));
  OUTPOST_RETURN_IF_ERROR(s.store->delete_node(call.user(), node.id));
  s.agents->revoke_node(node.id);
  s.agents->reschedule(call.user());
  return Reply{200, json::object()};
}

// --- deployments ---

Result<Reply> create_deployment(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto body, body_object(call));
  // `outpost deployment create NP_ID DEP_ID` names the nodepool on the command line: it fills an
  // absent nodepools list, and must be in a present one.
  const std::string pool_from_command = call.request->query_value("nodepool_id");
  if (!pool_from_command.empty() && body.contains("deployment") && body["deployment"].is_object() &&
      !body["deployment"].contains("nodepools")) {
    body["deployment"]["nodepools"] = json::array({{{"id", pool_from_command}}});
  }
  OUTPOST_ASSIGN_OR_RETURN(auto spec, parse_deployment(body, call.request->query_value("id")));
  if (!pool_from_command.empty() &&
      std::none_of(spec.nodepools.begin(), spec.nodepools.end(),
                   [&](const NodepoolRef& ref) { return ref.id == pool_from_command; })) {
    return field_error("deployment.nodepools", "does not list nodepool '" + pool_from_command +
                                                   "', given on the command line");
  }
  if (!spec.model_user_id.empty() && spec.model_user_id != call.user()) {
    return field_error("deployment.worker.model.id",
                       "model '" + spec.model_id +
                           "' not found (models of other users cannot "
                           "be deployed)");
  }
  auto model = s.store->get_model(call.user(), spec.model_id);
  if (!model.ok()) {
    return field_error("deployment.worker.model.id",
                       "model '" + spec.model_id +
                           "' not found (upload it with `outpost model "
                           "upload`)");
  }
  ModelVersion version;
  if (!spec.model_version_id.empty()) {
    auto found = s.store->get_version(call.user(), spec.model_id, spec.model_version_id);
    if (!found.ok()) {
      return field_error(
          "deployment.worker.model.model_version.id",
          "version '" + spec.model_version_id + "' of model '" + spec.model_id + "' not found");
    }
    version = std::move(found).value();
  } else {
    OUTPOST_ASSIGN_OR_RETURN(auto latest, s.store->latest_version(call.user(), spec.model_id));
    if (!latest.has_value()) {
      return field_error("deployment.worker.model",
                         "model '" + spec.model_id + "' has no version yet; upload one first");
    }
    version = std::move(*latest);
  }
  json pools = json::array();
  Deployment deployment;
  for (size_t i = 0; i < spec.nodepools.size(); ++i) {
    const auto& ref = spec.nodepools[i];
    const std::string field = "deployment.nodepools[" + std::to_string(i) + "]";
    auto pool = s.store->get_nodepool(call.user(), ref.id);
    if (!pool.ok()) return field_error(field + ".id", "nodepool '" + ref.id + "' not found");
    if (!ref.compute_cluster_id.empty() && ref.compute_cluster_id != pool->compute_cluster_id) {
      return field_error(field + ".compute_cluster.id",
                         "nodepool '" + ref.id + "' is in compute cluster '" +
                             pool->compute_cluster_id + "', not '" + ref.compute_cluster_id + "'");
    }
    pools.push_back({{"id", pool->id}, {"compute_cluster", {{"id", pool->compute_cluster_id}}}});
    deployment.nodepool_ids.push_back(pool->id);
  }
  deployment.user_id = call.user();
  deployment.id = spec.id;
  deployment.model_id = spec.model_id;
  deployment.model_version_id = version.id;
  deployment.doc = spec.doc;
  deployment.doc["worker"] = {
      {"model",
       {{"id", spec.model_id}, {"user_id", call.user()}, {"model_version", {{"id", version.id}}}}}};
  deployment.doc["nodepools"] = pools;
  deployment.created_at = s.clock->now_seconds();
  OUTPOST_RETURN_IF_ERROR(s.store->create_deployment(deployment));
  s.agents->reschedule(call.user());
  return Reply{201, {{"deployment", deployment_view(s, deployment)}}};
}

Result<Reply> list_deployments(ApiServices& s, const Call& call) {
  const std::string pool = call.request->query_value("nodepool_id");
  if (!pool.empty()) OUTPOST_RETURN_IF_ERROR(s.store->get_nodepool(call.user(), pool).status());
  OUTPOST_ASSIGN_OR_RETURN(auto deployments, s.store->list_deployments(call.user(), pool));
  json out = json::array();
  for (const auto& deployment : deployments) out.push_back(deployment_view(s, deployment));
  return Reply{200, {{"deployments", out}}};
}

Result<Reply> get_deployment(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto deployment,
                           s.store->get_deployment(call.user(), call.param("dep")));
  return Reply{200, {{"deployment", deployment_view(s, deployment)}}};
}

Result<Reply> delete_deployment(ApiServices& s, const Call& call) {
  OUTPOST_RETURN_IF_ERROR(s.store->delete_deployment(call.user(), call.param("dep")));
  s.agents->reschedule(call.user());
  return Reply{200, json::object()};
}

}  // namespace outpost::control
