#include "runtime/worker_server.h"

#include <algorithm>
#include <filesystem>
#include <future>
#include <utility>

#include "common/log.h"
#include "runtime/device.h"
#include "runtime/model_package.h"
#include <unistd.h>

namespace outpost::runtime {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr milliseconds kDefaultTimeout{30'000};
constexpr size_t kReceiveBatch = 256;

std::string string_field(const json& header, const char* key) {
  const auto it = header.find(key);
  if (it == header.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

milliseconds timeout_field(const json& header) {
  const auto it = header.find("timeout_ms");
  if (it == header.end() || !it->is_number_unsigned()) return kDefaultTimeout;
  return milliseconds(std::min<uint64_t>(it->get<uint64_t>(), 3'600'000));
}

Error not_found(std::string message) { return {ErrorCode::kNotFound, std::move(message)}; }

}  // namespace

WorkerServer::WorkerServer(WorkerSpec spec, std::vector<std::unique_ptr<ModelLoader>> loaders)
    : spec_(std::move(spec)),
      loaders_(std::move(loaders)),
      clock_(SteadyClock::instance()),
      started_(clock_.now()),
      scheduler_(static_cast<int>(spec_.device_concurrency), clock_),
      compute_(static_cast<int>(spec_.device_concurrency)) {}

Result<std::unique_ptr<WorkerServer>> WorkerServer::create(
    WorkerSpec spec, std::vector<std::unique_ptr<ModelLoader>> loaders) {
  std::unique_ptr<WorkerServer> server(new WorkerServer(std::move(spec), std::move(loaders)));
  OUTPOST_ASSIGN_OR_RETURN(
      server->channel_,
      ZmqChannel::bind_router(server->context_, server->spec_.endpoint, server->spec_.limits));
  return server;
}

WorkerServer::~WorkerServer() {
  {
    std::lock_guard lock(jobs_mutex_);
    jobs_stopping_ = true;
  }
  jobs_changed_.notify_all();
  if (admin_thread_.joinable()) admin_thread_.join();
  std::map<std::string, ModelEntry> models;
  {
    std::lock_guard lock(models_mutex_);
    models.swap(models_);
  }
  for (auto& [name, entry] : models) {
    if (entry.host) entry.host->shutdown(milliseconds(0));
  }
  models.clear();
  // Let the last replies (the drain's) reach the agent before the socket closes.
  channel_->set_linger(std::chrono::milliseconds(1000));
  channel_.reset();
}

int WorkerServer::run(const std::atomic<bool>& stop_requested) {
  admin_thread_ = std::thread([this] { admin_loop(); });
  for (const auto& model : spec_.models) {
    PackageExpectations expect{model.sha256, model.size};
    ++queued_loads_;
    post_job([this, model, expect] {
      load_job("", "", model.name, model.package, expect, model.instances, false, kDefaultTimeout);
    });
  }
  LOG_NOTICE("worker.listening", "worker " << spec_.worker_id << " on " << spec_.endpoint
                                           << " (device " << spec_.device << ", pid " << getpid()
                                           << ")");
  std::vector<std::vector<zmq::message_t>> batch;
  bool signalled = false;
  while (!exit_requested_) {
    if (stop_requested && !signalled) {
      signalled = true;
      LOG_NOTICE("worker.signal", "stop requested; draining");
      draining_ = true;
      post_job([this] {
        drain(kDefaultTimeout);
        exit_requested_ = true;
        channel_->wake();
      });
    }
    channel_->wait(milliseconds(100));
    batch.clear();
    // A ROUTER's message is routing id + header + parts: max_parts + 2 frames at most.
    channel_->receive(batch, kReceiveBatch, spec_.limits.max_parts + 2);
    for (auto& frames : batch) handle_frames(frames);
    std::set<std::string> gone;
    {
      std::lock_guard lock(calls_mutex_);
      gone.swap(gone_clients_);
    }
    for (const auto& client : gone) cancel_client(client);
  }
  LOG_NOTICE("worker.exit", "worker " << spec_.worker_id << " drained; exiting");
  return 0;
}

void WorkerServer::handle_frames(std::vector<zmq::message_t>& frames) {
  if (frames.size() < 2) return;  // a ROUTER always prefixes the routing id
  const std::string client(static_cast<const char*>(frames[0].data()), frames[0].size());
  std::vector<std::string_view> views;
  views.reserve(frames.size() - 1);
  for (size_t i = 1; i < frames.size(); ++i) {
    views.emplace_back(static_cast<const char*>(frames[i].data()), frames[i].size());
  }
  std::string id;
  auto message = decode_message(views, spec_.limits, &id);
  if (!message.ok()) {
    LOG_WARNING("worker.bad_message", "refused a message: " << message.error().to_string());
    reply_error(client, id, message.error());
    return;
  }
  try {
    handle(client, std::move(message).value());
  } catch (const nlohmann::json::exception& e) {
    // A field of the wrong JSON type: refuse this message only; the worker goes on.
    LOG_WARNING("worker.bad_message", "refused a message: " << e.what());
    reply_error(client, id, invalid_argument(std::string("malformed message: ") + e.what()));
  }
}

void WorkerServer::reply(const std::string& client, const json& header,
                         const std::vector<std::string>& parts) {
  const std::string encoded = encode_header(header);
  std::vector<std::string_view> frames;
  frames.reserve(2 + parts.size());
  frames.emplace_back(client);
  frames.emplace_back(encoded);
  for (const auto& part : parts) frames.emplace_back(part);
  const Status sent = channel_->send(frames);
  if (!sent.ok()) {
    std::lock_guard lock(calls_mutex_);
    gone_clients_.insert(client);
  }
}

void WorkerServer::reply_error(const std::string& client, std::string_view id, const Error& error) {
  reply(client, error_header(id, error));
}

Status WorkerServer::send(const Call& call, const json& header,
                          const std::vector<std::string>& parts) {
  const std::string encoded = encode_header(header);
  // The client refuses (or, past twice the limit, disconnects on) a bigger message: the call
  // ends with this error instead (ModelHost).
  OUTPOST_RETURN_IF_ERROR(check_message_size(encoded, parts, spec_.limits));
  std::vector<std::string_view> frames;
  frames.reserve(2 + parts.size());
  frames.emplace_back(call.client());
  frames.emplace_back(encoded);
  for (const auto& part : parts) frames.emplace_back(part);
  Status sent = channel_->send(frames);
  if (sent.ok()) return sent;
  {
    std::lock_guard lock(calls_mutex_);
    gone_clients_.insert(call.client());
  }
  channel_->wake();
  return unavailable("the client is gone: " + sent.error().message());
}

void WorkerServer::finished(const Call& call) {
  std::lock_guard lock(calls_mutex_);
  calls_.erase({call.client(), call.id()});
}

std::shared_ptr<WorkerServer::CallEntry> WorkerServer::find_call(const std::string& client,
                                                                 const std::string& id) {
  std::lock_guard lock(calls_mutex_);
  const auto it = calls_.find({client, id});
  return it == calls_.end() ? nullptr : it->second;
}

void WorkerServer::cancel_client(const std::string& client) {
  std::vector<std::shared_ptr<CallEntry>> entries;
  {
    std::lock_guard lock(calls_mutex_);
    for (const auto& [key, entry] : calls_) {
      if (key.first == client) entries.push_back(entry);
    }
  }
  if (!entries.empty()) {
    LOG_WARNING("worker.client_gone",
                "a client went away; cancelling its " << entries.size() << " calls");
  }
  for (const auto& entry : entries) entry->host->cancel(entry->call);
}

void WorkerServer::handle(const std::string& client, Message message) {
  const std::string_view type = message.type();
  const std::string id(message.id());
  if (type == msg::kPredict) return on_predict(client, message);
  if (type == msg::kItem) return on_item(client, message);
  if (type == msg::kClose || type == msg::kCancel) {
    const auto entry = find_call(client, id);
    if (!entry) return;  // already over; the client learns from its terminal message
    if (type == msg::kClose) {
      // Only a stream call has input to close; for the others a close means nothing.
      if (entry->call->shape() != CallShape::kStream) return;
      entry->host->close_input(entry->call);
    } else {
      entry->host->cancel(entry->call);
    }
    return;
  }
  if (type == msg::kHealth) return reply(client, health(id));
  if (type == msg::kHello) {
    return reply(client, json{{"type", msg::kHello},
                              {"id", id},
                              {"protocol", kProtocolVersion},
                              {"worker_id", spec_.worker_id},
                              {"pid", getpid()},
                              {"device", spec_.device},
                              {"max_message_bytes", spec_.limits.max_message_bytes}});
  }
  if (type == msg::kLoad || type == msg::kReload)
    return on_load(client, message, type == msg::kReload);
  if (type == msg::kUnload) return on_unload(client, message);
  if (type == msg::kDrain) return on_drain(client, message);
  reply_error(client, id, invalid_argument("unknown message type \"" + std::string(type) + "\""));
}

void WorkerServer::on_predict(const std::string& client, Message& message) {
  const std::string id(message.id());
  const json& header = message.header;
  if (draining_) return reply_error(client, id, unavailable("the worker is draining"));
  const std::string model = string_field(header, "model");
  const std::string method_name = string_field(header, "method");
  const auto shape = call_shape_from_name(string_field(header, "shape"));
  if (!shape) {
    return reply_error(client, id,
                       invalid_argument("predict needs a shape: unary, generate or stream"));
  }
  std::shared_ptr<ModelHost> host;
  {
    std::lock_guard lock(models_mutex_);
    const auto it = models_.find(model);
    if (it == models_.end()) {
      return reply_error(client, id,
                         not_found("model \"" + model + "\" is not loaded in this worker"));
    }
    if (!it->second.host || it->second.state != "ready") {
      return reply_error(client, id, unavailable("model \"" + model + "\" is " + it->second.state));
    }
    host = it->second.host;
  }
  const MethodInfo* method = host->model().find_method(method_name);
  if (method == nullptr) {
    std::string names;
    for (const auto& info : host->model().methods())
      names += (names.empty() ? "" : ", ") + info.name;
    return reply_error(client, id,
                       not_found("model \"" + model + "\" has no method \"" + method_name +
                                 "\" (it has " + names + ")"));
  }
  const bool fits = (*shape == CallShape::kUnary && method->kind == MethodKind::kUnary) ||
                    (*shape == CallShape::kGenerate && method->kind == MethodKind::kGenerate) ||
                    (*shape == CallShape::kStream &&
                     (method->kind == MethodKind::kStream || method->kind == MethodKind::kUnary));
  if (!fits) {
    return reply_error(client, id,
                       invalid_argument("method " + method_name + " is a " +
                                        std::string(method_kind_name(method->kind)) +
                                        " method; it cannot be called with the " +
                                        std::string(call_shape_name(*shape)) + " shape"));
  }
  auto call = std::make_shared<Call>(client, id, *shape, *method, clock_.now());
  if (*shape == CallShape::kStream) {
    if (const auto it = header.find("window"); it != header.end()) {
      if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 ||
          it->get<int64_t>() > method->window) {
        return reply_error(
            client, id,
            invalid_argument("window must be from 1 to " + std::to_string(method->window) +
                             " for " + method_name));
      }
      call->set_window(it->get<int64_t>());
    }
  } else {
    static const json empty_inputs = json::object();
    const auto it = header.find("inputs");
    auto inputs =
        host->model().prepare(*method, it == header.end() ? empty_inputs : *it, message.parts);
    if (!inputs.ok()) return reply_error(client, id, inputs.error());
    call->set_inputs(std::move(inputs).value());
  }
  {
    std::lock_guard lock(calls_mutex_);
    const auto [it, inserted] = calls_.try_emplace({client, id}, nullptr);
    if (!inserted) {
      return reply_error(client, id,
                         invalid_argument("request id \"" + id + "\" is already in use"));
    }
    it->second = std::make_shared<CallEntry>(CallEntry{host, call});
  }
  const Status admitted = host->submit(call);
  if (!admitted.ok()) {
    {
      std::lock_guard lock(calls_mutex_);
      calls_.erase({client, id});
    }
    reply_error(client, id, admitted.error());
  }
}

void WorkerServer::on_item(const std::string& client, Message& message) {
  const auto entry = find_call(client, std::string(message.id()));
  if (!entry || entry->call->shape() != CallShape::kStream) return;
  static const json empty_inputs = json::object();
  const auto it = message.header.find("inputs");
  auto inputs = entry->host->model().prepare(
      entry->call->method(), it == message.header.end() ? empty_inputs : *it, message.parts);
  if (!inputs.ok()) {
    // A bad item ends its stream: the items after it were meant to follow it.
    const auto seq = message.header.value("seq", json(nullptr));
    entry->host->cancel(entry->call, Error(inputs.error().code(), "item " + json_text(seq) + ": " +
                                                                      inputs.error().message()));
    return;
  }
  entry->host->add_item(entry->call, std::move(inputs).value());
}

void WorkerServer::on_load(const std::string& client, const Message& message, bool reload) {
  const std::string id(message.id());
  if (draining_) return reply_error(client, id, unavailable("the worker is draining"));
  const json& header = message.header;
  std::string name = string_field(header, "model");
  std::string package = string_field(header, "package");
  PackageExpectations expect;
  // A check that was asked for is never skipped: a field of the wrong type is refused.
  if (const auto it = header.find("sha256"); it != header.end()) {
    if (!it->is_string()) {
      return reply_error(client, id, invalid_argument("load: sha256 must be a hex string"));
    }
    expect.sha256 = it->get<std::string>();
  }
  if (const auto it = header.find("size"); it != header.end()) {
    if (!it->is_number_unsigned()) {
      return reply_error(client, id, invalid_argument("load: size must be a byte count"));
    }
    expect.size = it->get<uint64_t>();
  }
  int64_t instances = 0;  // 0: the config's (or 1)
  if (const auto it = header.find("instances"); it != header.end()) {
    if (!it->is_number_unsigned() || it->get<uint64_t>() > 64) {
      return reply_error(client, id,
                         invalid_argument("instances must be from 0 (config.yaml's) to 64"));
    }
    instances = it->get<int64_t>();
  }
  if (reload) {
    std::lock_guard lock(models_mutex_);
    const auto it = models_.find(name);
    if (it == models_.end() || it->second.state != "ready") {
      return reply_error(client, id,
                         not_found("model \"" + name + "\" is not loaded; load it first"));
    }
    if (package.empty()) package = it->second.package;
  } else if (package.empty()) {
    return reply_error(client, id, invalid_argument("load needs a package folder"));
  }
  const auto timeout = timeout_field(header);
  ++queued_loads_;
  post_job([this, client, id, name, package, expect, instances, reload, timeout] {
    load_job(client, id, name, package, expect, instances, reload, timeout);
  });
}

Result<std::shared_ptr<ModelHost>> WorkerServer::load_model(const std::string& name,
                                                            const std::string& package_dir,
                                                            const PackageExpectations& expect,
                                                            int64_t instances, ModelEntry& entry) {
  const auto started = clock_.now();
  OUTPOST_ASSIGN_OR_RETURN(auto package, open_model_package(package_dir, expect));
  ModelLoader* loader = nullptr;
  for (const auto& candidate : loaders_) {
    if (candidate->type() == package.config.checkpoint_type) loader = candidate.get();
  }
  if (loader == nullptr) {
    return invalid_argument("no loader for checkpoints.type " + package.config.checkpoint_type);
  }
  LoadOptions options;
  options.device = spec_.device;
  options.instances = instances;
  options.max_tensor_bytes = spec_.limits.max_message_bytes;
  // On a thread that ends with the load, so that the OpenMP team its warm-up starts ends too
  // (compute_threads.h says why teams beyond the device's slots cost).
  OUTPOST_ASSIGN_OR_RETURN(auto model, std::async(std::launch::async, [&] {
                                         return loader->load(package, options);
                                       }).get());
  entry.package = package_dir;
  entry.model_id = package.config.model_id;
  entry.file_sha256 = package.file_sha256;
  entry.load_ms = std::chrono::duration_cast<milliseconds>(clock_.now() - started).count();
  auto host =
      std::make_shared<ModelHost>(name, std::move(model), scheduler_, compute_, *this, clock_);
  host->start();
  return host;
}

void WorkerServer::load_job(const std::string& client, const std::string& id, std::string name,
                            const std::string& package, const PackageExpectations& expect,
                            int64_t instances, bool reload, milliseconds timeout) {
  if (name.empty()) {
    // The package's model id names it; read config.yaml early so that health shows the load.
    auto opened = open_model_package(package, {});
    name =
        opened.ok() ? opened->config.model_id : std::filesystem::path(package).filename().string();
  }
  // The load leaves the queue (queued_loads_) and shows in models_ in one step under the lock,
  // so that health never sees a moment with neither.
  if (reload) {
    std::lock_guard lock(models_mutex_);
    --queued_loads_;
  } else {
    std::lock_guard lock(models_mutex_);
    --queued_loads_;
    const auto it = models_.find(name);
    if (it != models_.end() && it->second.state != "failed") {
      if (!client.empty()) {
        reply_error(client, id,
                    Error(ErrorCode::kAlreadyExists, "model \"" + name + "\" is already " +
                                                         it->second.state +
                                                         " in this worker; unload or reload it"));
      }
      return;
    }
    ModelEntry& entry = models_[name];
    entry = ModelEntry{};
    entry.state = "loading";
    entry.package = package;
  }
  LOG_INFO("worker.load", (reload ? "reloading " : "loading ") << name << " from " << package);
  ModelEntry loaded;
  auto host = load_model(name, package, expect, instances, loaded);
  if (!host.ok()) {
    LOG_WARNING("worker.load_failed", name << ": " << host.error().to_string());
    if (!reload) {
      std::lock_guard lock(models_mutex_);
      ModelEntry& entry = models_[name];
      entry.state = "failed";
      entry.message = host.error().to_string();
    }
    if (!client.empty()) reply_error(client, id, host.error());
    return;
  }
  loaded.state = "ready";
  loaded.host = *host;
  std::shared_ptr<ModelHost> old;
  {
    std::lock_guard lock(models_mutex_);
    ModelEntry& entry = models_[name];
    old = entry.host;
    entry = loaded;
  }
  json out{{"type", reload ? msg::kReloaded : msg::kLoaded},
           {"id", id},
           {"model", name},
           {"model_id", loaded.model_id},
           {"file_sha256", loaded.file_sha256},
           {"load_ms", loaded.load_ms},
           {"memory_bytes", (*host)->model().memory().footprint()}};
  json methods = json::array();
  for (const auto& method : (*host)->model().methods()) methods.push_back(method.to_json());
  out["methods"] = std::move(methods);
  if (old) {
    // The new version already takes new calls; the old one finishes what it has.
    out["previous"] = unload_host(name, old, timeout);
  }
  LOG_INFO("worker.loaded", name << " ready in " << loaded.load_ms << " ms, "
                                 << out["memory_bytes"].get<uint64_t>() << " bytes");
  if (!client.empty()) reply(client, out);
}

json WorkerServer::unload_host(const std::string& name, const std::shared_ptr<ModelHost>& host,
                               milliseconds timeout) {
  const size_t cancelled = host->shutdown(timeout);
  const uint64_t rss_before = process_rss_bytes();
  const ReleaseReport report = host->release();
  const uint64_t rss_after = process_rss_bytes();
  if (!report.memory_returned) {
    LOG_ERROR("worker.memory_not_returned", name << ": " << report.detail);
    std::lock_guard lock(models_mutex_);
    problems_.push_back("model " + name + ": " + report.detail);
  }
  return json{{"cancelled_calls", cancelled},
              {"freed_bytes", report.freed_bytes},
              {"memory_returned", report.memory_returned},
              {"detail", report.detail},
              {"rss_freed_bytes", rss_before > rss_after ? rss_before - rss_after : 0}};
}

void WorkerServer::on_unload(const std::string& client, const Message& message) {
  const std::string id(message.id());
  const std::string name = string_field(message.header, "model");
  std::shared_ptr<ModelHost> host;
  {
    std::lock_guard lock(models_mutex_);
    const auto it = models_.find(name);
    if (it == models_.end()) {
      return reply_error(client, id, not_found("model \"" + name + "\" is not loaded"));
    }
    if (it->second.state == "failed") {
      models_.erase(it);
      return reply(client, json{{"type", msg::kUnloaded}, {"id", id}, {"model", name}});
    }
    if (it->second.state != "ready") {
      return reply_error(
          client, id,
          Error(ErrorCode::kFailedPrecondition, "model \"" + name + "\" is " + it->second.state));
    }
    it->second.state = "unloading";
    host = it->second.host;
  }
  const auto timeout = timeout_field(message.header);
  post_job([this, client, id, name, host, timeout] {
    json out = unload_host(name, host, timeout);
    {
      std::lock_guard lock(models_mutex_);
      models_.erase(name);
    }
    out["type"] = msg::kUnloaded;
    out["id"] = id;
    out["model"] = name;
    LOG_INFO("worker.unloaded",
             name << " unloaded, " << out["freed_bytes"].get<uint64_t>() << " bytes freed");
    reply(client, out);
  });
}

void WorkerServer::drain(milliseconds timeout) {
  std::vector<std::pair<std::string, std::shared_ptr<ModelHost>>> hosts;
  {
    std::lock_guard lock(models_mutex_);
    for (auto& [name, entry] : models_) {
      if (entry.host) hosts.emplace_back(name, entry.host);
    }
  }
  const auto deadline = clock_.now() + timeout;
  for (const auto& [name, host] : hosts) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock_.now());
    host->shutdown(std::max(left, milliseconds(0)));
  }
}

void WorkerServer::on_drain(const std::string& client, const Message& message) {
  const std::string id(message.id());
  const auto exit_field = message.header.find("exit");
  if (exit_field != message.header.end() && !exit_field->is_boolean()) {
    return reply_error(client, id, invalid_argument("drain: exit must be true or false"));
  }
  const bool exit = exit_field == message.header.end() || exit_field->get<bool>();
  const auto timeout = timeout_field(message.header);
  draining_ = true;
  LOG_NOTICE("worker.drain", "draining" << (exit ? " and exiting" : ""));
  post_job([this, client, id, exit, timeout] {
    drain(timeout);
    reply(client, json{{"type", msg::kDrained}, {"id", id}});
    if (exit) {
      exit_requested_ = true;
      channel_->wake();
    }
  });
}

json WorkerServer::health(std::string_view id) {
  json models = json::array();
  bool ready = !draining_;
  std::vector<std::string> problems;
  const auto tenants = scheduler_.stats();
  {
    std::lock_guard lock(models_mutex_);
    problems = problems_;
    // A load still waiting for the admin thread is not in models_ yet, but the worker is not
    // ready while it waits.
    if (queued_loads_ > 0) ready = false;
    for (const auto& [name, entry] : models_) {
      json item{{"name", name},
                {"state", entry.state},
                {"model_id", entry.model_id},
                {"package", entry.package}};
      if (!entry.message.empty()) item["message"] = entry.message;
      if (entry.state == "loading") ready = false;
      if (entry.host) {
        const auto memory = entry.host->model().memory();
        item["memory_bytes"] = memory.footprint();
        if (memory.cache_bytes > 0) item["cache_bytes"] = memory.cache_bytes;
        item["weights_bytes"] = memory.weights_bytes;
        item["device_bytes"] = memory.device_bytes;
        item["instances"] = entry.host->model().instance_count();
        item["load_ms"] = entry.load_ms;
        item["file_sha256"] = entry.file_sha256;
        json methods = json::array();
        for (const auto& method : entry.host->model().methods()) {
          methods.push_back(json{{"name", method.name}, {"kind", method_kind_name(method.kind)}});
        }
        item["methods"] = std::move(methods);
        item["stats"] = entry.host->stats();
        for (const auto& tenant : tenants) {
          if (tenant.id != entry.host->tenant()) continue;
          item["stats"]["device_time_us"] =
              std::chrono::duration_cast<std::chrono::microseconds>(tenant.device_time).count();
          item["stats"]["device_grants"] = tenant.grants;
        }
      }
      models.push_back(std::move(item));
    }
  }
  return json{
      {"type", msg::kHealth},
      {"id", id},
      {"ready", ready},
      {"healthy", problems.empty()},
      {"draining", draining_.load()},
      {"problems", problems},
      {"worker_id", spec_.worker_id},
      {"pid", getpid()},
      {"protocol", kProtocolVersion},
      {"uptime_ms", std::chrono::duration_cast<milliseconds>(clock_.now() - started_).count()},
      {"rss_bytes", process_rss_bytes()},
      {"device", device_json(spec_)},
      {"models", std::move(models)}};
}

void WorkerServer::post_job(std::function<void()> job) {
  {
    std::lock_guard lock(jobs_mutex_);
    jobs_.push_back(std::move(job));
  }
  jobs_changed_.notify_one();
}

void WorkerServer::admin_loop() {
  while (true) {
    std::function<void()> job;
    {
      std::unique_lock lock(jobs_mutex_);
      jobs_changed_.wait(lock, [this] { return jobs_stopping_ || !jobs_.empty(); });
      if (jobs_stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace outpost::runtime
