// scripts/bench coldstart: the first response from a deployment at zero replicas, measured
// against the model's own load and warm-up time in the same cold start. Prints one JSON object
// as its last line.
//
// The platform is the end-to-end tests' (tests/e2e/platform.h): outpost-control, one outpostd
// and the outpost-workers it starts, on loopback, logging at info as an installation does. The
// example models text (a TorchScript string model) and classifier (an MLP, 256-512-512-10) are
// deployed with min_replicas 0 and short delays (traffic history 2 s, scale down after 1 s, to
// zero after 2 s idle), so that each goes back to zero seconds after a call.
//
// Two tiers, each on a platform of its own: warm_spare (the default: the device's worker is
// started before any deployment and stays up, model-less, between replicas, so a cold start is
// the model's load; the agent runs with workers.idle_seconds: 0 to show the spare alone keeps
// it) and worker_exited (workers.spare: false and idle_seconds: 0, so a cold start includes the
// worker's process start). The top-level keys are warm_spare's; worker_exited's are under
// "worker_exited".
//
// Each round, for each model: wait until the deployment's state is scaled_to_zero and the agent
// has no outpost-worker left (warm_spare: none holding a model), open an HTTPS connection (its
// handshake is not measured), then time one unary predict (POST /v2/users/me/models/MODEL/outputs,
// as a user's call) from send to the whole answer: coldstart_ms. The call is held while the control
// plane scales the deployment to one, the agent starts a worker and the worker loads the model. The
// baseline, load_warmup_ms, is what that same worker logged for that load (`worker.loaded: REPLICA
// ready in N ms`, in the agent's runtime_dir/workers/*.log): opening the package, loading the
// TorchScript file and the warm-up runs of its config. overhead_ms = coldstart_ms - load_warmup_ms:
// everything else (the scaling decision, the desired state through the tunnel, the worker's process
// start, the reports back, the call itself). The aim: overhead_ms <= 250. A warm call follows each
// cold one (warm_ms: the call alone).
//
// Where the overhead goes: phases_ms are the times, from send, at which the control plane's,
// the agent's and the worker's logs record each step of the cold start (wall-clock
// milliseconds, as the log lines carry them); worker_start_ms is from the agent planning the
// worker to the worker listening (the process start: exec, loading libtorch and its static
// initialisers), worker_ready_seen_ms from then until the agent's health check saw it ready.
// The figures are medians of the rounds (overhead_ms and the two gaps: of the rounds' own
// differences); the per-round values come with them. The top-level keys are text's; classifier's
// are under "classifier".
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bench/e2e/keepalive_https.h"
#include "common/base64.h"
#include "tests/e2e/platform.h"
#include "tests/support/child_process.h"

namespace {

using namespace outpost;
using nlohmann::json;
using outpost::bench::HttpsTarget;
using outpost::bench::KeepAliveHttps;
using outpost::testing::Platform;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;

constexpr int kRounds = 5;
constexpr const char* kModels[] = {"text", "classifier"};
constexpr const char* kPool = "np-cold";
constexpr const char* kAgent = "node-a";
constexpr double kAimOverheadMs = 250;

// The steps of a cold start, in order, as the logs name them: which log, the event id, and what
// the line must contain (DEPLOYMENT is replaced; the worker names a model by its replica id,
// "DEPLOYMENT/NODEPOOL/INDEX").
struct Step {
  const char* name;
  const char* log;  // "control", "agent" or "worker"
  const char* event_id;
  const char* contains;
  const char* also_contains;
};
constexpr Step kSteps[] = {
    {"scaled_to_one", "control", "control.scaled", "deployment DEPLOYMENT ",
     "(a request arrived at zero replicas)"},
    {"desired_state_at_agent", "agent", "agent.desired_state", "", ""},
    {"worker_planned", "agent", "agent.worker_planned", "", ""},
    {"worker_listening", "worker", "worker.listening", "", ""},
    {"worker_ready", "agent", "agent.worker_started", "", ""},
    {"load_started", "worker", "worker.load", "loading DEPLOYMENT/", ""},
    {"loaded", "worker", "worker.loaded", "DEPLOYMENT/", " ready in "},
    {"replica_ready", "agent", "agent.replica_ready", "replica DEPLOYMENT/", ""},
};

std::string deployment_of(const std::string& model) { return "dep-" + model; }

// At most one replica, back to zero 2 s after the last call (the traffic history is as short:
// a busy sample in it keeps one replica).
std::string deployment_yaml(const std::string& model) {
  const std::string autoscale =
      "  autoscale_config: {min_replicas: 0, max_replicas: 1, traffic_history_seconds: 2, "
      "scale_up_delay_seconds: 1, scale_down_delay_seconds: 1, scale_to_zero_delay_seconds: 2}\n";
  return autoscale + "  worker: {model: {id: " + model + "}}\n  scheduling_choice: 4\n" +
         "  nodepools: [{id: " + kPool + ", compute_cluster: {id: cc-e2e}}]\n";
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

double wall_ms_now() {
  return duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string replaced(std::string text, const std::string& model) {
  const std::string from = "DEPLOYMENT";
  const std::string to = deployment_of(model);
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at)) {
    text.replace(at, from.size(), to);
    at += to.size();
  }
  return text;
}

// One log line: "2025-01-02T03:04:05.678Z I event.id: message" (common/log.cc).
struct LogLine {
  double wall_ms = 0;
  std::string event_id;
  std::string message;
};

std::optional<LogLine> parse_line(const std::string& line) {
  std::tm utc{};
  int millis = 0;
  char severity = 0;
  int consumed = 0;
  if (std::sscanf(line.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ %c %n", &utc.tm_year, &utc.tm_mon,
                  &utc.tm_mday, &utc.tm_hour, &utc.tm_min, &utc.tm_sec, &millis, &severity,
                  &consumed) != 8 ||
      consumed == 0) {
    return std::nullopt;
  }
  utc.tm_year -= 1900;
  utc.tm_mon -= 1;
  const std::string rest = line.substr(static_cast<size_t>(consumed));
  const size_t colon = rest.find(": ");
  if (colon == std::string::npos) return std::nullopt;
  return LogLine{static_cast<double>(timegm(&utc)) * 1000 + millis, rest.substr(0, colon),
                 rest.substr(colon + 2)};
}

std::vector<LogLine> parse_log(const std::string& text) {
  std::vector<LogLine> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (auto parsed = parse_line(line)) lines.push_back(std::move(*parsed));
  }
  return lines;
}

// Every worker log the agent has written (one file per worker, appended across restarts).
std::string worker_logs(Platform& platform) {
  std::string text;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator(platform.agent_runtime_dir(kAgent) + "/workers", ec)) {
    if (entry.path().extension() == ".log")
      text += outpost::testing::read_file(entry.path().string());
  }
  return text;
}

// What one cold start's logs say: each step's time from `sent_wall_ms`, and the worker's own load
// time. Log times are whole milliseconds (truncated), as `sent_wall_ms` is compared.
struct ColdStartLogs {
  std::map<std::string, double> steps_ms;
  std::optional<double> load_warmup_ms;
};

ColdStartLogs read_cold_start(Platform& platform, const std::string& model, double sent_wall_ms) {
  std::map<std::string, std::vector<LogLine>> logs = {
      {"control", parse_log(platform.control().log())},
      {"agent", parse_log(platform.agent(kAgent).log())},
      {"worker", parse_log(worker_logs(platform))}};
  for (auto& [name, lines] : logs) {
    std::stable_sort(lines.begin(), lines.end(),
                     [](const LogLine& a, const LogLine& b) { return a.wall_ms < b.wall_ms; });
  }
  const double since = std::floor(sent_wall_ms);
  ColdStartLogs out;
  for (const Step& step : kSteps) {
    const std::string needle = replaced(step.contains, model);
    for (const LogLine& line : logs[step.log]) {
      if (line.wall_ms < since || line.event_id != step.event_id ||
          line.message.find(needle) == std::string::npos ||
          line.message.find(step.also_contains) == std::string::npos) {
        continue;
      }
      out.steps_ms[step.name] = line.wall_ms - since;
      if (std::string_view(step.name) == "loaded") {
        const size_t at = line.message.find(" ready in ");
        if (at != std::string::npos) {
          out.load_warmup_ms = std::strtod(line.message.c_str() + at + 10, nullptr);
        }
      }
      break;
    }
  }
  return out;
}

// Polls `condition` every 200 ms for up to `limit`.
bool eventually(const std::function<bool()>& condition,
                std::chrono::seconds limit = std::chrono::seconds(90)) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return condition();
}

std::string deployment_state(Platform& platform, const std::string& deployment) {
  const auto result = platform.cli({"-o", "json", "deployment", "get", deployment}, false);
  const auto doc = json::parse(result.out, nullptr, false);
  if (doc.is_discarded()) return "";
  const json& view = doc.contains("deployment") ? doc["deployment"] : doc;
  return view.value("state", "");
}

bool no_worker(Platform& platform) {
  return outpost::testing::child_pids(platform.agent(kAgent).pid(), "outpost-worker").empty();
}

// The body of one unary predict of `model` (the inputs its config's warm-up example takes).
std::string predict_body(const std::string& model) {
  json inputs;
  if (model == "text") {
    inputs = {{"text", "hello cold start"}};
  } else {
    std::vector<float> data(256);
    std::mt19937 generator(7);
    std::normal_distribution<float> normal;
    for (float& x : data) x = normal(generator);
    const std::string_view bytes(reinterpret_cast<const char*>(data.data()),
                                 data.size() * sizeof(float));
    inputs = {
        {"x", {{"dtype", "float32"}, {"shape", {1, 256}}, {"data_b64", base64_encode(bytes)}}}};
  }
  return json{{"runner_selector", {{"deployment", {{"id", deployment_of(model)}}}}},
              {"method", "predict"},
              {"inputs", inputs}}
      .dump();
}

struct Call {
  bool ok = false;
  double ms = 0;
  std::string error;
};

Call timed_predict(KeepAliveHttps& client, const std::string& model, const std::string& body) {
  const auto start = Clock::now();
  auto answer = client.post("/v2/users/me/models/" + model + "/outputs", body);
  Call call;
  call.ms = duration<double, std::milli>(Clock::now() - start).count();
  if (!answer.ok()) {
    call.error = answer.error().to_string();
  } else if (answer->status != 200 || answer->body.find("\"outputs\"") == std::string::npos) {
    call.error = "HTTP " + std::to_string(answer->status) + ": " + answer->body.substr(0, 300);
  } else {
    call.ok = true;
  }
  return call;
}

std::string tail(const std::string& text, size_t bytes) {
  return text.size() <= bytes ? text : text.substr(text.size() - bytes);
}

bool platform_failed() { return ::testing::UnitTest::GetInstance()->ad_hoc_test_result().Failed(); }

// Everything measured for one model.
struct Figures {
  std::vector<double> coldstart_ms;
  std::vector<double> load_warmup_ms;
  std::vector<double> overhead_ms;
  std::vector<double> warm_ms;
  std::vector<double> worker_start_ms;       // worker_planned to worker_listening
  std::vector<double> worker_ready_seen_ms;  // worker_listening to worker_ready
  std::map<std::string, std::vector<double>> steps_ms;

  void add(const Call& cold, const Call& warm, const ColdStartLogs& logs) {
    coldstart_ms.push_back(cold.ms);
    load_warmup_ms.push_back(logs.load_warmup_ms.value_or(0));
    overhead_ms.push_back(cold.ms - logs.load_warmup_ms.value_or(0));
    warm_ms.push_back(warm.ms);
    for (const auto& [name, at] : logs.steps_ms) steps_ms[name].push_back(at);
    const auto between = [&](const char* from, const char* to) -> std::optional<double> {
      const auto a = logs.steps_ms.find(from);
      const auto b = logs.steps_ms.find(to);
      if (a == logs.steps_ms.end() || b == logs.steps_ms.end()) return std::nullopt;
      return b->second - a->second;
    };
    if (auto gap = between("worker_planned", "worker_listening")) worker_start_ms.push_back(*gap);
    if (auto gap = between("worker_listening", "worker_ready")) {
      worker_ready_seen_ms.push_back(*gap);
    }
  }

  json to_json() const {
    json out;
    out["rounds"] = coldstart_ms.size();
    out["coldstart_ms"] = median(coldstart_ms);
    out["load_warmup_ms"] = median(load_warmup_ms);
    out["overhead_ms"] = median(overhead_ms);
    out["warm_ms"] = median(warm_ms);
    out["worker_start_ms"] = median(worker_start_ms);
    out["worker_ready_seen_ms"] = median(worker_ready_seen_ms);
    out["coldstart_ms_rounds"] = coldstart_ms;
    out["load_warmup_ms_rounds"] = load_warmup_ms;
    out["overhead_ms_rounds"] = overhead_ms;
    json phases = json::object();
    for (const Step& step : kSteps) {
      const auto it = steps_ms.find(step.name);
      if (it != steps_ms.end()) phases[step.name] = median(it->second);
    }
    out["phases_ms"] = phases;
    return out;
  }
};

// How a cold start finds the node: with the device's worker up and empty (the default: a warm
// spare), or with its worker process gone (workers.spare: false, idle_seconds: 0).
struct Tier {
  const char* name;
  const char* workers_yaml;  // lines added to the agent's `workers:`
  bool worker_exits;
};

// Every replica the agent loaded it has unloaded again: the worker, if kept, holds no model.
bool nothing_loaded(Platform& platform) {
  const std::string log = platform.agent(kAgent).log();
  const auto count = [&log](const char* needle) {
    size_t n = 0;
    for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  };
  return count("agent.replica_ready") == count("agent.replica_unloaded");
}

// Runs the rounds of one tier on a platform of its own; nullopt when it could not run.
std::optional<std::map<std::string, Figures>> run_tier(const Tier& tier, int& failures) {
  const auto started = Clock::now();
  outpost::testing::PlatformOptions platform_options;
  platform_options.log_level = "info";
  Platform platform(platform_options);
  platform.create_pool("cc-e2e", kPool);
  outpost::testing::AgentOptions agent;
  agent.workers_yaml = tier.workers_yaml;
  platform.start_agent("cc-e2e", kPool, agent);
  for (const char* model : kModels) {
    platform.upload_model(model);
    platform.deploy_yaml(kPool, deployment_of(model), deployment_yaml(model));
  }
  // Not waiting for them to go live: with these delays they may be back at zero before a poll
  // sees them live. The first round waits for zero, and its calls tell whether they load.
  if (platform_failed()) return std::nullopt;
  std::printf(
      "%s: platform on loopback, port %u: control, outpostd (%s), workers of 1 intra-op "
      "thread; up after %.1f s\n",
      tier.name, platform.control_port(),
      tier.worker_exits ? "workers.spare: false, idle_seconds: 0" : "a warm spare worker",
      duration<double>(Clock::now() - started).count());

  HttpsTarget target;
  target.port = platform.control_port();
  target.ca_file = platform.pki().ca_file();
  target.authorization = "Key " + platform.admin_token();
  std::map<std::string, Figures> figures;
  for (int round = 0; round < kRounds && failures < 3; ++round) {
    for (const char* model : kModels) {
      // At zero, every model, and no worker left (or, when kept, none holding a model).
      const bool at_zero = eventually([&] {
        for (const char* any : kModels) {
          if (deployment_state(platform, deployment_of(any)) != "scaled_to_zero") return false;
        }
        return tier.worker_exits ? no_worker(platform) : nothing_loaded(platform);
      });
      if (!at_zero) {
        std::string states;
        for (const char* any : kModels) {
          states +=
              deployment_of(any) + " " + deployment_state(platform, deployment_of(any)) + ", ";
        }
        const size_t workers =
            outpost::testing::child_pids(platform.agent(kAgent).pid(), "outpost-worker").size();
        std::fprintf(stderr,
                     "not back to zero after 90 s: %s%zu worker process(es) left; the agent's "
                     "log:\n%s\n",
                     states.c_str(), workers, tail(platform.agent(kAgent).log(), 4000).c_str());
        return std::nullopt;
      }
      auto client = KeepAliveHttps::connect(target);
      if (!client.ok()) {
        std::fprintf(stderr, "%s\n", client.error().to_string().c_str());
        return std::nullopt;
      }
      const std::string body = predict_body(model);
      const double sent_wall_ms = wall_ms_now();
      const Call cold = timed_predict(**client, model, body);
      const Call warm = timed_predict(**client, model, body);
      if (!cold.ok || !warm.ok) {
        std::fprintf(stderr, "round %d, %s: %s\ncontrol log:\n%s\nagent log:\n%s\n", round + 1,
                     model, (cold.ok ? warm.error : cold.error).c_str(),
                     tail(platform.control().log(), 3000).c_str(),
                     tail(platform.agent(kAgent).log(), 3000).c_str());
        ++failures;
        continue;
      }
      const ColdStartLogs logs = read_cold_start(platform, model, sent_wall_ms);
      if (!logs.load_warmup_ms) {
        std::fprintf(stderr,
                     "round %d, %s: no worker.loaded line after the call; worker logs:\n%s\n",
                     round + 1, model, tail(worker_logs(platform), 3000).c_str());
        ++failures;
        continue;
      }
      figures[model].add(cold, warm, logs);
      std::string steps;
      for (const Step& step : kSteps) {
        const auto it = logs.steps_ms.find(step.name);
        if (it != logs.steps_ms.end()) {
          steps += std::string(steps.empty() ? "" : ", ") + step.name + " " +
                   std::to_string(static_cast<int>(it->second));
        }
      }
      std::printf(
          "  round %d, %-10s cold %.0f ms = load+warm-up %.0f ms + %.0f ms; warm %.1f ms\n"
          "                        at ms from send: %s\n",
          round + 1, model, cold.ms, *logs.load_warmup_ms, cold.ms - *logs.load_warmup_ms, warm.ms,
          steps.c_str());
    }
  }
  for (const char* model : kModels) {
    const json figure = figures[model].to_json();
    std::printf(
        "%s, %s: cold %.0f ms = load+warm-up %.0f ms + %.0f ms (aim: at most %.0f ms); of that, "
        "the worker process start %.0f ms, then %.0f ms until the agent saw it ready (medians)\n",
        tier.name, model, figure["coldstart_ms"].get<double>(),
        figure["load_warmup_ms"].get<double>(), figure["overhead_ms"].get<double>(), kAimOverheadMs,
        figure["worker_start_ms"].get<double>(), figure["worker_ready_seen_ms"].get<double>());
  }
  return figures;
}

json tier_json(std::map<std::string, Figures>& figures) {
  json out = figures["text"].to_json();
  out["model"] = "text";
  for (const char* model : kModels) {
    if (std::string_view(model) != "text") out[model] = figures[model].to_json();
  }
  return out;
}

}  // namespace

int main() {
  const auto started = Clock::now();
  std::printf("%d rounds of a cold and a warm call per model (%s, %s), per tier\n", kRounds,
              kModels[0], kModels[1]);
  const Tier tiers[] = {{"warm_spare", "  idle_seconds: 0\n", false},
                        {"worker_exited", "  idle_seconds: 0\n  spare: false\n", true}};
  int failures = 0;
  std::map<std::string, json> results;
  for (const Tier& tier : tiers) {
    auto figures = run_tier(tier, failures);
    if (!figures) return 1;
    results[tier.name] = tier_json(*figures);
  }
  // The top-level keys are the default's (a warm spare); the full cold start's, process start
  // included, are under "worker_exited".
  json out = results["warm_spare"];
  out["worker_exited"] = results["worker_exited"];
  out["aim_overhead_ms"] = kAimOverheadMs;
  out["failed_rounds"] = failures;
  out["seconds"] = duration<double>(Clock::now() - started).count();
  std::printf("%s\n", out.dump().c_str());
  return failures == 0 ? 0 : 1;
}
