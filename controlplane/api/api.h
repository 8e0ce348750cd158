// The REST API under /v2 (docs/api.md lists every endpoint). Api routes each request, checks the
// personal access token and its scope, enforces tenancy (a path naming another user's resources
// answers 404, exactly as a missing resource does), and runs the handler on the blocking pool;
// a predict with a small body and a credential already verified starts on the event loop
// instead (its handler reads only memory, and moves to the pool to wait for a replica).
// Errors come back as {"status": {"code": "<name>", "description": "...", "req_id": "..."}}
// with the HTTP status of their code.
#pragma once

#include <functional>
#include <memory>

#include "controlplane/api/api_services.h"
#include "controlplane/api/http_types.h"

namespace outpost::control {

class Api : public std::enable_shared_from_this<Api> {
 public:
  explicit Api(ApiServices services) : services_(std::move(services)) {}
  HttpHandlers handlers();

 private:
  // Route, credential and scope from the head alone, before the body is read.
  void admit_head(const HttpRequest& head, std::function<void(HeadDecision)> done);
  // On the event loop: finds the request's route and runs its handler here or on the pool.
  void dispatch(const std::shared_ptr<HttpExchange>& exchange);
  void handle_websocket(const std::shared_ptr<WebSocketUpgrade>& upgrade);
  BodyPolicy body_policy(const HttpRequest& head) const;

  ApiServices services_;
};

}  // namespace outpost::control
