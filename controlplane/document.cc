#include "controlplane/document.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include "common/utf8.h"

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

namespace {

// YAML 1.2 core schema resolution of a plain scalar.
json resolve_plain_scalar(const std::string& text) {
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  const char* begin = text.c_str();
  char* end = nullptr;
  errno = 0;
  const long long integer = std::strtoll(begin, &end, 10);
  if (end == begin + text.size() && errno == 0 &&
      text.find_first_not_of("+-0123456789") == std::string::npos) {
    return integer;
  }
  if (text.find_first_not_of("+-0123456789.eE") == std::string::npos &&
      text.find_first_of("0123456789") != std::string::npos) {
    errno = 0;
    const double number = std::strtod(begin, &end);
    if (end == begin + text.size() && errno == 0 && std::isfinite(number)) return number;
  }
  return text;
}

struct Converter {
  size_t nodes = 0;

  Result<json> convert(const YAML::Node& node, int depth) {
    if (++nodes > kMaxDocumentNodes) {
      return invalid_argument("the YAML document has more than " +
                              std::to_string(kMaxDocumentNodes) + " nodes (aliases are expanded)");
    }
    if (depth > kMaxDocumentDepth) {
      return invalid_argument("the YAML document nests deeper than " +
                              std::to_string(kMaxDocumentDepth) + " levels");
    }
    switch (node.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        return json(nullptr);
      case YAML::NodeType::Scalar:
        // yaml-cpp tags plain scalars "?" and quoted ones "!".
        if (node.Tag() == "!") return json(node.Scalar());
        return resolve_plain_scalar(node.Scalar());
      case YAML::NodeType::Sequence: {
        json out = json::array();
        for (const auto& item : node) {
          auto converted = convert(item, depth + 1);
          if (!converted.ok()) return converted.error();
          out.push_back(std::move(converted).value());
        }
        return out;
      }
      case YAML::NodeType::Map: {
        json out = json::object();
        for (const auto& item : node) {
          if (!item.first.IsScalar()) {
            return invalid_argument("YAML mapping keys must be plain strings");
          }
          const std::string& key = item.first.Scalar();
          if (out.contains(key)) return invalid_argument("duplicate YAML key '" + key + "'");
          auto converted = convert(item.second, depth + 1);
          if (!converted.ok()) return converted.error();
          out[key] = std::move(converted).value();
        }
        return out;
      }
    }
    return json(nullptr);
  }
};

// Ignores every event: used only to count documents.
class IgnoreEvents : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Whether `text` holds more than one document. Counts at most two: yaml-cpp 0.7 (Debian 12)
// never stops producing empty documents for a stray flow entry at the top level (",", "\"x\" ,"),
// so YAML::LoadAll on such a body would loop, allocating, forever.
bool has_several_documents(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  IgnoreEvents events;
  int documents = 0;
  while (documents < 2 && parser.HandleNextDocument(events)) ++documents;
  return documents > 1;
}

}  // namespace

Result<json> parse_yaml(std::string_view text) {
  // yaml-cpp reports errors by exception; they are caught here and become a request error.
  // Strings must be UTF-8 (JSON's rule): anything else would make every later json::dump()
  // of the stored document throw.
  if (const size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) {
    return invalid_argument("the YAML body is not valid UTF-8 (at byte " + std::to_string(bad) +
                            ")");
  }
  try {
    const std::string body(text);
    if (has_several_documents(body)) {
      return invalid_argument("expected one YAML document, found more (or a stray ',' at the top)");
    }
    const YAML::Node document = YAML::Load(body);
    if (!document) return json(nullptr);
    Converter converter;
    return converter.convert(document, 0);
  } catch (const YAML::Exception& e) {
    return invalid_argument("malformed YAML at line " + std::to_string(e.mark.line + 1) +
                            ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
  } catch (const std::exception& e) {
    return invalid_argument(std::string("malformed YAML: ") + e.what());
  }
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
