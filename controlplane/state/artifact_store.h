// Model artifacts on disk, content-addressed: <root>/<first two hex digits>/<sha256>. A file
// is written aside and renamed into place, so a reader never sees a partial artifact; the same
// bytes uploaded twice are stored once. Directories are 0700 and artifacts 0600: users' models
// are readable by outpost-control alone.
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace outpost::control {

class ArtifactStore {
 public:
  // Creates `root` when missing.
  static Result<ArtifactStore> create(std::string root);

  std::string path_of(const std::string& sha256) const;
  bool contains(const std::string& sha256) const;
  // Moves `file` (on the same file system) into place under `sha256`; an existing copy wins.
  Status import(const std::string& file, const std::string& sha256) const;

 private:
  explicit ArtifactStore(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

}  // namespace outpost::control
