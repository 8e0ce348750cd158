// Worker processes: the spec a worker starts with (its device and slice), starting it and
// waiting until it answers, noticing that it ended, restarting it after a backoff (1 s, 2 s,
// 4 s ... up to workers.restart_backoff_max_seconds, from 1 s again after a minute of uptime),
// draining and stopping it, and stopping the workers an earlier outpostd left behind. The
// reconciler decides which workers should run and what they hold; this part only runs them.
// Everything here runs on the reconcile thread, except WorkerRun's pid() and client(), which
// any thread may read.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/inventory.h"
#include "agent/placement.h"
#include "common/result.h"
#include "protocol/worker_client.h"
#include "protocol/worker_spec.h"
#include <sys/types.h>

namespace outpost::agent {

using SteadyClock = std::chrono::steady_clock;

// A file-name-safe tag of an id (16 hex digits), and an id made safe to appear in a file name.
std::string file_tag(const std::string& id);
std::string safe_name(const std::string& id);

// Backoff after `failures` failures in a row: 1 s, 2 s, 4 s ... up to `cap_seconds`.
SteadyClock::duration restart_delay(int failures, int cap_seconds);

// A worker's answer, or nothing if it took longer than `timeout`.
template <class T>
std::optional<T> wait_future(std::future<T>& future, SteadyClock::duration timeout) {
  if (future.wait_for(timeout) != std::future_status::ready) return std::nullopt;
  return future.get();
}

// One worker's process and its client, as the supervisor runs it.
class WorkerRun {
 public:
  pid_t pid() const { return pid_.load(); }
  std::shared_ptr<protocol::WorkerClient> client() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return client_;
  }
  bool started() const { return process_ != nullptr; }
  int restarts() const { return std::max(starts_.load() - 1, 0); }
  std::string last_exit() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_exit_;
  }

 private:
  friend class Supervisor;

  std::unique_ptr<protocol::WorkerProcess> process_;
  std::atomic<pid_t> pid_{0};
  mutable std::mutex mutex_;  // client_ and last_exit_: other threads read them
  std::shared_ptr<protocol::WorkerClient> client_;
  std::string last_exit_;
  std::atomic<int> starts_{0};  // tried, whether or not they succeeded
  int failures_in_a_row_ = 0;
  SteadyClock::time_point next_start_{};
  SteadyClock::time_point started_at_{};
};

class Supervisor {
 public:
  Supervisor(const AgentConfig& config, Inventory inventory, std::vector<Device> devices);

  // The spec and extra environment of `plan`'s worker: `cpu`, or `cuda:N` with the plan's
  // share of the GPU's memory as its fraction (mps: also a pinned memory limit), or, on a MIG
  // instance, `cuda:0` with CUDA_VISIBLE_DEVICES naming the instance.
  protocol::WorkerSpec spec_for(const WorkerPlan& plan,
                                std::vector<std::string>& environment) const;

  // What check() saw and did.
  struct Check {
    bool ended = false;         // the process had ended: its calls ended unavailable
    bool start_failed = false;  // a start was tried and failed
    bool started = false;       // a start was tried and the worker answers
    std::string message;        // how it ended, or why it did not start
  };
  // Notices that the worker ended (the next start waits out the backoff) and, when `wanted` and
  // the backoff is over, starts it.
  Check check(WorkerRun& run, const WorkerPlan& plan, bool wanted, int backoff_max_seconds);

  // Drains the worker (its calls finish within `drain`), stops it (SIGTERM, SIGKILL after
  // 10 s) and removes its pid file.
  void stop(WorkerRun& run, const std::string& worker_id, std::chrono::seconds drain);

  // At start: SIGTERM (SIGKILL after 5 s) to every outpost-worker that a pid file of the
  // runtime directory names, so that a replica never runs twice after an agent crash.
  void stop_leftovers();

 private:
  Status start(WorkerRun& run, const WorkerPlan& plan);
  std::string binary() const;

  const AgentConfig config_;  // workers.binary and .threads; the runtime directory's files
  const Inventory inventory_;
  const std::vector<Device> devices_;
};

}  // namespace outpost::agent
