#include "common/yaml_document.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include "common/utf8.h"

namespace outpost {

using nlohmann::json;

namespace {

std::string at(const YAML::Mark& mark) {
  return "line " + std::to_string(mark.line + 1) + ", column " + std::to_string(mark.column + 1);
}

// YAML 1.2 core schema resolution of a plain scalar.
json plain_scalar(const std::string& text) {
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  const char* begin = text.c_str();
  char* end = nullptr;
  std::string_view digits = text;
  if (digits.front() == '-' || digits.front() == '+') digits.remove_prefix(1);
  if (!digits.empty() && digits.find_first_not_of("0123456789") == std::string_view::npos) {
    errno = 0;
    if (text.front() == '-') {
      const long long value = std::strtoll(begin, &end, 10);
      if (errno == 0 && end == begin + text.size()) return static_cast<int64_t>(value);
    } else {
      const unsigned long long value = std::strtoull(begin, &end, 10);
      if (errno == 0 && end == begin + text.size()) return static_cast<uint64_t>(value);
    }
    return text;  // beyond 64 bits: kept as written
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
  YamlScalars scalars;
  size_t nodes = 0;

  // `path` names the node for errors: "devices.gpus", "pins[2]"; empty at the top.
  Result<json> convert(const YAML::Node& node, int depth, const std::string& path) {
    if (++nodes > kMaxYamlNodes) {
      return invalid_argument("the YAML document has more than " + std::to_string(kMaxYamlNodes) +
                              " nodes (aliases are expanded)");
    }
    if (depth > kMaxYamlDepth) {
      return invalid_argument("the YAML document nests deeper than " +
                              std::to_string(kMaxYamlDepth) + " levels");
    }
    switch (node.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        return json(nullptr);
      case YAML::NodeType::Scalar:
        // yaml-cpp tags plain scalars "?" and quoted ones "!".
        if (scalars == YamlScalars::kStrings || node.Tag() == "!" ||
            node.Tag() == "tag:yaml.org,2002:str") {
          return json(node.Scalar());
        }
        return plain_scalar(node.Scalar());
      case YAML::NodeType::Sequence: {
        json out = json::array();
        for (const auto& item : node) {
          OUTPOST_ASSIGN_OR_RETURN(
              auto converted,
              convert(item, depth + 1, path + "[" + std::to_string(out.size()) + "]"));
          out.push_back(std::move(converted));
        }
        return out;
      }
      case YAML::NodeType::Map: {
        json out = json::object();
        for (const auto& item : node) {
          if (!item.first.IsScalar()) {
            return invalid_argument("YAML mapping keys must be plain strings (" +
                                    (path.empty() ? std::string("at the top") : "under " + path) +
                                    ", at " + at(item.first.Mark()) + ")");
          }
          const std::string& key = item.first.Scalar();
          const std::string key_path = path.empty() ? key : path + "." + key;
          // YAML readers disagree on a repeated key (yaml-cpp keeps the first): refuse it.
          if (out.contains(key)) {
            return invalid_argument("the YAML key '" + key_path + "' appears more than once (at " +
                                    at(item.first.Mark()) + "); write it once");
          }
          OUTPOST_ASSIGN_OR_RETURN(auto converted, convert(item.second, depth + 1, key_path));
          out[key] = std::move(converted);
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
// so YAML::LoadAll on such a text would loop, allocating, forever.
bool has_several_documents(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  IgnoreEvents events;
  int documents = 0;
  while (documents < 2 && parser.HandleNextDocument(events)) ++documents;
  return documents > 1;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

Result<json> parse_yaml(std::string_view text, YamlScalars scalars) {
  // Strings must be UTF-8 (JSON's rule): anything else would make every later json::dump() of
  // the document throw.
  if (const size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) {
    return invalid_argument("the YAML text is not valid UTF-8 (at byte " + std::to_string(bad) +
                            ")");
  }
  // yaml-cpp reports errors by exception; they stay in this function.
  try {
    const std::string body(text);
    if (has_several_documents(body)) {
      return invalid_argument("expected one YAML document, found more (or a stray ',' at the top)");
    }
    const YAML::Node document = YAML::Load(body);
    if (!document) return json(nullptr);
    Converter converter{scalars};
    return converter.convert(document, 0, "");
  } catch (const YAML::Exception& e) {
    return invalid_argument("malformed YAML at " + at(e.mark) + ": " + e.msg);
  } catch (const std::exception& e) {
    return invalid_argument(std::string("malformed YAML: ") + e.what());
  }
}

Result<json> load_yaml_file(const std::string& path, YamlScalars scalars) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_argument("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return invalid_argument("cannot read " + path);
  return parse_yaml(text.str(), scalars);
}

std::optional<std::string> closest_key(std::string_view key,
                                       const std::vector<std::string_view>& known) {
  std::optional<std::string> best;
  size_t best_distance = 3;
  for (const std::string_view name : known) {
    const size_t distance = edit_distance(key, name);
    if (distance < best_distance && distance < name.size()) {
      best = std::string(name);
      best_distance = distance;
    }
  }
  return best;
}

std::string unknown_key_hint(std::string_view key, const std::vector<std::string_view>& known) {
  if (auto near = closest_key(key, known)) return "did you mean " + *near + "?";
  std::string list;
  for (const std::string_view name : known) {
    list += (list.empty() ? "" : ", ") + std::string(name);
  }
  return "known here: " + list;
}

}  // namespace outpost
