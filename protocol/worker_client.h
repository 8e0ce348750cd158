// The agent's side of the worker protocol (docs/worker-protocol.md), without torch: start an
// outpost-worker process (WorkerProcess), connect to its ipc:// endpoint (WorkerClient), load,
// unload and reload models, call predict in the three shapes, cancel, ask for health, drain.
//
// Thread-safe: any thread may start calls and admin requests. Nothing blocks on the worker:
// admin requests return futures, predict calls deliver their results to CallHandlers on the
// client's one I/O thread (handlers must not block; they may start new calls). Every call ends
// with exactly one on_done: ok after a unary result or a generate/stream "end", or the error.
// A lost connection to the worker ends every open call and request with unavailable.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "protocol/worker_protocol.h"
#include "protocol/worker_spec.h"
#include <sys/types.h>

namespace outpost::protocol {

struct CallHandlers {
  // A unary call's outputs (seq 0), each generate chunk, or each stream item's outputs, in
  // order. The value's tensors refer to its parts; parts_to_base64() gives the control
  // protocol's form.
  std::function<void(int64_t seq, WireValue value)> on_value;
  // Exactly once, last. `reason` is the end's reason: "done", "cancelled" or "max_steps"
  // ("done" for a unary result; empty on error).
  std::function<void(const Status& status, std::string_view reason)> on_done;
};

class ClientCore;

// One predict call in progress.
class WorkerCall {
 public:
  WorkerCall(std::shared_ptr<ClientCore> core, std::string id, CallShape shape, int64_t window);
  const std::string& id() const { return id_; }
  CallShape shape() const { return shape_; }

  // Asks the worker to stop the call between steps; on_done follows (reason "cancelled" for
  // generate and stream calls, a cancelled error for unary ones).
  void cancel();
  // Stream calls: the next item's inputs (a Value object of parameter name -> Value). Refuses
  // with resource_exhausted while `window` items await their outputs (the caller retries after
  // the next on_value), and with failed_precondition after close() or the end.
  Status send(WireValue inputs);
  // Stream calls: no more items; the call ends once the worker has answered every item.
  Status close();
  // Stream calls: items that may be sent now.
  int64_t window_available() const;
  bool done() const { return done_.load(); }

 private:
  friend class ClientCore;
  std::shared_ptr<ClientCore> core_;
  const std::string id_;
  const CallShape shape_;
  const int64_t window_;
  std::atomic<int64_t> outstanding_{0};
  std::atomic<int64_t> next_seq_{0};
  std::atomic<bool> closed_{false};
  std::atomic<bool> done_{false};
};

struct LoadRequest {
  std::string package;  // folder with config.yaml and the model file
  std::string model;    // the name calls use; empty = the package's model id
  int64_t instances = 0;
  std::optional<std::string> sha256;  // expected model file hash and size
  std::optional<uint64_t> size;
  std::chrono::milliseconds timeout{30'000};  // reload: how long the old version may drain
};

class WorkerClient {
 public:
  struct Options {
    std::string endpoint;  // ipc://PATH
    Limits limits;         // max_message_bytes: the most this client sends or accepts
  };
  static Result<std::unique_ptr<WorkerClient>> connect(const Options& options);
  // Ends open calls with cancelled and stops the I/O thread.
  ~WorkerClient();
  WorkerClient(const WorkerClient&) = delete;
  WorkerClient& operator=(const WorkerClient&) = delete;

  // Admin requests: the worker's reply header (loaded, unloaded, health, ...) or its error.
  std::future<Result<nlohmann::json>> hello();
  std::future<Result<nlohmann::json>> load(const LoadRequest& request);
  std::future<Result<nlohmann::json>> reload(const LoadRequest& request);
  std::future<Result<nlohmann::json>> unload(
      const std::string& model, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  std::future<Result<nlohmann::json>> health();
  // Stops new calls, waits up to `timeout` for open ones, and (with `exit`) ends the process.
  std::future<Result<nlohmann::json>> drain(std::chrono::milliseconds timeout, bool exit = true);
  // Any request: `header` gets a fresh "id".
  std::future<Result<nlohmann::json>> request(nlohmann::json header,
                                              const std::vector<std::string>& parts = {});

  // Polls health until the worker is ready (no model loading), up to `timeout`.
  Result<nlohmann::json> wait_ready(std::chrono::milliseconds timeout);

  // Predict calls. `inputs` is a Value object of parameter name -> Value whose tensors refer to
  // its parts (move_bytes_to_parts() makes one from the control protocol's form).
  std::shared_ptr<WorkerCall> unary(const std::string& model, const std::string& method,
                                    WireValue inputs, CallHandlers handlers);
  std::shared_ptr<WorkerCall> generate(const std::string& model, const std::string& method,
                                       WireValue inputs, CallHandlers handlers);
  std::shared_ptr<WorkerCall> stream(const std::string& model, const std::string& method,
                                     CallHandlers handlers, int64_t window = 16);
  // A unary call's outputs as a future.
  std::future<Result<WireValue>> unary(const std::string& model, const std::string& method,
                                       WireValue inputs);

  // Whether the connection to the worker is up (it comes up shortly after connect()).
  bool connected() const;
  size_t open_calls() const;

 private:
  explicit WorkerClient(std::shared_ptr<ClientCore> core);
  std::shared_ptr<ClientCore> core_;
};

// An outpost-worker child process.
class WorkerProcess {
 public:
  struct Options {
    std::string binary;  // path to outpost-worker
    WorkerSpec spec;
    std::string log_file;  // stdout and stderr; empty = inherited
    // The worker gets SIGTERM when the thread that spawned it ends (PR_SET_PDEATHSIG): spawn
    // from a thread that lives as long as the worker should.
    bool exit_with_parent = true;
    std::vector<std::string> environment;  // extra NAME=VALUE (the spec's MPS slice is added)
  };
  static Result<std::unique_ptr<WorkerProcess>> spawn(const Options& options);
  // SIGTERM (the worker drains), then SIGKILL after 10 s.
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  pid_t pid() const { return pid_; }
  // The exit status (or 128 + signal) once the process has ended within `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  void kill(int signal);
  bool running();

 private:
  explicit WorkerProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  std::optional<int> status_;
};

}  // namespace outpost::protocol
