// An outpost-worker that the CLI runs for itself (`outpost model test`): found next to the
// `outpost` binary (or named), started with a spec whose endpoint is an ipc:// socket in a fresh
// private directory (0700), and connected to through protocol/worker_client.h. Destroying it
// always drains the worker, stops the process (SIGTERM, then SIGKILL) and removes the directory,
// whichever way the command ends.
//
// Waits poll the process and an interrupt flag (SIGINT, SIGTERM), so that a worker that dies or
// a user who presses Ctrl-C ends the wait with a clear error instead of a hang.
#pragma once

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "protocol/worker_client.h"
#include <signal.h>

namespace outpost::cli {

// The outpost-worker binary: `requested` when given, else $OUTPOST_WORKER, else the
// outpost-worker in the directory of the running executable. Refuses one that is not an
// executable file, saying how to name another.
Result<std::string> find_worker_binary(const std::string& requested);

class LocalWorker {
 public:
  // Starts the worker and waits (up to `timeout`) until it answers hello.
  static Result<std::unique_ptr<LocalWorker>> start(
      const std::string& binary, std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Drains (exit), waits for the process, kills it if it lingers, removes the directory.
  ~LocalWorker();
  LocalWorker(const LocalWorker&) = delete;
  LocalWorker& operator=(const LocalWorker&) = delete;

  protocol::WorkerClient& client() { return *client_; }
  // Whether SIGINT or SIGTERM arrived since start().
  static bool interrupted();

  // A reply of the worker, or: unavailable when the worker exited first (with the last lines
  // of its log), cancelled when interrupted, deadline_exceeded after `timeout`.
  template <class T>
  Result<T> await(std::future<Result<T>>& reply, const std::string& what,
                  std::chrono::milliseconds timeout = std::chrono::hours(24)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (reply.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
      OUTPOST_RETURN_IF_ERROR(check(what));
      if (std::chrono::steady_clock::now() >= deadline) {
        return Error(ErrorCode::kDeadlineExceeded,
                     what + " took longer than " + std::to_string(timeout.count()) + " ms");
      }
    }
    return reply.get();
  }

  // Ok while the worker runs and no interrupt came; else the error await() would give.
  Status check(const std::string& what);

  // Lines of the worker's log that contain `event` (e.g. "model.method_skipped"), from the
  // event's message on.
  std::vector<std::string> log_events(const std::string& event) const;

 private:
  LocalWorker() = default;
  std::string log_tail() const;

  std::string dir_;  // private (0700): the socket and the worker's log
  std::string log_file_;
  std::unique_ptr<protocol::WorkerProcess> process_;
  std::unique_ptr<protocol::WorkerClient> client_;
  struct sigaction previous_int_ {};
  struct sigaction previous_term_ {};
};

}  // namespace outpost::cli
