#include "protocol/worker_client.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include <zmq.hpp>

#include "common/log.h"
#include "common/spawn.h"
#include "protocol/zmq_channel.h"
#include <sys/wait.h>
#include <unistd.h>

namespace outpost::protocol {

using nlohmann::json;
using std::chrono::milliseconds;

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  explicit ClientCore(WorkerClient::Options options) : options_(std::move(options)) {}

  Status start() {
    OUTPOST_RETURN_IF_ERROR(check_ipc_endpoint(options_.endpoint));
    OUTPOST_ASSIGN_OR_RETURN(
        channel_, ZmqChannel::connect_dealer(context_, options_.endpoint, options_.limits));
    OUTPOST_ASSIGN_OR_RETURN(monitor_, channel_->monitor(context_));
    thread_ = std::thread([self = shared_from_this()] { self->io_loop(); });
    return {};
  }

  void stop() {
    stopping_ = true;
    if (channel_) channel_->wake();
    if (thread_.joinable()) thread_.join();
    fail_all(Error(ErrorCode::kCancelled, "the worker client was closed"));
    run_deferred();
    std::unique_lock lock(lifecycle_);
    closed_ = true;
    if (channel_) channel_->stop_monitor();
    monitor_.close();
    channel_.reset();
  }

  std::string next_id() { return "c" + std::to_string(next_id_++); }

  // Sends one message; refuses locally what the worker would refuse for its size.
  Status send(const json& header, const std::vector<std::string>& parts) {
    std::shared_lock lock(lifecycle_);
    if (closed_ || stopping_) return unavailable("the worker client is closed");
    if (lost_) return unavailable("the connection to the worker was lost");
    const std::string encoded = encode_header(header);
    OUTPOST_RETURN_IF_ERROR(check_message_size(encoded, parts, options_.limits));
    std::vector<std::string_view> frames;
    frames.reserve(1 + parts.size());
    frames.emplace_back(encoded);
    for (const auto& part : parts) frames.emplace_back(part);
    return channel_->send(frames);
  }

  std::shared_ptr<WorkerCall> start_call(json header, const std::vector<std::string>& parts,
                                         CallShape shape, CallHandlers handlers, int64_t window) {
    const std::string id = next_id();
    header["id"] = id;
    auto call = std::make_shared<WorkerCall>(shared_from_this(), id, shape, window);
    {
      std::lock_guard lock(mutex_);
      pending_[id] = Pending{call, std::move(handlers), nullptr};
    }
    const Status sent = send(header, parts);
    if (!sent.ok()) fail_later(id, sent.error());
    return call;
  }

  std::future<Result<json>> request(json header, const std::vector<std::string>& parts) {
    const std::string id = next_id();
    header["id"] = id;
    auto promise = std::make_shared<std::promise<Result<json>>>();
    auto future = promise->get_future();
    {
      std::lock_guard lock(mutex_);
      pending_[id] = Pending{nullptr, {}, promise};
    }
    const Status sent = send(header, parts);
    if (!sent.ok()) {
      std::lock_guard lock(mutex_);
      if (pending_.erase(id) > 0) promise->set_value(sent.error());
    }
    return future;
  }

  void send_control(const WorkerCall& call, std::string_view type) {
    if (call.done()) return;
    const Status sent = send(json{{"type", type}, {"id", call.id()}}, {});
    if (!sent.ok()) fail_later(call.id(), sent.error());
  }

  Status send_item(WorkerCall& call, WireValue inputs) {
    json header{{"type", msg::kItem},
                {"id", call.id()},
                {"seq", call.next_seq_++},
                {"inputs", std::move(inputs.value)}};
    return send(header, inputs.parts);
  }

  bool connected() const { return connected_; }
  size_t open_calls() const {
    std::lock_guard lock(mutex_);
    return pending_.size();
  }

 private:
  struct Pending {
    std::shared_ptr<WorkerCall> call;
    CallHandlers handlers;
    std::shared_ptr<std::promise<Result<json>>> promise;
  };

  // Ends a call with `error` from the I/O thread (never from the caller's stack).
  void fail_later(const std::string& id, const Error& error) {
    {
      std::lock_guard lock(mutex_);
      deferred_.emplace_back(id, error);
    }
    std::shared_lock lock(lifecycle_);
    if (channel_) channel_->wake();
  }

  void run_deferred() {
    std::deque<std::pair<std::string, Error>> deferred;
    {
      std::lock_guard lock(mutex_);
      deferred.swap(deferred_);
    }
    for (const auto& [id, error] : deferred) finish(id, error, "");
  }

  std::optional<Pending> take(const std::string& id) {
    std::lock_guard lock(mutex_);
    const auto it = pending_.find(id);
    if (it == pending_.end()) return std::nullopt;
    Pending out = std::move(it->second);
    pending_.erase(it);
    return out;
  }

  void finish(const std::string& id, const Status& status, std::string_view reason) {
    auto pending = take(id);
    if (!pending) return;
    if (pending->promise) {
      if (status.ok()) {
        pending->promise->set_value(json::object());
      } else {
        pending->promise->set_value(status.error());
      }
      return;
    }
    pending->call->done_ = true;
    if (pending->handlers.on_done) pending->handlers.on_done(status, reason);
  }

  void fail_all(const Error& error) {
    std::vector<std::string> ids;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, pending] : pending_) ids.push_back(id);
    }
    for (const auto& id : ids) finish(id, error, "");
  }

  void dispatch(std::vector<zmq::message_t>& frames) {
    std::vector<std::string_view> views;
    views.reserve(frames.size());
    for (auto& frame : frames)
      views.emplace_back(static_cast<const char*>(frame.data()), frame.size());
    auto decoded = decode_message(views, options_.limits);
    if (!decoded.ok()) {
      LOG_WARNING("worker_client.bad_message",
                  "ignored a message from the worker: " << decoded.error().to_string());
      return;
    }
    Message& message = *decoded;
    const std::string id(message.id());
    const std::string_view type = message.type();
    if (type == msg::kError) {
      const Error error = error_from_header(message.header);
      if (id.empty()) {
        LOG_WARNING("worker_client.refused", "the worker refused a message: " << error.to_string());
        return;
      }
      finish(id, error, "");
      return;
    }
    if (type == msg::kEnd) {
      finish(id, Status(), message.header.value("reason", "done"));
      return;
    }
    if (type == msg::kResult || type == msg::kChunk || type == msg::kOutput) {
      std::shared_ptr<WorkerCall> call;
      std::function<void(int64_t, WireValue)> on_value;
      {
        std::lock_guard lock(mutex_);
        const auto it = pending_.find(id);
        if (it == pending_.end() || !it->second.call) return;
        call = it->second.call;
        on_value = it->second.handlers.on_value;
      }
      const char* key = type == msg::kChunk ? "chunk" : "outputs";
      WireValue value;
      if (auto it = message.header.find(key); it != message.header.end())
        value.value = std::move(*it);
      value.parts = std::move(message.parts);
      const int64_t seq = message.header.value("seq", int64_t{0});
      if (type == msg::kOutput) --call->outstanding_;
      if (on_value) on_value(seq, std::move(value));
      if (type == msg::kResult) finish(id, Status(), "done");
      return;
    }
    // Replies to admin requests.
    auto pending = take(id);
    if (!pending) return;
    if (pending->promise) {
      pending->promise->set_value(std::move(message.header));
    } else {
      pending->call->done_ = true;
      if (pending->handlers.on_done) {
        pending->handlers.on_done(internal_error("unexpected reply " + std::string(type)), "");
      }
    }
  }

  void io_loop() {
    std::vector<std::vector<zmq::message_t>> batch;
    pollfd monitor_fd{monitor_.get(zmq::sockopt::fd), POLLIN, 0};
    while (!stopping_) {
      batch.clear();
      channel_->receive(batch, 256, options_.limits.max_parts + 1);
      for (auto& frames : batch) dispatch(frames);
      while (const int event = read_monitor_event(monitor_)) {
        if (event == ZMQ_EVENT_CONNECTED) {
          connected_ = true;
          lost_ = false;
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
          // Whatever arrived before the disconnect is delivered first.
          batch.clear();
          channel_->receive(batch, SIZE_MAX, options_.limits.max_parts + 1);
          for (auto& frames : batch) dispatch(frames);
          connected_ = false;
          lost_ = true;
          fail_all(unavailable("the connection to the worker was lost"));
        }
      }
      run_deferred();
      if (batch.empty()) channel_->wait(milliseconds(100), std::span<pollfd>(&monitor_fd, 1));
    }
  }

  WorkerClient::Options options_;
  zmq::context_t context_{1};
  std::unique_ptr<ZmqChannel> channel_;
  zmq::socket_t monitor_;
  std::thread thread_;
  std::shared_mutex lifecycle_;  // send() against stop()
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Pending> pending_;
  std::deque<std::pair<std::string, Error>> deferred_;
  std::atomic<uint64_t> next_id_{0};
  std::atomic<bool> connected_{false};
  std::atomic<bool> lost_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> closed_{false};
};

WorkerCall::WorkerCall(std::shared_ptr<ClientCore> core, std::string id, CallShape shape,
                       int64_t window)
    : core_(std::move(core)), id_(std::move(id)), shape_(shape), window_(window) {}

void WorkerCall::cancel() { core_->send_control(*this, msg::kCancel); }

Status WorkerCall::send(WireValue inputs) {
  if (shape_ != CallShape::kStream) {
    return Error(ErrorCode::kFailedPrecondition, "only stream calls take items");
  }
  if (done_ || closed_) return Error(ErrorCode::kFailedPrecondition, "the stream call is closed");
  if (outstanding_.fetch_add(1) >= window_) {
    --outstanding_;
    return Error(ErrorCode::kResourceExhausted,
                 std::to_string(window_) + " items await their outputs; send after the next one");
  }
  return core_->send_item(*this, std::move(inputs));
}

Status WorkerCall::close() {
  if (shape_ != CallShape::kStream) {
    return Error(ErrorCode::kFailedPrecondition, "only stream calls are closed");
  }
  if (closed_.exchange(true)) return {};
  core_->send_control(*this, msg::kClose);
  return {};
}

int64_t WorkerCall::window_available() const {
  return std::max<int64_t>(0, window_ - outstanding_.load());
}

WorkerClient::WorkerClient(std::shared_ptr<ClientCore> core) : core_(std::move(core)) {}

Result<std::unique_ptr<WorkerClient>> WorkerClient::connect(const Options& options) {
  auto core = std::make_shared<ClientCore>(options);
  OUTPOST_RETURN_IF_ERROR(core->start());
  return std::unique_ptr<WorkerClient>(new WorkerClient(std::move(core)));
}

WorkerClient::~WorkerClient() { core_->stop(); }

std::future<Result<json>> WorkerClient::request(json header,
                                                const std::vector<std::string>& parts) {
  return core_->request(std::move(header), parts);
}

std::future<Result<json>> WorkerClient::hello() {
  return request(json{{"type", msg::kHello}, {"protocol", kProtocolVersion}});
}

namespace {

json load_header(std::string_view type, const LoadRequest& request) {
  json header{{"type", type}, {"timeout_ms", request.timeout.count()}};
  if (!request.package.empty()) header["package"] = request.package;
  if (!request.model.empty()) header["model"] = request.model;
  if (request.instances > 0) header["instances"] = request.instances;
  if (request.sha256) header["sha256"] = *request.sha256;
  if (request.size) header["size"] = *request.size;
  return header;
}

}  // namespace

std::future<Result<json>> WorkerClient::load(const LoadRequest& request) {
  return this->request(load_header(msg::kLoad, request));
}

std::future<Result<json>> WorkerClient::reload(const LoadRequest& request) {
  return this->request(load_header(msg::kReload, request));
}

std::future<Result<json>> WorkerClient::unload(const std::string& model, milliseconds timeout) {
  return request(json{{"type", msg::kUnload}, {"model", model}, {"timeout_ms", timeout.count()}});
}

std::future<Result<json>> WorkerClient::health() { return request(json{{"type", msg::kHealth}}); }

std::future<Result<json>> WorkerClient::drain(milliseconds timeout, bool exit) {
  return request(json{{"type", msg::kDrain}, {"timeout_ms", timeout.count()}, {"exit", exit}});
}

Result<json> WorkerClient::wait_ready(milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  Error last(ErrorCode::kDeadlineExceeded, "the worker did not become ready");
  while (std::chrono::steady_clock::now() < deadline) {
    auto reply = health();
    if (reply.wait_until(deadline) != std::future_status::ready) break;
    auto health_reply = reply.get();
    if (health_reply.ok() && health_reply->value("ready", false)) return health_reply;
    if (!health_reply.ok()) last = health_reply.error();
    std::this_thread::sleep_for(milliseconds(20));
  }
  return Error(ErrorCode::kDeadlineExceeded, "the worker did not become ready in " +
                                                 std::to_string(timeout.count()) +
                                                 " ms (last: " + last.message() + ")");
}

std::shared_ptr<WorkerCall> WorkerClient::unary(const std::string& model, const std::string& method,
                                                WireValue inputs, CallHandlers handlers) {
  json header{{"type", msg::kPredict},
              {"shape", "unary"},
              {"model", model},
              {"method", method},
              {"inputs", std::move(inputs.value)}};
  return core_->start_call(std::move(header), inputs.parts, CallShape::kUnary, std::move(handlers),
                           0);
}

std::shared_ptr<WorkerCall> WorkerClient::generate(const std::string& model,
                                                   const std::string& method, WireValue inputs,
                                                   CallHandlers handlers) {
  json header{{"type", msg::kPredict},
              {"shape", "generate"},
              {"model", model},
              {"method", method},
              {"inputs", std::move(inputs.value)}};
  return core_->start_call(std::move(header), inputs.parts, CallShape::kGenerate,
                           std::move(handlers), 0);
}

std::shared_ptr<WorkerCall> WorkerClient::stream(const std::string& model,
                                                 const std::string& method, CallHandlers handlers,
                                                 int64_t window) {
  json header{{"type", msg::kPredict},
              {"shape", "stream"},
              {"model", model},
              {"method", method},
              {"window", window}};
  return core_->start_call(std::move(header), {}, CallShape::kStream, std::move(handlers), window);
}

std::future<Result<WireValue>> WorkerClient::unary(const std::string& model,
                                                   const std::string& method, WireValue inputs) {
  auto promise = std::make_shared<std::promise<Result<WireValue>>>();
  auto value = std::make_shared<WireValue>();
  auto future = promise->get_future();
  unary(model, method, std::move(inputs),
        CallHandlers{[value](int64_t, WireValue v) { *value = std::move(v); },
                     [promise, value](const Status& status, std::string_view) {
                       if (status.ok()) {
                         promise->set_value(std::move(*value));
                       } else {
                         promise->set_value(status.error());
                       }
                     }});
  return future;
}

bool WorkerClient::connected() const { return core_->connected(); }

size_t WorkerClient::open_calls() const { return core_->open_calls(); }

Result<std::unique_ptr<WorkerProcess>> WorkerProcess::spawn(const Options& options) {
  OUTPOST_RETURN_IF_ERROR(check_ipc_endpoint(options.spec.endpoint));
  SpawnOptions spawn;
  spawn.argv = {options.binary, "serve", "--spec-json",
                json_text(worker_spec_to_json(options.spec))};
  if (options.exit_with_parent) spawn.argv.emplace_back("--exit-with-parent");
  spawn.environment = current_environment();
  for (const auto& variable : slice_environment(options.spec))
    spawn.environment.push_back(variable);
  for (const auto& variable : options.environment) spawn.environment.push_back(variable);
  if (!options.log_file.empty()) {
    spawn.out.file = options.log_file;
    spawn.err_to_out = true;
  }
  OUTPOST_ASSIGN_OR_RETURN(const pid_t pid, spawn_process(spawn));
  return std::unique_ptr<WorkerProcess>(new WorkerProcess(pid));
}

WorkerProcess::~WorkerProcess() {
  if (!running()) return;
  kill(SIGTERM);
  if (!wait(std::chrono::seconds(10))) {
    kill(SIGKILL);
    wait(std::chrono::seconds(10));
  }
}

std::optional<int> WorkerProcess::wait(milliseconds timeout) {
  if (status_) return status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return status_;
    }
    if (done < 0 && errno != EINTR) return std::nullopt;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(milliseconds(5));
  }
}

void WorkerProcess::kill(int signal) {
  if (!status_) ::kill(pid_, signal);
}

bool WorkerProcess::running() { return !wait(milliseconds(0)).has_value(); }

}  // namespace outpost::protocol
