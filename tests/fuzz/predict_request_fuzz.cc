// Fuzzes the REST predict request body (docs/api.md "Predict"), as predict_handlers.cc reads it:
// the body as JSON and as YAML, the request's fields, then its inputs checked against method
// signatures of each kind of input (str, int, float, bool, Tensor, with and without defaults).
// Beyond "never crash": an accepted request has a selector and an object of inputs once
// checked; inputs that pass the full check also pass the partial (stream item) one; every input
// url_inputs() names carries a string "url", which fetch_url_inputs() reads unchecked; an
// "input" that place_first_input() accepts ends up, unchanged, under the method's first input;
// inputs whose bytes wire_inputs() takes out refer only to parts that exist.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "controlplane/api/predict_request.h"
#include "controlplane/resources/document.h"

namespace {

using nlohmann::json;

const json& signatures() {
  static const json kSignatures = json::array({
      json{{"name", "predict"},
           {"inputs", json::array({json{{"name", "text"}, {"type", "str"}},
                                   json{{"name", "count"}, {"type", "int"}, {"default", 1}},
                                   json{{"name", "scale"}, {"type", "float"}, {"default", 1.0}},
                                   json{{"name", "flag"}, {"type", "bool"}, {"default", false}},
                                   json{{"name", "image"}, {"type", "Tensor"}},
                                   json{{"name", "raw"}, {"type", "bytes"}, {"default", nullptr}},
                                   json{{"name", "items"}, {"type", "List[str]"}}})}},
      json{{"name", "generate"}, {"inputs", json::array()}},
      json{{"name", "bare"}},
  });
  return kSignatures;
}

void check(const json& body) {
  auto request = outpost::control::parse_predict_request(body);
  if (!request.ok()) return;
  if (request->selector.is_null()) std::abort();
  for (const json& method : signatures()) {
    // "input" placed under the first input: then that name holds exactly what was sent.
    auto placed = outpost::control::place_first_input(method, request->inputs, request->input);
    if (placed.ok() && request->input.has_value()) {
      const std::string first = method.value("inputs", json::array()).at(0).value("name", "");
      if (!placed->is_object() || placed->at(first) != *request->input) std::abort();
    }
    const bool full = outpost::control::check_inputs(method, request->inputs, false).ok();
    const bool partial = outpost::control::check_inputs(method, request->inputs, true).ok();
    if (full && !partial) std::abort();
    if (partial && !request->inputs.is_object()) std::abort();
  }
  // The inputs with their bytes out of the JSON: what is accepted refers only to its own parts
  // (a JSON body has no form, so any {"part": "NAME"} is refused).
  if (auto wire = outpost::control::wire_inputs(request->inputs, {}); wire.ok()) {
    if (!outpost::protocol::parts_to_base64(wire->value, wire->parts).ok()) std::abort();
  }
  if (request->inputs.is_object()) {
    for (const auto& name : outpost::control::url_inputs(request->inputs)) {
      const json& input = request->inputs.at(name);
      if (!input.is_object() || !input.contains("url") || !input.at("url").is_string()) {
        std::abort();
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto json_body = outpost::control::parse_body_object(input, "application/json");
      json_body.ok()) {
    check(json_body.value());
  }
  if (auto yaml_body = outpost::control::parse_body_object(input, "application/yaml");
      yaml_body.ok()) {
    check(yaml_body.value());
  }
  return 0;
}
