#include "controlplane/resources/model_inspector.h"

#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

#include "common/json_reader.h"
#include "common/spawn.h"
#include "controlplane/resources/document.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace outpost::control {

using nlohmann::json;

namespace {

constexpr size_t kMaxStdout = 4 * 1024 * 1024;
constexpr size_t kMaxStderr = 64 * 1024;

std::string last_lines(const std::string& text) {
  std::string trimmed = text;
  while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == ' ')) trimmed.pop_back();
  if (trimmed.size() > 2000) trimmed = "..." + trimmed.substr(trimmed.size() - 2000);
  return trimmed;
}

}  // namespace

Result<InspectResult> parse_inspect_output(std::string_view text) {
  auto parsed = parse_json(text);
  if (!parsed.ok()) {
    return internal_error("outpost-worker inspect printed something that is not JSON: " +
                          parsed.error().message());
  }
  const auto bad = [](const Error& error) {
    return internal_error("outpost-worker inspect printed an unexpected document: " +
                          error.message());
  };
  auto reader = ObjectReader::create(parsed.value(), "inspect");
  if (!reader.ok()) return bad(reader.error());
  InspectResult out;
  auto model_id = reader->required_string("model_id");
  if (!model_id.ok()) return bad(model_id.error());
  out.model_id = model_id.value();
  auto file = reader->optional_string("file");
  if (!file.ok()) return bad(file.error());
  out.file = file.value().value_or("model.pt");
  auto sha = reader->optional_string("file_sha256");
  if (!sha.ok()) return bad(sha.error());
  out.file_sha256 = sha.value().value_or("");
  auto size = reader->optional_int("file_size", 0, INT64_MAX);
  if (!size.ok()) return bad(size.error());
  out.file_size = static_cast<uint64_t>(size.value().value_or(0));
  const json* config = reader->get("config");
  out.config = config != nullptr ? *config : json::object();
  const json* methods = reader->get("methods");
  if (methods == nullptr || !methods->is_array() || methods->empty()) {
    return invalid_argument(
        "the model exports no methods: a package needs at least one method "
        "(unary, generate or stream)");
  }
  std::set<std::string> names;
  for (size_t i = 0; i < methods->size(); ++i) {
    auto method = ObjectReader::create((*methods)[i], "methods[" + std::to_string(i) + "]");
    if (!method.ok()) return bad(method.error());
    auto name = method->required_string("name");
    if (!name.ok()) return bad(name.error());
    auto kind = method->required_string("kind");
    if (!kind.ok()) return bad(kind.error());
    if (kind.value() != "unary" && kind.value() != "generate" && kind.value() != "stream") {
      return bad(invalid_argument(method->path_of("kind") + ": '" + kind.value() +
                                  "' is not unary, generate or stream"));
    }
    if (!names.insert(name.value()).second) {
      return bad(invalid_argument("method '" + name.value() + "' is listed twice"));
    }
    const json* inputs = method->get("inputs");
    if (inputs != nullptr) {
      if (!inputs->is_array())
        return bad(invalid_argument(method->path_of("inputs") + ": not a list"));
      for (const auto& input : *inputs) {
        if (!input.is_object() || !input.contains("name") || !input["name"].is_string()) {
          return bad(invalid_argument(method->path_of("inputs") + ": each input needs a name"));
        }
      }
    }
  }
  out.methods = *methods;
  if (const json* warnings = reader->get("warnings"); warnings != nullptr) {
    if (!warnings->is_array()) return bad(invalid_argument("warnings: not a list"));
    for (const auto& warning : *warnings) {
      if (warning.is_string()) out.warnings.push_back(warning.get<std::string>());
    }
  }
  return out;
}

Result<InspectResult> ModelInspector::inspect(const std::string& package_dir) const {
  if (access(worker_path_.c_str(), X_OK) != 0) {
    return unavailable("cannot run " + worker_path_ +
                       " to read the model (set worker_path in the control plane's config): " +
                       std::strerror(errno));
  }
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return internal_error("pipe failed");
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return internal_error("pipe failed");
  }
  SpawnOptions spawn;
  spawn.argv = {worker_path_, "inspect", package_dir};
  spawn.environment = current_environment();
  spawn.out.fd = out_pipe[1];
  spawn.err.fd = err_pipe[1];
  const auto spawned = spawn_process(spawn);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (!spawned.ok()) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return spawned.error();
  }
  const pid_t pid = *spawned;

  std::string out;
  std::string err;
  bool timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buffer[65536];
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    const int ready = poll(fds, 2, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      std::string& sink = i == 0 ? out : err;
      const size_t limit = i == 0 ? kMaxStdout : kMaxStderr;
      if (sink.size() < limit) sink.append(buffer, std::min<size_t>(n, limit - sink.size()));
    }
  }
  for (auto& fd : fds) {
    if (fd.fd >= 0) close(fd.fd);
  }
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return Error(ErrorCode::kDeadlineExceeded, "reading the model took longer than " +
                                                   std::to_string(timeout_.count() / 1000) +
                                                   " s; the package was refused");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string why = last_lines(err);
    if (why.empty()) {
      why = WIFSIGNALED(status) ? "it was killed by signal " + std::to_string(WTERMSIG(status))
                                : "it exited with status " + std::to_string(WEXITSTATUS(status));
    }
    return invalid_argument("the model package was refused: " + why);
  }
  return parse_inspect_output(out);
}

}  // namespace outpost::control
