#include "agent/local_files.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "agent/config.h"
#include "common/url.h"
#include "tunnel/proxy.h"
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

namespace outpost::agent {
namespace fs = std::filesystem;

namespace {

// A credentials file is one short line; anything larger is not one.
constexpr size_t kMaxCredentialsBytes = 4096;

// The host is not in a state outpostd can run in; the message says what to change.
Error failed_precondition(std::string message) {
  return {ErrorCode::kFailedPrecondition, std::move(message)};
}

std::string mode_text(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

// "uid 0 (root)", or "uid 1234" when the user database does not know it.
std::string user_text(uid_t uid) {
  std::string out = "uid " + std::to_string(uid);
  struct passwd entry {};
  struct passwd* found = nullptr;
  char buffer[1024];
  if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) == 0 && found != nullptr) {
    out += std::string(" (") + found->pw_name + ")";
  }
  return out;
}

// The name `chown` takes for `uid`.
std::string chown_name(uid_t uid) {
  struct passwd entry {};
  struct passwd* found = nullptr;
  char buffer[1024];
  if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

std::string without_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// The directories above `path` (absolute), nearest first, "/" last.
std::vector<fs::path> ancestors_of(const fs::path& path) {
  std::vector<fs::path> out;
  for (fs::path at = path.parent_path(); !at.empty(); at = at.parent_path()) {
    out.push_back(at);
    if (at == at.root_path()) break;
  }
  return out;
}

// A directory above `dir` that others can write and that has no sticky bit lets them rename
// `dir` away and put their own in its place: refused. Group-writable ones are accepted (a home
// directory under user-private groups is 0775). Both the path as written and the path it
// resolves to are checked; a symbolic link's own mode means nothing, its directory is checked.
Status check_ancestors(const std::string& key, const fs::path& dir) {
  std::set<fs::path> seen;
  std::vector<fs::path> paths = ancestors_of(dir);
  std::error_code ec;
  const fs::path real = fs::canonical(dir, ec);
  if (!ec) {
    for (auto& path : ancestors_of(real)) paths.push_back(std::move(path));
  }
  for (const auto& path : paths) {
    if (!seen.insert(path).second) continue;
    struct stat info {};
    if (::lstat(path.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) continue;
    if ((info.st_mode & S_IWOTH) != 0 && (info.st_mode & S_ISVTX) == 0) {
      return failed_precondition(
          key + ": " + path.string() + ", a directory above " + dir.string() +
          ", is writable by everyone without the sticky bit (mode " + mode_text(info.st_mode) +
          "): any local user could rename " + dir.string() +
          " and put a directory of their own in its place; `chmod o-w " + path.string() +
          "` (or `chmod +t` it), or set " + key + " to a directory elsewhere");
    }
  }
  return {};
}

// Walks what is below `dir` (its owner and mode already checked), without following links.
Status check_tree(const std::string& key, const std::string& dir) {
  const uid_t self = ::geteuid();
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string path = it->path().string();
    struct stat info {};
    if (::lstat(path.c_str(), &info) != 0) continue;  // gone meanwhile (a worker exited)
    if (info.st_uid != self) {
      // Only someone with write access here could have made it: the directory was open to
      // others once, or root put it there. Whatever it is, the agent will not trust it.
      return failed_precondition(key + ": " + path + " is owned by " + user_text(info.st_uid) +
                                 ", not by the user outpostd runs as (" + user_text(self) +
                                 "): someone else put it there; remove it (`rm -rf " + path +
                                 "`) if you did not, or `chown -R " + chown_name(self) + " " +
                                 path + "`");
    }
    if (S_ISLNK(info.st_mode) || (info.st_mode & 077) == 0) continue;
    // The agent's own, from a run under a looser umask. Only the agent's user can reach it
    // (`dir` is 0700 and its own by now), so clearing the bits is enough.
    if (::chmod(path.c_str(), info.st_mode & 07700) != 0) {
      return failed_precondition(key + ": cannot chmod go-rwx " + path + ": " +
                                 std::strerror(errno));
    }
  }
  if (ec) {
    return failed_precondition(key + ": cannot read what is in " + dir + ": " + ec.message());
  }
  return {};
}

}  // namespace

Status prepare_private_dir(const std::string& key, const std::string& configured) {
  if (configured.empty()) return invalid_argument(key + ": empty; name a directory");
  std::error_code ec;
  const fs::path dir = fs::absolute(without_trailing_slashes(configured), ec);
  if (ec) return invalid_argument(key + ": bad path " + configured + ": " + ec.message());
  const std::string name = dir.string();

  if (::mkdir(name.c_str(), 0700) != 0 && errno == ENOENT) {
    // Missing parents too are created 0700, whatever the umask: nobody else needs them.
    fs::path at = dir.root_path();
    for (const auto& part : dir.relative_path()) {
      at /= part;
      if (::mkdir(at.c_str(), 0700) != 0 && errno != EEXIST) {
        return failed_precondition(key + ": cannot create " + at.string() + ": " +
                                   std::strerror(errno));
      }
    }
  }
  // O_NOFOLLOW: the checks and the chmod below are about this very directory, not about what
  // a link (perhaps someone else's) points to.
  const int fd = ::open(name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    struct stat info {};
    if (::lstat(name.c_str(), &info) == 0 && S_ISLNK(info.st_mode)) {
      const fs::path target = fs::read_symlink(dir, ec);
      return failed_precondition(key + ": " + name + " is a symbolic link (to " + target.string() +
                                 "): whoever can replace the link controls where outpostd writes; "
                                 "set " +
                                 key + " to the directory itself");
    }
    if (error == ENOTDIR) {
      return failed_precondition(key + ": " + name + " exists and is not a directory");
    }
    return failed_precondition(key + ": cannot create or open " + name + ": " +
                               std::strerror(error));
  }
  struct stat info {};
  const int stat_rc = ::fstat(fd, &info);
  const uid_t self = ::geteuid();
  Status status;
  if (stat_rc != 0) {
    status = failed_precondition(key + ": cannot stat " + name + ": " + std::strerror(errno));
  } else if (info.st_uid != self) {
    status = failed_precondition(
        key + ": " + name + " is owned by " + user_text(info.st_uid) +
        ", not by the user outpostd runs as (" + user_text(self) +
        "): its owner could read and replace the agent's files. If it is meant for outpostd, "
        "`chown " +
        chown_name(self) + " " + name + " && chmod 0700 " + name + "`; else set " + key +
        " to a directory of outpostd's own (outpostd creates a missing one 0700), or run outpostd "
        "as its owner");
  } else if ((info.st_mode & 022) != 0) {
    status = failed_precondition(
        key + ": " + name + " is writable by group/other (mode " + mode_text(info.st_mode) +
        "): another user could have put files in it or could swap what outpostd creates there. "
        "`chmod 0700 " +
        name + "` (and remove from it anything you did not put there), or set " + key +
        " to a new directory (outpostd creates it 0700)");
  } else if ((info.st_mode & 077) != 0 && ::fchmod(fd, 0700) != 0) {
    status = failed_precondition(key + ": cannot chmod 0700 " + name + ": " + std::strerror(errno));
  } else if (::access(name.c_str(), W_OK) != 0) {
    status = failed_precondition(key + ": cannot write " + name);
  }
  ::close(fd);
  OUTPOST_RETURN_IF_ERROR(status);
  OUTPOST_RETURN_IF_ERROR(check_ancestors(key, dir));
  return check_tree(key, name);
}

Result<ProxyCredentials> read_proxy_credentials(const std::string& path) {
  const std::string key = "control_plane.proxy_credentials_file";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return failed_precondition(key + ": cannot read " + path + ": " + std::strerror(errno));
  struct stat info {};
  std::string text;
  Status status;
  const uid_t self = ::geteuid();
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    status = failed_precondition(key + ": " + path + " is not a regular file");
  } else if (info.st_uid != self) {
    status = failed_precondition(key + ": " + path + " is owned by " + user_text(info.st_uid) +
                                 ", not by the user outpostd runs as (" + user_text(self) +
                                 "): `chown " + chown_name(self) + " " + path + " && chmod 0600 " +
                                 path + "`");
  } else if ((info.st_mode & 077) != 0) {
    status = failed_precondition(key + ": " + path + " is open to group/other (mode " +
                                 mode_text(info.st_mode) +
                                 "), and it holds a password: `chmod 0600 " + path + "`");
  } else if (info.st_size > static_cast<off_t>(kMaxCredentialsBytes)) {
    status = failed_precondition(key + ": " + path + " is larger than " +
                                 std::to_string(kMaxCredentialsBytes) +
                                 " bytes; it must hold one line, user:password");
  } else {
    char buffer[kMaxCredentialsBytes + 1];
    ssize_t got = 0;
    size_t total = 0;
    while (total < sizeof buffer && (got = ::read(fd, buffer + total, sizeof buffer - total)) > 0) {
      total += static_cast<size_t>(got);
    }
    if (got < 0) {
      status = failed_precondition(key + ": cannot read " + path + ": " + std::strerror(errno));
    }
    text.assign(buffer, total);
    ::explicit_bzero(buffer, sizeof buffer);
  }
  ::close(fd);
  OUTPOST_RETURN_IF_ERROR(status);
  // One line; a final newline (CRLF too) is allowed, a second line is not.
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  const auto colon = text.find(':');
  if (text.find('\n') != std::string::npos || text.find('\r') != std::string::npos ||
      colon == std::string::npos || colon == 0) {
    return invalid_argument(key + ": " + path +
                            " must hold one line, user:password (the user not empty)");
  }
  ProxyCredentials credentials{text.substr(0, colon), text.substr(colon + 1)};
  ::explicit_bzero(text.data(), text.size());
  return credentials;
}

Result<std::string> tunnel_proxy_url(const AgentConfig& config) {
  if (config.proxy_credentials_file.empty()) return config.proxy;
  OUTPOST_ASSIGN_OR_RETURN(const tunnel::ProxyConfig proxy, tunnel::parse_proxy_url(config.proxy));
  OUTPOST_ASSIGN_OR_RETURN(const ProxyCredentials credentials,
                           read_proxy_credentials(config.proxy_credentials_file));
  Url url;
  url.scheme = "http";
  url.host = proxy.host;
  url.port = proxy.port;
  url.user = credentials.username;
  url.password = credentials.password;
  return format_url(url);
}

std::vector<std::string> inline_secret_keys(const AgentConfig& config) {
  std::vector<std::string> keys;
  if (!config.proxy.empty()) {
    auto proxy = tunnel::parse_proxy_url(config.proxy);
    if (proxy.ok() && (!proxy->username.empty() || !proxy->password.empty())) {
      keys.push_back("control_plane.proxy");
    }
  }
  return keys;
}

std::vector<std::string> config_file_warnings(const std::string& path, const AgentConfig& config) {
  std::vector<std::string> warnings;
  const auto secrets = inline_secret_keys(config);
  struct stat info {};
  if (secrets.empty() || ::stat(path.c_str(), &info) != 0 || (info.st_mode & 044) == 0) {
    return warnings;
  }
  std::string keys;
  for (const auto& key : secrets) keys += (keys.empty() ? "" : ", ") + key;
  warnings.push_back(path + " holds a secret (" + keys + " has credentials) and group/other can " +
                     "read it (mode " + mode_text(info.st_mode) + "): `chmod 0600 " + path +
                     "`, or move the credentials to control_plane.proxy_credentials_file (a 0600 "
                     "file) and keep only the proxy's address in the URL");
  return warnings;
}

}  // namespace outpost::agent
