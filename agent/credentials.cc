#include "agent/credentials.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace outpost::agent {
namespace {

std::string trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  size_t start = 0;
  while (start < text.size() && text[start] == ' ') ++start;
  return text.substr(start);
}

std::optional<std::string> read_small_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  return trim(text.str());
}

}  // namespace

Status write_private_file(const std::string& path, const std::string& contents) {
  const std::filesystem::path target(path);
  std::error_code ec;
  std::filesystem::create_directories(target.parent_path(), ec);
  if (ec)
    return internal_error("cannot create " + target.parent_path().string() + ": " + ec.message());
  ::chmod(target.parent_path().c_str(), 0700);
  const std::string temporary = path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return internal_error("cannot write " + temporary + ": " + std::strerror(errno));
  ::fchmod(fd, 0600);  // in case the file existed with a looser mode
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n <= 0) {
      ::close(fd);
      return internal_error("cannot write " + temporary + ": " + std::strerror(errno));
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return internal_error("cannot flush " + temporary + ": " + std::strerror(errno));
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    return internal_error("cannot rename " + temporary + ": " + std::strerror(errno));
  }
  return {};
}

CredentialStore::CredentialStore(std::string state_dir, std::string join_token_file)
    : state_dir_(std::move(state_dir)), join_token_file_(std::move(join_token_file)) {}

std::string CredentialStore::credential_path() const { return state_dir_ + "/node-credential"; }

std::optional<std::string> CredentialStore::load_node_credential() const {
  auto credential = read_small_file(credential_path());
  if (!credential || credential->empty()) return std::nullopt;
  struct stat info {};
  if (::stat(credential_path().c_str(), &info) == 0 && (info.st_mode & 0077) != 0) {
    LOG_WARNING("agent.credential_mode", credential_path()
                                             << " was readable by others; tightening it to 0600");
    ::chmod(credential_path().c_str(), 0600);
  }
  return credential;
}

Status CredentialStore::save_node_credential(const std::string& credential) const {
  return write_private_file(credential_path(), credential + "\n");
}

void CredentialStore::discard_node_credential() const { ::unlink(credential_path().c_str()); }

std::string CredentialStore::join_token_source() const {
  if (!join_token_file_.empty()) return join_token_file_;
  if (const char* dir = std::getenv("CREDENTIALS_DIRECTORY")) {
    return std::string(dir) + "/join-token";
  }
  return "";
}

Result<std::string> CredentialStore::read_join_token() const {
  const std::string source = join_token_source();
  if (source.empty()) {
    return Error(ErrorCode::kFailedPrecondition,
                 "this node is not enrolled and has no join token: set node.join_token_file, or "
                 "pass one with LoadCredential=join-token:PATH (create one with `outpost nodepool "
                 "join-token CC_ID NP_ID`)");
  }
  auto token = read_small_file(source);
  if (!token || token->empty()) {
    return Error(
        ErrorCode::kFailedPrecondition,
        "this node is not enrolled and the join token file " + source + " is missing or empty");
  }
  return *token;
}

void CredentialStore::consume_join_token() const {
  if (join_token_file_.empty()) return;  // a systemd credential: read-only, leaves with the unit
  if (::unlink(join_token_file_.c_str()) == 0) {
    LOG_INFO("agent.join_token_deleted", "deleted the used join token " << join_token_file_);
  }
}

}  // namespace outpost::agent
