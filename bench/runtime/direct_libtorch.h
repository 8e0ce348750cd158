// The benchmarks' baseline: an example model's TorchScript file called directly through libtorch
// in the bench's own process, with no worker, agent or network in the way. bench_runtime and
// bench_e2e both measure against it. Torch types stay behind this header, so a bench that uses it
// compiles without torch headers (only direct_libtorch.cc pays for them).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace outpost::bench {

// Intra-op threads for both sides of a benchmark: OUTPOST_BENCH_THREADS, else every CPU this
// process may use.
int bench_threads();

// This process's libtorch threads: `intra_op` intra-op threads and one inter-op thread, as the
// worker runs. Call once, before the first model is loaded.
void set_torch_threads(int intra_op);

struct GenerateFigures {
  double ttft_us = 0;       // median over the runs: generate_init and the first generate_step
  double chunks_per_s = 0;  // the chunks after the first, over the time they took
};

class DirectModel {
 public:
  // Loads PACKAGE_DIR/model.pt2 (an AOTInductor package) when there is one, else
  // PACKAGE_DIR/model.pt (a TorchScript archive) in eval mode, as the worker does. A package's
  // function is called whatever `method` names. On `device` ("cpu", "cuda:N").
  static Result<std::unique_ptr<DirectModel>> load(const std::string& package_dir,
                                                   const std::string& device = "cpu");
  ~DirectModel();
  DirectModel(const DirectModel&) = delete;
  DirectModel& operator=(const DirectModel&) = delete;

  // `method` on one random float32 input of `shape`, called over and over for `seconds` after a
  // warm-up; rows (shape[0]) per second.
  double rows_per_second(const std::string& method, const std::vector<int64_t>& shape,
                         double seconds);
  // `method` on one random float32 input of `shape`, called `calls` times after a warm-up; the
  // time of each call in microseconds, in call order.
  std::vector<double> call_latencies_us(const std::string& method,
                                        const std::vector<int64_t>& shape, int calls);
  // generate_init(prompt, max_tokens), then generate_step until the model says done, `runs` times
  // after two warm-up runs. The chunk of each step is read out as the worker would send it.
  GenerateFigures generate(const std::string& prompt, int64_t max_tokens, int runs);

 private:
  struct Impl;
  explicit DirectModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A decoder package (docs/models.md, "Decoder models") driven directly: its generate_prefill and
// generate_decode on a cache of the same geometry as the worker's, with greedy picks, in this
// process and with its threads. bench_llm's baseline.
struct DecoderGeometry {
  int64_t layers = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_context = 0;
  int64_t slots = 0;
  int64_t prefill_chunk = 0;
};

class DirectDecoder {
 public:
  static Result<std::unique_ptr<DirectDecoder>> load(const std::string& package_dir,
                                                     const DecoderGeometry& geometry);
  ~DirectDecoder();
  DirectDecoder(const DirectDecoder&) = delete;
  DirectDecoder& operator=(const DirectDecoder&) = delete;

  // One prompt of `prompt` tokens prefilled into a slot (in prefill_chunk chunks) and its first
  // token picked, `runs` times after a warm-up; microseconds of each.
  std::vector<double> prefill_us(const std::vector<int64_t>& prompt, int runs);
  // `n` sequences of `prompt` prefilled one by one, then decode calls for all of them together
  // until each has `tokens` tokens (the first from its prefill): tokens per second over it all.
  double tokens_per_s(int64_t n, const std::vector<int64_t>& prompt, int64_t tokens);

 private:
  struct Impl;
  explicit DirectDecoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::bench
