#include "bench/runtime/worker_load.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

namespace outpost::bench {

using nlohmann::json;
using protocol::CallHandlers;
using protocol::WireValue;
using protocol::WorkerClient;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;

Result<StartedWorker> start_worker(const protocol::WorkerProcess::Options& options) {
  StartedWorker worker;
  auto process = protocol::WorkerProcess::spawn(options);
  if (!process.ok()) return process.error();
  worker.process = std::move(process).value();
  WorkerClient::Options client_options;
  client_options.endpoint = options.spec.endpoint;
  auto client = WorkerClient::connect(client_options);
  if (!client.ok()) return client.error();
  worker.client = std::move(client).value();
  auto ready = worker.client->wait_ready(std::chrono::minutes(5));
  if (!ready.ok()) {
    std::ifstream log(options.log_file);
    return Error(ready.error().code(), "worker not ready: " + ready.error().message() + "\n" +
                                           std::string(std::istreambuf_iterator<char>(log), {}));
  }
  return worker;
}

namespace {

double seconds_since(Clock::time_point start) {
  return duration<double>(Clock::now() - start).count();
}

}  // namespace

WireValue random_tensor_input(const std::vector<int64_t>& shape, uint32_t seed) {
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
                  int concurrency, double seconds, const std::string& method,
                  double warm_up_seconds) {
  std::mutex mutex;
  std::condition_variable done_changed;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> completed{0};
  std::atomic<int64_t> failed{0};
  int outstanding = 0;
  std::function<void()> issue = [&] {
    client.unary(model, method, input,
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
  std::this_thread::sleep_for(duration<double>(warm_up_seconds));
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

std::vector<double> worker_latencies_us(WorkerClient& client, const std::string& model,
                                        const WireValue& input, int calls,
                                        const std::string& method) {
  std::vector<double> micros;
  micros.reserve(static_cast<size_t>(std::max(calls, 0)));
  for (int i = 0; i < calls; ++i) {
    const auto start = Clock::now();
    auto result = client.unary(model, method, input).get();
    micros.push_back(duration<double, std::micro>(Clock::now() - start).count());
    if (!result.ok()) std::fprintf(stderr, "call failed: %s\n", result.error().to_string().c_str());
  }
  return micros;
}

double quantile(std::vector<double>& values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<size_t>(std::lround(q * static_cast<double>(values.size() - 1)));
  return values[std::min(index, values.size() - 1)];
}

}  // namespace outpost::bench
