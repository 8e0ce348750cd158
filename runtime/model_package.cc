#include "runtime/model_package.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/sha256.h"

namespace outpost::runtime {
namespace {

Error data_loss(std::string message) { return {ErrorCode::kDataLoss, std::move(message)}; }

}  // namespace

Result<ModelPackage> open_model_package(const std::string& dir, const PackageExpectations& expect) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return Error(ErrorCode::kNotFound, "model package " + dir + " is not a folder");
  }
  const std::string config_path = (fs::path(dir) / "config.yaml").string();
  const auto config_size = fs::file_size(config_path, ec);
  if (ec) return Error(ErrorCode::kNotFound, "model package " + dir + " has no config.yaml");
  if (config_size > kMaxConfigBytes) {
    return invalid_argument("config.yaml is " + std::to_string(config_size) +
                            " bytes; the limit is " + std::to_string(kMaxConfigBytes));
  }
  std::ifstream in(config_path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  OUTPOST_ASSIGN_OR_RETURN(auto config, parse_model_config(text.str()));

  ModelPackage package;
  package.dir = dir;
  package.file_path = (fs::path(dir) / config.file).string();
  if (!fs::is_regular_file(package.file_path, ec)) {
    return Error(ErrorCode::kNotFound,
                 "model package " + dir + " has no model file " + config.file);
  }
  package.file_size = fs::file_size(package.file_path, ec);
  if (ec) return Error(ErrorCode::kNotFound, package.file_path + ": " + ec.message());

  const auto check_size = [&](uint64_t expected, const char* source) -> Status {
    if (expected == package.file_size) return {};
    return data_loss(config.file + " is " + std::to_string(package.file_size) + " bytes but " +
                     source + " says " + std::to_string(expected) +
                     " (a truncated or different file)");
  };
  if (config.size) OUTPOST_RETURN_IF_ERROR(check_size(*config.size, "config.yaml"));
  if (expect.size) OUTPOST_RETURN_IF_ERROR(check_size(*expect.size, "the load request"));

  OUTPOST_ASSIGN_OR_RETURN(package.file_sha256, sha256_file(package.file_path));
  const auto check_hash = [&](const std::string& expected, const char* source) -> Status {
    if (expected == package.file_sha256) return {};
    return data_loss(config.file + " has sha256 " + package.file_sha256 + " but " + source +
                     " expects " + expected + " (a corrupt or different file)");
  };
  if (config.sha256) OUTPOST_RETURN_IF_ERROR(check_hash(*config.sha256, "config.yaml"));
  if (expect.sha256) OUTPOST_RETURN_IF_ERROR(check_hash(*expect.sha256, "the load request"));
  package.config = std::move(config);
  return package;
}

}  // namespace outpost::runtime
