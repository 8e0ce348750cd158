// SHA-256 through OpenSSL's EVP interface, as lower-case hex: streaming (`Sha256`), of a string,
// and of a file read in blocks. The one place the parts compute a SHA-256 digest as hex.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <openssl/types.h>

#include "common/result.h"

namespace outpost {

// A SHA-256 computed over bytes given in pieces. Not thread-safe: one per stream of bytes.
class Sha256 {
 public:
  Sha256();

  void update(std::string_view bytes);
  void update(std::span<const unsigned char> bytes);
  // Finishes the digest and returns it as 64 lower-case hex digits; the object then starts a
  // new digest, as if just constructed.
  std::string hex();

 private:
  struct Free {
    void operator()(EVP_MD_CTX* context) const;
  };
  std::unique_ptr<EVP_MD_CTX, Free> context_;
};

// The SHA-256 of `bytes`, 64 lower-case hex digits.
std::string sha256_hex(std::string_view bytes);

// The SHA-256 of a file's contents, read in 1 MiB blocks. not_found or permission_denied when
// it cannot be opened, invalid_argument for a folder, data_loss when a read fails; the message
// names the path.
Result<std::string> sha256_file(const std::string& path);

// True for 64 lower-case hex digits: the form every part uses for a SHA-256.
bool is_sha256_hex(std::string_view text);

}  // namespace outpost
