#include "controlplane/auth/secrets.h"

#include <cstdlib>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

namespace outpost::control {

namespace {

std::string to_hex(const unsigned char* data, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 0xf]);
  }
  return out;
}

bool from_hex(std::string_view text, std::vector<unsigned char>& out) {
  if (text.size() % 2 != 0) return false;
  out.clear();
  for (size_t i = 0; i < text.size(); i += 2) {
    int value = 0;
    for (size_t j = 0; j < 2; ++j) {
      const char c = text[i + j];
      int digit = 0;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else {
        return false;
      }
      value = value * 16 + digit;
    }
    out.push_back(static_cast<unsigned char>(value));
  }
  return true;
}

std::vector<unsigned char> pbkdf2(std::string_view secret, const std::vector<unsigned char>& salt,
                                  int iterations) {
  std::vector<unsigned char> out(32);
  if (PKCS5_PBKDF2_HMAC(secret.data(), static_cast<int>(secret.size()), salt.data(),
                        static_cast<int>(salt.size()), iterations, EVP_sha256(),
                        static_cast<int>(out.size()), out.data()) != 1) {
    // OpenSSL failing to run a KDF is an environment failure we cannot work around.
    std::abort();
  }
  return out;
}

}  // namespace

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> buffer(bytes);
  if (RAND_bytes(buffer.data(), static_cast<int>(buffer.size())) != 1) std::abort();
  return to_hex(buffer.data(), buffer.size());
}

Result<ParsedToken> parse_token(std::string_view token, std::string_view prefix) {
  const auto bad = [&] {
    return Error(ErrorCode::kUnauthenticated,
                 "malformed credential: expected " + std::string(prefix) + "_<id>_<secret>");
  };
  if (token.size() > 256 || token.size() <= prefix.size() + 1 ||
      token.substr(0, prefix.size()) != prefix || token[prefix.size()] != '_') {
    return bad();
  }
  token.remove_prefix(prefix.size() + 1);
  const auto cut = token.rfind('_');
  if (cut == std::string_view::npos || cut == 0 || cut + 1 == token.size()) return bad();
  ParsedToken parsed{std::string(token.substr(0, cut)), std::string(token.substr(cut + 1))};
  if (parsed.id.find('_') != std::string::npos) return bad();
  return parsed;
}

std::string make_token(std::string_view prefix, std::string_view id, std::string_view secret) {
  std::string out(prefix);
  out += '_';
  out += id;
  out += '_';
  out += secret;
  return out;
}

std::string hash_secret(std::string_view secret, int iterations) {
  std::vector<unsigned char> salt(16);
  if (RAND_bytes(salt.data(), static_cast<int>(salt.size())) != 1) std::abort();
  const auto hash = pbkdf2(secret, salt, iterations);
  return "pbkdf2-sha256$" + std::to_string(iterations) + "$" + to_hex(salt.data(), salt.size()) +
         "$" + to_hex(hash.data(), hash.size());
}

bool verify_secret(std::string_view secret, std::string_view stored) {
  constexpr std::string_view kScheme = "pbkdf2-sha256$";
  if (stored.substr(0, kScheme.size()) != kScheme) return false;
  stored.remove_prefix(kScheme.size());
  const auto first = stored.find('$');
  if (first == std::string_view::npos) return false;
  const auto second = stored.find('$', first + 1);
  if (second == std::string_view::npos) return false;
  const std::string iterations_text(stored.substr(0, first));
  char* end = nullptr;
  const long iterations = std::strtol(iterations_text.c_str(), &end, 10);
  if (end != iterations_text.c_str() + iterations_text.size() || iterations < 1 ||
      iterations > 10'000'000) {
    return false;
  }
  std::vector<unsigned char> salt;
  std::vector<unsigned char> expected;
  if (!from_hex(stored.substr(first + 1, second - first - 1), salt) ||
      !from_hex(stored.substr(second + 1), expected) || expected.size() != 32) {
    return false;
  }
  const auto actual = pbkdf2(secret, salt, static_cast<int>(iterations));
  return CRYPTO_memcmp(actual.data(), expected.data(), expected.size()) == 0;
}

}  // namespace outpost::control
