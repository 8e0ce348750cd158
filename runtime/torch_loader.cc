#include "runtime/torch_loader.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>  // first: under clang the others need IValue complete
#include <ATen/ops/cat.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include "common/log.h"
#include "runtime/decoder.h"
#include "runtime/device.h"
#include "runtime/torch_device.h"
#include "runtime/torch_program.h"
#include "runtime/torch_values.h"

namespace outpost::runtime {
namespace {

using nlohmann::json;

bool is_tensor(const c10::TypePtr& type) { return type->kind() == c10::TypeKind::TensorType; }

// Tensor, or a Tuple whose elements are all Tensors.
bool is_tensor_or_tensor_tuple(const c10::TypePtr& type) {
  if (is_tensor(type)) return true;
  if (type->kind() != c10::TypeKind::TupleType) return false;
  const auto& elements = type->expectRef<c10::TupleType>().elements();
  return !elements.empty() &&
         std::all_of(elements.begin(), elements.end(), [](const auto& t) { return is_tensor(t); });
}

// Results a batched method may return: split along the first dimension (docs/models.md).
bool is_splittable(const c10::TypePtr& type) {
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
    case c10::TypeKind::ListType:
      return true;
    case c10::TypeKind::TupleType: {
      const auto& elements = type->expectRef<c10::TupleType>().elements();
      return !elements.empty() && std::all_of(elements.begin(), elements.end(),
                                              [](const auto& t) { return is_splittable(t); });
    }
    case c10::TypeKind::DictType:
      return is_splittable(type->expectRef<c10::DictType>().getValueType());
    default:
      return false;
  }
}

// Splits a batched result into per-request results of `rows` rows each.
Result<std::vector<c10::IValue>> split_rows(const c10::IValue& value,
                                            const std::vector<int64_t>& rows, int64_t total) {
  const size_t n = rows.size();
  if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    if (tensor.dim() == 0 || tensor.size(0) != total) {
      return invalid_argument("a batched method returned a tensor of shape " +
                              shape_string(tensor.sizes()) + " for " + std::to_string(total) +
                              " rows; results must have the batch as their first dimension");
    }
    std::vector<c10::IValue> out;
    int64_t offset = 0;
    for (const int64_t count : rows) {
      out.emplace_back(tensor.narrow(0, offset, count));
      offset += count;
    }
    return out;
  }
  if (value.isList()) {
    const auto items = value.toListRef();
    if (static_cast<int64_t>(items.size()) != total) {
      return invalid_argument("a batched method returned a list of " +
                              std::to_string(items.size()) + " for " + std::to_string(total) +
                              " rows");
    }
    std::vector<c10::IValue> out;
    size_t offset = 0;
    const auto element_type = value.toList().elementType();
    for (const int64_t count : rows) {
      c10::impl::GenericList list(element_type);
      for (int64_t i = 0; i < count; ++i) list.push_back(items[offset++]);
      out.emplace_back(std::move(list));
    }
    return out;
  }
  if (value.isTuple()) {
    const auto& elements = value.toTupleRef().elements();
    std::vector<std::vector<c10::IValue>> per_request(n);
    for (size_t e = 0; e < elements.size(); ++e) {
      OUTPOST_ASSIGN_OR_RETURN(auto split, split_rows(elements[e], rows, total));
      for (size_t i = 0; i < n; ++i) per_request[i].push_back(split[i]);
    }
    std::vector<c10::IValue> out;
    out.reserve(per_request.size());
    for (auto& items : per_request) out.emplace_back(c10::ivalue::Tuple::create(std::move(items)));
    return out;
  }
  if (value.isGenericDict()) {
    const auto dict = value.toGenericDict();
    std::vector<c10::impl::GenericDict> per_request;
    for (size_t i = 0; i < n; ++i) per_request.emplace_back(dict.keyType(), dict.valueType());
    for (const auto& entry : dict) {
      OUTPOST_ASSIGN_OR_RETURN(auto split, split_rows(entry.value(), rows, total));
      for (size_t i = 0; i < n; ++i) per_request[i].insert(entry.key(), split[i]);
    }
    std::vector<c10::IValue> out;
    out.reserve(per_request.size());
    for (auto& dict_i : per_request) out.emplace_back(std::move(dict_i));
    return out;
  }
  return invalid_argument("a batched method returned a " + value.tagKind() +
                          ", which cannot be split into per-request results");
}

// Moves every tensor in `value` to `device`.
c10::IValue to_device(const c10::IValue& value, const c10::Device& device) {
  if (device.is_cpu()) return value;
  if (value.isTensor()) {
    // Staged through pinned (page-locked) host memory from libtorch's caching host allocator,
    // so that the copy to the device is a DMA on the instance's stream, not a synchronous one.
    return value.toTensor().pin_memory().to(device, /*non_blocking=*/true);
  }
  if (value.isList()) {
    c10::impl::GenericList list(value.toList().elementType());
    for (const auto& item : value.toListRef()) list.push_back(to_device(item, device));
    return list;
  }
  if (value.isTuple()) {
    std::vector<c10::IValue> items;
    const auto& elements = value.toTupleRef().elements();
    for (size_t i = 0; i < elements.size(); ++i) items.push_back(to_device(elements[i], device));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  if (value.isGenericDict()) {
    const auto dict = value.toGenericDict();
    c10::impl::GenericDict out(dict.keyType(), dict.valueType());
    for (const auto& entry : dict) out.insert(entry.key(), to_device(entry.value(), device));
    return out;
  }
  return value;
}

Result<WireValue> encode(const c10::IValue& value) {
  WireValue out;
  OUTPOST_ASSIGN_OR_RETURN(out.value, ivalue_to_value(value, out.parts));
  return out;
}

struct Param {
  std::string name;
  c10::TypePtr type;
  std::optional<c10::IValue> default_value;
  std::optional<TensorSpec> spec;
};

// How a public method maps onto the module's TorchScript methods.
struct Binding {
  MethodInfo* info = nullptr;
  std::string call;                            // unary, stream
  std::string init;                            // generate, stateful stream
  std::string step;                            // generate
  std::shared_ptr<const Tokenizer> tokenizer;  // the decoder's, if it has one
  std::vector<Param> params;
  bool batched = false;
  std::optional<json> example;
};

class TorchInputs final : public PreparedInputs {
 public:
  int64_t rows() const override { return rows_; }
  const std::string& batch_key() const override { return key_; }

  std::vector<c10::IValue> args;
  int64_t rows_ = 1;
  std::string key_;
};

class TorchState final : public CallState {
 public:
  const std::string& batch_key() const override { return key_; }

  c10::IValue value;
  std::string key_;
};

// The batch key of a batchable generate state, or an error when the state is not one.
Result<std::string> state_key(const c10::IValue& state, const std::string& method) {
  std::string key;
  const auto add = [&](const c10::IValue& item) -> Status {
    if (!item.isTensor() || item.toTensor().dim() == 0 || item.toTensor().size(0) != 1) {
      return invalid_argument(method +
                              ": a step_batchable state must be tensors with a first "
                              "dimension of 1 (one row per call)");
    }
    key += tensor_signature(item.toTensor(), true);
    key += item.toTensor().device().str();
    return {};
  };
  if (state.isTuple()) {
    const auto& elements = state.toTupleRef().elements();
    for (size_t i = 0; i < elements.size(); ++i) OUTPOST_RETURN_IF_ERROR(add(elements[i]));
  } else {
    OUTPOST_RETURN_IF_ERROR(add(state));
  }
  return key;
}

c10::IValue cat_states(std::span<CallState* const> states) {
  const auto& first = static_cast<TorchState*>(states[0])->value;
  if (first.isTensor()) {
    std::vector<at::Tensor> tensors;
    for (auto* state : states) tensors.push_back(static_cast<TorchState*>(state)->value.toTensor());
    return at::cat(tensors, 0);
  }
  const size_t width = first.toTupleRef().elements().size();
  std::vector<c10::IValue> items;
  for (size_t e = 0; e < width; ++e) {
    std::vector<at::Tensor> tensors;
    for (auto* state : states) {
      tensors.push_back(
          static_cast<TorchState*>(state)->value.toTupleRef().elements()[e].toTensor());
    }
    items.emplace_back(at::cat(tensors, 0));
  }
  return c10::ivalue::Tuple::create(std::move(items));
}

c10::IValue state_row(const c10::IValue& state, int64_t row) {
  if (state.isTensor()) return state.toTensor().narrow(0, row, 1);
  std::vector<c10::IValue> items;
  const auto& elements = state.toTupleRef().elements();
  for (size_t e = 0; e < elements.size(); ++e) {
    items.emplace_back(elements[e].toTensor().narrow(0, row, 1));
  }
  return c10::ivalue::Tuple::create(std::move(items));
}

class TorchModel;

class TorchInstance final : public ModelInstance {
 public:
  TorchInstance(const TorchModel& model, std::unique_ptr<TorchProgram> program,
                const c10::Device& device)
      : model_(model), program_(std::move(program)), device_(device), stream_(device) {}

  const TorchProgram& program() const { return *program_; }
  // Allocates the KV cache of a decoder method; its bytes.
  uint64_t add_decoder(const std::string& method, const DecoderConfig& config);

  std::vector<Result<WireValue>> run(const MethodInfo& method,
                                     std::span<PreparedInputs* const> batch) override;
  Result<GenerateStart> generate_start(const MethodInfo& method, PreparedInputs& inputs) override;
  bool has_room(const MethodInfo& method) const override;
  std::vector<StepOutcome> generate_step(const MethodInfo& method,
                                         std::span<CallState* const> states) override;
  Result<std::unique_ptr<CallState>> stream_start(const MethodInfo& method) override;
  Result<WireValue> stream_item(const MethodInfo& method, PreparedInputs& inputs,
                                CallState* state) override;

 private:
  c10::IValue call(const std::string& name, std::vector<c10::IValue> args) {
    if (!device_.is_cpu()) {
      for (auto& arg : args) arg = to_device(arg, device_);
    }
    return program_->call(name, std::move(args));
  }
  Result<WireValue> run_one(const Binding& binding, const TorchInputs& inputs);
  void run_batch(const Binding& binding, std::span<PreparedInputs* const> batch,
                 std::vector<Result<WireValue>>& results);
  // One step of `states` under the batchable contract (one execution for all of them).
  void step_batch(const Binding& binding, std::span<CallState* const> states,
                  std::span<StepOutcome> outcomes);
  StepOutcome step_single(const Binding& binding, TorchState& state);
  void step_all(const Binding& binding, const MethodInfo& method,
                std::span<CallState* const> states, std::vector<StepOutcome>& outcomes);

  const TorchModel& model_;
  std::unique_ptr<TorchProgram> program_;
  c10::Device device_;
  InstanceStream stream_;
  std::map<std::string, std::unique_ptr<DecoderRunner>> decoders_;  // by method
};

class TorchModel final : public LoadedModel {
 public:
  TorchModel(std::string device_name, const c10::Device& device, ValueLimits limits)
      : device_name_(std::move(device_name)), device_(device), limits_(limits) {}

  const std::vector<MethodInfo>& methods() const override { return infos_; }
  Result<std::unique_ptr<PreparedInputs>> prepare(
      const MethodInfo& method, const json& inputs,
      std::span<const std::string> parts) const override {
    try {
      return prepare_with(method, inputs, parts, limits_);
    } catch (const std::exception& e) {
      return invalid_argument("inputs of " + method.name + ": " + exception_text(e));
    }
  }
  size_t instance_count() const override { return instances_.size(); }
  ModelInstance& instance(size_t index) override { return *instances_.at(index); }
  MemoryReport memory() const override { return memory_; }
  ReleaseReport release() override;

  const Binding& binding(const std::string& name) const { return bindings_.at(name); }

  Result<std::unique_ptr<PreparedInputs>> prepare_with(const MethodInfo& method, const json& inputs,
                                                       std::span<const std::string> parts,
                                                       const ValueLimits& limits) const;
  // Resolves the public methods from the first program's schemas and config.yaml.
  Status bind(const std::map<std::string, c10::FunctionSchema>& schemas, const ModelConfig& config,
              const std::string& package_dir);
  void add_instance(std::unique_ptr<TorchProgram> program);
  Status warmup(int64_t runs);
  void measure(uint64_t device_bytes_before);

 private:
  Status bind_method(const std::string& name, MethodKind kind, bool stateful,
                     const std::map<std::string, c10::FunctionSchema>& schemas,
                     const ModelConfig& config, bool named_in_config);
  Status bind_decoder(const std::string& name,
                      const std::map<std::string, c10::FunctionSchema>& schemas,
                      const ModelConfig& config, const std::string& package_dir);

  std::string device_name_;
  c10::Device device_;
  ValueLimits limits_;
  std::vector<MethodInfo> infos_;
  std::map<std::string, Binding> bindings_;
  std::vector<std::unique_ptr<TorchInstance>> instances_;
  std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>> storages_;
  uint64_t device_bytes_before_ = 0;
  MemoryReport memory_;
};

Result<WireValue> TorchInstance::run_one(const Binding& binding, const TorchInputs& inputs) {
  try {
    return encode(call(binding.call, inputs.args));
  } catch (const std::exception& e) {
    return model_error(binding.info->name, e);
  }
}

std::vector<Result<WireValue>> TorchInstance::run(const MethodInfo& method,
                                                  std::span<PreparedInputs* const> batch) {
  const Binding& binding = model_.binding(method.name);
  std::vector<Result<WireValue>> results;
  results.reserve(batch.size());
  stream_.run([&] {
    try {
      run_batch(binding, batch, results);
    } catch (const std::exception& e) {
      results.clear();
      for (size_t i = 0; i < batch.size(); ++i) results.push_back(model_error(method.name, e));
    }
  });
  return results;
}

void TorchInstance::run_batch(const Binding& binding, std::span<PreparedInputs* const> batch,
                              std::vector<Result<WireValue>>& results) {
  {
    c10::InferenceMode guard;
    if (batch.size() == 1 || !binding.batched) {
      for (auto* inputs : batch)
        results.push_back(run_one(binding, *static_cast<TorchInputs*>(inputs)));
      return;
    }
    std::vector<int64_t> rows;
    int64_t total = 0;
    for (auto* inputs : batch) {
      rows.push_back(inputs->rows());
      total += inputs->rows();
    }
    Result<std::vector<c10::IValue>> split = internal_error("not run");
    try {
      std::vector<c10::IValue> args;
      for (size_t p = 0; p < binding.params.size(); ++p) {
        std::vector<at::Tensor> tensors;
        tensors.reserve(batch.size());
        for (auto* inputs : batch) {
          tensors.push_back(static_cast<TorchInputs*>(inputs)->args[p].toTensor());
        }
        args.emplace_back(at::cat(tensors, 0));
      }
      split = split_rows(call(binding.call, std::move(args)), rows, total);
    } catch (const std::exception& e) {
      // One request may have broken the batch: run each alone so the others still succeed.
      for (auto* inputs : batch)
        results.push_back(run_one(binding, *static_cast<TorchInputs*>(inputs)));
      return;
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (split.ok()) {
        results.push_back(encode((*split)[i]));
      } else {
        results.push_back(split.error());
      }
    }
  }
}

uint64_t TorchInstance::add_decoder(const std::string& method, const DecoderConfig& config) {
  auto runner = std::make_unique<DecoderRunner>(
      method, config, model_.binding(method).tokenizer, device_,
      [this](const std::string& name, std::vector<c10::IValue> args) {
        return call(name, std::move(args));
      },
      *this);
  const uint64_t bytes = runner->cache_bytes();
  decoders_[method] = std::move(runner);
  return bytes;
}

bool TorchInstance::has_room(const MethodInfo& method) const {
  const auto it = decoders_.find(method.name);
  return it == decoders_.end() || it->second->has_room();
}

Result<GenerateStart> TorchInstance::generate_start(const MethodInfo& method,
                                                    PreparedInputs& inputs) {
  const Binding& binding = model_.binding(method.name);
  Result<GenerateStart> out = internal_error("not run");
  if (method.decoder) {
    stream_.run([&] {
      c10::InferenceMode guard;
      out = decoders_.at(method.name)->start(static_cast<TorchInputs&>(inputs).args);
    });
    return out;
  }
  stream_.run([&] {
    c10::InferenceMode guard;
    try {
      auto state = std::make_unique<TorchState>();
      state->value = call(binding.init, static_cast<TorchInputs&>(inputs).args);
      if (method.step_batchable) {
        auto key = state_key(state->value, binding.init);
        if (!key.ok()) {
          out = key.error();
          return;
        }
        state->key_ = std::move(key).value();
      }
      out = GenerateStart{std::move(state), {}};
    } catch (const std::exception& e) {
      out = model_error(binding.init, e);
    }
  });
  return out;
}

StepOutcome TorchInstance::step_single(const Binding& binding, TorchState& state) {
  StepOutcome outcome;
  try {
    const c10::IValue result = call(binding.step, {state.value});
    const auto& elements = result.toTupleRef().elements();
    if (!elements[0].isNone()) {
      auto chunk = encode(elements[0]);
      if (!chunk.ok()) {
        outcome.error = chunk.error();
        return outcome;
      }
      outcome.chunk = std::move(chunk).value();
    }
    state.value = elements[1];
    outcome.done = elements[2].toBool();
  } catch (const std::exception& e) {
    outcome.error = model_error(binding.step, e);
  }
  return outcome;
}

void TorchInstance::step_batch(const Binding& binding, std::span<CallState* const> states,
                               std::span<StepOutcome> outcomes) {
  const size_t n = states.size();
  const c10::IValue batched =
      n == 1 ? static_cast<TorchState*>(states[0])->value : cat_states(states);
  const c10::IValue result = call(binding.step, {batched});
  const auto& elements = result.toTupleRef().elements();
  const c10::IValue& chunks = elements[0];
  const c10::IValue& next = elements[1];
  const c10::IValue& done = elements[2];
  const auto count = [](const c10::IValue& v) -> int64_t {
    if (v.isList()) return static_cast<int64_t>(v.toListRef().size());
    if (v.isTensor() && v.toTensor().dim() > 0) return v.toTensor().size(0);
    return -1;
  };
  if (count(chunks) != static_cast<int64_t>(n) || count(done) != static_cast<int64_t>(n)) {
    throw std::runtime_error(binding.step + " returned chunks or done flags for " +
                             std::to_string(count(chunks)) + " rows, expected " +
                             std::to_string(n));
  }
  at::Tensor done_flags;
  if (done.isTensor()) done_flags = done.toTensor().to(at::kCPU).to(at::kBool).contiguous();
  for (size_t i = 0; i < n; ++i) {
    auto& state = *static_cast<TorchState*>(states[i]);
    auto& outcome = outcomes[i];
    const auto row = static_cast<int64_t>(i);
    c10::IValue chunk =
        chunks.isList() ? chunks.toListRef()[i] : c10::IValue(chunks.toTensor().select(0, row));
    if (!chunk.isNone()) {
      auto encoded = encode(chunk);
      if (!encoded.ok()) {
        outcome.error = encoded.error();
        continue;
      }
      outcome.chunk = std::move(encoded).value();
    }
    outcome.done = done.isList() ? done.toListRef()[i].toBool() : done_flags[row].item<bool>();
    state.value = n == 1 ? next : state_row(next, row);
  }
}

std::vector<StepOutcome> TorchInstance::generate_step(const MethodInfo& method,
                                                      std::span<CallState* const> states) {
  const Binding& binding = model_.binding(method.name);
  std::vector<StepOutcome> outcomes(states.size());
  if (method.decoder) {
    stream_.run([&] {
      c10::InferenceMode guard;
      decoders_.at(method.name)->step(states, outcomes);
    });
    return outcomes;
  }
  stream_.run([&] {
    try {
      step_all(binding, method, states, outcomes);
    } catch (const std::exception& e) {
      for (auto& outcome : outcomes) {
        outcome = StepOutcome{};
        outcome.error = model_error(binding.step, e);
      }
    }
  });
  return outcomes;
}

void TorchInstance::step_all(const Binding& binding, const MethodInfo& method,
                             std::span<CallState* const> states,
                             std::vector<StepOutcome>& outcomes) {
  {
    c10::InferenceMode guard;
    if (!method.step_batchable) {
      for (size_t i = 0; i < states.size(); ++i) {
        outcomes[i] = step_single(binding, *static_cast<TorchState*>(states[i]));
      }
      return;
    }
    try {
      step_batch(binding, states, outcomes);
    } catch (const std::exception& e) {
      if (states.size() == 1) {
        outcomes[0] = StepOutcome{};
        outcomes[0].error = model_error(binding.step, e);
        return;
      }
      // Retry each call alone so that one bad state does not end the others.
      for (size_t i = 0; i < states.size(); ++i) {
        outcomes[i] = StepOutcome{};
        try {
          step_batch(binding, states.subspan(i, 1), std::span<StepOutcome>(&outcomes[i], 1));
        } catch (const std::exception& single) {
          outcomes[i].error = model_error(binding.step, single);
        }
      }
    }
  }
}

Result<std::unique_ptr<CallState>> TorchInstance::stream_start(const MethodInfo& method) {
  const Binding& binding = model_.binding(method.name);
  Result<std::unique_ptr<CallState>> out = internal_error("not run");
  stream_.run([&] {
    c10::InferenceMode guard;
    try {
      auto state = std::make_unique<TorchState>();
      state->value = call(binding.init, {});
      out = std::unique_ptr<CallState>(std::move(state));
    } catch (const std::exception& e) {
      out = model_error(binding.init, e);
    }
  });
  return out;
}

Result<WireValue> TorchInstance::stream_item(const MethodInfo& method, PreparedInputs& inputs,
                                             CallState* state) {
  const Binding& binding = model_.binding(method.name);
  Result<WireValue> out = internal_error("not run");
  stream_.run([&] {
    c10::InferenceMode guard;
    try {
      std::vector<c10::IValue> args = static_cast<TorchInputs&>(inputs).args;
      if (!method.stateful) {
        out = encode(call(binding.call, std::move(args)));
        return;
      }
      auto& torch_state = *static_cast<TorchState*>(state);
      args.push_back(torch_state.value);
      const c10::IValue result = call(binding.call, std::move(args));
      const auto& elements = result.toTupleRef().elements();
      torch_state.value = elements[1];
      out = encode(elements[0]);
    } catch (const std::exception& e) {
      out = model_error(binding.call, e);
    }
  });
  return out;
}

Result<std::unique_ptr<PreparedInputs>> TorchModel::prepare_with(const MethodInfo& method,
                                                                 const json& inputs,
                                                                 std::span<const std::string> parts,
                                                                 const ValueLimits& limits) const {
  const Binding& binding = bindings_.at(method.name);
  const auto names = [&] {
    std::string list;
    for (const auto& param : binding.params) list += (list.empty() ? "" : ", ") + param.name;
    return list.empty() ? std::string("no inputs") : list;
  };
  if (!inputs.is_object()) {
    return invalid_argument("inputs must be an object of parameter name to Value (" + method.name +
                            " takes " + names() + ")");
  }
  for (const auto& item : inputs.items()) {
    const std::string& key = item.key();
    const bool known = std::any_of(binding.params.begin(), binding.params.end(),
                                   [&](const Param& p) { return p.name == key; });
    if (!known) {
      return invalid_argument("unknown input '" + key + "' (" + method.name + " takes " + names() +
                              ")");
    }
  }
  auto prepared = std::make_unique<TorchInputs>();
  prepared->args.reserve(binding.params.size());
  c10::InferenceMode guard;
  for (const auto& param : binding.params) {
    const std::string where = "input '" + param.name + "'";
    const auto it = inputs.find(param.name);
    if (it == inputs.end()) {
      if (!param.default_value) {
        return invalid_argument("missing input '" + param.name + "' (" +
                                param.type->annotation_str() + ")");
      }
      prepared->args.push_back(*param.default_value);
      continue;
    }
    OUTPOST_ASSIGN_OR_RETURN(auto value, value_to_ivalue(*it, param.type, parts, limits, where));
    if (param.spec && value.isTensor()) {
      const at::Tensor& tensor = value.toTensor();
      const auto expected = to_scalar_type(param.spec->dtype);
      if (tensor.scalar_type() != expected) {
        return invalid_argument(where + ": expected dtype " +
                                std::string(dtype_name(param.spec->dtype)) + ", got " +
                                std::string(dtype_name(*from_scalar_type(tensor.scalar_type()))));
      }
      bool shape_ok = tensor.dim() == static_cast<int64_t>(param.spec->shape.size());
      for (size_t d = 0; shape_ok && d < param.spec->shape.size(); ++d) {
        const int64_t want = param.spec->shape[d];
        shape_ok = want < 0 || tensor.size(static_cast<int64_t>(d)) == want;
      }
      if (!shape_ok) {
        std::string want = "[";
        for (size_t d = 0; d < param.spec->shape.size(); ++d) {
          want +=
              (d > 0 ? ", " : "") +
              (param.spec->shape[d] < 0 ? std::string("*") : std::to_string(param.spec->shape[d]));
        }
        return invalid_argument(where + ": expected shape " + want + "], got " +
                                shape_string(tensor.sizes()));
      }
    }
    prepared->args.push_back(std::move(value));
  }
  if (method.decoder) {
    OUTPOST_RETURN_IF_ERROR(
        prepare_decoder_args(prepared->args, *method.decoder, binding.tokenizer.get()));
  }
  if (binding.batched) {
    int64_t rows = -1;
    for (size_t p = 0; p < binding.params.size(); ++p) {
      const at::Tensor& tensor = prepared->args[p].toTensor();
      if (tensor.dim() == 0) {
        return invalid_argument("input '" + binding.params[p].name +
                                "': a batched method needs a first (batch) dimension");
      }
      if (rows >= 0 && tensor.size(0) != rows) {
        return invalid_argument("inputs of one request must have the same batch size; '" +
                                binding.params[p].name + "' has " + std::to_string(tensor.size(0)) +
                                " rows, not " + std::to_string(rows));
      }
      rows = tensor.size(0);
      prepared->key_ += tensor_signature(tensor, true);
    }
    if (rows == 0) return invalid_argument("a request needs at least one row");
    prepared->rows_ = rows;
  }
  return std::unique_ptr<PreparedInputs>(std::move(prepared));
}

Status TorchModel::bind_method(const std::string& name, MethodKind kind, bool stateful,
                               const std::map<std::string, c10::FunctionSchema>& schemas,
                               const ModelConfig& config, bool named_in_config) {
  const MethodConfig settings = config.method(name);
  Binding binding;
  MethodInfo info;
  info.name = name;
  info.kind = kind;
  info.stateful = stateful;
  info.batching = settings.batching;
  info.step_batchable = settings.step_batchable;
  info.max_steps = settings.max_steps;
  info.window = settings.window;
  const auto refuse = [&](const std::string& why) -> Status {
    if (named_in_config) return invalid_argument("method " + name + ": " + why);
    LOG_INFO("model.method_skipped", "method " << name << " is not served: " << why);
    return {};
  };

  const c10::FunctionSchema* params_schema = nullptr;
  switch (kind) {
    case MethodKind::kUnary:
      binding.call = name;
      params_schema = &schemas.at(name);
      break;
    case MethodKind::kGenerate:
      binding.init = name + "_init";
      binding.step = name + "_step";
      params_schema = &schemas.at(binding.init);
      break;
    case MethodKind::kStream:
      binding.call = name;
      if (stateful) binding.init = name + "_init";
      params_schema = &schemas.at(name);
      break;
  }

  // Parameters (after self; a stateful stream's last parameter is its state).
  const auto& arguments = params_schema->arguments();
  const size_t end = arguments.size() - (stateful ? 1 : 0);
  for (size_t i = 1; i < end; ++i) {
    const auto& argument = arguments[i];
    if (!input_type_supported(argument.type())) {
      return refuse("parameter '" + argument.name() + "' has type " +
                    argument.type()->annotation_str() + ", which requests cannot carry");
    }
    // Copy the default itself (c10::optional did not convert to std::optional before 2.x).
    Param param{argument.name(), argument.type(), std::nullopt, std::nullopt};
    if (argument.default_value()) param.default_value = *argument.default_value();
    ParamInfo param_info{argument.name(), argument.type()->annotation_str(), std::nullopt,
                         std::nullopt};
    if (argument.default_value())
      param_info.default_value = default_to_json(*argument.default_value());
    if (const auto spec = settings.inputs.find(argument.name()); spec != settings.inputs.end()) {
      if (!is_tensor(argument.type())) {
        return invalid_argument("config.yaml: methods." + name + ".inputs." + argument.name() +
                                " gives a tensor shape, but the parameter is " +
                                argument.type()->annotation_str());
      }
      param.spec = spec->second;
      param_info.spec = spec->second;
    }
    binding.params.push_back(std::move(param));
    info.inputs.push_back(std::move(param_info));
  }
  for (const auto& input : settings.inputs) {
    const std::string& param_name = input.first;
    const bool exists = std::any_of(binding.params.begin(), binding.params.end(),
                                    [&](const Param& p) { return p.name == param_name; });
    if (!exists) {
      return invalid_argument("config.yaml: methods." + name + ".inputs." + param_name +
                              " names no parameter of " + name);
    }
  }

  // Results and contracts.
  const auto single_return = [](const c10::FunctionSchema& schema) -> c10::TypePtr {
    if (schema.returns().size() != 1) return c10::NoneType::get();
    return schema.returns()[0].type();
  };
  switch (kind) {
    case MethodKind::kUnary: {
      const auto returns = single_return(*params_schema);
      info.returns = returns->annotation_str();
      if (info.batching.max_batch_size > 0) {
        std::string why;
        for (const auto& param : binding.params) {
          if (!is_tensor(param.type)) {
            why = "parameter '" + param.name + "' is " + param.type->annotation_str() +
                  " (a batched method takes only Tensors)";
            break;
          }
        }
        if (why.empty() && binding.params.empty()) why = "it takes no inputs";
        if (why.empty() && !is_splittable(returns)) {
          why = "it returns " + returns->annotation_str() +
                " (a batched method returns Tensors, lists, or tuples or dicts of them)";
        }
        if (!why.empty()) {
          if (settings.batching_set) {
            return invalid_argument("config.yaml: methods." + name + ".batching: " + name +
                                    " cannot be batched: " + why);
          }
          info.batching.max_batch_size = 0;
        }
      }
      binding.batched = info.batching.max_batch_size > 0;
      break;
    }
    case MethodKind::kGenerate: {
      const auto& step = schemas.at(binding.step);
      const auto state_type = single_return(*params_schema);
      const auto step_return = single_return(step);
      if (step.arguments().size() != 2 || step_return->kind() != c10::TypeKind::TupleType ||
          step_return->expectRef<c10::TupleType>().elements().size() != 3) {
        return refuse(binding.step + " must take (self, state) and return (chunk, state, done)");
      }
      const auto& elements = step_return->expectRef<c10::TupleType>().elements();
      auto chunk_type = elements[0];
      if (info.step_batchable) {
        if (!is_tensor_or_tensor_tuple(state_type)) {
          return refuse("step_batchable needs a state of Tensor or Tuple[Tensor, ...], not " +
                        state_type->annotation_str());
        }
        if (chunk_type->kind() == c10::TypeKind::ListType) {
          chunk_type = chunk_type->expectRef<c10::ListType>().getElementType();
        } else if (!is_tensor(chunk_type)) {
          return refuse("a step_batchable " + binding.step +
                        " returns its chunks as a List or a Tensor, one row per call");
        }
      } else if (elements[2]->kind() != c10::TypeKind::BoolType) {
        return refuse(binding.step + " must return done as a bool");
      }
      if (chunk_type->kind() == c10::TypeKind::OptionalType) {
        chunk_type = chunk_type->expectRef<c10::OptionalType>().getElementType();
      }
      info.returns = chunk_type->annotation_str();
      break;
    }
    case MethodKind::kStream: {
      const auto returns = single_return(*params_schema);
      if (stateful) {
        if (returns->kind() != c10::TypeKind::TupleType ||
            returns->expectRef<c10::TupleType>().elements().size() != 2) {
          return refuse("a stateful stream method returns (output, state)");
        }
        if (schemas.at(binding.init).arguments().size() != 1) {
          return refuse(binding.init + " must take no inputs (it makes the first state)");
        }
        info.returns = returns->expectRef<c10::TupleType>().elements()[0]->annotation_str();
      } else {
        info.returns = returns->annotation_str();
      }
      break;
    }
  }
  binding.example = settings.example;
  infos_.push_back(std::move(info));
  bindings_.emplace(name, std::move(binding));
  return {};
}

Status TorchModel::bind_decoder(const std::string& name,
                                const std::map<std::string, c10::FunctionSchema>& schemas,
                                const ModelConfig& config, const std::string& package_dir) {
  const MethodConfig settings = config.method(name);
  if (!settings.decoder) {
    return invalid_argument(config.file + " exports " + name + "_prefill and " + name +
                            "_decode, a decoder method: config.yaml must give methods." + name +
                            ".decoder (the KV cache's geometry; see docs/models.md)");
  }
  OUTPOST_RETURN_IF_ERROR(check_decoder_contract(name, schemas));
  const DecoderConfig& decoder = *settings.decoder;
  MethodInfo info;
  info.name = name;
  info.kind = MethodKind::kGenerate;
  info.returns = kDecoderChunkType;
  info.step_batchable = true;  // every running sequence of an instance in one decode call
  info.batching = settings.batching;
  info.batching.max_batch_size = decoder.slots;
  info.max_steps = std::numeric_limits<int64_t>::max();  // max_tokens and the context end it
  info.decoder = decoder;
  Binding binding;
  OUTPOST_ASSIGN_OR_RETURN(binding.tokenizer, open_tokenizer(decoder, package_dir));
  binding.example = settings.example;
  for (const auto& param : decoder_params()) {
    binding.params.push_back(Param{param.name, param.type, param.default_value, std::nullopt});
    info.inputs.push_back(ParamInfo{param.name, param.type->annotation_str(),
                                    default_to_json(param.default_value), std::nullopt});
  }
  infos_.push_back(std::move(info));
  bindings_.emplace(name, std::move(binding));
  return {};
}

Status TorchModel::bind(const std::map<std::string, c10::FunctionSchema>& schemas,
                        const ModelConfig& config, const std::string& package_dir) {
  const auto has = [&](const std::string& name) { return schemas.count(name) > 0; };
  const auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() > suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  std::set<std::string> helpers;
  std::map<std::string, std::pair<MethodKind, bool>> resolved;  // name -> kind, stateful
  std::set<std::string> decoders;
  for (const auto& [name, schema] : schemas) {
    // NAME_prefill + NAME_decode: a generate method under the decoder contract.
    if (name.empty() || name[0] == '_' || !ends_with(name, "_prefill")) continue;
    const std::string base = name.substr(0, name.size() - 8);
    if (!has(base + "_decode")) continue;
    resolved[base] = {MethodKind::kGenerate, false};
    decoders.insert(base);
    helpers.insert(name);
    helpers.insert(base + "_decode");
  }
  for (const auto& [name, schema] : schemas) {
    if (name.empty() || name[0] == '_' || !ends_with(name, "_init")) continue;
    const std::string base = name.substr(0, name.size() - 5);
    if (has(base + "_step")) {
      resolved[base] = {MethodKind::kGenerate, false};
      helpers.insert(name);
      helpers.insert(base + "_step");
    } else if (has(base)) {
      const auto& arguments = schemas.at(base).arguments();
      if (arguments.size() >= 2 && arguments.back().name() == "state") {
        resolved[base] = {MethodKind::kStream, true};
        helpers.insert(name);
      }
    }
  }
  for (const auto& [name, schema] : schemas) {
    if (name.empty() || name[0] == '_' || helpers.count(name) > 0 || resolved.count(name) > 0) {
      continue;
    }
    resolved[name] = {MethodKind::kUnary, false};
  }
  for (const auto& [name, settings] : config.methods) {
    const auto it = resolved.find(name);
    if (it == resolved.end()) {
      return invalid_argument("config.yaml names method " + name + ", which " + config.file +
                              " does not export");
    }
    if (settings.decoder && decoders.count(name) == 0) {
      return invalid_argument("config.yaml: methods." + name + ".decoder is set, but " +
                              config.file + " exports no " + name + "_prefill and " + name +
                              "_decode (see docs/models.md, decoder models)");
    }
    if (!settings.kind) continue;
    const std::string_view kind = method_kind_name(it->second.first);
    if (*settings.kind == "stream" && it->second.first == MethodKind::kUnary) {
      it->second = {MethodKind::kStream, false};  // a stateless stream method
    } else if (*settings.kind != kind) {
      return invalid_argument("config.yaml: methods." + name + ".kind is " + *settings.kind +
                              ", but " + config.file + " exports it as a " + std::string(kind) +
                              " method (see docs/models.md for the generate and stream contracts)");
    }
  }
  infos_.reserve(resolved.size());
  for (const auto& [name, kind] : resolved) {
    if (decoders.count(name) > 0) {
      OUTPOST_RETURN_IF_ERROR(bind_decoder(name, schemas, config, package_dir));
      continue;
    }
    OUTPOST_RETURN_IF_ERROR(bind_method(name, kind.first, kind.second, schemas, config,
                                        config.methods.count(name) > 0));
  }
  if (infos_.empty()) {
    return invalid_argument(config.file + " exports no method that outpost can serve");
  }
  // Bindings point at their MethodInfo; infos_ no longer grows.
  for (auto& info : infos_) bindings_.at(info.name).info = &info;
  return {};
}

void TorchModel::add_instance(std::unique_ptr<TorchProgram> program) {
  auto instance = std::make_unique<TorchInstance>(*this, std::move(program), device_);
  for (const auto& [name, binding] : bindings_) {
    if (binding.info->decoder) {
      memory_.cache_bytes += instance->add_decoder(name, *binding.info->decoder);
    }
  }
  instances_.push_back(std::move(instance));
}

Status TorchModel::warmup(int64_t runs) {
  ValueLimits limits = limits_;
  limits.allow_zeros = true;
  for (const auto& info : infos_) {
    const Binding& binding = bindings_.at(info.name);
    json example = json::object();
    if (binding.example) {
      example = *binding.example;
    } else if (info.decoder) {
      example = json{{"prompt_tokens", {0}}, {"max_tokens", 2}};  // token 0: in any vocabulary
    } else {
      bool complete = true;
      for (const auto& param : binding.params) {
        if (param.default_value) continue;
        if (!param.spec) {
          complete = false;
          break;
        }
        json shape = json::array();
        for (const int64_t dim : param.spec->shape) shape.push_back(dim < 0 ? 1 : dim);
        example[param.name] = json{{"dtype", dtype_name(param.spec->dtype)}, {"shape", shape}};
      }
      if (!complete) {
        LOG_INFO("model.warmup_skipped", "method " << info.name
                                                   << " has no example in config.yaml; not "
                                                      "warmed up");
        continue;
      }
    }
    auto inputs = prepare_with(info, example, {}, limits);
    if (!inputs.ok()) {
      return invalid_argument("config.yaml: methods." + info.name +
                              ".example: " + inputs.error().message());
    }
    PreparedInputs* one = inputs->get();
    std::vector<PreparedInputs*> full;
    if (binding.batched && info.batching.max_batch_size > one->rows()) {
      full.assign(static_cast<size_t>(info.batching.max_batch_size / one->rows()), one);
    }
    const auto failed = [&](const Error& error) {
      return invalid_argument("warmup of method " + info.name + " failed: " + error.message());
    };
    for (auto& instance : instances_) {
      for (int64_t run = 0; run < runs; ++run) {
        switch (info.kind) {
          case MethodKind::kUnary: {
            auto result = instance->run(info, std::span<PreparedInputs* const>(&one, 1));
            if (!result.front().ok()) return failed(result.front().error());
            if (!full.empty()) {
              for (auto& batch_result : instance->run(info, full)) {
                if (!batch_result.ok()) return failed(batch_result.error());
              }
            }
            break;
          }
          case MethodKind::kGenerate: {
            auto started = instance->generate_start(info, *one);
            if (!started.ok()) return failed(started.error());
            if (started->first.error) return failed(*started->first.error);
            if (started->first.done) break;
            CallState* states[] = {started->state.get()};
            for (int step = 0; step < 2; ++step) {
              auto outcome = instance->generate_step(info, states);
              if (outcome.front().error) return failed(*outcome.front().error);
              if (outcome.front().done) break;
            }
            break;
          }
          case MethodKind::kStream: {
            std::unique_ptr<CallState> state;
            if (info.stateful) {
              auto started = instance->stream_start(info);
              if (!started.ok()) return failed(started.error());
              state = std::move(started).value();
            }
            auto output = instance->stream_item(info, *one, state.get());
            if (!output.ok()) return failed(output.error());
            break;
          }
        }
      }
    }
  }
  return {};
}

void TorchModel::measure(uint64_t device_bytes_before) {
  device_bytes_before_ = device_bytes_before;
  std::set<const c10::StorageImpl*> seen;
  uint64_t weights = 0;
  for (const auto& instance : instances_) {
    for (const at::Tensor& tensor : instance->program().weights()) {
      if (!tensor.has_storage()) continue;
      const c10::Storage& storage = tensor.storage();
      if (!seen.insert(storage.unsafeGetStorageImpl()).second) continue;
      weights += storage.nbytes();
      storages_.push_back(storage.getWeakStorageImpl());
    }
  }
  memory_.weights_bytes = weights;
  if (!device_.is_cpu()) {
    const uint64_t now = device_memory(device_name_).allocated;
    memory_.device_bytes = now > device_bytes_before ? now - device_bytes_before : 0;
  }
}

ReleaseReport TorchModel::release() {
  ReleaseReport report;
  instances_.clear();
  uint64_t held = 0;
  size_t held_count = 0;
  for (const auto& weak : storages_) {
    const auto strong = weak.lock();
    if (strong) {
      held += strong->nbytes();
      ++held_count;
    }
  }
  storages_.clear();
  release_cached_memory(device_name_);
  report.freed_bytes = memory_.weights_bytes - std::min(held, memory_.weights_bytes);
  if (held_count > 0) {
    report.memory_returned = false;
    report.detail = std::to_string(held_count) + " weight tensors (" + std::to_string(held) +
                    " bytes) are still referenced after unload";
  }
  if (!device_.is_cpu()) {
    const auto after = device_memory(device_name_);
    // Allow the allocator's rounding: 2 MiB blocks.
    if (after.allocated > device_bytes_before_ + (uint64_t{2} << 20)) {
      report.memory_returned = false;
      report.detail += (report.detail.empty() ? "" : "; ") +
                       std::string("device allocator holds ") +
                       std::to_string(after.allocated - device_bytes_before_) +
                       " bytes more than before the load";
    }
  }
  return report;
}

// A TorchScript module: every method it exports, with the schemas TorchScript gives them.
class ScriptProgram final : public TorchProgram {
 public:
  explicit ScriptProgram(torch::jit::Module module) : module_(std::move(module)) {
    for (const auto& method : module_.get_methods()) methods_.emplace(method.name(), method);
  }

  std::map<std::string, c10::FunctionSchema> schemas() const override {
    std::map<std::string, c10::FunctionSchema> out;
    for (const auto& [name, method] : methods_) out.emplace(name, method.function().getSchema());
    return out;
  }

  c10::IValue call(const std::string& method, std::vector<c10::IValue> args) override {
    return methods_.at(method)(std::move(args));
  }

  std::vector<at::Tensor> weights() const override {
    std::vector<at::Tensor> out;
    for (const auto& attribute : module_.named_attributes(/*recurse=*/true)) {
      if (attribute.value.isTensor()) out.push_back(attribute.value.toTensor());
    }
    return out;
  }

 private:
  torch::jit::Module module_;
  std::unordered_map<std::string, torch::jit::Method> methods_;
};

Result<std::unique_ptr<TorchProgram>> open_script_program(const std::string& path,
                                                          const ModelConfig& config,
                                                          const c10::Device& device) {
  const std::string& file = config.file;
  try {
    c10::InferenceMode guard;
    torch::jit::Module module = torch::jit::load(path, device);
    module.eval();
    return std::unique_ptr<TorchProgram>(std::make_unique<ScriptProgram>(std::move(module)));
  } catch (const std::exception& e) {
    const std::string text = exception_text(e);
    if (text.find("constants.pkl") != std::string::npos) {
      // An archive without TorchScript code: what torch.save of a module or state_dict writes.
      return Error(ErrorCode::kDataLoss,
                   file +
                       " is a torch.save checkpoint (a pickled module or state_dict), not a "
                       "TorchScript archive: save the model with torch.jit.script(model)"
                       ".save(\"" +
                       file +
                       "\"), or export it as an AOTInductor package "
                       "(docs/models.md, \"Exporting a model\")");
    }
    return Error(ErrorCode::kDataLoss,
                 file + " is not a TorchScript archive outpost can load: " + text);
  }
}

// Loads packages of one format: TorchScript archives or AOTInductor packages.
class TorchLoader final : public ModelLoader {
 public:
  using Open = Result<std::unique_ptr<TorchProgram>> (*)(const std::string&, const ModelConfig&,
                                                         const c10::Device&);
  TorchLoader(std::string_view type, Open open) : type_(type), open_(open) {}

  std::string_view type() const override { return type_; }
  Result<std::unique_ptr<LoadedModel>> load(const ModelPackage& package,
                                            const LoadOptions& options) override;

 private:
  Result<std::unique_ptr<LoadedModel>> load_checked(const ModelPackage& package,
                                                    const LoadOptions& options);
  std::string_view type_;
  Open open_;
};

Result<std::unique_ptr<LoadedModel>> TorchLoader::load(const ModelPackage& package,
                                                       const LoadOptions& options) {
  try {
    return load_checked(package, options);
  } catch (const std::exception& e) {
    return invalid_argument("loading " + package.config.file + " failed: " + exception_text(e));
  }
}

Result<std::unique_ptr<LoadedModel>> TorchLoader::load_checked(const ModelPackage& package,
                                                               const LoadOptions& options) {
  OUTPOST_ASSIGN_OR_RETURN(const auto device, parse_device(options.device));
  const ModelConfig& config = package.config;
  const int64_t instances =
      options.inspect_only ? 1 : (options.instances > 0 ? options.instances : config.instances);
  const uint64_t device_before = device_memory(options.device).allocated;
  ValueLimits limits;
  limits.max_tensor_bytes = options.max_tensor_bytes;
  auto model = std::make_unique<TorchModel>(options.device, device, limits);
  for (int64_t i = 0; i < instances; ++i) {
    OUTPOST_ASSIGN_OR_RETURN(auto program, open_(package.file_path, config, device));
    if (i == 0) OUTPOST_RETURN_IF_ERROR(model->bind(program->schemas(), config, package.dir));
    model->add_instance(std::move(program));
  }
  if (options.warmup) {
    // At inspect (upload) once, even with warmup_runs: 0: a package whose examples do not fit
    // or whose warm-up raises is refused at upload, not found out on every node.
    OUTPOST_RETURN_IF_ERROR(model->warmup(options.inspect_only ? 1 : config.warmup_runs));
  }
  model->measure(device_before);
  return std::unique_ptr<LoadedModel>(std::move(model));
}

}  // namespace

std::unique_ptr<ModelLoader> make_torchscript_loader() {
  return std::make_unique<TorchLoader>("torchscript", &open_script_program);
}

std::unique_ptr<ModelLoader> make_aoti_loader() {
  return std::make_unique<TorchLoader>("aoti", &open_aoti_program);
}

std::vector<std::unique_ptr<ModelLoader>> make_loaders() {
  std::vector<std::unique_ptr<ModelLoader>> loaders;
  loaders.push_back(make_torchscript_loader());
  loaders.push_back(make_aoti_loader());
  return loaders;
}

std::unique_ptr<ModelLoader> make_loader(std::string_view type) {
  if (type == "torchscript") return make_torchscript_loader();
  if (type == "aoti") return make_aoti_loader();
  return nullptr;
}

}  // namespace outpost::runtime
