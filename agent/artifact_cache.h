// Model artifacts on the agent's disk, content-addressed by SHA-256 under
// <state_dir>/artifacts/<sha256>. A download is written aside (artifacts/.partial/), hashed as it
// arrives, size-capped, and renamed into place only when its size and hash match what the
// control plane promised: a file in the cache is always a verified one, and it survives
// restarts. What is left in .partial/ by a crash is deleted at start.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace outpost::agent {

class ArtifactCache {
 public:
  class Writer {
   public:
    virtual ~Writer() = default;
    // Refuses bytes past the expected size (data_loss) without writing them.
    virtual Status append(std::string_view bytes) = 0;
    // Checks size and hash, then renames; returns the cached path.
    virtual Result<std::string> commit() = 0;
  };

  // Creates the directories (0700) and clears leftovers of interrupted downloads.
  static Result<std::unique_ptr<ArtifactCache>> open(const std::string& dir,
                                                     uint64_t max_file_bytes);

  // The path of a cached artifact whose size matches, if present.
  std::optional<std::string> find(const std::string& sha256, uint64_t size) const;

  // Starts a download. Refuses a bad hash string or a size above the cap.
  Result<std::unique_ptr<Writer>> begin(const std::string& sha256, uint64_t size) const;

  const std::string& dir() const { return dir_; }

 private:
  ArtifactCache(std::string dir, uint64_t max_file_bytes);
  std::string dir_;
  uint64_t max_file_bytes_;
};

}  // namespace outpost::agent
