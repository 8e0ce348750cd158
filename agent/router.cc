#include "agent/router.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <utility>

#include "common/log.h"
#include "protocol/control_protocol.h"

namespace outpost::agent {

using boost::system::error_code;

namespace {

struct RouteState {
  std::shared_ptr<tunnel::Stream> stream;
  std::shared_ptr<protocol::WorkerClient> client;
  std::unique_ptr<Router::Lease> lease;  // freed once, by finish()
  protocol::BodyEncoding encoding = protocol::BodyEncoding::kJson;
  std::atomic<bool> finished{false};

  std::mutex mutex;
  std::shared_ptr<protocol::WorkerCall> call;
  std::optional<protocol::WireValue> waiting_item;  // a stream item the worker's window held back
  bool cancel_requested = false;

  void set_call(std::shared_ptr<protocol::WorkerCall> created) {
    bool cancel = false;
    {
      std::lock_guard<std::mutex> lock(mutex);
      call = std::move(created);
      cancel = cancel_requested;
    }
    if (cancel) call->cancel();
  }
  void cancel() {
    std::shared_ptr<protocol::WorkerCall> current;
    {
      std::lock_guard<std::mutex> lock(mutex);
      cancel_requested = true;
      current = call;
    }
    if (current) current->cancel();
  }
  void finish() {
    if (!finished.exchange(true)) lease.reset();
  }
};

void pump_items(const std::shared_ptr<RouteState>& route);

// Sends a stream item, or keeps it until the worker's window has room. Returns whether the
// next item may be read now.
bool send_item(const std::shared_ptr<RouteState>& route, protocol::WireValue item) {
  std::lock_guard<std::mutex> lock(route->mutex);
  if (route->call->window_available() <= 0 && !route->call->done()) {
    route->waiting_item = std::move(item);  // on_value sends it when an output frees a place
    return false;
  }
  // A refusal here means the call ended; its on_done tells the control plane why.
  return route->call->send(std::move(item)).ok();
}

void reply_error(const std::shared_ptr<tunnel::Stream>& stream, const Error& error,
                 protocol::BodyEncoding encoding) {
  stream->async_write(protocol::encode_predict_error(error, encoding), true, [](error_code) {});
}

protocol::CallHandlers handlers_for(const std::shared_ptr<RouteState>& route,
                                    protocol::CallShape shape) {
  protocol::CallHandlers handlers;
  handlers.on_value = [route, shape](int64_t, const protocol::WireValue& value) {
    const char* key = shape == protocol::CallShape::kGenerate ? "chunk" : "outputs";
    auto answer = protocol::encode_predict_answer(key, value, route->encoding);
    if (!answer.ok()) {
      route->cancel();
      return;
    }
    const bool last = shape == protocol::CallShape::kUnary;
    // A failed write means the control plane reset the stream (its client went away): the
    // worker stops the call between steps.
    route->stream->async_write(std::move(answer).value(), last, [route](error_code ec) {
      if (ec) route->cancel();
    });
    if (shape != protocol::CallShape::kStream) return;
    // An output freed a place in the call's window: send the item that waited for it.
    std::optional<protocol::WireValue> item;
    {
      std::lock_guard<std::mutex> lock(route->mutex);
      item = std::move(route->waiting_item);
      route->waiting_item.reset();
    }
    if (item && send_item(route, std::move(*item))) pump_items(route);
  };
  handlers.on_done = [route, shape](const Status& status, std::string_view) {
    if (status.ok()) {
      if (shape != protocol::CallShape::kUnary) route->stream->close_write();
    } else {
      reply_error(route->stream, status.error(), route->encoding);
    }
    route->finish();
  };
  return handlers;
}

// Stream calls: items from the tunnel to the worker, in order, respecting the call's window.
// While the window is full the next item is not read, so the tunnel's credit holds the sender.
void pump_items(const std::shared_ptr<RouteState>& route) {
  route->stream->async_read([route](error_code ec, const std::string& body) {
    if (ec == tunnel::Errc::kEndOfStream) {
      (void)route->call->close();  // a refusal means the call already ended
      return;
    }
    if (ec) {
      route->cancel();  // the control plane (or its client) went away
      return;
    }
    auto inputs = protocol::decode_predict_request(body, route->encoding);
    if (!inputs.ok()) {
      route->cancel();
      reply_error(route->stream, inputs.error(), route->encoding);
      return;
    }
    if (send_item(route, std::move(inputs).value())) pump_items(route);
  });
}

}  // namespace

Router::Router(Limits limits)
    : max_streams_(limits.max_streams),
      max_inflight_per_replica_(limits.max_inflight_per_replica) {}

void Router::set_limits(Limits limits) {
  max_streams_ = limits.max_streams;
  max_inflight_per_replica_ = limits.max_inflight_per_replica;
}

void Router::publish(std::vector<Target> ready) {
  std::lock_guard<std::mutex> lock(mutex_);
  ready_ = std::move(ready);
  for (const auto& target : ready_) {
    auto& count = inflight_[target.replica_id];
    if (!count) count = std::make_shared<std::atomic<int>>(0);
  }
  // A count that neither the table nor a call holds any more goes.
  for (auto it = inflight_.begin(); it != inflight_.end();) {
    const bool published = std::any_of(ready_.begin(), ready_.end(), [&](const Target& target) {
      return target.replica_id == it->first;
    });
    if (!published && it->second.use_count() == 1) {
      it = inflight_.erase(it);
    } else {
      ++it;
    }
  }
}

int Router::inflight(const std::string& replica_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = inflight_.find(replica_id);
  return it == inflight_.end() ? 0 : it->second->load();
}

Result<Router::Admission> Router::admit(const std::string& deployment, const std::string& hint) {
  if (open_streams_->fetch_add(1) >= max_streams_.load()) {
    open_streams_->fetch_sub(1);
    return Error(ErrorCode::kResourceExhausted,
                 "this node serves at most " + std::to_string(max_streams_.load()) +
                     " predict streams at once (workers.max_streams)");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  const Target* chosen = nullptr;
  int chosen_load = 0;
  for (const auto& target : ready_) {
    if (target.deployment_id != deployment) continue;
    const int load = inflight_.at(target.replica_id)->load();
    if (chosen == nullptr || load < chosen_load ||
        (load == chosen_load && target.replica_id == hint)) {
      chosen = &target;
      chosen_load = load;
    }
  }
  if (chosen == nullptr) {
    open_streams_->fetch_sub(1);
    return Error(ErrorCode::kUnavailable,
                 "no ready replica of deployment " + deployment + " on this node");
  }
  const auto& count = inflight_.at(chosen->replica_id);
  if (count->fetch_add(1) >= max_inflight_per_replica_.load()) {
    count->fetch_sub(1);
    open_streams_->fetch_sub(1);
    return Error(ErrorCode::kResourceExhausted,
                 "every ready replica of " + deployment + " has " +
                     std::to_string(max_inflight_per_replica_.load()) +
                     " requests in flight (workers.max_inflight_per_replica)");
  }
  return Admission{*chosen, std::make_unique<Lease>(open_streams_, count)};
}

void Router::route(const std::shared_ptr<tunnel::Stream>& stream, const nlohmann::json& metadata) {
  auto call = protocol::parse_predict_metadata(metadata);
  if (!call.ok()) return reply_error(stream, call.error(), protocol::answer_encoding(metadata));
  auto admitted = admit(call->deployment_id, call->replica_hint);
  if (!admitted.ok()) {
    if (admitted.error().code() == ErrorCode::kUnavailable) {
      // Refused, not failed: nothing ran, so the control plane opens the call on another node.
      stream->reset(tunnel::Errc::kRefusedStream, admitted.error().message());
      return;
    }
    return reply_error(stream, admitted.error(), call->body);
  }
  auto route = std::make_shared<RouteState>();
  route->stream = stream;
  route->client = admitted->target.client;
  route->lease = std::move(admitted->lease);
  route->encoding = call->body;
  const std::string model = admitted->target.replica_id;
  const std::string method = call->model_method;
  const protocol::CallShape shape = call->shape;
  LOG_DEBUG("agent.predict", "request " << call->request_id << " ("
                                        << protocol::call_shape_name(shape) << ") to replica "
                                        << model);
  if (shape == protocol::CallShape::kStream) {
    route->set_call(route->client->stream(model, method, handlers_for(route, shape)));
    pump_items(route);
    return;
  }
  // Unary and generate: one request message, then the call.
  stream->async_read([route, model, method, shape](error_code ec, const std::string& body) {
    if (ec) {
      route->finish();
      return;
    }
    auto inputs = protocol::decode_predict_request(body, route->encoding);
    if (!inputs.ok()) {
      reply_error(route->stream, inputs.error(), route->encoding);
      route->finish();
      return;
    }
    if (shape == protocol::CallShape::kUnary) {
      route->set_call(route->client->unary(model, method, std::move(inputs).value(),
                                           handlers_for(route, shape)));
    } else {
      route->set_call(route->client->generate(model, method, std::move(inputs).value(),
                                              handlers_for(route, shape)));
    }
  });
}

}  // namespace outpost::agent
