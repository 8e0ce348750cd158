// Desired state -> running replicas.
//
// One reconcile thread owns the slow work: artifact downloads are started from it (they run on
// the tunnel), worker processes are spawned, restarted and drained from it through the
// Supervisor (agent/supervisor.h; they live as long as it does: workers die with the agent,
// PR_SET_PDEATHSIG), and models are loaded and unloaded from it. Each pass:
//   1. every desired replica gets its artifacts (verified, cached) or stays `fetching`;
//   2. placement puts replicas on devices and workers (agent/placement.h);
//   3. every planned worker runs (a crashed one is restarted with backoff, its replicas
//      reported not ready meanwhile) and every placed replica with its artifacts is loaded;
//   4. replicas no longer wanted are unloaded (the worker drains them), idle workers stopped;
//   5. a device with no replica keeps its shared worker started, model-less, as a warm spare
//      (workers.spare), so that a replica placed there later skips the process start.
// State changes are reported up at once (node.report) and every 5 s, and the ready replicas are
// published to the Router (agent/router.h), which routes predict streams without waiting on
// this thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "agent/artifact_cache.h"
#include "agent/config.h"
#include "agent/control_session.h"
#include "agent/inventory.h"
#include "agent/placement.h"
#include "agent/router.h"
#include "agent/supervisor.h"
#include "protocol/control_protocol.h"
#include "protocol/worker_client.h"
#include <sys/types.h>

namespace outpost::agent {

enum class ReplicaState { kPending, kFetching, kLoading, kReady, kFailed, kStopping };
std::string_view replica_state_name(ReplicaState state);

class Reconciler : public std::enable_shared_from_this<Reconciler> {
 public:
  Reconciler(boost::asio::io_context& io, AgentConfig config, Inventory inventory,
             const ArtifactCache& artifacts, std::shared_ptr<ControlSession> session,
             std::shared_ptr<Router> router);
  ~Reconciler();

  // Called whenever a replica changes state (from the reconcile thread).
  void set_on_change(std::function<void()> on_change);

  // A newer desired state (older or equal versions are ignored).
  void apply(protocol::DesiredState state);

  // node.report's body without the inventory: applied_version and each replica's status.
  protocol::NodeReport report() const;
  // The status socket's view: replicas, workers, limits.
  nlohmann::json status() const;
  // "3 of 4 replicas ready" for systemd's STATUS=.
  std::string summary() const;
  // The reconcile thread is alive and not stuck (the systemd watchdog asks).
  bool healthy() const;

  void update_limits(const AgentConfig& config);

  // Drains every worker (in-flight calls finish), stops them, then `done` (from the reconcile
  // thread).
  void stop(std::function<void()> done);

 private:
  struct Replica {
    protocol::DesiredReplica spec;
    ReplicaState state = ReplicaState::kPending;
    std::string message;
    std::string worker_id;
    std::string device;
    std::map<std::string, std::string> artifact_paths;  // name -> cached path
    bool fetch_in_flight = false;
    std::chrono::steady_clock::time_point next_fetch{};
    int fetch_failures = 0;
    int load_failures = 0;
    std::chrono::steady_clock::time_point next_load{};
    bool needs_reload = false;  // the same id now means another model version
  };

  struct Worker {
    WorkerPlan plan;
    WorkerRun run;                 // its process, started and stopped by the supervisor
    std::set<std::string> loaded;  // replica ids
    // Since when it holds no replica (workers.idle_seconds keeps it that long).
    std::optional<std::chrono::steady_clock::time_point> idle_since;
    bool spare = false;  // started with no replica, for the next one of its device
  };

  void run();
  void pass();
  void fetch_missing(Replica& replica, const std::shared_ptr<Replica>& handle);
  void ensure_worker(const WorkerPlan& plan, bool spare = false);
  std::vector<WorkerPlan> spare_plans(const Placement& placement) const;
  // The supervisor's check, and what it means for the worker's replicas.
  void check_worker(Worker& worker);
  void load_replica(Worker& worker, Replica& replica);
  void unload_replica(Worker& worker, const std::string& replica_id);
  Result<std::string> assemble_package(const Replica& replica);
  void set_state(Replica& replica, ReplicaState state, std::string message);
  // Publishes the ready replicas to the router and tells on_change; takes mutex_.
  void notify_change();
  // Publishes the ready replicas to the router; requires mutex_, so that report() never shows a
  // replica ready that the router does not have yet.
  void publish_ready_locked();
  protocol::ReplicaStatus replica_status(const Replica& replica) const;

  boost::asio::io_context& io_;
  AgentConfig config_;
  const Inventory inventory_;
  const std::vector<Device> devices_;
  Supervisor supervisor_;
  const ArtifactCache& artifacts_;
  std::shared_ptr<ControlSession> session_;
  const std::shared_ptr<Router> router_;
  std::function<void()> on_change_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  uint64_t applied_version_ = 0;
  std::optional<protocol::DesiredState> pending_state_;
  std::map<std::string, std::shared_ptr<Replica>> replicas_;
  std::map<std::string, std::shared_ptr<Worker>> workers_;
  Placement placement_;
  // Limits that SIGHUP changes (update_limits) while the reconcile thread reads them.
  std::atomic<int> max_workers_;
  std::atomic<int> restart_backoff_max_seconds_;
  std::atomic<int> idle_worker_seconds_;
  std::atomic<bool> spare_workers_;

  bool stopping_ = false;
  std::function<void()> on_stopped_;
  std::atomic<int64_t> last_pass_ms_{0};
  std::thread thread_;
};

}  // namespace outpost::agent
