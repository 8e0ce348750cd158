// When to try again after a tunnel connection fails. Transient failures wait a full-jitter
// exponential delay, uniform in [0, min(cap, base * 2^n)) (cloudflared's choice: a fleet that lost
// its control plane together does not come back together). Refusals (credential, TLS trust, pin,
// proxy credentials) need an operator, so they wait longer, uniform in [d/2, d) with
// d = min(refused_delay, refused_first * 2^(n-1)) for the n-th refusal in a row: an operator's
// fix (a rotated credential, a proxy that answered 407 once) is picked up within seconds, and a
// credential that stays wrong is tried every few minutes, not in a storm. The caller logs them
// loudly. The failure count resets only after a connection stayed up for
// stable_after, so a connection that flaps keeps backing off.
#pragma once

#include <chrono>

#include "common/clock.h"

namespace outpost::tunnel {

struct BackoffOptions {
  // Small, so that a connection lost to a partition or a control-plane restart is dialled again
  // within about a second of the network allowing it: 250 ms, 500 ms, 1 s, then up to `cap`.
  // Jitter keeps a fleet that lost its control plane together from dialling together; the dials
  // a refused agent would repeat are slowed by refused_delay instead.
  std::chrono::milliseconds base{250};
  std::chrono::milliseconds cap{2'000};
  std::chrono::milliseconds stable_after{60'000};
  std::chrono::milliseconds refused_first{10'000};   // the first refusal waits 5-10 s
  std::chrono::milliseconds refused_delay{300'000};  // doubling up to 2.5-5 min
};

enum class FailureKind {
  kTransient,  // network, timeouts, server errors: retry soon
  kRefused,    // the other side said no to who we are: retry slowly, loudly
};

class ReconnectBackoff {
 public:
  ReconnectBackoff(BackoffOptions options, const Clock& clock, Random& random);

  // Records a failed attempt and returns how long to wait before the next one.
  std::chrono::milliseconds next_delay(FailureKind kind);
  // A connection came up.
  void on_connected();
  // The connection that came up ended; resets the count if it lasted stable_after.
  void on_disconnected();
  int consecutive_failures() const { return failures_; }

 private:
  BackoffOptions options_;
  const Clock& clock_;
  Random& random_;
  int failures_ = 0;
  int refusals_ = 0;  // in a row, since the last stable connection
  bool connected_ = false;
  TimePoint connected_at_{};
};

}  // namespace outpost::tunnel
