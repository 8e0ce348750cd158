// Fuzzes multipart/form-data predict bodies (docs/api.md, "Raw bytes"), as predict_handlers.cc
// reads them: the first line of the input is the boundary, the rest the body. Beyond "never
// crash": every part accepted lies inside the body, has a name, and no two share one; the parts
// written out again with the same boundary read back the same; and the inputs built from them
// refer only to parts that exist.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "controlplane/api/form_data.h"
#include "controlplane/api/predict_request.h"

namespace {

using nlohmann::json;
using outpost::control::FormPart;

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

std::string write_form(const std::vector<FormPart>& parts, const std::string& boundary) {
  std::string out;
  for (const auto& part : parts) {
    out += "--" + boundary + "\r\nContent-Disposition: form-data; name=" + quoted(part.name) +
           "\r\n\r\n";
    out.append(part.data);
    out += "\r\n";
  }
  return out + "--" + boundary + "--\r\n";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  if (newline == std::string_view::npos) return 0;
  const std::string boundary(input.substr(0, newline));
  const std::string content_type = "multipart/form-data; boundary=" + quoted(boundary);
  const std::string_view body = input.substr(newline + 1);
  auto parts = outpost::control::parse_form_data(body, content_type);
  if (!parts.ok()) return 0;
  std::set<std::string> names;
  for (const auto& part : *parts) {
    if (part.name.empty() || !names.insert(part.name).second) std::abort();
    if (part.data.data() < body.data() ||
        part.data.data() + part.data.size() > body.data() + body.size()) {
      std::abort();
    }
  }
  const std::string again = write_form(*parts, boundary);
  auto reread = outpost::control::parse_form_data(again, content_type);
  if (!reread.ok() || reread->size() != parts->size()) std::abort();
  json inputs = json::object();
  for (size_t i = 0; i < parts->size(); ++i) {
    if ((*parts)[i].name == (*reread)[i].name && (*parts)[i].data == (*reread)[i].data) {
      inputs["in" + std::to_string(i)] = {{"part", (*parts)[i].name}};
    } else {
      std::abort();
    }
  }
  auto wire = outpost::control::wire_inputs(inputs, *parts, "");
  if (!wire.ok() || wire->parts.size() != parts->size()) std::abort();
  return 0;
}
