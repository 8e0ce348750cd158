#include "cli/local_worker.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "common/worker_binary.h"
#include <unistd.h>

namespace outpost::cli {

namespace {

std::atomic<bool> interrupt_received{false};

void on_interrupt(int /*signal*/) { interrupt_received = true; }

// A fresh 0700 directory for the socket and the log, short enough for a Unix socket path.
Result<std::string> make_private_dir() {
  std::string base;
  std::error_code ignored;
  const auto temp = std::filesystem::temp_directory_path(ignored);
  if (!ignored) base = temp.string();
  // The socket's path (dir + "/worker.sock") must fit in sun_path (108 bytes).
  if (base.empty() || base.size() > 60) base = "/tmp";
  std::string pattern = base + "/outpost-model-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    return unavailable("cannot create a private directory under " + base + ": " +
                       std::strerror(errno));
  }
  return pattern;  // mkdtemp makes it 0700
}

}  // namespace

Result<std::string> find_worker_binary(const std::string& requested) {
  constexpr const char* kHint = "give --worker PATH or set $OUTPOST_WORKER";
  if (!requested.empty()) {
    if (!is_executable_file(requested)) {
      return Error(ErrorCode::kNotFound, "--worker " + requested + " is not an executable file");
    }
    return requested;
  }
  if (const char* from_env = std::getenv("OUTPOST_WORKER");
      from_env != nullptr && from_env[0] != '\0') {
    if (!is_executable_file(from_env)) {
      return Error(ErrorCode::kNotFound,
                   std::string("$OUTPOST_WORKER ") + from_env + " is not an executable file");
    }
    return std::string(from_env);
  }
  if (auto located = locate_worker_binary()) return *located;
  return Error(ErrorCode::kNotFound, "no outpost-worker at " + worker_binary_beside_self() +
                                         " nor at " + kInstalledWorkerBinary + "; " + kHint);
}

bool LocalWorker::interrupted() { return interrupt_received.load(); }

Result<std::unique_ptr<LocalWorker>> LocalWorker::start(const std::string& binary,
                                                        std::chrono::milliseconds timeout) {
  std::unique_ptr<LocalWorker> worker(new LocalWorker());
  // Ctrl-C ends the command through the same clean-up as an error does.
  interrupt_received = false;
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  for (const auto& [signal, previous] :
       {std::pair{SIGINT, &worker->previous_int_}, std::pair{SIGTERM, &worker->previous_term_}}) {
    sigaction(signal, nullptr, previous);
    // A signal ignored by whoever started us (nohup, a background job) stays ignored.
    if (previous->sa_handler != SIG_IGN) sigaction(signal, &action, nullptr);
  }

  OUTPOST_ASSIGN_OR_RETURN(worker->dir_, make_private_dir());
  worker->log_file_ = worker->dir_ + "/worker.log";
  protocol::WorkerProcess::Options options;
  options.binary = binary;
  options.spec.worker_id = "outpost-model-test";
  options.spec.endpoint = "ipc://" + worker->dir_ + "/worker.sock";
  options.log_file = worker->log_file_;
  OUTPOST_ASSIGN_OR_RETURN(worker->process_, protocol::WorkerProcess::spawn(options));
  protocol::WorkerClient::Options client_options;
  client_options.endpoint = options.spec.endpoint;
  OUTPOST_ASSIGN_OR_RETURN(worker->client_, protocol::WorkerClient::connect(client_options));
  auto hello = worker->client_->hello();
  OUTPOST_RETURN_IF_ERROR(worker->await(hello, "starting outpost-worker", timeout).status());
  return worker;
}

LocalWorker::~LocalWorker() {
  if (client_ && process_ && process_->running()) {
    // The worker cancels what is still open, answers, and exits with status 0.
    auto drained = client_->drain(std::chrono::seconds(5), /*exit=*/true);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (drained.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < deadline && process_->running()) {
    }
  }
  client_.reset();
  if (process_) {
    process_->wait(std::chrono::seconds(10));
    process_.reset();  // SIGTERM, then SIGKILL, if it is still there
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  sigaction(SIGINT, &previous_int_, nullptr);
  sigaction(SIGTERM, &previous_term_, nullptr);
}

Status LocalWorker::check(const std::string& what) {
  if (interrupted()) return Error(ErrorCode::kCancelled, "interrupted while " + what);
  if (process_ && !process_->running()) {
    const int status = process_->wait(std::chrono::milliseconds(0)).value_or(-1);
    std::string message =
        "outpost-worker exited with status " + std::to_string(status) + " while " + what;
    const std::string tail = log_tail();
    if (!tail.empty()) message += "; its log ends with:\n" + tail;
    return unavailable(message);
  }
  return {};
}

std::vector<std::string> LocalWorker::log_events(const std::string& event) const {
  std::vector<std::string> out;
  std::ifstream in(log_file_);
  const std::string marker = event + ": ";
  for (std::string line; std::getline(in, line);) {
    const auto at = line.find(marker);
    if (at != std::string::npos) out.push_back(line.substr(at + marker.size()));
  }
  return out;
}

std::string LocalWorker::log_tail() const {
  std::ifstream in(log_file_);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  std::string out;
  const size_t first = lines.size() > 5 ? lines.size() - 5 : 0;
  for (size_t i = first; i < lines.size(); ++i) out += (out.empty() ? "" : "\n") + lines[i];
  return out;
}

}  // namespace outpost::cli
