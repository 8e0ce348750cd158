#include "controlplane/state/ids.h"

namespace outpost::control {

namespace {

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

}  // namespace

Status check_id(std::string_view id, std::string_view field) {
  if (id.empty()) return field_error(field, "must not be empty");
  if (id.size() > kMaxIdLength) {
    return field_error(field, "is " + std::to_string(id.size()) +
                                  " characters long; ids have at most " +
                                  std::to_string(kMaxIdLength));
  }
  if (!is_alnum(id.front())) {
    return field_error(field, "must start with a letter or a digit");
  }
  for (const char c : id) {
    if (!is_alnum(c) && c != '-' && c != '_') {
      return field_error(field, "may hold only letters, digits, '-' and '_' (found '" +
                                    (c >= 0x20 && c < 0x7f ? std::string(1, c) : std::string("?")) +
                                    "')");
    }
  }
  return {};
}

bool is_safe_token(std::string_view text, size_t max_length) {
  if (text.empty() || text.size() > max_length) return false;
  for (const char c : text) {
    if (!is_alnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

}  // namespace outpost::control
