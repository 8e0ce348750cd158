// Fakes for the time and randomness seams. Named as fakes: they stand in for the passing of
// time, which a test must not wait for.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

#include "common/clock.h"
#include "tunnel/client.h"

namespace outpost::testing {

class FakeClock final : public Clock {
 public:
  TimePoint now() const override;
  void advance(Duration by);

 private:
  mutable std::mutex mutex_;
  TimePoint now_{std::chrono::hours(1000)};
};

// Returns the values it was given, in turn, then repeats the last.
class FakeRandom final : public Random {
 public:
  explicit FakeRandom(std::vector<double> values) : values_(std::move(values)) {}
  double uniform() override;

 private:
  std::mutex mutex_;
  std::vector<double> values_;
  size_t next_ = 0;
};

// A DelayScheduler that records each requested delay and runs nothing until told: a test sees
// every reconnect delay and lets the next attempt happen when it wants, advancing the clock.
class FakeScheduler final : public tunnel::DelayScheduler {
 public:
  explicit FakeScheduler(FakeClock& clock) : clock_(clock) {}
  void wait(int slot, std::chrono::milliseconds delay, std::function<void()> done) override;

  std::vector<std::chrono::milliseconds> delays() const;
  size_t pending() const;
  // Advances the clock by the oldest pending delay and runs its continuation.
  bool fire_next();

 private:
  FakeClock& clock_;
  mutable std::mutex mutex_;
  std::vector<std::chrono::milliseconds> delays_;
  std::deque<std::pair<std::chrono::milliseconds, std::function<void()>>> pending_;
};

}  // namespace outpost::testing
