// Wall-clock time as a seam. Expiry (join tokens, keys) is stored as Unix seconds and must
// survive restarts, so it cannot use the steady Clock of common/clock.h; tests inject a fake.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace outpost::control {

class WallClock {
 public:
  virtual ~WallClock() = default;
  virtual int64_t now_seconds() const = 0;
};

class SystemWallClock final : public WallClock {
 public:
  int64_t now_seconds() const override {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// "2025-01-31T12:00:00Z"
std::string format_time(int64_t unix_seconds);

}  // namespace outpost::control
