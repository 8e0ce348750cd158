#include "cli/cli_config.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <yaml-cpp/yaml.h>

#include "common/yaml_document.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace outpost::cli {

namespace fs = std::filesystem;

std::string config_dir() {
  if (const char* dir = std::getenv("OUTPOST_CONFIG_DIR"); dir != nullptr && dir[0] != '\0') {
    return dir;
  }
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg != nullptr && xdg[0] != '\0') {
    return std::string(xdg) + "/outpost";
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.config/outpost";
}

std::string config_path() { return config_dir() + "/config.yaml"; }

Result<CliConfig> load_cli_config() {
  const std::string path = config_path();
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return Error(ErrorCode::kNotFound, "not logged in (no " + path +
                                           "): run `outpost login --base-url https://HOST:PORT`");
  }
  auto doc = load_yaml_file(path, YamlScalars::kStrings);
  if (!doc.ok()) {
    return invalid_argument(path + ": " + doc.error().message() + " (run `outpost login` again)");
  }
  if (!doc->is_object()) {
    return invalid_argument(path + " is not a mapping of settings: run `outpost login` again");
  }
  CliConfig config;
  for (const auto& [key, value] : doc->items()) {
    std::string* field = key == "base_url"  ? &config.base_url
                         : key == "ca_file" ? &config.ca_file
                         : key == "user_id" ? &config.user_id
                         : key == "pat"     ? &config.pat
                                            : nullptr;
    if (field == nullptr) {
      return invalid_argument(path + ": unknown key " + key + " (" +
                              unknown_key_hint(key, {"base_url", "ca_file", "user_id", "pat"}) +
                              ")");
    }
    if (!value.is_string() && !value.is_null()) {
      return invalid_argument(path + ": " + key + " must be a string (run `outpost login` again)");
    }
    if (value.is_string()) *field = value.get<std::string>();
  }
  if (config.base_url.empty()) {
    return invalid_argument(path + " has no base_url: run `outpost login` again");
  }
  return config;
}

Status save_cli_config(const CliConfig& config) {
  const std::string dir = config_dir();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return unavailable("cannot create " + dir + ": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  YAML::Emitter out;
  out << YAML::Comment("written by `outpost login`; holds a secret, keep it 0600");
  out << YAML::BeginMap;
  out << YAML::Key << "base_url" << YAML::Value << config.base_url;
  out << YAML::Key << "ca_file" << YAML::Value << config.ca_file;
  out << YAML::Key << "user_id" << YAML::Value << config.user_id;
  out << YAML::Key << "pat" << YAML::Value << config.pat;
  out << YAML::EndMap;
  const std::string text = std::string(out.c_str()) + "\n";
  const std::string path = config_path();
  const std::string temp = path + ".tmp";
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return unavailable("cannot write " + temp + ": " + std::strerror(errno));
  fchmod(fd, 0600);
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  if (!written || std::rename(temp.c_str(), path.c_str()) != 0) {
    return unavailable("cannot write " + path + ": " + std::strerror(errno));
  }
  return {};
}

Result<std::string> read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return invalid_argument("cannot read the token file " + path);
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) return invalid_argument("the token file " + path + " is empty");
  return token;
}

}  // namespace outpost::cli
