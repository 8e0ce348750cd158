#include "agent/artifact_cache.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/log.h"
#include "common/sha256.h"
#include <sys/stat.h>
#include <unistd.h>

namespace outpost::agent {
namespace {

namespace fs = std::filesystem;

class FileWriter final : public ArtifactCache::Writer {
 public:
  FileWriter(std::string partial, std::string final_path, std::string sha256, uint64_t size)
      : partial_(std::move(partial)),
        final_path_(std::move(final_path)),
        sha256_(std::move(sha256)),
        size_(size),
        out_(partial_, std::ios::binary | std::ios::trunc) {}

  ~FileWriter() override {
    if (!committed_) {
      out_.close();
      ::unlink(partial_.c_str());
    }
  }

  Status append(std::string_view bytes) override {
    if (!out_) return internal_error("cannot write " + partial_);
    if (written_ + bytes.size() > size_) {
      return Error(ErrorCode::kDataLoss, "artifact " + sha256_ + " is larger than the promised " +
                                             std::to_string(size_) + " bytes");
    }
    out_.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out_) return internal_error("cannot write " + partial_ + " (disk full?)");
    digest_.update(bytes);
    written_ += bytes.size();
    return {};
  }

  Result<std::string> commit() override {
    out_.flush();
    out_.close();
    if (written_ != size_) {
      return Error(ErrorCode::kDataLoss, "artifact " + sha256_ + " ended after " +
                                             std::to_string(written_) + " of " +
                                             std::to_string(size_) + " bytes");
    }
    const std::string actual = digest_.hex();
    if (actual != sha256_) {
      return Error(ErrorCode::kDataLoss, "artifact hash mismatch: expected " + sha256_ + ", got " +
                                             actual + " (corrupt or tampered)");
    }
    ::chmod(partial_.c_str(), 0600);
    if (::rename(partial_.c_str(), final_path_.c_str()) != 0) {
      return internal_error("cannot move the artifact into " + final_path_);
    }
    committed_ = true;
    return final_path_;
  }

 private:
  std::string partial_;
  std::string final_path_;
  std::string sha256_;
  uint64_t size_;
  uint64_t written_ = 0;
  std::ofstream out_;
  Sha256 digest_;
  bool committed_ = false;
};

}  // namespace

ArtifactCache::ArtifactCache(std::string dir, uint64_t max_file_bytes)
    : dir_(std::move(dir)), max_file_bytes_(max_file_bytes) {}

Result<std::unique_ptr<ArtifactCache>> ArtifactCache::open(const std::string& dir,
                                                           uint64_t max_file_bytes) {
  std::error_code ec;
  fs::create_directories(dir + "/.partial", ec);
  if (ec) return internal_error("cannot create " + dir + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  for (const auto& entry : fs::directory_iterator(dir + "/.partial", ec)) {
    fs::remove(entry.path(), ec);
  }
  return std::unique_ptr<ArtifactCache>(new ArtifactCache(dir, max_file_bytes));
}

std::optional<std::string> ArtifactCache::find(const std::string& sha256, uint64_t size) const {
  if (!is_sha256_hex(sha256)) return std::nullopt;
  const std::string path = dir_ + "/" + sha256;
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || static_cast<uint64_t>(info.st_size) != size) {
    return std::nullopt;
  }
  return path;
}

Result<std::unique_ptr<ArtifactCache::Writer>> ArtifactCache::begin(const std::string& sha256,
                                                                    uint64_t size) const {
  if (!is_sha256_hex(sha256)) {
    return invalid_argument("'" + sha256 + "' is not a lower-case hex SHA-256");
  }
  if (size > max_file_bytes_) {
    return Error(ErrorCode::kResourceExhausted, "artifact of " + std::to_string(size) +
                                                    " bytes is above the agent's limit of " +
                                                    std::to_string(max_file_bytes_));
  }
  static std::atomic<uint64_t> counter{0};
  const std::string partial = dir_ + "/.partial/" + sha256 + "." + std::to_string(::getpid()) +
                              "." + std::to_string(counter.fetch_add(1));
  return std::unique_ptr<Writer>(
      std::make_unique<FileWriter>(partial, dir_ + "/" + sha256, sha256, size));
}

}  // namespace outpost::agent
