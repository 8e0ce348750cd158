// One error model for outpost: a stable error code plus a message that tells the user what to
// change, carried in `Status` (success or an error) and `Result<T>` (a value or an error).
// Fallible construction returns `Result<...>` from a static `create`; callers propagate with
// OUTPOST_RETURN_IF_ERROR / OUTPOST_ASSIGN_OR_RETURN. No exception crosses these types.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace outpost {

// Stable across releases: these names appear in logs, API errors and the CLI's output.
enum class ErrorCode {
  kInvalidArgument,     // the caller's input is wrong; the message names what
  kNotFound,            // the named thing does not exist (or is not the caller's)
  kAlreadyExists,       // a thing with that id exists
  kUnauthenticated,     // missing or bad credential
  kPermissionDenied,    // credential fine, not allowed
  kResourceExhausted,   // a limit was hit: queue, size, count
  kFailedPrecondition,  // the system is not in a state to do this
  kUnavailable,         // try again later: peer gone, not connected, draining
  kDeadlineExceeded,    // it took too long
  kCancelled,           // someone asked to stop
  kDataLoss,            // corrupt or truncated data
  kInternal,            // a bug or an environment failure we did not expect
  // kInternal stays last: error_code_from_name walks the codes up to it.
};

// "invalid_argument", "not_found", ...
std::string_view error_code_name(ErrorCode code);
// The inverse of error_code_name; nothing for a name it never returns.
std::optional<ErrorCode> error_code_from_name(std::string_view name);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "unavailable: control plane not reachable: connection refused"
  std::string to_string() const;

 private:
  ErrorCode code_;
  std::string message_;
};

inline Error invalid_argument(std::string message) {
  return {ErrorCode::kInvalidArgument, std::move(message)};
}
inline Error unavailable(std::string message) {
  return {ErrorCode::kUnavailable, std::move(message)};
}
inline Error internal_error(std::string message) {
  return {ErrorCode::kInternal, std::move(message)};
}

// Success, or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  // Precondition: !ok().
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

 private:
  Error error_{ErrorCode::kInternal, ""};
  bool ok_ = true;
};

// A value of type T, or an Error.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // Preconditions: ok() for value(), !ok() for error().
  T& value() & {
    assert(ok());
    return std::get<0>(state_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(state_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(state_));
  }
  const Error& error() const {
    assert(!ok());
    return std::get<1>(state_);
  }
  Status status() const { return ok() ? Status() : Status(error()); }

  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Error> state_;
};

}  // namespace outpost

#define OUTPOST_CONCAT_INNER(a, b) a##b
#define OUTPOST_CONCAT(a, b) OUTPOST_CONCAT_INNER(a, b)

// Returns the error of a Status or Result expression from the enclosing function.
#define OUTPOST_RETURN_IF_ERROR(expr)                          \
  do {                                                         \
    auto&& outpost_status_ = (expr);                           \
    if (!outpost_status_.ok()) return outpost_status_.error(); \
  } while (false)

// `OUTPOST_ASSIGN_OR_RETURN(auto x, make_x());` declares x from a Result or returns its error.
#define OUTPOST_ASSIGN_OR_RETURN(lhs, expr) \
  OUTPOST_ASSIGN_OR_RETURN_IMPL(OUTPOST_CONCAT(outpost_result_, __LINE__), lhs, expr)
// NOLINTBEGIN(bugprone-macro-parentheses): `lhs` is a declaration, `tmp` a name.
#define OUTPOST_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.error();                  \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)
