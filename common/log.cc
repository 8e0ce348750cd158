#include "common/log.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <string>

#include <unistd.h>

namespace outpost::log {
namespace {

Severity severity_from_env() {
  const char* level = std::getenv("OUTPOST_LOG_LEVEL");
  if (level == nullptr) return Severity::kInfo;
  const std::string_view value(level);
  if (value == "error") return Severity::kError;
  if (value == "warning") return Severity::kWarning;
  if (value == "notice") return Severity::kNotice;
  if (value == "debug") return Severity::kDebug;
  return Severity::kInfo;
}

std::atomic<int>& min_severity() {
  static std::atomic<int> value{static_cast<int>(severity_from_env())};
  return value;
}

bool journal_format() {
  static const bool under_journald = std::getenv("JOURNAL_STREAM") != nullptr;
  return under_journald;
}

char severity_letter(Severity severity) {
  switch (severity) {
    case Severity::kError:
      return 'E';
    case Severity::kWarning:
      return 'W';
    case Severity::kNotice:
      return 'N';
    case Severity::kInfo:
      return 'I';
    case Severity::kDebug:
      return 'D';
  }
  return '?';
}

}  // namespace

void set_min_severity(Severity severity) { min_severity().store(static_cast<int>(severity)); }

bool enabled(Severity severity) { return static_cast<int>(severity) <= min_severity().load(); }

void write(Severity severity, std::string_view event_id, std::string_view message) {
  std::string line;
  line.reserve(message.size() + event_id.size() + 48);
  if (journal_format()) {
    line += '<';
    line += static_cast<char>('0' + static_cast<int>(severity));
    line += '>';
  } else {
    const auto now = std::chrono::system_clock::now();
    const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
        1000;
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    char stamp[40];
    const size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
    line.append(stamp, n);
    char fraction[8];
    std::snprintf(fraction, sizeof fraction, ".%03dZ ", static_cast<int>(millis));
    line += fraction;
    line += severity_letter(severity);
    line += ' ';
  }
  line += event_id;
  line += ": ";
  // One record per line: newlines inside a message would split it in the journal.
  for (char c : message) line += (c == '\n' || c == '\r') ? ' ' : c;
  line += '\n';
  const char* data = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t written = ::write(STDERR_FILENO, data, left);
    if (written <= 0) return;  // stderr gone: nothing sensible left to do with a log line
    data += written;
    left -= static_cast<size_t>(written);
  }
}

}  // namespace outpost::log
