// Internal to the API: what a handler receives and returns, the handlers of each resource
// group (resource_handlers.cc, model_handlers.cc, predict_handlers.cc) and the JSON views of
// stored records. Not a public header of the control plane.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "controlplane/api/api_services.h"
#include "controlplane/api/http_types.h"
#include "controlplane/auth/authenticator.h"

namespace outpost::control {

// One authenticated request.
struct Call {
  const HttpRequest* request = nullptr;
  Principal principal;
  std::map<std::string, std::string> params;  // from the route's {placeholders}

  const std::string& user() const { return principal.user_id; }
  const std::string& param(const std::string& name) const { return params.at(name); }
};

struct Reply {
  int status = 200;
  nlohmann::json body = nlohmann::json::object();  // "status" is added on the way out
};

int http_status(ErrorCode code);
// {"status": {"code": ..., "description": ..., "req_id": ...}}
std::string error_json(const Error& error, const std::string& request_id);
// A 429 or 503 carries Retry-After: `retry_after_seconds` when given, else 1 s (429) or 2 s (503).
HttpResponse error_response(const Error& error, const std::string& request_id,
                            int64_t retry_after_seconds = 0);
HttpResponse json_response(Reply reply, const std::string& request_id);
// The request body as a JSON object (or YAML for the YAML content types).
Result<nlohmann::json> body_object(const Call& call);

// Views.
nlohmann::json cluster_view(const ComputeCluster& cluster);
nlohmann::json version_view(const ModelVersion& version);

// Handlers: users, keys, clusters, nodepools, enrollment, nodes, deployments.
Result<Reply> get_user(ApiServices& s, const Call& call);
Result<Reply> list_users(ApiServices& s, const Call& call);
Result<Reply> create_user(ApiServices& s, const Call& call);
Result<Reply> create_key(ApiServices& s, const Call& call);
Result<Reply> list_keys(ApiServices& s, const Call& call);
Result<Reply> delete_key(ApiServices& s, const Call& call);
Result<Reply> create_cluster(ApiServices& s, const Call& call);
Result<Reply> list_clusters(ApiServices& s, const Call& call);
Result<Reply> get_cluster(ApiServices& s, const Call& call);
Result<Reply> delete_cluster(ApiServices& s, const Call& call);
Result<Reply> create_nodepool(ApiServices& s, const Call& call);
Result<Reply> list_nodepools(ApiServices& s, const Call& call);
Result<Reply> get_nodepool(ApiServices& s, const Call& call);
Result<Reply> delete_nodepool(ApiServices& s, const Call& call);
Result<Reply> create_join_token(ApiServices& s, const Call& call);
Result<Reply> list_nodes(ApiServices& s, const Call& call);
Result<Reply> get_node(ApiServices& s, const Call& call);
Result<Reply> delete_node(ApiServices& s, const Call& call);
Result<Reply> create_deployment(ApiServices& s, const Call& call);
Result<Reply> list_deployments(ApiServices& s, const Call& call);
Result<Reply> get_deployment(ApiServices& s, const Call& call);
Result<Reply> delete_deployment(ApiServices& s, const Call& call);

// Models and versions.
Result<Reply> create_model(ApiServices& s, const Call& call);
Result<Reply> list_models(ApiServices& s, const Call& call);
Result<Reply> get_model(ApiServices& s, const Call& call);
Result<Reply> delete_model(ApiServices& s, const Call& call);
Result<Reply> upload_version(ApiServices& s, const Call& call);
Result<Reply> list_versions(ApiServices& s, const Call& call);
Result<Reply> get_version(ApiServices& s, const Call& call);

// Predict: these answer through the exchange (or the WebSocket) themselves.
void predict_unary(ApiServices& s, const Call& call, const std::shared_ptr<HttpExchange>& exchange);
void predict_generate(ApiServices& s, const Call& call,
                      const std::shared_ptr<HttpExchange>& exchange);
void predict_stream(ApiServices& s, const Call& call,
                    const std::shared_ptr<WebSocketUpgrade>& upgrade);

}  // namespace outpost::control
