#include "agent/reconciler.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include <boost/asio/post.hpp>

#include "common/log.h"

namespace outpost::agent {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

constexpr auto kTick = milliseconds(500);
constexpr auto kLoadTimeout = seconds(300);
constexpr auto kUnloadTimeout = seconds(60);

const protocol::ArtifactRef* model_file(const protocol::DesiredReplica& spec) {
  const protocol::ArtifactRef* found = nullptr;
  for (const auto& artifact : spec.artifacts) {
    if (artifact.name == "config.yaml") continue;
    if (found != nullptr) return nullptr;  // several: the worker checks config.yaml's hashes
    found = &artifact;
  }
  return found;
}

}  // namespace

std::string_view replica_state_name(ReplicaState state) {
  switch (state) {
    case ReplicaState::kPending:
      return "pending";
    case ReplicaState::kFetching:
      return "fetching";
    case ReplicaState::kLoading:
      return "loading";
    case ReplicaState::kReady:
      return "ready";
    case ReplicaState::kFailed:
      return "failed";
    case ReplicaState::kStopping:
      return "stopping";
  }
  return "unknown";
}

Reconciler::Reconciler(boost::asio::io_context& io, AgentConfig config, Inventory inventory,
                       const ArtifactCache& artifacts, std::shared_ptr<ControlSession> session,
                       std::shared_ptr<Router> router)
    : io_(io),
      config_(std::move(config)),
      inventory_(std::move(inventory)),
      devices_(devices_of(inventory_, config_)),
      supervisor_(config_, inventory_, devices_),
      artifacts_(artifacts),
      session_(std::move(session)),
      router_(std::move(router)),
      max_workers_(config_.max_workers),
      restart_backoff_max_seconds_(config_.restart_backoff_max_seconds),
      idle_worker_seconds_(config_.idle_worker_seconds),
      spare_workers_(config_.spare_workers) {
  supervisor_.stop_leftovers();
  last_pass_ms_ = std::chrono::duration_cast<milliseconds>(Clock::now().time_since_epoch()).count();
  thread_ = std::thread([this] { run(); });
}

Reconciler::~Reconciler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Reconciler::set_on_change(std::function<void()> on_change) {
  std::lock_guard<std::mutex> lock(mutex_);
  on_change_ = std::move(on_change);
}

void Reconciler::publish_ready_locked() {
  std::vector<Router::Target> ready;
  for (const auto& [id, replica] : replicas_) {
    if (replica->state != ReplicaState::kReady) continue;
    const auto worker = workers_.find(replica->worker_id);
    if (worker == workers_.end()) continue;
    auto client = worker->second->run.client();
    if (!client) continue;
    ready.push_back({id, replica->spec.deployment_id, std::move(client)});
  }
  router_->publish(std::move(ready));
}

void Reconciler::notify_change() {
  std::function<void()> callback;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    publish_ready_locked();
    callback = on_change_;
  }
  if (callback) boost::asio::post(io_, callback);
}

void Reconciler::update_limits(const AgentConfig& config) {
  router_->set_limits({config.max_streams, config.max_inflight_per_replica});
  max_workers_ = config.max_workers;
  restart_backoff_max_seconds_ = config.restart_backoff_max_seconds;
  idle_worker_seconds_ = config.idle_worker_seconds;
  spare_workers_ = config.spare_workers;
  wake_.notify_all();  // a pass now: a higher max_workers may let waiting replicas start
}

void Reconciler::apply(protocol::DesiredState state) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const uint64_t newest = pending_state_ ? pending_state_->version : applied_version_;
    if (state.version < newest || (state.version == newest && state.version != 0 &&
                                   (pending_state_ || applied_version_ == state.version))) {
      return;  // already have it (a re-sync after a reconnect, or a late push)
    }
    LOG_INFO("agent.desired_state", "desired state version " << state.version << ": "
                                                             << state.replicas.size()
                                                             << " replica(s)");
    pending_state_ = std::move(state);
  }
  wake_.notify_all();
}

void Reconciler::set_state(Replica& replica, ReplicaState state, std::string message) {
  bool changed = false;
  std::function<void()> callback;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    changed = replica.state != state || replica.message != message;
    replica.state = state;
    replica.message = std::move(message);
    // The router learns of it in the same step as report(): a replica is never reported ready
    // before a predict for it can be routed here.
    if (changed) publish_ready_locked();
    callback = on_change_;
  }
  if (!changed) return;
  if (state == ReplicaState::kReady) {
    LOG_NOTICE("agent.replica_ready",
               "replica " << replica.spec.replica_id << " is ready on " << replica.device);
  } else if (state == ReplicaState::kFailed) {
    LOG_ERROR("agent.replica_failed",
              "replica " << replica.spec.replica_id << " failed: " << replica.message);
  }
  if (callback) boost::asio::post(io_, callback);
}

void Reconciler::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, kTick);
    if (stopping_) break;
    lock.unlock();
    pass();
    last_pass_ms_ =
        std::chrono::duration_cast<milliseconds>(Clock::now().time_since_epoch()).count();
    lock.lock();
  }
  std::function<void()> done = std::move(on_stopped_);
  lock.unlock();
  // Drain and stop every worker: in-flight calls finish within the drain timeout.
  std::vector<std::shared_ptr<Worker>> workers;
  {
    std::lock_guard<std::mutex> guard(mutex_);
    for (auto& [id, worker] : workers_) workers.push_back(worker);
    workers_.clear();
  }
  for (auto& worker : workers) supervisor_.stop(worker->run, worker->plan.worker_id, seconds(20));
  if (done) boost::asio::post(io_, done);
}

void Reconciler::stop(std::function<void()> done) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    on_stopped_ = std::move(done);
  }
  wake_.notify_all();
}

bool Reconciler::healthy() const {
  const int64_t now =
      std::chrono::duration_cast<milliseconds>(Clock::now().time_since_epoch()).count();
  // A pass may wait on a model load for minutes; the watchdog allows for that.
  return now - last_pass_ms_.load() <
         std::chrono::duration_cast<milliseconds>(kLoadTimeout).count() + 60'000;
}

void Reconciler::pass() {
  // 1. Take in a new desired state.
  std::optional<protocol::DesiredState> state;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state = std::move(pending_state_);
    pending_state_.reset();
  }
  if (state) {
    std::unique_lock<std::mutex> lock(mutex_);
    std::set<std::string> wanted;
    for (auto& spec : state->replicas) {
      wanted.insert(spec.replica_id);
      auto it = replicas_.find(spec.replica_id);
      if (it != replicas_.end() && it->second->state != ReplicaState::kStopping &&
          it->second->spec == spec) {
        continue;
      }
      auto replica = std::make_shared<Replica>();
      if (it != replicas_.end()) {
        // Same id, another model version or other resources: unload the old, load the new.
        replica->needs_reload = true;
        it->second->state = ReplicaState::kStopping;
        replicas_.erase(it);
      }
      replica->spec = std::move(spec);
      replicas_[replica->spec.replica_id] = replica;
      LOG_INFO("agent.deployment_accepted", "replica " << replica->spec.replica_id << " of "
                                                       << replica->spec.deployment_id
                                                       << " accepted");
    }
    for (auto& [id, replica] : replicas_) {
      if (wanted.count(id) == 0 && replica->state != ReplicaState::kStopping) {
        replica->state = ReplicaState::kStopping;
        replica->message = "no longer assigned to this node";
      }
    }
    applied_version_ = state->version;
    lock.unlock();  // notify_change() takes mutex_ itself
    notify_change();
  }

  // 2. Artifacts.
  std::vector<std::shared_ptr<Replica>> replicas;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [id, replica] : replicas_) replicas.push_back(replica);
  }
  for (auto& replica : replicas) {
    if (replica->state != ReplicaState::kStopping) fetch_missing(*replica, replica);
  }

  // 3. Placement.
  std::vector<protocol::DesiredReplica> specs;
  for (auto& replica : replicas) {
    if (replica->state != ReplicaState::kStopping) specs.push_back(replica->spec);
  }
  Placement placement;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    placement = place(devices_, specs, placement_);
    std::set<std::string> running;
    for (const auto& [id, worker] : workers_) {
      if (worker->run.started()) running.insert(id);
    }
    cap_workers(placement, static_cast<size_t>(max_workers_.load()), running);
    placement_ = placement;
  }
  for (auto& replica : replicas) {
    const auto& id = replica->spec.replica_id;
    if (auto why = placement.unplaced.find(id); why != placement.unplaced.end()) {
      set_state(*replica, ReplicaState::kFailed, "does not fit on this node: " + why->second);
    } else if (auto device = placement.device_of.find(id); device != placement.device_of.end()) {
      std::lock_guard<std::mutex> lock(mutex_);
      replica->device = device->second;
    }
  }

  // 4. Workers: start what the plan needs, watch what runs. A worker the plan no longer names
  // holds nothing any more: its replicas are unloaded below and it stops as idle.
  for (const auto& plan : placement.workers) ensure_worker(plan);
  std::vector<std::shared_ptr<Worker>> workers;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::set<std::string> planned;
    for (const auto& plan : placement.workers) planned.insert(plan.worker_id);
    for (auto& [id, worker] : workers_) {
      if (planned.count(id) == 0) {
        worker->plan.replica_ids.clear();
        worker->spare = false;  // step 6 says again whether it is one
      }
      workers.push_back(worker);
    }
  }
  for (auto& worker : workers) check_worker(*worker);

  // 5. Unload what moved or left, load what is placed and ready to load.
  for (auto& worker : workers) {
    std::set<std::string> planned(worker->plan.replica_ids.begin(), worker->plan.replica_ids.end());
    const auto loaded = worker->loaded;
    for (const auto& id : loaded) {
      std::shared_ptr<Replica> replica;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (auto it = replicas_.find(id); it != replicas_.end()) replica = it->second;
      }
      if (planned.count(id) == 0 || !replica || replica->state == ReplicaState::kStopping ||
          replica->needs_reload) {
        unload_replica(*worker, id);
        if (replica) replica->needs_reload = false;
      }
    }
    for (const auto& id : worker->plan.replica_ids) {
      std::shared_ptr<Replica> replica;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (auto it = replicas_.find(id); it != replicas_.end()) replica = it->second;
      }
      if (!replica || replica->state == ReplicaState::kStopping || worker->loaded.count(id) != 0 ||
          !worker->run.client()) {
        continue;
      }
      if (replica->artifact_paths.size() != replica->spec.artifacts.size()) continue;
      if (Clock::now() < replica->next_load) continue;
      load_replica(*worker, *replica);
    }
  }

  // 6. Warm spares, after the loads so that they never delay one: a device without replicas
  // keeps its shared worker started.
  const std::vector<WorkerPlan> spares = spare_plans(placement);
  for (const auto& plan : spares) ensure_worker(plan, true);
  for (const auto& plan : spares) {
    std::shared_ptr<Worker> worker;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      worker = workers_.at(plan.worker_id);
    }
    check_worker(*worker);
  }

  // 7. Forget stopped replicas and stop idle workers.
  std::vector<std::shared_ptr<Worker>> idle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = replicas_.begin(); it != replicas_.end();) {
      bool still_loaded = false;
      for (auto& [wid, worker] : workers_) still_loaded |= worker->loaded.count(it->first) != 0;
      if (it->second->state == ReplicaState::kStopping && !still_loaded &&
          router_->inflight(it->first) == 0) {
        it = replicas_.erase(it);
      } else {
        ++it;
      }
    }
    std::set<std::string> planned;
    for (const auto& plan : placement.workers) planned.insert(plan.worker_id);
    for (const auto& plan : spares) planned.insert(plan.worker_id);
    const auto now = Clock::now();
    const auto keep_for = seconds(idle_worker_seconds_.load());
    size_t kept = 0;
    for (auto it = workers_.begin(); it != workers_.end();) {
      Worker& worker = *it->second;
      if (planned.count(it->first) != 0 || !worker.loaded.empty()) {
        worker.idle_since.reset();
        ++it;
        continue;
      }
      // Kept for a while if the next replica of its device would use it again (a device's
      // shared worker, not an mps or MIG worker of one replica) and a worker slot is free.
      const bool reusable = worker.plan.worker_id == worker.plan.device_id &&
                            worker.run.started() &&
                            placement.workers.size() + spares.size() + kept <
                                static_cast<size_t>(max_workers_.load());
      if (reusable && keep_for.count() > 0) {
        if (!worker.idle_since) {
          worker.idle_since = now;
          LOG_INFO("agent.worker_idle", "worker " << it->first << " holds no replica; kept for "
                                                  << keep_for.count()
                                                  << " s (workers.idle_seconds)");
        }
        if (now - *worker.idle_since < keep_for) {
          ++kept;
          ++it;
          continue;
        }
      }
      idle.push_back(it->second);
      it = workers_.erase(it);
    }
  }
  for (auto& worker : idle) {
    LOG_INFO("agent.worker_stop", "stopping idle worker " << worker->plan.worker_id);
    supervisor_.stop(worker->run, worker->plan.worker_id, seconds(10));
  }
  if (!idle.empty()) notify_change();
}

void Reconciler::fetch_missing(Replica& replica, const std::shared_ptr<Replica>& handle) {
  if (replica.fetch_in_flight || Clock::now() < replica.next_fetch) return;
  for (const auto& artifact : replica.spec.artifacts) {
    if (replica.artifact_paths.count(artifact.name) != 0) continue;
    if (auto cached = artifacts_.find(artifact.sha256, artifact.size)) {
      replica.artifact_paths[artifact.name] = *cached;
      continue;
    }
    replica.fetch_in_flight = true;
    set_state(replica, ReplicaState::kFetching, "downloading " + artifact.name);
    std::weak_ptr<Reconciler> weak = shared_from_this();
    session_->fetch_artifact(
        artifact, artifacts_, [weak, handle, artifact](Result<std::string> path) {
          auto self = weak.lock();
          if (!self) return;
          {
            std::lock_guard<std::mutex> lock(self->mutex_);
            handle->fetch_in_flight = false;
            if (path.ok()) {
              handle->artifact_paths[artifact.name] = path.value();
              handle->fetch_failures = 0;
            } else {
              handle->fetch_failures++;
              handle->next_fetch = Clock::now() + restart_delay(handle->fetch_failures, 60);
            }
          }
          if (!path.ok()) {
            const bool bad_file = path.error().code() == ErrorCode::kDataLoss ||
                                  path.error().code() == ErrorCode::kResourceExhausted;
            self->set_state(*handle, bad_file ? ReplicaState::kFailed : ReplicaState::kFetching,
                            "artifact " + artifact.name + ": " + path.error().message());
          }
          self->wake_.notify_all();
        });
    return;  // one download at a time per replica
  }
  if (replica.state == ReplicaState::kPending || replica.state == ReplicaState::kFetching) {
    set_state(replica, ReplicaState::kLoading, "waiting for a worker");
  }
}

std::vector<WorkerPlan> Reconciler::spare_plans(const Placement& placement) const {
  std::vector<WorkerPlan> out;
  if (!spare_workers_.load()) return out;
  std::set<std::string> busy_devices;
  for (const auto& plan : placement.workers) {
    if (plan.worker_id == plan.device_id) busy_devices.insert(plan.device_id);
  }
  // Spares take only the worker slots that planned workers leave free.
  size_t slots = placement.workers.size();
  for (const auto& device : devices_) {
    if (device.slicing == SlicingMode::kMps || busy_devices.count(device.id) != 0) continue;
    if (slots >= static_cast<size_t>(max_workers_.load())) break;
    ++slots;
    WorkerPlan plan;  // what place() plans for the device's shared worker, with no replica yet
    plan.worker_id = device.id;
    plan.device_id = device.id;
    plan.slicing = device.slicing;
    plan.memory_limit_bytes = device.memory_bytes;
    out.push_back(std::move(plan));
  }
  return out;
}

void Reconciler::ensure_worker(const WorkerPlan& plan, bool spare) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& worker = workers_[plan.worker_id];
  if (!worker) {
    worker = std::make_shared<Worker>();
    LOG_INFO("agent.worker_planned", "worker " << plan.worker_id << " on " << plan.device_id << " ("
                                               << slicing_mode_name(plan.slicing)
                                               << (spare ? ", warm spare" : "") << ")");
  }
  worker->spare = spare;
  worker->plan = plan;
  for (const auto& id : plan.replica_ids) {
    if (auto it = replicas_.find(id); it != replicas_.end()) it->second->worker_id = plan.worker_id;
  }
}

void Reconciler::check_worker(Worker& worker) {
  const bool wanted = !worker.plan.replica_ids.empty() || worker.spare;
  const Supervisor::Check seen =
      supervisor_.check(worker.run, worker.plan, wanted, restart_backoff_max_seconds_.load());
  std::vector<std::pair<std::shared_ptr<Replica>, std::string>> reloads;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (seen.ended) {
      // What it held is gone with it: loaded again once it runs.
      for (const auto& id : worker.loaded) {
        if (auto it = replicas_.find(id); it != replicas_.end()) {
          reloads.emplace_back(it->second, "worker " + seen.message + "; restarting");
        }
      }
      worker.loaded.clear();
    }
    if (seen.start_failed) {
      for (const auto& id : worker.plan.replica_ids) {
        if (auto it = replicas_.find(id); it != replicas_.end()) {
          reloads.emplace_back(it->second, "worker could not start: " + seen.message);
        }
      }
    }
  }
  for (auto& [replica, message] : reloads) {
    if (replica->state != ReplicaState::kStopping) {
      set_state(*replica, ReplicaState::kLoading, std::move(message));
    }
  }
}

Result<std::string> Reconciler::assemble_package(const Replica& replica) {
  const std::string dir = config_.state_dir + "/packages/" +
                          safe_name(replica.spec.model_version_id) + "-" +
                          file_tag(replica.spec.model_version_id).substr(0, 8);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return internal_error("cannot create " + dir + ": " + ec.message());
  for (const auto& [name, path] : replica.artifact_paths) {
    const fs::path link = fs::path(dir) / name;
    fs::remove(link, ec);
    fs::create_symlink(path, link, ec);
    if (ec) return internal_error("cannot link " + link.string() + ": " + ec.message());
  }
  return dir;
}

void Reconciler::load_replica(Worker& worker, Replica& replica) {
  auto package = assemble_package(replica);
  if (!package.ok()) {
    set_state(replica, ReplicaState::kFailed, package.error().message());
    return;
  }
  replica.needs_reload = false;  // whatever version this id had before is gone from here on
  set_state(replica, ReplicaState::kLoading, "loading into worker " + worker.plan.worker_id);
  protocol::LoadRequest request;
  request.package = package.value();
  request.model = replica.spec.replica_id;
  if (const protocol::ArtifactRef* file = model_file(replica.spec)) {
    request.sha256 = file->sha256;
    request.size = file->size;
  }
  auto client = worker.run.client();
  auto future = client->load(request);
  auto loaded = wait_future(future, kLoadTimeout);
  if (!loaded) {
    replica.load_failures++;
    replica.next_load = Clock::now() + restart_delay(replica.load_failures, 300);
    set_state(replica, ReplicaState::kFailed, "the worker took too long to load the model");
    return;
  }
  if (!loaded->ok()) {
    replica.load_failures++;
    replica.next_load = Clock::now() + restart_delay(replica.load_failures, 300);
    LOG_ERROR("agent.deployment_refused",
              "replica " << replica.spec.replica_id
                         << ": the model was refused: " << loaded->error().message());
    set_state(replica, ReplicaState::kFailed, "model refused: " + loaded->error().message());
    return;
  }
  replica.load_failures = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    worker.loaded.insert(replica.spec.replica_id);
  }
  set_state(replica, ReplicaState::kReady, "");
}

void Reconciler::unload_replica(Worker& worker, const std::string& replica_id) {
  if (auto client = worker.run.client()) {
    auto future = client->unload(replica_id, kUnloadTimeout);
    auto unloaded = wait_future(future, kUnloadTimeout + seconds(5));
    if (unloaded && !unloaded->ok() && unloaded->error().code() != ErrorCode::kNotFound) {
      LOG_WARNING("agent.unload_failed",
                  "unloading " << replica_id << ": " << unloaded->error().message());
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  worker.loaded.erase(replica_id);
  LOG_INFO("agent.replica_unloaded", "replica " << replica_id << " unloaded");
}

protocol::ReplicaStatus Reconciler::replica_status(const Replica& replica) const {
  protocol::ReplicaStatus status;
  status.replica_id = replica.spec.replica_id;
  status.state = std::string(replica_state_name(replica.state));
  status.message = replica.message;
  status.deployment_id = replica.spec.deployment_id;
  status.model_version_id = replica.spec.model_version_id;
  status.device = replica.device;
  status.worker = replica.worker_id;
  status.ongoing_requests = router_->inflight(replica.spec.replica_id);
  return status;
}

protocol::NodeReport Reconciler::report() const {
  std::lock_guard<std::mutex> lock(mutex_);
  protocol::NodeReport report;
  report.applied_version = static_cast<int64_t>(applied_version_);
  for (const auto& [id, replica] : replicas_) report.replicas.push_back(replica_status(*replica));
  return report;
}

nlohmann::json Reconciler::status() const {
  nlohmann::json out = protocol::to_json(report());
  out["summary"] = summary();
  std::lock_guard<std::mutex> lock(mutex_);
  out["desired_version"] = applied_version_;
  nlohmann::json workers = nlohmann::json::array();
  for (const auto& [id, worker] : workers_) {
    workers.push_back({{"worker", id},
                       {"device", worker->plan.device_id},
                       {"slicing", std::string(slicing_mode_name(worker->plan.slicing))},
                       {"pid", worker->run.pid()},
                       {"restarts", worker->run.restarts()},
                       {"last_exit", worker->run.last_exit()},
                       {"spare", worker->spare},
                       {"replicas", worker->plan.replica_ids}});
  }
  out["workers"] = workers;
  out["open_streams"] = router_->open_streams();
  return out;
}

std::string Reconciler::summary() const {
  std::lock_guard<std::mutex> lock(mutex_);
  int ready = 0;
  int total = 0;
  for (const auto& [id, replica] : replicas_) {
    if (replica->state == ReplicaState::kStopping) continue;
    ++total;
    if (replica->state == ReplicaState::kReady) ++ready;
  }
  return std::to_string(ready) + " of " + std::to_string(total) + " replicas ready";
}

}  // namespace outpost::agent
