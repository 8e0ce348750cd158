#include "runtime/decoder.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <utility>

#include <ATen/core/List.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>

#include "runtime/sampling.h"
#include "runtime/torch_values.h"

namespace outpost::runtime {
namespace {

using nlohmann::json;

// Indices into decoder_params().
enum Arg : size_t {
  kPrompt,
  kPromptTokens,
  kMaxTokens,
  kTemperature,
  kTopK,
  kTopP,
  kSeed,
  kStop,
  kStopTokenIds,
  kArgCount
};

// The sampling controls of a call's values (the seed drawn by prepare_decoder_args if absent).
SamplingParams sampling_of(const std::vector<c10::IValue>& args) {
  SamplingParams sampling;
  sampling.temperature = args[kTemperature].toDouble();
  sampling.top_k = args[kTopK].toInt();
  sampling.top_p = args[kTopP].toDouble();
  sampling.seed = static_cast<uint64_t>(args[kSeed].toInt());
  return sampling;
}

at::Tensor long_tensor(std::vector<int64_t> values) {
  const auto n = static_cast<int64_t>(values.size());
  auto holder = std::make_shared<std::vector<int64_t>>(std::move(values));
  return at::from_blob(
      holder->data(), {n}, [holder](void*) {}, at::TensorOptions().dtype(at::kLong));
}

}  // namespace

const std::vector<DecoderParam>& decoder_params() {
  static const std::vector<DecoderParam> params = [] {
    const auto optional = [](const c10::TypePtr& type) { return c10::OptionalType::create(type); };
    const auto ints = c10::ListType::ofInts();
    const auto strings = c10::ListType::ofStrings();
    std::vector<DecoderParam> out(kArgCount);
    out[kPrompt] = {"prompt", optional(c10::StringType::get()), c10::IValue()};
    out[kPromptTokens] = {"prompt_tokens", optional(ints), c10::IValue()};
    out[kMaxTokens] = {"max_tokens", c10::IntType::get(), c10::IValue(int64_t{64})};
    out[kTemperature] = {"temperature", c10::FloatType::get(), c10::IValue(0.0)};
    out[kTopK] = {"top_k", c10::IntType::get(), c10::IValue(int64_t{0})};
    out[kTopP] = {"top_p", c10::FloatType::get(), c10::IValue(1.0)};
    out[kSeed] = {"seed", optional(c10::IntType::get()), c10::IValue()};
    out[kStop] = {"stop", strings, c10::IValue(c10::List<std::string>())};
    out[kStopTokenIds] = {"stop_token_ids", ints, c10::IValue(c10::List<int64_t>())};
    return out;
  }();
  return params;
}

Status check_decoder_contract(const std::string& name,
                              const std::map<std::string, c10::FunctionSchema>& schemas) {
  struct Expected {
    std::string method;
    std::vector<std::string> params;
  };
  const Expected expected[] = {
      {name + "_prefill", {"tokens", "start_pos", "slot", "k_cache", "v_cache"}},
      {name + "_decode", {"tokens", "positions", "slots", "k_cache", "v_cache"}},
  };
  for (const auto& [method, params] : expected) {
    const auto it = schemas.find(method);
    if (it == schemas.end()) {
      return invalid_argument("a decoder method needs " + method + " (see docs/models.md)");
    }
    const auto& arguments = it->second.arguments();
    const auto& returns = it->second.returns();
    const bool shape_ok = arguments.size() == params.size() + 1 && returns.size() == 1 &&
                          returns[0].type()->kind() == c10::TypeKind::TensorType;
    std::string want = method + "(self";
    for (const auto& param : params) want += ", " + param;
    want += ") -> Tensor";
    if (!shape_ok) {
      return invalid_argument(method + " must be " + want + " (see docs/models.md, decoder " +
                              "models), not " + it->second.name() + " with " +
                              std::to_string(arguments.size()) + " parameters");
    }
  }
  return {};
}

SlotPool::SlotPool(int64_t slots) {
  for (int64_t slot = slots - 1; slot >= 0; --slot) free_.push_back(slot);
}

std::optional<int64_t> SlotPool::acquire() {
  std::lock_guard lock(mutex_);
  if (free_.empty()) return std::nullopt;
  const int64_t slot = free_.back();
  free_.pop_back();
  return slot;
}

void SlotPool::release(int64_t slot) {
  std::lock_guard lock(mutex_);
  free_.push_back(slot);
}

bool SlotPool::available() const {
  std::lock_guard lock(mutex_);
  return !free_.empty();
}

// One running sequence: its slot (given back when the call ends, however it ends), its prompt,
// where it stands, and its own sampler and text.
class DecoderRunner::Sequence final : public CallState {
 public:
  Sequence(std::shared_ptr<SlotPool> pool, int64_t slot, std::string key,
           const ModelInstance& owner, const SamplingParams& sampling)
      : sampler(sampling),
        pool_(std::move(pool)),
        slot_(slot),
        key_(std::move(key)),
        owner_(owner) {}
  ~Sequence() override { pool_->release(slot_); }
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;

  const std::string& batch_key() const override { return key_; }
  const ModelInstance* instance() const override { return &owner_; }
  int64_t slot() const { return slot_; }
  bool prefilling() const { return prefilled < static_cast<int64_t>(prompt.size()); }

  Sampler sampler;
  std::vector<int64_t> prompt;
  int64_t prefilled = 0;  // prompt tokens in the cache
  int64_t position = 0;   // tokens in the cache: where the next one is written
  int64_t last = -1;      // the last sampled token, fed to the next decode
  int64_t completion = 0;
  int64_t max_tokens = 0;
  std::vector<int64_t> stop_ids;
  std::optional<TextStream> text;  // with a tokenizer
  std::vector<int64_t> unsent;     // token ids not in a chunk yet

 private:
  std::shared_ptr<SlotPool> pool_;
  int64_t slot_;
  std::string key_;
  const ModelInstance& owner_;
};

DecoderRunner::DecoderRunner(const std::string& method, const DecoderConfig& config,
                             std::shared_ptr<const Tokenizer> tokenizer, const c10::Device& device,
                             Invoke invoke, const ModelInstance& owner)
    : method_(method),
      prefill_(method + "_prefill"),
      decode_(method + "_decode"),
      config_(config),
      tokenizer_(std::move(tokenizer)),
      device_(device),
      invoke_(std::move(invoke)),
      owner_(owner),
      key_("decoder:" + method),
      slots_(std::make_shared<SlotPool>(config.slots)) {
  const auto options = at::TensorOptions().dtype(to_scalar_type(config.cache_dtype)).device(device);
  const std::vector<int64_t> shape = {config.layers, config.slots, config.max_context,
                                      config.kv_heads, config.head_dim};
  k_cache_ = at::zeros(shape, options);
  v_cache_ = at::zeros(shape, options);
}

uint64_t DecoderRunner::cache_bytes() const { return config_.cache_bytes(); }

Status prepare_decoder_args(std::vector<c10::IValue>& args, const DecoderConfig& config,
                            const Tokenizer* tokenizer) {
  const bool has_prompt = !args[kPrompt].isNone();
  const bool has_tokens = !args[kPromptTokens].isNone();
  const bool text = tokenizer != nullptr;
  if (has_prompt == has_tokens) {
    return invalid_argument(text ? "give either prompt (text) or prompt_tokens (token ids)"
                                 : "give prompt_tokens (token ids): this model has no tokenizer");
  }
  if (has_prompt) {
    if (!text) {
      return invalid_argument(
          "prompt: this model has no tokenizer (config.yaml's decoder.tokenizer); send "
          "prompt_tokens");
    }
    // Encoded here, once: the execution thread gets token ids.
    OUTPOST_ASSIGN_OR_RETURN(auto ids, tokenizer->encode(args[kPrompt].toStringRef()));
    args[kPromptTokens] = c10::IValue(c10::List<int64_t>(c10::ArrayRef<int64_t>(ids)));
    args[kPrompt] = c10::IValue();
  }
  const auto prompt = args[kPromptTokens].toIntList();
  const auto context = config.max_context;
  if (prompt.empty()) return invalid_argument("the prompt is empty");
  if (static_cast<int64_t>(prompt.size()) > context) {
    return invalid_argument("the prompt has " + std::to_string(prompt.size()) +
                            " tokens; the model's context holds " + std::to_string(context));
  }
  for (const int64_t token : prompt) {
    if (token < 0) {
      return invalid_argument("prompt_tokens: " + std::to_string(token) + " is not a token id");
    }
  }
  if (args[kMaxTokens].toInt() < 1) return invalid_argument("max_tokens must be at least 1");
  if (args[kSeed].isNone()) {
    // Drawn once, here: the sequence's sampler reads it from the values.
    const uint64_t seed =
        (static_cast<uint64_t>(std::random_device()()) << 32) ^ std::random_device()();
    args[kSeed] = c10::IValue(static_cast<int64_t>(seed));
  }
  const SamplingParams sampling = sampling_of(args);
  if (!std::isfinite(sampling.temperature) || sampling.temperature < 0) {
    return invalid_argument("temperature must be 0 (greedy) or more");
  }
  if (sampling.top_k < 0) return invalid_argument("top_k must be 0 (off) or more");
  if (!(sampling.top_p > 0 && sampling.top_p <= 1)) {
    return invalid_argument("top_p must be more than 0 and at most 1");
  }
  if (!args[kStop].toListRef().empty() && !text) {
    return invalid_argument(
        "stop strings need a tokenizer (config.yaml's decoder.tokenizer); "
        "give stop_token_ids");
  }
  return {};
}

Result<GenerateStart> DecoderRunner::start(const std::vector<c10::IValue>& args) {
  // prepare_decoder_args checked the values and encoded a text prompt; what is left to check
  // needs this instance: the vocabulary, known from the logits of warm-up.
  std::vector<int64_t> prompt = args[kPromptTokens].toIntVector();
  for (const int64_t token : prompt) {
    if (vocab_ > 0 && token >= vocab_) {
      return invalid_argument("prompt_tokens: " + std::to_string(token) +
                              " is not a token id (the vocabulary has " + std::to_string(vocab_) +
                              ")");
    }
  }
  std::vector<std::string> stop;
  for (const auto& item : args[kStop].toListRef()) stop.push_back(item.toStringRef());

  const auto slot = slots_->acquire();
  if (!slot) return Error(ErrorCode::kResourceExhausted, "no free sequence slot");
  auto sequence = std::make_unique<Sequence>(slots_, *slot, key_, owner_, sampling_of(args));
  sequence->prompt = std::move(prompt);
  sequence->max_tokens = args[kMaxTokens].toInt();
  sequence->stop_ids = args[kStopTokenIds].toIntVector();
  sequence->stop_ids.insert(sequence->stop_ids.end(), config_.eos_token_ids.begin(),
                            config_.eos_token_ids.end());
  if (tokenizer_ != nullptr) sequence->text.emplace(std::move(stop));

  GenerateStart started;
  try {
    prefill_next(*sequence, started.first);
  } catch (const std::exception& e) {
    return model_error(prefill_, e);
  }
  started.state = std::move(sequence);
  return started;
}

void DecoderRunner::prefill_next(Sequence& sequence, StepOutcome& outcome) {
  const int64_t begin = sequence.prefilled;
  const int64_t end = std::min<int64_t>(begin + config_.prefill_chunk,
                                        static_cast<int64_t>(sequence.prompt.size()));
  std::vector<int64_t> chunk(sequence.prompt.begin() + begin, sequence.prompt.begin() + end);
  const c10::IValue result = invoke_(prefill_, {long_tensor(std::move(chunk)), c10::IValue(begin),
                                                c10::IValue(sequence.slot()), k_cache_, v_cache_});
  sequence.prefilled = end;
  sequence.position = end;
  if (sequence.prefilling()) return;
  at::Tensor logits = result.toTensor().to(at::kCPU, at::kFloat).contiguous().reshape({-1});
  vocab_ = logits.numel();
  accept(sequence, logits.const_data_ptr<float>(), outcome);
}

void DecoderRunner::decode(std::span<Sequence* const> batch, std::span<StepOutcome*> outcomes) {
  const size_t n = batch.size();
  std::vector<int64_t> tokens(n);
  std::vector<int64_t> positions(n);
  std::vector<int64_t> slots(n);
  for (size_t i = 0; i < n; ++i) {
    tokens[i] = batch[i]->last;
    positions[i] = batch[i]->position;
    slots[i] = batch[i]->slot();
  }
  const c10::IValue result =
      invoke_(decode_, {long_tensor(std::move(tokens)), long_tensor(std::move(positions)),
                        long_tensor(std::move(slots)), k_cache_, v_cache_});
  at::Tensor logits = result.toTensor().to(at::kCPU, at::kFloat).contiguous();
  if (logits.dim() != 2 || logits.size(0) != static_cast<int64_t>(n)) {
    throw std::runtime_error(decode_ + " returned logits of shape " +
                             std::string(c10::str(logits.sizes())) + " for " + std::to_string(n) +
                             " sequences, expected [" + std::to_string(n) + ", vocabulary]");
  }
  vocab_ = logits.size(1);
  const float* rows = logits.const_data_ptr<float>();
  for (size_t i = 0; i < n; ++i) {
    ++batch[i]->position;
    accept(*batch[i], rows + static_cast<int64_t>(i) * vocab_, *outcomes[i]);
  }
}

void DecoderRunner::accept(Sequence& sequence, const float* logits, StepOutcome& outcome) {
  const int64_t token =
      sequence.sampler.next(std::span<const float>(logits, static_cast<size_t>(vocab_)));
  sequence.last = token;
  ++sequence.completion;
  sequence.unsent.push_back(token);
  // An end token, a stop token or a stop string ends it with "stop"; else max_tokens, or a full
  // context (the token could not be fed), with "length".
  const bool stop_token = std::find(sequence.stop_ids.begin(), sequence.stop_ids.end(), token) !=
                          sequence.stop_ids.end();
  const bool stop_text =
      !stop_token && sequence.text && sequence.text->push(tokenizer_->bytes(token));
  const char* finish = nullptr;
  if (stop_token || stop_text) {
    finish = "stop";
  } else if (sequence.completion >= sequence.max_tokens ||
             sequence.position >= config_.max_context) {
    finish = "length";
  }
  std::string text;
  if (sequence.text) {
    text = sequence.text->take(finish != nullptr);
    // Hold the tokens until they form text (a character split across tokens).
    if (text.empty() && finish == nullptr) return;
  }
  json chunk{{"token_ids", std::move(sequence.unsent)}};
  sequence.unsent.clear();
  if (sequence.text) chunk["text"] = std::move(text);
  if (finish != nullptr) {
    chunk["finish_reason"] = finish;
    chunk["usage"] =
        json{{"prompt_tokens", sequence.prompt.size()}, {"completion_tokens", sequence.completion}};
    outcome.done = true;
  }
  outcome.chunk = WireValue{std::move(chunk), {}};
}

void DecoderRunner::step(std::span<CallState* const> states, std::span<StepOutcome> outcomes) {
  std::vector<Sequence*> decoding;
  std::vector<StepOutcome*> decoding_outcomes;
  for (size_t i = 0; i < states.size(); ++i) {
    auto& sequence = *static_cast<Sequence*>(states[i]);
    if (sequence.prefilling()) {
      try {
        prefill_next(sequence, outcomes[i]);
      } catch (const std::exception& e) {
        outcomes[i].error = model_error(prefill_, e);
      }
    } else {
      decoding.push_back(&sequence);
      decoding_outcomes.push_back(&outcomes[i]);
    }
  }
  if (decoding.empty()) return;
  try {
    decode(decoding, decoding_outcomes);
  } catch (const std::exception& e) {
    if (decoding.size() == 1) {
      decoding_outcomes[0]->error = model_error(decode_, e);
      return;
    }
    // Each alone, so that one sequence the model cannot decode does not end the others. A
    // sequence's cache position is written again with the same values.
    for (size_t i = 0; i < decoding.size(); ++i) {
      try {
        decode(std::span<Sequence* const>(&decoding[i], 1),
               std::span<StepOutcome*>(&decoding_outcomes[i], 1));
      } catch (const std::exception& single) {
        decoding_outcomes[i]->error = model_error(decode_, single);
      }
    }
  }
}

}  // namespace outpost::runtime
