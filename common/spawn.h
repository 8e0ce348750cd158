// Starting a program as a child process: the one way every part does it. The child gets its
// three standard streams as the caller says and no other descriptor of the parent's. Asio does
// not mark its sockets close-on-exec, so a child started without this held its parent's
// listening socket and connections: a worker (running a model's code) kept the agent's tunnel
// connections open at the control plane after the agent was gone, and `outpost-worker inspect`,
// which the control plane runs on uploaded files, held the control plane's HTTPS listener.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include <sys/types.h>

namespace outpost {

struct SpawnOptions {
  // argv[0] is the program's path (no PATH search).
  std::vector<std::string> argv;
  // The child's whole environment, NAME=VALUE (current_environment() for the parent's).
  std::vector<std::string> environment;
  // Each standard stream: a descriptor of the parent's (dup'ed into place), else a file opened
  // for appending (created 0600), else /dev/null.
  struct Stream {
    int fd = -1;
    std::string file;
  };
  Stream in;
  Stream out;
  Stream err;
  bool err_to_out = false;  // stderr goes where stdout goes
};

// The child's pid. Fails with unavailable (naming the program and why) when it cannot start.
Result<pid_t> spawn_process(const SpawnOptions& options);

// This process's environment, NAME=VALUE.
std::vector<std::string> current_environment();

}  // namespace outpost
