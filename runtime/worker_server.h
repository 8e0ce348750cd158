// The worker's side of the protocol (docs/worker-protocol.md): a ROUTER socket bound to the
// spec's ipc:// endpoint, read by one thread that decodes each message, checks and converts
// predict inputs, and hands calls to their ModelHost; execution threads answer directly through
// the shared socket. Loads, unloads, reloads and the drain run one at a time on an admin
// thread, so that a slow load never holds up predict traffic and memory is measured per load.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/clock.h"
#include "protocol/worker_protocol.h"
#include "protocol/worker_spec.h"
#include "protocol/zmq_channel.h"
#include "runtime/fair_scheduler.h"
#include "runtime/model.h"
#include "runtime/model_host.h"
#include "runtime/model_package.h"

namespace outpost::runtime {

class WorkerServer final : public ResponseSink {
 public:
  // Binds the endpoint; the spec's models are loaded once run() starts.
  static Result<std::unique_ptr<WorkerServer>> create(
      WorkerSpec spec, std::vector<std::unique_ptr<ModelLoader>> loaders);
  ~WorkerServer() override;
  WorkerServer(const WorkerServer&) = delete;
  WorkerServer& operator=(const WorkerServer&) = delete;

  // Serves until a drain with exit finishes or stop_requested() turns true (then drains
  // itself). Returns the process exit code.
  int run(const std::atomic<bool>& stop_requested);

  Status send(const Call& call, const nlohmann::json& header,
              const std::vector<std::string>& parts) override;
  void finished(const Call& call) override;

 private:
  WorkerServer(WorkerSpec spec, std::vector<std::unique_ptr<ModelLoader>> loaders);

  struct ModelEntry {
    std::string state;  // loading, ready, unloading, failed
    std::string message;
    std::string package;
    std::string model_id;
    std::string file_sha256;
    int64_t load_ms = 0;
    std::shared_ptr<ModelHost> host;
  };
  using CallKey = std::pair<std::string, std::string>;  // client, request id
  struct CallEntry {
    std::shared_ptr<ModelHost> host;
    std::shared_ptr<Call> call;
  };

  void handle_frames(std::vector<zmq::message_t>& frames);
  void handle(const std::string& client, Message message);
  void reply(const std::string& client, const nlohmann::json& header,
             const std::vector<std::string>& parts = {});
  void reply_error(const std::string& client, std::string_view id, const Error& error);

  void on_predict(const std::string& client, Message& message);
  void on_item(const std::string& client, Message& message);
  void on_load(const std::string& client, const Message& message, bool reload);
  void on_unload(const std::string& client, const Message& message);
  void on_drain(const std::string& client, const Message& message);
  nlohmann::json health(std::string_view id);

  // Admin thread: jobs run one at a time.
  void post_job(std::function<void()> job);
  void admin_loop();
  // Loads a package; on success the host is started and returned with the entry filled in.
  Result<std::shared_ptr<ModelHost>> load_model(const std::string& name,
                                                const std::string& package_dir,
                                                const PackageExpectations& expect,
                                                int64_t instances, ModelEntry& entry);
  void load_job(const std::string& client, const std::string& id, std::string name,
                const std::string& package, const PackageExpectations& expect, int64_t instances,
                bool reload, std::chrono::milliseconds timeout);
  nlohmann::json unload_host(const std::string& name, const std::shared_ptr<ModelHost>& host,
                             std::chrono::milliseconds timeout);
  void drain(std::chrono::milliseconds timeout);

  std::shared_ptr<CallEntry> find_call(const std::string& client, const std::string& id);
  void cancel_client(const std::string& client);

  WorkerSpec spec_;
  std::vector<std::unique_ptr<ModelLoader>> loaders_;  // one per checkpoints.type
  const Clock& clock_;
  TimePoint started_;
  zmq::context_t context_{1};
  std::unique_ptr<ZmqChannel> channel_;
  FairScheduler scheduler_;
  ComputeThreads compute_;  // outlives the models' hosts

  std::mutex models_mutex_;
  std::map<std::string, ModelEntry> models_;
  std::vector<std::string> problems_;  // e.g. memory not returned after an unload

  std::mutex calls_mutex_;
  std::map<CallKey, std::shared_ptr<CallEntry>> calls_;
  std::set<std::string> gone_clients_;

  std::mutex jobs_mutex_;
  std::condition_variable jobs_changed_;
  std::deque<std::function<void()>> jobs_;
  bool jobs_stopping_ = false;
  std::thread admin_thread_;

  std::atomic<bool> draining_{false};
  std::atomic<int> queued_loads_{0};  // loads posted to the admin thread and not finished
  std::atomic<bool> exit_requested_{false};
};

}  // namespace outpost::runtime
