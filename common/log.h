// Logging that journald understands. Every line carries a severity and a stable event id
// ("tunnel.up", "tunnel.auth_refused") that operators can grep and alert on. Under systemd
// (JOURNAL_STREAM set) lines start with the sd-daemon priority prefix "<N>"; elsewhere they start
// with a UTC timestamp and a severity letter. Never pass a secret (token, credential) in a message.
#pragma once

#include <sstream>
#include <string_view>

namespace outpost::log {

enum class Severity { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6, kDebug = 7 };

// Lines below this severity are dropped. Defaults to kInfo, or OUTPOST_LOG_LEVEL
// (error|warning|notice|info|debug) when set.
void set_min_severity(Severity severity);
bool enabled(Severity severity);

// Writes one line atomically (a single write(2)) to stderr.
void write(Severity severity, std::string_view event_id, std::string_view message);

}  // namespace outpost::log

#define OUTPOST_LOG(severity, event_id, stream_expr)                               \
  do {                                                                             \
    if (::outpost::log::enabled(severity)) {                                       \
      std::ostringstream outpost_log_stream_;                                      \
      outpost_log_stream_ << stream_expr; /* NOLINT(bugprone-macro-parentheses) */ \
      ::outpost::log::write(severity, event_id, outpost_log_stream_.str());        \
    }                                                                              \
  } while (false)

#define LOG_ERROR(event_id, expr) OUTPOST_LOG(::outpost::log::Severity::kError, event_id, expr)
#define LOG_WARNING(event_id, expr) OUTPOST_LOG(::outpost::log::Severity::kWarning, event_id, expr)
#define LOG_NOTICE(event_id, expr) OUTPOST_LOG(::outpost::log::Severity::kNotice, event_id, expr)
#define LOG_INFO(event_id, expr) OUTPOST_LOG(::outpost::log::Severity::kInfo, event_id, expr)
#define LOG_DEBUG(event_id, expr) OUTPOST_LOG(::outpost::log::Severity::kDebug, event_id, expr)
