// scripts/bench llm: the worker's decoder runtime (docs/models.md, "Decoder models") on a
// Llama-architecture model with random weights (scripts/bench exports it once into
// build/models/llama_bench with scripts/export-decoder), against a direct loop of the same
// exported functions in this process, with the same threads and a cache of the same geometry.
//
//   tokens/s   N sequences of the same 64-token prompt, 64 tokens each (greedy), all started at
//              once: every token over the wall time from the first start to the last end, at
//              N = 1, 8, 32. Direct: prefill of each, then decode calls for all N together.
//   TTFT       the time from a new call to its first token, against one prefill (and pick)
//              alone, direct: with 8 sequences kept running (each one that ends is replaced at
//              once, so arrivals follow step ends), and with arrivals at random times at half
//              the closed loop's rate of new sequences.
//   copies     what the runtime copies per decode step, by construction: the token, position
//              and slot of each sequence (3 int64); the cache is written in place by the model.
//              A state-concatenating step contract would copy each sequence's whole cache.
//
// Rounds alternate direct and worker; the figures are medians over rounds. The last line is
// one JSON object.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/runtime/direct_libtorch.h"
#include "bench/runtime/worker_load.h"
#include "protocol/model_config.h"
#include "protocol/worker_client.h"
#include "protocol/worker_spec.h"
#include "tests/support/test_pki.h"

namespace {

using nlohmann::json;
using outpost::bench::DecoderGeometry;
using outpost::bench::DirectDecoder;
using outpost::bench::quantile;
using outpost::protocol::CallHandlers;
using outpost::protocol::ModelSpec;
using outpost::protocol::WireValue;
using outpost::protocol::WorkerClient;
using outpost::protocol::WorkerProcess;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;

constexpr int64_t kPromptTokens = 64;
constexpr int64_t kTokens = 64;
constexpr int kRounds = 5;
constexpr int kTtftCalls = 80;
constexpr int64_t kTtftConcurrency = 8;
// Lengths of the kept-running sequences, in turn: they end at different steps, so new ones
// arrive one by one, not in waves.
constexpr int64_t kTtftTokens[] = {9, 16, 12, 21, 7, 18, 14, 11};

constexpr const char* kModel = "llama_bench";

std::string model_dir() { return std::string(OUTPOST_MODELS_DIR) + "/" + kModel; }

std::vector<int64_t> prompt() {
  std::vector<int64_t> tokens;
  for (int64_t i = 0; i < kPromptTokens; ++i) tokens.push_back((i * 37 + 11) % 256);
  return tokens;
}

double median(std::vector<double> values) { return quantile(values, 0.5); }

// N calls at once through the worker; tokens per second from the first start to the last end.
double worker_tokens_per_s(WorkerClient& client, int64_t n) {
  std::mutex mutex;
  std::condition_variable finished;
  int64_t done = 0;
  int64_t tokens = 0;
  const auto start = Clock::now();
  for (int64_t i = 0; i < n; ++i) {
    WireValue inputs;
    inputs.value = json{{"prompt_tokens", prompt()}, {"max_tokens", kTokens}};
    client.generate(kModel, "generate", std::move(inputs),
                    CallHandlers{[&](int64_t, const WireValue& chunk) {
                                   std::lock_guard lock(mutex);
                                   tokens +=
                                       static_cast<int64_t>(chunk.value.at("token_ids").size());
                                 },
                                 [&](const outpost::Status& status, std::string_view) {
                                   if (!status.ok()) {
                                     std::fprintf(stderr, "generate failed: %s\n",
                                                  status.error().to_string().c_str());
                                   }
                                   std::lock_guard lock(mutex);
                                   ++done;
                                   finished.notify_all();
                                 }});
  }
  std::unique_lock lock(mutex);
  finished.wait(lock, [&] { return done == n; });
  const double seconds = duration<double>(Clock::now() - start).count();
  if (tokens != n * kTokens) {
    std::fprintf(stderr, "expected %lld tokens, got %lld\n", static_cast<long long>(n) * kTokens,
                 static_cast<long long>(tokens));
  }
  return static_cast<double>(tokens) / seconds;
}

// What new sequences saw while others ran.
struct TtftFigures {
  std::vector<double> ttft_us;    // from the call to its first token, each (warm-up dropped)
  double sequence_seconds = 0;    // a sequence's mean time from call to end
  double running_at_arrival = 0;  // mean sequences already running when one arrived
};

// New sequences arriving while others run. rate_per_s 0: kTtftConcurrency kept running (each
// one that ends is replaced at once: a closed loop, whose arrivals follow step ends); else
// arrivals at exponential intervals of that mean rate (an open loop, arrivals at random times).
TtftFigures worker_ttft(WorkerClient& client, double rate_per_s) {
  std::mutex mutex;
  std::condition_variable changed;
  TtftFigures out;
  double total_seconds = 0;
  int64_t running_sum = 0;
  int64_t running = 0;
  int started = 0;
  int ended = 0;
  const auto start_one = [&] {
    // Under the mutex.
    running_sum += running;
    ++running;
    ++started;
    const auto begun = Clock::now();
    auto first = std::make_shared<bool>(true);
    WireValue inputs;
    inputs.value = json{{"prompt_tokens", prompt()},
                        {"max_tokens", kTtftTokens[static_cast<size_t>(started) % 8]}};
    client.generate(
        kModel, "generate", std::move(inputs),
        CallHandlers{[&, begun, first](int64_t, const WireValue&) {
                       const auto now = Clock::now();
                       std::lock_guard lock(mutex);
                       if (*first) {
                         out.ttft_us.push_back(duration<double, std::micro>(now - begun).count());
                         *first = false;
                       }
                     },
                     [&, begun](const outpost::Status&, std::string_view) {
                       std::lock_guard lock(mutex);
                       total_seconds += duration<double>(Clock::now() - begun).count();
                       --running;
                       ++ended;
                       changed.notify_all();
                     }});
  };
  const int calls = kTtftCalls + static_cast<int>(kTtftConcurrency);
  std::unique_lock lock(mutex);
  if (rate_per_s <= 0) {
    while (started < calls) {
      changed.wait(lock, [&] { return running < kTtftConcurrency; });
      start_one();
    }
  } else {
    std::mt19937_64 random(7);
    std::exponential_distribution<double> gap(rate_per_s);
    auto next = Clock::now();
    while (started < calls) {
      lock.unlock();
      std::this_thread::sleep_until(next);
      lock.lock();
      start_one();
      next += std::chrono::duration_cast<Clock::duration>(duration<double>(gap(random)));
    }
  }
  changed.wait(lock, [&] { return running == 0; });
  // The first kTtftConcurrency arrived before anything ran: drop them.
  out.ttft_us.erase(out.ttft_us.begin(), out.ttft_us.begin() + kTtftConcurrency);
  out.sequence_seconds = total_seconds / ended;
  out.running_at_arrival = static_cast<double>(running_sum) / started;
  return out;
}

}  // namespace

int main() {
  std::ifstream file(model_dir() + "/config.yaml");
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  auto config = outpost::protocol::parse_model_config(text);
  if (!config.ok() || config->methods.count("generate") == 0 ||
      !config->methods.at("generate").decoder) {
    std::fprintf(stderr, "no decoder package at %s (scripts/bench llm exports it)\n",
                 model_dir().c_str());
    return 1;
  }
  const auto& decoder = *config->methods.at("generate").decoder;
  const DecoderGeometry geometry{decoder.layers,      decoder.kv_heads, decoder.head_dim,
                                 decoder.max_context, decoder.slots,    decoder.prefill_chunk};
  const int threads = outpost::bench::bench_threads();
  outpost::bench::set_torch_threads(threads);
  auto direct = DirectDecoder::load(model_dir(), geometry);
  if (!direct.ok()) {
    std::fprintf(stderr, "%s\n", direct.error().to_string().c_str());
    return 1;
  }

  outpost::testing::TempDir dir;
  WorkerProcess::Options options;
  options.binary = OUTPOST_WORKER_BINARY;
  options.spec.worker_id = "bench";
  options.spec.endpoint = "ipc://" + dir.file("worker.sock");
  options.spec.intra_op_threads = threads;
  ModelSpec model;
  model.package = model_dir();
  options.spec.models.push_back(model);
  options.log_file = dir.file("worker.log");
  auto started = outpost::bench::start_worker(options);
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", started.error().to_string().c_str());
    return 1;
  }
  WorkerClient& client = *started->client;
  std::printf(
      "%s: %lld layers, %lld slots of %lld positions; %d intra-op threads each, %d rounds\n",
      kModel, static_cast<long long>(geometry.layers), static_cast<long long>(geometry.slots),
      static_cast<long long>(geometry.max_context), threads, kRounds);
  worker_tokens_per_s(client, 2);  // warm-up

  json out;
  out["threads"] = threads;
  out["prompt_tokens"] = kPromptTokens;
  out["tokens_per_sequence"] = kTokens;
  for (const int64_t n : {int64_t{1}, int64_t{8}, int64_t{32}}) {
    if (n > geometry.slots) continue;
    std::vector<double> direct_rates;
    std::vector<double> worker_rates;
    for (int round = 0; round < kRounds; ++round) {
      direct_rates.push_back((*direct)->tokens_per_s(n, prompt(), kTokens));
      worker_rates.push_back(worker_tokens_per_s(client, n));
    }
    const std::string key = "c" + std::to_string(n);
    out[key + "_direct_tokens_per_s"] = median(direct_rates);
    out[key + "_tokens_per_s"] = median(worker_rates);
    out[key + "_tokens_ratio"] = median(worker_rates) / median(direct_rates);
    std::printf("  %2lld sequences: worker %.0f tokens/s, direct %.0f tokens/s (%.2fx)\n",
                static_cast<long long>(n), median(worker_rates), median(direct_rates),
                median(worker_rates) / median(direct_rates));
  }

  auto direct_prefill = (*direct)->prefill_us(prompt(), kTtftCalls);
  const double prefill_p50 = quantile(direct_prefill, 0.5);
  out["direct_prefill_p50_us"] = prefill_p50;
  out["direct_prefill_p99_us"] = quantile(direct_prefill, 0.99);
  auto closed = worker_ttft(client, 0);
  out["c8_ttft_p50_us"] = quantile(closed.ttft_us, 0.5);
  out["c8_ttft_p99_us"] = quantile(closed.ttft_us, 0.99);
  out["c8_ttft_p50_over_prefill_us"] = quantile(closed.ttft_us, 0.5) - prefill_p50;
  std::printf("  TTFT, %lld kept running: p50 %.0f us, p99 %.0f us; direct prefill p50 %.0f us\n",
              static_cast<long long>(kTtftConcurrency), quantile(closed.ttft_us, 0.5),
              quantile(closed.ttft_us, 0.99), prefill_p50);
  // Arrivals at random times at half the closed loop's rate of new sequences (Little's law:
  // running / time). At the full rate random arrivals bunch and the queue grows without bound.
  const double rate = 0.5 * static_cast<double>(kTtftConcurrency) / closed.sequence_seconds;
  auto open = worker_ttft(client, rate);
  out["open_rate_per_s"] = rate;
  out["open_running_at_arrival"] = open.running_at_arrival;
  out["open_ttft_p50_us"] = quantile(open.ttft_us, 0.5);
  out["open_ttft_p99_us"] = quantile(open.ttft_us, 0.99);
  out["open_ttft_p50_over_prefill_us"] = quantile(open.ttft_us, 0.5) - prefill_p50;
  std::printf(
      "  TTFT, arrivals at random (%.0f/s, %.1f running on arrival): p50 %.0f us, p99 %.0f us\n",
      rate, open.running_at_arrival, quantile(open.ttft_us, 0.5), quantile(open.ttft_us, 0.99));

  // By construction (runtime/decoder.cc): per sequence and decode step, the runtime builds three
  // int64 inputs and reads the logits where the model left them; the cache is not copied.
  out["runtime_copy_bytes_per_sequence_step"] = 3 * 8;
  out["cache_bytes_per_sequence_at_full_context"] =
      2 * geometry.layers * geometry.max_context * geometry.kv_heads * geometry.head_dim * 4;
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
