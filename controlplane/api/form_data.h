// multipart/form-data request bodies (RFC 7578), as `curl -F` sends them: how a predict call
// carries tensors as raw bytes beside its JSON request (docs/api.md, "Raw bytes"). A pure function
// of its input, so that the form_data fuzzer drives it without a server.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace outpost::control {

struct FormPart {
  std::string name;          // Content-Disposition's name
  std::string content_type;  // "" when the part has none
  std::string_view data;     // points into the body
};

inline constexpr size_t kMaxFormParts = 4096;

// Whether `content_type` is multipart/form-data (any case, any parameters).
bool is_form_data(std::string_view content_type);

// The parts of `body`, in order. Refuses, naming the problem: a Content-Type without a boundary
// (or one over 70 characters), a body that does not start with the first boundary or does not
// end with the closing one, a part without `Content-Disposition: form-data; name="..."`, a name
// with a control character, two parts of one name, more than kMaxFormParts parts, header lines over
// 8 KiB.
Result<std::vector<FormPart>> parse_form_data(std::string_view body, std::string_view content_type);

}  // namespace outpost::control
