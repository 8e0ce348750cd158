#include "runtime/torch_values.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include "common/json_reader.h"
#include "common/utf8.h"
#include "protocol/worker_protocol.h"

namespace outpost::runtime {
namespace {

using nlohmann::json;

// What a value is, in words: a tensor or bytes by their shape, else its JSON type.
std::string json_kind(const json& value) {
  if (value.is_object() && looks_like_tensor(value)) return "a tensor";
  if (value.is_object() && looks_like_bytes(value)) return "bytes";
  return json_type_name(value);
}

Error mismatch(const std::string& where, const c10::TypePtr& type, const json& value) {
  return invalid_argument(where + ": expected " + type->annotation_str() + ", got " +
                          json_kind(value));
}

at::Tensor tensor_from_wire(const WireTensor& wire) {
  const at::ScalarType scalar = to_scalar_type(wire.dtype);
  const std::vector<int64_t>& shape = wire.shape;
  if (wire.int_values) {
    auto values = *wire.int_values;
    return at::from_blob(values.data(), {static_cast<int64_t>(values.size())}, at::kLong)
        .to(scalar, false, true)
        .reshape(shape);
  }
  if (wire.float_values) {
    auto values = *wire.float_values;
    return at::from_blob(values.data(), {static_cast<int64_t>(values.size())}, at::kDouble)
        .to(scalar, false, true)
        .reshape(shape);
  }
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(scalar));
  const std::string_view bytes = wire.bytes();
  if (!bytes.empty()) std::memcpy(tensor.data_ptr(), bytes.data(), bytes.size());
  return tensor;
}

Result<c10::IValue> convert(const json& value, const c10::TypePtr& type,
                            std::span<const std::string> parts, const ValueLimits& limits,
                            const std::string& where, size_t depth) {
  if (depth > limits.max_depth) {
    return invalid_argument(where + ": nested more than " + std::to_string(limits.max_depth) +
                            " levels deep");
  }
  switch (type->kind()) {
    case c10::TypeKind::TensorType: {
      if (looks_like_bytes(value)) {
        std::string owned;
        OUTPOST_ASSIGN_OR_RETURN(const auto bytes, decode_bytes(value, parts, owned, where));
        at::Tensor tensor = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
        if (!bytes.empty()) std::memcpy(tensor.data_ptr(), bytes.data(), bytes.size());
        return c10::IValue(std::move(tensor));
      }
      if (!looks_like_tensor(value)) return mismatch(where, type, value);
      OUTPOST_ASSIGN_OR_RETURN(const auto wire, decode_tensor(value, parts, limits.max_tensor_bytes,
                                                              where, limits.allow_zeros));
      return c10::IValue(tensor_from_wire(wire));
    }
    case c10::TypeKind::StringType: {
      if (value.is_string()) return c10::IValue(value.get<std::string>());
      if (looks_like_bytes(value)) {
        std::string owned;
        OUTPOST_ASSIGN_OR_RETURN(const auto bytes, decode_bytes(value, parts, owned, where));
        return c10::IValue(std::string(bytes));
      }
      return mismatch(where, type, value);
    }
    case c10::TypeKind::IntType: {
      if (value.is_number_unsigned()) {
        if (value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return invalid_argument(where + ": " + json_text(value) + " does not fit in an int");
        }
        return c10::IValue(static_cast<int64_t>(value.get<uint64_t>()));
      }
      if (value.is_number_integer()) return c10::IValue(value.get<int64_t>());
      return mismatch(where, type, value);
    }
    case c10::TypeKind::FloatType:
      if (value.is_number()) return c10::IValue(value.get<double>());
      return mismatch(where, type, value);
    case c10::TypeKind::NumberType:
      if (value.is_number_integer()) return c10::IValue(value.get<int64_t>());
      if (value.is_number()) return c10::IValue(value.get<double>());
      return mismatch(where, type, value);
    case c10::TypeKind::BoolType:
      if (value.is_boolean()) return c10::IValue(value.get<bool>());
      return mismatch(where, type, value);
    case c10::TypeKind::NoneType:
      if (value.is_null()) return c10::IValue();
      return mismatch(where, type, value);
    case c10::TypeKind::OptionalType: {
      if (value.is_null()) return c10::IValue();
      const auto& element = type->expectRef<c10::OptionalType>().getElementType();
      return convert(value, element, parts, limits, where, depth + 1);
    }
    case c10::TypeKind::ListType: {
      if (!value.is_array()) return mismatch(where, type, value);
      const auto& element = type->expectRef<c10::ListType>().getElementType();
      c10::impl::GenericList list(element);
      list.reserve(value.size());
      for (size_t i = 0; i < value.size(); ++i) {
        OUTPOST_ASSIGN_OR_RETURN(auto item,
                                 convert(value[i], element, parts, limits,
                                         where + "[" + std::to_string(i) + "]", depth + 1));
        list.push_back(std::move(item));
      }
      return c10::IValue(list);  // a List is a shared handle
    }
    case c10::TypeKind::TupleType: {
      const auto& elements = type->expectRef<c10::TupleType>().elements();
      if (!value.is_array() || value.size() != elements.size()) {
        return invalid_argument(where + ": expected " + type->annotation_str() + ", an array of " +
                                std::to_string(elements.size()) + ", got " + json_kind(value));
      }
      std::vector<c10::IValue> items;
      for (size_t i = 0; i < elements.size(); ++i) {
        OUTPOST_ASSIGN_OR_RETURN(auto item,
                                 convert(value[i], elements[i], parts, limits,
                                         where + "[" + std::to_string(i) + "]", depth + 1));
        items.push_back(std::move(item));
      }
      return c10::IValue(c10::ivalue::Tuple::create(std::move(items)));
    }
    case c10::TypeKind::DictType: {
      if (!value.is_object() || looks_like_tensor(value)) return mismatch(where, type, value);
      const auto& dict_type = type->expectRef<c10::DictType>();
      const auto& key_type = dict_type.getKeyType();
      const auto& value_type = dict_type.getValueType();
      c10::impl::GenericDict dict(key_type, value_type);
      for (const auto& [key, item] : value.items()) {
        c10::IValue converted_key;
        if (key_type->kind() == c10::TypeKind::StringType) {
          converted_key = c10::IValue(key);
        } else if (key_type->kind() == c10::TypeKind::IntType) {
          char* end = nullptr;
          errno = 0;
          const long long number = std::strtoll(key.c_str(), &end, 10);
          if (key.empty() || errno != 0 || *end != '\0') {
            return invalid_argument(where + ": key \"" + key + "\" is not an int");
          }
          converted_key = c10::IValue(static_cast<int64_t>(number));
        } else {
          return invalid_argument(where + ": dicts with " + key_type->annotation_str() +
                                  " keys are not supported");
        }
        OUTPOST_ASSIGN_OR_RETURN(auto converted, convert(item, value_type, parts, limits,
                                                         where + "[\"" + key + "\"]", depth + 1));
        dict.insert(converted_key, converted);  // IValues: copies share the payload
      }
      return c10::IValue(dict);  // a Dict is a shared handle
    }
    default:
      return invalid_argument(where + ": parameters of type " + type->annotation_str() +
                              " cannot be sent to a model");
  }
}

Result<json> to_value(const c10::IValue& value, std::vector<std::string>& parts, size_t depth) {
  if (depth > 64) return invalid_argument("the model returned a value nested too deep");
  if (value.isNone()) return json(nullptr);
  if (value.isBool()) return json(value.toBool());
  if (value.isInt()) return json(value.toInt());
  if (value.isDouble()) {
    const double number = value.toDouble();
    if (!std::isfinite(number)) return json(nullptr);
    return json(number);
  }
  if (value.isString()) {
    const std::string& text = value.toStringRef();
    if (valid_utf8(text)) return json(text);
    parts.push_back(text);
    return json{{"part", parts.size() - 1}};
  }
  if (value.isTensor()) {
    at::Tensor tensor = value.toTensor();
    const auto dtype = from_scalar_type(tensor.scalar_type());
    if (!dtype) {
      return invalid_argument(std::string("the model returned a tensor of dtype ") +
                              c10::toString(tensor.scalar_type()) + ", which has no wire form");
    }
    if (!tensor.device().is_cpu()) tensor = tensor.to(at::kCPU);
    tensor = tensor.contiguous();
    json shape = json::array();
    for (const int64_t dim : tensor.sizes()) shape.push_back(dim);
    parts.emplace_back(static_cast<const char*>(tensor.data_ptr()), tensor.nbytes());
    return json{
        {"dtype", dtype_name(*dtype)}, {"shape", std::move(shape)}, {"part", parts.size() - 1}};
  }
  if (value.isList() || value.isTuple()) {
    json out = json::array();
    if (value.isList()) {
      for (const auto& item : value.toListRef()) {
        OUTPOST_ASSIGN_OR_RETURN(auto converted, to_value(item, parts, depth + 1));
        out.push_back(std::move(converted));
      }
    } else {
      const auto& elements = value.toTupleRef().elements();
      for (size_t i = 0; i < elements.size(); ++i) {
        OUTPOST_ASSIGN_OR_RETURN(auto converted, to_value(elements[i], parts, depth + 1));
        out.push_back(std::move(converted));
      }
    }
    return out;
  }
  if (value.isGenericDict()) {
    json out = json::object();
    for (const auto& entry : value.toGenericDict()) {
      std::string key;
      if (entry.key().isString()) {
        key = entry.key().toStringRef();
      } else if (entry.key().isInt()) {
        key = std::to_string(entry.key().toInt());
      } else {
        return invalid_argument("the model returned a dict whose keys are neither str nor int");
      }
      OUTPOST_ASSIGN_OR_RETURN(auto converted, to_value(entry.value(), parts, depth + 1));
      out[key] = std::move(converted);
    }
    return out;
  }
  if (value.isDevice()) return json(value.toDevice().str());
  return invalid_argument("the model returned a " + value.tagKind() + ", which has no wire form");
}

}  // namespace

bool input_type_supported(const c10::TypePtr& type) {
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
    case c10::TypeKind::StringType:
    case c10::TypeKind::IntType:
    case c10::TypeKind::FloatType:
    case c10::TypeKind::NumberType:
    case c10::TypeKind::BoolType:
    case c10::TypeKind::NoneType:
      return true;
    case c10::TypeKind::OptionalType:
      return input_type_supported(type->expectRef<c10::OptionalType>().getElementType());
    case c10::TypeKind::ListType:
      return input_type_supported(type->expectRef<c10::ListType>().getElementType());
    case c10::TypeKind::TupleType:
      for (const auto& element : type->expectRef<c10::TupleType>().elements()) {
        if (!input_type_supported(element)) return false;
      }
      return true;
    case c10::TypeKind::DictType: {
      const auto& dict = type->expectRef<c10::DictType>();
      const auto key = dict.getKeyType()->kind();
      return (key == c10::TypeKind::StringType || key == c10::TypeKind::IntType) &&
             input_type_supported(dict.getValueType());
    }
    default:
      return false;
  }
}

Result<c10::IValue> value_to_ivalue(const json& value, const c10::TypePtr& type,
                                    std::span<const std::string> parts, const ValueLimits& limits,
                                    const std::string& where) {
  return convert(value, type, parts, limits, where, 0);
}

Result<json> ivalue_to_value(const c10::IValue& value, std::vector<std::string>& parts) {
  return to_value(value, parts, 0);
}

json default_to_json(const c10::IValue& value) {
  std::vector<std::string> parts;
  auto converted = to_value(value, parts, 0);
  if (!converted.ok()) return json(nullptr);
  auto inline_form = parts_to_base64(*converted, parts);
  return inline_form.ok() ? *inline_form : json(nullptr);
}

at::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return at::kFloat;
    case DType::kFloat64:
      return at::kDouble;
    case DType::kFloat16:
      return at::kHalf;
    case DType::kBFloat16:
      return at::kBFloat16;
    case DType::kInt8:
      return at::kChar;
    case DType::kInt16:
      return at::kShort;
    case DType::kInt32:
      return at::kInt;
    case DType::kInt64:
      return at::kLong;
    case DType::kUInt8:
      return at::kByte;
    case DType::kBool:
      return at::kBool;
  }
  return at::kFloat;
}

std::optional<DType> from_scalar_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kDouble:
      return DType::kFloat64;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kChar:
      return DType::kInt8;
    case at::kShort:
      return DType::kInt16;
    case at::kInt:
      return DType::kInt32;
    case at::kLong:
      return DType::kInt64;
    case at::kByte:
      return DType::kUInt8;
    case at::kBool:
      return DType::kBool;
    default:
      return std::nullopt;
  }
}

std::string tensor_signature(const at::Tensor& tensor, bool skip_first_dim) {
  std::string out(c10::toString(tensor.scalar_type()));
  out += "[";
  const auto sizes = tensor.sizes();
  for (size_t i = skip_first_dim ? 1 : 0; i < sizes.size(); ++i) {
    out += std::to_string(sizes[i]);
    out += ",";
  }
  out += "]";
  return out;
}

namespace {
constexpr size_t kMaxErrorText = 600;
}  // namespace

// The useful part of a libtorch exception: TorchScript tracebacks end with the error line.
std::string exception_text(const std::exception& e) {
  std::string text;
  if (const auto* error = dynamic_cast<const c10::Error*>(&e)) {
    text = error->what_without_backtrace();
  } else {
    text = e.what();
  }
  size_t best = std::string::npos;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = std::min(text.find('\n', start), text.size());
    const std::string_view line(text.data() + start, end - start);
    const auto colon = line.find(": ");
    if (colon != std::string_view::npos && colon > 0 &&
        (line.substr(0, colon).ends_with("Error") ||
         line.substr(0, colon).ends_with("Exception"))) {
      best = start;
    }
    start = end + 1;
  }
  if (best != std::string::npos) text = text.substr(best);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.size() > kMaxErrorText) text = text.substr(0, kMaxErrorText) + "...";
  return text;
}

Error model_error(const std::string& method, const std::exception& e) {
  return invalid_argument("method " + method + " raised: " + exception_text(e));
}

}  // namespace outpost::runtime
