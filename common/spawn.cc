#include "common/spawn.h"

#include <cstring>

#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>

extern char** environ;

namespace outpost {

namespace {

// Puts `stream` at `target` in the child.
void place(posix_spawn_file_actions_t& actions, const SpawnOptions::Stream& stream, int target,
           int file_flags) {
  if (stream.fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, stream.fd, target);
  } else if (!stream.file.empty()) {
    posix_spawn_file_actions_addopen(&actions, target, stream.file.c_str(), file_flags, 0600);
  } else {
    posix_spawn_file_actions_addopen(&actions, target, "/dev/null",
                                     target == STDIN_FILENO ? O_RDONLY : O_WRONLY, 0);
  }
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& item : strings) out.push_back(item.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

Result<pid_t> spawn_process(const SpawnOptions& options) {
  if (options.argv.empty()) return invalid_argument("spawn_process needs argv[0]");
  std::vector<std::string> args = options.argv;
  std::vector<std::string> environment = options.environment;
  auto argv = pointers(args);
  auto envp = pointers(environment);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const int append = O_WRONLY | O_CREAT | O_APPEND;
  place(actions, options.in, STDIN_FILENO, O_RDONLY);
  place(actions, options.out, STDOUT_FILENO, append);
  if (options.err_to_out) {
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  } else {
    place(actions, options.err, STDERR_FILENO, append);
  }
  // Nothing else of ours: every descriptor above stderr is closed in the child.
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
  pid_t pid = -1;
  const int rc =
      posix_spawn(&pid, args.front().c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return unavailable("cannot start " + args.front() + ": " + std::strerror(rc));
  return pid;
}

std::vector<std::string> current_environment() {
  std::vector<std::string> out;
  for (char** entry = environ; *entry != nullptr; ++entry) out.emplace_back(*entry);
  return out;
}

}  // namespace outpost
