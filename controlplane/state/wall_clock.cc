#include "controlplane/state/wall_clock.h"

#include <ctime>

namespace outpost::control {

std::string format_time(int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  const size_t n = std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return {buffer, n};
}

}  // namespace outpost::control
