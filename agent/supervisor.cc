#include "agent/supervisor.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <utility>

#include "common/log.h"
#include "common/worker_binary.h"
#include <signal.h>
#include <unistd.h>

namespace outpost::agent {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

constexpr auto kWorkerReadyTimeout = seconds(60);
constexpr auto kStableWorker = seconds(60);

std::string describe_exit(int status) {
  if (status > 128) return "killed by signal " + std::to_string(status - 128);
  return "exit status " + std::to_string(status);
}

}  // namespace

std::string file_tag(const std::string& id) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a
  for (const unsigned char c : id) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(hash));
  return out;
}

std::string safe_name(const std::string& id) {
  std::string out;
  for (const char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    out += ok ? c : '_';
  }
  if (out.empty() || out[0] == '.') out = "_" + out;
  return out.substr(0, 100);
}

SteadyClock::duration restart_delay(int failures, int cap_seconds) {
  const int exponent = std::clamp(failures, 0, 16);
  return seconds(std::min<int64_t>(int64_t{1} << exponent, cap_seconds));
}

Supervisor::Supervisor(const AgentConfig& config, Inventory inventory, std::vector<Device> devices)
    : config_(config), inventory_(std::move(inventory)), devices_(std::move(devices)) {}

std::string Supervisor::binary() const {
  if (!config_.worker_binary.empty()) return config_.worker_binary;
  return locate_worker_binary().value_or(kInstalledWorkerBinary);
}

protocol::WorkerSpec Supervisor::spec_for(const WorkerPlan& plan,
                                          std::vector<std::string>& environment) const {
  protocol::WorkerSpec spec;
  spec.worker_id = safe_name(plan.worker_id);
  spec.endpoint = "ipc://" + config_.worker_file(file_tag(plan.worker_id), ".sock");
  spec.intra_op_threads = config_.worker_threads;
  spec.device = "cpu";
  const auto device = std::find_if(devices_.begin(), devices_.end(),
                                   [&](const Device& d) { return d.id == plan.device_id; });
  if (device == devices_.end() || device->gpu_index < 0) return spec;
  if (plan.slicing == SlicingMode::kMig) {
    // A MIG instance is the only device this worker sees.
    environment.push_back("CUDA_VISIBLE_DEVICES=" + device->id.substr(4));
    spec.device = "cuda:0";
    spec.slice.mode = "mig";
    return spec;
  }
  spec.device = "cuda:" + std::to_string(device->gpu_index);
  spec.slice.mode = std::string(slicing_mode_name(plan.slicing));
  uint64_t total = 0;
  for (const auto& gpu : inventory_.gpus) {
    if (gpu.index == device->gpu_index) total = gpu.memory_bytes;
  }
  if (total > 0) {
    spec.slice.fraction = std::clamp(
        static_cast<double>(plan.memory_limit_bytes) / static_cast<double>(total), 0.01, 1.0);
  }
  if (plan.slicing == SlicingMode::kMps) {
    spec.slice.mps_memory_limit = std::to_string(plan.memory_limit_bytes >> 20) + "M";
  }
  return spec;
}

Status Supervisor::start(WorkerRun& run, const WorkerPlan& plan) {
  std::vector<std::string> environment;
  const protocol::WorkerSpec spec = spec_for(plan, environment);
  std::error_code ec;
  fs::create_directories(config_.worker_dir(), ec);
  const std::string tag = file_tag(plan.worker_id);
  ::unlink(config_.worker_file(tag, ".sock").c_str());
  protocol::WorkerProcess::Options options;
  options.binary = binary();
  options.spec = spec;
  options.log_file = config_.worker_file(tag, ".log");
  options.environment = environment;
  OUTPOST_ASSIGN_OR_RETURN(run.process_, protocol::WorkerProcess::spawn(options));
  run.pid_ = run.process_->pid();
  {
    std::ofstream pid(config_.worker_file(tag, ".pid"));
    pid << run.process_->pid() << "\n";
  }
  protocol::WorkerClient::Options client_options;
  client_options.endpoint = spec.endpoint;
  OUTPOST_ASSIGN_OR_RETURN(auto client, protocol::WorkerClient::connect(client_options));
  std::shared_ptr<protocol::WorkerClient> shared(std::move(client));
  auto ready = shared->wait_ready(kWorkerReadyTimeout);
  if (!ready.ok()) {
    return Error(ready.error().code(), "worker did not become ready: " + ready.error().message() +
                                           " (see " + options.log_file + ")");
  }
  std::lock_guard<std::mutex> lock(run.mutex_);
  run.client_ = std::move(shared);
  run.started_at_ = SteadyClock::now();
  return {};
}

Supervisor::Check Supervisor::check(WorkerRun& run, const WorkerPlan& plan, bool wanted,
                                    int backoff_max_seconds) {
  Check seen;
  if (run.process_ && !run.process_->running()) {
    const auto status = run.process_->wait(milliseconds(0));
    const std::string exit = status ? describe_exit(*status) : "ended";
    const bool stable = SteadyClock::now() - run.started_at_ >= kStableWorker;
    run.failures_in_a_row_ = stable ? 1 : run.failures_in_a_row_ + 1;
    const auto delay = restart_delay(run.failures_in_a_row_ - 1, backoff_max_seconds);
    LOG_ERROR("agent.worker_crashed",
              "worker " << plan.worker_id << " (pid " << run.process_->pid() << ") " << exit
                        << "; restarting in " << std::chrono::duration_cast<seconds>(delay).count()
                        << " s");
    std::shared_ptr<protocol::WorkerClient> dead;
    {
      std::lock_guard<std::mutex> lock(run.mutex_);
      dead = std::move(run.client_);
      run.client_.reset();
      run.last_exit_ = exit;
    }
    dead.reset();  // ends its open calls (unavailable) outside the lock
    run.pid_ = 0;
    run.process_.reset();
    run.next_start_ = SteadyClock::now() + delay;
    seen.ended = true;
    seen.message = exit;
  }
  if (!run.process_ && wanted && SteadyClock::now() >= run.next_start_) {
    ++run.starts_;
    if (Status started = start(run, plan); !started.ok()) {
      run.failures_in_a_row_++;
      run.next_start_ =
          SteadyClock::now() + restart_delay(run.failures_in_a_row_, backoff_max_seconds);
      {
        std::lock_guard<std::mutex> lock(run.mutex_);
        run.client_.reset();
      }
      run.pid_ = 0;
      run.process_.reset();
      LOG_ERROR("agent.worker_start_failed",
                "worker " << plan.worker_id << ": " << started.error().message());
      seen.start_failed = true;
      seen.message = started.error().message();
    } else {
      LOG_INFO("agent.worker_started",
               "worker " << plan.worker_id << " started (pid " << run.process_->pid() << ")");
      seen.started = true;
    }
  }
  return seen;
}

void Supervisor::stop(WorkerRun& run, const std::string& worker_id, seconds drain) {
  if (auto client = run.client()) {
    auto drained = client->drain(drain, true);
    wait_future(drained, drain + seconds(5));
  }
  {
    std::lock_guard<std::mutex> lock(run.mutex_);
    run.client_.reset();
  }
  run.pid_ = 0;
  run.process_.reset();  // SIGTERM, then SIGKILL after 10 s
  ::unlink(config_.worker_file(file_tag(worker_id), ".pid").c_str());
}

void Supervisor::stop_leftovers() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(config_.worker_dir(), ec)) {
    if (entry.path().extension() != ".pid") continue;
    std::ifstream in(entry.path());
    pid_t pid = 0;
    in >> pid;
    std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
    std::string command((std::istreambuf_iterator<char>(cmdline)),
                        std::istreambuf_iterator<char>());
    if (pid > 1 && command.find("outpost-worker") != std::string::npos) {
      LOG_NOTICE("agent.worker_cleanup",
                 "stopping worker pid " << pid << " left by an earlier outpostd");
      ::kill(pid, SIGTERM);
      for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) {
        std::this_thread::sleep_for(milliseconds(50));
      }
      if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
    }
    fs::remove(entry.path(), ec);
  }
}

}  // namespace outpost::agent
