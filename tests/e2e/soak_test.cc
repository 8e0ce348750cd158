// The soak (scripts/soak SECONDS; a short run is part of the test suite): outpost-control, two
// outpostd with their workers, on loopback, under a steady mixed load of unary, generate and
// stream calls while faults are injected on a schedule, in this order:
//
//   control_restart outpost-control stopped and started again on the same port and database
//   agent_restart   kill -9 of node-a's outpostd, then a new one (what systemd does)
//   agent_drain     SIGTERM to node-a's outpostd (it drains), then a new one
//   tunnel_cut      the relay between node-a and the control plane closes every connection
//   silent_drop     the relay stops forwarding on node-a's connections but keeps them open
//   worker_kill     kill -9 of node-b's worker
//
// Every call is counted as succeeded, failed with an error (grouped by message in the report)
// or lost: no answer within the client's deadline. Unary calls are retried as an idempotent
// client would (connection refused or reset, 502/503/504, Retry-After honoured), and the report
// also counts the unary calls whose first try the control plane answered with an error: what a
// caller that never retries would have seen with the platform's own retries alone; generate and
// stream calls only when the control plane never took them (refused connection, 503). The RSS
// of every process is sampled every two seconds; the open descriptors of each role are read
// before the load and after it, with no call in flight. The last line printed is
// one JSON object with the figures; the test fails when a call is lost, when a failure has no
// message, or when the aims (docs/reliability.md) are missed.
//
// OUTPOST_SOAK_SECONDS sets the length (default 90: each fault once).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/http_client.h"
#include "common/base64.h"
#include "tests/e2e/platform.h"
#include "tests/support/sanitizers.h"
#include "tests/support/tcp_relay.h"
#include <signal.h>

namespace outpost::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

// One attempt without an answer for this long is a lost call: the client gives up on it.
constexpr seconds kCallDeadline{30};
// Keepalive of both ends, short so that a silent drop is noticed within seconds.
constexpr int kKeepaliveSeconds = 2;
constexpr int kDeadAfterSeconds = 6;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---- counting ----------------------------------------------------------------------------

enum class Kind { kSucceeded, kFailed, kLost };

struct Outcome {
  Kind kind = Kind::kSucceeded;
  std::string error;  // why it failed or was lost
  int retries = 0;
  // The first try's error when the control plane answered it with one: what a caller that never
  // retries would have seen, the platform's own retries included. Empty when the first try
  // succeeded, or could not reach the control plane at all (a restart of it: nothing behind it
  // can retry that).
  std::string first_try_error = {};
};

class Tally {
 public:
  void add(const std::string& shape, const Outcome& outcome) {
    std::lock_guard lock(mutex_);
    Counts& counts = shapes_[shape];
    ++counts.requests;
    counts.retries += outcome.retries;
    if (!outcome.first_try_error.empty()) {
      ++counts.first_try_failed;
      ++first_try_errors_[shape + ": " + outcome.first_try_error];
    }
    switch (outcome.kind) {
      case Kind::kSucceeded:
        ++counts.succeeded;
        break;
      case Kind::kFailed:
        ++counts.failed;
        ++errors_[shape + ": " + outcome.error];
        break;
      case Kind::kLost:
        ++counts.lost;
        ++errors_[shape + " lost: " + outcome.error];
        break;
    }
  }

  struct Counts {
    int64_t requests = 0;
    int64_t succeeded = 0;
    int64_t failed = 0;
    int64_t lost = 0;
    int64_t retries = 0;
    int64_t first_try_failed = 0;
  };

  std::map<std::string, Counts> shapes() const {
    std::lock_guard lock(mutex_);
    return shapes_;
  }
  std::map<std::string, int64_t> errors() const {
    std::lock_guard lock(mutex_);
    return errors_;
  }
  std::map<std::string, int64_t> first_try_errors() const {
    std::lock_guard lock(mutex_);
    return first_try_errors_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Counts> shapes_;
  std::map<std::string, int64_t> errors_;
  std::map<std::string, int64_t> first_try_errors_;
};

// ---- the load ----------------------------------------------------------------------------

bool timed_out(const Error& error) {
  return error.message().find("timed out") != std::string::npos;
}

// Transport failures where the request may not have reached the control plane, or the control
// plane went away under it: an idempotent call may go again.
bool retryable_status(int status) { return status == 502 || status == 503 || status == 504; }

// The accumulator's output: one float32 ({"dtype", "shape": [1], "data_b64"}), or NaN.
double running_sum(const json& value) {
  if (!value.is_object() || value.value("dtype", "") != "float32") return std::nan("");
  auto bytes = base64_decode(value.value("data_b64", ""));
  if (!bytes.ok() || bytes->size() != sizeof(float)) return std::nan("");
  float out = 0;
  std::memcpy(&out, bytes->data(), sizeof out);
  return out;
}

class Load {
 public:
  Load(uint16_t port, std::string ca_file, std::string pat, std::shared_ptr<Tally> tally)
      : port_(port), ca_file_(std::move(ca_file)), pat_(std::move(pat)), tally_(std::move(tally)) {}

  void start(int unary, int generate, int stream) {
    for (int i = 0; i < unary; ++i) spawn("unary", [this] { return unary_call(); });
    for (int i = 0; i < generate; ++i) spawn("generate", [this] { return generate_call(); });
    for (int i = 0; i < stream; ++i) spawn("stream", [this] { return stream_call(); });
  }

  // Stops the load and waits for the calls in flight. A call still unanswered well past its
  // deadline is counted lost and its thread left behind (returns false: keep this object).
  bool stop() {
    stop_ = true;
    const auto limit = Clock::now() + 2 * kCallDeadline;
    while (finished_.load() < static_cast<int>(threads_.size()) && Clock::now() < limit) {
      std::this_thread::sleep_for(milliseconds(100));
    }
    const bool all_done = finished_.load() == static_cast<int>(threads_.size());
    for (size_t i = 0; i < threads_.size(); ++i) {
      if (all_done) {
        threads_[i].join();
      } else {
        if (!done_[i]->load()) tally_->add(shapes_[i], {Kind::kLost, "no answer, no deadline", 0});
        threads_[i].detach();
      }
    }
    threads_.clear();
    return all_done;
  }

 private:
  void spawn(const std::string& shape, std::function<Outcome()> call) {
    shapes_.push_back(shape);
    done_.push_back(std::make_unique<std::atomic<bool>>(false));
    std::atomic<bool>* done = done_.back().get();
    threads_.emplace_back([this, shape, done, call = std::move(call)] {
      while (!stop_) {
        tally_->add(shape, call());
        std::this_thread::sleep_for(milliseconds(20));  // a steady load, not a CPU-bound loop
      }
      *done = true;
      ++finished_;
    });
  }

  std::unique_ptr<cli::HttpClient> client() {
    cli::ClientConfig config;
    config.base_url = "https://localhost:" + std::to_string(port_);
    config.ca_file = ca_file_;
    config.pat = pat_;
    config.timeout = kCallDeadline;
    auto made = cli::HttpClient::create(config);
    if (!made.ok()) {
      ADD_FAILURE() << made.error().to_string();
      std::abort();
    }
    return std::move(*made);
  }

  // Backs off before try `attempt`, honouring a Retry-After up to a second.
  static void back_off(int attempt, const std::string& retry_after = {}) {
    int ms = std::min(1000, 50 << std::min(attempt, 5));
    if (!retry_after.empty()) ms = std::min(1000, std::atoi(retry_after.c_str()) * 1000);
    std::this_thread::sleep_for(milliseconds(ms));
  }

  // How long an idempotent call keeps retrying: a control-plane restart takes a few seconds.
  static constexpr seconds kRetryFor{60};

  Outcome unary_call() {
    const std::string body = json{{"runner_selector", {{"deployment", {{"id", "dep-text"}}}}},
                                  {"method", "predict"},
                                  {"inputs", {{"text", "left right"}}}}
                                 .dump();
    const auto give_up = Clock::now() + kRetryFor;
    auto http = client();
    std::string first_try_error;
    for (int attempt = 0;; ++attempt) {
      auto response = http->send("POST", "/v2/users/me/models/text/outputs", body);
      std::string why;
      std::string retry_after;
      if (!response.ok()) {
        if (timed_out(response.error())) {
          return {Kind::kLost, response.error().message(), attempt, first_try_error};
        }
        why = response.error().message();
      } else if (response->status == 200) {
        if (response->body.find("RIGHT LEFT") == std::string::npos) {
          return {Kind::kFailed, "wrong answer: " + response->body.substr(0, 200), attempt,
                  attempt == 0 ? "wrong answer" : first_try_error};
        }
        return {Kind::kSucceeded, "", attempt, first_try_error};
      } else {
        why = cli::error_from_response(*response).to_string();
        if (attempt == 0) first_try_error = why;
        if (!retryable_status(response->status)) {
          return {Kind::kFailed, why, attempt, first_try_error};
        }
        retry_after = response->retry_after;
      }
      if (Clock::now() > give_up) {
        return {Kind::kFailed, "gave up retrying: " + why, attempt, first_try_error};
      }
      back_off(attempt, retry_after);
    }
  }

  // A refused connection or a 503 before anything was sent back: the call never started.
  Outcome generate_call() {
    const std::string body = json{{"runner_selector", {{"deployment", {{"id", "dep-gen"}}}}},
                                  {"method", "generate"},
                                  {"inputs", {{"prompt", "ab"}, {"max_tokens", 6}}}}
                                 .dump();
    const auto give_up = Clock::now() + kRetryFor;
    auto http = client();
    for (int attempt = 0;; ++attempt) {
      std::string pending;
      int chunks = 0;
      std::string status_code;
      std::string status_text;
      auto response = http->send_streaming(
          "POST", "/v2/users/me/models/chargen/outputs/generate", body, "application/json",
          {{"Accept", "application/x-ndjson"}}, [&](std::string_view data) {
            pending.append(data);
            for (auto end = pending.find('\n'); end != std::string::npos;
                 end = pending.find('\n')) {
              const json line = json::parse(pending.substr(0, end), nullptr, false);
              pending.erase(0, end + 1);
              if (line.contains("chunk")) ++chunks;
              if (line.contains("status")) {
                status_code = line["status"].value("code", "");
                status_text = line["status"].dump();
              }
            }
            return true;
          });
      std::string why;
      if (!response.ok()) {
        if (timed_out(response.error())) return {Kind::kLost, response.error().message(), attempt};
        why = response.error().message();
        // Refused, or cut during the TLS handshake: the request was never sent.
        const bool never_started = chunks == 0 && (why.find("refused") != std::string::npos ||
                                                   why.find("TLS with") != std::string::npos);
        if (!never_started) return {Kind::kFailed, why, attempt};
      } else if (response->status == 200) {
        if (status_code == "ok" && chunks >= 6) return {Kind::kSucceeded, "", attempt};
        if (status_code.empty()) return {Kind::kFailed, "cut short without a status", attempt};
        return {Kind::kFailed, "ended with " + status_text, attempt};
      } else {
        why = cli::error_from_response(*response).to_string();
        if (response->status != 503) return {Kind::kFailed, why, attempt};
      }
      if (Clock::now() > give_up) return {Kind::kFailed, "gave up retrying: " + why, attempt};
      back_off(attempt, response.ok() ? response->retry_after : "");
    }
  }

  Outcome stream_call() {
    const auto give_up = Clock::now() + kRetryFor;
    auto http = client();
    for (int attempt = 0;; ++attempt) {
      auto socket = http->websocket(
          "/v2/users/me/models/accumulator/outputs/stream?deployment=dep-acc&method=stream");
      if (!socket.ok()) {
        const std::string why = socket.error().message();
        if (timed_out(socket.error())) return {Kind::kLost, why, attempt};
        const bool never_started =
            why.find("refused") != std::string::npos || why.find("TLS with") != std::string::npos ||
            why.find("503") != std::string::npos || why.find("unavailable") != std::string::npos;
        if (!never_started) return {Kind::kFailed, why, attempt};
        if (Clock::now() > give_up) return {Kind::kFailed, "gave up retrying: " + why, attempt};
        back_off(attempt);
        continue;
      }
      auto& ws = **socket;
      bool start_again = false;
      double sum = 0;
      for (int i = 1; i <= 5; ++i) {
        sum += i;
        const json item = {
            {"inputs", {{"x", {{"dtype", "float32"}, {"shape", {1}}, {"values", {i}}}}}}};
        if (auto sent = ws.send(item.dump()); !sent.ok()) {
          return {Kind::kFailed, sent.error().message(), attempt};
        }
        auto message = ws.receive();
        if (!message.ok()) {
          const Kind kind = timed_out(message.error()) ? Kind::kLost : Kind::kFailed;
          return {kind, message.error().message(), attempt};
        }
        if (!message->has_value()) return {Kind::kFailed, "closed without a status", attempt};
        const json reply = json::parse(**message, nullptr, false);
        if (!reply.is_object() || !reply.contains("outputs")) {
          // `unavailable` before any output (close 1013): no replica took the call; try later.
          const bool never_started = i == 1 && reply.is_object() && reply.contains("status") &&
                                     reply["status"].value("code", "") == "unavailable" &&
                                     Clock::now() < give_up;
          if (never_started) {
            start_again = true;
            break;
          }
          return {Kind::kFailed, "ended with " + (**message).substr(0, 300), attempt};
        }
        if (running_sum(reply["outputs"]) != sum) {
          return {Kind::kFailed, "wrong running sum: " + reply.dump(), attempt};
        }
      }
      if (start_again) {
        ws.close();
        back_off(attempt);
        continue;
      }
      if (auto sent = ws.send(R"({"end": true})"); !sent.ok()) {
        return {Kind::kFailed, sent.error().message(), attempt};
      }
      auto last = ws.receive();
      ws.close();
      if (!last.ok()) {
        const Kind kind = timed_out(last.error()) ? Kind::kLost : Kind::kFailed;
        return {kind, last.error().message(), attempt};
      }
      if (!last->has_value()) return {Kind::kFailed, "closed without a status", attempt};
      const json status = json::parse(**last, nullptr, false);
      if (!status.is_object() || status["status"].value("code", "") != "ok") {
        return {Kind::kFailed, "ended with " + (**last).substr(0, 300), attempt};
      }
      return {Kind::kSucceeded, "", attempt};
    }
  }

  uint16_t port_;
  std::string ca_file_;
  std::string pat_;
  std::shared_ptr<Tally> tally_;
  std::atomic<bool> stop_{false};
  std::atomic<int> finished_{0};
  std::vector<std::string> shapes_;
  std::vector<std::unique_ptr<std::atomic<bool>>> done_;
  std::vector<std::thread> threads_;
};

// ---- resources ---------------------------------------------------------------------------

struct Sample {
  double at = 0;  // seconds since the soak began
  int64_t rss_kb = 0;
};

int64_t rss_kb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

// Every open descriptor of `pid` ("12 tcp 127.0.0.1:A -> 127.0.0.1:B ESTABLISHED", "3 /path").
std::vector<std::string> descriptors(pid_t pid) {
  std::vector<std::string> out;
  std::error_code ec;
  std::map<std::string, std::string> sockets;  // "socket:[INODE]" -> "tcp LOCAL -> REMOTE STATE"
  for (const TcpSocket& socket : tcp_sockets(pid)) {
    sockets["socket:[" + socket.inode + "]"] =
        "tcp " + socket.local + " -> " + socket.remote + " " + socket.state;
  }
  for (fs::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code link_ec;
    const std::string target = fs::read_symlink(it->path(), link_ec).string();
    const auto tcp = sockets.find(target);
    out.push_back(it->path().filename().string() + " " +
                  (tcp != sockets.end() ? tcp->second : target));
  }
  if (ec) return {};
  std::sort(out.begin(), out.end());
  return out;
}

// The open descriptors of each role ("control", "agent node-a", "workers node-b") while no call
// is in flight. Processes are restarted by the faults, but a role's new process holds what the
// old one held (its listener, database, tunnel connections, worker sockets): a role that holds
// more at the end than at the start has leaked.
using QuietState = std::map<std::string, std::vector<std::string>>;

QuietState read_state(Platform& platform) {
  QuietState state;
  state["control"] = descriptors(platform.control().pid());
  for (const char* name : {"node-a", "node-b"}) {
    const pid_t agent = platform.agent(name).pid();
    state[std::string("agent ") + name] = descriptors(agent);
    auto& workers = state[std::string("workers ") + name];
    for (const pid_t worker : child_pids(agent, "outpost-worker")) {
      for (auto& fd : descriptors(worker)) workers.push_back(std::to_string(worker) + ": " + fd);
    }
  }
  return state;
}

// Read once every role's count has stayed the same for three readings a second apart (a call's
// connection closing, a reconnecting tunnel), or after 30 s.
QuietState quiet_state(Platform& platform) {
  const auto counts = [](const QuietState& state) {
    std::map<std::string, size_t> out;
    for (const auto& [role, fds] : state) out[role] = fds.size();
    return out;
  };
  QuietState state = read_state(platform);
  int same = 0;
  for (const auto limit = Clock::now() + seconds(30); same < 2 && Clock::now() < limit;) {
    std::this_thread::sleep_for(seconds(1));
    QuietState next = read_state(platform);
    same = counts(next) == counts(state) ? same + 1 : 0;
    state = std::move(next);
  }
  return state;
}

// Per role: the descriptors at the start and at the end; those a role gained are listed.
json descriptor_growth(const QuietState& start, const QuietState& end) {
  json roles = json::object();
  int64_t growth = 0;
  for (const auto& [role, fds] : end) {
    const auto before = start.count(role) != 0 ? start.at(role).size() : 0;
    const auto grown = static_cast<int64_t>(fds.size()) - static_cast<int64_t>(before);
    growth += std::max<int64_t>(grown, 0);
    roles[role] = {{"start", before}, {"end", fds.size()}};
    if (grown > 0) {
      roles[role]["descriptors_start"] = start.count(role) != 0 ? start.at(role) : fds;
      roles[role]["descriptors_end"] = fds;
    }
  }
  return {{"fd_growth", growth}, {"roles", roles}};
}

// Samples of each process incarnation ("control 1234"), since processes are restarted.
class Sampler {
 public:
  void sample(double at, const std::string& role, pid_t pid) {
    if (pid <= 0) return;
    const int64_t rss = rss_kb(pid);
    if (rss < 0) return;  // gone meanwhile
    series_[role + " " + std::to_string(pid)].push_back({at, rss});
  }

  // RSS growth of every incarnation that was sampled for `window` seconds after its own warm-up
  // (`warmup` seconds after it was first seen): the median of its first five samples after the
  // warm-up against the median of its last five (a steady load moves both a little).
  json growth(double warmup, double window) const {
    json processes = json::array();
    double worst_rss_pct = 0;
    for (const auto& [name, samples] : series_) {
      if (samples.empty()) continue;
      const double born = samples.front().at;
      std::vector<Sample> steady;
      for (const Sample& s : samples) {
        if (s.at >= born + warmup) steady.push_back(s);
      }
      if (steady.size() < 10 || steady.back().at - steady.front().at < window) continue;
      const auto median = [](std::vector<int64_t> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      std::vector<int64_t> rss_first, rss_last;
      for (size_t i = 0; i < 5; ++i) {
        rss_first.push_back(steady[i].rss_kb);
        rss_last.push_back(steady[steady.size() - 1 - i].rss_kb);
      }
      const double rss_pct = 100.0 * static_cast<double>(median(rss_last) - median(rss_first)) /
                             static_cast<double>(median(rss_first));
      worst_rss_pct = std::max(worst_rss_pct, rss_pct);
      json process = {{"process", name},
                      {"seconds", std::lround(steady.back().at - steady.front().at)},
                      {"rss_kb_start", median(rss_first)},
                      {"rss_kb_end", median(rss_last)},
                      {"rss_growth_pct", std::round(rss_pct * 100) / 100}};
      processes.push_back(std::move(process));
    }
    return {{"rss_growth_pct", std::round(worst_rss_pct * 100) / 100}, {"processes", processes}};
  }

 private:
  std::map<std::string, std::vector<Sample>> series_;
};

// ---- the soak ----------------------------------------------------------------------------

int soak_seconds() {
  const char* text = std::getenv("OUTPOST_SOAK_SECONDS");
  const int value = text != nullptr ? std::atoi(text) : 0;
  return value > 0 ? value : 90;
}

TEST(SoakTest, MixedLoadUnderEveryFault) {
  const int total = soak_seconds();
  PlatformOptions options;
  options.log_level = "info";
  options.control_yaml = "tunnel: {keepalive_seconds: " + std::to_string(kKeepaliveSeconds) +
                         ", dead_after_seconds: " + std::to_string(kDeadAfterSeconds) + "}\n" +
                         "scaling: {node_offline_grace_seconds: 20}\n";
  Platform platform(options);
  TcpRelay relay(platform.control_port());
  platform.create_pool("cc-e2e", "np-soak");
  for (const char* name : {"node-a", "node-b"}) {
    AgentOptions agent;
    agent.name = name;
    if (std::string(name) == "node-a") agent.control_port_override = std::to_string(relay.port());
    agent.control_plane_yaml = "  keepalive_seconds: " + std::to_string(kKeepaliveSeconds) +
                               "\n  dead_after_seconds: " + std::to_string(kDeadAfterSeconds) +
                               "\n";
    platform.start_agent("cc-e2e", "np-soak", agent);
  }
  for (const char* model : {"text", "chargen", "accumulator"}) platform.upload_model(model);
  const auto deploy = [&](const std::string& id, const std::string& model) {
    platform.deploy_yaml("np-soak", id,
                         "  autoscale_config: {min_replicas: 2, max_replicas: 2}\n"
                         "  worker: {model: {id: " +
                             model +
                             "}}\n"
                             "  scheduling_choice: 4\n"
                             "  nodepools:\n    - {id: np-soak, compute_cluster: {id: cc-e2e}}\n");
  };
  deploy("dep-text", "text");
  deploy("dep-gen", "chargen");
  deploy("dep-acc", "accumulator");
  for (const char* id : {"dep-text", "dep-gen", "dep-acc"}) {
    ASSERT_TRUE(platform.wait_live(id, 2)) << id << "\n" << platform.agent("node-a").log();
  }

  // Descriptors are compared between two quiet moments: now, before the load, and at the end,
  // after the load has stopped and the nodes are back (see QuietState).
  const QuietState quiet_start = quiet_state(platform);

  auto tally = std::make_shared<Tally>();
  Sampler sampler;
  const auto began = Clock::now();
  std::atomic<bool> sampling{true};
  std::mutex platform_mutex;  // the fault schedule replaces processes the sampler reads
  std::thread sampler_thread([&] {
    while (sampling) {
      {
        std::lock_guard lock(platform_mutex);
        const double at = seconds_since(began);
        sampler.sample(at, "control", platform.control().pid());
        for (const char* name : {"node-a", "node-b"}) {
          const pid_t agent = platform.agent(name).pid();
          sampler.sample(at, std::string("agent ") + name, agent);
          for (const pid_t worker : child_pids(agent, "outpost-worker")) {
            sampler.sample(at, std::string("worker ") + name, worker);
          }
        }
      }
      std::this_thread::sleep_for(seconds(2));
    }
  });

  // On the heap: a call that never ends keeps its thread, and so its Load, alive.
  auto load = std::make_unique<Load>(platform.control_port(), platform.pki().ca_file(),
                                     platform.admin_token(), tally);
  load->start(/*unary=*/3, /*generate=*/1, /*stream=*/1);

  // The schedule: a warm-up, then the six faults in turn, evenly spaced, as often as fits.
  // The control plane is restarted first and node-a's agent next, so that the processes alive
  // at the end have lived through the faults that follow (their descriptors are compared).
  const std::vector<std::string> kinds = {"control_restart", "agent_restart", "agent_drain",
                                          "tunnel_cut",      "silent_drop",   "worker_kill"};
  const double warmup = std::min(20.0, total / 6.0);
  const int cycles = std::max(1, total / 300);
  const double spacing = (total - warmup) / static_cast<double>(kinds.size() * cycles + 1);
  std::map<std::string, int> injected;
  std::vector<std::string> fault_problems;
  for (int n = 0; n < static_cast<int>(kinds.size()) * cycles; ++n) {
    const double when = warmup + spacing * n;
    while (seconds_since(began) < when) std::this_thread::sleep_for(milliseconds(100));
    const std::string& kind = kinds[n % kinds.size()];
    std::fprintf(stderr, "soak: %.0f s: %s\n", seconds_since(began), kind.c_str());
    if (kind == "tunnel_cut") {
      relay.cut();
    } else if (kind == "silent_drop") {
      // Held until node-a has noticed and connected again; then the dead links are let go.
      const int before = relay.accepted();
      relay.freeze();
      const auto limit = Clock::now() + seconds(kDeadAfterSeconds * 4);
      while (relay.accepted() == before && Clock::now() < limit) {
        std::this_thread::sleep_for(milliseconds(100));
      }
      if (relay.accepted() == before) fault_problems.push_back("node-a never noticed the drop");
      relay.thaw();
    } else if (kind == "worker_kill") {
      const auto workers = child_pids(platform.agent("node-b").pid(), "outpost-worker");
      if (workers.empty()) fault_problems.push_back("node-b had no worker to kill");
      for (const pid_t worker : workers) ::kill(worker, SIGKILL);
    } else if (kind == "agent_restart") {
      std::lock_guard lock(platform_mutex);
      platform.agent("node-a").signal(SIGKILL);
      platform.restart_agent("node-a");
    } else if (kind == "control_restart") {
      std::lock_guard lock(platform_mutex);
      platform.stop_control();
      platform.start_control();
    } else if (kind == "agent_drain") {
      std::lock_guard lock(platform_mutex);
      platform.restart_agent("node-a");  // SIGTERM: drains, exits; then a new one
    }
    ++injected[kind];
  }
  while (seconds_since(began) < total) std::this_thread::sleep_for(milliseconds(100));
  if (!load->stop()) (void)load.release();
  sampling = false;
  sampler_thread.join();
  // The end's quiet moment: every replica back, no call in flight.
  for (const char* id : {"dep-text", "dep-gen", "dep-acc"}) {
    if (!platform.wait_live(id, 2))
      fault_problems.push_back(std::string(id) + " not back at the end");
  }
  const json descriptors = descriptor_growth(quiet_start, quiet_state(platform));

  // ---- the report ----
  int64_t requests = 0, succeeded = 0, failed = 0, lost = 0;
  json shapes = json::object();
  auto counts = tally->shapes();  // the load has stopped: one snapshot serves the report
  for (const auto& [shape, c] : counts) {
    requests += c.requests;
    succeeded += c.succeeded;
    failed += c.failed;
    lost += c.lost;
    shapes[shape] = {{"requests", c.requests}, {"succeeded", c.succeeded},
                     {"failed", c.failed},     {"lost", c.lost},
                     {"retries", c.retries},   {"first_try_failed", c.first_try_failed}};
  }
  const auto unary = counts["unary"];
  const double unary_rate = unary.requests > 0 ? static_cast<double>(unary.succeeded) /
                                                     static_cast<double>(unary.requests)
                                               : 0.0;
  const json resources = sampler.growth(/*warmup=*/30, /*window=*/std::min(60.0, total / 3.0));
  json failures = json::object();
  for (const auto& [message, count] : tally->errors()) failures[message] = count;
  json first_try_failures = json::object();
  for (const auto& [message, count] : tally->first_try_errors()) {
    first_try_failures[message] = count;
  }
  // Growth is judged on a run long enough for it to mean something, and not under ASan, whose
  // quarantine holds freed memory by design (the short run in the test suite reports it only).
  const bool judge_growth = total >= 300 && !kUnderAsan;
  const bool clean = lost == 0 && unary_rate >= 0.9999 && fault_problems.empty() &&
                     (!judge_growth || (resources["rss_growth_pct"].get<double>() <= 5.0 &&
                                        descriptors["fd_growth"].get<int64_t>() <= 0));
  json report = {{"seconds", total},
                 {"requests", requests},
                 {"succeeded", succeeded},
                 {"failed", failed},
                 {"lost", lost},
                 {"unary_success_rate", std::floor(unary_rate * 1e6) / 1e6},
                 // What callers that never retry would have seen: the platform's retries only.
                 {"unary_failed_without_client_retry", unary.first_try_failed},
                 {"first_try_failures", first_try_failures},
                 {"rss_growth_pct", resources["rss_growth_pct"]},
                 {"fd_growth", descriptors["fd_growth"]},
                 {"faults", injected},
                 {"shapes", shapes},
                 {"failures", failures},
                 {"processes", resources["processes"]},
                 {"descriptors", descriptors["roles"]},
                 {"growth_judged", judge_growth},
                 {"clean", clean}};
  // gtest's own lines come after this one; scripts/soak prints it again as its last line.
  std::printf("soak-report %s\n", report.dump().c_str());
  std::fflush(stdout);

  EXPECT_TRUE(fault_problems.empty()) << fault_problems.front();
  EXPECT_EQ(lost, 0) << failures.dump(2);
  for (const auto& [message, count] : tally->errors()) {
    const size_t colon = message.find(": ");
    EXPECT_TRUE(colon != std::string::npos && colon + 2 < message.size())
        << "a failure without a message: " << message;
  }
  for (const char* shape : {"unary", "generate", "stream"}) {
    EXPECT_GT(counts[shape].succeeded, 0) << shape;
  }
  EXPECT_GE(unary_rate, 0.9999) << failures.dump(2);
  if (judge_growth) {
    EXPECT_LE(resources["rss_growth_pct"].get<double>(), 5.0) << resources.dump(2);
    EXPECT_LE(descriptors["fd_growth"].get<int64_t>(), 0) << descriptors.dump(2);
  }
}

}  // namespace
}  // namespace outpost::testing
