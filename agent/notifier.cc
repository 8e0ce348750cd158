#include "agent/notifier.h"

#include <systemd/sd-daemon.h>

#include "common/log.h"

namespace outpost::agent {

SystemdNotifier::SystemdNotifier() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_interval_ = std::chrono::microseconds(usec / 2);
}

void SystemdNotifier::send(const std::string& state) {
  const int rc = sd_notify(0, state.c_str());
  if (rc < 0) LOG_DEBUG("agent.sd_notify_failed", "sd_notify failed: " << rc);
}

void SystemdNotifier::ready() { send("READY=1"); }

void SystemdNotifier::status(const std::string& text) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (text == last_status_) return;
  last_status_ = text;
  send("STATUS=" + text);
}

void SystemdNotifier::watchdog() { send("WATCHDOG=1"); }

void SystemdNotifier::reloading() { send("RELOADING=1"); }

void SystemdNotifier::stopping() { send("STOPPING=1"); }

}  // namespace outpost::agent
