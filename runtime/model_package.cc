#include "runtime/model_package.h"

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <openssl/evp.h>

namespace outpost::runtime {
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

Error data_loss(std::string message) { return {ErrorCode::kDataLoss, std::move(message)}; }

}  // namespace

Result<std::string> sha256_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return Error(ErrorCode::kNotFound, path + ": " + std::strerror(errno));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> context(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!context || EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) != 1) {
    return internal_error("sha256: OpenSSL could not start a digest");
  }
  std::vector<char> block(size_t{1} << 20);
  while (true) {
    const size_t got = std::fread(block.data(), 1, block.size(), file.get());
    if (got > 0) EVP_DigestUpdate(context.get(), block.data(), got);
    if (got < block.size()) {
      if (std::ferror(file.get()) != 0) {
        return Error(ErrorCode::kDataLoss, path + ": read failed: " + std::strerror(errno));
      }
      break;
    }
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  EVP_DigestFinal_ex(context.get(), digest.data(), &length);
  return to_hex(digest.data(), length);
}

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
