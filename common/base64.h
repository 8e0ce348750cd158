// Standard base64 (RFC 4648, with padding), through OpenSSL's encoder.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace outpost {

std::string base64_encode(std::string_view bytes);
// Refuses anything that is not canonical padded base64, naming the problem.
Result<std::string> base64_decode(std::string_view text);

}  // namespace outpost
