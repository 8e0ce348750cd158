// Tells systemd the truth about the agent (sd_notify(3) through libsystemd): READY=1 once local
// start-up is done, STATUS= lines an operator sees in `systemctl status`, WATCHDOG=1 only while
// the event loop and the supervisor are healthy, RELOADING=1 and STOPPING=1. Outside systemd
// (no NOTIFY_SOCKET) every call does nothing. Thread-safe.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

namespace outpost::agent {

class SystemdNotifier {
 public:
  SystemdNotifier();

  void ready();
  void status(const std::string& text);
  void watchdog();
  void reloading();
  void stopping();

  // Half of WatchdogSec= when the watchdog is on for this process (sd_watchdog_enabled(3)).
  std::chrono::microseconds watchdog_interval() const { return watchdog_interval_; }

 private:
  void send(const std::string& state);
  std::chrono::microseconds watchdog_interval_{0};
  std::mutex mutex_;  // several threads report state
  std::string last_status_;
};

}  // namespace outpost::agent
