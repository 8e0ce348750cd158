// Time and randomness as seams (Envoy's style): the backoff, keepalive and autoscaling logic
// take a Clock and a Random so that their tests are exact and instant. SteadyClock/SystemRandom
// are the real ones; tests use the fakes in tests/support.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <random>

namespace outpost {

using Duration = std::chrono::steady_clock::duration;
using TimePoint = std::chrono::steady_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SteadyClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  // A process-wide instance for callers that take no injected clock.
  static SteadyClock& instance();
};

class Random {
 public:
  virtual ~Random() = default;
  // Uniform in [0, 1).
  virtual double uniform() = 0;
};

class SystemRandom final : public Random {
 public:
  SystemRandom();
  double uniform() override;
  static SystemRandom& instance();

 private:
  std::mutex mutex_;
  std::mt19937_64 engine_;
};

}  // namespace outpost
