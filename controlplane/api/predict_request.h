// The untrusted half of a predict call (docs/api.md "Predict"): the request body, and the inputs
// it names checked against the method's signature. Pure functions of their arguments, apart from
// predict_handlers.cc so that the predict_request fuzzer can drive them without a server.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "controlplane/api/form_data.h"
#include "protocol/worker_protocol.h"

namespace outpost::control {

struct PredictRequest {
  std::string method;       // "" when the body names none (the model's only method)
  nlohmann::json selector;  // runner_selector as sent; resolved by the handler
  nlohmann::json inputs;    // as sent; an empty object when the body has none
  // "input": the value of the method's first input, whatever its name (what `outpost model
  // predict --text` sends, so that the CLI needs no signature first); place_first_input() puts
  // it under the name once the method is known.
  std::optional<nlohmann::json> input;
  bool tensor_values = false;  // "tensor_format": "values": tensors come back as numbers
};

// "tensor_format": "base64" (the default: "data_b64", the bytes) or "values" (a flat list of
// numbers). Refuses anything else, naming the field.
Result<bool> parse_tensor_format(const std::string& format);

// Reads a parsed request body: {"runner_selector": ..., "method": "...", "inputs": {...},
// "input": ..., "tensor_format": "values"}.
// Unknown keys and a missing runner_selector are refused, naming the field.
Result<PredictRequest> parse_predict_request(const nlohmann::json& body);

// `inputs` with `input` (when given) under the name of `method`'s first input. Refuses a
// method without inputs, and `input` together with inputs.NAME for the same name.
Result<nlohmann::json> place_first_input(const nlohmann::json& method, nlohmann::json inputs,
                                         const std::optional<nlohmann::json>& input);

// Checks the inputs' names (and simple types) against `method`, a signature from the model's
// inspection ({"name": ..., "inputs": [{"name", "type", "default"?}...]}). `partial`: a stream
// item, which may carry only some of the inputs.
Status check_inputs(const nlohmann::json& method, const nlohmann::json& inputs, bool partial);

// The names of the top-level inputs given as {"url": "<string>"}, whose bytes the control plane
// fetches before the call. Every name returned has a string "url".
std::vector<std::string> url_inputs(const nlohmann::json& inputs);

// The inputs in the worker form (protocol::WireValue), which the tunnel carries as they are:
// every {"part": "NAME"} (a tensor's or a byte string's bytes) becomes the bytes of the form part
// of that name, sent beside the JSON request in a multipart/form-data body, and every
// "data_b64"/"bytes_b64" becomes a part too. `request_part` names the form part that held the
// request itself. Refuses, naming the input: a part name the form lacks, a form part that no input
// refers to, invalid base64.
Result<protocol::WireValue> wire_inputs(const nlohmann::json& inputs,
                                        const std::vector<FormPart>& form,
                                        std::string_view request_part = "request");

}  // namespace outpost::control
