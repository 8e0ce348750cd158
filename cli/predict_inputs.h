// The inputs of a predict from the command line, in the `Value` encoding of
// docs/control-protocol.md: `--text`, `--file` and `--url` give the method's first input (as
// Clarifai's CLI does), `-i NAME=VALUE` any input (VALUE read as JSON when it parses, else as a
// string; `NAME=@FILE` a file: a NumPy .npy file as a tensor, any other as bytes), `--inputs
// JSON` all of them at once (`--inputs @FILE` reads the JSON from a file, `--inputs -` from
// standard input), so that an input too large for a command line still goes.
#pragma once

#include <istream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::cli {

struct InputFlags {
  std::vector<std::string> text;  // stream: one item each
  std::string file;
  std::string url;
  std::string inputs_json;
  std::vector<std::string> named;  // NAME=VALUE
};

// The method to call: `requested`, else the one named like the shape, else the only method of
// that kind. `kind` is unary, generate or stream. For `outpost model test`, which has no server;
// the control plane chooses the same way for the remote calls (predict_handlers.cc, resolve).
Result<nlohmann::json> pick_method(const nlohmann::json& methods, const std::string& requested,
                                   const std::string& kind);

// One call's inputs before the method is known: `named` (--inputs, -i NAME=VALUE) and `first`
// (--text, --file or --url), the value of the method's first input. The server places `first`
// under its name (the body's "input"), so a remote call needs no signature; a local one places
// it with place_first().
struct CallInputs {
  nlohmann::json named = nlohmann::json::object();
  std::optional<nlohmann::json> first;

  // The predict body's "inputs" and, when `first` is set, "input".
  void write_to(nlohmann::json& body) const;
};

// `in`: standard input, for `--inputs -`.
Result<CallInputs> build_call_inputs(const InputFlags& flags, std::istream& in);

// A stream's items: --inputs as a JSON array of input objects, or one item (a `first`) per
// --text. Empty when neither is given (the CLI then reads items from stdin, one per line).
Result<std::vector<CallInputs>> build_stream_call_items(const InputFlags& flags, std::istream& in);

// `inputs.named` with `inputs.first` under the name of `method`'s first input.
Result<nlohmann::json> place_first(const CallInputs& inputs, const nlohmann::json& method);

// A NumPy .npy file's bytes as a tensor Value {"dtype", "shape", "data_b64"}: little-endian,
// C order, of a dtype the worker knows (float16/32/64, int8/16/32/64, uint8, bool).
Result<nlohmann::json> npy_tensor(const std::string& bytes, const std::string& name);

// A unary or generate request body as it goes on the wire (docs/api.md, "Raw bytes"): the JSON
// itself when no input carries bytes; otherwise multipart/form-data, with the JSON as the part
// "request" and each byte string and tensor's bytes as a part of its own that the JSON refers to
// as {"part": "pN"}, so that no byte is base64'd on the way.
struct WireBody {
  std::string content_type;
  std::string body;
};
Result<WireBody> wire_body(nlohmann::json body);

// The name of the method's first input.
Result<std::string> first_input(const nlohmann::json& method);

}  // namespace outpost::cli
