// Personal access tokens: `Authorization: Key opat_<key id>_<secret>`. Keys are stored as a
// salted PBKDF2 hash; a verified token is remembered (by its SHA-256, never in clear) so that
// each request does not pay the KDF. Deleting a key forgets it at once; expiry is checked on
// every request. Refused tokens count against their sender's address in the AuthThrottle.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "controlplane/auth/auth_throttle.h"
#include "controlplane/state/store.h"
#include "controlplane/state/wall_clock.h"

namespace outpost::control {

// read, write, predict.
const std::set<std::string>& all_scopes();

struct Principal {
  std::string user_id;
  std::string key_id;
  std::set<std::string> scopes;
  bool is_admin = false;
};

struct NewKey {
  ApiKey key;
  std::string token;  // shown once
};

class Authenticator {
 public:
  // `throttle` may be null (no throttling).
  Authenticator(Store& store, const WallClock& clock, AuthThrottle* throttle = nullptr)
      : store_(store), clock_(clock), throttle_(throttle) {}

  // From the Authorization header sent from `remote` ("address:port"). unauthenticated with a
  // message saying what is wrong; every refusal but a missing header counts against `remote`.
  // A token that verifies is never refused, throttled address or not. While `remote` is
  // throttled (AuthThrottle), its checks take the throttle's lane, one at a time, and a refusal
  // is resource_exhausted (429 with throttled_for(remote) as Retry-After).
  Result<Principal> authenticate(std::string_view authorization, std::string_view remote = {});
  // The token was verified before and has not expired: authenticate() costs no KDF.
  bool is_verified(std::string_view authorization);
  // Seconds `remote` stays throttled; 0: it is not.
  int64_t throttled_for(std::string_view remote);

  // A new key for `user_id`; `expires_at` empty: never.
  Result<NewKey> create_key(const std::string& user_id, const std::set<std::string>& scopes,
                            std::string description, std::optional<int64_t> expires_at);
  void forget_key(const std::string& key_id);

 private:
  struct Cached {
    Principal principal;
    std::optional<int64_t> expires_at;
  };
  Result<Principal> check(std::string_view authorization);

  Store& store_;
  const WallClock& clock_;
  AuthThrottle* throttle_;
  std::mutex mutex_;
  std::unordered_map<std::string, Cached> verified_;  // sha256(token) -> principal
};

}  // namespace outpost::control
