// UTF-8 validation, strict per RFC 3629 (Unicode's table of well-formed byte sequences): no
// overlong forms, no surrogates, nothing above U+10FFFF. The same strings nlohmann/json accepts
// when it serializes, so text that passes here never makes json::dump() throw.
#pragma once

#include <cstddef>
#include <string_view>

namespace outpost {

// The offset of the first byte that does not belong to a well-formed sequence, or
// std::string_view::npos when all of `text` is valid UTF-8.
size_t first_invalid_utf8(std::string_view text);

inline bool valid_utf8(std::string_view text) {
  return first_invalid_utf8(text) == std::string_view::npos;
}

}  // namespace outpost
