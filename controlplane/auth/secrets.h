// Secrets the control plane hands out (personal access tokens, join tokens, node credentials)
// and how they are kept: only a salted PBKDF2-HMAC-SHA256 hash is stored, compared in constant
// time. A token reads "<prefix>_<id>_<secret>": the id finds the stored hash without a scan, and
// the 256-bit secret is what is checked.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace outpost::control {

inline constexpr std::string_view kPatPrefix = "opat";
inline constexpr std::string_view kJoinTokenPrefix = "ojt";
inline constexpr std::string_view kNodeCredentialPrefix = "onc";

// Iterations of PBKDF2 for new hashes; stored with each hash, so it can change later.
inline constexpr int kKdfIterations = 100'000;

// `bytes` random bytes from OpenSSL's CSPRNG, hex-encoded.
std::string random_hex(size_t bytes);

struct ParsedToken {
  std::string id;
  std::string secret;
};

// "<prefix>_<id>_<secret>" with the expected prefix; the id may itself hold '-' but not '_'.
Result<ParsedToken> parse_token(std::string_view token, std::string_view prefix);
std::string make_token(std::string_view prefix, std::string_view id, std::string_view secret);

// "pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>" of `secret`, with a fresh random salt.
std::string hash_secret(std::string_view secret, int iterations = kKdfIterations);
// Constant-time comparison of `secret` against a stored hash; false for a malformed hash.
bool verify_secret(std::string_view secret, std::string_view stored);

}  // namespace outpost::control
