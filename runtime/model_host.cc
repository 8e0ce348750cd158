#include "runtime/model_host.h"

#include <algorithm>
#include <utility>

#include "common/log.h"

namespace outpost::runtime {
namespace {

using nlohmann::json;

constexpr int kWorkKinds = 4;
constexpr int64_t kDefaultStepBatch = 64;
const std::string no_key;  // calls without a batching key

json end_header(const Call& call, std::string_view reason, int64_t count) {
  return json{{"type", msg::kEnd}, {"id", call.id()}, {"reason", reason}, {"count", count}};
}

Error cancelled_error() { return {ErrorCode::kCancelled, "the call was cancelled"}; }

int64_t step_batch_limit(const MethodInfo& method) {
  if (!method.step_batchable) return 1;
  return method.batching.max_batch_size > 0 ? method.batching.max_batch_size : kDefaultStepBatch;
}

}  // namespace

Call::Call(std::string client, std::string id, CallShape shape, const MethodInfo& method,
           TimePoint now)
    : client_(std::move(client)),
      id_(std::move(id)),
      shape_(shape),
      method_(&method),
      enqueued_(now),
      window_(method.window) {}

const std::string& Call::batch_key() const {
  if (state_) return state_->batch_key();
  if (inputs_) return inputs_->batch_key();
  return no_key;
}

ModelHost::ModelHost(std::string name, std::unique_ptr<LoadedModel> model, FairScheduler& scheduler,
                     ComputeThreads& compute, ResponseSink& sink, const Clock& clock)
    : name_(std::move(name)),
      model_(std::move(model)),
      scheduler_(scheduler),
      compute_(compute),
      tenant_(scheduler.add_tenant(name_)),
      sink_(sink),
      clock_(clock) {
  for (const auto& method : model_->methods()) methods_.emplace(method.name, MethodState(method));
}

ModelHost::~ModelHost() {
  shutdown(std::chrono::milliseconds(0));
  scheduler_.remove_tenant(tenant_);
}

void ModelHost::start() {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < model_->instance_count(); ++i) {
    threads_.emplace_back([this, i] { run_instance(i); });
  }
}

Status ModelHost::submit(const std::shared_ptr<Call>& call) {
  std::unique_lock lock(mutex_);
  if (!admitting_) return unavailable("model " + name_ + " is unloading");
  auto& state = methods_.at(call->method().name);
  switch (call->shape()) {
    case CallShape::kUnary: {
      const auto& batching = state.queue.config();
      if (batching.max_batch_size > 0 && call->rows() > batching.max_batch_size) {
        return invalid_argument("the request has " + std::to_string(call->rows()) +
                                " rows; method " + call->method().name + " takes at most " +
                                std::to_string(batching.max_batch_size) + " per call");
      }
      if (!state.queue.push(call)) {
        return Error(ErrorCode::kResourceExhausted,
                     "the queue of " + name_ + "." + call->method().name + " is full (" +
                         std::to_string(batching.max_queue_size) + " requests); retry later");
      }
      break;
    }
    case CallShape::kGenerate: {
      // Calls wait here for their start (a decoder's for a free cache slot): bounded, as the
      // unary queue is.
      const int64_t limit = state.queue.config().max_queue_size;
      const auto waiting = std::count_if(starting_.begin(), starting_.end(), [&](const auto& c) {
        return &c->method() == &call->method();
      });
      if (waiting >= limit) {
        return Error(ErrorCode::kResourceExhausted,
                     "the queue of " + name_ + "." + call->method().name + " is full (" +
                         std::to_string(limit) + " calls wait to start); retry later");
      }
      starting_.push_back(call);
      break;
    }
    case CallShape::kStream:
      break;  // runnable once items arrive
  }
  calls_.insert(call);
  lock.unlock();
  work_ready_.notify_all();
  return {};
}

void ModelHost::add_item(const std::shared_ptr<Call>& call, std::unique_ptr<PreparedInputs> item) {
  std::vector<Ending> endings;
  {
    std::lock_guard lock(mutex_);
    if (call->finished_ || call->cancelled_ || call->input_closed_) return;
    if (call->received_ - call->sent_.load() >= call->window_) {
      call->pending_error_ =
          Error(ErrorCode::kResourceExhausted,
                "more than " + std::to_string(call->window_) +
                    " items in flight on one stream call; wait for outputs before sending more");
      call->cancelled_ = true;
      if (!call->in_flight_) {
        unqueue_locked(call);
        endings.push_back(cancelled_ending_locked(call));
      }
    } else {
      ++call->received_;
      call->items_.push_back(std::move(item));
      if (!call->in_flight_ && !call->runnable_) {
        call->runnable_ = true;
        runnable_streams_.push_back(call);
      }
    }
  }
  work_ready_.notify_all();
  finish_all(endings);
}

void ModelHost::close_input(const std::shared_ptr<Call>& call) {
  std::vector<Ending> endings;
  {
    std::lock_guard lock(mutex_);
    if (call->finished_ || call->input_closed_) return;
    call->input_closed_ = true;
    if (!call->in_flight_ && call->items_.empty() && !call->cancelled_) {
      endings.push_back({call, end_header(*call, "done", call->sent_.load())});
    }
  }
  finish_all(endings);
}

void ModelHost::cancel(const std::shared_ptr<Call>& call, std::optional<Error> error) {
  std::vector<Ending> endings;
  {
    std::lock_guard lock(mutex_);
    if (call->finished_ || call->cancelled_) return;
    call->pending_error_ = std::move(error);
    call->cancelled_ = true;
    if (!call->in_flight_) {
      unqueue_locked(call);
      endings.push_back(cancelled_ending_locked(call));
    }
  }
  finish_all(endings);
}

void ModelHost::unqueue_locked(const std::shared_ptr<Call>& call) {
  auto& state = methods_.at(call->method().name);
  state.queue.remove(call);
  state.generating.remove(call);
  if (const auto it = std::find(starting_.begin(), starting_.end(), call); it != starting_.end()) {
    starting_.erase(it);
  }
  if (call->runnable_) {
    const auto it = std::find(runnable_streams_.begin(), runnable_streams_.end(), call);
    if (it != runnable_streams_.end()) runnable_streams_.erase(it);
    call->runnable_ = false;
  }
  call->items_.clear();
}

ModelHost::Ending ModelHost::cancelled_ending_locked(const std::shared_ptr<Call>& call) {
  if (call->pending_error_) return {call, error_header(call->id(), *call->pending_error_)};
  if (call->shape() == CallShape::kUnary)
    return {call, error_header(call->id(), cancelled_error())};
  return {call, end_header(*call, "cancelled", call->sent_.load())};
}

Status ModelHost::send(const Call& call, const json& header,
                       const std::vector<std::string>& parts) {
  const Status sent = sink_.send(call, header, parts);
  // A client that is gone has its calls cancelled by the server; only a refused size matters.
  if (sent.ok() || sent.error().code() != ErrorCode::kResourceExhausted) return {};
  return Error(ErrorCode::kResourceExhausted,
               "the output does not fit the message limit (limits.max_message_bytes): " +
                   sent.error().message() + "; ask for less");
}

void ModelHost::finish(const std::shared_ptr<Call>& call, const json& header,
                       const std::vector<std::string>& parts) {
  if (call->finished_.exchange(true)) return;
  ++requests_;
  // Forget the call before the client hears of its end, so that what the client asks next
  // (health, a call with the same id) finds it gone.
  sink_.finished(*call);
  {
    std::lock_guard lock(mutex_);
    calls_.erase(call);
    // A decoder's state holds a cache slot: free it now, for a call that waits to start.
    call->state_.reset();
  }
  work_ready_.notify_all();
  bool error = header.value("type", "") == msg::kError;
  if (const Status sent = send(*call, header, parts); !sent.ok()) {
    static_cast<void>(send(*call, error_header(call->id(), sent.error()), {}));  // small: fits
    error = true;
  }
  if (error) ++errors_;
  calls_changed_.notify_all();
}

void ModelHost::finish_all(std::vector<Ending>& endings) {
  for (auto& ending : endings) finish(ending.call, ending.header);
  endings.clear();
}

bool ModelHost::can_start_locked(const ModelInstance& instance) const {
  return !starting_.empty() && instance.has_room(starting_.front()->method());
}

bool ModelHost::may_step(const Call& call, const ModelInstance& instance) {
  if (call.in_flight_) return false;
  const ModelInstance* owner = call.state_ ? call.state_->instance() : nullptr;
  return owner == nullptr || owner == &instance;
}

bool ModelHost::has_work_locked(TimePoint now, const ModelInstance& instance,
                                std::optional<TimePoint>& wake_at) const {
  bool ready = can_start_locked(instance) || !runnable_streams_.empty();
  for (const auto& [name, state] : methods_) {
    if (const auto at = state.queue.ready_at()) {
      if (*at <= now) {
        ready = true;
      } else if (!wake_at || *at < *wake_at) {
        wake_at = *at;
      }
    }
    if (!ready) {
      for (const auto& call : state.generating) {
        if (may_step(*call, instance)) {
          ready = true;
          break;
        }
      }
    }
  }
  return ready;
}

ModelHost::Work ModelHost::take_work_locked(TimePoint now, const ModelInstance& instance) {
  Work work;
  // A decoder's new sequence is prefilled before the next decode step (vLLM's order): its time
  // to first token is then one prefill plus at most the step in progress, and it joins the very
  // next step. Starts cannot shut the steps out: each takes a cache slot, and there are few.
  if (can_start_locked(instance) && starting_.front()->method().decoder) cursor_ = 1;
  for (int turn = 0; turn < kWorkKinds && work.kind == WorkKind::kNone; ++turn) {
    const int kind = cursor_;
    cursor_ = (cursor_ + 1) % kWorkKinds;
    switch (kind) {
      case 0:  // a unary batch, from the method whose oldest request waited longest
      {
        MethodState* best = nullptr;
        for (auto& [name, state] : methods_) {
          const auto at = state.queue.ready_at();
          if (!at || *at > now) continue;
          if (best == nullptr || state.queue.ready_at() < best->queue.ready_at()) best = &state;
        }
        if (best != nullptr) {
          work.kind = WorkKind::kUnary;
          work.method = best->method;
          work.calls = best->queue.take();
        }
        break;
      }
      case 1:  // start a generate call (in order; a decoder's waits for a free cache slot)
        if (can_start_locked(instance)) {
          work.kind = WorkKind::kGenerateStart;
          work.calls.push_back(std::move(starting_.front()));
          starting_.pop_front();
          work.method = &work.calls.front()->method();
        }
        break;
      case 2:  // one step of the generate calls of one method
        for (auto& [name, state] : methods_) {
          auto& list = state.generating;
          const auto first = std::find_if(list.begin(), list.end(), [&](const auto& call) {
            return may_step(*call, instance);
          });
          if (first == list.end()) continue;
          const int64_t limit = step_batch_limit(*state.method);
          const std::string key = (*first)->batch_key();
          work.kind = WorkKind::kGenerateStep;
          work.method = state.method;
          for (auto it = first; it != list.end() && static_cast<int64_t>(work.calls.size()) < limit;
               ++it) {
            if (may_step(**it, instance) && (*it)->batch_key() == key) work.calls.push_back(*it);
          }
          if (limit == 1) {
            // Unbatched steps: the stepped call goes to the back, so calls take turns.
            list.splice(list.end(), list, first);
          }
          break;
        }
        break;
      case 3:  // the next item of a stream call
        if (!runnable_streams_.empty()) {
          auto call = std::move(runnable_streams_.front());
          runnable_streams_.pop_front();
          call->runnable_ = false;
          work.kind = WorkKind::kStreamItem;
          work.method = &call->method();
          work.item = std::move(call->items_.front());
          call->items_.pop_front();
          work.calls.push_back(std::move(call));
        }
        break;
      default:
        break;
    }
  }
  for (const auto& call : work.calls) call->in_flight_ = true;
  in_flight_ += work.calls.size();
  return work;
}

void ModelHost::run_instance(size_t index) {
  ModelInstance& instance = model_->instance(index);
  FairScheduler::Grant grant;
  while (true) {
    if (!grant.valid()) {
      {
        std::unique_lock lock(mutex_);
        while (true) {
          if (stopping_) return;
          std::optional<TimePoint> wake_at;
          if (has_work_locked(clock_.now(), instance, wake_at)) break;
          if (wake_at) {
            // The real clock: a delayed batch is due at wake_at.
            work_ready_.wait_until(lock,
                                   std::chrono::steady_clock::now() + (*wake_at - clock_.now()));
          } else {
            work_ready_.wait(lock);
          }
        }
      }
      grant = scheduler_.acquire(tenant_);
    }
    // The batch is formed once this thread holds the device (Triton: when the executor frees
    // up), so that requests that arrived meanwhile join it.
    Work work;
    {
      std::lock_guard lock(mutex_);
      work = take_work_locked(clock_.now(), instance);
    }
    if (work.kind == WorkKind::kNone) {
      scheduler_.release_unused(grant);
      continue;
    }
    compute_.run([&] { execute(instance, work, grant); });
    bool more = false;
    {
      std::lock_guard lock(mutex_);
      in_flight_ -= work.calls.size();
      std::optional<TimePoint> wake_at;
      more = !stopping_ && has_work_locked(clock_.now(), instance, wake_at);
    }
    // Another thread may now take what this one left (a call back between steps).
    work_ready_.notify_all();
    calls_changed_.notify_all();
    if (more) {
      // Still backlogged: compete for the device without a gap (fair_scheduler.h).
      grant = scheduler_.requeue(grant);
    } else {
      scheduler_.release(grant);
    }
  }
}

void ModelHost::execute(ModelInstance& instance, Work& work, FairScheduler::Grant& grant) {
  switch (work.kind) {
    case WorkKind::kUnary:
      execute_unary(instance, work, grant);
      break;
    case WorkKind::kGenerateStart:
      execute_generate_start(instance, work, grant);
      break;
    case WorkKind::kGenerateStep:
      execute_generate_step(instance, work, grant);
      break;
    case WorkKind::kStreamItem:
      execute_stream_item(instance, work, grant);
      break;
    case WorkKind::kNone:
      break;
  }
}

void ModelHost::execute_unary(ModelInstance& instance, Work& work, FairScheduler::Grant& grant) {
  std::vector<PreparedInputs*> inputs;
  inputs.reserve(work.calls.size());
  int64_t rows = 0;
  for (const auto& call : work.calls) {
    inputs.push_back(call->inputs_.get());
    rows += call->rows();
  }
  auto results = instance.run(*work.method, inputs);
  scheduler_.stop_clock(grant);
  ++executions_;
  batched_rows_ += static_cast<uint64_t>(rows);
  for (size_t i = 0; i < work.calls.size(); ++i) {
    const auto& call = work.calls[i];
    if (call->cancelled_) {
      finish(call, error_header(call->id(), call->pending_error_.value_or(cancelled_error())));
    } else if (!results[i].ok()) {
      finish(call, error_header(call->id(), results[i].error()));
    } else {
      json header{
          {"type", msg::kResult}, {"id", call->id()}, {"outputs", std::move(results[i]->value)}};
      finish(call, header, results[i]->parts);
    }
  }
}

void ModelHost::execute_generate_start(ModelInstance& instance, Work& work,
                                       FairScheduler::Grant& grant) {
  const auto& call = work.calls.front();
  auto started = instance.generate_start(*work.method, *call->inputs_);
  scheduler_.stop_clock(grant);
  if (!started.ok()) {
    finish(call, error_header(call->id(), started.error()));
    return;
  }
  StepOutcome& first = started->first;
  send_chunk(*call, first);
  std::vector<Ending> endings;
  {
    std::lock_guard lock(mutex_);
    call->in_flight_ = false;
    call->started_ = true;
    call->state_ = std::move(started->state);
    call->inputs_.reset();
    if (auto ending = ending_locked(call, first)) {
      endings.push_back({call, std::move(*ending)});
    } else {
      methods_.at(work.method->name).generating.push_back(call);
    }
  }
  finish_all(endings);
}

void ModelHost::send_chunk(Call& call, StepOutcome& outcome) {
  if (outcome.error || !outcome.chunk || call.cancelled_) return;
  // Counted before it is sent (see Call::sent_); taken back if it cannot be.
  json header{{"type", msg::kChunk},
              {"id", call.id()},
              {"seq", call.sent_.fetch_add(1)},
              {"chunk", std::move(outcome.chunk->value)}};
  if (Status sent = send(call, header, outcome.chunk->parts); sent.ok()) {
    ++chunks_;
  } else {
    --call.sent_;
    outcome.error = sent.error();  // the call ends with it
  }
}

std::optional<json> ModelHost::ending_locked(const std::shared_ptr<Call>& call,
                                             const StepOutcome& outcome) {
  if (outcome.error) return error_header(call->id(), *outcome.error);
  if (call->cancelled_) return cancelled_ending_locked(call).header;
  if (outcome.done) return end_header(*call, "done", call->sent_.load());
  if (call->steps_ >= call->method().max_steps) {
    return end_header(*call, "max_steps", call->sent_.load());
  }
  return std::nullopt;
}

void ModelHost::execute_generate_step(ModelInstance& instance, Work& work,
                                      FairScheduler::Grant& grant) {
  std::vector<CallState*> states;
  states.reserve(work.calls.size());
  for (const auto& call : work.calls) states.push_back(call->state_.get());
  auto outcomes = instance.generate_step(*work.method, states);
  scheduler_.stop_clock(grant);
  ++generate_steps_;
  step_rows_ += work.calls.size();

  for (size_t i = 0; i < work.calls.size(); ++i) {
    ++work.calls[i]->steps_;
    send_chunk(*work.calls[i], outcomes[i]);
  }
  std::vector<Ending> endings;
  {
    std::lock_guard lock(mutex_);
    auto& generating = methods_.at(work.method->name).generating;
    for (size_t i = 0; i < work.calls.size(); ++i) {
      auto& call = work.calls[i];
      call->in_flight_ = false;
      if (auto ending = ending_locked(call, outcomes[i])) {
        generating.remove(call);
        endings.push_back({call, std::move(*ending)});
      }
    }
  }
  finish_all(endings);
}

void ModelHost::execute_stream_item(ModelInstance& instance, Work& work,
                                    FairScheduler::Grant& grant) {
  const auto& call = work.calls.front();
  const MethodInfo& method = *work.method;
  Result<WireValue> output = internal_error("no output");
  if (!call->started_ && method.stateful) {
    auto state = instance.stream_start(method);
    if (state.ok()) {
      call->state_ = std::move(state).value();
    } else {
      output = state.error();
    }
  }
  call->started_ = true;
  if (call->state_ || !method.stateful) {
    if (method.kind == MethodKind::kUnary) {
      PreparedInputs* item = work.item.get();
      auto results = instance.run(method, std::span<PreparedInputs* const>(&item, 1));
      output = std::move(results.front());
    } else {
      output = instance.stream_item(method, *work.item, call->state_.get());
    }
  }
  scheduler_.stop_clock(grant);
  ++stream_items_;
  if (output.ok() && !call->cancelled_) {
    // Counted before it is sent: the client may send its next item as soon as it sees this
    // output, and add_item must not find the window still full (see Call::sent_).
    json header{{"type", msg::kOutput},
                {"id", call->id()},
                {"seq", call->sent_.fetch_add(1)},
                {"outputs", std::move(output->value)}};
    if (Status sent = send(*call, header, output->parts); !sent.ok()) {
      --call->sent_;
      output = sent.error();  // the call ends with it below
    }
  }
  std::vector<Ending> endings;
  {
    std::lock_guard lock(mutex_);
    call->in_flight_ = false;
    if (!output.ok()) {
      call->items_.clear();
      endings.push_back({call, error_header(call->id(), output.error())});
    } else if (call->cancelled_) {
      unqueue_locked(call);
      endings.push_back(cancelled_ending_locked(call));
    } else if (!call->items_.empty()) {
      call->runnable_ = true;
      runnable_streams_.push_back(call);
    } else if (call->input_closed_) {
      endings.push_back({call, end_header(*call, "done", call->sent_.load())});
    }
  }
  finish_all(endings);
}

size_t ModelHost::shutdown(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  admitting_ = false;
  calls_changed_.wait_for(lock, timeout, [this] { return calls_.empty(); });
  size_t cancelled = 0;
  if (!calls_.empty()) {
    // Calls between executions end now; calls in flight end after their execution.
    std::vector<Ending> endings;
    for (const auto& call : calls_) {
      if (call->cancelled_) continue;
      call->cancelled_ = true;
      ++cancelled;
      if (!call->in_flight_) {
        unqueue_locked(call);
        endings.push_back(cancelled_ending_locked(call));
      }
    }
    lock.unlock();
    finish_all(endings);
    lock.lock();
    calls_changed_.wait(lock, [this] { return calls_.empty(); });
  }
  stopping_ = true;
  lock.unlock();
  work_ready_.notify_all();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
  return cancelled;
}

ReleaseReport ModelHost::release() { return model_->release(); }

size_t ModelHost::live_calls() const {
  std::lock_guard lock(mutex_);
  return calls_.size();
}

json ModelHost::stats() const {
  json methods = json::array();
  size_t queued = 0;
  size_t generating = 0;
  std::lock_guard lock(mutex_);
  for (const auto& [name, state] : methods_) {
    queued += state.queue.size();
    generating += state.generating.size();
  }
  return json{{"live_calls", calls_.size()},
              {"queued", queued},
              {"starting", starting_.size()},
              {"generating", generating},
              {"in_flight", in_flight_},
              {"requests", requests_.load()},
              {"errors", errors_.load()},
              {"executions", executions_.load()},
              {"batched_rows", batched_rows_.load()},
              {"generate_steps", generate_steps_.load()},
              {"step_rows", step_rows_.load()},
              {"chunks", chunks_.load()},
              {"stream_items", stream_items_.load()}};
}

}  // namespace outpost::runtime
