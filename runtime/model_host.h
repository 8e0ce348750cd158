// One loaded model inside the worker: its calls, its queues and its execution threads (one per
// instance). Unary calls go through the dynamic batcher (batch_queue.h); generate calls are
// started one by one and then stepped together, re-forming the step batch at every step
// (iteration-level batching) when the method's steps are batchable; stream calls process their
// items in order, one at a time, with their state carried from item to item. Each execution
// acquires the device from the worker's FairScheduler first, and the kinds of work of one
// model take turns, so that neither a long generation nor a busy unary queue shuts out the
// others. Responses are sent from the execution thread through the ResponseSink.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/result.h"
#include "protocol/worker_protocol.h"
#include "runtime/batch_queue.h"
#include "runtime/compute_threads.h"
#include "runtime/fair_scheduler.h"
#include "runtime/model.h"

namespace outpost::runtime {

class Call;

class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  // Sends one message to the call's client; thread-safe. resource_exhausted, with nothing
  // sent, when the message is over the client's message limit; unavailable when the client is
  // gone.
  virtual Status send(const Call& call, const nlohmann::json& header,
                      const std::vector<std::string>& parts) = 0;
  // The call's terminal message went out (or its client is gone): forget the call.
  virtual void finished(const Call& call) = 0;
};

// One predict call. Its fields belong to its ModelHost and are guarded by the host's mutex,
// except while an execution thread has it in flight.
class Call {
 public:
  Call(std::string client, std::string id, CallShape shape, const MethodInfo& method,
       TimePoint now);

  const std::string& client() const { return client_; }
  const std::string& id() const { return id_; }
  CallShape shape() const { return shape_; }
  const MethodInfo& method() const { return *method_; }
  void set_inputs(std::unique_ptr<PreparedInputs> inputs) { inputs_ = std::move(inputs); }
  void set_window(int64_t window) { window_ = window; }

  // For BatchQueue.
  int64_t rows() const { return inputs_ ? inputs_->rows() : 1; }
  const std::string& batch_key() const;
  TimePoint enqueued() const { return enqueued_; }

 private:
  friend class ModelHost;

  std::string client_;
  std::string id_;
  CallShape shape_;
  const MethodInfo* method_;
  TimePoint enqueued_;
  std::unique_ptr<PreparedInputs> inputs_;
  std::unique_ptr<CallState> state_;
  bool started_ = false;
  bool in_flight_ = false;
  int64_t steps_ = 0;
  // Chunks or outputs sent; counted before each is sent, so that a client that has seen an
  // output never finds its next item refused for a full window.
  std::atomic<int64_t> sent_{0};
  int64_t received_ = 0;  // stream items accepted
  // stream
  std::deque<std::unique_ptr<PreparedInputs>> items_;
  bool input_closed_ = false;
  bool runnable_ = false;
  int64_t window_ = 0;
  // Set by cancel (and by a refused item): the call ends at the next chance, with
  // `pending_error_` if set, else as cancelled.
  std::atomic<bool> cancelled_{false};
  std::optional<Error> pending_error_;
  std::atomic<bool> finished_{false};
};

class ModelHost {
 public:
  // Executions run on `compute` (compute_threads.h) while this host's thread holds a slot of
  // `scheduler`.
  ModelHost(std::string name, std::unique_ptr<LoadedModel> model, FairScheduler& scheduler,
            ComputeThreads& compute, ResponseSink& sink, const Clock& clock);
  ~ModelHost();
  ModelHost(const ModelHost&) = delete;
  ModelHost& operator=(const ModelHost&) = delete;

  const std::string& name() const { return name_; }
  FairScheduler::TenantId tenant() const { return tenant_; }
  const LoadedModel& model() const { return *model_; }

  // Starts one execution thread per instance.
  void start();

  // Admits a call whose inputs are prepared (unary, generate) or a stream call (no inputs yet).
  // Refuses with unavailable once shutting down, resource_exhausted when the method's queue is
  // full, invalid_argument when a request has more rows than max_batch_size.
  Status submit(const std::shared_ptr<Call>& call);
  // Stream calls: one more item, in order. Refuses an item beyond the call's window by ending
  // the call with resource_exhausted.
  void add_item(const std::shared_ptr<Call>& call, std::unique_ptr<PreparedInputs> item);
  // Stream calls: no more items; the call ends once the queued ones are done.
  void close_input(const std::shared_ptr<Call>& call);
  // Ends the call between executions: with `error` when given; else unary calls with a
  // cancelled error, generate and stream calls with an "end" whose reason is "cancelled".
  void cancel(const std::shared_ptr<Call>& call, std::optional<Error> error = std::nullopt);

  // Refuses new calls, waits up to `timeout` for the live ones to end, cancels what is left,
  // waits for executions in flight, and stops the threads. Returns the calls it cancelled.
  size_t shutdown(std::chrono::milliseconds timeout);
  // Frees the model after shutdown().
  ReleaseReport release();

  size_t live_calls() const;
  nlohmann::json stats() const;

 private:
  enum class WorkKind { kNone, kUnary, kGenerateStart, kGenerateStep, kStreamItem };
  struct Work {
    WorkKind kind = WorkKind::kNone;
    const MethodInfo* method = nullptr;
    std::vector<std::shared_ptr<Call>> calls;
    std::unique_ptr<PreparedInputs> item;
  };
  struct MethodState {
    explicit MethodState(const MethodInfo& info) : method(&info), queue(info.batching) {}
    const MethodInfo* method;
    BatchQueue<std::shared_ptr<Call>> queue;      // unary
    std::list<std::shared_ptr<Call>> generating;  // generate calls between steps
  };
  // Terminal messages decided under the lock, sent after it.
  struct Ending {
    std::shared_ptr<Call> call;
    nlohmann::json header;
  };

  void run_instance(size_t index);
  // Whether `instance` has work it can start now; otherwise the time at which a delayed batch
  // will be ready.
  bool has_work_locked(TimePoint now, const ModelInstance& instance,
                       std::optional<TimePoint>& wake_at) const;
  Work take_work_locked(TimePoint now, const ModelInstance& instance);
  // Whether the next generate call can start on `instance` (a decoder needs a free slot).
  bool can_start_locked(const ModelInstance& instance) const;
  // Whether `instance` may step `call` now: not in flight, and its state is not held by
  // another instance.
  static bool may_step(const Call& call, const ModelInstance& instance);
  void execute(ModelInstance& instance, Work& work, FairScheduler::Grant& grant);
  void execute_unary(ModelInstance& instance, Work& work, FairScheduler::Grant& grant);
  void execute_generate_start(ModelInstance& instance, Work& work, FairScheduler::Grant& grant);
  void execute_generate_step(ModelInstance& instance, Work& work, FairScheduler::Grant& grant);
  void execute_stream_item(ModelInstance& instance, Work& work, FairScheduler::Grant& grant);

  // Sends a generate call's chunk, if the outcome has one; a chunk that cannot be sent turns
  // into the outcome's error.
  void send_chunk(Call& call, StepOutcome& outcome);
  // The terminal message of a generate call after a start or step, if it ends now.
  std::optional<nlohmann::json> ending_locked(const std::shared_ptr<Call>& call,
                                              const StepOutcome& outcome);
  // Ends a call with its cancellation (or pending error) message; under the lock.
  Ending cancelled_ending_locked(const std::shared_ptr<Call>& call);
  // Removes a call that is not in flight from every queue; under the lock.
  void unqueue_locked(const std::shared_ptr<Call>& call);
  void finish(const std::shared_ptr<Call>& call, const nlohmann::json& header,
              const std::vector<std::string>& parts = {});
  void finish_all(std::vector<Ending>& endings);
  // Sends one message of `call`. An output too large for one message is not sent: the
  // returned error (resource_exhausted) is what the call must end with.
  Status send(const Call& call, const nlohmann::json& header,
              const std::vector<std::string>& parts);

  const std::string name_;
  std::unique_ptr<LoadedModel> model_;
  FairScheduler& scheduler_;
  ComputeThreads& compute_;
  FairScheduler::TenantId tenant_;
  ResponseSink& sink_;
  const Clock& clock_;

  mutable std::mutex mutex_;
  // Every instance thread waits here; each is woken (notify_all), because what one may take
  // differs from another's: a decoder's calls are stepped only by the instance whose cache holds
  // them, and start only where a slot is free.
  std::condition_variable work_ready_;
  std::condition_variable calls_changed_;
  bool admitting_ = true;
  bool stopping_ = false;
  std::map<std::string, MethodState> methods_;
  std::deque<std::shared_ptr<Call>> starting_;  // generate calls before their first step
  std::deque<std::shared_ptr<Call>> runnable_streams_;
  std::set<std::shared_ptr<Call>> calls_;  // every call not yet finished
  size_t in_flight_ = 0;
  int cursor_ = 0;  // which kind of work goes next
  std::vector<std::thread> threads_;

  // Counters for health.
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> executions_{0};
  std::atomic<uint64_t> batched_rows_{0};
  std::atomic<uint64_t> generate_steps_{0};
  std::atomic<uint64_t> step_rows_{0};
  std::atomic<uint64_t> chunks_{0};
  std::atomic<uint64_t> stream_items_{0};
};

}  // namespace outpost::runtime
