#include "controlplane/api.h"

#include <optional>
#include <vector>

#include <boost/asio/post.hpp>

#include "common/log.h"
#include "controlplane/api_handlers.h"
#include "controlplane/document.h"

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

// A 429 with Retry-After while the client's address is over its budget of refused credentials
// (auth_throttle.h), decided before any KDF runs; nothing when it may try.
std::optional<HttpResponse> throttled(ApiServices& s, const HttpRequest& request) {
  const int64_t wait = s.auth->retry_after(request.header("authorization"), request.remote);
  if (wait <= 0) return std::nullopt;
  LOG_DEBUG("control.auth_throttled_request",
            request.request_id << " from " << request.remote << ": throttled for " << wait << " s");
  HttpResponse response =
      error_response(Error(ErrorCode::kResourceExhausted,
                           "too many refused credentials from this address; try again in " +
                               std::to_string(wait) + " s"),
                     request.request_id);
  response.status = 429;
  response.headers.emplace_back("Retry-After", std::to_string(wait));
  return response;
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

bool is_upload_route(const HttpRequest& head) {
  std::map<std::string, std::string> params;
  return head.method == "POST" &&
         match("/v2/users/{user}/models/{model}/versions", head.path, params);
}

}  // namespace

HttpHandlers Api::handlers() {
  std::weak_ptr<Api> weak = shared_from_this();
  HttpHandlers handlers;
  handlers.body_policy = [weak](const HttpRequest& head) {
    auto self = weak.lock();
    return self ? self->body_policy(head) : BodyPolicy{};
  };
  handlers.on_request = [weak](std::shared_ptr<HttpExchange> exchange) {
    auto self = weak.lock();
    if (!self) return;
    asio::post(self->services_.pool,
               [self, exchange = std::move(exchange)] { self->handle(exchange); });
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

void Api::handle(const std::shared_ptr<HttpExchange>& exchange) {
  const HttpRequest& request = exchange->request();
  const std::string& request_id = request.request_id;
  if (request.path == "/v2/healthz" && (request.method == "GET" || request.method == "HEAD")) {
    return exchange->respond(json_response(Reply{200, {{"healthy", true}}}, request_id));
  }
  bool path_known = false;
  for (const Route& route : routes()) {
    Call call;
    if (!match(route.pattern, request.path, call.params)) continue;
    path_known = true;
    if (request.method != route.method) continue;
    if (auto refusal = throttled(services_, request)) return exchange->respond(std::move(*refusal));
    const Status admitted = admit(services_, request, route.scope, call);
    if (!admitted.ok()) {
      if (admitted.error().code() == ErrorCode::kUnauthenticated) {
        LOG_NOTICE("control.auth_refused",
                   request_id << " from " << request.remote << ": " << admitted.error().message());
      }
      return exchange->respond(error_response(admitted.error(), request_id));
    }
    if (route.async != nullptr) return route.async(services_, call, exchange);
    Result<Reply> reply = route.sync(services_, call);
    if (!reply.ok()) {
      if (reply.error().code() == ErrorCode::kInternal) {
        LOG_ERROR("control.internal_error", request_id << ": " << reply.error().message());
      }
      return exchange->respond(error_response(reply.error(), request_id));
    }
    return exchange->respond(json_response(std::move(reply).value(), request_id));
  }
  if (path_known) {
    return exchange->respond(
        error_response(Error(ErrorCode::kInvalidArgument,
                             "method " + request.method + " is not allowed on " + request.path),
                       request_id));
  }
  exchange->respond(error_response(
      Error(ErrorCode::kNotFound,
            "no endpoint " + request.method + " " + request.path + " (docs/api.md lists them)"),
      request_id));
}

void Api::handle_websocket(const std::shared_ptr<WebSocketUpgrade>& upgrade) {
  const HttpRequest& request = upgrade->request();
  for (const char* pattern : websocket_patterns()) {
    Call call;
    if (!match(pattern, request.path, call.params)) continue;
    if (auto refusal = throttled(services_, request)) return upgrade->reject(std::move(*refusal));
    const Status admitted = admit(services_, request, Scope::kPredict, call);
    if (!admitted.ok()) {
      return upgrade->reject(error_response(admitted.error(), request.request_id));
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
      return 413;
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

HttpResponse error_response(const Error& error, const std::string& request_id) {
  HttpResponse response;
  response.status = http_status(error.code());
  response.body = error_json(error, request_id) + "\n";
  if (error.code() == ErrorCode::kUnauthenticated) {
    response.headers.emplace_back("WWW-Authenticate", "Key");
  }
  // Unavailable is temporary by definition (a replica starting, a node reconnecting).
  if (response.status == 503) response.headers.emplace_back("Retry-After", "2");
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
