#include "common/clock.h"

namespace outpost {

SteadyClock& SteadyClock::instance() {
  static SteadyClock clock;
  return clock;
}

SystemRandom::SystemRandom() : engine_(std::random_device{}()) {}

double SystemRandom::uniform() {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(engine_);
}

SystemRandom& SystemRandom::instance() {
  static SystemRandom random;
  return random;
}

}  // namespace outpost
