// scripts/bench e2e: predictions through the whole platform, measured side by side with direct
// libtorch calls on the same TorchScript files, with the same intra-op threads, in one run on one
// machine. Prints one JSON object as its last line.
//
// The platform is the end-to-end tests' (tests/e2e/platform.h): outpost-control with TLS from a
// CA made at run time, one outpostd enrolled with a join token, its outpost-worker, all on
// loopback, logging at info as an installation does. The example models classifier, resnet18 and
// chargen are uploaded with the CLI and deployed on one nodepool. Calls go as a user's would:
// HTTPS (verified against the run's CA) with a personal access token, over connections kept
// alive, to the control plane, which sends them through the agent's tunnel to the worker.
//
//  c1       the classifier MLP (256-512-512-10), one unary predict at a time on one connection:
//           p50 and p99 latency, against a direct batch-1 forward (overhead = the p50s' gap).
//  resnet   ResNet-18 (random weights) on one 3x224x224 image per call from 8 connections at
//           once (the worker batches them), against a direct batch-8 forward: images per second.
//           Twice: the image as base64 in a JSON body, and as raw bytes in a multipart/form-data
//           body (docs/api.md, "Raw bytes"; resnet_form).
//  ttft     chargen: time to the first chunk of a generate call, against a direct
//           generate_init and first generate_step.
//
// Each round measures every figure directly and then through the platform, back to back, so that
// drift on a shared machine hits both sides. Rates and times to first chunk are the medians of
// the rounds; latency percentiles are over all the rounds' calls together.
// Threads: OUTPOST_BENCH_THREADS (default: every CPU this process may use), for the direct calls
// and for the worker alike. On a machine busy with other work, OpenMP threads that spin while
// waiting for a descheduled peer make multi-threaded figures erratic on both sides (ResNet-18
// batch 8 on 2 threads ran 2.5 times slower than on 1 under a parallel build);
// OUTPOST_BENCH_THREADS=1 steadies them.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bench/e2e/keepalive_https.h"
#include "bench/runtime/direct_libtorch.h"
#include "common/base64.h"
#include "tests/e2e/platform.h"

namespace {

using namespace outpost;
using nlohmann::json;
using outpost::bench::DirectModel;
using outpost::bench::HttpsTarget;
using outpost::bench::KeepAliveHttps;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;

constexpr int kRounds = 3;
constexpr int kC1Calls = 400;  // per round and side
constexpr double kResnetSeconds = 4.0;
constexpr double kResnetWarmUpSeconds = 1.0;
constexpr int kResnetConnections = 8;
constexpr int kGenerateRuns = 15;  // per round and side
constexpr int64_t kGenerateTokens = 16;

constexpr const char* kModels[] = {"classifier", "resnet18", "chargen"};

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[static_cast<size_t>(p * static_cast<double>(values.size() - 1))];
}

double median(const std::vector<double>& values) { return percentile(values, 0.5); }

double micros_between(Clock::time_point from, Clock::time_point to) {
  return duration<double, std::micro>(to - from).count();
}

std::string predict_path(const std::string& model) {
  return "/v2/users/me/models/" + model + "/outputs";
}

json selector(const std::string& model) { return {{"deployment", {{"id", "dep-" + model}}}}; }

// A unary predict of `model` on one random float32 tensor `x` of `shape`.
// A request with one random float32 tensor "x": JSON with the bytes in base64, or (form) a
// multipart/form-data body with the bytes as they are.
struct RequestBody {
  std::string text;
  std::string content_type = "application/json";
};

RequestBody tensor_predict_body(const std::string& model, const std::vector<int64_t>& shape,
                                bool form = false) {
  int64_t count = 1;
  for (const int64_t dim : shape) count *= dim;
  std::vector<float> data(static_cast<size_t>(count));
  std::mt19937 generator(7);
  std::normal_distribution<float> normal;
  for (float& x : data) x = normal(generator);
  const std::string_view bytes(reinterpret_cast<const char*>(data.data()),
                               data.size() * sizeof(float));
  json body = {
      {"runner_selector", selector(model)},
      {"method", "predict"},
      {"inputs",
       {{"x", {{"dtype", "float32"}, {"shape", shape}, {"data_b64", base64_encode(bytes)}}}}}};
  if (!form) return {body.dump()};
  body["inputs"]["x"].erase("data_b64");
  body["inputs"]["x"]["part"] = "x";
  const std::string boundary = "outpost-bench-7c1d0b9e";
  if (bytes.find(boundary) != std::string_view::npos) std::abort();
  RequestBody out;
  out.content_type = "multipart/form-data; boundary=" + boundary;
  out.text = "--" + boundary + "\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n" +
             body.dump() + "\r\n--" + boundary +
             "\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n";
  out.text.append(bytes);
  out.text += "\r\n--" + boundary + "--\r\n";
  return out;
}

// Counts failed calls and tells about the first few.
class Failures {
 public:
  void add(const std::string& what) {
    if (count_++ < 3) std::fprintf(stderr, "call failed: %s\n", what.c_str());
  }
  int count() const { return count_.load(); }

 private:
  std::atomic<int> count_{0};
};

// One unary predict; true when the platform answered 200 with outputs.
bool predict(KeepAliveHttps& client, const std::string& path, const RequestBody& body,
             Failures& failures) {
  auto answer = client.post(path, body.text, body.content_type);
  if (!answer.ok()) {
    failures.add(answer.error().to_string());
    return false;
  }
  if (answer->status != 200 || answer->body.find("\"outputs\"") == std::string::npos) {
    failures.add("HTTP " + std::to_string(answer->status) + ": " + answer->body.substr(0, 300));
    return false;
  }
  return true;
}

std::vector<double> e2e_latencies_us(KeepAliveHttps& client, const std::string& path,
                                     const RequestBody& body, int calls, Failures& failures) {
  std::vector<double> micros;
  micros.reserve(static_cast<size_t>(calls));
  for (int i = 0; i < calls; ++i) {
    const auto start = Clock::now();
    if (predict(client, path, body, failures))
      micros.push_back(micros_between(start, Clock::now()));
  }
  return micros;
}

// Closed loop from every client at once, each on its own thread and connection: completed calls
// per second over `seconds`, after a warm-up.
double e2e_rps(const std::vector<std::unique_ptr<KeepAliveHttps>>& clients, const std::string& path,
               const RequestBody& body, double seconds, Failures& failures) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<Clock::time_point>> completions(clients.size());
  std::vector<std::thread> threads;
  threads.reserve(clients.size());
  for (size_t i = 0; i < clients.size(); ++i) {
    threads.emplace_back([&, i] {
      while (!stop.load()) {
        if (predict(*clients[i], path, body, failures)) completions[i].push_back(Clock::now());
      }
    });
  }
  const auto begin = Clock::now() + duration<double>(kResnetWarmUpSeconds);
  const auto end = begin + duration<double>(seconds);
  std::this_thread::sleep_until(end);
  stop = true;
  for (auto& thread : threads) thread.join();
  int64_t count = 0;
  for (const auto& times : completions) {
    count += std::count_if(times.begin(), times.end(),
                           [&](Clock::time_point t) { return t >= begin && t < end; });
  }
  return static_cast<double>(count) / seconds;
}

// Median time to the first chunk of `runs` generate calls, after two warm-up calls.
double e2e_ttft_us(KeepAliveHttps& client, const std::string& body, int runs, Failures& failures) {
  std::vector<double> ttft;
  for (int run = -2; run < runs; ++run) {
    std::string text;
    Clock::time_point first;
    const auto start = Clock::now();
    auto answer = client.post_streaming(predict_path("chargen") + "/generate", body,
                                        "application/x-ndjson", [&](std::string_view data) {
                                          if (text.empty() && !data.empty()) first = Clock::now();
                                          text.append(data);
                                        });
    if (!answer.ok()) {
      failures.add(answer.error().to_string());
      continue;
    }
    // JSON lines: a chunk per line, then the final status.
    const bool ok = answer->status == 200 && text.find("{\"chunk\"") == 0 &&
                    text.find("\"status\":{\"code\":\"ok\"") != std::string::npos;
    if (!ok) {
      failures.add("generate: HTTP " + std::to_string(answer->status) + ": " +
                   (answer->body + text).substr(0, 300));
      continue;
    }
    if (run >= 0) ttft.push_back(micros_between(start, first));
  }
  return median(ttft);
}

bool platform_failed() { return ::testing::UnitTest::GetInstance()->ad_hoc_test_result().Failed(); }

}  // namespace

int main() {
  const auto started = Clock::now();
  const int threads = outpost::bench::bench_threads();
  outpost::bench::set_torch_threads(threads);
  std::map<std::string, std::unique_ptr<DirectModel>> direct;
  for (const char* name : kModels) {
    auto loaded = DirectModel::load(std::string(OUTPOST_MODELS_DIR) + "/" + name);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", loaded.error().to_string().c_str());
      return 1;
    }
    direct[name] = std::move(loaded).value();
  }

  // The platform, as the end-to-end tests start it, with one worker of `threads` threads.
  outpost::testing::PlatformOptions platform_options;
  platform_options.log_level = "info";
  outpost::testing::Platform platform(platform_options);
  platform.create_pool("cc-e2e", "np-e2e");
  outpost::testing::AgentOptions agent_options;
  agent_options.worker_threads = threads;
  platform.start_agent("cc-e2e", "np-e2e", agent_options);
  for (const char* name : kModels) {
    platform.upload_model(name);
    platform.deploy("np-e2e", std::string("dep-") + name, name);
  }
  for (const char* name : kModels) {
    if (!platform.wait_live(std::string("dep-") + name) || platform_failed()) {
      std::fprintf(stderr, "dep-%s did not go live; the agent's log:\n%s\n", name,
                   platform.agent("node-a").log().c_str());
      return 1;
    }
  }
  std::printf(
      "platform on loopback, port %u: control, outpostd, one worker of %d intra-op "
      "threads; up after %.1f s\n",
      platform.control_port(), threads, duration<double>(Clock::now() - started).count());

  HttpsTarget target;
  target.port = platform.control_port();
  target.ca_file = platform.pki().ca_file();
  target.authorization = "Key " + platform.admin_token();
  std::vector<std::unique_ptr<KeepAliveHttps>> clients;
  for (int i = 0; i < kResnetConnections; ++i) {
    auto client = KeepAliveHttps::connect(target);
    if (!client.ok()) {
      std::fprintf(stderr, "%s\n", client.error().to_string().c_str());
      return 1;
    }
    clients.push_back(std::move(client).value());
  }
  KeepAliveHttps& first_client = *clients.front();
  const RequestBody small_body = tensor_predict_body("classifier", {1, 256});
  const RequestBody image_body = tensor_predict_body("resnet18", {1, 3, 224, 224});
  const RequestBody image_form = tensor_predict_body("resnet18", {1, 3, 224, 224}, true);
  const std::string generate_body =
      json{{"runner_selector", selector("chargen")},
           {"inputs", {{"prompt", "hello"}, {"max_tokens", kGenerateTokens}}}}
          .dump();

  // Warm-up: the first calls through each path (the worker's first executions are slower), the
  // ResNet-18 ones from every connection at once, before the server's deadline for a fresh
  // connection's first request (10 s) closes an idle one.
  Failures failures;
  e2e_rps(clients, predict_path("resnet18"), image_body, 0.5, failures);
  e2e_rps(clients, predict_path("resnet18"), image_form, 0.5, failures);
  e2e_latencies_us(first_client, predict_path("classifier"), small_body, 50, failures);
  e2e_ttft_us(first_client, generate_body, 1, failures);
  if (failures.count() > 0) return 1;

  std::printf(
      "%d rounds; each: %d classifier calls per side, ResNet-18 for %.0f s per side "
      "(after %.0f s of warm-up through the platform), %d generate calls of %lld tokens "
      "per side\n",
      kRounds, kC1Calls, kResnetSeconds, kResnetWarmUpSeconds, kGenerateRuns,
      static_cast<long long>(kGenerateTokens));
  std::vector<double> direct_c1;
  std::vector<double> e2e_c1;
  std::map<std::string, std::vector<double>> rounds;
  for (int round = 0; round < kRounds; ++round) {
    auto direct_calls = direct["classifier"]->call_latencies_us("predict", {1, 256}, kC1Calls);
    auto e2e_calls =
        e2e_latencies_us(first_client, predict_path("classifier"), small_body, kC1Calls, failures);
    direct_c1.insert(direct_c1.end(), direct_calls.begin(), direct_calls.end());
    e2e_c1.insert(e2e_c1.end(), e2e_calls.begin(), e2e_calls.end());

    rounds["direct_resnet_b8_rps"].push_back(
        direct["resnet18"]->rows_per_second("predict", {8, 3, 224, 224}, kResnetSeconds));
    rounds["e2e_resnet_c8_rps"].push_back(
        e2e_rps(clients, predict_path("resnet18"), image_body, kResnetSeconds, failures));
    rounds["e2e_resnet_form_c8_rps"].push_back(
        e2e_rps(clients, predict_path("resnet18"), image_form, kResnetSeconds, failures));

    rounds["direct_ttft_us"].push_back(
        direct["chargen"]->generate("hello", kGenerateTokens, kGenerateRuns).ttft_us);
    rounds["e2e_ttft_us"].push_back(
        e2e_ttft_us(first_client, generate_body, kGenerateRuns, failures));
    std::printf(
        "  round %d: c1 p50 %.0f us (direct %.0f us), resnet %.1f images/s (as a form %.1f; "
        "direct %.1f), first chunk %.0f us (direct %.0f us)\n",
        round + 1, median(e2e_calls), median(direct_calls), rounds["e2e_resnet_c8_rps"].back(),
        rounds["e2e_resnet_form_c8_rps"].back(), rounds["direct_resnet_b8_rps"].back(),
        rounds["e2e_ttft_us"].back(), rounds["direct_ttft_us"].back());
  }

  json out;
  out["threads"] = threads;
  out["rounds"] = kRounds;
  out["c1_calls"] = static_cast<int>(e2e_c1.size());
  out["resnet_seconds"] = kResnetSeconds * kRounds;
  out["resnet_connections"] = kResnetConnections;
  out["generate_runs"] = kGenerateRuns * kRounds;
  out["generate_tokens"] = kGenerateTokens;
  out["e2e_c1_p50_us"] = percentile(e2e_c1, 0.5);
  out["e2e_c1_p99_us"] = percentile(e2e_c1, 0.99);
  out["direct_c1_p50_us"] = percentile(direct_c1, 0.5);
  out["direct_c1_p99_us"] = percentile(direct_c1, 0.99);
  out["overhead_p50_us"] =
      out["e2e_c1_p50_us"].get<double>() - out["direct_c1_p50_us"].get<double>();
  for (const auto& [key, values] : rounds) out[key] = median(values);
  out["e2e_resnet_c8_ratio"] = out["e2e_resnet_c8_rps"].get<double>() /
                               std::max(out["direct_resnet_b8_rps"].get<double>(), 1e-9);
  out["e2e_resnet_form_c8_ratio"] = out["e2e_resnet_form_c8_rps"].get<double>() /
                                    std::max(out["direct_resnet_b8_rps"].get<double>(), 1e-9);
  out["ttft_overhead_us"] = out["e2e_ttft_us"].get<double>() - out["direct_ttft_us"].get<double>();
  int connects = 0;
  for (const auto& client : clients) connects += client->connects();
  out["connects"] = connects;  // TCP+TLS handshakes; one per connection when keep-alive held
  out["failed_calls"] = failures.count();
  out["seconds"] = duration<double>(Clock::now() - started).count();
  clients.clear();
  std::printf("%s\n", out.dump().c_str());
  return failures.count() == 0 ? 0 : 1;
}
