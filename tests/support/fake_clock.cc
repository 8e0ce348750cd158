#include "tests/support/fake_clock.h"

namespace outpost::testing {

TimePoint FakeClock::now() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return now_;
}

void FakeClock::advance(Duration by) {
  std::lock_guard<std::mutex> lock(mutex_);
  now_ += by;
}

double FakeRandom::uniform() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (values_.empty()) return 0.5;
  const double value = values_[std::min(next_, values_.size() - 1)];
  ++next_;
  return value;
}

void FakeScheduler::wait(int, std::chrono::milliseconds delay, std::function<void()> done) {
  std::lock_guard<std::mutex> lock(mutex_);
  delays_.push_back(delay);
  pending_.emplace_back(delay, std::move(done));
}

std::vector<std::chrono::milliseconds> FakeScheduler::delays() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return delays_;
}

size_t FakeScheduler::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_.size();
}

bool FakeScheduler::fire_next() {
  std::pair<std::chrono::milliseconds, std::function<void()>> next;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pending_.empty()) return false;
    next = std::move(pending_.front());
    pending_.pop_front();
  }
  clock_.advance(next.first);
  next.second();
  return true;
}

}  // namespace outpost::testing
