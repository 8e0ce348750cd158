// Resource ids and the errors that name the field at fault. Ids are what users type on the
// command line and what appears in URL paths, so they are plain: 1-64 characters of letters,
// digits, '-' and '_', starting with a letter or a digit (Clarifai's ids look the same).
#pragma once

#include <string>
#include <string_view>

#include "common/json_reader.h"  // field_error
#include "common/result.h"

namespace outpost::control {

inline constexpr size_t kMaxIdLength = 64;

// invalid_argument "<field>: <message>" when `id` breaks the rules above.
Status check_id(std::string_view id, std::string_view field);

// "a-Z0-9._-" only, up to 64 characters: what a client may choose as a request id.
bool is_safe_token(std::string_view text, size_t max_length = 64);

}  // namespace outpost::control
