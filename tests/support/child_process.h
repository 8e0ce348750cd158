// A real child process for end-to-end tests: spawned with its arguments and extra environment,
// its output captured to a log file, stopped (SIGTERM, then SIGKILL) on destruction.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace outpost::testing {

class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, std::vector<std::string> environment,
               std::string log_file);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int signal);
  // The exit status (or 128 + signal) if the process ended within `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL after `grace`; returns the exit status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  std::string log() const;
  const std::string& log_file() const { return log_file_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_file_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// This process's environment with `extra` (NAME=VALUE) after it.
std::vector<std::string> with_environment(std::vector<std::string> extra);

// Runs a command to completion (killed after `timeout`), capturing stdout and stderr.
CommandResult run_command(const std::vector<std::string>& argv,
                          const std::vector<std::string>& environment = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(120));

// Reads a whole file ("" when missing).
std::string read_file(const std::string& path);

// PIDs of the children of `parent` whose command line contains `needle`.
std::vector<pid_t> child_pids(pid_t parent, const std::string& needle);
// PIDs of live processes (not zombies) whose command line contains `needle`, whoever their
// parent is (a process left behind is re-parented).
std::vector<pid_t> processes_mentioning(const std::string& needle);

// A TCP socket of /proc/PID/net/tcp{,6}: every socket of the process's network namespace,
// told from others by its inode (what /proc/PID/fd/N links to is "socket:[INODE]").
struct TcpSocket {
  std::string inode;
  std::string local;   // "127.0.0.1:8443" (IPv6 addresses stay in the kernel's hex)
  std::string remote;  // "0.0.0.0:0" for a listener
  std::string state;   // "LISTEN", "ESTABLISHED", "CLOSE_WAIT", ...
};
std::vector<TcpSocket> tcp_sockets(pid_t pid);

// Whether process `pid` holds a listening TCP socket (IPv4 or IPv6), from /proc.
bool has_listening_tcp_socket(pid_t pid);

}  // namespace outpost::testing
