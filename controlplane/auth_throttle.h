// Slows down the guessing of credentials. Each source address may have `max_failures`
// credentials refused within `window_seconds` (the window opens at its first refusal); once over
// that budget, until the window closes, every credential it presents that was not verified before
// is refused at once (HTTP 429 with Retry-After), before any lookup or KDF runs. One budget per
// address covers the REST API (personal access tokens) and the agents' tunnel (join tokens, node
// credentials). An IPv6 client counts by its /64, which one host commonly holds whole.
//
// Callers let a credential found in their cache of verified ones through even from a throttled
// address: it costs no KDF and proves nothing new, so a client that was working keeps working
// from behind an address shared with a guesser.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "controlplane/wall_clock.h"

namespace outpost::control {

struct AuthThrottleOptions {
  int max_failures = 10;  // refused credentials per address and window; 0 turns the throttle off
  int window_seconds = 60;
};

class AuthThrottle {
 public:
  AuthThrottle(AuthThrottleOptions options, const WallClock& clock)
      : options_(options), clock_(clock) {}

  // Seconds until `remote` ("address:port", as the listeners report it) may present a credential
  // that was not verified before; 0: now.
  int64_t retry_after(std::string_view remote);
  // A credential from `remote` was refused.
  void record_failure(std::string_view remote);

  // What `remote` counts under: its address without the port; IPv4-mapped IPv6 as IPv4; other
  // IPv6 as "<prefix>/64".
  static std::string source_of(std::string_view remote);

 private:
  struct Window {
    int64_t start = 0;
    int failures = 0;
  };
  // Drops closed windows when the table is large, so that many addresses cannot grow it forever.
  void prune(int64_t now);

  const AuthThrottleOptions options_;
  const WallClock& clock_;
  std::mutex mutex_;
  std::unordered_map<std::string, Window> windows_;  // source_of(remote) -> its window
};

}  // namespace outpost::control
