// scripts/bench runtime: outpost-worker measured side by side with direct libtorch calls on the
// same model files, with the same intra-op threads, in one run on one machine. Each figure is
// the mean of 5 rounds that alternate between the two sides, so that a noisy machine (a shared
// VM's 2 cores vary by 2x from minute to minute) weighs on both alike. Prints one JSON object as
// its last line.
//
//  small    the example MLP classifier (256-512-512-10): unary requests per second through the
//           worker (WorkerClient over ipc://, dynamic batching up to 32) at concurrency 1 and 32,
//           against a direct forward at batch 1 and 32 (rows per second).
//  resnet   ResNet-18 (random weights) on 3x224x224 images: concurrency 1 and 8 against direct
//           batch 1 and 8 (images per second).
//  small_aoti, resnet_aoti  the same two networks as AOTInductor packages (classifier_aoti,
//           resnet18_aoti; scripts/bench makes the latter), through the worker against the
//           package called directly (`*_ratio`), and against the TorchScript file through the
//           worker (`*_vs_script`). resnet18_aoti's compiled guard starts at 2 rows: the worker
//           pads a single image to 2, while the direct call runs 1 unchecked (docs/models.md).
//  generate the character-level generator: time to first chunk and chunks per second of one
//           call, against a direct loop of generate_init and generate_step.
//
// Each part's concurrency-1 figure is also set against the transport floor (`*_floor_rps`,
// `*_c1_vs_floor`): bare ZeroMQ round trips of the same size to an echoing child process over
// ipc:// (zmq_floor.h), in the same rounds. What the worker adds is the gap between the two.
//
// Threads: OUTPOST_BENCH_THREADS (default: every CPU this process may use) for both sides.
// OUTPOST_BENCH_ONLY=small|resnet|small_aoti|resnet_aoti|generate runs one part (the JSON then
// lacks the others' keys).
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
#include "bench/runtime/worker_load.h"
#include "bench/runtime/zmq_floor.h"
#include "protocol/worker_client.h"
#include "tests/support/test_pki.h"

namespace {

using namespace outpost;
using namespace outpost::protocol;
using nlohmann::json;
using outpost::bench::DirectModel;
using outpost::bench::GenerateFigures;
using outpost::bench::random_tensor_input;
using outpost::bench::worker_rps;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;
using std::chrono::milliseconds;

constexpr double kSmallSeconds = 3.0;
constexpr double kResnetSeconds = 5.0;
// Each part's time is split into this many rounds, alternating direct and worker.
constexpr int kRounds = 5;

bool enabled(const char* part) {
  const char* only = std::getenv("OUTPOST_BENCH_ONLY");
  return only == nullptr || std::strcmp(only, part) == 0;
}

// One model measured through the worker against the same file called directly.
struct Part {
  const char* key;                 // the JSON keys' prefix and OUTPOST_BENCH_ONLY's name
  const char* model;               // the example package
  std::vector<int64_t> row_shape;  // one row's shape
  int64_t batch;                   // the direct batch and the worker's concurrency
  double seconds;
  const char* script_key;  // for an AOTInductor package: the TorchScript part of its network
};

const std::vector<Part>& parts() {
  static const std::vector<Part> all = {
      {"small", "classifier", {256}, 32, kSmallSeconds, nullptr},
      {"resnet", "resnet18", {3, 224, 224}, 8, kResnetSeconds, nullptr},
      {"small_aoti", "classifier_aoti", {256}, 32, kSmallSeconds, "small"},
      {"resnet_aoti", "resnet18_aoti", {3, 224, 224}, 8, kResnetSeconds, "resnet"},
  };
  return all;
}

std::string model_dir(const std::string& name) {
  return std::string(OUTPOST_MODELS_DIR) + "/" + name;
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
  // Before any thread starts: the echo for the transport floor is a fork of this process.
  outpost::testing::TempDir echo_dir;
  auto echo = outpost::bench::ZmqEcho::start("ipc://" + echo_dir.file("echo.sock"));
  if (!echo) {
    std::perror("fork");
    return 1;
  }
  const int threads = outpost::bench::bench_threads();
  outpost::bench::set_torch_threads(threads);

  json out;
  out["threads"] = threads;
  out["rounds"] = kRounds;
  std::vector<std::unique_ptr<DirectModel>> direct(parts().size());
  for (size_t i = 0; i < parts().size(); ++i) {
    if (!enabled(parts()[i].key)) continue;
    auto loaded = DirectModel::load(model_dir(parts()[i].model));
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", loaded.error().to_string().c_str());
      return 1;
    }
    direct[i] = std::move(*loaded);
  }
  // Generate, direct, before the worker starts: one call's time to its first chunk is measured
  // whole, not in rounds.
  if (enabled("generate")) {
    auto chargen = DirectModel::load(model_dir("chargen"));
    if (!chargen.ok()) {
      std::fprintf(stderr, "%s\n", chargen.error().to_string().c_str());
      return 1;
    }
    const auto direct_gen = (*chargen)->generate("hello", kGenerateTokens, kGenerateRuns);
    out["direct_ttft_us"] = direct_gen.ttft_us;
    out["direct_chunks_per_s"] = direct_gen.chunks_per_s;
    std::printf("direct generate: first chunk %.0f us, %.0f chunks/s\n", direct_gen.ttft_us,
                direct_gen.chunks_per_s);
  }

  // One outpost-worker process holding every model measured.
  outpost::testing::TempDir dir;
  WorkerProcess::Options options;
  options.binary = OUTPOST_WORKER_BINARY;
  options.spec.worker_id = "bench";
  options.spec.endpoint = "ipc://" + dir.file("worker.sock");
  options.spec.intra_op_threads = threads;
  for (const Part& part : parts()) {
    if (!enabled(part.key)) continue;
    ModelSpec model;
    model.package = model_dir(part.model);
    options.spec.models.push_back(model);
  }
  if (enabled("generate")) {
    ModelSpec model;
    model.package = model_dir("chargen");
    options.spec.models.push_back(model);
  }
  options.log_file = dir.file("worker.log");
  auto started = outpost::bench::start_worker(options);
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", started.error().to_string().c_str());
    return 1;
  }
  auto& process = started->process;
  auto& client = started->client;
  std::printf("outpost-worker (pid %d) and direct libtorch, %d intra-op threads each, %d rounds\n",
              process->pid(), threads, kRounds);
  const auto ratio = [&](const std::string& a, const std::string& b) {
    return out[a].get<double>() / std::max(out[b].get<double>(), 1e-9);
  };
  const auto batch_size = [&](const std::string& model) {
    auto health = client->health().get();
    if (!health.ok()) return 0.0;
    for (const auto& item : health->at("models")) {
      if (item.at("name") != model) continue;
      const auto& stats = item.at("stats");
      return stats.at("batched_rows").get<double>() /
             std::max(stats.at("executions").get<double>(), 1.0);
    }
    return 0.0;
  };
  // Why a model is not ready in the worker (its load failed), or empty.
  const auto not_ready = [&](const std::string& model) -> std::string {
    auto health = client->health().get();
    if (!health.ok()) return health.error().to_string();
    for (const auto& item : health->at("models")) {
      if (item.at("name") != model) continue;
      if (item.value("state", "") == "ready") return "";
      return item.value("state", "") + ": " + item.value("message", "");
    }
    return "not loaded";
  };
  for (size_t i = 0; i < parts().size(); ++i) {
    const Part& part = parts()[i];
    if (!enabled(part.key)) continue;
    const std::string key = part.key;
    const std::string batch = std::to_string(part.batch);
    if (const std::string why = not_ready(part.model); !why.empty()) {
      // Measured as missing, not as zero: the JSON says why.
      std::printf("  %-12s not measured in the worker: %s\n", part.key, why.c_str());
      out[key + "_error"] = why;
      continue;
    }
    std::vector<int64_t> shape{1};
    shape.insert(shape.end(), part.row_shape.begin(), part.row_shape.end());
    const WireValue input = random_tensor_input(shape, 2);
    // Each side's figure is its mean over rounds that alternate with the other side's, so that
    // both see the same moments of a noisy machine.
    const double round_seconds = part.seconds / kRounds;
    for (const int64_t rows : {int64_t{1}, part.batch}) {
      std::vector<int64_t> direct_shape{rows};
      direct_shape.insert(direct_shape.end(), part.row_shape.begin(), part.row_shape.end());
      double direct_sum = 0;
      double worker_sum = 0;
      double floor_sum = 0;
      for (int round = 0; round < kRounds; ++round) {
        direct_sum += direct[i]->rows_per_second("predict", direct_shape, round_seconds);
        worker_sum += worker_rps(*client, part.model, input, static_cast<int>(rows), round_seconds,
                                 "predict", round == 0 ? 0.5 : 0.1);
        if (rows == 1) {
          // The request's size: its tensor bytes and a header.
          floor_sum +=
              echo->round_trips_per_second(input.parts.front().size() + 200, round_seconds);
        }
      }
      const std::string n = std::to_string(rows);
      out[key + "_direct_b" + n + "_rps"] = direct_sum / kRounds;
      out[key + "_c" + n + "_rps"] = worker_sum / kRounds;
      if (rows == 1) out[key + "_floor_rps"] = floor_sum / kRounds;
    }
    out[key + "_mean_batch"] = batch_size(part.model);
    std::printf(
        "  %-12s direct b1 %.1f, b%s %.1f rows/s; worker c1 %.1f, c%s %.1f req/s "
        "(mean batch %.1f)\n",
        part.key, out[key + "_direct_b1_rps"].get<double>(), batch.c_str(),
        out[key + "_direct_b" + batch + "_rps"].get<double>(), out[key + "_c1_rps"].get<double>(),
        batch.c_str(), out[key + "_c" + batch + "_rps"].get<double>(),
        out[key + "_mean_batch"].get<double>());
    out[key + "_c1_ratio"] = ratio(key + "_c1_rps", key + "_direct_b1_rps");
    out[key + "_c1_vs_floor"] = ratio(key + "_c1_rps", key + "_floor_rps");
    std::printf("  %-12s transport floor (bare ZeroMQ round trips, same size) %.1f/s\n", part.key,
                out[key + "_floor_rps"].get<double>());
    out[key + "_c" + batch + "_ratio"] =
        ratio(key + "_c" + batch + "_rps", key + "_direct_b" + batch + "_rps");
    out[key + "_batching_gain_ratio"] =
        ratio(key + "_c" + batch + "_rps", key + "_c1_rps") /
        ratio(key + "_direct_b" + batch + "_rps", key + "_direct_b1_rps");
    if (part.script_key != nullptr && out.contains(std::string(part.script_key) + "_c1_rps")) {
      const std::string script = part.script_key;
      out[key + "_c1_vs_script"] = ratio(key + "_c1_rps", script + "_c1_rps");
      out[key + "_c" + batch + "_vs_script"] =
          ratio(key + "_c" + batch + "_rps", script + "_c" + batch + "_rps");
    }
  }
  if (enabled("generate")) {
    const auto worker_gen = worker_generate(*client);
    out["ttft_us"] = worker_gen.ttft_us;
    out["gen_chunks_per_s"] = worker_gen.chunks_per_s;
    std::printf("  generate: first chunk %.0f us, %.0f chunks/s\n", worker_gen.ttft_us,
                worker_gen.chunks_per_s);
    out["ttft_over_direct_us"] = out["ttft_us"].get<double>() - out["direct_ttft_us"].get<double>();
    out["gen_chunks_ratio"] = ratio("gen_chunks_per_s", "direct_chunks_per_s");
  }
  client.reset();
  process.reset();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
