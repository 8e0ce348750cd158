#include "common/json_reader.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/yaml_document.h"

namespace outpost {

using nlohmann::json;

Error field_error(std::string_view field, std::string_view message) {
  std::string text(field);
  text += ": ";
  text += message;
  return invalid_argument(std::move(text));
}

Result<json> parse_json(std::string_view text) {
  bool too_deep = false;
  const json::parser_callback_t limit_depth = [&too_deep](int depth, json::parse_event_t event,
                                                          json&) {
    if (depth > kMaxJsonDepth &&
        (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start)) {
      too_deep = true;
    }
    return !too_deep;
  };
  json parsed = json::parse(text.begin(), text.end(), limit_depth, /*allow_exceptions=*/false);
  if (too_deep) {
    return invalid_argument("the JSON document nests deeper than " + std::to_string(kMaxJsonDepth) +
                            " levels");
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

const json& empty_object() {
  static const json empty = json::object();
  return empty;
}

}  // namespace

std::string json_type_name(const json& value) {
  switch (value.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    default:
      return "a value of another kind";
  }
}

Result<ObjectReader> ObjectReader::create(const json& value, std::string path) {
  if (!value.is_object()) {
    return field_error(path, "must be an object, not " + json_type_name(value));
  }
  return ObjectReader(&value, std::move(path));
}

Status ObjectReader::only(std::initializer_list<std::string_view> known) const {
  const std::vector<std::string_view> names(known);
  for (const auto& item : value_->items()) {
    if (std::find(names.begin(), names.end(), item.key()) == names.end()) {
      return field_error(path_of(item.key()),
                         "unknown field (" + unknown_key_hint(item.key(), names) + ")");
    }
  }
  return {};
}

bool ObjectReader::has(std::string_view key) const { return get(key) != nullptr; }

const json* ObjectReader::get(std::string_view key) const {
  const auto it = value_->find(key);
  if (it == value_->end() || it->is_null()) return nullptr;
  return &*it;
}

std::string ObjectReader::path_of(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

Result<std::optional<std::string>> ObjectReader::optional_string(std::string_view key) const {
  const json* value = get(key);
  if (value == nullptr) return std::optional<std::string>();
  if (!value->is_string()) {
    return field_error(path_of(key), "must be a string, not " + json_type_name(*value));
  }
  return std::optional<std::string>(value->get<std::string>());
}

Result<std::string> ObjectReader::required_string(std::string_view key) const {
  auto value = optional_string(key);
  if (!value.ok()) return value.error();
  if (!value.value().has_value()) return field_error(path_of(key), "is required");
  return *std::move(value).value();
}

Result<std::optional<int64_t>> ObjectReader::optional_int(std::string_view key, int64_t min,
                                                          int64_t max) const {
  const json* value = get(key);
  if (value == nullptr) return std::optional<int64_t>();
  int64_t number = 0;
  if (value->is_number_integer()) {
    if (value->is_number_unsigned() && value->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return field_error(path_of(key), "must be at most " + std::to_string(max));
    }
    number = value->get<int64_t>();
  } else if (value->is_number_float()) {
    const double d = value->get<double>();
    if (!std::isfinite(d) || std::floor(d) != d || d < -9.2e18 || d > 9.2e18) {
      return field_error(path_of(key), "must be an integer");
    }
    number = static_cast<int64_t>(d);
  } else {
    return field_error(path_of(key), "must be an integer, not " + json_type_name(*value));
  }
  if (number < min) return field_error(path_of(key), "must be at least " + std::to_string(min));
  if (number > max) return field_error(path_of(key), "must be at most " + std::to_string(max));
  return std::optional<int64_t>(number);
}

Result<std::optional<bool>> ObjectReader::optional_bool(std::string_view key) const {
  const json* value = get(key);
  if (value == nullptr) return std::optional<bool>();
  if (!value->is_boolean()) {
    return field_error(path_of(key), "must be true or false, not " + json_type_name(*value));
  }
  return std::optional<bool>(value->get<bool>());
}

Result<ObjectReader> ObjectReader::object(std::string_view key) const {
  const json* value = get(key);
  if (value == nullptr) return ObjectReader(&empty_object(), path_of(key));
  return create(*value, path_of(key));
}

Result<ObjectReader> ObjectReader::required_object(std::string_view key) const {
  const json* value = get(key);
  if (value == nullptr) return field_error(path_of(key), "is required");
  return create(*value, path_of(key));
}

}  // namespace outpost
