#include "tunnel/backoff.h"

#include <algorithm>
#include <cmath>

namespace outpost::tunnel {

ReconnectBackoff::ReconnectBackoff(BackoffOptions options, const Clock& clock, Random& random)
    : options_(options), clock_(clock), random_(random) {}

std::chrono::milliseconds ReconnectBackoff::next_delay(FailureKind kind) {
  const int exponent = std::min(failures_, 30);
  ++failures_;
  if (kind == FailureKind::kRefused) {
    const int doublings = std::min(refusals_++, 30);
    const double d =
        std::min(static_cast<double>(options_.refused_delay.count()),
                 static_cast<double>(options_.refused_first.count()) * std::ldexp(1.0, doublings));
    return std::chrono::milliseconds(static_cast<int64_t>(d / 2 + random_.uniform() * d / 2));
  }
  const double ceiling =
      std::min(static_cast<double>(options_.cap.count()),
               static_cast<double>(options_.base.count()) * std::ldexp(1.0, exponent));
  return std::chrono::milliseconds(static_cast<int64_t>(random_.uniform() * ceiling));
}

void ReconnectBackoff::on_connected() {
  connected_ = true;
  connected_at_ = clock_.now();
}

void ReconnectBackoff::on_disconnected() {
  if (connected_ && clock_.now() - connected_at_ >= options_.stable_after) {
    failures_ = 0;
    refusals_ = 0;
  }
  connected_ = false;
}

}  // namespace outpost::tunnel
