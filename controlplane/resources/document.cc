#include "controlplane/resources/document.h"

#include <string>

namespace outpost::control {

using nlohmann::json;

Result<json> parse_json(std::string_view text) {
  bool too_deep = false;
  const json::parser_callback_t limit_depth = [&too_deep](int depth, json::parse_event_t event,
                                                          json&) {
    if (depth > kMaxDocumentDepth &&
        (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start)) {
      too_deep = true;
    }
    return !too_deep;
  };
  json parsed = json::parse(text.begin(), text.end(), limit_depth, /*allow_exceptions=*/false);
  if (too_deep) {
    return invalid_argument("the JSON document nests deeper than " +
                            std::to_string(kMaxDocumentDepth) + " levels");
  }
  if (parsed.is_discarded()) {
    // Parse again with exceptions for the position and the reason; the input is known bad, and
    // the exception stays inside this function.
    try {
      const json reparsed = json::parse(text.begin(), text.end());
      (void)reparsed;
    } catch (const json::parse_error& e) {
      std::string what = e.what();
      const auto cut = what.find("parse error");
      return invalid_argument("malformed JSON: " +
                              (cut == std::string::npos ? what : what.substr(cut)));
    } catch (const json::exception& e) {
      // Not only parse errors: a number too large for a double is out_of_range (406).
      return invalid_argument(std::string("malformed JSON: ") + e.what());
    }
    return invalid_argument("malformed JSON");
  }
  return parsed;
}

Result<json> parse_body_object(std::string_view body, std::string_view content_type) {
  const auto semicolon = content_type.find(';');
  std::string type(content_type.substr(0, semicolon));
  for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  const bool yaml =
      type == "application/yaml" || type == "application/x-yaml" || type == "text/yaml";
  if (body.empty()) return invalid_argument("the request body is empty; expected a JSON object");
  auto parsed = yaml ? parse_yaml(body) : parse_json(body);
  if (!parsed.ok()) return parsed.error();
  if (!parsed.value().is_object()) {
    return invalid_argument(std::string("the request body must be a ") +
                            (yaml ? "YAML mapping" : "JSON object"));
  }
  return parsed;
}

}  // namespace outpost::control
