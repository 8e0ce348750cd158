// What the REST API's handlers work with: the control plane's parts, handed over once by
// ControlPlane (api.h routes to the handlers; api_handlers.h declares them).
#pragma once

#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>

#include "controlplane/api/http_types.h"
#include "controlplane/api/url_fetcher.h"
#include "controlplane/auth/authenticator.h"
#include "controlplane/control_config.h"
#include "controlplane/fleet/agent_service.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/fleet/predict_router.h"
#include "controlplane/metrics.h"
#include "controlplane/resources/model_inspector.h"
#include "controlplane/scaling/scaling.h"
#include "controlplane/state/artifact_store.h"
#include "controlplane/state/store.h"
#include "controlplane/state/wall_clock.h"

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

}  // namespace outpost::control
