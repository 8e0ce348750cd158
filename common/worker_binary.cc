#include "common/worker_binary.h"

#include <filesystem>

#include <unistd.h>

namespace outpost {

bool is_executable_file(const std::string& path) {
  std::error_code ignored;
  return std::filesystem::is_regular_file(path, ignored) && ::access(path.c_str(), X_OK) == 0;
}

std::string beside_self(const std::string& name) {
  std::error_code error;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return name;
  return (self.parent_path() / name).string();
}

std::string worker_binary_beside_self() { return beside_self("outpost-worker"); }

std::optional<std::string> locate_worker_binary() {
  std::string beside = worker_binary_beside_self();
  if (is_executable_file(beside)) return beside;
  if (is_executable_file(kInstalledWorkerBinary)) return std::string(kInstalledWorkerBinary);
  return std::nullopt;
}

}  // namespace outpost
