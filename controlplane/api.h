// The REST API under /v2 (docs/api.md lists every endpoint). Api routes each request, checks the
// personal access token and its scope, enforces tenancy (a path naming another user's resources
// answers 404, exactly as a missing resource does), and runs the handler on the blocking pool.
// Errors come back as {"status": {"code": "<name>", "description": "...", "req_id": "..."}}
// with the HTTP status of their code.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>

#include "controlplane/agent_service.h"
#include "controlplane/artifact_store.h"
#include "controlplane/authenticator.h"
#include "controlplane/control_config.h"
#include "controlplane/fleet.h"
#include "controlplane/http_types.h"
#include "controlplane/metrics.h"
#include "controlplane/model_inspector.h"
#include "controlplane/predict_router.h"
#include "controlplane/scaling.h"
#include "controlplane/store.h"
#include "controlplane/url_fetcher.h"
#include "controlplane/wall_clock.h"

namespace outpost::control {

struct ApiServices {
  const ControlConfig* config = nullptr;
  Store* store = nullptr;
  Authenticator* auth = nullptr;
  Fleet* fleet = nullptr;
  std::shared_ptr<AgentService> agents;
  PredictRouter* router = nullptr;
  Scaling* scaling = nullptr;
  ControlMetrics* metrics = nullptr;
  const ArtifactStore* artifacts = nullptr;
  const ModelInspector* inspector = nullptr;
  UrlFetcher* fetcher = nullptr;
  const WallClock* clock = nullptr;
  boost::asio::io_context* io = nullptr;  // timers
  boost::asio::any_io_executor pool;      // blocking work
  std::string temp_dir;                   // uploads and package extraction
};

class Api : public std::enable_shared_from_this<Api> {
 public:
  explicit Api(ApiServices services) : services_(std::move(services)) {}
  HttpHandlers handlers();

 private:
  // Route, credential and scope from the head alone, before the body is read.
  void admit_head(const HttpRequest& head, std::function<void(HeadDecision)> done);
  void handle(const std::shared_ptr<HttpExchange>& exchange);
  void handle_websocket(const std::shared_ptr<WebSocketUpgrade>& upgrade);
  BodyPolicy body_policy(const HttpRequest& head) const;

  ApiServices services_;
};

}  // namespace outpost::control
