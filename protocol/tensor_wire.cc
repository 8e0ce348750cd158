#include "protocol/tensor_wire.h"

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "common/base64.h"
#include "protocol/worker_protocol.h"

namespace outpost::protocol {
namespace {

using nlohmann::json;

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr std::array<DTypeEntry, 10> kDTypes = {{
    {DType::kFloat32, "float32", 4},
    {DType::kFloat64, "float64", 8},
    {DType::kFloat16, "float16", 2},
    {DType::kBFloat16, "bfloat16", 2},
    {DType::kInt8, "int8", 1},
    {DType::kInt16, "int16", 2},
    {DType::kInt32, "int32", 4},
    {DType::kInt64, "int64", 8},
    {DType::kUInt8, "uint8", 1},
    {DType::kBool, "bool", 1},
}};

std::string quoted(std::string_view where) { return std::string(where); }

Error bad(std::string_view where, const std::string& what) {
  return invalid_argument(quoted(where) + ": " + what);
}

// The range an integer "values" element must fall in for `dtype`.
std::pair<int64_t, int64_t> int_range(DType dtype) {
  switch (dtype) {
    case DType::kInt8:
      return {std::numeric_limits<int8_t>::min(), std::numeric_limits<int8_t>::max()};
    case DType::kInt16:
      return {std::numeric_limits<int16_t>::min(), std::numeric_limits<int16_t>::max()};
    case DType::kInt32:
      return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
    case DType::kUInt8:
      return {0, std::numeric_limits<uint8_t>::max()};
    case DType::kBool:
      return {0, 1};
    default:
      return {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()};
  }
}

Result<size_t> part_index(const json& value, size_t part_count, std::string_view where) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0) {
    return bad(where, "\"part\" must be a non-negative integer");
  }
  const auto index = value.get<uint64_t>();
  if (index >= part_count) {
    return bad(where, "\"part\" " + std::to_string(index) + " does not exist (the message has " +
                          std::to_string(part_count) + " binary parts)");
  }
  return static_cast<size_t>(index);
}

}  // namespace

std::string_view dtype_name(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry.name;
  }
  return "unknown";
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& entry : kDTypes) {
    if (entry.name == name) return entry.dtype;
  }
  return std::nullopt;
}

size_t dtype_size(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry.size;
  }
  return 1;
}

bool dtype_is_floating(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

Result<std::vector<int64_t>> parse_shape(const json& shape, DType dtype, size_t max_bytes,
                                         std::string_view where) {
  if (!shape.is_array()) return bad(where, "\"shape\" must be an array of integers");
  if (shape.size() > kMaxRank) {
    return bad(where, "a shape has at most " + std::to_string(kMaxRank) + " dimensions, got " +
                          std::to_string(shape.size()));
  }
  std::vector<int64_t> out;
  out.reserve(shape.size());
  const size_t element_size = dtype_size(dtype);
  size_t elements = 1;
  for (const auto& dim : shape) {
    if (!dim.is_number_integer()) return bad(where, "\"shape\" must be an array of integers");
    if (dim.is_number_integer() && !dim.is_number_unsigned() && dim.get<int64_t>() < 0) {
      return bad(where, "shape dimensions must not be negative");
    }
    const auto size = dim.get<uint64_t>();
    // Keep elements * element_size <= max_bytes without overflowing on the way.
    if (size != 0 && elements > max_bytes / element_size / size) {
      return invalid_argument(quoted(where) + ": a tensor of shape " + json_text(shape) +
                              " is larger than the limit of " + std::to_string(max_bytes) +
                              " bytes");
    }
    elements *= size;
    out.push_back(static_cast<int64_t>(size));
  }
  return out;
}

int64_t element_count(std::span<const int64_t> shape) {
  int64_t count = 1;
  for (const int64_t dim : shape) count *= dim;
  return count;
}

std::string shape_string(std::span<const int64_t> shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

bool looks_like_tensor(const json& value) {
  return value.is_object() && value.contains("dtype") && value.contains("shape");
}

bool looks_like_bytes(const json& value) {
  if (!value.is_object() || value.size() != 1) return false;
  return value.contains("bytes_b64") || value.contains("part");
}

Result<WireTensor> decode_tensor(const json& value, std::span<const std::string> parts,
                                 size_t max_bytes, std::string_view where, bool allow_zeros) {
  if (!value.is_object()) return bad(where, "a tensor must be a JSON object");
  const json* data_part = nullptr;
  const json* data_b64 = nullptr;
  const json* data_values = nullptr;
  for (const auto& [key, item] : value.items()) {
    if (key == "part") {
      data_part = &item;
    } else if (key == "data_b64") {
      data_b64 = &item;
    } else if (key == "values") {
      data_values = &item;
    } else if (key != "dtype" && key != "shape") {
      return bad(where, "unknown tensor key \"" + key +
                            "\" (a tensor has dtype, shape, and one of part, data_b64, values)");
    }
  }
  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string()) {
    return bad(where, "a tensor needs a \"dtype\" string");
  }
  const auto dtype = dtype_from_name(dtype_it->get_ref<const std::string&>());
  if (!dtype) {
    return bad(where, "unknown dtype \"" + dtype_it->get<std::string>() +
                          "\" (float32, float64, float16, bfloat16, int8, int16, int32, int64, "
                          "uint8, bool)");
  }
  const auto shape_it = value.find("shape");
  if (shape_it == value.end()) return bad(where, "a tensor needs a \"shape\"");
  OUTPOST_ASSIGN_OR_RETURN(auto shape, parse_shape(*shape_it, *dtype, max_bytes, where));

  const int forms = static_cast<int>(data_part != nullptr) + static_cast<int>(data_b64 != nullptr) +
                    static_cast<int>(data_values != nullptr);
  if (forms > 1) return bad(where, "a tensor has exactly one of part, data_b64, values");
  if (forms == 0 && !allow_zeros) {
    return bad(where, "a tensor needs its data: \"part\", \"data_b64\" or \"values\"");
  }

  WireTensor tensor;
  tensor.dtype = *dtype;
  tensor.shape = std::move(shape);
  const auto elements = static_cast<size_t>(element_count(tensor.shape));
  const size_t expected_bytes = elements * dtype_size(*dtype);
  const auto check_size = [&](size_t got) -> Status {
    if (got == expected_bytes) return {};
    return bad(where, "a " + std::string(dtype_name(*dtype)) + " tensor of shape " +
                          shape_string(tensor.shape) + " has " + std::to_string(expected_bytes) +
                          " bytes, got " + std::to_string(got));
  };

  if (forms == 0) {
    tensor.owned.assign(expected_bytes, '\0');
  } else if (data_part != nullptr) {
    OUTPOST_ASSIGN_OR_RETURN(const size_t index, part_index(*data_part, parts.size(), where));
    OUTPOST_RETURN_IF_ERROR(check_size(parts[index].size()));
    tensor.external = parts[index];
    tensor.has_external = true;
  } else if (data_b64 != nullptr) {
    if (!data_b64->is_string()) return bad(where, "\"data_b64\" must be a string");
    auto decoded = base64_decode(data_b64->get_ref<const std::string&>());
    if (!decoded)
      return bad(where, "\"data_b64\" is not valid base64: " + decoded.error().message());
    OUTPOST_RETURN_IF_ERROR(check_size(decoded->size()));
    tensor.owned = std::move(decoded).value();
  } else {
    if (!data_values->is_array()) return bad(where, "\"values\" must be a flat array of numbers");
    if (data_values->size() != elements) {
      return bad(where, "a tensor of shape " + shape_string(tensor.shape) + " has " +
                            std::to_string(elements) + " values, got " +
                            std::to_string(data_values->size()));
    }
    if (dtype_is_floating(*dtype)) {
      std::vector<double> values;
      values.reserve(elements);
      for (const auto& item : *data_values) {
        if (!item.is_number()) return bad(where, "\"values\" must be a flat array of numbers");
        values.push_back(item.get<double>());
      }
      tensor.float_values = std::move(values);
    } else {
      const auto [low, high] = int_range(*dtype);
      std::vector<int64_t> values;
      values.reserve(elements);
      for (const auto& item : *data_values) {
        int64_t number = 0;
        if (item.is_boolean() && *dtype == DType::kBool) {
          number = item.get<bool>() ? 1 : 0;
        } else if (item.is_number_unsigned()) {
          const auto unsigned_number = item.get<uint64_t>();
          if (unsigned_number > static_cast<uint64_t>(high)) {
            return bad(where, std::to_string(unsigned_number) + " does not fit in " +
                                  std::string(dtype_name(*dtype)));
          }
          number = static_cast<int64_t>(unsigned_number);
        } else if (item.is_number_integer()) {
          number = item.get<int64_t>();
        } else {
          return bad(where, std::string(dtype_name(*dtype)) + " \"values\" must be integers");
        }
        if (number < low || number > high) {
          return bad(where, std::to_string(number) + " does not fit in " +
                                std::string(dtype_name(*dtype)));
        }
        values.push_back(number);
      }
      tensor.int_values = std::move(values);
    }
  }
  return tensor;
}

Result<std::string_view> decode_bytes(const json& value, std::span<const std::string> parts,
                                      std::string& owned, std::string_view where) {
  if (!looks_like_bytes(value)) {
    return bad(where, "a byte string is {\"bytes_b64\": \"...\"} or {\"part\": index}");
  }
  if (const auto it = value.find("part"); it != value.end()) {
    OUTPOST_ASSIGN_OR_RETURN(const size_t index, part_index(*it, parts.size(), where));
    return std::string_view(parts[index]);
  }
  const auto& text = value.at("bytes_b64");
  if (!text.is_string()) return bad(where, "\"bytes_b64\" must be a string");
  auto decoded = base64_decode(text.get_ref<const std::string&>());
  if (!decoded)
    return bad(where, "\"bytes_b64\" is not valid base64: " + decoded.error().message());
  owned = std::move(decoded).value();
  return std::string_view(owned);
}

namespace {

// IEEE half precision to single, exactly (every half is a float).
float half_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000U) << 16;
  uint32_t exponent = (half >> 10) & 0x1FU;
  uint32_t mantissa = half & 0x3FFU;
  uint32_t bits = sign;
  if (exponent == 0x1FU) {
    bits |= 0x7F800000U | (mantissa << 13);  // infinity or NaN
  } else if (exponent != 0) {
    bits |= ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {
    // Subnormal: normalise it.
    exponent = 113;
    while ((mantissa & 0x400U) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits |= (exponent << 23) | ((mantissa & 0x3FFU) << 13);
  }
  float out = 0;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

float bfloat16_to_float(uint16_t value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float out = 0;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

template <class T>
T element(std::string_view bytes, size_t index) {
  T out;
  std::memcpy(&out, bytes.data() + index * sizeof(T), sizeof(T));
  return out;
}

json finite_or_null(double value) { return std::isfinite(value) ? json(value) : json(nullptr); }

}  // namespace

json tensor_values_json(const WireTensor& tensor) {
  json values = json::array();
  if (tensor.float_values) {
    for (const double value : *tensor.float_values) values.push_back(finite_or_null(value));
  } else if (tensor.int_values) {
    for (const int64_t value : *tensor.int_values) {
      values.push_back(tensor.dtype == DType::kBool ? json(value != 0) : json(value));
    }
  } else {
    const std::string_view bytes = tensor.bytes();
    const size_t count = bytes.size() / dtype_size(tensor.dtype);
    for (size_t i = 0; i < count; ++i) {
      switch (tensor.dtype) {
        case DType::kFloat32:
          values.push_back(finite_or_null(element<float>(bytes, i)));
          break;
        case DType::kFloat64:
          values.push_back(finite_or_null(element<double>(bytes, i)));
          break;
        case DType::kFloat16:
          values.push_back(finite_or_null(half_to_float(element<uint16_t>(bytes, i))));
          break;
        case DType::kBFloat16:
          values.push_back(finite_or_null(bfloat16_to_float(element<uint16_t>(bytes, i))));
          break;
        case DType::kInt8:
          values.push_back(element<int8_t>(bytes, i));
          break;
        case DType::kInt16:
          values.push_back(element<int16_t>(bytes, i));
          break;
        case DType::kInt32:
          values.push_back(element<int32_t>(bytes, i));
          break;
        case DType::kInt64:
          values.push_back(element<int64_t>(bytes, i));
          break;
        case DType::kUInt8:
          values.push_back(element<uint8_t>(bytes, i));
          break;
        case DType::kBool:
          values.push_back(element<uint8_t>(bytes, i) != 0);
          break;
      }
    }
  }
  return json{{"dtype", dtype_name(tensor.dtype)}, {"shape", tensor.shape}, {"values", values}};
}

Result<json> tensors_to_values(const json& value, size_t max_bytes, size_t max_depth) {
  return rewrite_values(value, max_depth, [&](const json& object) -> std::optional<Result<json>> {
    if (!looks_like_tensor(object) || !object.contains("data_b64")) return std::nullopt;
    auto tensor = decode_tensor(object, {}, max_bytes, "an output");
    if (!tensor.ok()) return Result<json>(tensor.error());
    return Result<json>(tensor_values_json(*tensor));
  });
}

}  // namespace outpost::protocol
