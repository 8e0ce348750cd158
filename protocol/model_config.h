// A model package's config.yaml (docs/models.md): Clarifai's shape (model, inference_compute_info,
// checkpoints) plus outpost's keys for the runtime (batching, methods, instances, warmup).
// Parsing is strict where a typo would silently change behaviour (batching and method keys)
// and lenient elsewhere: unknown top-level keys from a Clarifai config are kept, not refused.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "protocol/tensor_wire.h"

namespace outpost::protocol {

// Triton's dynamic batcher settings.
struct BatchingConfig {
  int64_t max_batch_size = 0;      // rows per execution; 0 = no batching
  int64_t max_queue_delay_us = 0;  // how long a partial batch may wait for more requests
  int64_t max_queue_size = 1024;   // queued requests per method; more are refused
};

// A tensor parameter's expected dtype and shape; -1 in the shape means any size.
struct TensorSpec {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
};

// A generate method under the decoder contract (docs/models.md, "Decoder models"): the model
// exports NAME_prefill and NAME_decode, and the worker owns the KV cache they read and write,
// [layers, slots, max_context, kv_heads, head_dim] for keys and the same for values.
struct DecoderConfig {
  int64_t layers = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_context = 0;      // positions per sequence: prompt and completion together
  int64_t slots = 8;            // sequences one instance runs at once (its cache holds them all)
  int64_t prefill_chunk = 256;  // prompt tokens per prefill call, interleaved with decode steps
  DType cache_dtype = DType::kFloat32;
  std::vector<int64_t> eos_token_ids;  // end a sequence (finish_reason "stop")
  // "" (token ids only), "bytes" (ids 0..255 are bytes) or "sentencepiece" (tokenizer_file)
  std::string tokenizer;
  std::string tokenizer_file = "tokenizer.model";  // in the package folder

  uint64_t cache_bytes() const;  // keys and values together
};

struct MethodConfig {
  std::optional<std::string> kind;  // "unary", "generate" or "stream"; inferred when absent
  BatchingConfig batching;          // the model's batching with this method's keys over it
  bool batching_set = false;        // the method names batching keys of its own
  std::map<std::string, TensorSpec> inputs;
  std::optional<nlohmann::json> example;  // warmup inputs, as a Value object
  bool step_batchable = false;            // generate: steps of concurrent calls run as one batch
  int64_t max_steps = 4096;               // generate: steps before the call ends ("max_steps")
  int64_t window = 64;                    // stream: most items in flight per call
  std::optional<DecoderConfig> decoder;   // generate: the decoder contract
};

struct ModelConfig {
  std::string model_id;
  nlohmann::json raw;  // the whole file as JSON
  std::string checkpoint_type = "torchscript";
  std::string file = "model.pt";
  std::optional<std::string> sha256;  // lower-case hex
  std::optional<uint64_t> size;
  int64_t instances = 1;
  int64_t warmup_runs = 2;
  BatchingConfig batching;
  std::map<std::string, MethodConfig> methods;
  // What parsing kept but did not use (an unknown top-level key), for the one who uploads.
  std::vector<std::string> warnings;

  // The method's settings, or the defaults (model-level batching) when config.yaml has none.
  MethodConfig method(const std::string& name) const;
};

// Parses config.yaml text. Errors name the key and say what is expected.
Result<ModelConfig> parse_model_config(std::string_view yaml_text);

}  // namespace outpost::protocol
