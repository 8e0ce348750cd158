#include "controlplane/api/api.h"

#include <optional>
#include <vector>

#include <boost/asio/post.hpp>

#include "common/log.h"
#include "controlplane/api/api_handlers.h"
#include "controlplane/resources/document.h"

namespace outpost::control {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

enum class Scope { kNone, kRead, kWrite, kPredict, kAdmin };

using SyncHandler = Result<Reply> (*)(ApiServices&, const Call&);
using AsyncHandler = void (*)(ApiServices&, const Call&, const std::shared_ptr<HttpExchange>&);

struct Route {
  const char* method;
  const char* pattern;
  Scope scope;
  SyncHandler sync = nullptr;
  AsyncHandler async = nullptr;
};

const std::vector<Route>& routes() {
  static const std::vector<Route> routes = {
      {"GET", "/v2/users", Scope::kAdmin, list_users},
      {"POST", "/v2/users", Scope::kAdmin, create_user},
      {"GET", "/v2/users/{user}", Scope::kRead, get_user},
      {"GET", "/v2/users/{user}/keys", Scope::kRead, list_keys},
      {"POST", "/v2/users/{user}/keys", Scope::kWrite, create_key},
      {"DELETE", "/v2/users/{user}/keys/{key}", Scope::kWrite, delete_key},
      {"GET", "/v2/users/{user}/compute_clusters", Scope::kRead, list_clusters},
      {"POST", "/v2/users/{user}/compute_clusters", Scope::kWrite, create_cluster},
      {"GET", "/v2/users/{user}/compute_clusters/{cc}", Scope::kRead, get_cluster},
      {"DELETE", "/v2/users/{user}/compute_clusters/{cc}", Scope::kWrite, delete_cluster},
      {"GET", "/v2/users/{user}/nodepools", Scope::kRead, list_nodepools},
      {"GET", "/v2/users/{user}/compute_clusters/{cc}/nodepools", Scope::kRead, list_nodepools},
      {"POST", "/v2/users/{user}/compute_clusters/{cc}/nodepools", Scope::kWrite, create_nodepool},
      {"GET", "/v2/users/{user}/compute_clusters/{cc}/nodepools/{np}", Scope::kRead, get_nodepool},
      {"DELETE", "/v2/users/{user}/compute_clusters/{cc}/nodepools/{np}", Scope::kWrite,
       delete_nodepool},
      {"POST", "/v2/users/{user}/compute_clusters/{cc}/nodepools/{np}/join_tokens", Scope::kWrite,
       create_join_token},
      {"GET", "/v2/users/{user}/compute_clusters/{cc}/nodepools/{np}/nodes", Scope::kRead,
       list_nodes},
      {"GET", "/v2/users/{user}/compute_clusters/{cc}/nodepools/{np}/nodes/{node}", Scope::kRead,
       get_node},
      {"DELETE", "/v2/users/{user}/compute_clusters/{cc}/nodepools/{np}/nodes/{node}",
       Scope::kWrite, delete_node},
      {"GET", "/v2/users/{user}/deployments", Scope::kRead, list_deployments},
      {"POST", "/v2/users/{user}/deployments", Scope::kWrite, create_deployment},
      {"GET", "/v2/users/{user}/deployments/{dep}", Scope::kRead, get_deployment},
      {"DELETE", "/v2/users/{user}/deployments/{dep}", Scope::kWrite, delete_deployment},
      {"GET", "/v2/users/{user}/models", Scope::kRead, list_models},
      {"POST", "/v2/users/{user}/models", Scope::kWrite, create_model},
      {"GET", "/v2/users/{user}/models/{model}", Scope::kRead, get_model},
      {"DELETE", "/v2/users/{user}/models/{model}", Scope::kWrite, delete_model},
      {"GET", "/v2/users/{user}/models/{model}/versions", Scope::kRead, list_versions},
      {"POST", "/v2/users/{user}/models/{model}/versions", Scope::kWrite, upload_version},
      {"GET", "/v2/users/{user}/models/{model}/versions/{version}", Scope::kRead, get_version},
      {"POST", "/v2/users/{user}/models/{model}/outputs", Scope::kPredict, nullptr, predict_unary},
      {"POST", "/v2/users/{user}/models/{model}/versions/{version}/outputs", Scope::kPredict,
       nullptr, predict_unary},
      {"POST", "/v2/users/{user}/models/{model}/outputs/generate", Scope::kPredict, nullptr,
       predict_generate},
      {"POST", "/v2/users/{user}/models/{model}/versions/{version}/outputs/generate",
       Scope::kPredict, nullptr, predict_generate},
  };
  return routes;
}

// The WebSocket routes: the stream predict shape.
const std::vector<const char*>& websocket_patterns() {
  static const std::vector<const char*> patterns = {
      "/v2/users/{user}/models/{model}/outputs/stream",
      "/v2/users/{user}/models/{model}/versions/{version}/outputs/stream",
  };
  return patterns;
}

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
  }
  return out;
}

bool match(std::string_view pattern, std::string_view path,
           std::map<std::string, std::string>& params) {
  const auto want = segments(pattern);
  const auto have = segments(path);
  if (want.size() != have.size()) return false;
  std::map<std::string, std::string> captured;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i].size() > 2 && want[i].front() == '{') {
      captured[std::string(want[i].substr(1, want[i].size() - 2))] = std::string(have[i]);
    } else if (want[i] != have[i]) {
      return false;
    }
  }
  params = std::move(captured);
  return true;
}

const char* scope_name(Scope scope) {
  switch (scope) {
    case Scope::kRead:
      return "read";
    case Scope::kWrite:
    case Scope::kAdmin:
      return "write";
    case Scope::kPredict:
      return "predict";
    case Scope::kNone:
      break;
  }
  return "";
}

// Authenticates, checks the scope and the {user} of the path. Fills call.
Status admit(ApiServices& s, const HttpRequest& request, Scope scope, Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(call.principal,
                           s.auth->authenticate(request.header("authorization"), request.remote));
  call.request = &request;
  if (scope != Scope::kNone && call.principal.scopes.count(scope_name(scope)) == 0) {
    return Error(
        ErrorCode::kPermissionDenied,
        std::string("this personal access token lacks the '") + scope_name(scope) + "' scope");
  }
  if (scope == Scope::kAdmin && !call.principal.is_admin) {
    return Error(ErrorCode::kPermissionDenied, "only an administrator may do this");
  }
  const auto user = call.params.find("user");
  if (user != call.params.end()) {
    if (user->second == "me") user->second = call.principal.user_id;
    if (user->second != call.principal.user_id) {
      // Another user's resources do not exist for this caller: the same answer as a missing one.
      return Error(ErrorCode::kNotFound, "user '" + user->second + "' not found");
    }
  }
  return {};
}

// The largest body a predict may have to start on the event loop rather than the pool.
constexpr size_t kEventLoopBodyBytes = 64 * 1024;

bool is_upload_route(const HttpRequest& head) {
  std::map<std::string, std::string> params;
  return head.method == "POST" &&
         match("/v2/users/{user}/models/{model}/versions", head.path, params);
}

bool is_health_check(const HttpRequest& request) {
  return request.path == "/v2/healthz" && (request.method == "GET" || request.method == "HEAD");
}

// The route of `request`, its path parameters ({user}, {model}, ...) put in call.params;
// not_found for an unknown path,
// invalid_argument for a method the path does not take.
Result<const Route*> find_route(const HttpRequest& request, Call& call) {
  bool path_known = false;
  for (const Route& route : routes()) {
    if (!match(route.pattern, request.path, call.params)) continue;
    path_known = true;
    if (request.method == route.method) return &route;
  }
  if (path_known) {
    return invalid_argument("method " + request.method + " is not allowed on " + request.path);
  }
  return Error(ErrorCode::kNotFound,
               "no endpoint " + request.method + " " + request.path + " (docs/api.md lists them)");
}

// The answer to a request whose credential or scope does not admit it; nothing when admitted
// (call filled).
std::optional<HttpResponse> refusal(ApiServices& s, const HttpRequest& request, Scope scope,
                                    Call& call) {
  const Status admitted = admit(s, request, scope, call);
  if (admitted.ok()) return std::nullopt;
  const Error& error = admitted.error();
  if (error.code() == ErrorCode::kUnauthenticated) {
    LOG_NOTICE("control.auth_refused",
               request.request_id << " from " << request.remote << ": " << error.message());
  }
  int64_t retry_after = 0;
  if (error.code() == ErrorCode::kResourceExhausted) {
    retry_after = s.auth->throttled_for(request.remote);
    LOG_DEBUG("control.auth_throttled_request",
              request.request_id << " from " << request.remote << ": " << error.message());
  }
  return error_response(error, request.request_id, retry_after);
}

// Runs `request`'s route (found by find_route into `call`). The head was admitted before the body
// was read; the check again here costs no KDF (the credential is among the verified ones) and
// sees a key deleted while the body was arriving.
void handle(ApiServices& s, const std::shared_ptr<HttpExchange>& exchange, Call call,
            const Result<const Route*>& route) {
  const HttpRequest& request = exchange->request();
  const std::string& request_id = request.request_id;
  if (is_health_check(request)) {
    return exchange->respond(json_response(Reply{200, {{"healthy", true}}}, request_id));
  }
  if (!route.ok()) return exchange->respond(error_response(route.error(), request_id));
  if (auto refused = refusal(s, request, route.value()->scope, call)) {
    return exchange->respond(std::move(*refused));
  }
  if (route.value()->async != nullptr) return route.value()->async(s, call, exchange);
  Result<Reply> reply = route.value()->sync(s, call);
  if (!reply.ok()) {
    if (reply.error().code() == ErrorCode::kInternal) {
      LOG_ERROR("control.internal_error", request_id << ": " << reply.error().message());
    }
    return exchange->respond(error_response(reply.error(), request_id));
  }
  exchange->respond(json_response(std::move(reply).value(), request_id));
}

}  // namespace

HttpHandlers Api::handlers() {
  std::weak_ptr<Api> weak = shared_from_this();
  HttpHandlers handlers;
  handlers.admit_head = [weak](const HttpRequest& head, std::function<void(HeadDecision)> done) {
    auto self = weak.lock();
    if (!self) return done(HeadDecision{HttpResponse{503, "application/json", "", {}}, {}});
    self->admit_head(head, std::move(done));
  };
  handlers.on_request = [weak](const std::shared_ptr<HttpExchange>& exchange) {
    if (auto self = weak.lock()) self->dispatch(exchange);
  };
  handlers.on_websocket = [weak](std::shared_ptr<WebSocketUpgrade> upgrade) {
    auto self = weak.lock();
    if (!self) return;
    asio::post(self->services_.pool,
               [self, upgrade = std::move(upgrade)] { self->handle_websocket(upgrade); });
  };
  return handlers;
}

BodyPolicy Api::body_policy(const HttpRequest& head) const {
  if (is_upload_route(head)) return BodyPolicy{services_.config->max_model_bytes, true};
  return BodyPolicy{services_.config->max_request_bytes, false};
}

void Api::admit_head(const HttpRequest& head, std::function<void(HeadDecision)> done) {
  if (is_health_check(head)) return done(HeadDecision{std::nullopt, body_policy(head)});
  Call call;
  const auto route = find_route(head, call);
  if (!route.ok()) return done(HeadDecision{error_response(route.error(), head.request_id), {}});
  const Scope scope = route.value()->scope;
  auto decide = [self = shared_from_this(), head, scope, done = std::move(done)]() mutable {
    Call call;
    (void)find_route(head, call);
    done(HeadDecision{refusal(self->services_, head, scope, call), self->body_policy(head)});
  };
  // A credential verified before is decided here, on the connection's own thread; any other
  // may cost a KDF, which runs on the blocking pool.
  if (services_.auth->is_verified(head.header("authorization"))) return decide();
  asio::post(services_.pool, std::move(decide));
}

void Api::dispatch(const std::shared_ptr<HttpExchange>& exchange) {
  const HttpRequest& request = exchange->request();
  Call call;
  auto route = find_route(request, call);
  // A predict starts here when nothing in it may block: the credential was verified at the head
  // (no KDF), the store answers its reads from memory, and a small body parses in microseconds.
  // It saves the call two thread hand-offs.
  if (route.ok() && route.value()->async != nullptr && request.body.size() <= kEventLoopBodyBytes &&
      services_.auth->is_verified(request.header("authorization"))) {
    return handle(services_, exchange, std::move(call), route);
  }
  asio::post(services_.pool, [self = shared_from_this(), exchange, call = std::move(call),
                              route = std::move(route)]() mutable {
    handle(self->services_, exchange, std::move(call), route);
  });
}

void Api::handle_websocket(const std::shared_ptr<WebSocketUpgrade>& upgrade) {
  const HttpRequest& request = upgrade->request();
  for (const char* pattern : websocket_patterns()) {
    Call call;
    if (!match(pattern, request.path, call.params)) continue;
    if (auto refused = refusal(services_, request, Scope::kPredict, call)) {
      return upgrade->reject(std::move(*refused));
    }
    return predict_stream(services_, call, upgrade);
  }
  upgrade->reject(error_response(
      Error(ErrorCode::kNotFound, "no WebSocket endpoint at " + request.path), request.request_id));
}

int http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
      return 409;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kResourceExhausted:
      return 429;  // a capacity limit; a body over a size limit is answered 413 where it is read
    case ErrorCode::kFailedPrecondition:
      return 409;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kDeadlineExceeded:
      return 504;
    case ErrorCode::kCancelled:
      return 499;
    case ErrorCode::kDataLoss:
      return 502;
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

std::string error_json(const Error& error, const std::string& request_id) {
  return json{{"status",
               {{"code", std::string(error_code_name(error.code()))},
                {"description", error.message()},
                {"req_id", request_id}}}}
      .dump();
}

HttpResponse error_response(const Error& error, const std::string& request_id,
                            int64_t retry_after_seconds) {
  HttpResponse response;
  response.status = http_status(error.code());
  response.body = error_json(error, request_id) + "\n";
  if (error.code() == ErrorCode::kUnauthenticated) {
    response.headers.emplace_back("WWW-Authenticate", "Key");
  }
  // Both are temporary by definition: a limit of the moment (429), a replica starting or a node
  // reconnecting (503). Clients that honour Retry-After come back when it is worth it.
  if (retry_after_seconds <= 0 && response.status == 429) retry_after_seconds = 1;
  if (retry_after_seconds <= 0 && response.status == 503) retry_after_seconds = 2;
  if (retry_after_seconds > 0) {
    response.headers.emplace_back("Retry-After", std::to_string(retry_after_seconds));
  }
  return response;
}

HttpResponse json_response(Reply reply, const std::string& request_id) {
  HttpResponse response;
  response.status = reply.status;
  reply.body["status"] = {{"code", "ok"}, {"description", "Ok"}, {"req_id", request_id}};
  response.body = reply.body.dump() + "\n";
  return response;
}

Result<json> body_object(const Call& call) {
  return parse_body_object(call.request->body, call.request->header("content-type"));
}

}  // namespace outpost::control
