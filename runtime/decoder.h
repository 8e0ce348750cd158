// The decoder contract (docs/models.md, "Decoder models"): a generate method whose model exports
// NAME_prefill and NAME_decode, and whose KV cache the worker owns. One DecoderRunner per model
// instance allocates the cache once, [layers, slots, max_context, kv_heads, head_dim] for keys
// and for values, and gives each running sequence a slot of it. A decode step feeds every
// running sequence's last token in one call and copies nothing proportional to the context:
// the model writes one position per sequence into the cache in place and reads the rest where
// it lies. Prompts are prefilled in chunks, interleaved with the others' decode steps; sampling,
// stop conditions and text are the runtime's (sampling.h). Internal to runtime/'s torch files.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/core/function_schema.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include "common/result.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

namespace outpost::runtime {

// A decoder method's parameters, in the order DecoderRunner::start takes their values.
struct DecoderParam {
  std::string name;
  c10::TypePtr type;
  c10::IValue default_value;
};
const std::vector<DecoderParam>& decoder_params();

// What a decoder method returns per chunk (inspect's "returns").
inline constexpr const char* kDecoderChunkType = "Dict[str, Any]";

// Checks a decoder call's values (decoder_params() order) and encodes a text prompt into
// prompt_tokens. Run where the call is received (the loader's prepare), so that a bad call is
// refused at once, not after waiting for a cache slot. The error says what is wrong.
Status prepare_decoder_args(std::vector<c10::IValue>& args, const DecoderConfig& config,
                            const Tokenizer* tokenizer);

// Checks NAME_prefill and NAME_decode against the contract; the error says what differs.
Status check_decoder_contract(const std::string& name,
                              const std::map<std::string, c10::FunctionSchema>& schemas);

// The free slots of one cache. Shared with the sequences, which give their slot back when they
// end, from whichever thread ends them.
class SlotPool {
 public:
  explicit SlotPool(int64_t slots);
  std::optional<int64_t> acquire();
  void release(int64_t slot);
  bool available() const;

 private:
  mutable std::mutex mutex_;
  std::vector<int64_t> free_;
};

class DecoderRunner {
 public:
  // Calls one of the program's methods (on the instance's device and stream).
  using Invoke = std::function<c10::IValue(const std::string& method, std::vector<c10::IValue>)>;

  // `tokenizer`: null when the method has none (calls send and receive token ids).
  DecoderRunner(const std::string& method, const DecoderConfig& config,
                std::shared_ptr<const Tokenizer> tokenizer, const c10::Device& device,
                Invoke invoke, const ModelInstance& owner);

  bool has_room() const { return slots_->available(); }
  uint64_t cache_bytes() const;

  // Starts a sequence from a call's values (decoder_params() order, as prepare_decoder_args left
  // them): takes a slot and prefills the prompt's first chunk; when that was the whole prompt,
  // samples the first token. Errors (a token beyond the vocabulary, what the model raised)
  // concern this call only.
  Result<GenerateStart> start(const std::vector<c10::IValue>& args);
  // One step of each sequence: the next prompt chunk of those still prefilling, then one decode
  // call for all the others together. Under InferenceMode, on the instance's thread.
  void step(std::span<CallState* const> states, std::span<StepOutcome> outcomes);

 private:
  class Sequence;
  void prefill_next(Sequence& sequence, StepOutcome& outcome);
  void decode(std::span<Sequence* const> batch, std::span<StepOutcome*> outcomes);
  // Samples from `logits` (one row, on the CPU), advances the sequence and fills `outcome`.
  void accept(Sequence& sequence, const float* logits, StepOutcome& outcome);

  std::string method_;
  std::string prefill_;
  std::string decode_;
  DecoderConfig config_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  c10::Device device_;
  Invoke invoke_;
  const ModelInstance& owner_;
  std::string key_;
  std::shared_ptr<SlotPool> slots_;
  at::Tensor k_cache_;
  at::Tensor v_cache_;
  int64_t vocab_ = 0;  // known after the first logits
};

}  // namespace outpost::runtime
