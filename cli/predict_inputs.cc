#include "cli/predict_inputs.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <string_view>
#include <utility>

#include "common/base64.h"
#include "protocol/worker_protocol.h"

namespace outpost::cli {

using nlohmann::json;

Result<json> pick_method(const json& methods, const std::string& requested,
                         const std::string& kind) {
  std::string names;
  std::vector<std::string> of_kind;
  for (const auto& method : methods) {
    names += (names.empty() ? "" : ", ") + method.value("name", std::string()) + " (" +
             method.value("kind", std::string()) + ")";
    if (method.value("kind", "") == kind) of_kind.push_back(method.value("name", ""));
  }
  std::string name = requested;
  if (name.empty()) {
    const std::string preferred = kind == "unary" ? "predict" : kind;
    if (std::find(of_kind.begin(), of_kind.end(), preferred) != of_kind.end()) {
      name = preferred;
    } else if (of_kind.size() == 1) {
      name = of_kind.front();
    } else {
      return invalid_argument("name the method with --method; the model has: " + names);
    }
  }
  for (const auto& method : methods) {
    if (method.value("name", "") != name) continue;
    const std::string method_kind = method.value("kind", "");
    if (method_kind != kind) {
      const std::string command = method_kind == "unary" ? "predict" : method_kind;
      return invalid_argument("'" + name + "' is a " + method_kind +
                              " method: use `outpost model " + command + "`");
    }
    return method;
  }
  return invalid_argument("the model has no method '" + name + "'; it has: " + names);
}

Result<std::string> first_input(const json& method) {
  const json inputs = method.value("inputs", json::array());
  if (inputs.empty()) {
    return invalid_argument("method '" + method.value("name", std::string()) +
                            "' takes no inputs; --text, --file and --url do not apply");
  }
  return inputs[0].value("name", std::string());
}

namespace {

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_argument("cannot read " + path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Result<json> file_value(const std::string& path) {
  OUTPOST_ASSIGN_OR_RETURN(auto bytes, read_file(path));
  return json{{"bytes_b64", base64_encode(bytes)}};
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Status add_named(const std::vector<std::string>& named, json& inputs) {
  for (const auto& item : named) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return invalid_argument("-i takes NAME=VALUE, not '" + item + "'");
    }
    const std::string name = item.substr(0, eq);
    const std::string value = item.substr(eq + 1);
    if (value.size() > 1 && value[0] == '@') {
      const std::string path = value.substr(1);
      if (ends_with(path, ".npy")) {
        OUTPOST_ASSIGN_OR_RETURN(auto bytes, read_file(path));
        OUTPOST_ASSIGN_OR_RETURN(inputs[name], npy_tensor(bytes, path));
      } else {
        OUTPOST_ASSIGN_OR_RETURN(inputs[name], file_value(path));
      }
      continue;
    }
    json parsed = json::parse(value, nullptr, false);
    inputs[name] = parsed.is_discarded() ? json(value) : parsed;
  }
  return {};
}

// --inputs: the JSON itself, `@FILE` or `-` (standard input).
Result<json> inputs_document(const std::string& flag, std::istream& in) {
  std::string text = flag;
  if (flag == "-") {
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else if (flag.size() > 1 && flag[0] == '@') {
    OUTPOST_ASSIGN_OR_RETURN(text, read_file(flag.substr(1)));
  }
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded()) {
    return invalid_argument("--inputs" + (text == flag ? std::string() : " (" + flag + ")") +
                            " is not valid JSON");
  }
  return parsed;
}

// NumPy's dtype strings (little-endian or byte-sized) and ours.
constexpr std::pair<const char*, const char*> kNpyDtypes[] = {
    {"<f4", "float32"}, {"<f8", "float64"}, {"<f2", "float16"}, {"<i8", "int64"}, {"<i4", "int32"},
    {"<i2", "int16"},   {"|i1", "int8"},    {"|u1", "uint8"},   {"|b1", "bool"}};

// The value of 'key' in a .npy header dict, up to the next top-level comma or brace.
std::string npy_field(const std::string& header, const std::string& key) {
  const auto at = header.find("'" + key + "'");
  if (at == std::string::npos) return "";
  auto start = header.find(':', at);
  if (start == std::string::npos) return "";
  ++start;
  while (start < header.size() && header[start] == ' ') ++start;
  if (start < header.size() && header[start] == '(') {
    const auto end = header.find(')', start);
    return end == std::string::npos ? "" : header.substr(start, end - start + 1);
  }
  const auto end = header.find_first_of(",}", start);
  return header.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

}  // namespace

Result<json> npy_tensor(const std::string& bytes, const std::string& name) {
  const auto bad = [&](const std::string& why) {
    return invalid_argument(name + " is not a .npy tensor outpost can send: " + why);
  };
  constexpr std::string_view kMagic = "\x93NUMPY";
  if (bytes.size() < 10 || bytes.compare(0, kMagic.size(), kMagic) != 0) {
    return bad("no NumPy header");
  }
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  const int major = byte(6);
  size_t header_len = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_len = byte(8) | (static_cast<size_t>(byte(9)) << 8);
    header_start = 10;
  } else if ((major == 2 || major == 3) && bytes.size() >= 12) {
    header_len = byte(8) | (static_cast<size_t>(byte(9)) << 8) |
                 (static_cast<size_t>(byte(10)) << 16) | (static_cast<size_t>(byte(11)) << 24);
    header_start = 12;
  } else {
    return bad("format version " + std::to_string(major));
  }
  if (header_start + header_len > bytes.size()) return bad("its header is cut short");
  const std::string header = bytes.substr(header_start, header_len);
  std::string descr = npy_field(header, "descr");
  if (descr.size() >= 2 && (descr.front() == '\'' || descr.front() == '"')) {
    descr = descr.substr(1, descr.size() - 2);
  }
  const char* dtype = nullptr;
  for (const auto& [numpy, ours] : kNpyDtypes) {
    if (descr == numpy) dtype = ours;
  }
  if (dtype == nullptr) {
    return bad("dtype '" + descr +
               "' (little-endian float16/32/64, int8/16/32/64, uint8 or bool are)");
  }
  if (npy_field(header, "fortran_order").rfind("False", 0) != 0) {
    return bad("it is in Fortran order (save np.ascontiguousarray(a))");
  }
  const std::string shape_text = npy_field(header, "shape");
  if (shape_text.size() < 2 || shape_text.front() != '(') return bad("no shape");
  json shape = json::array();
  std::string number;
  for (const char c : shape_text.substr(1)) {
    if (c >= '0' && c <= '9') {
      number += c;
    } else if (c == ',' || c == ')') {
      if (!number.empty()) shape.push_back(std::stoll(number));
      number.clear();
    } else if (c != ' ' && c != 'L') {
      return bad("shape " + shape_text);
    }
  }
  return json{
      {"dtype", dtype},
      {"shape", shape},
      {"data_b64", base64_encode(std::string_view(bytes).substr(header_start + header_len))}};
}

void CallInputs::write_to(json& body) const {
  body["inputs"] = named;
  if (first.has_value()) body["input"] = *first;
}

Result<WireBody> wire_body(json body) {
  std::vector<std::string> parts;
  for (const char* key : {"inputs", "input"}) {
    if (body.contains(key))
      OUTPOST_RETURN_IF_ERROR(protocol::move_bytes_to_parts(body[key], parts));
  }
  if (parts.empty()) return WireBody{"application/json", body.dump()};
  // The parts' indexes become names: a form's parts are named.
  for (const char* key : {"inputs", "input"}) {
    if (!body.contains(key)) continue;
    OUTPOST_ASSIGN_OR_RETURN(
        body[key],
        protocol::rewrite_values(body[key], protocol::Limits{}.max_value_depth,
                                 [](const json& object) -> std::optional<Result<json>> {
                                   const auto part = object.find("part");
                                   if (part == object.end() || !part->is_number_unsigned())
                                     return std::nullopt;
                                   json named = object;
                                   named["part"] = "p" + std::to_string(part->get<size_t>());
                                   return Result<json>(std::move(named));
                                 }));
  }
  const std::string request = body.dump();
  // A boundary that none of the bytes holds.
  std::random_device random;
  std::string boundary;
  const auto held = [&](const std::string& candidate) {
    if (request.find(candidate) != std::string::npos) return true;
    return std::any_of(parts.begin(), parts.end(), [&](const std::string& part) {
      return part.find(candidate) != std::string::npos;
    });
  };
  do {
    char hex[33];
    std::snprintf(hex, sizeof(hex), "%08x%08x%08x%08x", random(), random(), random(), random());
    boundary = std::string("outpost-") + hex;
  } while (held(boundary));
  std::string out = "--" + boundary +
                    "\r\nContent-Disposition: form-data; name=\"request\"\r\n"
                    "Content-Type: application/json\r\n\r\n" +
                    request;
  for (size_t i = 0; i < parts.size(); ++i) {
    out += "\r\n--" + boundary + "\r\nContent-Disposition: form-data; name=\"p" +
           std::to_string(i) + "\"\r\nContent-Type: application/octet-stream\r\n\r\n";
    out += parts[i];
  }
  out += "\r\n--" + boundary + "--\r\n";
  return WireBody{"multipart/form-data; boundary=" + boundary, std::move(out)};
}

Result<CallInputs> build_call_inputs(const InputFlags& flags, std::istream& in) {
  CallInputs out;
  if (!flags.inputs_json.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(out.named, inputs_document(flags.inputs_json, in));
    if (!out.named.is_object()) {
      return invalid_argument(
          "--inputs must be a JSON object of the method's inputs, e.g. "
          "'{\"text\": \"hello\"}'");
    }
  }
  const int direct =
      (flags.text.empty() ? 0 : 1) + (flags.file.empty() ? 0 : 1) + (flags.url.empty() ? 0 : 1);
  if (direct > 1 || flags.text.size() > 1) {
    return invalid_argument("give one of --text, --file and --url (they set the first input)");
  }
  if (!flags.text.empty()) {
    out.first = flags.text.front();
  } else if (!flags.file.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(out.first, file_value(flags.file));
  } else if (!flags.url.empty()) {
    out.first = json{{"url", flags.url}};
  }
  OUTPOST_RETURN_IF_ERROR(add_named(flags.named, out.named));
  return out;
}

Result<std::vector<CallInputs>> build_stream_call_items(const InputFlags& flags, std::istream& in) {
  std::vector<CallInputs> items;
  if (!flags.inputs_json.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(const json parsed, inputs_document(flags.inputs_json, in));
    if (!parsed.is_array()) {
      return invalid_argument(
          "for a stream, --inputs is a JSON array of input objects, e.g. "
          "'[{\"text\": \"a\"}, {\"text\": \"b\"}]'");
    }
    for (const auto& item : parsed) {
      if (!item.is_object()) return invalid_argument("--inputs: each item must be an object");
      items.push_back(CallInputs{item, std::nullopt});
    }
    return items;
  }
  if (!flags.file.empty() || !flags.url.empty() || !flags.named.empty()) {
    return invalid_argument("a stream takes its items from --text (repeated), --inputs or stdin");
  }
  for (const auto& text : flags.text) items.push_back(CallInputs{json::object(), json(text)});
  return items;
}

Result<json> place_first(const CallInputs& inputs, const json& method) {
  json out = inputs.named;
  if (!inputs.first.has_value()) return out;
  OUTPOST_ASSIGN_OR_RETURN(auto name, first_input(method));
  if (out.contains(name)) {
    return invalid_argument("--text, --file or --url and an input named '" + name +
                            "' both set the method's first input; give one of them");
  }
  out[name] = *inputs.first;
  return out;
}

}  // namespace outpost::cli
