// Tensors as they travel (docs/worker-protocol.md, "Values"): a dtype name, a shape, and the
// raw little-endian bytes, which come as a binary message part, as base64 text, or as a flat
// list of numbers. This file checks all of that without torch: the dtype is known, the shape is
// sane, and the byte count is what dtype and shape say. The worker turns the result into a
// tensor; the fuzzers feed it arbitrary JSON.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::protocol {

enum class DType {
  kFloat32,
  kFloat64,
  kFloat16,
  kBFloat16,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kUInt8,
  kBool
};

// "float32", "int64", ... (the names in docs/control-protocol.md).
std::string_view dtype_name(DType dtype);
std::optional<DType> dtype_from_name(std::string_view name);
size_t dtype_size(DType dtype);
bool dtype_is_floating(DType dtype);

inline constexpr size_t kMaxRank = 16;

// Shape from JSON: an array of at most kMaxRank non-negative integers whose product times the
// element size fits in `max_bytes`. `where` names the value in errors ("input 'x'").
Result<std::vector<int64_t>> parse_shape(const nlohmann::json& shape, DType dtype, size_t max_bytes,
                                         std::string_view where);
// Number of elements of a shape (callers have checked it with parse_shape).
int64_t element_count(std::span<const int64_t> shape);
std::string shape_string(std::span<const int64_t> shape);

// A decoded tensor Value. Exactly one of the three data forms is set:
//  - raw bytes (a binary part, decoded base64 or zeros), size = elements * dtype_size;
//  - `int_values`: the "values" form for integer and bool dtypes (range-checked);
//  - `float_values`: the "values" form for floating dtypes.
struct WireTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::string owned;          // decoded base64, or zeros
  std::string_view external;  // a binary part of the message (valid while the message is)
  bool has_external = false;
  std::optional<std::vector<int64_t>> int_values;
  std::optional<std::vector<double>> float_values;

  // The raw bytes, when neither values form is set.
  std::string_view bytes() const { return has_external ? external : std::string_view(owned); }
};

// True when `value` is shaped like a tensor Value (an object with "dtype" and "shape").
bool looks_like_tensor(const nlohmann::json& value);
// True when `value` is a byte string Value: {"bytes_b64": ...} or {"part": k} alone.
bool looks_like_bytes(const nlohmann::json& value);

// Decodes a tensor Value: {"dtype", "shape"} plus one of "part" (an index into `parts`),
// "data_b64" or "values". With `allow_zeros`, no data form means zeros (used only for warmup
// inputs in config.yaml). Refuses unknown keys, unknown dtypes, bad shapes, and byte or value
// counts that do not match the shape, naming `where`.
Result<WireTensor> decode_tensor(const nlohmann::json& value, std::span<const std::string> parts,
                                 size_t max_bytes, std::string_view where,
                                 bool allow_zeros = false);

// The "values" form of `tensor`, whatever form it came in: {"dtype", "shape", "values": [...]},
// the elements as a flat list in row-major order; bool as true/false; float16 and bfloat16
// widened exactly. JSON has no NaN or infinity: those elements come out as null.
nlohmann::json tensor_values_json(const WireTensor& tensor);

// `value` with every tensor Value that carries "data_b64" rewritten in the values form, in lists
// and dicts too (up to `max_depth` deep). What clients get when they ask for values (docs/api.md
// "tensor_format"). Refuses a malformed tensor, naming where it is.
Result<nlohmann::json> tensors_to_values(const nlohmann::json& value, size_t max_bytes,
                                         size_t max_depth = 64);

// Decodes a byte string Value ({"bytes_b64"} or {"part"}); the view may point into `parts`.
Result<std::string_view> decode_bytes(const nlohmann::json& value,
                                      std::span<const std::string> parts, std::string& owned,
                                      std::string_view where);

}  // namespace outpost::protocol
