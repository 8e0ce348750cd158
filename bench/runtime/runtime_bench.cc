// scripts/bench runtime: outpost-worker measured side by side with direct libtorch calls on the
// same TorchScript files, with the same intra-op threads, in one run on one machine. Prints one
// JSON object as its last line.
//
//  small    the example MLP classifier (256-512-512-10): unary requests per second through the
//           worker (WorkerClient over ipc://, dynamic batching up to 32) at concurrency 1 and 32,
//           against a direct forward at batch 1 and 32 (rows per second).
//  resnet   ResNet-18 (random weights) on 3x224x224 images: concurrency 1 and 8 against direct
//           batch 1 and 8 (images per second).
//  generate the character-level generator: time to first chunk and chunks per second of one
//           call, against a direct loop of generate_init and generate_step.
//
// Threads: OUTPOST_BENCH_THREADS (default: every CPU this process may use) for both sides.
// OUTPOST_BENCH_ONLY=small|resnet|generate runs one part (the JSON then lacks the others' keys).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/runtime/direct_libtorch.h"
#include "runtime/worker_client.h"
#include "tests/support/test_pki.h"

namespace {

using namespace outpost;
using namespace outpost::runtime;
using nlohmann::json;
using outpost::bench::DirectModel;
using outpost::bench::GenerateFigures;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;
using std::chrono::milliseconds;

constexpr double kSmallSeconds = 3.0;
constexpr double kResnetSeconds = 5.0;

bool enabled(const char* part) {
  const char* only = std::getenv("OUTPOST_BENCH_ONLY");
  return only == nullptr || std::strcmp(only, part) == 0;
}

std::string model_dir(const std::string& name) {
  return std::string(OUTPOST_MODELS_DIR) + "/" + name;
}

double seconds_since(Clock::time_point start) {
  return duration<double>(Clock::now() - start).count();
}

WireValue tensor_input(const std::vector<int64_t>& shape, uint32_t seed) {
  int64_t count = 1;
  for (const int64_t dim : shape) count *= dim;
  std::vector<float> data(static_cast<size_t>(count));
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal;
  for (float& x : data) x = normal(generator);
  WireValue value;
  value.parts.emplace_back(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  value.value = json{{"x", {{"dtype", "float32"}, {"shape", shape}, {"part", 0}}}};
  return value;
}

// Closed loop through the worker: `concurrency` calls outstanding; requests per second.
double worker_rps(WorkerClient& client, const std::string& model, const WireValue& input,
                  int concurrency, double seconds) {
  std::mutex mutex;
  std::condition_variable done_changed;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> completed{0};
  std::atomic<int64_t> failed{0};
  int outstanding = 0;
  std::function<void()> issue = [&] {
    client.unary(model, "predict", input,
                 CallHandlers{nullptr, [&](const Status& status, std::string_view) {
                                if (!status.ok()) {
                                  if (failed++ == 0) {
                                    std::fprintf(stderr, "call failed: %s\n",
                                                 status.error().to_string().c_str());
                                  }
                                }
                                ++completed;
                                if (!stop) {
                                  issue();
                                  return;
                                }
                                std::lock_guard lock(mutex);
                                --outstanding;
                                done_changed.notify_all();
                              }});
  };
  // Warm up, then count.
  {
    std::lock_guard lock(mutex);
    outstanding = concurrency;
  }
  for (int i = 0; i < concurrency; ++i) issue();
  std::this_thread::sleep_for(milliseconds(500));
  const int64_t before = completed.load();
  const auto start = Clock::now();
  std::this_thread::sleep_for(duration<double>(seconds));
  const int64_t count = completed.load() - before;
  const double elapsed = seconds_since(start);
  stop = true;
  std::unique_lock lock(mutex);
  done_changed.wait(lock, [&] { return outstanding == 0; });
  if (failed > 0)
    std::fprintf(stderr, "%lld calls failed\n", static_cast<long long>(failed.load()));
  return static_cast<double>(count) / elapsed;
}

constexpr int64_t kGenerateTokens = 400;
constexpr int kGenerateRuns = 10;

GenerateFigures worker_generate(WorkerClient& client) {
  std::vector<double> ttft;
  double chunks = 0;
  double rest_seconds = 0;
  for (int run = -2; run < kGenerateRuns; ++run) {
    std::mutex mutex;
    std::condition_variable finished;
    bool done = false;
    int64_t emitted = 0;
    Clock::time_point first;
    Clock::time_point last;
    WireValue inputs;
    inputs.value = json{{"prompt", "hello"}, {"max_tokens", kGenerateTokens}};
    const auto start = Clock::now();
    client.generate("chargen", "generate", std::move(inputs),
                    CallHandlers{[&](int64_t, const WireValue&) {
                                   const auto now = Clock::now();
                                   if (emitted++ == 0) first = now;
                                   last = now;
                                 },
                                 [&](const Status& status, std::string_view) {
                                   if (!status.ok()) {
                                     std::fprintf(stderr, "generate failed: %s\n",
                                                  status.error().to_string().c_str());
                                   }
                                   std::lock_guard lock(mutex);
                                   done = true;
                                   finished.notify_all();
                                 }});
    std::unique_lock lock(mutex);
    finished.wait(lock, [&] { return done; });
    if (run < 0 || emitted < 2) continue;
    ttft.push_back(duration<double, std::micro>(first - start).count());
    chunks += static_cast<double>(emitted - 1);
    rest_seconds += duration<double>(last - first).count();
  }
  std::sort(ttft.begin(), ttft.end());
  return {ttft.empty() ? 0 : ttft[ttft.size() / 2], rest_seconds > 0 ? chunks / rest_seconds : 0};
}

}  // namespace

int main() {
  const int threads = outpost::bench::bench_threads();
  outpost::bench::set_torch_threads(threads);

  // Direct libtorch first, with nothing else running.
  std::printf("direct libtorch, %d intra-op threads\n", threads);
  std::unique_ptr<DirectModel> small;
  std::unique_ptr<DirectModel> resnet;
  std::unique_ptr<DirectModel> chargen;
  for (auto [name, model] : {std::pair{"classifier", &small}, std::pair{"resnet18", &resnet},
                             std::pair{"chargen", &chargen}}) {
    auto loaded = DirectModel::load(model_dir(name));
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", loaded.error().to_string().c_str());
      return 1;
    }
    *model = std::move(loaded).value();
  }
  json out;
  out["threads"] = threads;
  if (enabled("small")) {
    out["small_direct_b1_rps"] = small->rows_per_second("predict", {1, 256}, kSmallSeconds);
    out["small_direct_b32_rps"] = small->rows_per_second("predict", {32, 256}, kSmallSeconds);
    std::printf("  small  b1 %.0f rows/s, b32 %.0f rows/s\n",
                out["small_direct_b1_rps"].get<double>(),
                out["small_direct_b32_rps"].get<double>());
  }
  if (enabled("resnet")) {
    out["resnet_direct_b1_rps"] =
        resnet->rows_per_second("predict", {1, 3, 224, 224}, kResnetSeconds);
    out["resnet_direct_b8_rps"] =
        resnet->rows_per_second("predict", {8, 3, 224, 224}, kResnetSeconds);
    std::printf("  resnet b1 %.1f images/s, b8 %.1f images/s\n",
                out["resnet_direct_b1_rps"].get<double>(),
                out["resnet_direct_b8_rps"].get<double>());
  }
  if (enabled("generate")) {
    const auto direct_gen = chargen->generate("hello", kGenerateTokens, kGenerateRuns);
    out["direct_ttft_us"] = direct_gen.ttft_us;
    out["direct_chunks_per_s"] = direct_gen.chunks_per_s;
    std::printf("  generate: first chunk %.0f us, %.0f chunks/s\n", direct_gen.ttft_us,
                direct_gen.chunks_per_s);
  }
  small.reset();
  resnet.reset();
  chargen.reset();

  // The same through an outpost-worker process.
  outpost::testing::TempDir dir;
  WorkerProcess::Options options;
  options.binary = OUTPOST_WORKER_BINARY;
  options.spec.worker_id = "bench";
  options.spec.endpoint = "ipc://" + dir.file("worker.sock");
  options.spec.intra_op_threads = threads;
  for (const char* name : {"classifier", "resnet18", "chargen"}) {
    ModelSpec model;
    model.package = model_dir(name);
    options.spec.models.push_back(model);
  }
  options.log_file = dir.file("worker.log");
  auto process = WorkerProcess::spawn(options);
  if (!process.ok()) {
    std::fprintf(stderr, "%s\n", process.error().to_string().c_str());
    return 1;
  }
  WorkerClient::Options client_options;
  client_options.endpoint = options.spec.endpoint;
  auto client = WorkerClient::connect(client_options);
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.error().to_string().c_str());
    return 1;
  }
  auto ready = (*client)->wait_ready(std::chrono::minutes(5));
  if (!ready.ok()) {
    std::fprintf(stderr, "worker not ready: %s\n", ready.error().to_string().c_str());
    return 1;
  }
  std::printf("outpost-worker (pid %d), %d intra-op threads\n", (*process)->pid(), threads);
  const auto ratio = [&](const char* a, const char* b) {
    return out[a].get<double>() / std::max(out[b].get<double>(), 1e-9);
  };
  const auto batch_size = [&](const char* model) {
    auto health = (*client)->health().get();
    if (!health.ok()) return 0.0;
    for (const auto& item : health->at("models")) {
      if (item.at("name") != model) continue;
      const auto& stats = item.at("stats");
      return stats.at("batched_rows").get<double>() /
             std::max(stats.at("executions").get<double>(), 1.0);
    }
    return 0.0;
  };
  if (enabled("small")) {
    const WireValue small_input = tensor_input({1, 256}, 1);
    out["small_c1_rps"] = worker_rps(**client, "classifier", small_input, 1, kSmallSeconds);
    out["small_c32_rps"] = worker_rps(**client, "classifier", small_input, 32, kSmallSeconds);
    out["small_mean_batch"] = batch_size("classifier");
    std::printf("  small  c1 %.0f req/s, c32 %.0f req/s (mean batch over both %.1f)\n",
                out["small_c1_rps"].get<double>(), out["small_c32_rps"].get<double>(),
                out["small_mean_batch"].get<double>());
    out["small_c1_ratio"] = ratio("small_c1_rps", "small_direct_b1_rps");
    out["small_c32_ratio"] = ratio("small_c32_rps", "small_direct_b32_rps");
    out["small_batching_gain_ratio"] = ratio("small_c32_rps", "small_c1_rps") /
                                       ratio("small_direct_b32_rps", "small_direct_b1_rps");
  }
  if (enabled("resnet")) {
    const WireValue image = tensor_input({1, 3, 224, 224}, 2);
    out["resnet_c1_rps"] = worker_rps(**client, "resnet18", image, 1, kResnetSeconds);
    out["resnet_c8_rps"] = worker_rps(**client, "resnet18", image, 8, kResnetSeconds);
    std::printf("  resnet c1 %.1f req/s, c8 %.1f req/s\n", out["resnet_c1_rps"].get<double>(),
                out["resnet_c8_rps"].get<double>());
    out["resnet_c1_ratio"] = ratio("resnet_c1_rps", "resnet_direct_b1_rps");
    out["resnet_c8_ratio"] = ratio("resnet_c8_rps", "resnet_direct_b8_rps");
  }
  if (enabled("generate")) {
    const auto worker_gen = worker_generate(**client);
    out["ttft_us"] = worker_gen.ttft_us;
    out["gen_chunks_per_s"] = worker_gen.chunks_per_s;
    std::printf("  generate: first chunk %.0f us, %.0f chunks/s\n", worker_gen.ttft_us,
                worker_gen.chunks_per_s);
    out["ttft_over_direct_us"] = out["ttft_us"].get<double>() - out["direct_ttft_us"].get<double>();
    out["gen_chunks_ratio"] = ratio("gen_chunks_per_s", "direct_chunks_per_s");
  }
  client->reset();
  process->reset();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
