#include "controlplane/state/artifact_store.h"

#include <filesystem>

#include "common/sha256.h"
#include <sys/stat.h>

namespace outpost::control {

namespace fs = std::filesystem;

Result<ArtifactStore> ArtifactStore::create(std::string root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return unavailable("cannot create the artifact directory " + root + ": " + ec.message());
  ::chmod(root.c_str(), 0700);
  return ArtifactStore(std::move(root));
}

std::string ArtifactStore::path_of(const std::string& sha256) const {
  return root_ + "/" + sha256.substr(0, 2) + "/" + sha256;
}

bool ArtifactStore::contains(const std::string& sha256) const {
  std::error_code ec;
  return is_sha256_hex(sha256) && fs::is_regular_file(path_of(sha256), ec);
}

Status ArtifactStore::import(const std::string& file, const std::string& sha256) const {
  if (!is_sha256_hex(sha256)) return internal_error("bad artifact hash " + sha256);
  std::error_code ec;
  const std::string target = path_of(sha256);
  const std::string parent = fs::path(target).parent_path().string();
  fs::create_directories(parent, ec);
  if (ec) return unavailable("cannot store an artifact: " + ec.message());
  ::chmod(parent.c_str(), 0700);
  if (fs::is_regular_file(target, ec)) return {};
  ::chmod(file.c_str(), 0600);  // a user's model: readable by outpost-control only
  fs::rename(file, target, ec);
  if (ec) return unavailable("cannot store an artifact: " + ec.message());
  return {};
}

}  // namespace outpost::control
