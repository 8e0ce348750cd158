// What the worker knows about a loaded model, without torch: its methods and their signatures,
// and the interfaces a model format implements (TorchScript today; torch.export / AOTInductor
// packages can join as further ModelLoaders). The execution machinery (model_host, batcher,
// fair scheduler, server) only sees these interfaces, so that only the loader's files include
// torch headers.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "protocol/model_config.h"
#include "protocol/worker_protocol.h"

namespace outpost::runtime {

// The worker protocol's names (protocol/: messages, Values, config.yaml, the worker spec) are
// used unqualified throughout the worker.
using namespace protocol;  // NOLINT(google-build-using-namespace)

enum class MethodKind { kUnary, kGenerate, kStream };
std::string_view method_kind_name(MethodKind kind);

struct ParamInfo {
  std::string name;
  std::string type;  // TorchScript annotation: "Tensor", "str", "List[int]", "Optional[str]"
  std::optional<nlohmann::json> default_value;
  std::optional<TensorSpec> spec;  // a tensor's dtype and shape, as config.yaml declares them
};

// One callable method of a model, as calls and `outpost-worker inspect` see it.
struct MethodInfo {
  std::string name;
  MethodKind kind = MethodKind::kUnary;
  std::vector<ParamInfo> inputs;
  std::string returns;  // generate: the type of one chunk; stream: the type of one output
  // Unary: Triton's dynamic batcher; max_batch_size 0 = no batching. Generate: the most calls
  // in one step batch when steps are batchable.
  BatchingConfig batching;
  bool step_batchable = false;           // generate
  bool stateful = false;                 // stream: state carried from item to item
  int64_t max_steps = 4096;              // generate
  int64_t window = 64;                   // stream
  std::optional<DecoderConfig> decoder;  // generate: the decoder contract (runtime-owned cache)

  nlohmann::json to_json() const;  // the "methods" entry of inspect's output
};

// A request's inputs, converted and checked against the method's signature by the loader on
// the receiving thread. Opaque to everything but the loader that made it.
class PreparedInputs {
 public:
  virtual ~PreparedInputs() = default;
  // Rows along the batch dimension (batched unary methods); 1 otherwise.
  virtual int64_t rows() const = 0;
  // Requests with equal keys may share a batch (same dtypes and trailing shapes).
  virtual const std::string& batch_key() const = 0;
};

class ModelInstance;

// The state of one generate call between steps, or of one stream call between items.
class CallState {
 public:
  virtual ~CallState() = default;
  // Generate calls with equal keys may share a step batch.
  virtual const std::string& batch_key() const = 0;
  // The instance whose memory holds this state (a decoder's KV cache slot): only it may step
  // the call. Null when any instance may.
  virtual const ModelInstance* instance() const { return nullptr; }
};

// What one step did for one generate call.
struct StepOutcome {
  std::optional<WireValue> chunk;  // absent when the step emitted nothing
  bool done = false;
  std::optional<Error> error;
};

// A generate call once started: its state, and what the start produced (a decoder's prefill
// samples the first token, so that it goes out before any decode step).
struct GenerateStart {
  std::unique_ptr<CallState> state;
  StepOutcome first;
};

// One execution instance of a model: its own copy of the module (never shared between threads)
// and, on CUDA, its own stream. Used by exactly one execution thread at a time.
class ModelInstance {
 public:
  virtual ~ModelInstance() = default;
  // Runs `batch` as one execution (or each alone when the method is not batched) and returns one
  // result per request, in order. A request whose inputs break the model gets its own error;
  // the others still get their results.
  virtual std::vector<Result<WireValue>> run(const MethodInfo& method,
                                             std::span<PreparedInputs* const> batch) = 0;
  // Generate: the initial state from the call's inputs.
  virtual Result<GenerateStart> generate_start(const MethodInfo& method,
                                               PreparedInputs& inputs) = 0;
  // Generate: whether a call of `method` can start now (a decoder needs a free cache slot; the
  // call waits for one otherwise).
  virtual bool has_room(const MethodInfo& /*method*/) const { return true; }
  // Generate: one step for each state (one batched execution when the method's steps are
  // batchable); advances the states in place.
  virtual std::vector<StepOutcome> generate_step(const MethodInfo& method,
                                                 std::span<CallState* const> states) = 0;
  // Stream: the state before the first item (stateful methods).
  virtual Result<std::unique_ptr<CallState>> stream_start(const MethodInfo& method) = 0;
  // Stream: one item; advances `state` (null for stateless methods).
  virtual Result<WireValue> stream_item(const MethodInfo& method, PreparedInputs& inputs,
                                        CallState* state) = 0;
};

struct MemoryReport {
  uint64_t weights_bytes = 0;  // parameters and buffers of every instance
  uint64_t device_bytes = 0;   // device allocator growth over load and warmup (CUDA)
  uint64_t cache_bytes = 0;    // decoders' KV caches, every instance

  // What the model holds, as the scheduler packs it: on a device the caches are part of the
  // allocator's growth, in host memory they come on top of the weights.
  uint64_t footprint() const {
    return weights_bytes + device_bytes + (device_bytes > 0 ? 0 : cache_bytes);
  }
};

struct ReleaseReport {
  bool memory_returned = true;  // every weight storage was freed (and the allocator shrank)
  uint64_t freed_bytes = 0;
  std::string detail;  // what was not returned
};

class LoadedModel {
 public:
  virtual ~LoadedModel() = default;
  virtual const std::vector<MethodInfo>& methods() const = 0;
  const MethodInfo* find_method(std::string_view name) const;
  // Converts a call's inputs (a Value object of parameter name -> Value) for `method`: for
  // stream methods, one item's inputs. Thread-safe. Errors name the parameter and the problem.
  virtual Result<std::unique_ptr<PreparedInputs>> prepare(
      const MethodInfo& method, const nlohmann::json& inputs,
      std::span<const std::string> parts) const = 0;
  virtual size_t instance_count() const = 0;
  virtual ModelInstance& instance(size_t index) = 0;
  virtual MemoryReport memory() const = 0;
  // Drops every instance's module and checks that the memory came back. The model is unusable
  // afterwards; callers first stop every execution thread.
  virtual ReleaseReport release() = 0;
};

// A verified model package on disk (model_package.h checks files, sizes and hashes).
struct ModelPackage {
  std::string dir;
  std::string file_path;  // the model file
  std::string file_sha256;
  uint64_t file_size = 0;
  ModelConfig config;
};

struct LoadOptions {
  std::string device = "cpu";  // "cpu" or "cuda:N"
  int64_t instances = 0;       // 0 = config.yaml's
  bool warmup = true;
  bool inspect_only = false;  // one instance, warmed up at least once (`inspect`)
  size_t max_tensor_bytes = size_t{256} << 20;
};

class ModelLoader {
 public:
  virtual ~ModelLoader() = default;
  // The checkpoints.type this loader reads ("torchscript").
  virtual std::string_view type() const = 0;
  virtual Result<std::unique_ptr<LoadedModel>> load(const ModelPackage& package,
                                                    const LoadOptions& options) = 0;
};

}  // namespace outpost::runtime
