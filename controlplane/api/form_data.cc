#include "controlplane/api/form_data.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <set>

namespace outpost::control {

namespace {

constexpr size_t kMaxBoundary = 70;  // RFC 2046
constexpr size_t kMaxHeaderLine = 8 * 1024;
constexpr size_t kMaxHeaderLines = 32;

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// The value of parameter `key` in "type; a=1; b=\"two\"" (quoted strings unescaped), or nothing.
std::optional<std::string> parameter(std::string_view header, std::string_view key) {
  size_t at = header.find(';');
  while (at != std::string_view::npos) {
    std::string_view rest = trim(header.substr(at + 1));
    const size_t eq = rest.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const std::string name = lower(trim(rest.substr(0, eq)));
    rest = trim(rest.substr(eq + 1));
    std::string value;
    size_t consumed = 0;
    if (!rest.empty() && rest.front() == '"') {
      size_t i = 1;
      for (; i < rest.size() && rest[i] != '"'; ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) ++i;
        value.push_back(rest[i]);
      }
      if (i >= rest.size()) return std::nullopt;  // an unterminated quoted string
      consumed = i + 1;
    } else {
      consumed = std::min(rest.find(';'), rest.size());
      value = std::string(trim(rest.substr(0, consumed)));
    }
    if (name == key) return value;
    const size_t next = rest.find(';', consumed);
    if (next == std::string_view::npos) return std::nullopt;
    at = static_cast<size_t>(rest.data() - header.data()) + next;
  }
  return std::nullopt;
}

Error malformed(const std::string& why) {
  return invalid_argument("the multipart/form-data body is malformed: " + why);
}

// Reads one part's header lines (up to and including the empty line) from the front of `in`.
Result<FormPart> read_part_headers(std::string_view& in) {
  FormPart part;
  bool disposition = false;
  for (size_t lines = 0;; ++lines) {
    const size_t end = in.find("\r\n");
    if (end == std::string_view::npos) return malformed("a part's headers do not end");
    if (end > kMaxHeaderLine) return malformed("a part's header line is over 8 KiB");
    const std::string_view line = in.substr(0, end);
    in.remove_prefix(end + 2);
    if (line.empty()) break;
    if (lines >= kMaxHeaderLines) return malformed("a part has over 32 header lines");
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return malformed("a part's header line has no ':'");
    const std::string name = lower(trim(line.substr(0, colon)));
    const std::string_view value = trim(line.substr(colon + 1));
    if (name == "content-disposition") {
      if (lower(trim(value.substr(0, value.find(';')))) != "form-data") {
        return malformed("a part's Content-Disposition is not form-data");
      }
      auto field = parameter(value, "name");
      if (!field || field->empty()) {
        return malformed("a part's Content-Disposition has no name=\"...\"");
      }
      if (std::any_of(field->begin(), field->end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
        return malformed("a part's name holds a control character");
      }
      part.name = std::move(*field);
      disposition = true;
    } else if (name == "content-type") {
      part.content_type = std::string(value);
    }
  }
  if (!disposition) return malformed("a part has no Content-Disposition: form-data; name=\"...\"");
  return part;
}

}  // namespace

bool is_form_data(std::string_view content_type) {
  return lower(trim(content_type.substr(0, content_type.find(';')))) == "multipart/form-data";
}

Result<std::vector<FormPart>> parse_form_data(std::string_view body,
                                              std::string_view content_type) {
  const auto boundary = parameter(content_type, "boundary");
  if (!boundary || boundary->empty() || boundary->size() > kMaxBoundary) {
    return malformed("the Content-Type needs a boundary of 1 to 70 characters");
  }
  const std::string delimiter = "--" + *boundary;
  // A preamble before the first delimiter is allowed, and ignored.
  size_t first = body.rfind(delimiter, 0) == 0 ? 0 : body.find("\r\n" + delimiter);
  if (first == std::string_view::npos) return malformed("the first boundary is missing");
  if (first != 0) first += 2;
  std::string_view in = body.substr(first + delimiter.size());
  const std::string next_delimiter = "\r\n" + delimiter;
  std::vector<FormPart> parts;
  std::set<std::string> names;
  while (true) {
    if (in.rfind("--", 0) == 0) return parts;  // the closing delimiter; the epilogue is ignored
    while (!in.empty() && (in.front() == ' ' || in.front() == '\t')) in.remove_prefix(1);
    if (in.rfind("\r\n", 0) != 0) return malformed("a boundary line has bytes after it");
    in.remove_prefix(2);
    if (parts.size() == kMaxFormParts) {
      return malformed("more than " + std::to_string(kMaxFormParts) + " parts");
    }
    OUTPOST_ASSIGN_OR_RETURN(auto part, read_part_headers(in));
    const size_t end = in.find(next_delimiter);
    if (end == std::string_view::npos) return malformed("the closing boundary is missing");
    part.data = in.substr(0, end);
    in.remove_prefix(end + next_delimiter.size());
    if (!names.insert(part.name).second) {
      return invalid_argument("the form has two parts named '" + part.name + "'");
    }
    parts.push_back(std::move(part));
  }
}

}  // namespace outpost::control
