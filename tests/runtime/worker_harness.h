// A real outpost-worker process for tests: spawned from the build tree with a spec whose
// endpoint lies in a fresh temporary directory, reached through the real WorkerClient over
// ipc://, with the example models that scripts/make-example-models built (docs/models.md).
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "protocol/worker_client.h"
#include "protocol/worker_protocol.h"
#include "protocol/worker_spec.h"
#include "tests/support/test_pki.h"
#include <sys/wait.h>

namespace outpost::testing {

using nlohmann::json;
using protocol::CallHandlers;
using protocol::WireValue;
using protocol::WorkerCall;
using protocol::WorkerClient;
using protocol::WorkerProcess;
using protocol::WorkerSpec;

inline std::string model_package(const std::string& name) {
  return std::string(OUTPOST_MODELS_DIR) + "/" + name;
}

// A copy of an example package whose config.yaml is edited by `edit` (text in, text out).
inline std::string copy_package(const TempDir& dir, const std::string& name,
                                const std::string& new_name,
                                const std::function<std::string(std::string)>& edit) {
  namespace fs = std::filesystem;
  const fs::path target = fs::path(dir.path()) / new_name;
  fs::create_directories(target);
  for (const auto& entry : fs::directory_iterator(model_package(name))) {
    if (entry.path().filename() == "config.yaml") continue;
    fs::copy_file(entry.path(), target / entry.path().filename(),
                  fs::copy_options::overwrite_existing);
  }
  std::ifstream in(fs::path(model_package(name)) / "config.yaml");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(target / "config.yaml") << edit(text);
  return target.string();
}

// Replaces the first occurrence of `from` in `text`.
inline std::string replace(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "no \"" << from << "\" in the config";
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// A float32 tensor as a worker-protocol Value, its bytes in a new part of `value`.
inline json add_tensor(WireValue& value, const std::vector<int64_t>& shape,
                       const std::vector<float>& data) {
  std::string bytes(data.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), data.data(), bytes.size());
  value.parts.push_back(std::move(bytes));
  return json{{"dtype", "float32"}, {"shape", shape}, {"part", value.parts.size() - 1}};
}

// The floats of a float32 tensor Value in `value`.
inline std::vector<float> floats(const WireValue& value, const json& tensor) {
  EXPECT_EQ(tensor.at("dtype"), "float32");
  const std::string& bytes = value.parts.at(tensor.at("part").get<size_t>());
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

inline std::vector<int64_t> int64s(const WireValue& value, const json& tensor) {
  EXPECT_EQ(tensor.at("dtype"), "int64");
  const std::string& bytes = value.parts.at(tensor.at("part").get<size_t>());
  std::vector<int64_t> out(bytes.size() / sizeof(int64_t));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(int64_t));
  return out;
}

// Collects one call's values and its end.
class Recorder {
 public:
  CallHandlers handlers() {
    return CallHandlers{[this](int64_t seq, WireValue value) {
                          std::lock_guard lock(mutex_);
                          seqs_.push_back(seq);
                          values_.push_back(std::move(value));
                          changed_.notify_all();
                        },
                        [this](const Status& status, std::string_view reason) {
                          std::lock_guard lock(mutex_);
                          status_ = status;
                          reason_ = std::string(reason);
                          ++done_count_;
                          changed_.notify_all();
                        }};
  }
  // Waits for on_done (test timeouts, not assertions on speed).
  bool wait_done(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [this] { return done_count_ > 0; });
  }
  bool wait_values(size_t count, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] {
      return values_.size() >= count || done_count_ > 0;
    }) && values_.size() >= count;
  }
  std::vector<WireValue> values() const {
    std::lock_guard lock(mutex_);
    return values_;
  }
  std::vector<int64_t> seqs() const {
    std::lock_guard lock(mutex_);
    return seqs_;
  }
  size_t value_count() const {
    std::lock_guard lock(mutex_);
    return values_.size();
  }
  Status status() const {
    std::lock_guard lock(mutex_);
    return status_;
  }
  std::string reason() const {
    std::lock_guard lock(mutex_);
    return reason_;
  }
  int done_count() const {
    std::lock_guard lock(mutex_);
    return done_count_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<WireValue> values_;
  std::vector<int64_t> seqs_;
  Status status_;
  std::string reason_;
  int done_count_ = 0;
};

// One worker process and a client connected to it.
class WorkerHarness {
 public:
  struct Model {
    explicit Model(std::string package_dir, std::string model_name = {})
        : package(std::move(package_dir)), name(std::move(model_name)) {}
    std::string package;
    std::string name;  // empty: the package's model id
  };

  explicit WorkerHarness(const std::vector<Model>& models,
                         const std::function<void(WorkerSpec&)>& adjust = {}) {
    spec_.worker_id = "test-worker";
    spec_.endpoint = "ipc://" + dir_.file("worker.sock");
    spec_.intra_op_threads = 1;
    for (const auto& model : models) {
      // In place: a copied ModelSpec trips GCC 12's false -Wmaybe-uninitialized on its optional.
      protocol::ModelSpec& item = spec_.models.emplace_back();
      item.package = model.package;
      item.name = model.name;
    }
    if (adjust) adjust(spec_);
    WorkerProcess::Options options;
    options.binary = OUTPOST_WORKER_BINARY;
    options.spec = spec_;
    options.log_file = dir_.file("worker.log");
    auto process = WorkerProcess::spawn(options);
    EXPECT_TRUE(process.ok()) << process.error().to_string();
    if (process.ok()) process_ = std::move(process).value();
    client_ = connect();
  }

  ~WorkerHarness() {
    client_.reset();
    process_.reset();
    if (::testing::Test::HasFailure()) {
      std::ifstream log(dir_.file("worker.log"));
      std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      std::cerr << "---- worker log ----\n" << text << "--------------------\n";
    }
  }

  std::unique_ptr<WorkerClient> connect() {
    WorkerClient::Options options;
    options.endpoint = spec_.endpoint;
    options.limits = spec_.limits;
    auto client = WorkerClient::connect(options);
    EXPECT_TRUE(client.ok()) << client.error().to_string();
    return client.ok() ? std::move(client).value() : nullptr;
  }

  // Waits until the worker has loaded its models; returns the health reply.
  json ready() {
    auto health = client_->wait_ready(std::chrono::seconds(120));
    EXPECT_TRUE(health.ok()) << health.error().to_string();
    if (!health.ok()) return json::object();
    for (const auto& model : health->at("models")) {
      EXPECT_EQ(model.at("state"), "ready") << model.dump();
    }
    return *health;
  }

  json health() {
    auto reply = client_->health().get();
    EXPECT_TRUE(reply.ok()) << reply.error().to_string();
    return reply.ok() ? *reply : json::object();
  }

  // The health "stats" of one model.
  json stats(const std::string& model) {
    const json reply = health();
    for (const auto& item : reply.value("models", json::array())) {
      if (item.at("name") == model) return item.at("stats");
    }
    ADD_FAILURE() << "no model " << model << " in health: " << reply.dump();
    return json::object();
  }

  WorkerClient& client() { return *client_; }
  WorkerProcess& process() { return *process_; }
  const TempDir& dir() const { return dir_; }
  const WorkerSpec& spec() const { return spec_; }

 private:
  TempDir dir_;
  WorkerSpec spec_;
  std::unique_ptr<WorkerProcess> process_;
  std::unique_ptr<WorkerClient> client_;
};

// The example classifier's input: `rows` rows of 256 normal random floats from `seed`.
inline WireValue classifier_input(int rows, uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal;
  std::vector<float> data(static_cast<size_t>(rows) * 256);
  for (float& x : data) x = normal(generator);
  WireValue value;
  value.value = json::object();
  value.value["x"] = add_tensor(value, {rows, 256}, data);
  return value;
}

// Two classifier results of the same `rows` inputs: the same labels, and probabilities equal up
// to float rounding (a batch sums in another order than one row).
inline void expect_same_classification(const Result<WireValue>& a, const Result<WireValue>& b,
                                       int rows, int request) {
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  EXPECT_EQ(a->value.at("probs").at("shape"), json({rows, 10}));
  EXPECT_EQ(int64s(*a, a->value.at("label")), int64s(*b, b->value.at("label"))) << request;
  const auto pa = floats(*a, a->value.at("probs"));
  const auto pb = floats(*b, b->value.at("probs"));
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t k = 0; k < pa.size(); ++k) EXPECT_NEAR(pa[k], pb[k], 1e-5) << request << " " << k;
}

struct CommandResult {
  int status = -1;
  std::string out;
};

// Runs a shell command and collects its stdout (`2>&1` in `command` adds stderr).
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  size_t got = 0;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.out.append(buffer.data(), got);
  }
  const int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// VmRSS of a process, from /proc/PID/status (the test reads it itself).
inline uint64_t rss_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

}  // namespace outpost::testing
