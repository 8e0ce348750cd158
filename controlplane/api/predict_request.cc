#include "controlplane/api/predict_request.h"

#include <algorithm>
#include <set>

#include "common/json_reader.h"
#include "controlplane/state/ids.h"
#include "protocol/tensor_wire.h"

namespace outpost::control {

using nlohmann::json;

namespace {

bool kind_matches(const std::string& type, const json& value) {
  const bool bytes = value.is_object() && (value.contains("url") || value.contains("bytes_b64") ||
                                           (value.size() == 1 && value.contains("part")));
  if (bytes) {
    return type == "str" || type == "Tensor" || type == "bytes";
  }
  if (type == "str") return value.is_string();
  if (type == "int") return value.is_number_integer();
  if (type == "float") return value.is_number();
  if (type == "bool") return value.is_boolean();
  return true;  // composite types are the runtime's to check
}

}  // namespace

Result<PredictRequest> parse_predict_request(const json& body) {
  OUTPOST_ASSIGN_OR_RETURN(auto reader, ObjectReader::create(body, ""));
  OUTPOST_RETURN_IF_ERROR(
      reader.only({"runner_selector", "method", "inputs", "input", "tensor_format"}));
  PredictRequest out;
  const json* selector = reader.get("runner_selector");
  if (selector == nullptr) {
    return field_error("runner_selector",
                       "is required: {\"deployment\": {\"id\": \"...\"}} or a nodepool");
  }
  out.selector = *selector;
  OUTPOST_ASSIGN_OR_RETURN(auto method, reader.optional_string("method"));
  out.method = method.value_or("");
  const json* inputs = reader.get("inputs");
  out.inputs = inputs != nullptr ? *inputs : json::object();
  if (const json* input = reader.get("input")) out.input = *input;
  OUTPOST_ASSIGN_OR_RETURN(auto format, reader.optional_string("tensor_format"));
  OUTPOST_ASSIGN_OR_RETURN(out.tensor_values, parse_tensor_format(format.value_or("base64")));
  return out;
}

Result<bool> parse_tensor_format(const std::string& format) {
  if (format == "values") return true;
  if (format == "base64") return false;
  return field_error("tensor_format",
                     "is \"base64\" (the default) or \"values\", not \"" + format + "\"");
}

Result<json> place_first_input(const json& method, json inputs, const std::optional<json>& input) {
  if (!input.has_value()) return inputs;
  const json declared = method.value("inputs", json::array());
  if (declared.empty()) {
    return field_error("input", "the method '" + method.value("name", "") + "' takes no inputs");
  }
  if (!inputs.is_object()) {
    return field_error("inputs", "must be an object of the method's named arguments");
  }
  const std::string name = declared[0].value("name", "");
  if (inputs.contains(name)) {
    return field_error(
        "input", "and inputs." + name + " both set the input '" + name + "'; give one of them");
  }
  inputs[name] = *input;
  return inputs;
}

Status check_inputs(const json& method, const json& inputs, bool partial) {
  if (!inputs.is_object()) {
    return field_error("inputs", "must be an object of the method's named arguments");
  }
  const json declared = method.value("inputs", json::array());
  std::string names;
  for (const auto& input : declared) names += (names.empty() ? "" : ", ") + input.value("name", "");
  for (const auto& item : inputs.items()) {
    bool found = false;
    for (const auto& input : declared) {
      if (input.value("name", "") != item.key()) continue;
      found = true;
      const std::string type = input.value("type", "");
      if (!kind_matches(type, item.value())) {
        return field_error("inputs." + item.key(),
                           "must be of type " + type + ", not " + json_type_name(item.value()));
      }
    }
    if (!found) {
      return field_error("inputs." + item.key(),
                         "the method '" + method.value("name", "") + "' has no input '" +
                             item.key() + "' (its inputs: " + (names.empty() ? "none" : names) +
                             ")");
    }
  }
  if (!partial) {
    for (const auto& input : declared) {
      const std::string name = input.value("name", "");
      if (!input.contains("default") && !inputs.contains(name)) {
        return field_error("inputs." + name, "is required");
      }
    }
  }
  return {};
}

std::vector<std::string> url_inputs(const json& inputs) {
  std::vector<std::string> out;
  for (const auto& item : inputs.items()) {
    if (item.value().is_object() && item.value().size() == 1 && item.value().contains("url") &&
        item.value()["url"].is_string()) {
      out.push_back(item.key());
    }
  }
  return out;
}

Result<protocol::WireValue> wire_inputs(const json& inputs, const std::vector<FormPart>& form,
                                        std::string_view request_part) {
  protocol::WireValue out;
  std::set<std::string> used;
  auto named = protocol::rewrite_values(
      inputs, protocol::Limits{}.max_value_depth,
      [&](const json& object) -> std::optional<Result<json>> {
        const auto part = object.find("part");
        if (part == object.end()) return std::nullopt;
        if (!protocol::looks_like_tensor(object) && object.size() != 1) return std::nullopt;
        if (!part->is_string()) {
          // Part numbers are the edge's own; a client's would point at other inputs' bytes.
          return Result<json>(
              invalid_argument("an input names its bytes' form part by a string, as "
                               "{\"part\": \"NAME\"}, not " +
                               protocol::json_text(*part)));
        }
        const std::string& name = part->get_ref<const std::string&>();
        const auto found = std::find_if(form.begin(), form.end(), [&](const FormPart& candidate) {
          return candidate.name == name && candidate.name != request_part;
        });
        if (found == form.end()) {
          return Result<json>(invalid_argument(
              "an input refers to the form part '" + name + "', which the request does not have" +
              (form.empty() ? " (send the request as multipart/form-data with a part of that "
                              "name to give bytes this way)"
                            : "")));
        }
        used.insert(name);
        json replaced = object;
        replaced["part"] = out.parts.size();
        out.parts.emplace_back(found->data);
        return Result<json>(std::move(replaced));
      });
  if (!named.ok()) return named.error();
  for (const auto& part : form) {
    if (part.name != request_part && used.count(part.name) == 0) {
      return invalid_argument("the form part '" + part.name + "' is not referred to by any input " +
                              "(refer to it as {\"part\": \"" + part.name + "\"})");
    }
  }
  out.value = std::move(named).value();
  OUTPOST_RETURN_IF_ERROR(protocol::move_bytes_to_parts(out.value, out.parts));
  return out;
}

}  // namespace outpost::control
