// systemd's notification protocol (sd_notify(3), through libsystemd) for the two daemons:
// READY=1, STATUS= lines an operator sees in `systemctl status` (a repeat of the last one is not
// sent), WATCHDOG=1, RELOADING=1 and STOPPING=1. Outside systemd (no $NOTIFY_SOCKET) every call
// does nothing. When a watchdog ping is deserved is the caller's decision. Thread-safe.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

namespace outpost {

class ServiceNotifier {
 public:
  ServiceNotifier();

  void ready();
  void status(const std::string& text);
  void watchdog();
  void reloading();
  void stopping();

  // Half of WatchdogSec= when the service manager expects pings from this process
  // (sd_watchdog_enabled(3)), else zero.
  std::chrono::microseconds watchdog_interval() const { return watchdog_interval_; }

 private:
  static void send(const std::string& state);
  std::chrono::microseconds watchdog_interval_{0};
  std::mutex mutex_;  // status() is called from several threads
  std::string last_status_;
};

}  // namespace outpost
