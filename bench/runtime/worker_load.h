// Load through an outpost-worker for the benchmarks (bench_runtime, bench_gpu): random tensor
// inputs, a closed loop of calls at a concurrency, and per-call latencies. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "protocol/worker_client.h"

namespace outpost::bench {

// A benchmark's outpost-worker and a client connected to it.
struct StartedWorker {
  std::unique_ptr<protocol::WorkerProcess> process;
  std::unique_ptr<protocol::WorkerClient> client;
};

// Spawns a worker with `options`, connects to it and waits until it has loaded its models. The
// error says why not, with the worker's log (options.log_file).
Result<StartedWorker> start_worker(const protocol::WorkerProcess::Options& options);

// {"x": float32 tensor of `shape`} with normal random values from `seed`, its bytes in a part.
protocol::WireValue random_tensor_input(const std::vector<int64_t>& shape, uint32_t seed);

// Closed loop through the worker: `concurrency` calls of `method` outstanding for `seconds`
// after `warm_up_seconds`; requests per second. Failed calls are counted and reported on stderr.
double worker_rps(protocol::WorkerClient& client, const std::string& model,
                  const protocol::WireValue& input, int concurrency, double seconds,
                  const std::string& method = "predict", double warm_up_seconds = 0.5);

// `calls` unary calls one after another; each one's time in microseconds, in call order.
std::vector<double> worker_latencies_us(protocol::WorkerClient& client, const std::string& model,
                                        const protocol::WireValue& input, int calls,
                                        const std::string& method = "predict");

// The `q` quantile (0..1) of `values` (sorted in place).
double quantile(std::vector<double>& values, double q);

}  // namespace outpost::bench
