#include "tests/support/child_process.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/spawn.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace outpost::testing {

std::vector<std::string> with_environment(std::vector<std::string> extra) {
  std::vector<std::string> out = current_environment();
  out.insert(out.end(), std::make_move_iterator(extra.begin()),
             std::make_move_iterator(extra.end()));
  return out;
}

ChildProcess::ChildProcess(std::vector<std::string> argv, std::vector<std::string> environment,
                           std::string log_file)
    : log_file_(std::move(log_file)) {
  // The product's spawn: nothing else of the test's reaches the child (a process that held the
  // fault relay's or another process's sockets would keep a "cut" connection open, and its
  // descriptor count would include ours).
  SpawnOptions options;
  options.argv = std::move(argv);
  options.environment = with_environment(std::move(environment));
  options.out.file = log_file_;
  options.err_to_out = true;
  auto pid = spawn_process(options);
  if (!pid.ok()) throw std::runtime_error(pid.error().message());
  pid_ = pid.value();
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !status_) stop(std::chrono::seconds(10));
}

bool ChildProcess::running() {
  if (status_) return false;
  return !wait(std::chrono::milliseconds(0)).has_value();
}

void ChildProcess::signal(int signal) {
  if (!status_) ::kill(pid_, signal);
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return status_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int ChildProcess::stop(std::chrono::milliseconds grace) {
  if (status_) return *status_;
  ::kill(pid_, SIGTERM);
  if (auto status = wait(grace)) return *status;
  ::kill(pid_, SIGKILL);
  return wait(std::chrono::seconds(10)).value_or(-1);
}

std::string ChildProcess::log() const { return read_file(log_file_); }

CommandResult run_command(const std::vector<std::string>& argv,
                          const std::vector<std::string>& environment,
                          std::chrono::milliseconds timeout) {
  char out_path[] = "/tmp/outpost-cmd-out-XXXXXX";
  char err_path[] = "/tmp/outpost-cmd-err-XXXXXX";
  const int out_fd = ::mkstemp(out_path);
  const int err_fd = ::mkstemp(err_path);
  SpawnOptions options;
  options.argv = argv;
  options.environment = with_environment(environment);
  options.out.fd = out_fd;
  options.err.fd = err_fd;
  const auto spawned = spawn_process(options);
  const pid_t pid = spawned.ok() ? spawned.value() : -1;
  CommandResult result;
  ::close(out_fd);
  ::close(err_fd);
  if (spawned.ok()) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() >= deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  result.out = read_file(out_path);
  result.err = read_file(err_path) + (spawned.ok() ? "" : spawned.error().message());
  ::unlink(out_path);
  ::unlink(err_path);
  return result;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

namespace {

struct ProcessEntry {
  pid_t pid = 0;
  pid_t ppid = 0;
};

// Live processes (not zombies) whose command line contains `needle`, from /proc.
std::vector<ProcessEntry> live_processes(const std::string& needle) {
  std::vector<ProcessEntry> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = read_file(entry.path().string() + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (state == "Z") continue;
    std::string cmdline = read_file(entry.path().string() + "/cmdline");
    for (char& c : cmdline) c = c == '\0' ? ' ' : c;
    if (cmdline.find(needle) != std::string::npos) out.push_back({std::stoi(name), ppid});
  }
  return out;
}

}  // namespace

std::vector<pid_t> child_pids(pid_t parent, const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& process : live_processes(needle)) {
    if (process.ppid == parent) out.push_back(process.pid);
  }
  return out;
}

std::vector<pid_t> processes_mentioning(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& process : live_processes(needle)) out.push_back(process.pid);
  return out;
}

namespace {

// "127.0.0.1:8443" from the kernel's "0100007F:20FB" (IPv4; an IPv6 address stays as it is).
std::string tcp_address(const std::string& hex) {
  const auto colon = hex.find(':');
  if (colon != 8) return hex;
  const auto ip = static_cast<uint32_t>(std::stoul(hex.substr(0, 8), nullptr, 16));
  const auto port = static_cast<unsigned>(std::stoul(hex.substr(colon + 1), nullptr, 16));
  return std::to_string(ip & 0xff) + "." + std::to_string((ip >> 8) & 0xff) + "." +
         std::to_string((ip >> 16) & 0xff) + "." + std::to_string(ip >> 24) + ":" +
         std::to_string(port);
}

}  // namespace

std::vector<TcpSocket> tcp_sockets(pid_t pid) {
  // The kernel's TCP states (include/net/tcp_states.h), by number.
  static constexpr const char* kStates[] = {"?",          "ESTABLISHED", "SYN_SENT",  "SYN_RECV",
                                            "FIN_WAIT1",  "FIN_WAIT2",   "TIME_WAIT", "CLOSE",
                                            "CLOSE_WAIT", "LAST_ACK",    "LISTEN",    "CLOSING"};
  std::vector<TcpSocket> out;
  for (const char* table : {"/net/tcp", "/net/tcp6"}) {
    std::istringstream lines(read_file("/proc/" + std::to_string(pid) + table));
    std::string line;
    std::getline(lines, line);  // header
    while (std::getline(lines, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode;
      if (inode.empty()) continue;
      const auto code = static_cast<size_t>(std::stoul(state, nullptr, 16));
      out.push_back({inode, tcp_address(local), tcp_address(remote),
                     code < std::size(kStates) ? kStates[code] : state});
    }
  }
  return out;
}

bool has_listening_tcp_socket(pid_t pid) {
  // The inodes of the process's sockets...
  std::set<std::string> inodes;
  std::error_code ec;
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& entry : std::filesystem::directory_iterator(fd_dir, ec)) {
    const auto target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  // ...against the listening TCP sockets of the process's network namespace.
  for (const TcpSocket& socket : tcp_sockets(pid)) {
    if (socket.state == "LISTEN" && inodes.count(socket.inode) != 0) return true;
  }
  return false;
}

}  // namespace outpost::testing
