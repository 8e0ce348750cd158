#include "runtime/model.h"

#include "protocol/tensor_wire.h"

namespace outpost::runtime {

std::string_view method_kind_name(MethodKind kind) {
  switch (kind) {
    case MethodKind::kUnary:
      return "unary";
    case MethodKind::kGenerate:
      return "generate";
    case MethodKind::kStream:
      return "stream";
  }
  return "unknown";
}

nlohmann::json MethodInfo::to_json() const {
  nlohmann::json params = nlohmann::json::array();
  for (const auto& param : inputs) {
    nlohmann::json item{{"name", param.name}, {"type", param.type}};
    if (param.default_value) item["default"] = *param.default_value;
    if (param.spec) {
      item["dtype"] = dtype_name(param.spec->dtype);
      item["shape"] = param.spec->shape;  // -1: any size
    }
    params.push_back(std::move(item));
  }
  nlohmann::json out{
      {"name", name}, {"kind", method_kind_name(kind)}, {"inputs", params}, {"returns", returns}};
  if (decoder) {
    out["decoder"] =
        nlohmann::json{{"slots", decoder->slots},
                       {"max_context", decoder->max_context},
                       {"cache_bytes", decoder->cache_bytes()},
                       {"tokenizer", decoder->tokenizer.empty() ? "none" : decoder->tokenizer}};
  }
  return out;
}

const MethodInfo* LoadedModel::find_method(std::string_view name) const {
  for (const auto& method : methods()) {
    if (method.name == name) return &method;
  }
  return nullptr;
}

}  // namespace outpost::runtime
