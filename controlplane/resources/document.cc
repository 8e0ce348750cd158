#include "controlplane/resources/document.h"

#include <string>

namespace outpost::control {

using nlohmann::json;

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
