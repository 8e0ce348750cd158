#include "runtime/compute_threads.h"

#include <exception>

namespace outpost::runtime {

struct ComputeThreads::Pending {
  const std::function<void()>* task;
  std::exception_ptr error;
  bool done = false;
  std::condition_variable finished;
};

ComputeThreads::ComputeThreads(int count) {
  for (int i = 0; i < count; ++i) threads_.emplace_back([this] { loop(); });
}

ComputeThreads::~ComputeThreads() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  queued_.notify_all();
  for (auto& thread : threads_) thread.join();
}

void ComputeThreads::run(const std::function<void()>& task) {
  Pending pending;
  pending.task = &task;
  std::unique_lock lock(mutex_);
  queue_.push_back(&pending);
  queued_.notify_one();
  pending.finished.wait(lock, [&] { return pending.done; });
  if (pending.error) std::rethrow_exception(pending.error);
}

void ComputeThreads::loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    queued_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to run
    Pending* pending = queue_.front();
    queue_.pop_front();
    lock.unlock();
    std::exception_ptr error;
    try {
      (*pending->task)();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    pending->error = error;
    pending->done = true;
    pending->finished.notify_one();
  }
}

}  // namespace outpost::runtime
