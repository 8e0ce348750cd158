#include "cli/predict_inputs.h"

#include <fstream>
#include <iterator>

#include "common/base64.h"

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

Result<json> file_value(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_argument("cannot read " + path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return json{{"bytes_b64", base64_encode(bytes)}};
}

Status add_named(const std::vector<std::string>& named, json& inputs) {
  for (const auto& item : named) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return invalid_argument("-i takes NAME=VALUE, not '" + item + "'");
    }
    const std::string value = item.substr(eq + 1);
    json parsed = json::parse(value, nullptr, false);
    inputs[item.substr(0, eq)] = parsed.is_discarded() ? json(value) : parsed;
  }
  return {};
}

}  // namespace

Result<json> build_inputs(const InputFlags& flags, const json& method) {
  json inputs = json::object();
  if (!flags.inputs_json.empty()) {
    inputs = json::parse(flags.inputs_json, nullptr, false);
    if (!inputs.is_object()) {
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
  if (direct == 1) {
    OUTPOST_ASSIGN_OR_RETURN(auto name, first_input(method));
    if (!flags.text.empty()) {
      inputs[name] = flags.text.front();
    } else if (!flags.file.empty()) {
      OUTPOST_ASSIGN_OR_RETURN(inputs[name], file_value(flags.file));
    } else {
      inputs[name] = json{{"url", flags.url}};
    }
  }
  OUTPOST_RETURN_IF_ERROR(add_named(flags.named, inputs));
  return inputs;
}

Result<std::vector<json>> build_stream_items(const InputFlags& flags, const json& method) {
  std::vector<json> items;
  if (!flags.inputs_json.empty()) {
    const json parsed = json::parse(flags.inputs_json, nullptr, false);
    if (!parsed.is_array()) {
      return invalid_argument(
          "for a stream, --inputs is a JSON array of input objects, e.g. "
          "'[{\"text\": \"a\"}, {\"text\": \"b\"}]'");
    }
    for (const auto& item : parsed) {
      if (!item.is_object()) return invalid_argument("--inputs: each item must be an object");
      items.push_back(item);
    }
    return items;
  }
  if (!flags.file.empty() || !flags.url.empty() || !flags.named.empty()) {
    return invalid_argument("a stream takes its items from --text (repeated), --inputs or stdin");
  }
  if (!flags.text.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(auto name, first_input(method));
    for (const auto& text : flags.text) items.push_back(json{{name, text}});
  }
  return items;
}

}  // namespace outpost::cli
