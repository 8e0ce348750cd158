#include "common/sha256.h"

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <openssl/evp.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace outpost {
namespace {

// OpenSSL failing to start or run SHA-256 (no memory, a broken provider configuration) is an
// environment we cannot work in.
void require(int openssl_result) {
  if (openssl_result != 1) std::abort();
}

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

void Sha256::Free::operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  if (!context_) std::abort();
  require(EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr));
}

void Sha256::update(std::string_view bytes) {
  require(EVP_DigestUpdate(context_.get(), bytes.data(), bytes.size()));
}

void Sha256::update(std::span<const unsigned char> bytes) {
  require(EVP_DigestUpdate(context_.get(), bytes.data(), bytes.size()));
}

std::string Sha256::hex() {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  require(EVP_DigestFinal_ex(context_.get(), digest.data(), &size));
  require(EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr));
  static constexpr std::string_view kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(size_t{size} * 2);
  for (unsigned int i = 0; i < size; ++i) {
    out.push_back(kDigits[digest[i] >> 4]);
    out.push_back(kDigits[digest[i] & 0xf]);
  }
  return out;
}

std::string sha256_hex(std::string_view bytes) {
  Sha256 digest;
  digest.update(bytes);
  return digest.hex();
}

Result<std::string> sha256_file(const std::string& path) {
  const Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0) {
    const int error = errno;
    const ErrorCode code =
        error == EACCES || error == EPERM ? ErrorCode::kPermissionDenied : ErrorCode::kNotFound;
    return Error(code, "cannot read " + path + " to hash it: " + std::strerror(error));
  }
  struct stat info {};
  if (::fstat(file.get(), &info) == 0 && S_ISDIR(info.st_mode)) {
    return invalid_argument("cannot hash " + path + ": it is a folder, not a file");
  }
  Sha256 digest;
  std::vector<unsigned char> block(size_t{1} << 20);
  while (true) {
    const ssize_t got = ::read(file.get(), block.data(), block.size());
    if (got == 0) break;
    if (got < 0) {
      if (errno == EINTR) continue;
      return Error(ErrorCode::kDataLoss,
                   "reading " + path + " to hash it failed: " + std::strerror(errno));
    }
    digest.update(std::span<const unsigned char>(block.data(), static_cast<size_t>(got)));
  }
  return digest.hex();
}

bool is_sha256_hex(std::string_view text) {
  if (text.size() != 64) return false;
  for (const char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace outpost
