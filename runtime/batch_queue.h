// The dynamic batcher's queue, with Triton's semantics (docs/models.md, "Batching"): requests
// wait in arrival order; when an execution thread frees up it takes the oldest request and
// every following request that can share its batch (the same batch key: dtypes and trailing
// shapes), up to max_batch_size rows, stopping at the first that cannot. With a queue delay, a
// batch smaller than max_batch_size waits until its oldest request has waited that long. The
// queue is bounded: push() refuses past max_queue_size. Header-only so that tests can use it
// with their own entries; T provides rows(), batch_key() and enqueued().
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "protocol/model_config.h"

namespace outpost::runtime {

// The worker protocol's names (protocol/: messages, Values, config.yaml, the worker spec) are
// used unqualified throughout the worker.
using namespace protocol;  // NOLINT(google-build-using-namespace)

template <class T>
class BatchQueue {
 public:
  explicit BatchQueue(const BatchingConfig& config) : config_(config) {}

  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }

  // False when the queue is full.
  bool push(T entry) {
    if (entries_.size() >= static_cast<size_t>(config_.max_queue_size)) return false;
    queued_rows_ += entry->rows();
    entries_.push_back(std::move(entry));
    return true;
  }

  // When a batch may be formed: now (a time <= now) if the queue holds a full batch or the
  // delay is 0 or over; the oldest request's deadline otherwise; nullopt when empty.
  std::optional<TimePoint> ready_at() const {
    if (entries_.empty()) return std::nullopt;
    const TimePoint oldest = entries_.front()->enqueued();
    if (config_.max_queue_delay_us == 0 || config_.max_batch_size == 0 ||
        queued_rows_ >= config_.max_batch_size) {
      return oldest;
    }
    return oldest + std::chrono::microseconds(config_.max_queue_delay_us);
  }

  // The next batch: the oldest entry and those after it with its batch key, within
  // max_batch_size rows (always at least the oldest entry).
  std::vector<T> take() {
    std::vector<T> batch;
    if (entries_.empty()) return batch;
    const int64_t limit = std::max<int64_t>(config_.max_batch_size, 1);
    int64_t rows = 0;
    const std::string key = entries_.front()->batch_key();
    while (!entries_.empty()) {
      T& next = entries_.front();
      if (!batch.empty() && (next->batch_key() != key || rows + next->rows() > limit)) break;
      rows += next->rows();
      queued_rows_ -= next->rows();
      batch.push_back(std::move(next));
      entries_.pop_front();
    }
    return batch;
  }

  // Removes the first entry equal to `entry`; false when it is not queued.
  bool remove(const T& entry) {
    const auto it = std::find(entries_.begin(), entries_.end(), entry);
    if (it == entries_.end()) return false;
    queued_rows_ -= (*it)->rows();
    entries_.erase(it);
    return true;
  }

  // Removes and returns everything.
  std::vector<T> take_all() {
    std::vector<T> out(std::make_move_iterator(entries_.begin()),
                       std::make_move_iterator(entries_.end()));
    entries_.clear();
    queued_rows_ = 0;
    return out;
  }

  const BatchingConfig& config() const { return config_; }

 private:
  BatchingConfig config_;
  std::deque<T> entries_;
  int64_t queued_rows_ = 0;
};

}  // namespace outpost::runtime
