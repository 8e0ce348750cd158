// Values (docs/worker-protocol.md) to TorchScript IValues and back. Internal to runtime/'s torch
// files: include it only from the files that already include torch (see runtime/README.md).
//
// Inputs are converted against the parameter's TorchScript type, so that a wrong name, type,
// dtype, shape or size is refused with an error that names the parameter before anything runs.
// Results are converted by their run-time type.
#pragma once

#include <exception>
#include <span>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>
#include <ATen/core/jit_type.h>
#include <nlohmann/json.hpp>

#include "common/result.h"
#include "protocol/tensor_wire.h"

namespace outpost::runtime {

using namespace protocol;  // as in model.h

struct ValueLimits {
  size_t max_tensor_bytes = size_t{256} << 20;
  size_t max_depth = 64;
  bool allow_zeros = false;  // tensors without data are zeros (warmup examples only)
};

// Whether values of `type` can be converted from JSON (the types of docs/models.md).
bool input_type_supported(const c10::TypePtr& type);

// Converts `value` to `type`. `where` names the value in errors ("input 'x'").
Result<c10::IValue> value_to_ivalue(const nlohmann::json& value, const c10::TypePtr& type,
                                    std::span<const std::string> parts, const ValueLimits& limits,
                                    const std::string& where);

// Appends the Value form of `value` to `out`, with tensor bytes (and strings that are not UTF-8)
// moved into `parts`.
Result<nlohmann::json> ivalue_to_value(const c10::IValue& value, std::vector<std::string>& parts);

// A parameter default as JSON for inspect (tensors inline, as "values").
nlohmann::json default_to_json(const c10::IValue& value);

at::ScalarType to_scalar_type(DType dtype);
std::optional<DType> from_scalar_type(at::ScalarType type);

// The useful part of what a model raised: a libtorch exception without its C++ backtrace, from
// the last "...Error: " line of a TorchScript traceback, at most 600 characters.
std::string exception_text(const std::exception& e);
// invalid_argument("method NAME raised: ..."): what a model raised, as the call's error.
Error model_error(const std::string& method, const std::exception& e);

// A tensor's dtype and trailing shape, for batch keys: "float32[256]".
std::string tensor_signature(const at::Tensor& tensor, bool skip_first_dim);

}  // namespace outpost::runtime
