// Slows down the guessing of credentials without ever refusing one that verifies. Each source
// address may have `max_failures` credentials refused within `window_seconds` (the window opens
// at its first refusal); once over that budget, until the window closes, the address is
// throttled: the credentials it presents are checked one at a time through lane(), shared by
// every throttled address, so guessers together cost at most one KDF at a time, and each refused
// one is answered 429 with Retry-After instead of 401. A credential that verifies passes, so a
// client behind an address shared with a guesser keeps working, after a restart too. One budget
// per address covers the REST API (personal access tokens) and the agents' tunnel (join tokens,
// node credentials). An IPv6 client counts by its /64, which one host commonly holds whole.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "controlplane/state/wall_clock.h"

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
  // Keeps a window that went over its budget (the store, so that a restart does not hand a
  // guesser a fresh budget); called outside the throttle's lock. restore() puts one back.
  using Keeper = std::function<void(const std::string& source, int64_t start, int failures)>;
  void set_keeper(Keeper keeper) { keeper_ = std::move(keeper); }
  void restore(const std::string& source, int64_t start, int failures);

  // Held while a credential from `remote` is checked: locked (waiting for the other throttled
  // checks) when `remote` is throttled, empty otherwise.
  std::unique_lock<std::mutex> lane(std::string_view remote);

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
  std::mutex lane_;  // the throttled addresses' checks, one at a time
  Keeper keeper_;
  std::unordered_map<std::string, Window> windows_;  // source_of(remote) -> its window
};

}  // namespace outpost::control
