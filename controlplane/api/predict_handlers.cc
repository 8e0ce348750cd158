// Predict in its three shapes (docs/api.md "Predict"): unary (JSON, or multipart/form-data with
// raw bytes, in; JSON out), generate (server-sent events or JSON lines, one chunk per event,
// flushed), and stream (a WebSocket in both directions). Each resolves its runner selector and
// method, checks the inputs against the method's signature, takes their bytes out of the JSON once
// (protocol::WireValue), fetches inputs given by URL, picks a node (predict_router.h) and relays
// over one tunnel stream (docs/control-protocol.md "predict"). A client that goes away resets
// the stream with `cancel`, which the agent passes down to the worker.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/json_reader.h"
#include "common/log.h"
#include "controlplane/api/api_handlers.h"
#include "controlplane/api/predict_request.h"
#include "controlplane/resources/document.h"
#include "controlplane/state/ids.h"
#include "protocol/control_protocol.h"
#include "protocol/tensor_wire.h"
#include "tunnel/calls.h"

namespace outpost::control {

namespace asio = boost::asio;
using boost::system::error_code;
using nlohmann::json;

namespace {

struct Target {
  Deployment deployment;
  ModelVersion version;
  json method;  // the method's signature
  std::string method_name;
};

std::string describe_methods(const json& methods) {
  std::string out;
  for (const auto& method : methods) {
    out += (out.empty() ? "" : ", ") + method.value("name", std::string("?")) + " (" +
           method.value("kind", std::string("?")) + ")";
  }
  return out;
}

std::string endpoint_for(const std::string& kind) {
  if (kind == "generate") return ".../outputs/generate";
  if (kind == "stream") return ".../outputs/stream (WebSocket)";
  return ".../outputs";
}

Result<Deployment> deployment_from_selector(ApiServices& s, const Call& call, const json& selector,
                                            const std::string& model_id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reader, ObjectReader::create(selector, "runner_selector"));
  OUTPOST_RETURN_IF_ERROR(reader.only({"deployment", "nodepool"}));
  const bool by_deployment = reader.has("deployment");
  const bool by_nodepool = reader.has("nodepool");
  if (by_deployment == by_nodepool) {
    return field_error("runner_selector",
                       "name either a deployment ({\"deployment\": {\"id\": ...}}) or a compute "
                       "cluster and nodepool ({\"nodepool\": {\"id\": ..., \"compute_cluster\": "
                       "{\"id\": ...}}}), not both");
  }
  const auto check_owner = [&call](const ObjectReader& object) -> Status {
    OUTPOST_ASSIGN_OR_RETURN(auto user, object.optional_string("user_id"));
    if (user.has_value() && *user != call.user()) {
      return Error(ErrorCode::kNotFound,
                   object.path_of("user_id") + ": user '" + *user + "' not found");
    }
    return {};
  };
  if (by_deployment) {
    OUTPOST_ASSIGN_OR_RETURN(auto deployment, reader.required_object("deployment"));
    OUTPOST_RETURN_IF_ERROR(deployment.only({"id", "user_id"}));
    OUTPOST_RETURN_IF_ERROR(check_owner(deployment));
    OUTPOST_ASSIGN_OR_RETURN(auto id, deployment.required_string("id"));
    OUTPOST_RETURN_IF_ERROR(check_id(id, deployment.path_of("id")));
    auto found = s.store->get_deployment(call.user(), id);
    if (!found.ok()) return Error(ErrorCode::kNotFound, "deployment '" + id + "' not found");
    if (found->model_id != model_id) {
      return field_error(
          deployment.path_of("id"),
          "deployment '" + id + "' serves model '" + found->model_id + "', not '" + model_id + "'");
    }
    return found;
  }
  OUTPOST_ASSIGN_OR_RETURN(auto pool, reader.required_object("nodepool"));
  OUTPOST_RETURN_IF_ERROR(pool.only({"id", "compute_cluster", "user_id"}));
  OUTPOST_RETURN_IF_ERROR(check_owner(pool));
  OUTPOST_ASSIGN_OR_RETURN(auto pool_id, pool.required_string("id"));
  OUTPOST_RETURN_IF_ERROR(check_id(pool_id, pool.path_of("id")));
  OUTPOST_ASSIGN_OR_RETURN(auto cluster, pool.required_object("compute_cluster"));
  OUTPOST_RETURN_IF_ERROR(cluster.only({"id", "user_id"}));
  OUTPOST_RETURN_IF_ERROR(check_owner(cluster));
  OUTPOST_ASSIGN_OR_RETURN(auto cluster_id, cluster.required_string("id"));
  auto nodepool = s.store->get_nodepool(call.user(), pool_id);
  if (!nodepool.ok() || nodepool->compute_cluster_id != cluster_id) {
    return Error(ErrorCode::kNotFound,
                 "nodepool '" + pool_id + "' not found in compute cluster '" + cluster_id + "'");
  }
  auto found = s.store->deployment_on_nodepool(call.user(), pool_id, model_id);
  if (found.ok() || found.error().code() != ErrorCode::kNotFound) return found;
  return unavailable("no deployment of model '" + model_id + "' on nodepool '" + pool_id +
                     "'; create one with `outpost deployment create`");
}

// Resolves the selector, version and method. `kind` is what the endpoint serves.
Result<Target> resolve(ApiServices& s, const Call& call, const json& selector,
                       std::string method_name, const std::string& kind) {
  const std::string& model_id = call.param("model");
  OUTPOST_RETURN_IF_ERROR(s.store->get_model(call.user(), model_id).status());
  Target target;
  OUTPOST_ASSIGN_OR_RETURN(target.deployment,
                           deployment_from_selector(s, call, selector, model_id));
  const auto version_param = call.params.find("version");
  if (version_param != call.params.end() &&
      version_param->second != target.deployment.model_version_id) {
    return invalid_argument("deployment '" + target.deployment.id + "' runs version " +
                            target.deployment.model_version_id + " of model '" + model_id +
                            "', not " + version_param->second);
  }
  OUTPOST_ASSIGN_OR_RETURN(
      target.version,
      s.store->get_version(call.user(), model_id, target.deployment.model_version_id));
  const json& methods = target.version.methods;
  if (method_name.empty()) {
    // The method named like the shape ("predict", "generate", "stream"), else the only one.
    const std::string preferred = kind == "unary" ? "predict" : kind;
    std::vector<std::string> of_kind;
    for (const auto& method : methods) {
      if (method.value("kind", "") == kind) of_kind.push_back(method.value("name", ""));
    }
    if (std::find(of_kind.begin(), of_kind.end(), preferred) != of_kind.end()) {
      method_name = preferred;
    } else if (of_kind.size() == 1) {
      method_name = of_kind.front();
    } else {
      return field_error("method",
                         "name the method to call; the model has: " + describe_methods(methods));
    }
  }
  for (const auto& method : methods) {
    if (method.value("name", "") != method_name) continue;
    const std::string method_kind = method.value("kind", "");
    if (method_kind != kind) {
      return field_error("method", "'" + method_name + "' is a " + method_kind +
                                       " method: call it at " + endpoint_for(method_kind));
    }
    target.method = method;
    target.method_name = method_name;
    return target;
  }
  return field_error("method", "the model has no method '" + method_name +
                                   "'; it has: " + describe_methods(methods));
}

// Replaces every top-level {"url": "..."} input with the bytes the URL holds, as a part.
void fetch_url_inputs(const std::shared_ptr<ApiServices>& s,
                      const std::shared_ptr<protocol::WireValue>& inputs,
                      std::vector<std::string> pending, std::function<void(Status)> done) {
  if (pending.empty()) return done({});
  const std::string name = pending.back();
  pending.pop_back();
  const std::string url = inputs->value[name]["url"].get<std::string>();
  s->fetcher->fetch(url, [s, inputs, pending = std::move(pending), done = std::move(done),
                          name](Result<std::string> body) mutable {
    if (!body.ok()) {
      return done(Error(body.error().code(), "inputs." + name + ": " + body.error().message()));
    }
    inputs->value[name] = {{"part", inputs->parts.size()}};
    inputs->parts.push_back(std::move(body).value());
    fetch_url_inputs(s, inputs, std::move(pending), std::move(done));
  });
}

// Envelopes (tensors as bytes) to an agent that reads them, JSON to any other.
protocol::BodyEncoding body_encoding(const PredictRoute& route) {
  return (route.connection->peer_features() & protocol::kFeaturePredictEnvelope) != 0
             ? protocol::BodyEncoding::kEnvelope
             : protocol::BodyEncoding::kJson;
}

std::string call_metadata(const Target& target, const PredictRoute& route,
                          protocol::CallShape shape, const std::string& request_id) {
  protocol::PredictMetadata metadata;
  metadata.body = body_encoding(route);
  metadata.deployment_id = target.deployment.id;
  metadata.model_method = target.method_name;
  metadata.shape = shape;
  metadata.request_id = request_id;
  metadata.replica_hint = route.replica_id;
  return protocol::to_json(metadata).dump();
}

// What an ended tunnel stream means for the client.
Error stream_failure(error_code ec, const std::shared_ptr<tunnel::Stream>& stream) {
  const std::string reason = stream ? stream->reset_reason() : "";
  if (ec == tunnel::Errc::kTunnelLost || ec == tunnel::Errc::kNotConnected ||
      ec == tunnel::Errc::kRefusedStream) {
    return unavailable("the connection to the node was lost before the call finished" +
                       (reason.empty() ? std::string() : ": " + reason));
  }
  return Error(ErrorCode::kDataLoss, "the node ended the call without an answer (" + ec.message() +
                                         (reason.empty() ? "" : ": " + reason) + ")");
}

HttpResponse failure_response(const Error& error, const std::string& request_id) {
  HttpResponse response = error_response(error, request_id);
  if (error.code() == ErrorCode::kDataLoss) response.status = 502;
  return response;
}

// A model's outputs (or chunk) as the client asked for them: tensors as the node sent them
// ("data_b64") or as numbers. `message_bytes` (the node's message) bounds every tensor in it.
Result<json> client_form(json value, bool tensor_values, size_t message_bytes) {
  if (!tensor_values) return value;
  auto converted = protocol::tensors_to_values(value, message_bytes);
  if (!converted.ok()) {
    return Error(ErrorCode::kDataLoss,
                 "the node sent a malformed tensor: " + converted.error().message());
  }
  return converted;
}

// A predict request: a JSON body, or a multipart/form-data body whose part "request" holds the
// JSON and whose other parts hold raw bytes that the inputs refer to as {"part": "NAME"}. The
// form's views point into the call's body.
struct PredictBody {
  PredictRequest request;
  std::vector<FormPart> form;
};

Result<PredictBody> parse_predict_body(const Call& call) {
  const std::string content_type = call.request->header("content-type");
  PredictBody out;
  if (!is_form_data(content_type)) {
    OUTPOST_ASSIGN_OR_RETURN(auto body, body_object(call));
    OUTPOST_ASSIGN_OR_RETURN(out.request, parse_predict_request(body));
    return out;
  }
  OUTPOST_ASSIGN_OR_RETURN(out.form, parse_form_data(call.request->body, content_type));
  const auto request = std::find_if(out.form.begin(), out.form.end(),
                                    [](const FormPart& part) { return part.name == "request"; });
  if (request == out.form.end()) {
    return invalid_argument(
        "a multipart/form-data predict needs a part named \"request\" holding the JSON request");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto body, parse_body_object(request->data, request->content_type));
  OUTPOST_ASSIGN_OR_RETURN(out.request, parse_predict_request(body));
  return out;
}

// Tries of a call when a node, an agent or a worker is lost under it or a node refuses it.
constexpr size_t kMaxAttempts = 4;
// The wait before the n-th try (n >= 2) that goes back to a node already tried: long enough for
// a restarting worker or agent to report its replica as not ready, so that the call waits for it
// (as at a cold start) instead of failing on it again.
constexpr std::chrono::milliseconds kRetryPause{250};
// Inputs of a stream call kept, before the node's first output, to open it again elsewhere.
constexpr size_t kMaxReplayedInputs = 1024;

// One unary or generate call in flight: the exchange, the tunnel stream, the deadline.
class HttpCall : public std::enable_shared_from_this<HttpCall> {
 public:
  HttpCall(std::shared_ptr<ApiServices> services, std::shared_ptr<HttpExchange> exchange,
           Target target, bool generate, bool tensor_values)
      : services_(std::move(services)),
        exchange_(std::move(exchange)),
        target_(std::move(target)),
        generate_(generate),
        tensor_values_(tensor_values),
        deadline_(*services_->io) {
    const std::string accept = exchange_->request().header("accept");
    ndjson_ = accept.find("application/x-ndjson") != std::string::npos ||
              accept.find("application/jsonl") != std::string::npos;
  }

  const std::string& request_id() const { return exchange_->request().request_id; }

  // Sends the call to a ready replica at once, or else routes it on the pool (holding it while
  // a replica starts).
  void start(protocol::WireValue inputs) {
    inputs_ = std::move(inputs);
    std::weak_ptr<HttpCall> weak = shared_from_this();
    exchange_->on_client_gone([weak] {
      auto self = weak.lock();
      if (!self) return;
      self->client_gone_ = true;
      self->cancel("the client went away");
      self->services_->router->wake();  // a held call is dropped at once
    });
    auto ready = services_->router->choose(target_.deployment, avoid_);
    if (ready.ok()) return send(*ready);
    route_after(std::chrono::milliseconds(0));
  }

  void fail(const Error& error) {
    if (finished_.exchange(true)) return;
    deadline_.cancel();
    record(std::string(error_code_name(error.code())));
    if (streaming_) {
      const std::string status = error_json(error, request_id());
      exchange_->write_chunk(ndjson_ ? status + "\n" : "event: error\ndata: " + status + "\n\n",
                             [](bool) {});
      exchange_->end_stream();
      return;
    }
    exchange_->respond(failure_response(error, request_id()));
  }

 private:
  const char* shape() const { return generate_ ? "generate" : "unary"; }

  void record(const std::string& code) {
    if (services_->metrics == nullptr) return;
    services_->metrics->request_done(
        target_.deployment.user_id, target_.deployment.id, shape(), code,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - arrived_).count());
  }

  void route() {
    std::weak_ptr<HttpCall> weak = shared_from_this();
    services_->router->acquire(
        target_.deployment, avoid_,
        [self = shared_from_this()](Result<PredictRoute> route) {
          if (!route.ok() && !self->avoid_.empty()) {
            // No other node can take it: the nodes already tried are tried again, after a pause
            // in which a restarting replica reports itself, and then waited for as at a cold
            // start.
            self->avoid_.clear();
            return self->route_after(kRetryPause * self->attempts_);
          }
          if (!route.ok()) return self->fail(route.error());
          self->send(*route);
        },
        [weak] {
          auto self = weak.lock();
          return self && !self->client_gone_.load();
        });
  }

  void send(const PredictRoute& route) {
    if (client_gone_.load()) return fail(Error(ErrorCode::kCancelled, "the client went away"));
    if (finished_.load()) return;
    guard_ = services_->router->track(target_.deployment, route);
    node_id_ = route.node_id;
    LOG_INFO("control.predict", request_id()
                                    << ": " << shape() << " " << target_.deployment.id << "."
                                    << target_.method_name << " -> " << route.node_id);
    encoding_ = body_encoding(route);
    auto request = protocol::encode_predict_request(inputs_, encoding_);
    if (!request.ok()) return fail(request.error());
    {
      std::lock_guard lock(stream_mutex_);
      stream_ = route.connection->open_stream(
          call_metadata(target_, route,
                        generate_ ? protocol::CallShape::kGenerate : protocol::CallShape::kUnary,
                        request_id()),
          std::move(request).value(),
          /*send_first_message=*/true, /*end_stream=*/true);
    }
    std::weak_ptr<HttpCall> weak = shared_from_this();
    deadline_.expires_after(std::chrono::seconds(services_->config->predict_timeout_seconds));
    deadline_.async_wait([weak](error_code ec) {
      auto self = weak.lock();
      if (ec || !self) return;
      self->cancel("the call took longer than the predict timeout");
      self->fail(Error(ErrorCode::kDeadlineExceeded,
                       "the model did not answer within " +
                           std::to_string(self->services_->config->predict_timeout_seconds) +
                           " s"));
    });
    if (generate_) return read_next();
    tunnel::async_read_unary_response(
        stream_, [self = shared_from_this()](error_code ec, const std::string& message) {
          self->on_unary(ec, message);
        });
  }

  // The node was lost under a call that has not answered anything yet: models are pure
  // functions of their inputs, so the call goes again, to another node when one has a ready
  // replica, else to the same one once its replica is back, and the client sees no error. A call
  // that already streamed a chunk is not repeated. All within the caller's predict timeout.
  bool retry_elsewhere(error_code ec) {
    const bool lost = ec == tunnel::Errc::kTunnelLost || ec == tunnel::Errc::kNotConnected ||
                      ec == tunnel::Errc::kRefusedStream;
    return lost && retry("node " + node_id_ + " was lost under the call (" + ec.message() + ")");
  }

  // The agent answered that the replica's worker went away, or that it is draining: nothing
  // came back, so the call goes again as above.
  bool retry_after_agent_error(const Error& error) {
    return error.code() == ErrorCode::kUnavailable &&
           retry("node " + node_id_ + " answered: " + error.message());
  }

  bool retry(const std::string& why) {
    if (streaming_ || finished_.load() || ++attempts_ >= kMaxAttempts) return false;
    if (std::chrono::steady_clock::now() - arrived_ >
        std::chrono::seconds(services_->config->predict_timeout_seconds)) {
      return false;
    }
    LOG_NOTICE("control.predict_retried",
               request_id() << ": " << why << "; trying again (attempt " << attempts_ + 1 << ")");
    avoid_.insert(node_id_);
    deadline_.cancel();
    guard_.reset();
    route_after(std::chrono::milliseconds(0));
    return true;
  }

  // Routes again (on the pool, which reads the store) after `pause`.
  void route_after(std::chrono::milliseconds pause) {
    if (pause.count() == 0) {
      asio::post(services_->pool, [self = shared_from_this()] { self->route(); });
      return;
    }
    auto timer = std::make_shared<asio::steady_timer>(*services_->io, pause);
    timer->async_wait([self = shared_from_this(), timer](error_code) {
      asio::post(self->services_->pool, [self] { self->route(); });
    });
  }

  void cancel(const std::string& why) {
    std::shared_ptr<tunnel::Stream> stream;
    {
      std::lock_guard lock(stream_mutex_);
      stream = stream_;
    }
    if (stream) stream->reset(tunnel::Errc::kCancel, why);
    if (!finished_.load()) {
      LOG_INFO("control.predict_cancelled", request_id() << ": " << why);
    }
  }

  void on_unary(error_code ec, const std::string& message) {
    if (ec && retry_elsewhere(ec)) return;
    if (ec) return fail(stream_failure(ec, stream_));
    auto parsed = protocol::decode_predict_answer(message, encoding_);
    if (!parsed.ok()) {
      return fail(Error(ErrorCode::kDataLoss,
                        "the node answered with a malformed message: " + parsed.error().message()));
    }
    if (auto error = protocol::error_in(*parsed)) {
      if (retry_after_agent_error(*error)) return;
      return fail(*error);
    }
    auto outputs =
        client_form(parsed->value("outputs", json(nullptr)), tensor_values_, message.size());
    if (!outputs.ok()) return fail(outputs.error());
    if (finished_.exchange(true)) return;
    deadline_.cancel();
    record("ok");
    Reply reply;
    reply.body = {{"outputs", std::move(outputs).value()},
                  {"method", target_.method_name},
                  {"deployment_id", target_.deployment.id},
                  {"model_version_id", target_.version.id}};
    exchange_->respond(json_response(std::move(reply), request_id()));
  }

  void read_next() {
    stream_->async_read([self = shared_from_this()](error_code ec, const std::string& message) {
      self->on_chunk(ec, message);
    });
  }

  void on_chunk(error_code ec, const std::string& message) {
    if (finished_.load()) return;
    if (ec == tunnel::Errc::kEndOfStream) {
      if (!streaming_) begin_stream();
      if (finished_.exchange(true)) return;
      deadline_.cancel();
      record("ok");
      json done{{"status", {{"code", "ok"}, {"description", "Ok"}, {"req_id", request_id()}}}};
      exchange_->write_chunk(
          ndjson_ ? done.dump() + "\n" : "event: done\ndata: " + done.dump() + "\n\n", [](bool) {});
      exchange_->end_stream();
      return;
    }
    if (ec && retry_elsewhere(ec)) return;
    if (ec) return fail(stream_failure(ec, stream_));
    auto parsed = protocol::decode_predict_answer(message, encoding_);
    if (!parsed.ok()) {
      cancel("malformed chunk");
      return fail(Error(ErrorCode::kDataLoss,
                        "the node sent a malformed chunk: " + parsed.error().message()));
    }
    if (auto error = protocol::error_in(*parsed)) {
      if (retry_after_agent_error(*error)) return;
      cancel("the node reported an error");
      return fail(*error);
    }
    auto value = client_form(parsed->value("chunk", json(nullptr)), tensor_values_, message.size());
    if (!value.ok()) {
      cancel("malformed chunk");
      return fail(value.error());
    }
    if (!streaming_) begin_stream();
    const std::string chunk = json{{"chunk", std::move(value).value()}}.dump();
    exchange_->write_chunk(ndjson_ ? chunk + "\n" : "data: " + chunk + "\n\n",
                           [self = shared_from_this()](bool ok) {
                             if (!ok) return self->cancel("the client went away");
                             self->read_next();
                           });
  }

  void begin_stream() {
    streaming_ = true;
    // A stream that lasts longer than the predict timeout is fine once it has started.
    deadline_.cancel();
    exchange_->start_stream(200, ndjson_ ? "application/x-ndjson" : "text/event-stream");
  }

  std::shared_ptr<ApiServices> services_;
  std::shared_ptr<HttpExchange> exchange_;
  Target target_;
  const bool generate_;
  const bool tensor_values_;
  // How the current route's messages are written; set in send() before the stream opens.
  std::atomic<protocol::BodyEncoding> encoding_{protocol::BodyEncoding::kJson};
  bool ndjson_ = false;
  std::atomic<bool> streaming_{false};
  std::atomic<bool> finished_{false};
  asio::steady_timer deadline_;
  const std::chrono::steady_clock::time_point arrived_ = std::chrono::steady_clock::now();
  protocol::WireValue inputs_;   // in the worker form, encoded for each node tried
  std::set<std::string> avoid_;  // nodes lost under this call
  std::string node_id_;
  size_t attempts_ = 0;
  std::atomic<bool> client_gone_{false};
  std::mutex stream_mutex_;  // cancel() comes from the event loop, a retry sets it on the pool
  std::shared_ptr<tunnel::Stream> stream_;
  std::shared_ptr<void> guard_;
};

void predict_http(ApiServices& s, const Call& call, const std::shared_ptr<HttpExchange>& exchange,
                  bool generate) {
  const std::string& request_id = call.request->request_id;
  auto body = parse_predict_body(call);
  if (!body.ok()) return exchange->respond(error_response(body.error(), request_id));
  PredictRequest* request = &body->request;
  auto target =
      resolve(s, call, request->selector, request->method, generate ? "generate" : "unary");
  if (!target.ok()) return exchange->respond(error_response(target.error(), request_id));
  auto placed = place_first_input(target->method, std::move(request->inputs), request->input);
  if (!placed.ok()) return exchange->respond(error_response(placed.error(), request_id));
  request->inputs = std::move(placed).value();
  const Status inputs_ok = check_inputs(target->method, request->inputs, false);
  if (!inputs_ok.ok()) return exchange->respond(error_response(inputs_ok.error(), request_id));
  // The bytes out of the JSON once, here: the form's parts as they are, base64 decoded.
  auto wire = wire_inputs(request->inputs, body->form);
  if (!wire.ok()) return exchange->respond(error_response(wire.error(), request_id));
  auto services = std::make_shared<ApiServices>(s);
  auto call_state = std::make_shared<HttpCall>(services, exchange, std::move(target).value(),
                                               generate, request->tensor_values);
  auto pending = url_inputs(wire->value);
  if (pending.empty()) return call_state->start(std::move(wire).value());
  auto inputs = std::make_shared<protocol::WireValue>(std::move(wire).value());
  fetch_url_inputs(services, inputs, std::move(pending),
                   [call_state, inputs](const Status& fetched) {
                     if (!fetched.ok()) return call_state->fail(fetched.error());
                     call_state->start(std::move(*inputs));
                   });
}

// A stream call: a WebSocket with the client, a bidirectional tunnel stream with the agent.
class StreamCall : public std::enable_shared_from_this<StreamCall> {
 public:
  StreamCall(std::shared_ptr<ApiServices> services, Call call,
             std::shared_ptr<WebSocketChannel> channel, std::string request_id, bool tensor_values)
      : services_(std::move(services)),
        call_(std::move(call)),
        channel_(std::move(channel)),
        request_id_(std::move(request_id)),
        tensor_values_(tensor_values) {}

  void set_target(Target target) { target_ = std::move(target); }

  // The selector came in the URL: start relaying at once.
  void start() {
    asio::post(services_->pool, [self = shared_from_this()] { self->connect({}); });
  }

  // The selector comes in the first message.
  void read_header() {
    channel_->read([self = shared_from_this()](bool ok, std::string message) {
      if (!ok) return;
      asio::post(self->services_->pool, [self, message = std::move(message)] {
        auto parsed = parse_json(message);
        if (!parsed.ok()) return self->finish(parsed.error(), 1007);
        auto reader = ObjectReader::create(*parsed, "");
        if (!reader.ok()) return self->finish(reader.error(), 1007);
        const Status known =
            reader->only({"runner_selector", "method", "inputs", "input", "tensor_format"});
        if (!known.ok()) return self->finish(known.error(), 1007);
        auto format = reader->optional_string("tensor_format");
        if (!format.ok()) return self->finish(format.error(), 1007);
        if (format->has_value()) {
          auto values = parse_tensor_format(**format);
          if (!values.ok()) return self->finish(values.error(), 1007);
          self->tensor_values_ = *values;
        }
        const json* selector = reader->get("runner_selector");
        if (selector == nullptr) {
          return self->finish(
              field_error("runner_selector", "the first message must name the runner_selector"),
              1008);
        }
        auto method = reader->optional_string("method");
        if (!method.ok()) return self->finish(method.error(), 1007);
        auto target = resolve(*self->services_, self->call_, *selector, method.value().value_or(""),
                              "stream");
        if (!target.ok()) return self->finish(target.error(), 1008);
        self->target_ = std::move(target).value();
        json first;
        if (const json* inputs = reader->get("inputs")) first = *inputs;
        if (const json* input = reader->get("input")) {
          auto placed = place_first_input(self->target_.method,
                                          first.is_null() ? json::object() : first, *input);
          if (!placed.ok()) return self->finish(placed.error(), 1007);
          first = std::move(placed).value();
        }
        self->connect(first);
      });
    });
  }

 private:
  // Routes the call, held while a replica starts. Blocking: on the pool.
  void connect(const json& first_inputs) {
    services_->router->acquire(
        target_.deployment, {},
        [self = shared_from_this(), first_inputs](Result<PredictRoute> route) {
          if (!route.ok()) return self->finish(route.error(), 1013);
          self->open(*route, first_inputs);
        });
  }

  void open(const PredictRoute& route, const json& first_inputs) {
    open_on(route);
    if (!first_inputs.is_null()) return forward_inputs(first_inputs);
    pump_from_client();
  }

  // Opens the call on the route's node and replays what the client sent so far (nothing, unless
  // the call is opened again elsewhere).
  void open_on(const PredictRoute& route) {
    guard_ = services_->router->track(target_.deployment, route);
    LOG_INFO("control.predict", request_id_ << ": stream " << target_.deployment.id << "."
                                            << target_.method_name << " -> " << route.node_id);
    std::shared_ptr<tunnel::Stream> stream = route.connection->open_stream(
        call_metadata(target_, route, protocol::CallShape::kStream, request_id_));
    {
      std::lock_guard lock(mutex_);
      node_id_ = route.node_id;
      stream_ = stream;
      encoding_ = body_encoding(route);
      // Each input encoded when it came (forward_inputs), so it encodes again.
      for (const protocol::WireValue& inputs : sent_) {
        auto message = protocol::encode_predict_request(inputs, encoding_);
        if (message.ok()) stream->async_write(std::move(message).value(), false, [](error_code) {});
      }
      if (input_ended_) stream->close_write();
      rerouting_ = false;
    }
    pump_from_agent(stream);
  }

  std::shared_ptr<tunnel::Stream> current_stream() {
    std::lock_guard lock(mutex_);
    return stream_;
  }

  protocol::BodyEncoding current_encoding() {
    std::lock_guard lock(mutex_);
    return encoding_;
  }

  void forward_inputs(const json& inputs) {
    const Status ok = check_inputs(target_.method, inputs, true);
    if (!ok.ok()) return refuse(ok.error(), 1007, "the client sent bad inputs");
    auto wire = wire_inputs(inputs, {});
    if (!wire.ok()) return refuse(wire.error(), 1007, "the client sent bad inputs");
    const protocol::BodyEncoding encoded_as = current_encoding();
    auto message = protocol::encode_predict_request(*wire, encoded_as);
    if (!message.ok()) return refuse(message.error(), 1007, "the client sent bad inputs");
    std::shared_ptr<tunnel::Stream> stream;
    bool too_many = false;
    protocol::BodyEncoding encoding = protocol::BodyEncoding::kJson;
    {
      std::lock_guard lock(mutex_);
      // Until the node has answered, the call may still be opened elsewhere: keep the inputs
      // (a bounded number: while the call waits for a node, nothing else holds the client back).
      if (!answered_) {
        sent_.push_back(*wire);
        too_many = sent_.size() > kMaxReplayedInputs;
      }
      if (!rerouting_) stream = stream_;
      encoding = encoding_;
    }
    if (too_many) {
      return refuse(
          Error(ErrorCode::kResourceExhausted, "more than " + std::to_string(kMaxReplayedInputs) +
                                                   " inputs sent before the model's first output"),
          1008, "too many inputs before any output");
    }
    if (!stream) return pump_from_client();  // the new node gets it with the replay
    // The call moved meanwhile to a node that reads the other encoding (valid: it encoded once).
    if (encoding != encoded_as) {
      message = protocol::encode_predict_request(*wire, encoding);
    }
    // A failed write: the agent side ended, and pump_from_agent retries the call or reports it.
    stream->async_write(std::move(message).value(), false,
                        [self = shared_from_this()](error_code) { self->pump_from_client(); });
  }

  void pump_from_client() {
    if (finished_.load()) return;
    channel_->read([self = shared_from_this()](bool ok, const std::string& message) {
      if (!ok) {
        bool ended = false;
        {
          std::lock_guard lock(self->mutex_);
          ended = self->input_ended_;
        }
        if (!ended && !self->finished_.load()) {
          self->current_stream()->reset(tunnel::Errc::kCancel, "the client went away");
          LOG_INFO("control.predict_cancelled", self->request_id_ << ": the client went away");
        }
        return;
      }
      auto parsed = parse_json(message);
      if (!parsed.ok() || !parsed->is_object()) {
        return self->refuse(
            parsed.ok() ? invalid_argument("each message must be a JSON object") : parsed.error(),
            1007, "the client sent a malformed message");
      }
      if (parsed->value("end", false)) {
        std::shared_ptr<tunnel::Stream> stream;
        {
          std::lock_guard lock(self->mutex_);
          self->input_ended_ = true;
          if (!self->rerouting_) stream = self->stream_;
        }
        if (stream) stream->close_write();
        self->pump_from_client();  // keep reading: a close from the client still cancels
        return;
      }
      if (!parsed->contains("inputs") && !parsed->contains("input")) {
        return self->refuse(invalid_argument("each message carries {\"inputs\": {...}}, "
                                             "{\"input\": VALUE} or {\"end\": true}"),
                            1007, "the client sent a malformed message");
      }
      std::optional<json> input;
      if (parsed->contains("input")) input = (*parsed)["input"];
      auto placed =
          place_first_input(self->target_.method, parsed->value("inputs", json::object()), input);
      if (!placed.ok()) return self->refuse(placed.error(), 1007, "the client sent bad inputs");
      self->forward_inputs(*placed);
    });
  }

  // The node was lost under the call, or refused it, before it answered anything: the call is
  // opened on another node with the inputs sent so far (a stream's state starts afresh there,
  // and the client has seen no output of the first). Once an output reached the client, a lost
  // node ends the call with an error.
  bool retry_elsewhere(error_code ec) {
    const bool lost = ec == tunnel::Errc::kTunnelLost || ec == tunnel::Errc::kNotConnected ||
                      ec == tunnel::Errc::kRefusedStream;
    std::string node;
    {
      std::lock_guard lock(mutex_);
      if (!lost || answered_ || finished_.load() || ++attempts_ >= kMaxAttempts) return false;
      rerouting_ = true;
      node = node_id_;
      avoid_.insert(node);
    }
    LOG_NOTICE("control.predict_retried", request_id_ << ": node " << node
                                                      << " was lost under the stream call ("
                                                      << ec.message() << "); trying another node");
    guard_.reset();
    asio::post(services_->pool, [self = shared_from_this(), avoid = avoid_] {
      self->services_->router->acquire(self->target_.deployment, avoid,
                                       [self](Result<PredictRoute> route) {
                                         if (!route.ok()) return self->finish(route.error(), 1013);
                                         self->open_on(*route);
                                       });
    });
    return true;
  }

  void pump_from_agent(const std::shared_ptr<tunnel::Stream>& stream) {
    stream->async_read([self = shared_from_this(), stream](error_code ec,
                                                           const std::string& message) {
      if (ec == tunnel::Errc::kEndOfStream) return self->finish({}, 1000);
      if (ec && self->retry_elsewhere(ec)) return;
      if (ec) return self->finish(stream_failure(ec, stream), 1011);
      auto parsed = protocol::decode_predict_answer(message, self->current_encoding());
      if (!parsed.ok()) {
        stream->reset(tunnel::Errc::kCancel, "malformed output");
        return self->finish(Error(ErrorCode::kDataLoss,
                                  "the node sent a malformed message: " + parsed.error().message()),
                            1011);
      }
      if (auto error = protocol::error_in(*parsed)) {
        stream->reset(tunnel::Errc::kCancel, "the node reported an error");
        // An item the model refused is bad client data, as one the control plane refuses.
        const uint16_t close_code = error->code() == ErrorCode::kInvalidArgument ? 1007
                                    : error->code() == ErrorCode::kUnavailable   ? 1013
                                                                                 : 1011;
        return self->finish(*error, close_code);
      }
      auto outputs = client_form(parsed->value("outputs", json(nullptr)), self->tensor_values_,
                                 message.size());
      if (!outputs.ok()) {
        stream->reset(tunnel::Errc::kCancel, "malformed output");
        return self->finish(outputs.error(), 1011);
      }
      {
        std::lock_guard lock(self->mutex_);
        self->answered_ = true;
        self->sent_.clear();
      }
      self->channel_->write(json{{"outputs", std::move(outputs).value()}}.dump(),
                            [self, stream](bool ok) {
                              if (!ok) {
                                stream->reset(tunnel::Errc::kCancel, "the client went away");
                                return;
                              }
                              self->pump_from_agent(stream);
                            });
    });
  }

  // Ends the call for the client's mistake: the client hears `error`, then the node's side is
  // cancelled. In this order, because the cancel ends the read from the node, which would
  // otherwise finish the call first, as a lost answer (data_loss).
  void refuse(const Error& error, uint16_t close_code, const std::string& why) {
    finish(error, close_code);
    if (auto stream = current_stream()) stream->reset(tunnel::Errc::kCancel, why);
  }

  // Sends the final status and closes the WebSocket. An empty error is success.
  void finish(std::optional<Error> error, uint16_t close_code) {
    if (finished_.exchange(true)) return;
    const std::string status =
        error.has_value()
            ? error_json(*error, request_id_)
            : json{{"status", {{"code", "ok"}, {"description", "Ok"}, {"req_id", request_id_}}}}
                  .dump();
    channel_->write(status, nullptr);
    channel_->close(close_code,
                    error.has_value() ? std::string(error_code_name(error->code())) : "");
  }

  std::shared_ptr<ApiServices> services_;
  Call call_;
  std::shared_ptr<WebSocketChannel> channel_;
  std::string request_id_;
  bool tensor_values_;  // set before the relay starts
  Target target_;
  std::shared_ptr<void> guard_;
  std::atomic<bool> finished_{false};
  std::mutex mutex_;  // the client's side, the node's side and a retry meet here
  std::shared_ptr<tunnel::Stream> stream_;
  std::vector<protocol::WireValue> sent_;  // inputs forwarded before the node's first output
  protocol::BodyEncoding encoding_ = protocol::BodyEncoding::kJson;  // the current node's
  bool answered_ = false;   // an output reached the client: no retry any more
  bool rerouting_ = false;  // between a lost node and the next one
  bool input_ended_ = false;
  std::string node_id_;
  std::set<std::string> avoid_;  // nodes lost under this call
  size_t attempts_ = 0;
};

}  // namespace

void predict_unary(ApiServices& s, const Call& call,
                   const std::shared_ptr<HttpExchange>& exchange) {
  predict_http(s, call, exchange, false);
}

void predict_generate(ApiServices& s, const Call& call,
                      const std::shared_ptr<HttpExchange>& exchange) {
  predict_http(s, call, exchange, true);
}

void predict_stream(ApiServices& s, const Call& call,
                    const std::shared_ptr<WebSocketUpgrade>& upgrade) {
  const HttpRequest& request = upgrade->request();
  const std::string& request_id = request.request_id;
  // The selector may come in the query (?deployment=ID, or ?compute_cluster=CC&nodepool=NP),
  // so that a wrong one is refused with an HTTP status before the upgrade.
  std::optional<Target> target;
  auto tensor_values = parse_tensor_format(request.query_value("tensor_format").empty()
                                               ? "base64"
                                               : request.query_value("tensor_format"));
  if (!tensor_values.ok())
    return upgrade->reject(error_response(tensor_values.error(), request_id));
  const std::string deployment = request.query_value("deployment");
  const std::string nodepool = request.query_value("nodepool");
  if (!deployment.empty() || !nodepool.empty()) {
    json selector;
    if (!deployment.empty()) selector["deployment"] = {{"id", deployment}};
    if (!nodepool.empty()) {
      selector["nodepool"] = {
          {"id", nodepool}, {"compute_cluster", {{"id", request.query_value("compute_cluster")}}}};
    }
    auto resolved = resolve(s, call, selector, request.query_value("method"), "stream");
    if (!resolved.ok()) return upgrade->reject(error_response(resolved.error(), request_id));
    target = std::move(resolved).value();
  }
  auto services = std::make_shared<ApiServices>(s);
  Call owned = call;
  owned.request = nullptr;  // the request does not outlive the upgrade
  upgrade->accept([services, owned, target, request_id,
                   values = *tensor_values](std::shared_ptr<WebSocketChannel> channel) {
    auto stream_call =
        std::make_shared<StreamCall>(services, owned, std::move(channel), request_id, values);
    if (target.has_value()) {
      stream_call->set_target(*target);
      stream_call->start();
    } else {
      stream_call->read_header();
    }
  });
}

}  // namespace outpost::control
