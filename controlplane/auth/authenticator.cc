#include "controlplane/auth/authenticator.h"

#include "common/sha256.h"
#include "controlplane/auth/secrets.h"

namespace outpost::control {

namespace {

constexpr size_t kCacheLimit = 10'000;

Error unauthenticated(std::string message) {
  return {ErrorCode::kUnauthenticated, std::move(message)};
}

}  // namespace

const std::set<std::string>& all_scopes() {
  static const std::set<std::string> scopes = {"read", "write", "predict"};
  return scopes;
}

Result<Principal> Authenticator::authenticate(std::string_view authorization,
                                              std::string_view remote) {
  if (throttle_ == nullptr || authorization.empty()) return check(authorization);
  std::unique_lock<std::mutex> lane;
  if (!is_verified(authorization)) lane = throttle_->lane(remote);
  const bool throttled = throttle_->retry_after(remote) > 0;  // before this refusal counts
  auto principal = check(authorization);
  if (principal.ok() || principal.error().code() != ErrorCode::kUnauthenticated) return principal;
  throttle_->record_failure(remote);
  if (const int64_t wait = throttle_->retry_after(remote); throttled && wait > 0) {
    return Error(ErrorCode::kResourceExhausted,
                 principal.error().message() +
                     "; too many refused credentials from this address: try again in " +
                     std::to_string(wait) + " s");
  }
  return principal;
}

bool Authenticator::is_verified(std::string_view authorization) {
  constexpr std::string_view kScheme = "Key ";
  if (authorization.substr(0, kScheme.size()) != kScheme) return false;
  const std::string fingerprint = sha256_hex(authorization.substr(kScheme.size()));
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = verified_.find(fingerprint);
  return it != verified_.end() &&
         (!it->second.expires_at.has_value() || *it->second.expires_at > clock_.now_seconds());
}

int64_t Authenticator::throttled_for(std::string_view remote) {
  return throttle_ == nullptr ? 0 : throttle_->retry_after(remote);
}

Result<Principal> Authenticator::check(std::string_view authorization) {
  constexpr std::string_view kScheme = "Key ";
  if (authorization.empty()) {
    return unauthenticated("missing credential: send 'Authorization: Key <personal access token>'");
  }
  if (authorization.substr(0, kScheme.size()) != kScheme) {
    return unauthenticated("the Authorization header must read 'Key <personal access token>'");
  }
  const std::string token(authorization.substr(kScheme.size()));
  auto parsed = parse_token(token, kPatPrefix);
  if (!parsed.ok()) return unauthenticated("malformed personal access token");
  const std::string fingerprint = sha256_hex(token);
  const int64_t now = clock_.now_seconds();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = verified_.find(fingerprint);
    if (it != verified_.end()) {
      if (it->second.expires_at.has_value() && *it->second.expires_at <= now) {
        verified_.erase(it);
        return unauthenticated("the personal access token has expired");
      }
      return it->second.principal;
    }
  }
  auto key = store_.get_key(parsed->id);
  if (!key.ok()) {
    if (key.error().code() == ErrorCode::kNotFound) {
      return unauthenticated("unknown or deleted personal access token");
    }
    return key.error();
  }
  if (!verify_secret(parsed->secret, key->secret_hash)) {
    return unauthenticated("unknown or deleted personal access token");
  }
  if (key->expires_at.has_value() && *key->expires_at <= now) {
    return unauthenticated("the personal access token has expired");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto user, store_.get_user(key->user_id));
  Principal principal{user.id, key->id,
                      std::set<std::string>(key->scopes.begin(), key->scopes.end()), user.is_admin};
  std::lock_guard<std::mutex> lock(mutex_);
  if (verified_.size() >= kCacheLimit) verified_.clear();
  verified_[fingerprint] = Cached{principal, key->expires_at};
  return principal;
}

Result<NewKey> Authenticator::create_key(const std::string& user_id,
                                         const std::set<std::string>& scopes,
                                         std::string description,
                                         std::optional<int64_t> expires_at) {
  NewKey out;
  out.key.id = random_hex(8);
  out.key.user_id = user_id;
  out.key.description = std::move(description);
  out.key.scopes.assign(scopes.begin(), scopes.end());
  out.key.created_at = clock_.now_seconds();
  out.key.expires_at = expires_at;
  const std::string secret = random_hex(32);
  out.key.secret_hash = hash_secret(secret);
  OUTPOST_RETURN_IF_ERROR(store_.create_key(out.key));
  out.token = make_token(kPatPrefix, out.key.id, secret);
  return out;
}

void Authenticator::forget_key(const std::string& key_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = verified_.begin(); it != verified_.end();) {
    it = it->second.principal.key_id == key_id ? verified_.erase(it) : std::next(it);
  }
}

}  // namespace outpost::control
